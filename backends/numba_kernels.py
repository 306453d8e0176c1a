"""The compiled loops of :mod:`convkit.backends.numba_engine` (imports Numba: load it lazily).

One function computes a band of output rows of a 2-D correlation with zero fill:
``out[i, j] = sum_{a, b} k[a, b] * x[i + a - lo0, j + b - lo1]`` over the positions inside
``x``. Each output row is summed in a fixed order, kernel row by kernel row and tap by tap
from ``+0.0`` (skipping the kernel rows and taps that fall outside ``x``, whose products are
``0 * tap``), so its bits depend neither on the band nor on the thread that runs it (S8).

The columns whose window lies inside ``x`` take one vectorised loop per kernel row that adds
all of that row's taps in registers; kernels up to :data:`UNROLLED` columns get a compiled
function each (the tap loop has a constant length, which LLVM unrolls so that the column
loop vectorises), wider kernels one vectorised pass per block of 8 taps (summed in registers,
in the same order: the bits are those of one pass per tap), then one pass per tap left. Numba caches the
compiled functions on disk (``cache=True``): the first call of a kernel width compiles it
once per machine, later processes load it.
"""

from __future__ import annotations

import functools

import numba
import numpy as np

__all__ = ["UNROLLED", "SEPARABLE_UNROLLED", "rows", "separable"]

#: kernel widths (columns) with a function of their own
UNROLLED = 7

#: row-factor widths of separable kernels with a function of their own (Gaussians are often 15-31 wide)
SEPARABLE_UNROLLED = 31


# The row pass (edge columns tap by tap, then one vectorised loop over the columns whose window
# lies inside the source row) is written out in both band functions: Numba caches a compiled
# function on disk only when it calls no other compiled function through a closure, so a shared
# row-pass function would be compiled again in every process (half a second).


@functools.cache
def _band(width: int):
    """The 2-D band function for kernels of ``width`` columns (``0``: any width, one vectorised
    pass per tap)."""

    @numba.njit(nogil=True, cache=True, boundscheck=False)
    def band(x, k, lo0, lo1, out, i0, i1):  # pragma: no cover - compiled by Numba
        n1 = out.shape[1]
        big0, big1 = x.shape
        m0, m1 = k.shape
        # columns j whose window x[., j - lo1 : j - lo1 + m1] lies inside x
        jlo = min(max(lo1, 0), n1)
        jhi = max(min(n1, big1 - m1 + 1 + lo1), jlo)
        n = jhi - jlo
        for i in range(i0, i1):
            row = out[i]
            row[:] = 0
            for a in range(m0):
                r = i + a - lo0
                if r < 0 or r >= big0:
                    continue
                src = x[r]
                taps = k[a]
                for b in range(m1):
                    kv = taps[b]
                    off = b - lo1
                    j0 = max(0, -off)
                    j1 = min(n1, big1 - off)
                    for j in range(j0, min(j1, jlo)):
                        row[j] += kv * src[j + off]
                    for j in range(max(j0, jhi), j1):
                        row[j] += kv * src[j + off]
                if n <= 0:
                    continue
                rs = row[jlo:jhi]
                xs = src[jlo - lo1:]
                if width:
                    for j in range(n):
                        acc = rs[j]
                        for b in range(width):
                            acc += taps[b] * xs[j + b]
                        rs[j] = acc
                else:  # blocks of 8 taps summed in registers, then the taps left one pass each
                    b = 0
                    while b + 8 <= m1:
                        t0, t1, t2, t3 = taps[b], taps[b + 1], taps[b + 2], taps[b + 3]
                        t4, t5, t6, t7 = taps[b + 4], taps[b + 5], taps[b + 6], taps[b + 7]
                        xb = xs[b:b + n + 7]
                        for j in range(n):
                            acc = rs[j] + t0 * xb[j]
                            acc += t1 * xb[j + 1]
                            acc += t2 * xb[j + 2]
                            acc += t3 * xb[j + 3]
                            acc += t4 * xb[j + 4]
                            acc += t5 * xb[j + 5]
                            acc += t6 * xb[j + 6]
                            rs[j] = acc + t7 * xb[j + 7]
                        b += 8
                    for c in range(b, m1):
                        kv = taps[c]
                        xb = xs[c:c + n]
                        for j in range(n):
                            rs[j] += kv * xb[j]

    return band


@functools.cache
def _separable_band(width: int):
    """The band function of a separable kernel ``outer(ky, kx)`` whose row factor has ``width``
    taps (``0``: any width): per output row, the column pass into a row buffer (every image row
    the window reaches, times its ``ky`` tap), then the 2-D loop's row pass over the buffer
    with ``kx``. Returns ``sum(out[i0:i1])`` in float64, which is not finite when an output is
    not (S9: the caller then runs the plan's own method)."""

    @numba.njit(nogil=True, cache=True, boundscheck=False)
    def band(x, ky, kx, lo0, lo1, out, i0, i1):  # pragma: no cover - compiled by Numba
        n1 = out.shape[1]
        big0, big1 = x.shape
        m1 = kx.shape[0]
        jlo = min(max(lo1, 0), n1)
        jhi = max(min(n1, big1 - m1 + 1 + lo1), jlo)
        n = jhi - jlo
        src = np.empty(big1, dtype=out.dtype)
        total = 0.0
        for i in range(i0, i1):
            src[:] = 0
            for a in range(ky.shape[0]):
                r = i + a - lo0
                if r < 0 or r >= big0:
                    continue
                xr = x[r]
                kv = ky[a]
                for j in range(big1):
                    src[j] += kv * xr[j]
            row = out[i]
            row[:] = 0
            for b in range(m1):
                kv = kx[b]
                off = b - lo1
                j0 = max(0, -off)
                j1 = min(n1, big1 - off)
                for j in range(j0, min(j1, jlo)):
                    row[j] += kv * src[j + off]
                for j in range(max(j0, jhi), j1):
                    row[j] += kv * src[j + off]
            if n > 0:
                rs = row[jlo:jhi]
                xs = src[jlo - lo1:]
                if width:
                    for j in range(n):
                        acc = rs[j]
                        for b in range(width):
                            acc += kx[b] * xs[j + b]
                        rs[j] = acc
                else:
                    for b in range(m1):
                        kv = kx[b]
                        xb = xs[b:b + n]
                        for j in range(n):
                            rs[j] += kv * xb[j]
            s = 0.0
            for j in range(n1):
                s += row[j]
            total += s
        return total

    return band


def rows(width: int):
    """The compiled band function for kernels of ``width`` columns:
    ``band(x, k, lo0, lo1, out, i0, i1)`` fills ``out[i0:i1]``."""
    return _band(width if width <= UNROLLED else 0)


def separable(width: int):
    """The compiled band function of separable kernels whose row factor has ``width`` taps:
    ``band(x, ky, kx, lo0, lo1, out, i0, i1)`` fills ``out[i0:i1]`` and returns its sum."""
    return _separable_band(width if width <= SEPARABLE_UNROLLED else 0)
