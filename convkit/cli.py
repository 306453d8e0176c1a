"""The ``convkit`` console script.

* ``convkit info``: versions (convkit, Python, NumPy, SciPy, JAX, CuPy, CUDA runtime and
  driver), every backend with its availability and the reason, and the devices;
* ``convkit check``: a compact conformance matrix (ops x 1-D/2-D x modes x boundaries x
  methods x dtypes) on every available backend, each result compared with a reference
  within its SPEC S5 bound (:func:`convkit.testing.direct_bound` / :func:`~convkit.testing.fft_bound`);
  the NumPy backend against an independent SciPy/exact oracle, the others against the NumPy
  backend. Exit status 1 on any failure or when a backend named with ``--backend`` cannot run;
* ``convkit demo``: the conventions demo of ``python -m convkit``.

Backend libraries are imported only by the command that needs them (and every failure
of theirs is reported, never raised).
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import time
from dataclasses import dataclass, field
from typing import TextIO

import numpy as np

__all__ = ["main", "info", "check", "run_matrix", "CaseResult", "MATRIX"]


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


def _jax_devices() -> list[str]:
    try:
        import jax

        return [f"{d.platform}:{d.id} {getattr(d, 'device_kind', '')}".rstrip() for d in jax.devices()]
    except Exception as exc:
        return [f"none ({type(exc).__name__})"]


def info(file: TextIO | None = None) -> int:
    """Print versions, backends (with the reason when unavailable) and devices; return 0."""
    import convkit

    out = file or sys.stdout
    rows = convkit.list_backends()
    avail = {r.name: r.available for r in rows}
    print(f"convkit  {convkit.__version__}", file=out)
    print(f"python   {platform.python_version()} ({platform.python_implementation()}, {platform.system()} "
          f"{platform.machine()})", file=out)
    for mod in ("numpy", "scipy", "jax", "jaxlib", "cupy"):
        print(f"{mod:8s} {_dist_version(mod) or 'not installed'}", file=out)
    cuda, cupy_devices = _cupy_cuda()
    print(f"CUDA     {', '.join(cuda)}", file=out)
    print("\nbackends:", file=out)
    for r in rows:
        state = "available" if r.available else f"unavailable: {r.reason}"
        print(f"  {r.name:14s} {state}", file=out)
    print("\ndevices:", file=out)
    print(f"  numpy          cpu ({platform.processor() or platform.machine()})", file=out)
    if "cupy" in avail:
        print(f"  cupy           {'; '.join(cupy_devices) or 'none'}", file=out)
    if avail.get("jax"):
        print(f"  jax            {'; '.join(_jax_devices())}", file=out)
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


# ----------------------------------------------------------------------------- main


def _demo() -> int:
    from . import __main__ as demo_module

    return 0 if demo_module.demo() else 1


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``convkit`` console script; returns the exit status."""
    parser = argparse.ArgumentParser(prog="convkit", description="convkit: environment info and self-check")
    sub = parser.add_subparsers(dest="command", metavar="{info,check,demo}")
    sub.add_parser("info", help="versions, backends (and why one is unavailable), devices")
    p_check = sub.add_parser("check", help="compact conformance matrix on every available backend")
    p_check.add_argument("--backend", action="append", metavar="NAME",
                         help="check only this backend (repeatable); unavailable is a failure")
    p_check.add_argument("-v", "--verbose", action="store_true", help="print every failing case")
    sub.add_parser("demo", help="how convkit spells SciPy/NumPy/torch/Keras/lax conventions")
    args = parser.parse_args(argv)
    if args.command == "info":
        return info()
    if args.command == "check":
        return check(args.backend, verbose=args.verbose)
    if args.command == "demo":
        return _demo()
    parser.print_help()
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
