"""CuPy availability tells the truth (SPEC S12): every failure mode is a clean answer.

Modes: not installed, installed but failing to import (any exception), no CUDA driver or
device, a CUDA library the backend needs missing (NVRTC, cuFFT). Each is reported by
``list_backends()`` and by the ``BackendUnavailableError`` you get when asking for cupy,
with the install hint; ``available()`` never raises and caches its answer.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from cupy_emulated import FakeCudaError, install_fake_cupy

import convkit
from convkit import dispatch
from convkit.backends import cupy as ck_cupy


@pytest.fixture
def fresh(monkeypatch):
    """The registered 'cupy' backend object with its cached answer forgotten (restored after)."""
    be = ck_cupy.backend
    be.reset()
    dispatch.reload_environment()
    yield be
    be.reset()
    dispatch.reload_environment()


def _asked(be) -> str:
    """The error text of asking for cupy by name (and of a call with backend='cupy')."""
    with pytest.raises(convkit.BackendUnavailableError) as info:
        convkit.get_backend("cupy")
    msg = str(info.value)
    dispatch.reload_environment()
    with pytest.raises(convkit.BackendUnavailableError) as call:
        convkit.convolve([1.0, 2.0], [1.0], backend="cupy")
    assert str(call.value) == msg
    assert isinstance(call.value, ImportError)  # S13: subclasses the builtin a caller expects
    assert "\n" not in msg and "convkit[cuda12]" in msg and "convkit[cuda13]" in msg
    row = {b.name: b for b in convkit.list_backends()}["cupy"]
    assert not row.available and row.reason and row.reason in msg
    return msg


def test_not_installed(fresh, monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # `import cupy` -> ModuleNotFoundError
    assert fresh.available() == (False, "CuPy is not installed")
    assert "CuPy is not installed" in _asked(fresh)


@pytest.mark.parametrize("exc", [
    ImportError("libcudart.so.12: cannot open shared object file"),
    OSError("libnvrtc.so.12: cannot open shared object file"),
    RuntimeError("CUDA environment is not correctly set up"),
    ModuleNotFoundError("No module named 'fastrlock'", name="fastrlock"),
    AttributeError("module 'cupy' has no attribute 'fft'"),
])
def test_import_fails_with_any_exception(fresh, monkeypatch, exc):
    """A broken install raises more than ImportError; each one is caught and named."""
    def broken():
        raise exc

    monkeypatch.setattr(ck_cupy, "_import_cupy", broken)
    ok, reason = fresh.available()
    assert not ok
    assert reason.startswith("CuPy is installed but failed to import") and type(exc).__name__ in reason
    assert str(exc).split(":")[0] in _asked(fresh)


@pytest.mark.parametrize("fail,count,expected", [
    ({"device_count": FakeCudaError("cudaErrorInsufficientDriver: CUDA driver version is insufficient")},
     1, "no usable CUDA driver or device"),
    ({"device_count": FakeCudaError("cudaErrorNoDevice: no CUDA-capable device is detected")},
     1, "no usable CUDA driver or device"),
    ({}, 0, "no CUDA device was found"),
    ({"alloc": FakeCudaError("cudaErrorMemoryAllocation: out of memory")}, 1, "memory allocation failed"),
    ({"nvrtc": ImportError("libnvrtc.so.12: cannot open shared object file")}, 1, "(NVRTC) failed"),
    ({"cufft": ImportError("libcufft.so.11: cannot open shared object file")}, 1, "cuFFT failed"),
])
def test_device_probe_failures(fresh, monkeypatch, fail, count, expected):
    install_fake_cupy(monkeypatch, device_count=count, fail=fail)
    ok, reason = fresh.available()
    assert not ok and expected in reason, reason
    for exc in fail.values():
        assert str(exc).split(":")[0] in reason
    assert expected in _asked(fresh)


def test_missing_cublas_does_not_matter(fresh, monkeypatch):
    """convkit's CuPy backend never calls cuBLAS (it avoids cupyx.scipy.signal, whose import
    needs it), so a missing cuBLAS must not make it unavailable."""
    install_fake_cupy(monkeypatch, fail={"cublas": ImportError("libcublasLt.so.12: cannot open")})
    assert fresh.available() == (True, "")
    out = convkit.convolve(np.arange(6.0), np.ones(3), method="fft", backend="cupy")
    np.testing.assert_allclose(out, np.convolve(np.arange(6.0), np.ones(3)), atol=1e-12)


def test_probe_that_raises_is_caught(fresh, monkeypatch):
    install_fake_cupy(monkeypatch)

    def crash(cp):
        raise KeyError("unexpected")

    monkeypatch.setattr(ck_cupy, "_probe_cuda", crash)
    ok, reason = fresh.available()
    assert not ok and reason.startswith("CUDA device probe failed (KeyError")


def test_answer_is_cached(fresh, monkeypatch):
    mods = install_fake_cupy(monkeypatch)
    calls = []
    real = ck_cupy._import_cupy
    monkeypatch.setattr(ck_cupy, "_import_cupy", lambda: calls.append(1) or real())
    for _ in range(3):
        assert fresh.available() == (True, "")
    convkit.list_backends()
    assert calls == [1]
    assert fresh.xp is mods["cupy"]


def test_unavailable_backend_methods_raise_cleanly(fresh, monkeypatch):
    """Using the backend object directly on a machine without CUDA is a BackendUnavailableError too."""
    monkeypatch.setitem(sys.modules, "cupy", None)
    with pytest.raises(convkit.BackendUnavailableError, match="backend 'cupy' is not available: CuPy is not"):
        fresh.asarray([1, 2])
    assert not fresh.owns(np.ones(2))  # a type check, never an import


def test_long_messages_are_shortened():
    assert ck_cupy._short(RuntimeError("x" * 500 + "\nsecond line")).endswith("...")
    assert ck_cupy._short(RuntimeError()) == "RuntimeError"


def test_this_machine(fresh):
    """The real answer, checked against an independent probe of this machine's CuPy."""
    try:
        import cupy
    except Exception:
        expect = "not installed or failed to import"
    else:
        try:
            n = cupy.cuda.runtime.getDeviceCount()
            expect = "device" if n > 0 else "no device"
        except Exception:
            expect = "no driver"
    ok, reason = fresh.available()
    if expect == "device":
        assert ok, reason  # pragma: no cover - GPU machines
    elif expect == "no driver":
        assert not ok and "no usable CUDA driver or device" in reason
    else:
        assert not ok and reason.startswith("CuPy is")


def test_list_backends_in_a_fresh_process_without_cupy():
    """`import cupy` failing in a clean interpreter: listed with the reason, no traceback."""
    code = ("import sys; sys.modules['cupy'] = None\n"
            "import convkit\n"
            "rows = {b.name: b for b in convkit.list_backends()}\n"
            "print(rows['cupy'].available, rows['cupy'].reason)\n"
            "try:\n"
            "    convkit.convolve([1], [1], backend='cupy')\n"
            "except convkit.BackendUnavailableError as e:\n"
            "    print('ERR', e)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "False CuPy is not installed" in r.stdout
    assert "ERR backend 'cupy' is not available: CuPy is not installed" in r.stdout
    assert "Traceback" not in r.stderr
