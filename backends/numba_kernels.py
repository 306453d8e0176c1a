"""The compiled loops of :mod:`convkit.backends.numba_engine` (imports Numba: load it lazily).

One function computes a band of output rows of a 2-D correlation with zero fill:
``out[i, j] = sum_{a, b} k[a, b] * x[i + a - lo0, j + b - lo1]`` over the positions inside
``x``. Each output row is summed in a fixed order, kernel row by kernel row and tap by tap
from ``+0.0`` (skipping the kernel rows and taps that fall outside ``x``, whose products are
``0 * tap``), so its bits depend neither on the band nor on the thread that runs it (S8).

Each kernel row is one vectorised loop over the whole output row that adds all of that row's
taps in registers (image rows whose windows reach past ``x``'s columns are first copied with
zero columns around them); kernels up to :data:`UNROLLED` columns get a compiled function each
(the tap loop has a constant length, which LLVM unrolls so that the column loop vectorises),
wider kernels one vectorised pass per block of 8 taps, or as many as the engine asks for
(``numba_engine.row_block``: more on AVX-512 hosts), summed in registers in the same order (the
bits are those of one pass per tap), then one for the taps left (a function per count).
Kernels up to ``SMALL`` (7) taps a side get functions of their own shape (:func:`small`), whose
loops all have constant lengths: the same sums in the same order, up to 2x faster. Three-dimensional
kernels have their own band function (:func:`volume`: planes of the output of a padded volume,
one pass per kernel row, rows up to ``UNROLLED`` taps compiled each). Numba caches the
compiled functions on disk (``cache=True``): the first call of a kernel width compiles it
once per machine, later processes load it.
"""

from __future__ import annotations

import functools

import numba
import numpy as np

# kernels up to SMALL rows and columns get functions of their own for each shape (small()),
# which add up to SMALL_PASS_TAPS taps (by dtype) in registers per pass, or as many as the engine
# asks for (numba_engine.pass_taps: more on AVX-512 hosts)
from .numba_engine import SMALL, SMALL_PASS_TAPS

__all__ = ["UNROLLED", "SEPARABLE_UNROLLED", "SMALL", "rows", "small", "separable", "volume"]

#: kernel widths (columns) with a function of their own
UNROLLED = 7

#: row-factor widths of separable kernels with a function of their own (Gaussians are often 15-31 wide)
SEPARABLE_UNROLLED = 31

#: output rows per chunk of :func:`_band` (the image rows it reaches are copied, zero-padded, once
#: per chunk: a few percent more copying for a 15-row kernel, and a scratch that stays in L2)
_CHUNK = 64


# The row pass (one vectorised loop over the output row per block of taps) is written out in
# every band function, and the blocks of taps as well: Numba caches a compiled function on
# disk only when it calls no other compiled function through a closure, so a shared row-pass
# function would be compiled again in every process (half a second).


