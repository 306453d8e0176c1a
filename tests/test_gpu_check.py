"""``convkit check --gpu`` (the one-shot GPU validation) and ``convkit info``'s CUDA library
lines, on machines without a GPU: the refusal by subprocess, the orchestration with fakes."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from convkit import cli


def test_no_gpu_exits_at_once(tmp_path):
    status = cli.gpu_status()
    if any(ok for ok, _ in status.values()):
        pytest.skip("this machine has a usable GPU")
    report = tmp_path / "r.md"
    start = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "convkit", "check", "--gpu", "--report", str(report)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    assert "no usable GPU" in res.stderr and "cupy:" in res.stderr and "jax:" in res.stderr
    assert not report.exists()
    assert time.perf_counter() - start < 60


def test_orchestration_and_report(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli, "gpu_status", lambda: {"cupy": (True, ""), "jax": (False, "JAX sees no GPU")})
    seen = []

    def fake_step(name, command, timeout, cwd=None):
        seen.append((name, command, timeout))
        junit = [c.split("=", 1)[1] for c in command if c.startswith("--junitxml=")]
        if junit:
            with open(junit[0], "w") as f:
                f.write('<testsuites><testsuite tests="10" failures="1" errors="0" skipped="2"/>'
                        '</testsuites>')
        return cli.StepResult(name, command, 1 if junit else 0, 0.5, f"output of {name}")

    monkeypatch.setattr(cli, "_run_step", fake_step)
    report = tmp_path / "gpu.md"
    rc = cli.main(["check", "--gpu", "--report", str(report), "--budget", "100"])
    assert rc == 1  # pytest had a failure and jax has no GPU
    names = [s[0] for s in seen]
    assert names == ["pytest -m gpu", "check cupy", "bench quick"]
    assert all(t <= 100 for _, _, t in seen)
    assert "-m" in seen[0][1] and "gpu" in seen[0][1]
    assert seen[0][2] == pytest.approx(60, abs=1)  # 0.6 of the budget: the longest step
    if cli._gpu_test_workers():  # pytest-xdist installed: workers, one per core up to 8
        n = int(seen[0][1][seen[0][1].index("-n") + 1])
        assert 1 <= n <= min(cli.GPU_TEST_WORKERS, os.cpu_count())
    assert seen[2][1][seen[2][1].index("--backends") + 1] == "cupy"
    text = report.read_text()
    assert text.startswith("# convkit GPU validation: FAIL")
    assert "7 passed, 1 failed, 0 errors, 2 skipped" in text
    assert "FAIL: jax cannot use a GPU: JAX sees no GPU" in text
    assert "output of check cupy" in text and "## convkit info" in text
    assert "report:" in capsys.readouterr().out


def test_missing_library_names_the_file():
    err = OSError("libnvrtc.so.12: cannot open shared object file: No such file or directory")
    assert cli.missing_library(err) == "libnvrtc.so.12"
    err = ImportError("libcufft.so.11: cannot open shared object file")
    assert cli.missing_library(err) == "libcufft.so.11"
    assert cli.missing_library(RuntimeError("CUDA_ERROR_NO_DEVICE")) == ""


def test_cuda_libraries_report_missing(monkeypatch):
    import types

    ok = types.SimpleNamespace(getVersion=lambda: (12, 4))

    def boom():
        raise ImportError("libcufft.so.11: cannot open shared object file: No such file or directory")

    mods = {"cupy.cuda.nvrtc": ok, "cupy.cuda.cufft": types.SimpleNamespace(getVersion=boom)}
    import importlib

    def import_module(name):
        if name not in mods:
            raise ModuleNotFoundError(f"No module named {name!r}")
        return mods[name]

    monkeypatch.setattr(importlib, "import_module", import_module)
    fake_cupy = types.SimpleNamespace(cuda=types.SimpleNamespace(
        runtime=types.SimpleNamespace(runtimeGetVersion=lambda: 12040)))
    lines = cli.cuda_libraries(fake_cupy)
    assert lines[0] == "NVRTC 12.4"
    assert lines[1].startswith("cuFFT MISSING (libcufft.so.11 could not be loaded")
    assert 'pip install "cupy-cuda12x[ctk]>=14"' in lines[1]
    # CuPy 14 has the NVRTC binding in cupy_backends only (cupy.cuda.nvrtc is gone): found there
    mods["cupy_backends.cuda.libs.nvrtc"] = types.SimpleNamespace(getVersion=lambda: (13, 0))
    del mods["cupy.cuda.nvrtc"]
    assert cli.cuda_libraries(fake_cupy)[0] == "NVRTC 13.0"
    del mods["cupy_backends.cuda.libs.nvrtc"]
    assert cli.cuda_libraries(fake_cupy)[0].startswith("NVRTC MISSING (ModuleNotFoundError: No module named")
