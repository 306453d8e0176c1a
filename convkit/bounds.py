"""Rigorous floating-point error bounds of SPEC S5 (pure arithmetic, no arrays).

* direct methods, elementwise: ``|out - exact| <= gamma_K * (|x| (*) |k|)`` with
  ``gamma_K = K*u / (1 - K*u)``, K taps, u the unit roundoff of the accumulation dtype
  (complex arithmetic: ``sqrt(2) * gamma_{K+2}``, Higham, *Accuracy and Stability*, 3.6);
* FFT methods, normwise: ``max|out - exact| <= FFT_C * u * log2(L) * ||x||_2 * ||k||_2``.

:mod:`convkit.testing` turns these into assertions; the backends use
:func:`fft_int_is_exact` to decide whether an integer FFT can be rounded back exactly.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["unit_roundoff", "gamma", "direct_factor", "fft_factor", "FFT_C", "fft_int_is_exact"]

#: constant of the normwise FFT bound (covers forward, pointwise product and inverse)
FFT_C = 8.0


def unit_roundoff(dtype) -> float:
    """u = 2**-p for the float (or complex) dtype: float16 2**-11, float32 2**-24, float64 2**-53."""
    dt = np.dtype(dtype)
    if dt.kind not in "fc":
        return 0.0
    return float(np.finfo(dt).eps) / 2.0


def gamma(k: int, u: float) -> float:
    """``gamma_k = k*u / (1 - k*u)``; infinite when ``k*u >= 1`` (no bound possible)."""
    ku = k * u
    return math.inf if ku >= 1 else ku / (1 - ku)


def direct_factor(taps: int, dtype) -> float:
    """Factor f with ``|out - exact| <= f * (|x| (*) |k|)`` for a direct method in ``dtype``."""
    u = unit_roundoff(dtype)
    if np.dtype(dtype).kind == "c":
        return math.sqrt(2.0) * gamma(taps + 2, u)
    return gamma(taps, u)


def fft_factor(length: int, dtype) -> float:
    """Factor f with ``max|out - exact| <= f * ||x||_2 * ||k||_2`` for an FFT method."""
    return FFT_C * unit_roundoff(dtype) * max(math.log2(max(length, 2)), 1.0)


def fft_int_is_exact(max_x: float, max_k: float, norm_x: float, norm_k: float, *, taps: int,
                     length: int) -> bool:
    """Whether a float64 FFT convolution of integer data rounds back to the exact integers.

    Needs every exact output (at most ``taps * max|x| * max|k|``) to be an exact float64
    integer, and the FFT error bound to stay below 1/2.
    """
    if taps * max_x * max_k >= 2.0**52:
        return False
    return fft_factor(length, np.float64) * norm_x * norm_k < 0.5
