"""The default ``conv_layer`` of array-namespace backends (NumPy, CuPy, ArrayBackend plugins).

:func:`convkit.conv` runs :func:`conv_layer` on a backend that has an ``xp`` but no
``conv_layer`` method of its own. Everything is expressed with the backend's array namespace,
array methods and operators (``@``), so the same code runs on NumPy and CuPy:

* layouts: the data is viewed as ``(N, C, *spatial)`` and the kernel as ``(O, C/groups,
  *kernel)`` (transposes), the output is transposed back to the caller's layout;
* direct (S5, S9: every product is formed, padded positions included, so a NaN or Inf reaches
  only the outputs whose window holds it): the padded input is unfolded into patches, then ONE
  batched matrix product per chunk of the batch, ``(groups, O/groups, C/groups * taps) @ (n,
  groups, C/groups * taps, positions)``: BLAS sgemm/dgemm on NumPy, cuBLAS on CuPy. With
  stride 1 every tap's patch row is one contiguous slice of the flattened padded input (the
  rows are computed over the padded width and the extra columns dropped), which makes the
  unfolding a few memcpy-like copies;
* integers are exact with two's-complement wrap-around: when ``max|x| * max|w| * C/groups * taps
  < 2**53`` the GEMM runs in float64 (every partial sum is an exactly representable integer)
  and the result is converted back through int64; otherwise the product runs in the integer
  type itself (NumPy's integer matmul wraps modulo ``2**bits``);
* FFT (``method="fft"``, or ``"auto"`` for large float kernels): one real FFT of each input
  and filter channel, the channel sums as one batched complex matrix product per frequency,
  one inverse FFT per output channel. ``auto``'s FFT falls back to direct when an input is not
  finite or the result overflows (S9).
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np

from convkit.conv import ConvPlan

__all__ = ["conv_layer", "to_canonical", "from_canonical"]

#: the unfolded patches of at most this many bytes exist at once (the batch runs in chunks of images;
#: below glibc's largest mmap threshold, 32 MiB, so the buffer comes from the heap without page faults)
COLS_BYTES = 1 << 24
#: float64 holds every integer below this exactly
_EXACT = 2.0**53


def to_canonical(plan: ConvPlan, x, w):
    """``x`` as ``(N, C, *spatial)`` and ``w`` as ``(O, C/groups, *kernel)`` (views where possible)."""
    r = plan.rank
    if plan.channels_last:
        x = x.transpose((0, r + 1) + tuple(range(1, r + 1)))
    if plan.kernel_last:
        w = w.transpose((r + 1, r) + tuple(range(r)))
    return x, w


def from_canonical(plan: ConvPlan, out):
    """``(N, O, *spatial)`` -> the plan's data layout."""
    if plan.channels_last:
        return out.transpose((0,) + tuple(range(2, plan.rank + 2)) + (1,))
    return out


def conv_layer(be: Any, plan: ConvPlan, x, w, bias):
    """Run ``plan`` on the backend ``be`` (which has ``xp``, ``asarray`` and ``astype``)."""
    with np.errstate(all="ignore"):  # S13: overflow and Inf * 0 on valid input are intended
        x, w = to_canonical(plan, be.asarray(x), be.asarray(w))
        x, w = be.astype(x, plan.acc_dtype), be.astype(w, plan.acc_dtype)
        out = None
        if plan.method == "fft":
            if not plan.nan_safe or (be.all_finite(x) and be.all_finite(w)):
                out = fft_conv(be, plan, x, w)
                if plan.nan_safe and not be.all_finite(out):
                    out = None  # finite data whose transform overflowed: direct (S9)
        if out is None:
            out = direct_conv(be, plan, x, w)
        if bias is not None:
            b = be.astype(be.asarray(bias), plan.acc_dtype)
            out = out + b.reshape((1, plan.out_channels) + (1,) * plan.rank)
        return be.astype(from_canonical(plan, out), plan.out_dtype)


# ----------------------------------------------------------------------------- direct


def _gemm_dtype(be: Any, plan: ConvPlan, x, w) -> np.dtype:
    """The dtype the matrix product runs in: float64 for integers whose every partial sum is
    below 2**53 (exact, and BLAS-fast), else the accumulation dtype itself."""
    acc = plan.acc_dtype
    if acc.kind not in "iu":
        return acc
    f64 = np.dtype(np.float64)
    bound = float(plan.group_in * plan.taps)
    if acc.itemsize > 2:  # int8/int16 products times any realistic channel count stay far below 2**53
        xp = be.xp
        bound *= float(xp.max(xp.abs(be.astype(x, f64)))) * float(xp.max(xp.abs(be.astype(w, f64))))
    else:
        info = np.iinfo(acc)
        bound *= float(max(-info.min, info.max)) ** 2
    return f64 if bound < _EXACT else acc


def _taps(plan: ConvPlan):
    return itertools.product(*(range(k) for k in plan.kernel_spatial))