@functools.cache
def _band(width: int, rest: int = 0, block: int = 8):
    """The 2-D band function for kernels of ``width`` columns (``0``: any width whose taps
    beyond the last block of ``block`` number ``rest``).

    Every output row adds one kernel row after another, each in vectorised passes over the
    whole row (one per kernel row, or per block of ``block`` taps for wider kernels, then one
    for the ``rest``) that sum their taps in registers (every loop over taps has a constant
    length, which LLVM unrolls). Where windows reach past the image's columns,
    the image rows are first copied with zero columns on both sides, once per chunk of
    :data:`_CHUNK` output rows (where none does, as in a 1-D signal's inner piece, the loop
    reads ``x``). A padded zero adds ``0 * tap`` (+0 or -0: the taps are finite) to a sum
    that started from +0, which is never -0, so the bits are those of skipping the taps
    outside ``x`` (S1's sum). Kernel rows outside ``x`` are skipped. Scalar loops over the
    end columns, tap by tap (an earlier version), took a fifth of the time of a 2000x2000
    image with a 15x15 kernel."""

    @numba.njit(nogil=True, cache=True, boundscheck=False)
    def band(x, k, lo0, lo1, out, i0, i1):  # pragma: no cover - compiled by Numba
        n1 = out.shape[1]
        big0, big1 = x.shape
        m0, m1 = k.shape
        wide = n1 + m1 - 1  # a padded row: its column c is column c - lo1 of x
        c0 = min(max(lo1, 0), wide)
        c1 = max(min(wide, big1 + lo1), c0)
        direct = c0 == 0 and c1 == wide
        rows = 0 if direct else min(_CHUNK, max(i1 - i0, 0)) + m0 - 1
        pad = np.zeros((rows, wide), dtype=x.dtype)
        src = x if direct else pad
        skip = -lo1 if direct else 0  # column c of a padded row is column c + skip of src
        for ca in range(i0, i1, _CHUNK):
            cb = min(ca + _CHUNK, i1)
            if not direct:
                for rr in range(cb - ca + m0 - 1):
                    r = ca - lo0 + rr
                    if 0 <= r < big0:
                        pad[rr, c0:c1] = x[r, c0 - lo1:c1 - lo1]
            for i in range(ca, cb):
                rs = out[i]
                rs[:] = 0
                for a in range(m0):
                    r = i + a - lo0
                    if r < 0 or r >= big0:
                        continue
                    xs = src[r if direct else i - ca + a, skip:]
                    taps = k[a]
                    if width:
                        for j in range(n1):
                            acc = rs[j]
                            for b in range(width):
                                acc += taps[b] * xs[j + b]
                            rs[j] = acc
                        continue
                    b = 0  # blocks of `block` taps summed in registers, then the rest
                    while b + block <= m1:
                        tb = taps[b:b + block]
                        xb = xs[b:b + n1 + block - 1]
                        for j in range(n1):
                            acc = rs[j]
                            for c in range(block):
                                acc += tb[c] * xb[j + c]
                            rs[j] = acc
                        b += block
                    if rest:  # m1 == b + rest
                        tr = taps[b:]
                        xb = xs[b:b + n1 + rest - 1]
                        for j in range(n1):
                            acc = rs[j]
                            for c in range(rest):
                                acc += tr[c] * xb[j + c]
                            rs[j] = acc

    return band


@numba.njit(nogil=True, cache=True, inline="always")
def _inside_columns(n1, big1, m1, lo1):  # pragma: no cover - compiled by Numba
    """``(jlo, jhi)``: the output columns whose window of ``m1`` columns lies inside a row of
    ``big1`` (``lo1`` padded columns before it, ``n1`` outputs). :func:`_small_interior` fills
    them and :func:`_small_edges` the rest, so both take the span from here."""
    jlo = min(max(lo1, 0), n1)
    return jlo, max(min(n1, big1 - m1 + 1 + lo1), jlo)


@functools.cache
def _small_interior(m0: int, m1: int, chunk: int):
    """The outputs of an ``m0`` x ``m1`` kernel whose window lies inside ``x``, in rows
    ``i0:i1``: :func:`_band`'s sums in its order (bit for bit), in one pass over the output row
    per ``chunk`` kernel rows, each adding ``chunk * m1`` taps in registers (every loop has a
    constant length). Alone in its function: with the edge loops beside it, LLVM vectorised it
    worse (docs/performance.md, "Host engines"). Needs ``lo1 >= 0``. Takes a stack of images
    (``images``, ``outs``: 3-D) and fills rows ``i0:i1`` of each."""

    @numba.njit(nogil=True, cache=True, boundscheck=False)
    def interior(images, k, lo0, lo1, outs, i0, i1):  # pragma: no cover - compiled by Numba
        zero = k.dtype.type(0)
        for g in range(images.shape[0]):
            x, out = images[g], outs[g]
            n1 = out.shape[1]
            big0, big1 = x.shape
            jlo, jhi = _inside_columns(n1, big1, m1, lo1)
            n = jhi - jlo
            if n <= 0:
                continue
            for i in range(max(i0, lo0), min(i1, big0 - m0 + 1 + lo0)):
                rs = out[i, jlo:jhi]
                xs = x[i - lo0:i - lo0 + m0]  # its columns from jlo - lo1 == 0
                for j in range(n):  # the first kernel rows, from +0.0
                    acc = zero
                    for a in range(chunk):
                        for b in range(m1):
                            acc += k[a, b] * xs[a, j + b]
                    rs[j] = acc
                for a0 in range(chunk, m0, chunk):
                    for j in range(n):
                        acc = rs[j]
                        for a in range(a0, min(a0 + chunk, m0)):
                            for b in range(m1):
                                acc += k[a, b] * xs[a, j + b]
                        rs[j] = acc

    return interior


