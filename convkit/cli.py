"""The ``convkit`` console script.

* ``convkit info``: versions (convkit, Python, NumPy, SciPy, JAX, CuPy, torch, CUDA runtime
  and driver), every backend with its availability and the reason, and the devices;
* ``convkit check``: a compact conformance matrix (ops x 1-D/2-D x modes x boundaries x
  methods x dtypes) on every available backend, each result compared with a reference
  within its SPEC S5 bound (:func:`convkit.testing.direct_bound` / :func:`~convkit.testing.fft_bound`);
  the NumPy backend against an independent SciPy/exact oracle, the others against the NumPy
  backend. Exit status 1 on any failure or when a backend named with ``--backend`` cannot run;
* ``convkit demo``: the conventions demo (flip, even-kernel ``'same'``, stride);
* ``convkit bench``: the benchmark suite (``convkit.benchmarks``; ``convkit bench --help``);
* ``convkit tune``: the NumPy backend's cost-model constants measured on this machine;
* ``convkit explain IN1 IN2 [options]``: what one call computes (:func:`convkit.explain`) for
  inputs given as shapes and dtypes (``100x100 5x5 --mode same --dtype float32 --stride 2``).

Without a command: the backends on this machine and the conventions demo. ``python -m convkit``
is the same program (:mod:`convkit.__main__` calls :func:`main`).

Backend libraries are imported only by the command that needs them (and every failure
of theirs is reported, never raised).
"""

from __future__ import annotations

import argparse
import io
import math
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from typing import TextIO

import numpy as np

__all__ = ["main", "info", "check", "gpu_check", "bench", "bench_module", "tune_command", "explain_command",
           "run_matrix", "CaseResult", "MATRIX"]


# ----------------------------------------------------------------------------- info


def _dist_version(module: str) -> str | None:
    """``"1.2.3 (dist-name)"`` of the distribution providing ``module``, without importing it."""
    from importlib import metadata

    dists = metadata.packages_distributions().get(module) or [module]
    for dist in dists:
        try:
            version = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
        return version if dist == module else f"{version} ({dist})"
    return None


def _cuda_version(v: int) -> str:
    return f"{v // 1000}.{(v % 1000) // 10}"


def _cupy_cuda() -> tuple[list[str], list[str]]:
    """CUDA lines and CuPy device lines (empty when CuPy is missing)."""
    lines, devices = [], []
    try:
        import cupy

        rt = cupy.cuda.runtime
    except ModuleNotFoundError:
        return ["unknown (CuPy is not installed)"], devices
    except Exception as exc:  # a broken CUDA install: say so, never raise
        return [f"unknown (CuPy failed to import: {type(exc).__name__})"], devices
    for what, fn in (("runtime", rt.runtimeGetVersion), ("driver", rt.driverGetVersion)):
        try:
            v = int(fn())
            lines.append(f"{what} {_cuda_version(v)}" if v else f"{what} none")
        except Exception as exc:
            lines.append(f"{what} unknown ({type(exc).__name__})")
    try:
        for i in range(int(rt.getDeviceCount())):
            props = rt.getDeviceProperties(i)
            name = props["name"]
            name = name.decode() if isinstance(name, bytes) else str(name)
            devices.append(f"cuda:{i} {name}, {props['totalGlobalMem'] / 2**30:.1f} GiB, "
                           f"compute capability {props['major']}.{props['minor']}")
    except Exception as exc:
        msg = str(exc).splitlines()[0] if str(exc) else ""
        devices.append(f"none ({type(exc).__name__}: {msg})")
    return lines, devices


#: CUDA libraries CuPy needs for convkit: name, the CuPy modules that may hold its binding (the
#: first that imports; CuPy 14 dropped the ``cupy.cuda.nvrtc`` alias), the version function
_CUDA_LIBS = (
    ("NVRTC", ("cupy_backends.cuda.libs.nvrtc", "cupy.cuda.nvrtc"), "getVersion"),
    ("cuFFT", ("cupy.cuda.cufft",), "getVersion"),
)


def _binding(modules: tuple[str, ...]):
    """The first of ``modules`` that imports (the last one's ImportError if none does)."""
    import importlib

    for name in modules[:-1]:
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError:
            pass
    return importlib.import_module(modules[-1])

from .backends.cupy import missing_library  # noqa: E402,F401 (convkit info names the missing library)


def cuda_libraries(cupy) -> list[str]:
    """One line per CUDA library convkit needs from CuPy: its version, or ``MISSING`` with the
    library file the loader could not open and the install command that brings it."""
    out = []
    for name, modules, fn in _CUDA_LIBS:
        try:
            v = getattr(_binding(modules), fn)()
            v = ".".join(map(str, v)) if isinstance(v, tuple) else str(v)
            out.append(f"{name} {v}")
        except Exception as exc:
            lib = missing_library(exc)
            what = f"{lib} could not be loaded" if lib else f"{type(exc).__name__}: {_first_line(exc)}"
            out.append(f"{name} MISSING ({what}; {_ctk_hint(cupy)})")
    return out


def _cupy_libraries() -> list[str]:
    """:func:`cuda_libraries` of the installed CuPy (empty when CuPy is missing or broken)."""
    try:
        import cupy
    except Exception:
        return []
    try:
        return cuda_libraries(cupy)
    except Exception:  # pragma: no cover - cuda_libraries catches per library
        return []


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:160] if text else ""


