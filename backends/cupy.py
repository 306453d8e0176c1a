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
  equivalent (shared guard in ``_base``), else the shared shift-and-add. CuPy 13 and 14 both
  work: :class:`_Ndimage` never passes ``axes=`` (added in CuPy 14) but gives the weights
  size-1 axes instead, and hands cupyx a fill value its CUDA source generator can print (a NaN
  as ``numpy.nan`` itself: cupyx tests it by identity);
* few host-device syncs: everything about the small kernel is decided from one host copy,
  ``auto``'s FFT path reads its NaN/overflow flags (both spectra's DC bins and the output) in
  one transfer, the integer-FFT rule reads its six statistics in one transfer; ``sync(x)``
  waits on ``x``'s own device.

Deliberately *not* used (CuPy quirks SPEC forbids passing through):
``cupyx.scipy.signal.choose_conv_method`` (raises for N-d, always FFT for floats),
``cupyx.scipy.signal.correlate2d`` (shifted 'same' for even kernels), ndimage on integer
data (float64 weights: not exact) and ``cupyx.scipy.signal`` in general (importing it
needs cuBLAS, which nothing here uses). ``method="oa"`` runs the plain FFT path.

The array modules are injected: ``CupyBackend()`` loads CuPy lazily, while
``tests/cupy_emulated.py`` builds the same class over NumPy/SciPy stand-ins (checked against
CuPy's real signatures) so every line of this module runs in the CPU test suite.
"""

from __future__ import annotations

import contextlib
import math
import re
import sys
import threading
from typing import Any

import numpy as np

from convkit.bounds import fft_int_is_exact, inexact_int_fft_error, unit_roundoff
from convkit.choose import Capabilities
from convkit.errors import BackendUnavailableError, ConvkitTypeError
from convkit.plan import Plan

from ._base import (
    ArrayBackend,
    NonFiniteInput,
    cannot_overflow,
    separable_factors,
    separable_gain,
    separable_pays,
    taps_above_eps,
)

__all__ = ["CupyBackend", "backend", "INSTALL_HINT"]

INSTALL_HINT = (
    'Install CuPy with its CUDA libraries for your driver\'s CUDA major version: pip install '
    '"pyconvkit[cuda12]" (CUDA 12.x) or pip install "pyconvkit[cuda13]" (CUDA 13.x); these bring CuPy 14 '
    'with NVRTC and cuFFT from the package index (cupy-cudaXXx[ctk]) and need only an NVIDIA GPU and '
    'driver. With a system CUDA 12 Toolkit: pip install "pyconvkit[cuda12-systemctk]"'
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


_LIB_FILE = re.compile(r"((?:lib)?(?:nvrtc|cufft|cudart|cublas|curand|cusolver|cusparse)"
                       r"[\w.-]*\.(?:so(?:\.[\d.]+)?|dll))", re.I)


def missing_library(exc: BaseException) -> str:
    """The shared-library file named in a loader error (``libnvrtc.so.12``), else ``""``."""
    m = _LIB_FILE.search(str(exc))
    return m.group(1) if m else ""


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
            lib = missing_library(exc)
            detail = f"{lib} could not be loaded" if lib else "a CUDA library may be missing"
            return False, f"a CUDA device was found but {what} failed; {detail} ({_short(exc)})"
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


# ----------------------------------------------------------------------------- cupyx.scipy.ndimage, 13 and 14


def _cval(value) -> float:
    """A float fill value cupyx's kernel generator turns into valid CUDA source: it tests
    ``cval is numpy.nan`` by identity (any other NaN would print as ``nan``, an undefined
    identifier), compares with ``numpy.inf`` by equality (+-inf are safe as floats) and prints
    anything else with ``str`` (a Python float prints exactly)."""
    value = float(value)
    return np.nan if value != value else value


class _Ndimage:
    """``cupyx.scipy.ndimage`` as the shared code calls it, on CuPy 13 and 14.

    ``correlate(..., axes=...)`` (CuPy 14 only) becomes a call without ``axes``: the weights get
    size-1 axes (origin 0) on the other axes of the input, which is the same filter."""

    def __init__(self, ndimage: Any, xp: Any):
        self._nd, self._xp = ndimage, xp

    def correlate(self, input, weights, output=None, mode="reflect", cval=0.0, origin=0, axes=None):
        if axes is not None:
            axes = [int(a) % input.ndim for a in np.atleast_1d(axes)]
            origins = np.broadcast_to(np.asarray(origin, dtype=np.int64), (len(axes),))
            shape, full = [1] * input.ndim, [0] * input.ndim
            for a, m, o in zip(axes, weights.shape, origins):
                shape[a], full[a] = m, int(o)
            weights, origin = self._xp.reshape(weights, tuple(shape)), full
        kw = {} if output is None else {"output": output}
        return self._nd.correlate(input, weights, mode=mode, cval=_cval(cval), origin=origin, **kw)

    def correlate1d(self, input, weights, axis=-1, output=None, mode="reflect", cval=0.0, origin=0):
        kw = {} if output is None else {"output": output}
        return self._nd.correlate1d(input, weights, axis=axis, mode=mode, cval=_cval(cval), origin=origin,
                                    **kw)


#: kernels up to this many taps are copied to the host with auto's FFT flags (one transfer)
_KERNEL_WITH_FLAGS = 1 << 16


def _int_stats(top: float, total: float, squares: float, n: int) -> tuple[float, float, float]:
    """:func:`convkit.bounds.int_fft_stats` from the three reductions read back at once."""
    u = unit_roundoff(np.float64)
    grow = 1.0 / (1.0 - (n + 4) * u) if (n + 4) * u < 0.5 else math.inf
    return top * (1 + 2 * u), math.sqrt(squares * grow) * (1 + 2 * u), total * grow


# ----------------------------------------------------------------------------- the backend


#: ``convkit tune --backend cupy`` on an NVIDIA H200 (CuPy 14.2, CUDA 13, a virtual machine where one
#: device-to-host read takes about 0.1 ms; docs/gpu.md, "Measured on an H200"). The data-sheet
#: figures priced a call's fixed cost at 56 us and sent 15x15 kernels on 500x500, 7x7 on 2048x2048
#: and 7x7x7 volumes to the FFT, 1.4-5x slower there than direct. Left out: the 1-D direct constant
#: (the tuner's 1-D call is mostly fixed cost: the N-d constant prices 1-D calls as measured).
H200_MEASURED = dict(c_direct=1.96e-12, c_fft=7.21e-13, c_mem=7.14e-13, c_sep=7.15e-12, fft_call=6.03e-4,
                     single_direct=0.966, single_fft=0.872, single_sep=0.914)


class CupyBackend(ArrayBackend):
    """Runs convkit on CuPy arrays.

    ``xp``, ``fft``, ``scipy_fft`` and ``ndimage`` are the array modules (``cupy``,
    ``cupy.fft``, ``cupyx.scipy.fft``, ``cupyx.scipy.ndimage``). Left out, CuPy is
    imported and the device probed on first use; the answer is cached.
    """

    install_hint = INSTALL_HINT
    array_module = "cupy"
    device = True
    capabilities = Capabilities.from_gpu_figures(
        # published H100-class figures (convkit.choose.GPU_REFERENCE; the derivation: docs/gpu.md,
        # "Cost model"), with the constants `convkit tune --backend cupy` measured on an H200 in
        # their place (H200_MEASURED); 'oa' runs the plain FFT path
        methods=("direct", "fft"), direct_int_ops=16.0, **H200_MEASURED,
    )

    def __init__(self, xp: Any = None, fft: Any = None, scipy_fft: Any = None, ndimage: Any = None, *,
                 name: str = "cupy") -> None:
        self.name = name
        self._given_modules = xp is not None  # stand-in modules (the CPU emulation): no runners
        self._lock = threading.Lock()
        self._call = threading.local()  # per call: the kernel's host copy, flags read at once
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
        """Wait for ``x``'s own device (not the current one: multi-GPU timing)."""
        dev = getattr(x, "device", None)
        if hasattr(dev, "synchronize"):
            dev.synchronize()
            return
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
        call = self._call
        call.kernel, call.finite, call.dc = None, None, None
        try:
            with self._device_of(in1, in2):
                return super().execute(plan, self.asarray(in1), self.asarray(in2))
        finally:
            call.kernel, call.finite, call.dc = None, None, None

    # -- host-device syncs: one read of the small kernel, flags read together
    def _kernel_host(self, w) -> np.ndarray:
        """The host copy of the canonical kernel ``w``: one transfer per call, shared by every
        decision about it (ndimage guard, separability, finiteness)."""
        got = getattr(self._call, "kernel", None)
        if got is None or got[0] is not w:
            got = (w, self.to_host(w))
            self._call.kernel = got
        return got[1]

    def _all_true(self, flags: list) -> bool:
        """Whether every 0-d device bool in ``flags`` is True, read in one transfer."""
        xp = self.xp
        return bool(self.to_host(xp.stack(flags)).all())

    def all_finite(self, a) -> bool:
        if getattr(self._call, "finite", None) is a:  # checked with other flags already
            return True
        return super().all_finite(a)

    def taps_ok(self, w) -> bool:
        """:meth:`ArrayBackend.taps_ok` on the call's one host copy of the kernel (no device read
        of its own)."""
        return taps_above_eps(self._kernel_host(w))

    def try_separable(self, plan: Plan, x, w):
        """:meth:`ArrayBackend.try_separable` with one device read: the kernel and ``max |x|``
        come back in one transfer. ``max |x|`` is not finite exactly when the data are not (S9:
        the plan's method then puts NaN/Inf where it should), and bounds every pass's result
        (``max |x| * prod max(1, sum |f_a|)``, :func:`cannot_overflow`): well below the float
        range no pass can overflow, so the result needs no finiteness read. Only data near the
        float range read the result's flag as well (``execute`` recomputes an overflow by
        direct)."""
        if not separable_pays(plan, self.capabilities):
            return None
        xp = self.xp
        both = self.to_host(xp.concatenate([xp.reshape(w, (-1,)), xp.reshape(xp.max(xp.abs(x)), (1,))]))
        wh, peak = both[:-1].reshape(w.shape), float(both[-1])
        self._call.kernel = (w, wh)
        if not (np.all(np.isfinite(wh)) and math.isfinite(peak)):
            return None  # NaN/Inf: the plan's method puts them where S9 says
        factors = separable_factors(wh, plan.axes, plan.acc_dtype)
        if factors is None:
            return None
        out = self.separable_passes(plan, x, factors, self.separable_ndimage())
        return out, cannot_overflow(plan.acc_dtype, peak, separable_gain(factors))

    def run_method(self, plan: Plan, x, w):
        """``auto``'s NaN-safe FFT reads both spectra's DC bins and the output's finiteness in one
        transfer (:meth:`check_dc` only collects the flags here); not all finite: direct (S9)."""
        if not (plan.nan_safe and plan.method == "fft" and plan.acc_dtype.kind in "fc"):
            return super().run_method(plan, x, w)
        xp = self.xp
        self._call.dc = []
        try:
            out = self.transform(plan, x, w, "fft", check_finite=True)
            flags = self._call.dc + [xp.all(xp.isfinite(out))]
        finally:
            self._call.dc = None
        if (plan.acc_dtype.kind == "f" and w.size <= _KERNEL_WITH_FLAGS
                and getattr(self._call, "kernel", None) is None):
            # a small kernel travels with the flags: direct (NaN data) needs no read of its own
            f64 = np.dtype(np.float64)
            host = self.to_host(xp.concatenate([self.astype(xp.ravel(w), f64),
                                                self.astype(xp.stack(flags), f64)]))
            self._call.kernel = (w, np.reshape(host[:w.size], w.shape).astype(w.dtype))
            ok = bool(np.all(host[w.size:] == 1.0))
        else:
            ok = self._all_true(flags)
        if ok:
            self._call.finite = out
            return out
        return self.direct(plan, x, w)

    def check_dc(self, spec, axes) -> None:
        xp = self.xp
        dc = spec[tuple(0 if a in axes else slice(None) for a in range(spec.ndim))]
        flag = xp.all(xp.isfinite(dc))
        pending = getattr(self._call, "dc", None)
        if pending is not None:
            pending.append(flag)  # read with the others by run_method
        elif not self._all_true([flag]):
            raise NonFiniteInput

    def check_exact_int_fft(self, plan: Plan, xpad, wf, sizes) -> None:
        """The shared integer-FFT rule with its six statistics (max, sum and sum of squares of
        ``|xpad|`` and ``|wf|``) read back in one transfer."""
        xp = self.xp
        f, g = xp.abs(xpad), xp.abs(wf)
        red = self.to_host(xp.stack([xp.max(f), xp.sum(f), xp.sum(f * f), xp.max(g), xp.sum(g),
                                     xp.sum(g * g)]))
        mx, nx, sx = _int_stats(*(float(v) for v in red[:3]), math.prod(xpad.shape))
        mk, nk, sk = _int_stats(*(float(v) for v in red[3:]), math.prod(wf.shape))
        if not fft_int_is_exact(mx, mk, nx, nk, sum_x=sx, sum_k=sk, taps=plan.taps, sizes=sizes):
            raise inexact_int_fft_error(plan.requested_method)

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
        return _Ndimage(self._module("ndimage"), self.xp)

    # -- direct: one fused ndimage kernel for floats where equivalent, else shift-and-add
    def direct(self, plan: Plan, x, w):
        if self.ndimage_ok(plan, w):
            return self.ndimage_direct(plan, x, w, _Ndimage(self._module("ndimage"), self.xp))
        # integers, bool, complex, zero/tiny/non-finite taps: ONE fused kernel over all taps
        # (exact wrap-around), not one or two launches per tap
        from .cupy_kernels import direct_kernel_python, params_of, run_direct_kernel

        if self._given_modules:  # CPU emulation: the same kernel template rendered as NumPy
            fill = plan.fillvalue if plan.boundary == "constant" else 0
            run = direct_kernel_python(*params_of(plan))
            return self.xp.asarray(run(self.to_host(x), self.to_host(w), fill))
        return run_direct_kernel(self.xp, plan, x, w)


backend = CupyBackend()


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


