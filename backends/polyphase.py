"""A dilated correlation as undilated correlations of the input's phases (S1).

With dilation ``d`` on an axis (stride 1), output ``i`` reads ``x[i + t*d]`` for the taps
``t``: the outputs ``i = j*d + r`` read only the inputs ``x[r::d]`` (phase ``r``), and output
``j*d + r`` is output ``j`` of ``VALIDCORR(x[r::d], w)``, the *undilated* kernel. So a
dilated call is one call of ``M`` taps per output on the ``d`` phases laid side by side,
instead of a call whose kernel is the dilated one, ``(M - 1) * d + 1`` long with zeros in
between. The
sums are those of S1: the zeros a dilation inserts are not taps, and no zero meets a NaN.

Why it matters: ``scipy.ndimage.correlate`` and ``numpy.convolve`` take the dilated kernel,
and their cost grows with its length, not with the taps (``ndimage`` sets up offsets for
every position of its footprint: 20 s for a 3x3 kernel with dilation 200 on a 50x50 image).
The phases go to the same engines as any undilated call (Numba's loops, OpenCV, ndimage).

:func:`whole_periods` gives the pads that make each dilated axis whole periods long,
:func:`split` turns the input padded so into a mosaic of its phases, tile ``r`` of a dilated
axis holding ``x[r::d]`` (one copy, the same shape; a 1-D signal, without a copy, into an
image whose columns are its phases) and gives the plan of the one undilated valid call that
runs them all; :func:`merge` drops the outputs that straddle two tiles, interleaves the
others back, crops them and applies the stride. The cost of this path is
:func:`convkit.choose.phases_cost`.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from convkit.plan import Plan

__all__ = ["applies", "stride1_outputs", "whole_periods", "split", "merge"]


def applies(plan: Plan) -> bool:
    """Whether the plan has a dilation to split (shapes only): a dilation above 1, a
    non-empty input, and a kernel of size 1 on every axis that is not convolved."""
    return (any(d > 1 for d in plan.dilation) and not plan.scalar and math.prod(plan.x_shape) > 0
            and all(plan.k_shape[a] == 1 for a in range(plan.ndim) if a not in plan.axes))


def stride1_outputs(plan: Plan) -> int:
    """Outputs of the plan at stride 1 (shapes only): what a method that computes every
    output and then slices the stride computes."""
    total = 1
    for a in range(plan.ndim):
        if a in plan.axes:
            i = plan.axes.index(a)
            lo, hi = plan.pads[i]
            total *= max(plan.x_shape[a] + lo + hi - plan.effective_kernel[i] + 1, 0)
        else:
            total *= plan.out_shape[a]
    return total


def _dilated(plan: Plan) -> dict[int, int]:
    return {a: d for a, d in zip(plan.axes, plan.dilation) if d > 1}


def whole_periods(plan: Plan) -> Plan:
    """The plan with each dilated axis's high pad lengthened to whole periods of its dilation
    (``ArrayBackend.pad`` of it gives the input :func:`split` takes, in one copy). No output
    that :func:`merge` keeps reads the extra samples, whatever the boundary rule puts there."""
    pads = []
    for i, a in enumerate(plan.axes):
        lo, hi = plan.pads[i]
        d = plan.dilation[i]
        pads.append((lo, hi + (-(plan.x_shape[a] + lo + hi) % d if d > 1 else 0)))
    return dataclasses.replace(plan, pads=tuple(pads))


def split(plan: Plan, xpad: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, Plan]:
    """``(phases, kernel, sub_plan)`` for ``VALIDCORR(xpad, dilate(w))`` at stride 1.

    ``xpad`` is the input padded by :func:`whole_periods` (``ArrayBackend.pad``), ``w`` the
    canonical kernel; ``sub_plan`` is one undilated valid correlation of ``phases`` with
    ``kernel``, which any engine runs as one call. ``phases`` is a mosaic of the phases,
    the input's shape (one copy): along a dilated axis of ``b`` periods of ``d``, tile ``r``
    (samples ``r*b`` to ``r*b + b - 1``) holds phase ``x[r::d]``. The outputs whose windows
    straddle two tiles (``M - 1`` per tile) are computed and dropped by :func:`merge`: one call
    on the input's size costs less than a call per phase (a 3x3 kernel with dilation 32 on
    a 512x512 image: 1024 phases of 16x16). A 1-D call needs no copy: the signal as a
    ``(blocks, d)`` image holds phase ``r`` in column ``r``, and an ``(M, 1)`` kernel slides
    down the columns, which the 2-D engines run.
    """
    dil = _dilated(plan)
    if any(xpad.shape[a] % d for a, d in dil.items()):
        raise ValueError("split() takes whole periods of the dilation (whole_periods)")
    if plan.ndim == 1:
        (d,) = plan.dilation
        phases, kernel, axes = xpad.reshape(-1, d), w.reshape(-1, 1), (0, 1)
    else:
        shape, order = [], []
        for a, n in enumerate(xpad.shape):
            if a in dil:
                order += [len(shape) + 1, len(shape)]  # (blocks, d) -> (d, blocks)
                shape += [n // dil[a], dil[a]]
            else:
                order.append(len(shape))
                shape.append(n)
        phases = np.ascontiguousarray(xpad.reshape(shape).transpose(order)).reshape(xpad.shape)
        kernel, axes = w, plan.axes
    out_shape = tuple(n - kernel.shape[a] + 1 if a in axes else n for a, n in enumerate(phases.shape))
    sub = dataclasses.replace(
        plan, scalar=False, swap=False, flip_conj_result=False, ndim=phases.ndim, axes=axes,
        in1_shape=phases.shape, in2_shape=kernel.shape, pads=((0, 0),) * len(axes),
        boundary="constant", fillvalue=0, stride=(1,) * len(axes), dilation=(1,) * len(axes),
        out_shape=out_shape, method="direct", requested_method="direct", nan_safe=False)
    return phases, kernel, sub


def merge(plan: Plan, out: np.ndarray) -> np.ndarray:
    """The plan's result from the phases' result ``out`` (:func:`split`'s layout): output
    ``j*d + r`` of a dilated axis is output ``j`` of tile ``r`` (a 1-D call's image: column
    ``r``); the outputs that straddle two tiles are dropped, then those of the whole periods'
    extra samples, and the stride is applied."""
    if plan.ndim == 1:
        out = out.reshape(-1)  # already in the order j*d + r
    else:
        dil = _dilated(plan)
        shape, strides, order, final = [], [], [], []
        for a, (n, step) in enumerate(zip(out.shape, out.strides)):
            d = dil.get(a, 1)
            if d > 1:
                m = plan.k_shape[a]
                tile = (n + m - 1) // d  # the mosaic's length is n + m - 1
                kept = max(tile - m + 1, 0)  # tile r's outputs start at r*tile of the result
                order += [len(shape) + 1, len(shape)]
                shape += [d, kept]
                strides += [tile * step, step]
                final.append(kept * d)
            else:
                order.append(len(shape))
                shape.append(n)
                strides.append(step)
                final.append(n)
        tiles = np.lib.stride_tricks.as_strided(out, shape, strides, writeable=False)
        out = tiles.transpose(order).reshape(final)
    index = [slice(None)] * plan.ndim
    for i, a in enumerate(plan.axes):
        index[a] = slice(0, (plan.out_shape[a] - 1) * plan.stride[i] + 1, plan.stride[i])
    return out[tuple(index)]
