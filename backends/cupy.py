"""CuPy backend: convkit on NVIDIA GPUs.

Everything that is the same code over an array namespace lives in
:class:`convkit.backends._base.ArrayBackend` (padding, the exact shift-and-add direct
correlation, the FFT path, integer-exact FFT, NaN-safe ``auto``). This module holds only
what differs on CuPy:

* availability that tells the truth: CuPy not installed, installed but failing to import,
  no usable CUDA driver or device, or a CUDA library it needs (NVRTC, cuFFT) missing. The
  answer is probed once and cached; ``available()`` never raises;
* host (NumPy) inputs are copied to the device, computed there and returned as NumPy by
  the api (``device = True``); CuPy inputs are computed on their own device;
* FFTs with ``cupy.fft`` and ``cupyx.scipy.fft.next_fast_len``;
* float32/float64 direct correlation with ``cupyx.scipy.ndimage.correlate`` where it is
  equivalent (shared guard in ``_base``), else the shared shift-and-add.

Deliberately *not* used (CuPy quirks SPEC forbids passing through):
``cupyx.scipy.signal.choose_conv_method`` (raises for N-d, always FFT for floats),
``cupyx.scipy.signal.correlate2d`` (shifted 'same' for even kernels), ndimage on integer
data (float64 weights: not exact) and ``cupyx.scipy.signal`` in general (importing it
needs cuBLAS, which nothing here uses). ``method="oa"`` runs the plain FFT path.

The array modules are injected: ``CupyBackend()`` loads CuPy lazily, while
:func:`_emulated` builds the same class over NumPy/SciPy so every line of this module runs
in the CPU test suite (see ``tests/cupy_emulated.py``).
"""

from __future__ import annotations

import contextlib
import sys
import threading
from typing import Any

import numpy as np

from convkit.choose import Capabilities
from convkit.errors import BackendUnavailableError, ConvkitTypeError
from convkit.plan import Plan

from ._base import ArrayBackend

__all__ = ["CupyBackend", "backend", "INSTALL_HINT"]

INSTALL_HINT = (
    'Install CuPy for your CUDA major version: pip install "pyconvkit[cuda12]" (CUDA 12.x) or '
    'pip install "pyconvkit[cuda13]" (CUDA 13.x); it needs an NVIDIA GPU and driver'
)

#: dtypes CuPy can hold (no long double)
_CUPY_DTYPES = frozenset("?bBhHiIlLqQefdFD")


def _short(exc: BaseException) -> str:
    """``Type: first line of the message`` (CUDA errors can be long)."""
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    msg = msg if len(msg) <= 200 else msg[:197] + "..."
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


# ----------------------------------------------------------------------------- loading and probing


def _import_cupy() -> dict[str, Any]:
    """Import CuPy and the cupyx modules convkit uses (raises whatever the import raises)."""
    import cupy
    import cupyx.scipy.fft
    import cupyx.scipy.ndimage

    return {"xp": cupy, "fft": cupy.fft, "scipy_fft": cupyx.scipy.fft, "ndimage": cupyx.scipy.ndimage}


def _probe_cuda(cp: Any) -> tuple[bool, str]:
    """Check that a device exists and that what convkit calls on it works."""
    try:
        count = int(cp.cuda.runtime.getDeviceCount())
    except Exception as exc:
        return False, f"CuPy is installed but no usable CUDA driver or device was found ({_short(exc)})"
    if count < 1:
        return False, "CuPy is installed but no CUDA device was found (getDeviceCount() == 0)"
    steps = (
        ("device memory allocation", lambda: cp.empty(16, dtype=cp.float64)),
        ("CUDA kernel compilation (NVRTC)", lambda: float((cp.arange(16.0) * 2).sum())),
        ("cuFFT", lambda: cp.fft.irfft(cp.fft.rfft(cp.ones(16, dtype=cp.float64)), 16)),
    )
    for what, step in steps:
        try:
            step()
            cp.cuda.Device().synchronize()
        except Exception as exc:
            return False, (f"a CUDA device was found but {what} failed; a CUDA library may be missing "
                           f"({_short(exc)})")
    return True, ""


def _check_cupy() -> tuple[dict[str, Any] | None, bool, str]:
    """Import and probe the real CuPy: ``(modules, ok, reason)``; never raises."""
    try:
        mods = _import_cupy()
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] in ("cupy", "cupyx"):
            return None, False, "CuPy is not installed"
        return None, False, f"CuPy is installed but failed to import ({_short(exc)})"
    except Exception as exc:  # broken CUDA installs raise ImportError, OSError, RuntimeError...
        return None, False, f"CuPy is installed but failed to import ({_short(exc)})"
    try:
        ok, reason = _probe_cuda(mods["xp"])
    except Exception as exc:  # a probe step itself misbehaving
        ok, reason = False, f"CUDA device probe failed ({_short(exc)})"
    return (mods if ok else None), ok, reason


# ----------------------------------------------------------------------------- the backend


