"""The ``convkit`` console script: ``info``, ``check``, ``demo`` (in process and as a subprocess)."""

from __future__ import annotations

import platform
import shutil
import subprocess
import sys
import types

import numpy as np
import pytest
import scipy
from cupy_emulated import NAME, install_fake_cupy

import convkit
from convkit import cli, dispatch
from convkit.backends import cupy as ck_cupy
from convkit.backends import numpy as ck_numpy


def _run(capsys, *argv) -> tuple[int, str]:
    rc = cli.main(list(argv))
    return rc, capsys.readouterr().out


def _run_with_fresh_cupy(capsys, *argv) -> tuple[int, str]:
    """:func:`_run` with the CuPy backend's cached availability cleared before and after, so
    it sees the (faked) CuPy of this test and leaves no trace for the next one."""
    ck_cupy.backend.reset()
    try:
        return _run(capsys, *argv)
    finally:
        ck_cupy.backend.reset()


def test_info_versions_and_backends(capsys):
    rc, out = _run(capsys, "info")
    assert rc == 0
    lines = out.splitlines()
    assert f"convkit  {convkit.__version__}" in lines
    assert any(line.startswith(f"python   {platform.python_version()}") for line in lines)
    assert any(line.startswith(f"numpy    {np.__version__}") for line in lines)
    assert any(line.startswith(f"scipy    {scipy.__version__}") for line in lines)
    assert any(line.startswith("jax      ") for line in lines)
    assert any(line.startswith("CUDA     ") for line in lines)
    for row in convkit.list_backends():  # every backend with its state and reason
        state = "available" if row.available else f"unavailable: {row.reason}"
        assert f"  {row.name:14s} {state}" in lines
    assert "devices:" in lines and any(line.startswith("  numpy          cpu") for line in lines)


def test_info_says_whether_large_buffers_get_huge_pages(capsys, monkeypatch, tmp_path):
    thp = tmp_path / "enabled"
    thp.write_text("always [madvise] never\n")
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    off = cli.huge_pages(str(thp))
    assert off.startswith("4 KiB pages") and "madvise" in off and "JAX on CPU" in off
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.check=0:glibc.malloc.hugetlb=1")
    assert cli.huge_pages(str(thp)).startswith("huge pages") and "hugetlb=1" in cli.huge_pages(str(thp))
    thp.write_text("[always] madvise never\n")
    monkeypatch.delenv("GLIBC_TUNABLES")
    assert cli.huge_pages(str(thp)).startswith("huge pages")
    thp.write_text("always madvise [never]\n")
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.hugetlb=1")  # madvise is off: no huge pages
    assert cli.huge_pages(str(thp)).startswith("4 KiB pages")
    assert cli.huge_pages(str(tmp_path / "missing")).startswith("4 KiB pages (no transparent")
    rc, out = _run(capsys, "info")
    assert rc == 0 and any(line.startswith("memory   ") for line in out.splitlines())


def test_info_says_whether_jax_hands_off_to_the_host_engines(capsys, monkeypatch):
    """The JAX backend's CPU handoff (docs/backends/jax.md) is listed with the host engines."""
    if not any(r.name == "jax" and r.available for r in convkit.list_backends()):
        pytest.skip("JAX is not available")
    import jax

    monkeypatch.delenv("CONVKIT_JAX_HOST", raising=False)
    rc, out = _run(capsys, "info")
    line = next(ln for ln in out.splitlines() if ln.startswith("  jax handoff"))
    assert line.split()[2] == ("on:" if jax.default_backend() == "cpu" else "off")
    monkeypatch.setenv("CONVKIT_JAX_HOST", "0")
    rc, out = _run(capsys, "info")
    assert "  jax handoff    off (CONVKIT_JAX_HOST=0)" in out.splitlines()


def test_info_says_how_xla_cpu_dispatches(capsys):
    """Async dispatch on XLA:CPU costs small calls a thread hop (docs/backends/jax.md): info
    reports the setting JAX reads, where JAX's default device is a CPU."""
    if not any(r.name == "jax" and r.available for r in convkit.list_backends()):
        pytest.skip("JAX is not available")
    import jax

    if jax.default_backend() != "cpu":
        rc, out = _run(capsys, "info")
        assert not any(ln.startswith("  jax dispatch") for ln in out.splitlines())
        return
    before = jax.config.read("jax_cpu_enable_async_dispatch")
    try:
        for value, word in ((True, "async"), (False, "inline")):
            jax.config.update("jax_cpu_enable_async_dispatch", value)
            rc, out = _run(capsys, "info")
            line = next(ln for ln in out.splitlines() if ln.startswith("  jax dispatch"))
            assert line.split()[2] == word, line
    finally:
        jax.config.update("jax_cpu_enable_async_dispatch", before)


