"""NumPy/SciPy backend: the reference backend, always available.

Uses the shared array code of :mod:`convkit.backends._base` and swaps in SciPy's compiled
kernels where they compute the same thing:

* 1-D direct: ``numpy.convolve`` (any dtype; integer arithmetic wraps exactly like S5 asks);
* N-d direct on float32/float64: ``scipy.ndimage.correlate`` (accumulates in float64). It
  drops weights with ``|w| <= DBL_EPSILON`` (and so would not propagate a NaN through a
  zero tap), so it is used only when every tap is finite and larger than that;
* FFT: ``scipy.fft`` (real transforms, fast lengths, all cores); overlap-add:
  ``scipy.signal.oaconvolve``.
"""

from __future__ import annotations

import numpy as np

from convkit.choose import Capabilities
from convkit.plan import Plan

from ._base import ArrayBackend

__all__ = ["NumpyBackend", "backend"]

_ND_MODES = {"constant": "constant", "symmetric": "reflect", "reflect": "mirror",
             "edge": "nearest", "wrap": "wrap"}
_DBL_EPS = float(np.finfo(np.float64).eps)


class NumpyBackend(ArrayBackend):
    """Runs convkit on NumPy arrays with NumPy and SciPy."""

    name = "numpy"
    install_hint = "numpy and scipy are core dependencies of convkit"
    xp = np
    capabilities = Capabilities(methods=("direct", "fft", "oa"), c_direct=1.0e-9, c_fft=1.5e-9)

    def owns(self, x) -> bool:
        return isinstance(x, np.ndarray)

    def asarray(self, x):
        return np.asarray(x)

    def to_host(self, x) -> np.ndarray:
        return np.asarray(x)

    # -- FFT primitives from scipy.fft: float32 stays float32, all cores
    def rfftn(self, a, s, axes):
        import scipy.fft

        return scipy.fft.rfftn(a, s=s, axes=axes, workers=-1)

    def irfftn(self, a, s, axes):
        import scipy.fft

        return scipy.fft.irfftn(a, s=s, axes=axes, workers=-1)

    def fftn(self, a, s, axes):
        import scipy.fft

        return scipy.fft.fftn(a, s=s, axes=axes, workers=-1)

    def ifftn(self, a, s, axes):
        import scipy.fft

        return scipy.fft.ifftn(a, s=s, axes=axes, workers=-1)

    def next_fast_len(self, n: int, real: bool) -> int:
        import scipy.fft

        return scipy.fft.next_fast_len(n, real=real)

    def linear_conv(self, x, wf, sizes, axes, real, method):
        if method == "oa":
            import scipy.signal

            return scipy.signal.oaconvolve(x, wf, mode="full", axes=axes)
        return super().linear_conv(x, wf, sizes, axes, real, method)

    # -- direct: library kernels where they are equivalent
    def direct(self, plan: Plan, x, w):
        if plan.ndim == 1 and plan.stride == (1,):
            return self._direct_1d(plan, x, w)
        if self._ndimage_ok(plan, w):
            return self._direct_ndimage(plan, x, w)
        return super().direct(plan, x, w)

    def _direct_1d(self, plan: Plan, x, w):
        wd = self.dilate(plan, w)[::-1]
        (lo, hi), me, n_out = plan.pads[0], wd.shape[0], plan.out_shape[0]
        if plan.boundary == "constant" and plan.fillvalue == 0 and 0 <= lo < me and 0 <= hi < me:
            start = me - 1 - lo
            return np.convolve(x, wd, "full")[start:start + n_out]
        return np.convolve(self.pad(plan, x), wd, "valid")

    def _ndimage_ok(self, plan: Plan, w) -> bool:
        if plan.acc_dtype not in (np.float32, np.float64):
            return False
        if any(plan.k_shape[a] != 1 for a in range(plan.ndim) if a not in plan.axes):
            return False
        aw = np.abs(w)
        return bool(np.all(aw > _DBL_EPS) and np.all(np.isfinite(aw)))

    def _direct_ndimage(self, plan: Plan, x, w):
        import scipy.ndimage

        axes = tuple(sorted(plan.axes))
        order = [plan.axes.index(a) for a in axes]
        wd = self.dilate(plan, w)
        weights = np.reshape(wd, [wd.shape[a] for a in axes])
        me = weights.shape
        pads = [plan.pads[i] for i in order]
        strides = [plan.stride[i] for i in order]
        same_size = all(lo + hi == m - 1 and 0 <= lo <= m - 1 for (lo, hi), m in zip(pads, me))
        if same_size and (plan.boundary == "constant" or all(m <= x.shape[a] for a, m in zip(axes, me))):
            origin = [lo - m // 2 for (lo, _), m in zip(pads, me)]
            cval = plan.fillvalue if plan.boundary == "constant" else 0.0
            out = scipy.ndimage.correlate(x, weights, mode=_ND_MODES[plan.boundary], cval=cval,
                                          origin=origin, axes=axes)
            index = [slice(None)] * x.ndim
        else:
            xpad = self.pad(plan, x)
            origin = [-(m // 2) for m in me]
            out = scipy.ndimage.correlate(xpad, weights, mode="constant", origin=origin, axes=axes)
            index = [slice(None)] * x.ndim
            for a, m in zip(axes, me):
                index[a] = slice(0, xpad.shape[a] - m + 1)
        for a, s in zip(axes, strides):
            index[a] = slice(index[a].start, index[a].stop, s)
        return out[tuple(index)]


backend = NumpyBackend()
