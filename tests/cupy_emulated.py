"""Test-only backend "cupy-emulated": backends/cupy.py's code with NumPy/SciPy standing in
for cupy/cupyx, so every line of the CuPy adapter runs on machines without a GPU.

Registered by tests/conftest.py; run the whole conformance suite through it with
``pytest tests --backend cupy-emulated``.
"""

from __future__ import annotations

import sys
import types

import numpy as np

import convkit
from convkit.backends import cupy as ck_cupy
from convkit.testing import Runner, register_runner

NAME = "cupy-emulated"


def register() -> None:
    """Register the emulated backend and its runner (NumPy in, ``backend=NAME``, NumPy out)."""
    convkit.register_backend(NAME, lambda: ck_cupy._emulated(NAME))
    register_runner(Runner(NAME, NAME, array_check=lambda r: isinstance(r, np.ndarray)))


# ----------------------------------------------------------------------------- a fake "cupy" package
# For the availability tests and the loader path of backends/cupy.py: module objects that
# behave like cupy/cupyx (NumPy underneath) and can be told to fail the way broken CUDA
# installs fail.


class FakeCudaError(RuntimeError):
    """Stands in for cupy_backends.cuda.api.runtime.CUDARuntimeError."""


class FakeDevice:
    """A CUDA device: a context manager with ``synchronize()`` that counts its use."""

    entered = 0

    def __enter__(self):
        FakeDevice.entered += 1
        return self

    def __exit__(self, *exc):
        return False

    def synchronize(self) -> None:
        pass


class FakeArray(np.ndarray):
    """A "device array": a NumPy array whose ``.device`` is a :class:`FakeDevice`."""

    @property
    def device(self):
        return FakeDevice()


class _Namespace(types.ModuleType):
    """A module that falls back to ``base`` for every name it does not define."""

    def __init__(self, name: str, base):
        super().__init__(name)
        self._base = base

    def __getattr__(self, item):
        return getattr(self._base, item)


def _failing(exc: BaseException):
    def fn(*args, **kwargs):
        raise exc
    return fn


def fake_cupy(device_count=1, fail: dict[str, BaseException] | None = None) -> dict[str, types.ModuleType]:
    """Modules ``{name: module}`` to put in ``sys.modules`` in place of cupy and cupyx.

    ``fail`` maps a step to the exception it raises: ``"device_count"``, ``"alloc"``,
    ``"nvrtc"``, ``"cufft"``, ``"cublas"``.
    """
    import scipy.fft
    import scipy.ndimage

    fail = fail or {}
    cp = _Namespace("cupy", np)
    cp.ndarray = FakeArray
    cp.asarray = lambda a, dtype=None: np.asarray(a, dtype=dtype).view(FakeArray)
    cp.asnumpy = lambda a: np.asarray(a).view(np.ndarray)
    cp.empty = _failing(fail["alloc"]) if "alloc" in fail else np.empty
    cp.arange = _failing(fail["nvrtc"]) if "nvrtc" in fail else np.arange
    cp.fft = _Namespace("cupy.fft", np.fft)
    if "cufft" in fail:
        cp.fft.rfft = _failing(fail["cufft"])
    runtime = types.SimpleNamespace(
        getDeviceCount=_failing(fail["device_count"]) if "device_count" in fail else (lambda: device_count),
        runtimeGetVersion=lambda: 12090, driverGetVersion=lambda: 13000,
        getDeviceProperties=lambda i: {"name": b"Fake GPU", "totalGlobalMem": 80 * 2**30, "major": 9,
                                       "minor": 0})
    stream = types.SimpleNamespace(synchronize=lambda: None)
    cp.cuda = types.SimpleNamespace(runtime=runtime, Device=FakeDevice, get_current_stream=lambda: stream)
    if "cublas" in fail:
        cp.dot = cp.matmul = _failing(fail["cublas"])
    cupyx = types.ModuleType("cupyx")
    cscipy = types.ModuleType("cupyx.scipy")
    cfft = _Namespace("cupyx.scipy.fft", scipy.fft)
    cnd = _Namespace("cupyx.scipy.ndimage", scipy.ndimage)
    cupyx.scipy, cscipy.fft, cscipy.ndimage = cscipy, cfft, cnd
    return {"cupy": cp, "cupy.fft": cp.fft, "cupyx": cupyx, "cupyx.scipy": cscipy,
            "cupyx.scipy.fft": cfft, "cupyx.scipy.ndimage": cnd}


def install_fake_cupy(monkeypatch, **kwargs) -> dict[str, types.ModuleType]:
    """Put a fake cupy in ``sys.modules`` (undone by ``monkeypatch``) and forget cached answers."""
    mods = fake_cupy(**kwargs)
    for name, mod in mods.items():
        monkeypatch.setitem(sys.modules, name, mod)
    return mods