def _ctk_hint(cupy) -> str:
    """The pip command that installs CuPy with its CUDA libraries for this CuPy's CUDA major."""
    try:
        major = int(cupy.cuda.runtime.runtimeGetVersion()) // 1000
    except Exception:
        major = 12
    return f'pip install "cupy-cuda{major}x[ctk]>=14" (or install the CUDA {major} Toolkit)'


def _jax_devices() -> list[str]:
    try:
        import jax

        return [f"{d.platform}:{d.id} {getattr(d, 'device_kind', '')}".rstrip() for d in jax.devices()]
    except Exception as exc:
        return [f"none ({type(exc).__name__})"]


def _torch_devices() -> list[str]:
    try:
        import torch

        cuda = [f"cuda:{i} {torch.cuda.get_device_name(i)}" for i in range(torch.cuda.device_count())]
        return ["cpu"] + cuda
    except Exception as exc:
        return [f"none ({type(exc).__name__})"]


def _host_engines() -> list[str]:
    """One line per compiled host engine a backend can use besides its array library (OpenCV
    and torch on the NumPy backend): its version and what it runs, or why none is used."""
    from .dispatch import get_backend

    try:
        be = get_backend("numpy")
        found = be.host_engines() if hasattr(be, "host_engines") else {}
    except Exception as exc:  # pragma: no cover - info never raises
        return [f"unknown ({type(exc).__name__})"]
    if found:
        lines = [f"{name:14s} {what}" for name, what in found.items()]
    else:
        lines = [f"none           ({getattr(be, 'engines_reason', lambda: '')()})"]
    return lines + _jax_handoff()


def _jax_handoff() -> list[str]:
    """The JAX backend's CPU handoff to the NumPy backend's engines, and whether XLA:CPU
    dispatches asynchronously (docs/backends/jax.md), where JAX runs here."""
    from .dispatch import get_backend, list_backends

    if not any(r.name == "jax" and r.available for r in list_backends()):
        return []
    try:
        be = get_backend("jax")
        state = be.handoff_state()
        dispatch = be.cpu_dispatch_state() if hasattr(be, "cpu_dispatch_state") else ""
    except Exception as exc:  # pragma: no cover - info never raises
        state, dispatch = f"unknown ({type(exc).__name__})", ""
    return [f"{'jax handoff':14s} {state}"] + ([f"{'jax dispatch':14s} {dispatch}"] if dispatch else [])


def huge_pages(thp_path: str = "/sys/kernel/mm/transparent_hugepage/enabled") -> str:
    """Whether large buffers get huge pages here: the kernel's transparent-huge-page mode and
    glibc's ``glibc.malloc.hugetlb`` tunable (read at start-up from ``GLIBC_TUNABLES``).
    Without either, XLA:CPU (the JAX backend) touches every output above 32 MiB 4 KiB at a time,
    one page fault each (docs/backends/jax.md)."""
    try:
        with open(thp_path) as f:
            text = f.read()
        mode = text[text.index("[") + 1:text.index("]")]
    except (OSError, ValueError):
        return "4 KiB pages (no transparent huge pages on this system)"
    tunables = dict(t.split("=", 1) for t in os.environ.get("GLIBC_TUNABLES", "").split(":") if "=" in t)
    hugetlb = tunables.get("glibc.malloc.hugetlb", "0")
    settings = f"transparent huge pages: {mode}, glibc.malloc.hugetlb={hugetlb}"
    if mode == "always" or (mode == "madvise" and hugetlb in ("1", "2")):
        return f"huge pages for large buffers ({settings})"
    return (f"4 KiB pages for large buffers ({settings}): JAX on CPU pays a page fault per 4 KiB "
            "of each output above 32 MiB; see the JAX backend's docs")


def info(file: TextIO | None = None) -> int:
    """Print versions, backends (with the reason when unavailable) and devices; return 0."""
    import convkit

    out = file or sys.stdout
    rows = convkit.list_backends()
    avail = {r.name: r.available for r in rows}
    print(f"convkit  {convkit.__version__}", file=out)
    print(f"python   {platform.python_version()} ({platform.python_implementation()}, {platform.system()} "
          f"{platform.machine()})", file=out)
    for mod in ("numpy", "scipy", "jax", "jaxlib", "cupy", "torch"):
        print(f"{mod:8s} {_dist_version(mod) or 'not installed'}", file=out)
    cuda, cupy_devices = _cupy_cuda()
    print(f"CUDA     {', '.join(cuda)}", file=out)
    libs = _cupy_libraries()
    if libs:
        print(f"CUDA libs {'; '.join(libs)}", file=out)
    print(f"memory   {huge_pages()}", file=out)
    print("\nbackends:", file=out)
    for r in rows:
        state = "available" if r.available else f"unavailable: {r.reason}"
        print(f"  {r.name:14s} {state}", file=out)
    print("\nhost engines:", file=out)
    for line in _host_engines():
        print(f"  {line}", file=out)
    print("\ndevices:", file=out)
    print(f"  numpy          cpu ({platform.processor() or platform.machine()})", file=out)
    if "cupy" in avail:
        print(f"  cupy           {'; '.join(cupy_devices) or 'none'}", file=out)
    if avail.get("jax"):
        print(f"  jax            {'; '.join(_jax_devices())}", file=out)
    if avail.get("torch"):
        print(f"  torch          {'; '.join(_torch_devices())}", file=out)
    return 0


# ----------------------------------------------------------------------------- check