def test_info_has_no_dispatch_line_without_the_switch(capsys, monkeypatch):
    """A JAX without ``jax_cpu_enable_async_dispatch`` (before 0.4.32) gets no ``jax dispatch``
    line, and the handoff line stays."""
    if not any(r.name == "jax" and r.available for r in convkit.list_backends()):
        pytest.skip("JAX is not available")
    import jax

    real = jax.config.read

    def read(name):
        if name == "jax_cpu_enable_async_dispatch":
            raise AttributeError(f"Unrecognized config option: {name}")
        return real(name)

    monkeypatch.setattr(jax.config, "read", read)
    rc, out = _run(capsys, "info")
    lines = out.splitlines()
    assert not any(ln.startswith("  jax dispatch") for ln in lines)
    assert any(ln.startswith("  jax handoff") and "unknown" not in ln for ln in lines)


def test_info_with_a_cuda_device(capsys, monkeypatch):
    """With a (fake) working CuPy: CUDA runtime/driver versions and the device are printed."""
    install_fake_cupy(monkeypatch)
    rc, out = _run_with_fresh_cupy(capsys, "info")
    assert rc == 0
    assert "CUDA     runtime 12.9, driver 13.0" in out
    assert "  cupy           available" in out
    assert "cuda:0 Fake GPU, 80.0 GiB, compute capability 9.0" in out


def test_info_reports_broken_cuda_parts(capsys, monkeypatch):
    """Driver query failing, device query failing, CuPy import failing: reported, never raised."""
    mods = install_fake_cupy(monkeypatch)
    rt = mods["cupy"].cuda.runtime

    def boom(*a):
        raise RuntimeError("cudaErrorInsufficientDriver")

    monkeypatch.setattr(rt, "driverGetVersion", boom)
    monkeypatch.setattr(rt, "getDeviceCount", boom)
    monkeypatch.setattr(rt, "runtimeGetVersion", lambda: 0)
    lines, devices = cli._cupy_cuda()
    assert lines == ["runtime none", "driver unknown (RuntimeError)"]
    assert devices == ["none (RuntimeError: cudaErrorInsufficientDriver)"]
    monkeypatch.setitem(sys.modules, "cupy", None)
    assert cli._cupy_cuda() == (["unknown (CuPy is not installed)"], [])

    class Broken(types.ModuleType):
        def __getattr__(self, name):
            raise OSError("libcudart.so.12: cannot open shared object file")

    monkeypatch.setitem(sys.modules, "cupy", Broken("cupy"))
    lines, _ = cli._cupy_cuda()
    assert lines[0].startswith("unknown (CuPy failed to import")


def test_info_without_cupy_and_jax_installed(capsys, monkeypatch):
    monkeypatch.setattr(cli, "_dist_version", lambda mod: None if mod in ("cupy", "jax", "jaxlib") else "1.0")
    monkeypatch.setattr(cli, "_jax_devices", lambda: ["none (ModuleNotFoundError)"])
    monkeypatch.setitem(sys.modules, "cupy", None)
    rc, out = _run_with_fresh_cupy(capsys, "info")
    assert rc == 0
    assert "cupy     not installed" in out and "CUDA     unknown (CuPy is not installed)" in out
    assert "  cupy           unavailable: CuPy is not installed" in out


def test_jax_devices_listed_or_reason(monkeypatch):
    devices = cli._jax_devices()
    assert devices and all(isinstance(d, str) for d in devices)
    monkeypatch.setitem(sys.modules, "jax", None)
    assert cli._jax_devices() == ["none (ModuleNotFoundError)"]


def test_dist_version_without_import():
    assert cli._dist_version("numpy") == np.__version__
    assert cli._dist_version("surely_not_a_module_xyz") is None