@functools.cache
def _small_edges(m0: int, m1: int):
    """The outputs of rows ``i0:i1`` that :func:`_small_interior` leaves, in :func:`_band`'s
    order: the whole rows whose window leaves ``x``, and the few edge columns of the others.
    Each part reads a zero-padded copy of what it needs (for the columns, transposed: the loop
    then runs down a column), through constant-length tap loops summed in registers. The
    zeros add ``0 * tap``, which is +0 or -0 for a finite tap and leaves a sum started from +0
    as it is (such a sum is never -0), so the bits are those of skipping the taps outside
    ``x``. A stack of images, as :func:`_small_interior`."""

    @numba.njit(nogil=True, cache=True, boundscheck=False)
    def edges(images, k, lo0, lo1, outs, i0, i1):  # pragma: no cover - compiled by Numba
        zero = k.dtype.type(0)
        for g in range(images.shape[0]):
            x, out = images[g], outs[g]
            n1 = out.shape[1]
            big0, big1 = x.shape
            jlo, jhi = _inside_columns(n1, big1, m1, lo1)
            # rows ilo:ihi have their window's rows inside x; with no column inside, none does
            ilo = min(max(i0, lo0), i1) if jhi > jlo else i1
            ihi = max(min(i1, big0 - m0 + 1 + lo0), ilo)
            width = n1 + m1 - 1  # a padded row: its column c is column c - lo1 of x
            c0 = min(max(lo1, 0), width)
            c1 = max(min(width, big1 + lo1), c0)
            for part in range(2):  # the whole rows above ilo and from ihi
                ra = i0 if part == 0 else ihi
                rb = ilo if part == 0 else i1
                if rb <= ra:
                    continue
                block = np.zeros((rb - ra + m0 - 1, width), dtype=x.dtype)
                for rr in range(block.shape[0]):
                    r = ra - lo0 + rr
                    if 0 <= r < big0:
                        block[rr, c0:c1] = x[r, c0 - lo1:c1 - lo1]
                for i in range(ra, rb):
                    row = out[i]
                    for j in range(n1):
                        acc = zero
                        for a in range(m0):
                            for b in range(m1):
                                acc += k[a, b] * block[i - ra + a, j + b]
                        row[j] = acc
            # the edge columns of rows ilo:ihi, down the column
            rows = ihi - ilo
            if rows <= 0 or jhi <= jlo:
                continue
            col = np.empty(rows, dtype=out.dtype)
            for side in range(2):
                ja = 0 if side == 0 else jhi
                jb = jlo if side == 0 else n1
                if jb <= ja:
                    continue
                cx = ja - lo1  # column c of the strip is column cx + c of x
                strip = np.zeros((jb - ja + m1 - 1, rows + m0 - 1), dtype=x.dtype)
                s0 = min(max(-cx, 0), strip.shape[0])
                s1 = max(min(strip.shape[0], big1 - cx), s0)
                for r in range(rows + m0 - 1):
                    src = x[ilo - lo0 + r]
                    for c in range(s0, s1):
                        strip[c, r] = src[cx + c]
                for j in range(ja, jb):
                    e = j - ja
                    for r in range(rows):
                        acc = zero
                        for a in range(m0):
                            for b in range(m1):
                                acc += k[a, b] * strip[e + b, r + a]
                        col[r] = acc
                    for r in range(rows):
                        out[ilo + r, j] = col[r]

    return edges


