"""A dilated correlation as undilated correlations of the input's phases (S1).

With dilation ``d`` on an axis (stride 1), output ``i`` reads ``x[i + t*d]`` for the taps
``t``: the outputs ``i = j*d + r`` read only the inputs ``x[r::d]`` (phase ``r``), and output
``j*d + r`` is output ``j`` of ``VALIDCORR(x[r::d], w)``, the *undilated* kernel. So a
dilated call is one call of ``M`` taps per output on a batch of ``d`` phases, instead of a
call whose kernel is the dilated one, ``(M - 1) * d + 1`` long with zeros in between. The
sums are those of S1: the zeros a dilation inserts are not taps, and no zero meets a NaN.

Why it matters: ``scipy.ndimage.correlate`` and ``numpy.convolve`` take the dilated kernel,
and their cost grows with its length, not with the taps (``ndimage`` sets up offsets for
every position of its footprint: 20 s for a 3x3 kernel with dilation 200 on a 50x50 image).
The phases go to the same engines as any undilated call (Numba's loops, OpenCV, ndimage).

:func:`whole_periods` gives the pads that make each dilated axis whole periods long,
:func:`split` turns the input padded so into its phases (a C-contiguous batch, the phase
axes first; a 1-D signal, without a copy, into an image whose columns are its phases) and
gives the plan of the undilated call; :func:`merge` interleaves that
call's result back, crops it and applies the stride.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from convkit.plan import Plan

__all__ = ["applies", "stride1_outputs", "outputs_per_phase", "whole_periods", "split", "merge"]


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


def outputs_per_phase(plan: Plan) -> float:
    """Outputs (at stride 1) that each phase's call computes, on average (shapes only):
    where it is small, a call's fixed cost per image outweighs the taps saved."""
    return stride1_outputs(plan) / math.prod(plan.dilation)


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
    canonical kernel. Each dilated axis is split into ``(blocks, d)`` and its phase axis
    moved to the front, as batch axes (one copy). A 1-D call needs no copy: the signal as
    a ``(blocks, d)`` image holds phase ``r`` in column ``r``, and an ``(M, 1)`` kernel
    slides down the columns, which the 2-D engines run.
    """
    dil = _dilated(plan)
    if any(xpad.shape[a] % d for a, d in dil.items()):
        raise ValueError("split() takes whole periods of the dilation (whole_periods)")
    if plan.ndim == 1:
        (d,) = plan.dilation
        phases, kernel, axes = xpad.reshape(-1, d), w.reshape(-1, 1), (0, 1)
    else:
        shape, phase_axes = [], []
        for a, n in enumerate(xpad.shape):
            if a in dil:
                phase_axes.append(len(shape) + 1)
                shape += [n // dil[a], dil[a]]
            else:
                shape.append(n)
        nd = len(phase_axes)
        phases = np.ascontiguousarray(np.moveaxis(xpad.reshape(shape), phase_axes, range(nd)))
        kernel = w.reshape((1,) * nd + w.shape)
        axes = tuple(a + nd for a in plan.axes)
    out_shape = tuple(n - kernel.shape[a] + 1 if a in axes else n for a, n in enumerate(phases.shape))
    sub = dataclasses.replace(
        plan, scalar=False, swap=False, flip_conj_result=False, ndim=phases.ndim, axes=axes,
        in1_shape=phases.shape, in2_shape=kernel.shape, pads=((0, 0),) * len(axes),
        boundary="constant", fillvalue=0, stride=(1,) * len(axes), dilation=(1,) * len(axes),
        out_shape=out_shape, method="direct", requested_method="direct", nan_safe=False)
    return phases, kernel, sub


def merge(plan: Plan, out: np.ndarray) -> np.ndarray:
    """The plan's result from the phases' result ``out`` (:func:`split`'s layout):
    output ``j*d + r`` of a dilated axis is phase ``r``'s output ``j``; then the outputs of
    the whole periods' extra samples are cut off, and the stride is applied."""
    if plan.ndim == 1:
        out = out.reshape(-1)  # already in the order j*d + r
    else:
        dil = _dilated(plan)
        nd = len(dil)
        order, shape, phase = [], [], 0
        for a in range(plan.ndim):
            order.append(a + nd)
            if a in dil:
                order.append(phase)
                phase += 1
            shape.append(out.shape[a + nd] * dil.get(a, 1))
        out = out.transpose(order).reshape(shape)
    index = [slice(None)] * plan.ndim
    for i, a in enumerate(plan.axes):
        index[a] = slice(0, (plan.out_shape[a] - 1) * plan.stride[i] + 1, plan.stride[i])
    return out[tuple(index)]
