"""Rigorous floating-point error bounds of SPEC S5 (pure arithmetic, plus one statistics
helper that reads arrays through their array namespace).

* direct methods, elementwise: ``|out - exact| <= gamma_K * (|x| (*) |k|)`` with
  ``gamma_K = K*u / (1 - K*u)``, K taps, u the unit roundoff of the accumulation dtype
  (complex arithmetic: ``sqrt(2) * gamma_{K+2}``, Higham, *Accuracy and Stability*, 3.6);
* FFT methods, normwise: ``max|out - exact| <= FFT_C * u * log2(L) * ||x||_2 * ||k||_2``.

:mod:`convkit.testing` turns these into assertions.

Integer FFT (S5: an explicit ``method="fft"``/``"oa"`` on integers is exact or raises). Every
backend applies the same rule, :func:`require_exact_int_fft`, to the padded input ``x`` and
the kernel ``k`` in the accumulation dtype, before computing anything:

1. **No result at or above 2**53.** ``max|exact| <= B = min(K*max|x|*max|k|,
   max|x|*||k||_1, ||x||_1*max|k|, ||x||_2*||k||_2)`` (the sum of |products| of any output,
   bounded four ways). ``B < 2**53`` is required: every exact result is then a float64 integer.
2. **One tap** (``K == 1``, length-1 transforms included): the result is ``x * k0``, one
   product per output, exact in float64 given 1.; nothing else is needed, and the backends
   compute that product (in the integer type) instead of a transform.
3. **Otherwise** the float64 FFT result, rounded, is the exact integer when
   :func:`int_fft_error`, a rigorous bound on ``max|computed - exact|``, is below 1/2.

:func:`int_fft_error` composes Higham's normwise bound for one transform of length ``L``
(Theorem 24.2: relative 2-norm error ``<= e = c*u*log2(L) / (1 - c*u*log2(L))``, ``c = 6.7``
for radix 2 with twiddles correct to ``u``; ``INT_FFT_C = 8`` is used to cover mixed radices
and twiddles within ~2u) through forward transforms ``X = F x``, ``W = F k``, the product
(complex multiplication: ``mu = sqrt(2)*gamma_2``) and the inverse (``e + u``, its 1/L
scaling)::

    err <= ||x||_2 ||k||_2 (2e + e^2 + mu (1+e)^2)                  forward errors and product,
                                                                   max-norm through (1/L)||.||_1
         + (e + u(1+e)) (min(||x||_2 ||k||_1, ||x||_1 ||k||_2)     inverse, relative to the 2-norm
                         + e (||x||_2 ||k||_1 + ||x||_1 ||k||_2)   of its input (Young's inequality
                         + e^2 sqrt(L) ||x||_2 ||k||_2             for ||x (*) k||_2, plus the
                         + mu (1+e) ||k||_2 (||x||_1 + e sqrt(L) ||x||_2))  perturbations)

``L`` is taken as the product over the convolution axes of ``n_a + m_a - 1`` (padded input
plus effective kernel) rounded up to a power of two: an upper bound of the transform length
of every backend (their fast lengths are no larger), so the rule depends on the shapes and
the values only, never on the backend. The statistics are computed in float64 and enlarged
by their own rounding (:func:`int_fft_stats`). The per-transform bound is proved for radix-2
Cooley-Tukey; for the mixed-radix libraries (pocketfft, DUCC, cuFFT) it is the model assumed.
The bound is a worst case: typical errors are 3-4 orders of magnitude smaller (full-range
int16 at 10**6 x 256 errs by ~5e-5, bounded by 1.7, so it is refused).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["unit_roundoff", "gamma", "direct_factor", "fft_factor", "FFT_C", "INT_FFT_C",
           "int_fft_error", "fft_int_is_exact", "int_fft_stats", "require_exact_int_fft",
           "inexact_int_fft_error"]

#: constant of the normwise FFT bound (covers forward, pointwise product and inverse)
FFT_C = 8.0
#: per-transform constant of the rigorous integer-FFT bound (Higham Thm 24.2: 6.7 for radix 2)
INT_FFT_C = 8.0
#: every exact integer result must stay below this (float64 integers are exact up to it)
_EXACT_LIMIT = 2.0**53


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


def _log2_length(sizes) -> int:
    """``log2`` of the rule's transform length: each axis rounded up to a power of two."""
    return sum(max(int(n) - 1, 0).bit_length() for n in sizes)