@functools.cache
def _separable_band(width: int):
    """The band function of a separable kernel ``outer(ky, kx)`` whose row factor has ``width``
    taps (``0``: any width): per output row, the column pass into a row buffer (every image row
    the window reaches, times its ``ky`` tap, added in ``ky``'s order: eight rows, then four,
    then one per pass over the buffer, each sum in registers), then the 2-D loop's row pass
    over the buffer with ``kx``. Returns ``0.0``, or ``inf`` where an output in ``out[i0:i1]``
    is NaN or infinite (S9: the caller then runs the plan's own method). That test is an
    ``and`` of comparisons, which vectorises; a running float sum (the earlier test) cannot
    and took as long as the filter itself."""

    @numba.njit(nogil=True, cache=True, boundscheck=False)
    def band(x, ky, kx, lo0, lo1, out, i0, i1):  # pragma: no cover - compiled by Numba
        n1 = out.shape[1]
        big0, big1 = x.shape
        m0, m1 = ky.shape[0], kx.shape[0]
        jlo = min(max(lo1, 0), n1)
        jhi = max(min(n1, big1 - m1 + 1 + lo1), jlo)
        n = jhi - jlo
        src = np.empty(big1, dtype=out.dtype)
        largest = np.finfo(out.dtype).max
        finite = True
        for i in range(i0, i1):
            src[:] = 0
            a = max(0, lo0 - i)  # the kernel rows whose image row exists: a .. end - 1
            end = min(m0, big0 + lo0 - i)
            while a + 8 <= end:
                r = i + a - lo0
                t0, t1, t2, t3 = ky[a], ky[a + 1], ky[a + 2], ky[a + 3]
                t4, t5, t6, t7 = ky[a + 4], ky[a + 5], ky[a + 6], ky[a + 7]
                x0, x1, x2, x3 = x[r], x[r + 1], x[r + 2], x[r + 3]
                x4, x5, x6, x7 = x[r + 4], x[r + 5], x[r + 6], x[r + 7]
                for j in range(big1):
                    acc = src[j] + t0 * x0[j]
                    acc += t1 * x1[j]
                    acc += t2 * x2[j]
                    acc += t3 * x3[j]
                    acc += t4 * x4[j]
                    acc += t5 * x5[j]
                    acc += t6 * x6[j]
                    src[j] = acc + t7 * x7[j]
                a += 8
            while a + 4 <= end:
                r = i + a - lo0
                t0, t1, t2, t3 = ky[a], ky[a + 1], ky[a + 2], ky[a + 3]
                x0, x1, x2, x3 = x[r], x[r + 1], x[r + 2], x[r + 3]
                for j in range(big1):
                    acc = src[j] + t0 * x0[j]
                    acc += t1 * x1[j]
                    acc += t2 * x2[j]
                    src[j] = acc + t3 * x3[j]
                a += 4
            while a < end:
                xr = x[i + a - lo0]
                kv = ky[a]
                for j in range(big1):
                    src[j] += kv * xr[j]
                a += 1
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
            inside = True  # False for NaN too: every comparison with NaN is False
            for j in range(n1):
                inside &= abs(row[j]) <= largest
            finite &= inside
        return 0.0 if finite else np.inf

    return band