#: the matrix: every combination is one case per backend
MATRIX = {
    "ops": ("convolve", "correlate"),
    "shapes": (((13,), (4,)), ((7, 6), (3, 2))),
    "modes": ("full", "same", "valid", "causal"),
    "boundaries": ("fill", "symm", "wrap"),
    "methods": ("direct", "fft", "oa", "auto"),
    "dtypes": ("bool", "int32", "float32", "float64", "complex128"),
}


@dataclass
class CaseResult:
    """One backend/method/dtype cell: the worst error relative to its S5 bound over its cases."""

    backend: str
    reference: str
    method: str
    dtype: str
    cases: int = 0
    failures: int = 0
    worst: float = 0.0  # max |err| / bound (0 for exact integer matches)
    exact: bool = True
    messages: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.failures == 0


def _data(rng: np.random.Generator, shape, dtype: str) -> np.ndarray:
    dt = np.dtype(dtype)
    if dt.kind == "b":
        return rng.integers(0, 2, shape).astype(bool)
    if dt.kind in "iu":
        return rng.integers(-50, 50, shape).astype(dt)
    if dt.kind == "c":
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dt)
    return rng.standard_normal(shape).astype(dt)


def _oracle(op: str, a: np.ndarray, b: np.ndarray, mode: str, boundary: str) -> np.ndarray:
    """Independent SPEC S1 reference: ``np.pad`` + SciPy's direct 'valid' in float64/complex128
    (exact int64 for integer results, wrapped to the result dtype)."""
    import scipy.signal

    rdt = np.result_type(a, b)
    acc = np.int64 if rdt.kind in "biu" else np.result_type(rdt, np.float64)
    x, k = a.astype(acc), b.astype(acc)
    pads = []
    for m in k.shape:
        pads.append({"full": (m - 1, m - 1), "same": (m // 2, (m - 1) // 2), "valid": (0, 0),
                     "causal": (m - 1, 0)}[mode])
    np_mode = {"fill": "constant", "symm": "symmetric", "wrap": "wrap"}[boundary]
    xp = np.pad(x, pads, mode=np_mode)
    fn = scipy.signal.convolve if op == "convolve" else scipy.signal.correlate
    out = fn(xp, k, mode="valid", method="direct")
    return (out != 0) if rdt.kind == "b" else out.astype(rdt) if rdt.kind in "iu" else out


def _bounds(a, b, op: str, ref_dtype, kw: dict) -> dict:
    """S5 bounds of one case: elementwise direct, normwise FFT, and the reference's own."""
    from .testing import direct_bound, fft_bound

    if np.result_type(a, b).kind in "biu":
        return {}
    return {"direct": direct_bound(a, b, op, **kw), "fft": fft_bound(a, b, op, **kw),
            "ref": direct_bound(a, b, op, dtype=ref_dtype, **kw)}


def _ratio(actual, expected, rdt: np.dtype, method: str, bounds: dict) -> tuple[float, str]:
    """Worst ``|actual - expected| / tolerance`` (S5 bounds of both sides); message if > 1."""
    from .bounds import unit_roundoff
    from .testing import to_numpy

    actual, expected = to_numpy(actual), np.asarray(expected)
    if actual.shape != expected.shape or actual.dtype != rdt:
        return math.inf, f"shape/dtype {actual.shape} {actual.dtype} != {expected.shape} {rdt}"
    if rdt.kind in "biu":
        bad = int(np.sum(actual != expected.astype(rdt)))
        return (0.0, "") if bad == 0 else (math.inf, f"{bad} integer outputs differ")
    if not np.all(np.isfinite(actual)):
        return math.inf, "non-finite output for finite inputs"
    bound = bounds["direct"]
    if method in ("fft", "oa", "auto"):
        fb = bounds["fft"]
        bound = np.maximum(bound, fb) if method == "auto" else np.full_like(bound, fb)
    tol = bound + bounds["ref"] + unit_roundoff(rdt) * np.abs(expected)
    err = np.abs(actual.astype(np.complex128 if rdt.kind == "c" else np.float64) - expected)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(err == 0, 0.0, err / tol)
    worst = float(np.max(r)) if r.size else 0.0
    return worst, (f"error {float(np.max(err)):.3g} exceeds the S5 bound" if worst > 1 else "")


def _cases():
    """Every mode x boundary x dtype (50 input cases); op and 1-D/2-D geometry rotate through
    them so both ops and both geometries meet every mode, boundary and dtype family. Every
    case runs with every method, so the matrix is modes x boundaries x dtypes x methods."""
    i = 0
    for mode in MATRIX["modes"]:
        for boundary in MATRIX["boundaries"]:
            if mode == "valid" and boundary != "fill":
                continue  # boundary does not apply to 'valid' (S7)
            for dtype in MATRIX["dtypes"]:
                block, d = divmod(i, len(MATRIX["dtypes"]))
                op = MATRIX["ops"][(block + d) % 2]
                s1, s2 = MATRIX["shapes"][(block // 2 + d) % 2]
                i += 1
                yield op, s1, s2, mode, boundary, dtype


def run_matrix(backend: str) -> list[CaseResult]:
    """Run :data:`MATRIX` on ``backend``; one :class:`CaseResult` per (method, dtype)."""
    import convkit

    reference = "scipy/exact" if backend == "numpy" else "numpy"
    results = {}
    for method in MATRIX["methods"]:
        for dtype in MATRIX["dtypes"]:
            results[method, dtype] = CaseResult(backend, reference, method, dtype)
    rng = np.random.default_rng(20260101)
    for op, s1, s2, mode, boundary, dtype in _cases():
        a, b = _data(rng, s1, dtype), _data(rng, s2, dtype)
        kw = {"mode": mode, "boundary": boundary}
        rdt = np.result_type(a, b)
        if backend == "numpy":
            expected = _oracle(op, a, b, mode, boundary)
            ref_dtype = np.complex128 if rdt.kind == "c" else np.float64
        else:
            ref_dtype = rdt if rdt.kind in "fc" else np.float64
            expected = getattr(convkit, op)(a, b, method="direct", backend="numpy", **kw)
        bounds = _bounds(a, b, op, ref_dtype, kw)
        for method in MATRIX["methods"]:
            cell = results[method, dtype]
            cell.cases += 1
            try:
                out = getattr(convkit, op)(a, b, method=method, backend=backend, **kw)
                worst, msg = _ratio(out, expected, rdt, method, bounds)
            except Exception as exc:  # a crash is a failure of that case, reported
                worst, msg = math.inf, f"raised {type(exc).__name__}: {exc}"
            cell.exact &= worst == 0.0
            cell.worst = max(cell.worst, worst)
            if msg:
                cell.failures += 1
                cell.messages.append(f"{op}({s1}x{s2}, {mode!r}, boundary={boundary!r}): {msg}")
    return list(results.values())


def _cell(results: list[CaseResult]) -> str:
    fails = sum(r.failures for r in results)
    if fails:
        return f"FAIL {fails}"
    if all(r.exact for r in results) and all(np.dtype(r.dtype).kind in "biu" for r in results):
        return "exact"
    return f"{max(r.worst for r in results):.2g}"


def check(backends: list[str] | None = None, file: TextIO | None = None, verbose: bool = False) -> int:
    """Run the matrix on ``backends`` (default: every available one); print the table; 0 if all pass."""
    import convkit

    out = file or sys.stdout
    rows = {r.name: r for r in convkit.list_backends()}
    requested = backends is not None
    names = backends if requested else list(rows)
    n_cases = sum(1 for _ in _cases()) * len(MATRIX["methods"])
    print(f"convkit check: {n_cases} calls per backend: modes {'/'.join(MATRIX['modes'])} x boundaries "
          f"{'/'.join(MATRIX['boundaries'])} x dtypes x methods ({' and '.join(MATRIX['ops'])}, "
          "1-D and 2-D, even kernels)", file=out)
    print("cells: worst |error| / S5 bound over the cell's cases (pass <= 1; 'exact': integers "
          "bit-identical)\n", file=out)
    methods = MATRIX["methods"]
    header = f"{'backend':14s} {'reference':12s} {'dtype':11s} " + " ".join(f"{m:>8s}" for m in methods)
    print(header, file=out)
    failed, ran = False, 0
    start = time.perf_counter()
    for name in names:
        row = rows.get(name)
        if row is None or not row.available:
            why = "not a known backend" if row is None else row.reason
            if requested:
                failed = True
                print(f"{name:14s} FAIL: requested but unavailable: {why}", file=out)
            else:
                print(f"{name:14s} skipped: {why}", file=out)
            continue
        ran += 1
        results = run_matrix(name)
        for dtype in MATRIX["dtypes"]:
            cells = [[r for r in results if r.dtype == dtype and r.method == m] for m in methods]
            print(f"{name:14s} {results[0].reference:12s} {dtype:11s} "
                  + " ".join(f"{_cell(c):>8s}" for c in cells), file=out)
        bad = [r for r in results if not r.ok]
        failed |= bool(bad)
        for r in bad:
            for msg in r.messages[: None if verbose else 3]:
                print(f"    {name} method={r.method} {r.dtype}: {msg}", file=out)
    status = "FAIL" if failed or ran == 0 else "PASS"
    print(f"\n{status}: {ran} backend(s) checked in {time.perf_counter() - start:.1f} s", file=out)
    return 1 if status == "FAIL" else 0


# ----------------------------------------------------------------------------- check --gpu

#: ``convkit check --gpu``: total budget (seconds) and each step's share of what is left
GPU_BUDGET = 480
GPU_STEPS = (("pytest -m gpu", 0.6), ("check cupy", 0.15), ("check jax", 0.2), ("bench quick", 1.0))
#: ``pytest -m gpu`` workers where pytest-xdist is installed: the suite is about 4,700 tests, 17 minutes
#: on one worker on an H200 machine and 3 on seven
GPU_TEST_WORKERS = 8


def _gpu_test_workers() -> list[str]:
    """``["-n", N]`` for pytest-xdist (at most :data:`GPU_TEST_WORKERS`, one per core), else ``[]``."""
    import importlib.util
    import os

    if importlib.util.find_spec("xdist") is None:
        return []
    return ["-n", str(max(1, min(GPU_TEST_WORKERS, os.cpu_count() or 1)))]


@dataclass
class StepResult:
    """One step of ``convkit check --gpu``: its command, exit status (None: timed out) and output."""

    name: str
    command: list[str]
    returncode: int | None
    seconds: float
    output: str
    summary: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def gpu_status() -> dict[str, tuple[bool, str]]:
    """Whether CuPy and JAX can compute on a CUDA device here: ``{name: (ok, reason)}``."""
    import convkit

    rows = {r.name: r for r in convkit.list_backends()}
    cupy = rows.get("cupy")
    status = {"cupy": (bool(cupy and cupy.available), cupy.reason if cupy else "no cupy backend")}
    jax = rows.get("jax")
    if not (jax and jax.available):
        status["jax"] = (False, jax.reason if jax else "no jax backend")
    else:
        gpus = [d for d in _jax_devices() if d.startswith(("gpu:", "cuda:"))]
        status["jax"] = (bool(gpus), "" if gpus else "JAX sees no GPU (CPU-only jaxlib or no device)")
    return status


def _run_step(name: str, command: list[str], timeout: float, cwd: str | None = None) -> StepResult:
    import subprocess

    start = time.perf_counter()
    try:
        res = subprocess.run(command, capture_output=True, text=True, timeout=max(timeout, 1.0), cwd=cwd)
        rc, output = res.returncode, res.stdout + res.stderr
    except subprocess.TimeoutExpired as exc:
        rc = None
        output = "".join(o.decode() if isinstance(o, bytes) else (o or "") for o in (exc.stdout, exc.stderr))
        output += f"\nTIMEOUT after {timeout:.0f} s"
    return StepResult(name, command, rc, time.perf_counter() - start, output)


def _pytest_summary(junit: str) -> str:
    """``"N passed, F failed, E errors, S skipped"`` from a JUnit XML file (``""`` if unreadable)."""
    import xml.etree.ElementTree as ET

    try:
        root = ET.parse(junit).getroot()
    except (OSError, ET.ParseError):
        return ""
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    n = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    passed = n["tests"] - n["failures"] - n["errors"] - n["skipped"]
    return f"{passed} passed, {n['failures']} failed, {n['errors']} errors, {n['skipped']} skipped"


def gpu_check(report: str = "convkit-gpu-report.md", budget: float = GPU_BUDGET,
              file: TextIO | None = None) -> int:
    """``convkit check --gpu``: the one-shot GPU validation (docs/gpu.md).

    On a machine where CuPy or JAX can use a CUDA device: ``pytest -m gpu`` on the checkout's
    tests, ``convkit check`` on cupy and on jax, and the quick GPU benchmarks (convkit vs the
    cupyx/jax.scipy peers), each a subprocess with a share of ``budget`` seconds; one Markdown
    ``report`` with pass/fail counts, the conformance matrices and the timings. Returns 0 when
    every step passed, 1 otherwise; 2 at once (nothing run or written) without a usable GPU.
    """
    import os
    import platform as _platform
    import tempfile
    from pathlib import Path

    out = file or sys.stdout
    status = gpu_status()
    if not any(ok for ok, _ in status.values()):
        why = "; ".join(f"{k}: {r}" for k, (_, r) in status.items())
        print(f"convkit check --gpu: no usable GPU on this machine ({why}); nothing was run", file=sys.stderr)
        return 2
    start = time.perf_counter()
    deadline = start + budget
    py = sys.executable
    tests = Path(__file__).resolve().parent.parent / "tests"
    work = Path(tempfile.mkdtemp(prefix="convkit-gpu-"))
    steps: list[StepResult] = []
    for name, share in GPU_STEPS:
        left = deadline - time.perf_counter()
        if name.startswith("check "):
            backend = name.split()[1]
            if not status[backend][0]:
                steps.append(StepResult(name, [], 1, 0.0, "", f"FAIL: {backend} cannot use a GPU: "
                                        f"{status[backend][1]}"))
                continue
            cmd = [py, "-m", "convkit", "check", "--backend", backend]
        elif name.startswith("pytest"):
            if not tests.is_dir():
                steps.append(StepResult(name, [], 1, 0.0, "", f"FAIL: no tests/ folder next to convkit "
                                        f"({tests}); run from a checkout"))
                continue
            cmd = [py, "-m", "pytest", str(tests), "-m", "gpu", "-q", "-p", "no:cacheprovider",
                   *_gpu_test_workers(), f"--junitxml={work / 'gpu.xml'}"]
        else:
            peers = ",".join(b for b in ("cupy", "jax") if status[b][0])
            cmd = [py, "-m", "convkit", "bench", "--backends", peers, "--peers", peers, "--suite", "quick",
                   "--dtype", "float32", "--out", str(work / "bench"), "--no-progress", "--no-memory"]
        print(f"[{time.perf_counter() - start:5.0f} s] {name}: {' '.join(cmd[1:])}", file=out, flush=True)
        env_cwd = str(tests.parent) if tests.is_dir() else None
        step = _run_step(name, cmd, left * share, cwd=env_cwd)
        if name.startswith("pytest"):
            step.summary = _pytest_summary(str(work / "gpu.xml"))
        steps.append(step)
        print(f"        {'ok' if step.ok else 'FAIL'} in {step.seconds:.0f} s {step.summary}", file=out,
              flush=True)
    total = time.perf_counter() - start
    ok = all(s.ok for s in steps)
    text = [f"# convkit GPU validation: {'PASS' if ok else 'FAIL'}", "",
            f"- machine: {_platform.node()} ({_platform.platform()}), python {_platform.python_version()}",
            f"- GPU: cupy {'yes' if status['cupy'][0] else 'no (' + status['cupy'][1] + ')'}; jax "
            f"{'yes' if status['jax'][0] else 'no (' + status['jax'][1] + ')'}",
            f"- total {total:.0f} s (budget {budget:.0f} s)", "",
            "| step | result | seconds | summary |", "|---|---|---|---|"]
    for s in steps:
        res = "TIMEOUT" if s.returncode is None and s.command else ("pass" if s.ok else "FAIL")
        text.append(f"| {s.name} | {res} | {s.seconds:.0f} | {s.summary} |")
    info_buf = io.StringIO()
    try:
        info(info_buf)
    except Exception as exc:  # pragma: no cover - info never raises
        info_buf.write(f"info failed: {exc}")
    text += ["", "## convkit info", "", "```text", info_buf.getvalue().rstrip(), "```"]
    bench_md = sorted((work / "bench").glob("results*.md")) if (work / "bench").is_dir() else []
    for s in steps:
        text += ["", f"## {s.name}", "", f"`{' '.join(s.command)}`" if s.command else s.summary, ""]
        if s.name.startswith("bench") and bench_md:
            for md in bench_md:
                text += [md.read_text().rstrip(), ""]
            tail = s.output[-4000:]
        elif s.name.startswith("check"):
            tail = s.output
        else:
            tail = s.output[-6000:]
        text += ["```text", tail.rstrip(), "```"]
    Path(report).write_text("\n".join(text) + "\n")
    print(f"\n{'PASS' if ok else 'FAIL'}: {sum(s.ok for s in steps)}/{len(steps)} steps passed in "
          f"{total:.0f} s; report: {os.path.abspath(report)}", file=out)
    return 0 if ok else 1


# ----------------------------------------------------------------------------- bench, tune


def bench_module():
    """The benchmark suite: ``convkit.benchmarks`` when installed (the repository's
    ``benchmarks/`` folder shipped as a subpackage), else that folder of the checkout this
    convkit runs from, loaded under the same name. Raises ModuleNotFoundError when neither exists."""
    import importlib
    import importlib.util
    from pathlib import Path

    try:
        return importlib.import_module("convkit.benchmarks")
    except ModuleNotFoundError as exc:
        if exc.name != "convkit.benchmarks":
            raise
    init = Path(__file__).resolve().parent.parent / "benchmarks" / "__init__.py"
    if not init.is_file():
        raise ModuleNotFoundError("the benchmark suite is not installed with this convkit "
                                  "(convkit.benchmarks) and no checkout's benchmarks/ folder is next to it",
                                  name="convkit.benchmarks")
    spec = importlib.util.spec_from_file_location("convkit.benchmarks", init,
                                                  submodule_search_locations=[str(init.parent)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[spec.name]
        raise
    return module


def bench(argv: list[str], prog: str = "convkit bench") -> int:
    """Run the benchmark suite with ``argv`` (its own options: ``convkit bench --help``)."""
    try:
        module = bench_module()
    except ModuleNotFoundError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    return module.main(argv, prog=prog)


#: the cost-model constants ``convkit tune`` measures, with their unit
TUNED = {"c_direct": "s per multiply-add, N-d direct", "c_direct_1d": "s per multiply-add, 1-D direct",
         "c_fft": "s per element x log2(length), FFT", "c_out": "s per element touched once",
         "c_sep": "s per multiply-add, separable 1-D pass",
         "oa_1d_out": "s per block element beyond the FFTs, 1-D overlap-add"}
#: the NumPy backend's host engines' constants (printed where this backend has them: OpenCV, Numba)
TUNED_ENGINES = {"c_fused": "s per multiply-add, fused 2-D filter (OpenCV's or Numba's)",
                 "c_fused_out": "s per output, fused 2-D filter",
                 "single_fused": "float32/float64, fused 2-D filter",
                 "c_fused_sep": "s per multiply-add, OpenCV's separable filter",
                 "c_fused_dft": "s per transform point, OpenCV's DFT in tiles",
                 "c_fused_loop": "s per multiply-add, Numba's 2-D loop beyond OpenCV's filter",
                 "c_fused_loop_out": "s per output, Numba's 2-D loop beyond OpenCV's filter",
                 "c_fused_sep_loop": "s per multiply-add, Numba's separable loop",
                 "c_fused_1d": "s per multiply-add, Numba's 1-D loop (every core)",
                 "c_fused_1d_out": "s per output, Numba's 1-D loop",
                 "single_fused_1d": "float32/float64, Numba's 1-D loop",
                 "c_fused_3d": "s per multiply-add, Numba's 3-D loop (every core)",
                 "c_fused_3d_out": "s per output, Numba's 3-D loop",
                 "single_fused_3d": "float32/float64, Numba's 3-D loop"}
#: also measured on device backends (``convkit tune --backend cupy|jax``)
TUNED_DEVICE = {"c_mem": "s per byte read or written", "fft_call": "s per FFT-path call",
                "single_direct": "float32/float64, direct", "single_fft": "float32/float64, FFT"}
#: measured where the backend hands calls to the NumPy backend's engines (JAX on a CPU)
TUNED_HANDOFF = {"handoff_call": "s per call handed to the NumPy backend (JAX's CPU handoff)"}


def tune_command(quick: bool = False, repeats: int = 3, save: str | None = None,
                 file: TextIO | None = None, backend: str = "numpy") -> int:
    """Measure ``backend``'s cost-model constants here (device backends: on their device,
    synchronised), print them next to the shipped ones, optionally save them (``save=""``: the
    default path, per backend and device); return 0, or 2 when the backend cannot run here."""
    from . import tune as tune_module
    from .dispatch import get_backend

    out = file or sys.stdout
    be = get_backend(backend)
    if backend != "numpy":
        ok, reason = be.available()
        if not ok:
            print(f"convkit tune: the {backend} backend cannot run here: {reason}", file=sys.stderr)
            return 2
    shipped = be.capabilities
    start = time.perf_counter()
    if backend == "numpy":
        caps = tune_module.tune(apply=False, quick=quick, repeats=repeats)
        what = "NumPy backend cost model measured here"
        engines = {n: u for n, u in TUNED_ENGINES.items() if getattr(shipped, n) and getattr(caps, n)}
        rows = {**TUNED, **engines}
    else:
        caps = tune_module.tune(apply=False, quick=quick, repeats=repeats, backend=backend)
        what = f"{backend} backend cost model measured on {tune_module.device_name(backend)}"
        rows = {**TUNED, **TUNED_DEVICE}
        rows.update({n: u for n, u in TUNED_HANDOFF.items() if getattr(caps, n) is not None})
    print(f"convkit tune: {what} in {time.perf_counter() - start:.1f} s"
          f"{' (--quick)' if quick else ''}\n", file=out)
    print(f"{'constant':16s} {'shipped':>10s} {'measured':>10s} {'ratio':>7s}  unit", file=out)
    for name, unit in rows.items():
        a, b = getattr(shipped, name), getattr(caps, name)
        ratio = f"{b / a:.2f}" if a and b else "-"
        sa, sb = ("-" if v is None else format(v, ".3g") for v in (a, b))
        print(f"{name:16s} {sa:>10s} {sb:>10s} {ratio:>7s}  {unit}", file=out)
    if save is not None:
        if backend == "numpy":
            path = tune_module.save(caps, save or None)
            args = "" if not save else repr(path)
            print(f"\nsaved to {path}; a program uses them with convkit.tune.apply(convkit.tune.load("
                  f"{args}))", file=out)
        else:
            path = tune_module.save(caps, save or None, backend=backend)
            args = f"backend={backend!r}" if not save else f"{path!r}"
            print(f"\nsaved to {path}; a program uses them with convkit.tune.apply("
                  f"convkit.tune.load({args}), backend={backend!r})", file=out)
    else:
        print("\nnot saved (--save [PATH] writes them; convkit.tune.apply(convkit.tune.load()) uses them)",
              file=out)
    return 0


# ----------------------------------------------------------------------------- explain


def _per_axis_arg(text: str) -> int | tuple[int, ...]:
    """``"2"`` -> 2, ``"2,1"`` -> (2, 1)."""
    try:
        vals = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an int or a comma list of ints") from None
    return vals[0] if len(vals) == 1 else vals


def _mode_arg(text: str):
    """A mode name, or explicit pads ``"lo:hi[,lo:hi...]"`` (one pair per convolution axis)."""
    if ":" not in text:
        return text
    try:
        return tuple(tuple(int(v) for v in pair.split(":")) for pair in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a mode or 'lo:hi[,lo:hi...]' pads") from None


def _fill_arg(text: str) -> int | float | complex:
    for kind in (int, float, complex):
        try:
            return kind(text)
        except ValueError:
            continue
    raise argparse.ArgumentTypeError(f"{text!r} is not a number")


def explain_command(args: argparse.Namespace, prog: str = "convkit", file: TextIO | None = None) -> int:
    """``convkit explain``: print :func:`convkit.explain` for shapes and dtypes; 2 on a refused call."""
    from . import explain as explain_fn
    from .errors import ConvkitError
    from .explain import parse_spec

    out = file or sys.stdout
    try:
        in1, in2 = parse_spec(args.in1, args.dtype), parse_spec(args.in2, args.dtype)
        names = ("mode", "op", "method", "boundary", "fillvalue", "align", "origin", "stride", "dilation",
                 "precision", "backend")
        kw = {k: getattr(args, k) for k in names}
        e = explain_fn(in1, in2, axes=args.axes, dtype=args.result_dtype, **kw)
    except (ConvkitError, ValueError, TypeError) as exc:
        print(f"{prog} explain: error: {exc}", file=sys.stderr)
        return 2
    if args.code is None:
        print(e, file=out)
        return 0
    eq = e.equivalents[args.code]
    if eq.code is None:
        print(f"{prog} explain: no {args.code} equivalent: {eq.reason}", file=sys.stderr)
        return 1
    print(eq.code, file=out)
    return 0


def _explain_parser(sub) -> None:
    from .explain import LIBRARIES

    p = sub.add_parser(
        "explain", help="what one convolve/correlate call computes, and the same call in other libraries",
        description="Explain one call without running it (convkit.explain): per-axis pads, dilation, stride "
        "and flip/conj, the output shape and dtype, the backend and the method 'auto' picks with its cost "
        "estimates, and the equivalent scipy.signal, scipy.ndimage, numpy.convolve, torch, Keras and "
        "jax.lax code, or why none exists. Exit status 2 if convkit would refuse the call.",
        epilog="example: %(prog)s 100x100 5x5 --mode same --dtype float32 --stride 2")
    p.add_argument("in1", help="shape of in1: sizes joined by 'x' (100x100), optionally ':dtype' "
                   "(100x100:int32)")
    p.add_argument("in2", help="shape of in2, as in1")
    p.add_argument("--op", choices=("convolve", "correlate"), default="convolve")
    p.add_argument("--mode", type=_mode_arg, default="full",
                   help="full, valid, same, causal, or pads lo:hi[,lo:hi...] (default: full)")
    p.add_argument("--dtype", default="float64", help="dtype of both inputs unless a shape names its own "
                   "(default: float64)")
    p.add_argument("--result-dtype", default=None, metavar="DTYPE", help="convkit's dtype= keyword")
    p.add_argument("--method", default="auto")
    p.add_argument("--axes", type=_per_axis_arg, default=None, help="convolution axes: 1 or 0,1")
    p.add_argument("--boundary", default="fill")
    p.add_argument("--fillvalue", type=_fill_arg, default=0)
    p.add_argument("--align", default="scipy", help="centring of 'same': scipy or tf")
    for name in ("origin", "stride", "dilation"):
        p.add_argument(f"--{name}", type=_per_axis_arg, default=0 if name == "origin" else 1,
                       help="an int, or one per axis: 2,1")
    p.add_argument("--precision", default="highest")
    p.add_argument("--backend", default=None, help="backend name (default: convkit.get_backend())")
    p.add_argument("--code", choices=tuple(LIBRARIES), default=None, metavar="LIBRARY",
                   help="print only this library's equivalent code (one of: " + ", ".join(LIBRARIES)
                   + "); exit status 1 if it has none")


# ----------------------------------------------------------------------------- main

COMMANDS = ("demo", "info", "check", "bench", "tune", "explain")


def _demo() -> int:
    from . import __main__ as demo_module

    return 0 if demo_module.demo() else 1


def _default() -> int:
    """No command: the backends on this machine and the conventions demo (``python -m convkit``
    has always done this; the README's main job runs it)."""
    from . import __main__ as demo_module

    demo_module.show_backends()
    ok = demo_module.demo()
    print(f"\nmore: convkit --help (or python -m convkit --help): {', '.join(COMMANDS)}")
    return 0 if ok else 1


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="convkit: conventions demo, environment info, self-check, benchmarks, "
        "cost-model tuning, and explaining one call. Without a command: the backends on this machine and "
        "the conventions demo.",
        epilog=f"'{prog} COMMAND --help' describes each command; '{prog}' and "
        f"'{'convkit' if prog != 'convkit' else 'python -m convkit'}' are the same program.")
    sub = parser.add_subparsers(dest="command", metavar="{" + ",".join(COMMANDS) + "}")
    sub.add_parser("demo", help="how convkit spells SciPy/NumPy/torch/Keras/lax conventions, checked",
                   description="The three classic confusions (flip, even-kernel 'same', stride + 'same') on "
                   "real numbers: each library's result next to the convkit call that reproduces it. "
                   "Exit status 1 if a check fails.")
    sub.add_parser("info", help="versions, backends (and why one is unavailable), devices",
                   description="Versions (convkit, Python, NumPy, SciPy, JAX, CuPy, CUDA), every backend "
                   "with its availability and the reason, and the devices.")
    p_check = sub.add_parser("check", help="compact conformance matrix on every available backend",
                             description="Every mode x boundary x dtype x method on each backend, compared "
                             "with a reference within its S5 bound. Exit status 1 on any failure or when a "
                             "backend named with --backend cannot run.")
    p_check.add_argument("--backend", action="append", metavar="NAME",
                         help="check only this backend (repeatable); unavailable is a failure")
    p_check.add_argument("-v", "--verbose", action="store_true", help="print every failing case")
    p_check.add_argument("--gpu", action="store_true",
                         help="one-shot GPU validation: pytest -m gpu, check on cupy and jax and the quick "
                         "GPU benchmarks, one report (docs/gpu.md); exit status 2 at once without a GPU")
    p_check.add_argument("--report", default="convkit-gpu-report.md", metavar="PATH",
                         help="with --gpu: where the report is written (default: convkit-gpu-report.md)")
    p_check.add_argument("--budget", type=float, default=GPU_BUDGET, metavar="SECONDS",
                         help=f"with --gpu: time for all steps (default: {GPU_BUDGET})")
    # bench: every option is the suite's own (forwarded; `convkit bench --help` prints them)
    sub.add_parser("bench", add_help=False,
                   help="benchmark convkit against SciPy/JAX/CuPy peers (options: bench --help)")
    p_tune = sub.add_parser("tune", help="measure the NumPy backend's cost-model constants here",
                            description="Times the NumPy backend's primitives on this machine (seconds) "
                            "and prints the fitted constants of method='auto' next to the shipped ones. "
                            "Nothing is applied automatically: a program calls "
                            "convkit.tune.apply(convkit.tune.load()) to use saved constants.")
    p_tune.add_argument("--backend", choices=("numpy", "cupy", "jax"), default="numpy",
                        help="the backend to measure (cupy, jax: on its device, synchronised; "
                             "default: numpy)")
    p_tune.add_argument("--quick", action="store_true", help="smaller inputs (faster, noisier)")
    p_tune.add_argument("--repeats", type=int, default=3, help="best of this many timings (default: 3)")
    p_tune.add_argument("--save", nargs="?", const="", default=None, metavar="PATH",
                        help="write the constants as JSON (default path: $CONVKIT_TUNE_FILE or "
                             "~/.cache/convkit/tune-numpy.json)")
    _explain_parser(sub)
    return parser


def main(argv: list[str] | None = None, prog: str = "convkit") -> int:
    """Entry point of ``convkit`` and ``python -m convkit`` (the same commands); returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:  # the suite parses its own options (and --help)
        return bench(argv[1:], prog=f"{prog} bench")
    args = _parser(prog).parse_args(argv)
    if args.command is None:
        return _default()
    if args.command == "info":
        return info()
    if args.command == "check":
        if args.gpu:
            return gpu_check(args.report, args.budget)
        return check(args.backend, verbose=args.verbose)
    if args.command == "demo":
        return _demo()
    if args.command == "tune":
        return tune_command(quick=args.quick, repeats=args.repeats, save=args.save, backend=args.backend)
    if args.command == "explain":
        return explain_command(args, prog=prog)
    raise AssertionError(args.command)  # pragma: no cover


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
