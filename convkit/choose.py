"""How ``method="auto"`` picks an algorithm (SPEC S8, S9, S5).

A small cost model, evaluated on shapes only (so it is trace-safe), with constants that
each backend supplies in its :class:`Capabilities`:

* direct:  ``c_direct * outputs * taps``            (multiply-adds of the sliding window)
* fft:     ``c_fft * T * log2(T)``                  (T = transform elements, fast lengths)
* oa:      ``c_fft * blocks * B * log2(B)``          (overlap-add with blocks of size B)

Rules that override cost: integers and bool are never sent to an FFT by ``auto`` (it could
not be exact, S5); a non-finite ``fillvalue`` keeps ``direct``; when ``auto`` chooses an
FFT method for floats the plan is marked ``nan_safe`` and the backend falls back to
``direct`` if an input holds NaN or Inf (S9).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["Capabilities", "choose_method", "fast_len"]


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do and what its primitives cost (seconds per unit, roughly)."""

    methods: tuple[str, ...] = ("direct", "fft", "oa")
    c_direct: float = 1.0e-9
    c_fft: float = 4.0e-9
    # below this many multiply-adds direct always wins (call overhead dominates)
    small_direct: int = 50_000


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


def _fft_cost(x_shape, k_shape, axes, pads, dilation, caps: Capabilities) -> float:
    """Cost of one FFT convolution of the padded input with the dilated kernel."""
    batch = 1
    for a in range(len(x_shape)):
        if a not in axes:
            batch *= max(x_shape[a], k_shape[a])
    t = 1
    for i, a in enumerate(axes):
        me = (k_shape[a] - 1) * dilation[i] + 1
        t *= fast_len(x_shape[a] + pads[i][0] + pads[i][1] + me - 1)
    return caps.c_fft * 3 * batch * t * math.log2(max(t, 2))


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
    macs = outputs * taps
    if macs <= caps.small_direct or "fft" not in caps.methods:
        return "direct", False
    direct = caps.c_direct * macs
    fft = _fft_cost(x_shape, k_shape, axes, pads, dilation, caps)
    if fft < direct:
        return "fft", True
    return "direct", False