def direct_conv(be: Any, plan: ConvPlan, x, w):
    """``(N, O, *out_spatial)``: unfolded patches times the filters, one batched GEMM per chunk."""
    xp = be.xp
    gemm = _gemm_dtype(be, plan, x, w)
    x, w = be.astype(x, gemm), be.astype(w, gemm)
    n, c, r = plan.batch, plan.in_channels, plan.rank
    unit = all(s == 1 for s in plan.stride)
    pads = [(0, 0), (0, 0)] + [list(p) for p in plan.pads]
    if unit and r > 1:
        pads[2][1] += 1  # one spare row: the last tap's flat slice may run past the end by < one row
    xpad = xp.pad(x, [tuple(p) for p in pads], mode="constant") if any(map(any, pads)) else x
    sp = xpad.shape[2:]
    if unit:
        row = math.prod(sp[1:])
        length = plan.out_spatial[0] * row  # outputs over the padded width; the extra columns dropped
        xsrc = xpad.reshape((n, c, math.prod(sp)))
        flat = [sum(t * d * math.prod(sp[a + 1:]) for a, (t, d) in enumerate(zip(tap, plan.dilation)))
                for tap in _taps(plan)]
        cols_tail: tuple[int, ...] = (length,)
    else:
        length = math.prod(plan.out_spatial)
        cols_tail = plan.out_spatial
    k = plan.taps
    wm = w.reshape((plan.groups, plan.group_out, plan.group_in * k))
    chunk = max(1, min(n, COLS_BYTES // max(1, c * k * length * np.dtype(gemm).itemsize)))
    # one patch buffer reused by every chunk (a fresh one per chunk would page-fault each time)
    cols = getattr(xp, "empty", xp.zeros)((chunk, c, k) + cols_tail, dtype=gemm)
    matmul = getattr(xp, "matmul", None)
    y = getattr(xp, "empty", xp.zeros)((n, plan.groups, plan.group_out, length), dtype=gemm)
    for n0 in range(0, n, chunk):
        n1 = min(n, n0 + chunk)
        part = cols[:n1 - n0]
        for i, tap in enumerate(_taps(plan)):
            if unit:
                part[:, :, i] = xsrc[n0:n1, :, flat[i]:flat[i] + length]
            else:
                index = tuple(slice(t * d, t * d + (m - 1) * s + 1, s) for t, d, m, s in
                              zip(tap, plan.dilation, plan.out_spatial, plan.stride))
                part[:, :, i] = xpad[(slice(n0, n1), slice(None)) + index]
        patches = part.reshape((n1 - n0, plan.groups, plan.group_in * k, length))
        if matmul is not None:
            matmul(wm, patches, out=y[n0:n1])
        else:  # a namespace without matmul (the strict CuPy emulation): the operator
            y[n0:n1] = wm @ patches
    if unit:
        y = y.reshape((n, plan.out_channels, plan.out_spatial[0]) + tuple(sp[1:]))
        y = y[(slice(None),) * 3 + tuple(slice(0, m) for m in plan.out_spatial[1:])]
        contiguous = getattr(xp, "ascontiguousarray", None)
        y = y if contiguous is None else contiguous(y)
    else:
        y = y.reshape((n, plan.out_channels) + plan.out_spatial)
    if gemm != plan.acc_dtype:  # exact integers held in float64
        y = be.astype(be.astype(y, np.dtype(np.int64)), plan.acc_dtype)
    return y


# ----------------------------------------------------------------------------- FFT


def _dilate(be: Any, plan: ConvPlan, w):
    if all(d == 1 for d in plan.dilation):
        return w
    shape = w.shape[:2] + plan.effective_kernel
    out = be.xp.zeros(shape, dtype=w.dtype)
    out[(slice(None), slice(None)) + tuple(slice(None, None, d) for d in plan.dilation)] = w
    return out


def fft_conv(be: Any, plan: ConvPlan, x, w):
    """``(N, O, *out_spatial)`` through FFTs; the channel sums are products in frequency."""
    xp = be.xp
    r = plan.rank
    axes = tuple(range(2, 2 + r))
    xpad = xp.pad(x, [(0, 0), (0, 0)] + list(plan.pads), mode="constant") if any(map(any, plan.pads)) else x
    wd = xp.flip(_dilate(be, plan, w), axis=axes)
    real = plan.acc_dtype.kind != "c"
    sizes = [be.next_fast_len(p + me - 1, real) for p, me in zip(plan.padded_spatial, plan.effective_kernel)]
    forward, inverse = (be.rfftn, be.irfftn) if real else (be.fftn, be.ifftn)
    fx, fw = forward(xpad, sizes, axes), forward(wd, sizes, axes)
    fshape = fx.shape[2:]
    nf = math.prod(fshape)
    g, gi, go, n = plan.groups, plan.group_in, plan.group_out, plan.batch
    fx = fx.reshape((n, g, gi, nf)).transpose((3, 1, 0, 2))     # (F, G, N, Cg)
    fw = fw.reshape((g, go, gi, nf)).transpose((3, 0, 2, 1))    # (F, G, Cg, Og)
    fy = (fx @ fw).transpose((2, 1, 3, 0)).reshape((n, plan.out_channels) + fshape)
    full = inverse(fy, sizes, axes)
    index = tuple(slice(me - 1, me - 1 + (m - 1) * s + 1, s)
                  for me, m, s in zip(plan.effective_kernel, plan.out_spatial, plan.stride))
    return be.astype(full[(slice(None), slice(None)) + index], plan.acc_dtype)