def test_check_numpy_passes_against_the_oracle(capsys):
    rc, out = _run(capsys, "check", "--backend", "numpy")
    assert rc == 0, out
    rows = [line.split() for line in out.splitlines() if line.startswith("numpy ")]
    assert [r[2] for r in rows] == list(cli.MATRIX["dtypes"])
    assert all(r[1] == "scipy/exact" for r in rows)
    for r in rows:  # integer cells are exact; float cells are a ratio <= 1
        cells = r[3:]
        assert len(cells) == len(cli.MATRIX["methods"])
        if np.dtype(r[2]).kind in "biu":
            assert cells == ["exact"] * len(cells)
        else:
            assert all(0 <= float(c) <= 1 for c in cells)
    assert out.rstrip().splitlines()[-1].startswith("PASS: 1 backend(s)")


def test_check_runs_the_cupy_adapter_code(capsys):
    """The emulated CuPy backend (backends/cupy.py on NumPy) passes the matrix against NumPy."""
    rc, out = _run(capsys, "check", "--backend", NAME)
    assert rc == 0, out
    assert sum(line.startswith(f"{NAME} ") for line in out.splitlines()) == len(cli.MATRIX["dtypes"])


class _Broken(ck_numpy.NumpyBackend):
    """The NumPy backend with a wrong 'fft' for floats and a wrong 'direct' for integers."""

    name = "broken"

    def execute(self, plan, in1, in2):
        out = super().execute(plan, in1, in2)
        if plan.method == "fft" and out.dtype.kind in "fc":
            return out + 1e-3
        if plan.requested_method == "direct" and out.dtype.kind in "iu":
            return out + 1
        return out


def test_check_fails_on_wrong_results(capsys, monkeypatch):
    """The check can fail: a backend off by more than the S5 bound, or not exact, exits 1."""
    monkeypatch.setitem(dispatch._registry, "broken", _Broken())
    rc, out = _run(capsys, "check", "--backend", "broken")
    assert rc == 1
    row = {line.split()[2]: line.split()[3:] for line in out.splitlines() if line.startswith("broken ")}
    assert row["int32"][0].startswith("FAIL") and row["float64"][1] == "FAIL"
    assert "integer outputs differ" in out and "exceeds the S5 bound" in out
    assert out.rstrip().splitlines()[-1].startswith("FAIL")


class _Crashing(ck_numpy.NumpyBackend):
    def execute(self, plan, in1, in2):
        if plan.acc_dtype == np.complex128:
            raise RuntimeError("no complex here")
        if plan.acc_dtype == np.float32:
            return super().execute(plan, in1, in2).astype(np.float64)
        if plan.acc_dtype == np.float64 and plan.method == "direct":
            return np.full(plan.out_shape, np.nan)
        return super().execute(plan, in1, in2)


def test_check_reports_crashes_dtypes_and_nonfinite(capsys, monkeypatch):
    monkeypatch.setitem(dispatch._registry, "crashing", _Crashing())
    rc, out = _run(capsys, "check", "--backend", "crashing", "-v")
    assert rc == 1
    assert "raised RuntimeError: no complex here" in out
    assert "shape/dtype" in out and "non-finite output for finite inputs" in out


def test_check_requested_backend_unavailable_fails(capsys):
    rc, out = _run(capsys, "check", "--backend", "no-such-backend")
    assert rc == 1 and "no-such-backend FAIL: requested but unavailable: not a known backend" in out


def test_check_cupy_on_this_machine(capsys):
    """`convkit check --backend cupy` fails with the reason when CuPy cannot run (passes on a GPU)."""
    ok, reason = ck_cupy.backend.available()
    rc, out = _run(capsys, "check", "--backend", "cupy")
    if ok:  # pragma: no cover - GPU machines
        assert rc == 0, out
    else:
        assert rc == 1 and f"cupy           FAIL: requested but unavailable: {reason}" in out


def test_check_default_skips_unavailable(capsys, monkeypatch):
    """Without --backend: unavailable backends are listed as skipped; the run passes."""
    monkeypatch.setattr(cli, "run_matrix", lambda name: [
        cli.CaseResult(name, "numpy", m, d, cases=1) for m in cli.MATRIX["methods"]
        for d in cli.MATRIX["dtypes"]])
    monkeypatch.setitem(sys.modules, "cupy", None)
    rc, out = _run_with_fresh_cupy(capsys, "check")
    assert rc == 0
    assert "cupy           skipped: CuPy is not installed" in out


