"""How ``method="auto"`` picks an algorithm (SPEC S8, S9, S5).

``method="auto"`` is decided in two steps.

**1. In the plan, from shapes only** (trace-safe, cached with the plan). A small cost model
estimates the run time of every method the backend offers, with constants that each
backend supplies in its :class:`Capabilities` (seconds; measured on a reference machine,
re-measurable with :func:`convkit.tune.tune`). ``O`` = output elements, ``K`` = kernel taps::

    direct  c_direct * O * K  + c_out * O          (c_direct_1d for 1-D: numpy.convolve)
    fft     c_fft * 2.5 * T * sum_a w(L_a) log2(L_a) + 3 c_out * T + fft_call
                                (T = product of the fast FFT lengths L_a, real FFTs; the
                                kernel's transform is ~half price; w > 1 for L_a > 2**14,
                                long 1-D transforms that leave the cache)
    oa      the same over overlap-add blocks + oa_call (blocks of ~8x the kernel on long axes)

For float32/complex64 the direct and FFT terms are scaled by the backend's ``single_direct``
(``single_direct_1d``) and ``single_fft`` factors (the JAX backend computes float32 in about
half the time of float64; NumPy's N-d direct kernel, ``scipy.ndimage``, does not).

and picks the cheapest. Rules that override cost:

* integers and bool never go to an FFT under ``auto`` (it could not be exact, S5);
* a non-finite ``fillvalue`` keeps ``direct``;
* calls below ``small_direct`` multiply-adds go straight to ``direct`` (call overhead dominates);
* an FFT method chosen by ``auto`` marks the plan ``nan_safe``: the backend checks the data
  and runs ``direct`` when an input holds NaN or Inf, so NaN/Inf land where ``direct`` puts
  them (S9). The plain FFT path reads the DC bins of the spectra it computes anyway (no extra
  pass); other paths scan the inputs (one ``sum``, ``isfinite`` only when it is not finite).
  A transform (or separable) result that is not finite although the data are (finite values
  near the float range overflow inside an FFT) is recomputed by ``direct``: ``auto`` is never
  less finite than ``direct`` (one pass over the output; NumPy and CuPy backends).

**2. In the backend, with the data** (NumPy, CuPy and JAX backends). Whether a kernel is
*separable* (rank 1: an outer product of 1-D kernels, like a Gaussian or a box) depends on its
values, which the plan never sees. :func:`separable_cost` gives the cost of one 1-D pass per
axis (``c_sep * O * sum(M_a) + c_out * O * passes``); when that beats the plan's choice
(``convkit.backends._base.separable_pays``) the backend factors the kernel
(``convkit.backends._base.separable_factors``, on a host copy of the small kernel) and, if
the kernel is rank 1 to within the rounding the S5 direct bound leaves room for, and the data
are finite, runs the 1-D passes.
Otherwise the plan's method runs unchanged. The JAX backend makes the same test inside the
jitted function (the kernel may be traced) and picks the branch with a ``lax.cond``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["Capabilities", "choose_method", "fast_len", "method_costs", "separable_cost"]


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do and what its primitives cost (seconds per unit, roughly).

    ``c_direct``: one multiply-add of the N-d direct method; ``c_direct_1d``: the same for
    1-D inputs (``None``: ``c_direct``); ``c_fft``: one element times ``log2`` of the length
    of one FFT; ``c_out``: touching one element once (allocation, copy, pad);
    ``c_sep``: one multiply-add of a 1-D pass of the separable path (``None``: no such path).
    """

    methods: tuple[str, ...] = ("direct", "fft", "oa")
    c_direct: float = 1.0e-9
    c_fft: float = 4.0e-9
    # below this many multiply-adds direct always wins (call overhead dominates)
    small_direct: int = 50_000
    c_direct_1d: float | None = None
    c_out: float = 0.0
    c_sep: float | None = None
    # relative cost of single precision (float32/complex64) for FFTs and the 1-D direct kernel
    # (the N-d direct kernel, ndimage, computes in float64 whatever the input)
    # fixed cost of one call of the FFT / overlap-add paths (Python, planning, allocations)
    fft_call: float = 5.0e-5
    oa_call: float = 1.5e-4
    single_fft: float = 0.55
    single_direct_1d: float = 0.6
    # the same for the N-d direct method (1.0 where it computes in float64 whatever the input)
    single_direct: float = 1.0
    # per-output cost of the 1-D direct kernel in single precision (None: c_out); numpy.convolve
    # has a slow float32 path for short kernels
    c_out_1d_single: float | None = None


def fast_len(n: int) -> int:
    """Smallest 2**a * 3**b * 5**c >= n (an FFT length every FFT library handles fast)."""
    if n <= 6:
        return max(n, 1)
    best = 1 << (n - 1).bit_length()
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            m = p35
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best


