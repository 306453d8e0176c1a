"""The backend contract, and the array-API code every backend shares.

A backend receives a :class:`convkit.plan.Plan` with concrete pads, dtypes and method and
computes the canonical form of SPEC S1::

    out = VALIDCORR(pad(x, pads, boundary, fillvalue), dilate(w, dilation))[::stride]

:class:`ArrayBackend` implements that once against an array namespace ``xp`` (NumPy,
CuPy, ...): padding, a direct shift-and-add correlation that is exact for integers, and an
FFT path. Backend modules override only what differs (library kernels, availability).

Numerics every path shares (``execute``):

* S13: the arithmetic runs under ``numpy.errstate(all="ignore")``: overflow, ``Inf * 0`` and
  ``Inf - Inf`` on valid input are intended (S9) and never print a ``RuntimeWarning``;
* S8/S9: what ``method="auto"`` picks is never less finite than ``"direct"``: NaN/Inf inputs
  go to ``direct``, and a transform or separable result that is not finite although the data
  are (an overflow inside the FFT or a 1-D pass) is recomputed by ``direct``;
* bounded memory: where the padded input or the dilated kernel would be much larger than the
  inputs and the output (:meth:`ArrayBackend.gather_pays`; absurd pads or dilations), every
  method, explicit ``"fft"``/``"oa"`` included, runs :meth:`ArrayBackend.gather_direct`: the
  canonical form gathered tap by tap, memory O(input + output).
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import threading
from functools import lru_cache
from typing import Any

import numpy as np

from convkit.bounds import gamma, require_exact_int_fft, unit_roundoff
from convkit.choose import Capabilities, method_costs, separable_cost
from convkit.errors import ConvkitValueError
from convkit.plan import Plan

__all__ = ["Backend", "ArrayBackend", "NonFiniteInput", "boundary_source", "tap_sources"]


#: convkit boundary (numpy.pad mode) -> scipy.ndimage / cupyx.scipy.ndimage mode
ND_MODES = {"constant": "constant", "symmetric": "reflect", "reflect": "mirror", "edge": "nearest",
            "wrap": "wrap"}


#: :meth:`ArrayBackend.ndimage_pays`: ``cupyx.scipy.ndimage`` takes a dilated kernel only
#: while it has at most this many positions per tap (its kernel visits every position of the
#: footprint for every output; the fused kernel visits the taps only)
NDIMAGE_SPARSE = 4

#: :meth:`ArrayBackend.gather_pays`: the bounded-memory path runs when the padded input or the
#: dilated kernel would hold more than ``GATHER_RATIO * (input + kernel + output) + GATHER_SLACK``
#: elements
GATHER_RATIO = 4
GATHER_SLACK = 1 << 16

#: positions are computed in int64 below this magnitude, else exactly with Python ints
_INT64_SAFE = 1 << 62


def boundary_source(pos, n: int, boundary: str) -> np.ndarray:
    """Index into an axis of length ``n`` of each padded position ``pos`` (int64; position 0
    is the input's first element, negative positions lie in the low pad) under the
    ``numpy.pad`` mode ``boundary`` (S7); ``n`` marks a fill value (``"constant"``).

    Pads longer than the input repeat the rule exactly as ``numpy.pad`` does: ``wrap`` has
    period ``n``, ``symmetric`` (``b a | a b c d | d c``) period ``2n``, ``reflect``
    (``c b | a b c d | c b``) period ``2n - 2`` (``n = 1``: the one value).
    """
    pos = np.asarray(pos, dtype=np.int64)
    if boundary == "constant":
        return np.where((pos >= 0) & (pos < n), pos, n)
    if boundary == "edge":
        return np.clip(pos, 0, n - 1)
    if boundary == "wrap":
        return pos % n
    if boundary == "symmetric":
        j = pos % (2 * n)
        return np.where(j < n, j, 2 * n - 1 - j)
    if boundary == "reflect":
        if n == 1:
            return np.zeros_like(pos)
        j = pos % (2 * n - 2)
        return np.where(j < n, j, 2 * n - 2 - j)
    raise ConvkitValueError(f"boundary={boundary!r} is not a numpy.pad mode")  # pragma: no cover


def tap_sources(count: int, stride: int, offset: int, n: int, boundary: str) -> np.ndarray:
    """:func:`boundary_source` of the positions ``i * stride + offset`` for ``i < count``, exact
    for any Python ints (pads and dilations beyond int64 included): periodic rules reduce
    ``stride`` and ``offset`` modulo the period, ``constant``/``edge`` only need to know
    whether a position is below, inside or above ``[0, n)``."""
    period = {"wrap": n, "symmetric": 2 * n, "reflect": max(2 * n - 2, 1)}.get(boundary)
    if period is not None:
        stride, offset = stride % period, offset % period
    else:
        span = (count - 1) * stride
        if offset >= n or offset + span < 0:  # every position above (below) the input
            pos = n if offset >= n else -1
            return boundary_source(np.full(count, pos, dtype=np.int64), n, boundary)
    if (count - 1) * stride + abs(offset) + n < _INT64_SAFE:
        pos = np.arange(count, dtype=np.int64) * stride + offset
    elif period is not None:  # pragma: no cover - needs count * period beyond 2**62
        pos = np.array([(i * stride + offset) % period for i in range(count)], dtype=np.int64)
    else:
        pos = np.array([min(max(i * stride + offset, -1), n) for i in range(count)], dtype=np.int64)
    return boundary_source(pos, n, boundary)


class NonFiniteInput(Exception):
    """Raised inside an FFT path when an input holds NaN/Inf and direct must run instead (S9)."""


class Backend:
    """What every backend provides. Subclass it (or duck-type it) to add a backend."""

    #: registry name, e.g. ``"numpy"``
    name: str = "base"
    #: top-level module of the arrays this backend owns (``"jax"``, ``"cupy"``, ``"torch"``);
    #: :meth:`owns` is only asked once that module is imported. ``None``: always asked.
    array_module: str | None = None
    #: printed in errors when the backend cannot run
    install_hint: str = ""
    #: methods and cost constants used by ``method="auto"``
    capabilities: Capabilities = Capabilities()
    #: True when results live on an accelerator and host inputs must be copied
    device: bool = False

    def available(self) -> tuple[bool, str]:
        """``(True, "")`` or ``(False, why)``. Must never raise."""
        return True, ""

    def owns(self, x: Any) -> bool:
        """Whether ``x`` is this backend's array type (a cheap check, never an import)."""
        return False

    def asarray(self, x: Any):
        """Convert host data (or this backend's arrays) to this backend's array type."""
        raise NotImplementedError

    def dtype_of(self, x: Any) -> np.dtype:
        """The NumPy dtype that stands for the dtype of this backend's array ``x`` (the plan
        computes with NumPy dtypes); raise :class:`convkit.ConvkitTypeError` if there is none."""
        return np.dtype(x.dtype)

    def test_runners(self) -> list:
        """Ways of running the conformance suite on this backend (:class:`convkit.testing.Runner`)."""
        return []

    def to_host(self, x: Any) -> np.ndarray:
        """Return ``x`` as a NumPy array."""
        return np.asarray(x)

    def sync(self, x: Any) -> None:
        """Block until ``x`` is computed (for timing)."""

    def execute(self, plan: Plan, in1: Any, in2: Any):
        """Compute ``plan`` on this backend's arrays and return this backend's array."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<convkit backend {self.name!r}>"


def separable_pays(plan: Plan, caps: Capabilities) -> bool:
    """Whether checking the kernel for separability can beat the method the plan chose
    (shapes only: ``auto`` on real floats, 2+ convolution axes, no kernel batch axes, no
    non-zero fill value, and :func:`convkit.choose.separable_cost` below the plan's method).
    The cheap tests run first: every call of the NumPy and CuPy backends asks."""
    if plan.scalar or len(plan.axes) < 2 or plan.requested_method != "auto" or plan.acc_dtype.kind != "f":
        return False
    return _separable_beats_plan(plan, caps)


@lru_cache(maxsize=512)
def _separable_beats_plan(plan: Plan, caps: Capabilities) -> bool:
    if plan.boundary == "constant" and plan.fillvalue != 0:
        return False
    if any(plan.k_shape[a] != 1 for a in range(plan.ndim) if a not in plan.axes):
        return False
    sep = separable_cost(out_shape=plan.out_shape, x_shape=plan.x_shape, k_shape=plan.k_shape,
                         axes=plan.axes, caps=caps, dtype=plan.acc_dtype)
    if not math.isfinite(sep):
        return False
    costs = method_costs(out_shape=plan.out_shape, x_shape=plan.x_shape, k_shape=plan.k_shape,
                         axes=plan.axes, pads=plan.pads, dilation=plan.dilation, caps=caps,
                         dtype=plan.acc_dtype, stride=plan.stride)
    return sep < costs.get(plan.method, math.inf)


def switched_off(env: str) -> bool:
    """Whether the environment variable ``env`` keeps an optional host engine out (``0``,
    ``false``, ``no`` or ``off``; unset: on)."""
    return os.environ.get(env, "1").strip().lower() in ("0", "false", "no", "off")


_EPS = float(np.finfo(np.float64).eps)


def taps_above_eps(w: np.ndarray) -> bool:
    """Every tap finite and larger than DBL_EPSILON in magnitude: the kernels that
    ``scipy.ndimage``, ``cupyx.scipy.ndimage`` and OpenCV's ``filter2D`` run with every product
    formed (they drop zero or tiny weights, which would not carry a NaN through a zero tap, S9).
    A NaN tap fails the first test, an infinite one the second."""
    if w.size <= 64:  # the usual small kernel: Python floats are faster than three ufunc calls
        mags = list(map(abs, w.ravel().tolist()))
        # a finite sum of magnitudes rules out NaN and Inf (a sum that overflows only refuses the engine)
        return math.isfinite(sum(mags)) and min(mags) > _EPS
    aw = np.abs(w)
    return bool(aw.min() > _EPS and aw.max() < math.inf)


def cannot_overflow(acc_dtype, peak: float, gain: float) -> bool:
    """Whether no value of a computation can reach the float range of ``acc_dtype``: ``peak``
    bounds the magnitude of the (padded) data, ``gain`` how much any intermediate value can grow
    from it (separable passes: :func:`separable_gain`; an FFT of P points: ``P * sqrt(P) * sum
    |w|``, with room for its scale factors). A factor 4 covers the rounding."""
    big = _FLOAT_MAX.get(acc_dtype)
    if big is None:
        dt = np.dtype(acc_dtype)
        big = float(np.finfo(dt.type(0).real.dtype if dt.kind == "c" else dt).max)
    return math.isfinite(peak) and 4.0 * peak * gain < 0.5 * big


#: the largest finite value of the common accumulation dtypes (every auto FFT call asks)
_FLOAT_MAX = {np.dtype(t): float(np.finfo(r).max) for t, r in
              ((np.float32, np.float32), (np.float64, np.float64), (np.complex64, np.float32),
               (np.complex128, np.float64))}


def pads_in_reach(plan: Plan, me) -> bool:
    """Whether the FFT needs no padding step: zero fill, and every pad within the reach of the
    (dilated) kernel extents ``me`` (the result is then a slice of the full linear convolution)."""
    return plan.boundary == "constant" and plan.fillvalue == 0 and all(
        0 <= lo <= m - 1 and 0 <= hi <= m - 1 for (lo, hi), m in zip(plan.pads, me))


def separable_gain(factors) -> float:
    """How much the separable passes can grow the data's magnitude: ``prod max(1, sum |f_a|)``
    (every intermediate pass included)."""
    return math.prod(max(1.0, float(np.sum(np.abs(f)))) for f in factors)


def separable_room(sizes, acc_dtype, check_dtype) -> float:
    """:func:`_separable_room`, cached (every 2-D ``auto`` call of the NumPy backend asks)."""
    return _separable_room(tuple(sizes), np.dtype(acc_dtype), np.dtype(check_dtype))


@lru_cache(maxsize=256)
def _separable_room(sizes, acc_dtype, check_dtype) -> float:
    """Relative tolerance ``delta`` of the rank-1 test ``|w - outer(f)| <= delta * |w|``.

    The separable passes err by at most ``gamma_(sum M_a + n)``, the S5 direct bound allows
    ``gamma_K`` (``K = prod M_a``); ``delta`` is half the room between the two, less the
    rounding of the test itself in ``check_dtype``. Not positive: never separable."""
    n = len(sizes)
    u = unit_roundoff(acc_dtype)
    room = gamma(math.prod(sizes), u) - gamma(sum(sizes) + n, u) - (n + 2) * unit_roundoff(check_dtype)
    return 0.5 * room


def separable_factors(w: np.ndarray, axes: tuple[int, ...], acc_dtype) -> list[np.ndarray] | None:
    """1-D float64 factors ``f_a`` (one per axis in ``axes``) with ``w == outer(f_a...)``, or None.

    ``w`` must be of size 1 on the axes not in ``axes``; a complex kernel, or one with a NaN or
    an Inf, is never separable (None). The kernel counts as
    separable when ``|w - outer(f)| <= delta * |w|`` elementwise (so zero taps must be exact
    zeros of the outer product), with ``delta`` the room the S5 direct bound leaves: the
    separable passes have error at most ``gamma_(sum M_a + n)`` while the direct bound is
    ``gamma_K`` (``K = prod M_a``); ``delta`` is half the difference, less the rounding of the
    check itself. The result of the separable path is then within the direct bound of S5.
    """
    if w.dtype.kind != "f":
        return None
    sizes = [w.shape[a] for a in axes]
    n_big = sum(s > 1 for s in sizes)
    if n_big < 2:
        return None
    delta = separable_room(sizes, acc_dtype, np.float64)
    if not delta > 0:
        return None
    wr = w.reshape(sizes)
    at = int(np.abs(wr.reshape(-1)).argmax())  # NaN counts as the largest (then not rank 1)
    # Python floats are IEEE doubles: the same operations as NumPy's float64 scalars, at half the cost
    peak = divmod(at, wr.shape[1]) if wr.ndim == 2 else tuple(int(p) for p in np.unravel_index(at, wr.shape))
    pv = float(wr[peak])
    if not (pv != 0.0 and math.isfinite(pv)):
        return None  # rank_one's ok needs a finite, non-zero largest tap
    if wr.ndim == 2:
        scale = pv
    else:
        with np.errstate(over="ignore", under="ignore"):
            scale = float(np.float64(pv) ** (wr.ndim - 1))  # NumPy's power: inf, not an OverflowError
    if _fails_off_the_peak(wr, delta, peak, scale):
        return None
    return _rank_one_host(wr, delta, peak, scale)


def _rank_one_host(wr: np.ndarray, delta: float, peak: tuple, scale: float) -> list[np.ndarray] | None:
    """:func:`rank_one` on the host for a kernel whose largest tap ``wr[peak]`` is finite and
    not zero (``scale`` its power ``n - 1``): the same float64 operations, so the same factors
    and the same decision, with fewer NumPy calls (no index arrays, no NumPy scalars: 5.3 us
    of a 15x15 kernel's test instead of 8.7). Every tap is finite where it passes: none is
    larger than the peak."""
    w64 = wr.astype(np.float64)
    factors = [w64[peak[:i] + (slice(None),) + peak[i + 1:]] for i in range(wr.ndim)]  # views
    factors[0] = factors[0] / scale
    if wr.ndim == 2 and abs(scale) < _NO_OVERFLOW:
        # |f0| <= 1 and |f1| <= |peak|: nothing below can overflow, no warnings to silence
        return factors if _fits_outer(w64, factors[0][:, None] * factors[1], delta) else None
    recon = factors[0]
    for f in factors[1:]:
        recon = np.multiply.outer(recon, f)
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow: inf or NaN, which fail the test
        return factors if _fits_outer(w64, recon, delta) else None


#: a largest tap below this: a 2-D kernel's rank-1 test cannot overflow (``|w - recon| <= 2|peak|``)
_NO_OVERFLOW = 2.0**1000


def _fits_outer(w64: np.ndarray, recon: np.ndarray, delta: float) -> bool:
    """``all(|w64 - recon| <= delta * |w64|)``, overwriting ``recon`` (a fresh array)."""
    np.subtract(w64, recon, out=recon)
    np.abs(recon, out=recon)
    bound = np.abs(w64)
    bound *= delta
    return bool((recon <= bound).all())


def _fails_off_the_peak(wr: np.ndarray, delta: float, peak: tuple, scale: float) -> bool:
    """Whether :func:`rank_one`'s test fails at one tap that shares no row with the largest tap
    ``wr[peak]`` (``scale``: its power ``n - 1``), with the full test's float64 operations at
    that tap (the kernel's own dtype converts to float64 exactly, and picks the same largest
    tap): most kernels are not rank 1, and one tap rejects them without the full test's passes
    over a float64 copy (75-85 us of a 1 ms FFT call with a 63x63 kernel). True: the full test
    fails too; False decides nothing."""
    tap = tuple(p if m == 1 else int(p == 0) for p, m in zip(peak, wr.shape))
    if scale == 0.0:
        return True  # a zero (or underflowing) peak: the full test divides by it and fails
    recon = float(wr[(tap[0],) + peak[1:]]) / scale
    for i in range(1, wr.ndim):
        recon = recon * float(wr[peak[:i] + (tap[i],) + peak[i + 1:]])
    value = float(wr[tap])
    return not abs(value - recon) <= delta * abs(value)


def rank_one(xp, wk, delta: float):
    """``(factors, ok)`` for the kernel ``wk`` (one axis per convolution axis), in any array
    library ``xp`` (NumPy here, ``jax.numpy`` traced inside a jitted function).

    The factors are the rows of ``wk`` through its largest tap, the first scaled by that tap
    to the power ``1 - n``; ``ok`` (a boolean array) is True when ``|wk - outer(factors)| <=
    delta * |wk|`` on every tap and the largest tap is finite and not zero. A NaN anywhere
    makes ``ok`` False."""
    n = wk.ndim
    peak = xp.unravel_index(xp.argmax(xp.abs(wk)), wk.shape)
    pv = wk[peak]
    factors = []
    for i in range(n):
        index = list(peak)
        index[i] = slice(None)
        factors.append(wk[tuple(index)])
    factors[0] = factors[0] / pv ** (n - 1)
    recon = factors[0]
    for f in factors[1:]:
        recon = xp.multiply.outer(recon, f)
    ok = xp.all(xp.abs(wk - recon) <= delta * xp.abs(wk)) & (pv != 0) & xp.isfinite(pv)
    return factors, ok


#: the alignment of :func:`aligned_empty`: XLA:CPU adopts a host buffer without a copy only
#: from this alignment (``jax.device_put(..., may_alias=True)``, ``jax.dlpack.from_dlpack``),
#: and it is a cache line
ALIGNMENT = 64

class _Aligning(threading.local):
    """Per thread: whether :func:`aligned_outputs` is on (a class default, so that reading it
    where it was never set costs no failed attribute lookup: every engine call reads it)."""

    on = False


_aligning = _Aligning()


@contextlib.contextmanager
def aligned_outputs():
    """Within it, on this thread, the host engines write their outputs into
    :func:`aligned_empty` arrays (the JAX backend's CPU handoff,
    :mod:`convkit.backends.jax.host`, adopts those without a copy). Outside it they allocate as
    NumPy does: finding an aligned start costs about 3 us a call."""
    before = _aligning.on
    _aligning.on = True
    try:
        yield
    finally:
        _aligning.on = before


def output_array(shape: tuple[int, ...], dtype) -> np.ndarray | None:
    """An :func:`aligned_empty` array within :func:`aligned_outputs`, else ``None`` (the engine
    allocates its own output)."""
    return aligned_empty(shape, dtype) if _aligning.on else None


def aligned_empty(shape: tuple[int, ...], dtype) -> np.ndarray:
    """``numpy.empty(shape, dtype)`` whose data start on an :data:`ALIGNMENT`-byte boundary
    (NumPy's large arrays start 16 bytes into a page)."""
    dtype = np.dtype(dtype)
    count = math.prod(shape)
    raw = np.empty(count + ALIGNMENT // dtype.itemsize, dtype=dtype)
    start = (-raw.ctypes.data % ALIGNMENT) // dtype.itemsize  # NumPy's start is itemsize-aligned
    return raw[start:start + count].reshape(shape)


def even_spans(n: int, count: int, start: int = 0) -> list[tuple[int, int]]:
    """``[start, start + n)`` cut into ``count`` spans ``(a, b)`` whose lengths differ by at
    most one, the empty ones left out: the jobs of the engines' threads (rows, images, pieces)."""
    cuts = [start + n * c // count for c in range(count + 1)]
    return [(a, b) for a, b in zip(cuts[:-1], cuts[1:]) if b > a]


def cpu_threads() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not on Linux
        return max(1, os.cpu_count() or 1)


@lru_cache(maxsize=1024)
def _gather_pays(plan: Plan) -> bool:
    """:meth:`ArrayBackend.gather_pays` for 2 or more dimensions (cached: every call asks)."""
    xs, ks = math.prod(plan.x_shape), math.prod(plan.k_shape)
    padded, dilated = xs, ks
    for i, a in enumerate(plan.axes):
        lo, hi = plan.pads[i]
        n, m = plan.x_shape[a], plan.k_shape[a]
        padded = padded // n * (n + max(lo, 0) + max(hi, 0))
        dilated = dilated // m * ((m - 1) * plan.dilation[i] + 1)
    return max(padded, dilated) > GATHER_RATIO * (xs + ks + math.prod(plan.out_shape)) + GATHER_SLACK


class ArrayBackend(Backend):
    """Shared implementation over an array namespace ``self.xp``.

    Subclasses set ``xp`` and the FFT helpers (``rfftn``, ``irfftn``, ``fftn``, ``ifftn``,
    ``next_fast_len``), and may override :meth:`direct`, :meth:`fft` or :meth:`oa`.
    """

    xp: Any = None

    # -- FFT primitives (override with the backend's fastest implementation)
    def rfftn(self, a, s, axes):
        return self.xp.fft.rfftn(a, s=s, axes=axes)

    def irfftn(self, a, s, axes):
        return self.xp.fft.irfftn(a, s=s, axes=axes)

    def fftn(self, a, s, axes):
        return self.xp.fft.fftn(a, s=s, axes=axes)

    def ifftn(self, a, s, axes):
        return self.xp.fft.ifftn(a, s=s, axes=axes)

    def next_fast_len(self, n: int, real: bool) -> int:
        from convkit.choose import fast_len

        return fast_len(n)

    # -- the canonical form
    def execute(self, plan: Plan, in1, in2):
        # S13: overflow, Inf * 0 and Inf - Inf on valid input are intended (S9): no warnings
        with np.errstate(all="ignore"):
            return self._execute(plan, in1, in2)

    def _execute(self, plan: Plan, in1, in2):
        xp = self.xp
        if plan.scalar:
            return self.scalar_product(plan, in1, in2)
        x, w = self.operands(plan, in1, in2)
        if self.gather_pays(plan):
            # absurd pads or dilation: never materialise them, whatever the method
            out = self.gather_direct(plan, x, w)
        else:
            out = self.separable_result(plan, x, w)
            if out is None:
                out = self.run_method(plan, x, w)
        if plan.flip_conj_result:
            out = self.conj(xp.flip(out, axis=plan.axes))
        return self.astype(out, plan.out_dtype)

    def run_method(self, plan: Plan, x, w):
        """The plan's method on the canonical operands, NaN-safe where the plan says so (S9).

        ``auto``'s FFT must give direct's NaN/Inf positions and never be less finite than
        direct. The plain FFT path checks the spectra's DC bins (a NaN or Inf anywhere in an
        input reaches them) at no extra pass; other paths scan the inputs first. A transform
        that is not finite although the data are (it overflowed: e.g. 1e305 data whose
        spectrum exceeds the float range) is recomputed by direct; that check is one pass
        over the output.
        """
        method = plan.method
        spectral = plan.nan_safe and method == "fft" and plan.acc_dtype.kind in "fc"
        if plan.nan_safe and not spectral and not (self.all_finite(x) and self.all_finite(w)):
            method = "direct"
        if method == "direct":
            return self.direct(plan, x, w)
        if method not in ("fft", "oa"):  # pragma: no cover - plan only produces the three
            raise ConvkitValueError(f"method={method!r} is not accepted")
        try:
            out = self.transform(plan, x, w, method, check_finite=spectral)
            if plan.nan_safe and not self.all_finite(out):
                raise NonFiniteInput
        except NonFiniteInput:
            out = self.direct(plan, x, w)
        return out

    def conv_layer(self, plan, x, w, bias):
        """:func:`convkit.conv` (S15): unfolded patches and one batched GEMM per chunk, an FFT
        for large float kernels (:mod:`convkit.backends._conv`, in this backend's ``xp``)."""
        from ._conv import conv_layer

        return conv_layer(self, plan, x, w, bias)

    # -- absurd pads and dilations: the canonical form gathered tap by tap, memory O(in + out)
    def gather_pays(self, plan: Plan) -> bool:
        """Whether the padded input or the dilated kernel would hold more than
        ``GATHER_RATIO * (input + kernel + output) + GATHER_SLACK`` elements; then
        :meth:`gather_direct` runs instead of any method (shapes only)."""
        if plan.ndim == 1:  # the common small call: a few integer operations (cheaper than a hash)
            (n,), (m,), (lo, hi) = plan.x_shape, plan.k_shape, plan.pads[0]
            big = max(n + max(lo, 0) + max(hi, 0), (m - 1) * plan.dilation[0] + 1)
            return big > GATHER_RATIO * (n + m + plan.out_shape[0]) + GATHER_SLACK
        return _gather_pays(plan)

    def gather_direct(self, plan: Plan, x, w):
        """The canonical form without the padded input or the dilated kernel (memory O(input +
        output)): for each kernel tap, the padded position each output reads is
        ``i * stride + tap * dilation - pad_lo`` per axis, mapped to the input through the
        boundary rule (:func:`tap_sources`; a fill value is read from one extra slot appended
        to the input), gathered, multiplied by the tap and accumulated. The products and their
        order are those of :meth:`direct` (exact with wrap-around for integers, logical for bool).
        """
        xp = self.xp
        src = x
        if plan.boundary == "constant":  # index n on a convolution axis holds the fill value
            widths = [(0, 1) if a in plan.axes else (0, 0) for a in range(x.ndim)]
            src = self.pad_constant(x, widths, plan.fillvalue)
        index: list[Any] = []
        for a in range(x.ndim):  # every axis indexed by an array: result axes stay in order
            shape = [1] * x.ndim
            shape[a] = x.shape[a]
            rows = np.arange(x.shape[a]).reshape(shape)
            index.append(None if a in plan.axes else self.index_array(rows, x))
        cache: list[tuple[int, Any] | None] = [None] * len(plan.axes)
        logical = plan.acc_dtype.kind == "b"
        acc = None
        for tap in itertools.product(*(range(w.shape[a]) for a in plan.axes)):
            ws = [slice(None)] * w.ndim
            for i, a in enumerate(plan.axes):
                if cache[i] is None or cache[i][0] != tap[i]:
                    idx = tap_sources(plan.out_shape[a], plan.stride[i],
                                      tap[i] * plan.dilation[i] - plan.pads[i][0], x.shape[a], plan.boundary)
                    shape = [1] * x.ndim
                    shape[a] = idx.size
                    cache[i] = (tap[i], self.index_array(idx.reshape(shape), x))
                index[a] = cache[i][1]
                ws[a] = slice(tap[i], tap[i] + 1)
            acc = self._add_term(acc, src[tuple(index)], w[tuple(ws)], logical)
        return xp.broadcast_to(acc, plan.out_shape)

    # -- separable kernels under auto: one 1-D pass per axis (backends with an ndimage module)
    def separable_ndimage(self):
        """The ``scipy.ndimage``-like module whose ``correlate1d`` runs the separable passes,
        or ``None``: no separable path on this backend."""
        return None

    def separable_result(self, plan: Plan, x, w):
        """The result of :meth:`try_separable`'s passes, computed again by :meth:`direct` where
        a pass overflowed; ``None`` where the passes do not run."""
        separable = self.try_separable(plan, x, w)
        if separable is None:
            return None
        out, finite = separable
        if not (finite or self.all_finite(out)):
            out = self.direct(plan, x, w)  # finite data (checked), a 1-D pass overflowed (S9)
        return out

    def try_separable(self, plan: Plan, x, w):
        """``(result, known_finite)`` of the separable passes where ``auto``'s cost model says
        they may pay, the kernel is rank 1 to rounding (:func:`separable_factors`, on a host copy
        of the small kernel) and the data are finite (S9: NaN/Inf go to the plan's method); else
        ``None``. ``known_finite``: a bound (:func:`cannot_overflow`) proves the result finite,
        so ``execute`` need not scan it."""
        ndimage = self.separable_ndimage()
        if ndimage is None or not separable_pays(plan, self.capabilities):
            return None
        if not self.all_finite(w):
            return None
        factors = separable_factors(self.to_host(w), plan.axes, plan.acc_dtype)
        if factors is None or not self.all_finite(x):
            return None
        return self.separable_passes(plan, x, factors, ndimage), False

    def separable_passes(self, plan: Plan, x, factors, ndimage):
        """Valid correlation of ``pad(x)`` with ``outer(factors)``, one ``correlate1d`` pass per axis."""
        xp = self.xp
        y = x
        for i, a in enumerate(plan.axes):
            f = factors[i]
            d = plan.dilation[i]
            if d != 1:
                fd = np.zeros((f.size - 1) * d + 1)
                fd[::d] = f
                f = fd
            f = self.asarray(f)
            m = f.size
            lo, hi = plan.pads[i]
            ok = lo + hi == m - 1 and 0 <= lo <= m - 1 and (plan.boundary == "constant" or m <= y.shape[a])
            other = max((b for b in range(y.ndim) if b != a), key=lambda b: y.shape[b], default=None)
            if ok:
                kw = dict(axis=a, mode=ND_MODES[plan.boundary], cval=0.0, origin=lo - m // 2)
            else:
                widths = [(0, 0)] * y.ndim
                widths[a] = (max(lo, 0), max(hi, 0))
                y = self._pad_axis(plan, y, widths)
                cut = (slice(None),) * a + (slice(max(-lo, 0), y.shape[a] - max(-hi, 0)),)
                y = y[cut]
                kw = dict(axis=a, mode="constant", cval=0.0, origin=-(m // 2))

            def run(seg, o=None, f=f, kw=kw):
                return ndimage.correlate1d(seg, f, output=seg.dtype if o is None else o, **kw)

            if other is None:
                z = run(y)
            else:
                z = self._blocked_filter(y, m, other, (0, 0), run)
            if not ok:
                z = z[(slice(None),) * a + (slice(0, z.shape[a] - m + 1),)]
            y = z
        index = tuple(slice(None, None, plan.stride[plan.axes.index(a)]) if a in plan.axes else slice(None)
                      for a in range(y.ndim))
        return xp.broadcast_to(y[index], plan.out_shape)

    def _pad_axis(self, plan: Plan, y, widths):
        if plan.boundary == "constant":
            return self.xp.pad(y, widths, mode="constant", constant_values=0)
        return self.xp.pad(y, widths, mode=plan.boundary)

    def _blocked_filter(self, x, taps: int, axis: int, halo: tuple[int, int], func):
        """``func(x)``; the NumPy backend runs it in blocks along ``axis`` on all cores."""
        return func(x)

    def operands(self, plan: Plan, in1, in2):
        """``(x, w)`` of the canonical form: swapped (S3), shaped, in the accumulation dtype,
        ``w = flip(k)`` for convolve and ``conj(k)`` for correlate (S1)."""
        xp = self.xp
        x, k = (in2, in1) if plan.swap else (in1, in2)
        x = self.astype(xp.reshape(x, plan.x_shape), plan.acc_dtype)
        k = self.astype(xp.reshape(k, plan.k_shape), plan.acc_dtype)
        return x, (xp.flip(k, axis=plan.axes) if plan.op == "convolve" else self.conj(k))

    # -- small helpers: what a backend with its own dtype objects or devices overrides
    def astype(self, a, dtype):
        """``a`` converted to the NumPy ``dtype`` (in this backend's own dtype for it)."""
        return a if a.dtype == dtype else a.astype(dtype)

    def kind(self, a) -> str:
        """The NumPy dtype kind (``'b'``, ``'i'``, ``'u'``, ``'f'``, ``'c'``) of the array ``a``."""
        return np.dtype(a.dtype).kind

    def float64_of(self, plan: Plan, a):
        """The integer or bool values of ``a`` (in ``plan.acc_dtype``) as a float64 array (the
        integer-FFT rule and path)."""
        return self.astype(a, np.dtype(np.float64))

    def pad_constant(self, a, widths, value):
        """``numpy.pad(a, widths, constant_values=value)`` (``value`` as the array's type)."""
        if self.kind(a) == "b":
            value = bool(value)
        return self.xp.pad(a, widths, mode="constant", constant_values=value)

    def index_array(self, idx: np.ndarray, like):
        """The host integer array ``idx`` as an index array for ``like`` (same device)."""
        return self.asarray(idx)

    def conj(self, a):
        return self.xp.conj(a) if a.dtype.kind == "c" else a

    def all_finite(self, a) -> bool:
        return bool(self.xp.all(self.xp.isfinite(a)))

    def scalar_product(self, plan: Plan, in1, in2):
        a = self.astype(in1, plan.acc_dtype)
        b = self.astype(in2, plan.acc_dtype)
        if plan.op == "correlate":
            b = self.conj(b)
        out = self.xp.logical_and(a, b) if plan.acc_dtype.kind == "b" else a * b
        return self.xp.asarray(self.astype(out, plan.out_dtype))  # a 0-d array, not a NumPy scalar (S11)

    def pad(self, plan: Plan, x):
        """Extend ``x`` on the convolution axes by ``plan.pads`` (negative pads crop)."""
        xp = self.xp
        if not any(lo or hi for lo, hi in plan.pads):
            return x
        widths = [(0, 0)] * x.ndim
        crop = [slice(None)] * x.ndim
        for a, (lo, hi) in zip(plan.axes, plan.pads):
            widths[a] = (max(lo, 0), max(hi, 0))
            crop[a] = slice(max(-lo, 0), x.shape[a] + max(lo, 0) + max(hi, 0) - max(-hi, 0))
        if any(lo > 0 or hi > 0 for lo, hi in widths):
            if plan.boundary == "constant":
                x = self.pad_constant(x, widths, plan.fillvalue)
            else:
                x = xp.pad(x, widths, mode=plan.boundary)
        return x[tuple(crop)]

    def dilate(self, plan: Plan, w):
        """Insert ``dilation - 1`` zeros between the kernel taps on each convolution axis."""
        if all(d == 1 for d in plan.dilation):
            return w
        xp = self.xp
        shape = list(w.shape)
        index = [slice(None)] * w.ndim
        for a, d in zip(plan.axes, plan.dilation):
            shape[a] = (w.shape[a] - 1) * d + 1
            index[a] = slice(None, None, d)
        out = xp.zeros(tuple(shape), dtype=w.dtype)
        return self.set_at(out, tuple(index), w)

    def set_at(self, a, index, values):
        """``a[index] = values`` and return ``a`` (JAX overrides with ``.at[].set``)."""
        a[index] = values
        return a

    # -- direct through an ndimage module (scipy.ndimage or cupyx.scipy.ndimage)
    def ndimage_ok(self, plan: Plan, w) -> bool:
        """Whether ``ndimage.correlate`` computes exactly the direct result for this call.

        Only float32/float64 (ndimage on integers goes through float64 weights: not exact),
        a kernel with size 1 on the batch axes, and taps that are finite and larger than
        DBL_EPSILON in magnitude (both ndimages skip zero or tiny weights, which would not
        propagate a NaN through a zero tap as S9 asks).
        """
        if plan.acc_dtype not in (np.float32, np.float64):
            return False
        if any(plan.k_shape[a] != 1 for a in range(plan.ndim) if a not in plan.axes):
            return False
        if not self.ndimage_pays(plan):
            return False
        return self.taps_ok(w)

    def ndimage_pays(self, plan: Plan) -> bool:
        """Whether ndimage is worth its cost for this plan's shapes: cupyx's kernel visits
        every position of a dilated kernel's footprint for every output, so at most
        :data:`NDIMAGE_SPARSE` positions per tap (the NumPy backend prices SciPy's)."""
        return math.prod(plan.effective_kernel) <= NDIMAGE_SPARSE * plan.taps

    def taps_ok(self, w) -> bool:
        """:func:`taps_above_eps` of the (small) kernel ``w``, read on the host."""
        return taps_above_eps(self.to_host(w))

    def ndimage_direct(self, plan: Plan, x, w, ndimage):
        """Direct correlation with ``ndimage.correlate`` (call only when :meth:`ndimage_ok`).

        When the output has the input's length on every axis (stride 1 aside), the pads map to
        an ndimage ``origin`` and boundary mode and nothing is padded (:meth:`ndimage_same`);
        otherwise ``x`` is padded and the valid part of a constant-mode filter is kept.
        """
        axes = tuple(sorted(plan.axes))
        order = [plan.axes.index(a) for a in axes]
        wd = self.dilate(plan, w)
        weights = self.xp.reshape(wd, tuple(wd.shape[a] for a in axes))
        me = weights.shape
        pads = [plan.pads[i] for i in order]
        same_size = all(lo + hi == m - 1 and 0 <= lo <= m - 1 for (lo, hi), m in zip(pads, me))
        index = [slice(None)] * x.ndim
        if same_size and (plan.boundary == "constant" or all(m <= x.shape[a] for a, m in zip(axes, me))):
            cval = plan.fillvalue if plan.boundary == "constant" else 0.0
            origin = [lo - m // 2 for (lo, _), m in zip(pads, me)]
            kw = dict(mode=ND_MODES[plan.boundary], cval=cval, origin=origin, axes=axes)
            out = self.ndimage_same(ndimage, plan, x, weights, pads, kw)
        else:
            xpad = self.pad(plan, x)
            out = ndimage.correlate(xpad, weights, mode="constant", origin=[-(m // 2) for m in me],
                                    axes=axes)
            for a, m in zip(axes, me):
                index[a] = slice(0, xpad.shape[a] - m + 1)
        for a, i in zip(axes, order):
            index[a] = slice(index[a].start, index[a].stop, plan.stride[i])
        return out[tuple(index)]

    def ndimage_same(self, ndimage, plan: Plan, x, weights, pads, kw):
        """The same-size ``ndimage.correlate(x, weights, **kw)``; ``pads`` are per sorted axis
        (the NumPy backend overrides this to run row blocks on all cores)."""
        return ndimage.correlate(x, weights, **kw)

    # -- direct: shift-and-add, exact in the accumulation dtype (wrap-around for ints)
    def direct(self, plan: Plan, x, w):
        xp = self.xp
        xpad = self.pad(plan, x)
        ndim = x.ndim
        logical = plan.acc_dtype.kind == "b"
        acc = None
        for tap in itertools.product(*(range(w.shape[a]) for a in plan.axes)):
            xs = [slice(None)] * ndim
            ws = [slice(None)] * ndim
            for i, a in enumerate(plan.axes):
                start = tap[i] * plan.dilation[i]
                n_out = plan.out_shape[a]
                xs[a] = slice(start, start + (n_out - 1) * plan.stride[i] + 1, plan.stride[i])
                ws[a] = slice(tap[i], tap[i] + 1)
            acc = self._add_term(acc, xpad[tuple(xs)], w[tuple(ws)], logical)
        return xp.broadcast_to(acc, plan.out_shape)

    def _add_term(self, acc, xw, ww, logical: bool):
        """``acc + xw * ww`` of the shift-and-add (``or``/``and`` for bool; ``acc`` None: the
        first term), in the accumulation dtype: exact with wrap-around for integers."""
        xp = self.xp
        term = xp.logical_and(xw, ww) if logical else xw * ww
        if acc is None:
            return term
        return xp.logical_or(acc, term) if logical else acc + term

    # -- FFT and overlap-add
    def transform(self, plan: Plan, x, w, method: str, check_finite: bool = False):
        """FFT (or overlap-add) correlation; integers go through float64 and are rounded.

        With ``check_finite`` it raises :class:`NonFiniteInput` when an input holds NaN/Inf.
        """
        kind = plan.acc_dtype.kind
        if kind in "biu":
            return self._exact_int_transform(plan, x, w, method)
        return self.fft_corr(plan, x, w, method, check_finite=check_finite)

    def _exact_int_transform(self, plan: Plan, x, w, method: str):
        """Integer (and bool) FFT/overlap-add: exact, or a ConvkitValueError (S5).

        The rule of :func:`convkit.bounds.require_exact_int_fft`, the one every backend
        applies: no exact result may reach 2**53, and unless the kernel has one tap the
        rigorous float64 FFT error bound must stay below 1/2. One tap is a product per output,
        computed as such (direct, exact); otherwise one float64 FFT (also for ``"oa"``: the
        bound covers a single transform, not overlap-add's extra additions), rounded back.
        """
        xp = self.xp
        xf, wf = self.float64_of(plan, x), self.float64_of(plan, w)
        xpad = self.pad(plan, xf)
        sizes = [xpad.shape[a] + me - 1 for a, me in zip(plan.axes, plan.effective_kernel)]
        self.check_exact_int_fft(plan, xpad, wf, sizes)
        del xpad
        if plan.taps == 1:
            return self.direct(plan, x, w)
        out = xp.round(self.fft_corr(plan, xf, wf, "fft"))
        if plan.acc_dtype.kind == "b":
            return out > 0.5
        return self.astype(self.astype(out, np.dtype(np.int64)), plan.acc_dtype)

    def check_exact_int_fft(self, plan: Plan, xpad, wf, sizes) -> None:
        """Raise unless one float64 FFT of the padded input ``xpad`` and kernel ``wf`` (float64
        arrays holding integers) is provably exact (:func:`convkit.bounds.require_exact_int_fft`;
        a device backend may override it to read the statistics in one transfer)."""
        require_exact_int_fft(self.xp, xpad, wf, taps=plan.taps, sizes=sizes, method=plan.requested_method)

    def fft_corr(self, plan: Plan, x, w, method: str, check_finite: bool = False):
        """Valid correlation of the padded ``x`` with the dilated ``w`` through one FFT.

        With zero fill and pads inside ``[0, Me-1]`` nothing is padded: the result is a
        slice of the full linear convolution of ``x`` with ``flip(w)``.
        """
        xp = self.xp
        wd = self.dilate(plan, w)
        me = [wd.shape[a] for a in plan.axes]
        if pads_in_reach(plan, me):
            lo = [p[0] for p in plan.pads]
        else:
            x = self.pad(plan, x)
            lo = [0] * len(plan.axes)
        real = self.kind(x) != "c" and self.kind(wd) != "c"
        sizes, index = self.fft_period(plan, tuple(x.shape), me, lo, real)
        extra = {"check_finite": True} if check_finite else {}
        out = self.linear_conv(x, xp.flip(wd, axis=plan.axes), sizes, plan.axes, real, method,
                               keep=index, **extra)
        return out if tuple(out.shape) == plan.out_shape else xp.broadcast_to(out, plan.out_shape)

    def fft_period(self, plan: Plan, x_shape: tuple, me: list, lo: list, real: bool) -> tuple[list, tuple]:
        """:meth:`fft_corr`'s period (a fast length per convolution axis) and the slices of the
        full linear convolution that hold the result, for an input of ``x_shape`` padded by
        ``lo`` before (``me``: the dilated kernel's extents)."""
        sizes, index = [], [slice(None)] * len(x_shape)
        for i, a in enumerate(plan.axes):
            start = me[i] - 1 - lo[i]
            span = (plan.out_shape[a] - 1) * plan.stride[i] + 1
            sizes.append(self.next_fast_len(max(x_shape[a] + lo[i], start + span), real))
            index[a] = slice(start, start + span, plan.stride[i])
        return sizes, tuple(index)

    def linear_conv(self, x, wf, sizes, axes, real: bool, method: str, check_finite: bool = False,
                    keep: tuple | None = None):
        """Convolution of ``x`` and ``wf`` over ``axes``, circular with period ``sizes``, or
        its part ``[keep]`` (slices, one per dimension) where ``keep`` is given.

        ``sizes`` are long enough that the slice :meth:`fft_corr` takes is not aliased; an
        override may compute the full linear convolution instead (e.g. overlap-add), and may
        skip what ``keep`` leaves out. With ``check_finite``, raise :class:`NonFiniteInput` if
        either spectrum's DC bins are not finite (see :meth:`check_dc`).
        """
        forward, inverse = (self.rfftn, self.irfftn) if real else (self.fftn, self.ifftn)
        sx, sw = forward(x, sizes, axes), forward(wf, sizes, axes)
        if check_finite:
            self.check_dc(sx, axes)
            self.check_dc(sw, axes)
        out = inverse(sx * sw, sizes, axes)
        return out if keep is None else out[keep]

    def check_dc(self, spec, axes) -> None:
        """Raise :class:`NonFiniteInput` unless the DC bins of ``spec`` are finite.

        The DC bin is the sum of the transformed data, so one NaN or Inf anywhere in it
        makes the bin non-finite (an overflowing sum does too: the caller then runs the
        direct method, which is never wrong). This costs nothing next to the transform.
        """
        xp = self.xp
        dc = spec[tuple(0 if a in axes else slice(None) for a in range(spec.ndim))]
        if not bool(xp.all(xp.isfinite(dc))):
            raise NonFiniteInput