def int_fft_error(norm_x: float, norm_k: float, sum_x: float, sum_k: float, *, sizes) -> float:
    """Rigorous bound on ``max|computed - exact|`` of a float64 FFT convolution (module
    docstring); ``norm_*`` are 2-norms, ``sum_*`` 1-norms, ``sizes`` the linear convolution
    length per axis (``n + m - 1``)."""
    u = unit_roundoff(np.float64)
    lg = _log2_length(sizes)
    t = INT_FFT_C * u * lg
    if t >= 0.5:
        return math.inf
    e = t / (1 - t)
    mu = math.sqrt(2.0) * gamma(2, u)
    e_inv = e + u * (1 + e)
    root = math.sqrt(2.0**lg)
    nn = norm_x * norm_k
    err = nn * (2 * e + e * e + mu * (1 + e) ** 2)
    young = min(norm_x * sum_k, sum_x * norm_k)
    drift = (e * (norm_x * sum_k + sum_x * norm_k) + e * e * root * nn
             + mu * (1 + e) * norm_k * (sum_x + e * root * norm_x))
    err += e_inv * (young + drift)
    return err * (1 + 8 * u)  # the rounding of this evaluation


def fft_int_is_exact(max_x: float, max_k: float, norm_x: float, norm_k: float, *, sum_x: float,
                     sum_k: float, taps: int, sizes) -> bool:
    """The integer-FFT rule (module docstring): whether the float64 FFT convolution of integer
    data, rounded, is provably the exact integer result.

    ``max_*``, ``norm_*``, ``sum_*``: max-, 2- and 1-norms of the padded input ``x`` and the
    kernel ``k`` (upper bounds); ``taps``: K; ``sizes``: ``n + m - 1`` per convolution axis.
    """
    bound = min(taps * max_x * max_k, max_x * sum_k, sum_x * max_k, norm_x * norm_k)
    if not bound < _EXACT_LIMIT:
        return False
    if taps == 1:
        return True
    return int_fft_error(norm_x, norm_k, sum_x, sum_k, sizes=sizes) < 0.5


def int_fft_stats(xp, a) -> tuple[float, float, float]:
    """Upper bounds of ``(max|a|, ||a||_2, ||a||_1)`` for the integer values held by the float64
    array ``a`` of the array namespace ``xp`` (the backend converts: it knows how its integer
    types map to values), enlarged by the rounding of the conversion and of this computation
    (any summation order, the square root)."""
    u = unit_roundoff(np.float64)
    f = xp.abs(a)
    n = int(math.prod(a.shape))
    grow = 1.0 / (1.0 - (n + 4) * u) if (n + 4) * u < 0.5 else math.inf
    top = float(xp.max(f)) * (1 + 2 * u)
    total = float(xp.sum(f)) * grow
    norm = math.sqrt(float(xp.sum(f * f)) * grow) * (1 + 2 * u)
    return top, norm, total


def require_exact_int_fft(xp, x, k, *, taps: int, sizes, method: str) -> None:
    """Apply the integer-FFT rule to the padded input ``x`` and the kernel ``k`` (float64 arrays
    of ``xp`` holding the integer values); raise :class:`~convkit.ConvkitValueError` when an
    explicit ``method`` cannot be exact. Every backend calls this, so all refuse alike."""
    mx, nx, sx = int_fft_stats(xp, x)
    mk, nk, sk = int_fft_stats(xp, k)
    if not fft_int_is_exact(mx, mk, nx, nk, sum_x=sx, sum_k=sk, taps=taps, sizes=sizes):
        raise inexact_int_fft_error(method)


def inexact_int_fft_error(method: str):
    """The error every backend raises when an explicit FFT ``method`` cannot be exact on integers."""
    from .errors import ConvkitValueError

    return ConvkitValueError(
        f"method={method!r} cannot give the exact integer result for these values (float64 "
        "FFT rounding); use method='direct' or 'auto'"
    )