@functools.cache
def _volume_band(width: int, rest: int = 0):
    """The 3-D band function for kernels of ``width`` taps along the last axis (``0``: any
    width whose taps beyond the last block of 8 number ``rest``): planes ``p0:p1`` of the valid
    correlation of a padded volume (the caller pads it: every tap meets a value, so no tap is
    skipped and the loop has no edge cases). Each
    output row starts from ``+0.0`` and adds one kernel row after another (kernel planes, then
    rows, then taps: S1's sum in a fixed order), each in one vectorised pass over the output
    row that sums its taps in registers."""

    @numba.njit(nogil=True, cache=True, boundscheck=False)
    def band(x, k, out, p0, p1):  # pragma: no cover - compiled by Numba
        m0, m1, m2 = k.shape
        n1, n2 = out.shape[1], out.shape[2]
        for p in range(p0, p1):
            for i in range(n1):
                rs = out[p, i]
                rs[:] = 0
                for c in range(m0):
                    for a in range(m1):
                        xs = x[p + c, i + a]
                        taps = k[c, a]
                        if width:
                            for j in range(n2):
                                acc = rs[j]
                                for b in range(width):
                                    acc += taps[b] * xs[j + b]
                                rs[j] = acc
                            continue
                        b = 0  # blocks of 8 taps summed in registers, then the rest
                        while b + 8 <= m2:
                            t0, t1, t2, t3 = taps[b], taps[b + 1], taps[b + 2], taps[b + 3]
                            t4, t5, t6, t7 = taps[b + 4], taps[b + 5], taps[b + 6], taps[b + 7]
                            xb = xs[b:b + n2 + 7]
                            for j in range(n2):
                                acc = rs[j] + t0 * xb[j]
                                acc += t1 * xb[j + 1]
                                acc += t2 * xb[j + 2]
                                acc += t3 * xb[j + 3]
                                acc += t4 * xb[j + 4]
                                acc += t5 * xb[j + 5]
                                acc += t6 * xb[j + 6]
                                rs[j] = acc + t7 * xb[j + 7]
                            b += 8
                        if rest:  # m2 == b + rest
                            tr = taps[b:]
                            xb = xs[b:b + n2 + rest - 1]
                            for j in range(n2):
                                acc = rs[j]
                                for t in range(rest):
                                    acc += tr[t] * xb[j + t]
                                rs[j] = acc

    return band


def volume(width: int):
    """The compiled band function of 3-D kernels whose rows have ``width`` taps:
    ``band(x, k, out, p0, p1)`` fills the planes ``out[p0:p1]`` of ``VALIDCORR(x, k)``."""
    return _volume_band(width) if width <= UNROLLED else _volume_band(0, width % 8)


def rows(width: int, block: int = 8):
    """The compiled band function for kernels of ``width`` columns:
    ``band(x, k, lo0, lo1, out, i0, i1)`` fills ``out[i0:i1]``. Kernels wider than
    :data:`UNROLLED` add ``block`` taps in registers per pass (the bits are the same for any
    ``block``: every pass continues the same sum in the same order)."""
    return _band(width) if width <= UNROLLED else _band(0, width % block, block)


def small(m0: int, m1: int, dtype, pass_taps: int | None = None) -> object | None:
    """A band function for ``m0`` x ``m1`` kernels in ``dtype`` (float32/float64; the same
    signature and bits as :func:`rows`): :func:`_small_interior`, then :func:`_small_edges`
    (two compiled calls, about 1 us each); ``None`` above :data:`SMALL` rows or columns. Needs
    ``lo1 >= 0``. ``x`` and ``out`` may also be stacks of images (3-D, rows ``i0:i1`` of every
    image): a group of small images then costs two compiled calls, not two per image. Each
    pass over an output row adds whole kernel rows, up to ``pass_taps`` taps (default
    ``SMALL_PASS_TAPS`` of the dtype; the bits are the same for any count)."""
    if not (1 <= m0 <= SMALL and 1 <= m1 <= SMALL):
        return None
    char = np.dtype(dtype).char
    return _small_band(m0, m1, SMALL_PASS_TAPS[char] if pass_taps is None else pass_taps)


@functools.cache
def _small_band(m0: int, m1: int, pass_taps: int):
    """:func:`small`'s band function, made once per shape and pass size (every call asks)."""
    chunk = max(1, min(m0, pass_taps // m1))
    interior, edges = _small_interior(m0, m1, chunk), _small_edges(m0, m1)

    def band(x, k, lo0, lo1, out, i0, i1):
        if x.ndim == 2:  # one image
            x, out = x[None], out[None]
        interior(x, k, lo0, lo1, out, i0, i1)
        edges(x, k, lo0, lo1, out, i0, i1)

    return band


def separable(width: int):
    """The compiled band function of separable kernels whose row factor has ``width`` taps:
    ``band(x, ky, kx, lo0, lo1, out, i0, i1)`` fills ``out[i0:i1]`` and returns ``0.0``, or
    ``inf`` where one of those outputs is not finite."""
    return _separable_band(width if width <= SEPARABLE_UNROLLED else 0)