def _geometry(x_shape, k_shape, axes, pads, dilation):
    """(batch, per-axis padded lengths, per-axis effective kernel lengths)."""
    batch = 1
    for a in range(len(x_shape)):
        if a not in axes:
            batch *= max(x_shape[a], k_shape[a])
    ns, ms = [], []
    for i, a in enumerate(axes):
        ms.append((k_shape[a] - 1) * dilation[i] + 1)
        ns.append(x_shape[a] + max(pads[i][0], 0) + max(pads[i][1], 0))
    return batch, ns, ms


def _log_work(lengths) -> float:
    """Sum over the transform axes of ``log2(L)``, weighted up for long 1-D transforms that
    leave the cache (a 1-D FFT of 10**6 points costs far more per point than 1000 of 1000)."""
    return sum(math.log2(max(n, 2)) * (1.0 + 0.25 * max(0.0, math.log2(max(n, 2)) - 14.0))
               for n in lengths)


def _fft_cost(batch, ns, ms, caps: Capabilities) -> float:
    lengths = [fast_len(n + m - 1) for n, m in zip(ns, ms)]
    t = batch * math.prod(lengths)
    return caps.c_fft * 2.5 * t * _log_work(lengths) + 3 * caps.c_out * t


def _oa_cost(batch, ns, ms, caps: Capabilities) -> float:
    """Overlap-add with blocks of about 8x the kernel on axes where the input is much longer."""
    total, blocks = batch, []
    for n, m in zip(ns, ms):
        if n > 8 * m and m > 1:
            f = fast_len(max(8 * m, 64))
            step = f - m + 1
            total *= math.ceil(n / step) * f
        else:
            f = fast_len(n + m - 1)
            total *= f
        blocks.append(f)
    return caps.c_fft * 2.5 * total * _log_work(blocks) + 4 * caps.c_out * total


def method_costs(*, out_shape, x_shape, k_shape, axes, pads, dilation,
                 caps: Capabilities, dtype=None) -> dict[str, float]:
    """Estimated seconds of every method in ``caps.methods`` for one call (shapes only)."""
    outputs = math.prod(out_shape)
    taps = math.prod(k_shape[a] for a in axes)
    single = dtype is not None and np.dtype(dtype) in (np.float32, np.complex64)
    one_d = len(axes) == 1 and len(x_shape) == 1 and caps.c_direct_1d
    if one_d:
        c_dir = caps.c_direct_1d * (caps.single_direct_1d if single else 1.0)
    else:
        c_dir = caps.c_direct * (caps.single_direct if single else 1.0)
    c_out = caps.c_out_1d_single if (one_d and single and caps.c_out_1d_single is not None) else caps.c_out
    costs = {"direct": c_dir * outputs * taps + c_out * outputs}
    batch, ns, ms = _geometry(x_shape, k_shape, axes, pads, dilation)
    f = caps.single_fft if single else 1.0
    if "fft" in caps.methods:
        costs["fft"] = f * _fft_cost(batch, ns, ms, caps) + caps.fft_call
    if "oa" in caps.methods:
        costs["oa"] = f * _oa_cost(batch, ns, ms, caps) + caps.oa_call
    return costs


def separable_cost(*, out_shape, x_shape, k_shape, axes, caps: Capabilities) -> float:
    """Estimated seconds of the separable path (one 1-D pass per kernel axis longer than 1)."""
    if caps.c_sep is None:
        return math.inf
    sizes = [k_shape[a] for a in axes if k_shape[a] > 1]
    if len(sizes) < 2:
        return math.inf
    # intermediate passes run over the larger (input-sized) arrays: bound by the bigger of the two
    elems = max(math.prod(out_shape), math.prod(max(x_shape[a], out_shape[a]) for a in range(len(x_shape))))
    return caps.c_sep * elems * sum(sizes) + caps.c_out * elems * 2 * len(sizes)


def choose_method(
    method: str,
    *,
    out_dtype: np.dtype,
    out_shape,
    x_shape,
    k_shape,
    axes,
    pads,
    stride,
    dilation,
    fill_finite: bool,
    caps: Capabilities,
) -> tuple[str, bool]:
    """Return ``(method, nan_safe)`` for a plan; explicit methods pass through unchanged."""
    if method != "auto":
        if method not in caps.methods:
            # a backend without its own overlap-add runs the plain FFT path (same numbers)
            return ("fft" if method == "oa" and "fft" in caps.methods else "direct"), False
        return method, False
    if out_dtype.kind in "biu" or not fill_finite:
        return "direct", False
    taps = math.prod(k_shape[a] for a in axes)
    outputs = math.prod(out_shape)
    if outputs * taps <= caps.small_direct or "fft" not in caps.methods:
        return "direct", False
    costs = method_costs(out_shape=out_shape, x_shape=x_shape, k_shape=k_shape, axes=axes, pads=pads,
                         dilation=dilation, caps=caps, dtype=out_dtype)
    best = min(costs, key=costs.get)
    return best, best != "direct"