class CupyBackend(ArrayBackend):
    """Runs convkit on CuPy arrays.

    ``xp``, ``fft``, ``scipy_fft`` and ``ndimage`` are the array modules (``cupy``,
    ``cupy.fft``, ``cupyx.scipy.fft``, ``cupyx.scipy.ndimage``). Left out, CuPy is
    imported and the device probed on first use; the answer is cached.
    """

    install_hint = INSTALL_HINT
    array_module = "cupy"
    device = True
    capabilities = Capabilities(
        # 'oa' runs the plain FFT path; constants are estimates for a current datacenter GPU
        # (one kernel launch ~10 us dominates small calls, cuFFT is cheap relative to direct);
        # a separable pass (cupyx correlate1d) is costed like one tap of the N-d direct kernel
        methods=("direct", "fft"), c_direct=2.0e-12, c_fft=5.0e-13, small_direct=2_000_000,
        c_sep=2.0e-12,
    )

    def __init__(self, xp: Any = None, fft: Any = None, scipy_fft: Any = None, ndimage: Any = None, *,
                 name: str = "cupy") -> None:
        self.name = name
        self._given_modules = xp is not None  # stand-in modules (the CPU emulation): no runners
        self._lock = threading.Lock()
        self._mods: dict[str, Any] | None = None
        self._status: tuple[bool, str] | None = None
        if xp is not None:
            self._mods = {"xp": xp, "fft": fft, "scipy_fft": scipy_fft, "ndimage": ndimage}
            self._status = (True, "")

    # -- availability (cached; never raises)
    def available(self) -> tuple[bool, str]:
        if self._status is None:
            with self._lock:
                if self._status is None:
                    self._mods, ok, reason = _check_cupy()
                    self._status = (ok, reason)
        return self._status

    def reset(self) -> None:
        """Forget the cached availability (tests; after installing a driver in a notebook)."""
        with self._lock:
            self._mods, self._status = None, None

    def _module(self, key: str) -> Any:
        ok, reason = self.available()
        if not ok:
            raise BackendUnavailableError(
                f"backend {self.name!r} is not available: {reason}. {self.install_hint}"
            )
        return self._mods[key]

    @property
    def xp(self):  # type: ignore[override]
        return self._module("xp")

    # -- arrays
    def test_runners(self) -> list:
        return [] if self._given_modules else _test_runners()

    def owns(self, x: Any) -> bool:
        if self._given_modules:  # the CPU emulation computes on host arrays: it owns no array type
            return False
        cp = sys.modules.get("cupy")
        return cp is not None and isinstance(x, getattr(cp, "ndarray", ()))

    def asarray(self, x: Any):
        return self.xp.asarray(x)

    def to_host(self, x: Any) -> np.ndarray:
        return getattr(self.xp, "asnumpy", np.asarray)(x)

    def sync(self, x: Any) -> None:
        cuda = getattr(self.xp, "cuda", None)
        if cuda is not None:
            cuda.get_current_stream().synchronize()

    @staticmethod
    def _device_of(*arrays: Any):
        """The CUDA device of the first device input (a context manager), else a no-op."""
        for a in arrays:
            dev = getattr(a, "device", None)
            if hasattr(dev, "__enter__"):
                return dev
        return contextlib.nullcontext()

    # -- the canonical form on the device
    def execute(self, plan: Plan, in1, in2):
        for name, dt in (("in1", in1.dtype), ("in2", in2.dtype), ("dtype", plan.acc_dtype),
                         ("dtype", plan.out_dtype)):
            if np.dtype(dt).char not in _CUPY_DTYPES:
                raise ConvkitTypeError(
                    f"{name} has dtype {np.dtype(dt)}, which CuPy cannot hold; expected bool, integer, "
                    "float16/32/64 or complex64/128 (use backend='numpy' for long double)"
                )
        with self._device_of(in1, in2):
            return super().execute(plan, self.asarray(in1), self.asarray(in2))

    # -- FFT primitives: cupy.fft (cuFFT, plans cached by CuPy), fast lengths from cupyx
    def rfftn(self, a, s, axes):
        return self._module("fft").rfftn(a, s=s, axes=axes)

    def irfftn(self, a, s, axes):
        return self._module("fft").irfftn(a, s=s, axes=axes)

    def fftn(self, a, s, axes):
        return self._module("fft").fftn(a, s=s, axes=axes)

    def ifftn(self, a, s, axes):
        return self._module("fft").ifftn(a, s=s, axes=axes)

    def next_fast_len(self, n: int, real: bool) -> int:
        return int(self._module("scipy_fft").next_fast_len(n, real=real))

    def separable_ndimage(self):
        return self._module("ndimage")

    # -- direct: one fused ndimage kernel for floats where equivalent, else shift-and-add
    def direct(self, plan: Plan, x, w):
        if self.ndimage_ok(plan, w):
            return self.ndimage_direct(plan, x, w, self._module("ndimage"))
        return super().direct(plan, x, w)


backend = CupyBackend()


def _emulated(name: str = "cupy-emulated") -> CupyBackend:
    """This module's backend running on NumPy/SciPy stand-ins for cupy/cupyx (CPU tests only)."""
    import scipy.fft
    import scipy.ndimage

    return CupyBackend(np, np.fft, scipy.fft, scipy.ndimage, name=name)


# ----------------------------------------------------------------------------- test runners


def _to_device(a: np.ndarray):
    import cupy

    return cupy.asarray(a)


def _is_device_array(r: Any) -> bool:
    return backend.owns(r)


def _test_runners() -> list:
    """Conformance-suite runners: CuPy arrays in/out, and NumPy in/out with ``backend='cupy'``."""
    from convkit.testing import Runner

    marks: tuple = ()
    if "pytest" in sys.modules:
        marks = (sys.modules["pytest"].mark.gpu,)
    return [
        Runner("cupy", "cupy", to_device=_to_device, array_check=_is_device_array, marks=marks),
        Runner("cupy-host", "cupy", array_check=lambda r: isinstance(r, np.ndarray), marks=marks),
    ]