def test_no_command_runs_backends_and_demo(capsys, monkeypatch):
    """No command: what `python -m convkit` has always done (the README's main job), under
    both names; the exit status is the demo's."""
    import convkit.__main__ as demo_module

    monkeypatch.setattr(demo_module, "show_backends", lambda: print("BACKENDS"))
    monkeypatch.setattr(demo_module, "demo", lambda: print("DEMO") or True)
    rc, out = _run(capsys)
    assert rc == 0 and out.splitlines()[:2] == ["BACKENDS", "DEMO"]
    assert "more: convkit --help" in out and "bench" in out and "tune" in out
    monkeypatch.setattr(demo_module, "demo", lambda: False)
    assert demo_module.main([]) == 1 and cli.main([]) == 1


def test_help(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert exc.value.code == 0 and out.startswith("usage: convkit ")
    for command in cli.COMMANDS:
        assert command in out


def test_python_m_convkit_is_the_same_parser(capsys):
    import convkit.__main__ as demo_module

    rc = demo_module.main(["info"])
    out = capsys.readouterr().out
    assert rc == 0 and f"convkit  {convkit.__version__}" in out
    with pytest.raises(SystemExit):
        demo_module.main(["tune", "--help"])
    assert capsys.readouterr().out.startswith("usage: python -m convkit tune")


def test_bench_forwards_its_arguments(capsys, monkeypatch):
    calls = []

    class Suite:
        @staticmethod
        def main(argv, prog):
            calls.append((argv, prog))
            return 7

    monkeypatch.setattr(cli, "bench_module", lambda: Suite)
    assert cli.main(["bench", "--suite", "smoke", "--help"]) == 7
    assert calls == [(["--suite", "smoke", "--help"], "convkit bench")]


def test_bench_refuses_a_bogus_backend_in_process(capsys, tmp_path):
    rc = cli.main(["bench", "--backends", "bogus", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "not a known backend" in err and not (tmp_path / "o").exists()


def test_bench_without_the_suite(capsys, monkeypatch):
    def missing():
        raise ModuleNotFoundError("the benchmark suite is not installed", name="convkit.benchmarks")

    monkeypatch.setattr(cli, "bench_module", missing)
    assert cli.main(["bench"]) == 2
    assert "not installed" in capsys.readouterr().err


def test_tune_prints_and_saves(capsys, monkeypatch, tmp_path):
    import dataclasses

    import convkit.tune

    shipped = convkit.get_backend("numpy").capabilities
    measured = dataclasses.replace(shipped, c_direct=2 * shipped.c_direct)
    if shipped.c_fused_3d:  # the host engines' constants are listed too (Numba's 3-D loop here)
        measured = dataclasses.replace(measured, c_fused_3d=3 * shipped.c_fused_3d)
    monkeypatch.setattr(convkit.tune, "tune", lambda apply, quick, repeats: measured)
    path = tmp_path / "tune.json"
    rc, out = _run(capsys, "tune", "--quick", "--save", str(path))
    assert rc == 0
    row = next(line.split() for line in out.splitlines() if line.startswith("c_direct "))
    assert row[3] == "2.00"
    if shipped.c_fused_3d:
        row = next(line.split() for line in out.splitlines() if line.startswith("c_fused_3d "))
        assert row[3] == "3.00"
    assert convkit.tune.load(str(path)) == measured
    assert convkit.get_backend("numpy").capabilities is shipped  # measured, not applied
    rc, out = _run(capsys, "tune")
    assert rc == 0 and "not saved" in out


def test_demo(capsys, monkeypatch):
    import convkit.__main__ as demo_module

    monkeypatch.setattr(demo_module, "demo", lambda: True)
    assert cli.main(["demo"]) == 0
    monkeypatch.setattr(demo_module, "demo", lambda: False)
    assert cli.main(["demo"]) == 1


def _script() -> str:
    path = shutil.which("convkit")
    assert path, "the console script `convkit` is not installed (pip install -e .)"
    return path


def test_console_script_info():
    r = subprocess.run([_script(), "info"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert f"convkit  {convkit.__version__}" in r.stdout and "backends:" in r.stdout
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("backend", ["numpy", "cupy"])
def test_console_script_check(backend):
    ok, _ = ck_cupy.backend.available()
    r = subprocess.run([_script(), "check", "--backend", backend], capture_output=True, text=True,
                       timeout=300)
    expect = 0 if backend == "numpy" or ok else 1
    assert r.returncode == expect, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
