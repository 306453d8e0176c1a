"""Direct convolution on JAX: fused shifted multiply-adds (XLA:CPU tuning) and ``lax.conv``.

The constants below are the tuning of XLA:CPU's direct loops; how they were measured is in
docs/performance.md.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from convkit.plan import Plan

from ._common import (
    _complex,
    _no_pad,
    _precision,
    _zero_padded,
)

# up to this many taps direct is unrolled into fused shifted multiply-adds
_UNROLL_TAPS = 64
# taps unrolled inside one iteration of the direct loop for larger kernels
_CHUNK = 64
# a CPU direct is cut into at most this many concurrent pieces, each of at least this many MACs
# (fixed numbers: the cut never depends on the number of cores, S8; 4 pieces measured best for
# the tap loop on 2 cores, 8 pieces 2-3x slower there; the unrolled interior rows are split
# over all cores by XLA itself)
_MAX_PIECES = 4
_PIECE_WORK = 1 << 18
# rows per piece in the interior of a cut 1-D direct (XLA partitions the rows over its threads)
_ROWS_PER_PIECE = 4
# constant-boundary direct calls with small outputs or few taps pad each tap's term so XLA runs
# ONE fused kernel with no padded temporary (with many taps on large outputs the per-element
# padding branches cost more than the saved pass and allocation)
_ONE_KERNEL_OUT = 1 << 12
_ONE_KERNEL_TAPS = 16
# XLA:CPU partitions fused loops with several rows over its threads by itself
_XLA_SPLITS_ROWS = True




class DirectMixin:
    """The direct method of :class:`~convkit.backends.jax.JaxBackend`."""

    def direct_jax(self, plan: Plan, platform: str, x, w):
        """Valid correlation of ``pad(x)`` with ``dilate(w)``, strided, exact for integers.

        XLA's CPU convolution is slow for single-channel data (3-10 ns per multiply-add,
        measured), so on CPU direct is shifted multiply-adds that XLA fuses: unrolled up to
        ``_UNROLL_TAPS`` taps, else a ``fori_loop`` over blocks of taps (never XLA's
        convolution on CPU: its sums depend on the thread count). Elementwise products
        are full precision on every device (S6). On accelerators, floats with many taps use
        ``lax.conv_general_dilated`` (cuDNN); integers there loop too (cuDNN has no integer
        convolution). On CPU a large fused direct is cut into independent pieces along one
        output axis (:func:`_pieces`: by the shapes alone), which XLA:CPU runs concurrently on
        its thread pool (one fused loop runs on one core); with a constant boundary the outputs
        whose windows lie inside ``x`` are read from ``x`` itself in rows, and only the two
        edges are padded.
        """
        kind = plan.acc_dtype.kind
        if plan.taps > _UNROLL_TAPS and kind in "fc" and platform != "cpu":
            # never on CPU: XLA:CPU's convolution sums in an order that depends on its thread
            # count (the same float32 call differs between 1 and 2 cores), and its float64
            # kernel reads past its input and can segfault (README)
            return self._conv_any(plan, x, w)
        if platform == "cpu":
            cut = _pieces(plan)
            if cut is not None:
                return self._fused_in_pieces(plan, x, w, *cut)
        return self._fused(plan, x, w)

    def _fused(self, plan: Plan, x, w):
        """Direct as multiply-adds XLA fuses: unrolled taps, or a loop over blocks of taps."""
        if plan.taps <= _UNROLL_TAPS:
            if (plan.boundary == "constant" and plan.acc_dtype.kind != "b"
                    and (math.prod(plan.out_shape) <= _ONE_KERNEL_OUT or plan.taps <= _ONE_KERNEL_TAPS)):
                return self._direct_padded_terms(plan, x, w)
            return self.direct(plan, x, w)
        if plan.acc_dtype.kind == "b":  # sum of products != 0, counted exactly in int32
            i32 = np.dtype(np.int32)
            return self._tap_loop(plan, x.astype(i32), w.astype(i32), i32) != 0
        return self._tap_loop(plan, x, w, plan.acc_dtype)

    def _direct_padded_terms(self, plan: Plan, x, w):
        """Unrolled direct for a constant boundary with every tap's term padded on its own.

        Term ``t`` is ``pad(x[slice_t], pads_t, fill) * w[t]``: no padded copy of ``x`` is
        shared by the taps, so XLA fuses the whole sum into ONE loop (no separate pad pass:
        the overhead of one kernel instead of two, which is what small calls pay).
        """
        import itertools

        from jax import lax

        fill = lax.convert_element_type(plan.fillvalue, x.dtype)
        acc = None
        for tap in itertools.product(*(range(w.shape[a]) for a in plan.axes)):
            xi = [slice(None)] * x.ndim
            wi = [slice(None)] * w.ndim
            config = [(0, 0, 0)] * x.ndim
            for i, a in enumerate(plan.axes):
                n, n_out, s = x.shape[a], plan.out_shape[a], plan.stride[i]
                first = tap[i] * plan.dilation[i] - plan.pads[i][0]  # x index read by output 0
                o0 = min(n_out, max(0, -(first // s)))            # first output inside x
                o1 = min(n_out, max(o0, -((first - n) // s)))     # one past the last inside
                # no output inside x: an empty slice, padded to all fill values
                xi[a] = slice(first + o0 * s, first + (o1 - 1) * s + 1, s) if o1 > o0 else slice(0, 0)
                config[a] = (o0, n_out - o1, 0)
                wi[a] = slice(tap[i], tap[i] + 1)
            part = x[tuple(xi)]
            if any(c != (0, 0, 0) for c in config):
                part = lax.pad(part, fill, config)
            term = part * w[tuple(wi)]
            acc = term if acc is None else acc + term
        return self.xp.broadcast_to(acc, plan.out_shape)

    def _fused_in_pieces(self, plan: Plan, x, w, axis: int, bounds):
        """:meth:`_fused` on independent slabs of the output along ``axis``, concatenated.

        Where most windows along ``axis`` lie inside ``x`` (:func:`_interior`), those outputs
        are computed from ``x`` itself in rows (:meth:`_interior_rows`) and only the two
        edges from the padded input: no padded copy of ``x`` and no per-element padding
        branches in the long loop.
        """
        inner = _interior(plan, axis)
        if inner is None:
            xpad = self.pad(plan, x)
            outs = [self._piece(plan, xpad, w, axis, lo, hi) for lo, hi in bounds]
        else:
            lo, hi = inner
            rows = _ROWS_PER_PIECE * len(bounds)
            hi = lo + (hi - lo) // rows * rows
            outs = [self._edge(plan, x, w, axis, 0, lo) if lo else None,
                    self._interior_rows(plan, x, w, axis, lo, hi, rows) if hi > lo else None,
                    self._edge(plan, x, w, axis, hi, plan.out_shape[axis])
                    if hi < plan.out_shape[axis] else None]
        return self.xp.concatenate([o for o in outs if o is not None], axis=axis)

    def _piece(self, plan: Plan, xpad, w, axis: int, lo: int, hi: int):
        """Outputs ``lo:hi`` along ``axis`` of the direct of ``plan`` from the padded input."""
        xi = [slice(None)] * xpad.ndim
        wi = [slice(None)] * w.ndim
        if axis in plan.axes:
            i = plan.axes.index(axis)
            reach = plan.effective_kernel[i]
            xi[axis] = slice(lo * plan.stride[i], (hi - 1) * plan.stride[i] + reach)
        else:  # a broadcast axis: slice whichever operand is not of size 1 there
            if xpad.shape[axis] > 1:
                xi[axis] = slice(lo, hi)
            if w.shape[axis] > 1:
                wi[axis] = slice(lo, hi)
        shape = list(plan.out_shape)
        shape[axis] = hi - lo
        piece = dataclasses.replace(_no_pad(plan), out_shape=tuple(shape))
        return self._fused(piece, xpad[tuple(xi)], w[tuple(wi)])

    def _edge(self, plan: Plan, x, w, axis: int, lo: int, hi: int):
        """:meth:`_piece` for a constant boundary, padding only the part of ``x`` it reads
        (XLA would otherwise write the whole padded input for two short edges)."""
        from jax import lax

        i = plan.axes.index(axis)
        n, pad_lo = x.shape[axis], plan.pads[i][0]
        a = lo * plan.stride[i] - pad_lo                               # first x index read
        b = (hi - 1) * plan.stride[i] + plan.effective_kernel[i] - pad_lo  # one past the last
        xi = [slice(None)] * x.ndim
        xi[axis] = slice(min(n, max(0, a)), max(0, min(n, b)))
        config = [(0, 0, 0)] * x.ndim
        config[axis] = (max(0, -a) - max(0, a - n), max(0, b - n) - max(0, -b), 0)
        part = lax.pad(x[tuple(xi)], lax.convert_element_type(plan.fillvalue, x.dtype), config)
        return self._piece(plan, part, w, axis, 0, hi - lo)

    def _interior_rows(self, plan: Plan, x, w, axis: int, lo: int, hi: int, rows: int):
        """Outputs ``lo:hi`` along ``axis``, whose windows lie inside ``x``, as ``rows`` rows.

        Each tap's term is a strided slice of ``x`` itself (no padding) with ``axis`` split
        into ``(rows, (hi - lo) // rows)``: XLA:CPU runs a fused loop over several rows on all
        its threads, and the reshape is only index arithmetic inside the fusion. The terms are
        summed pairwise (shorter dependency chains than one running sum).
        """
        import itertools

        jnp = self.xp
        length = (hi - lo) // rows
        terms = []
        for tap in itertools.product(*(range(w.shape[a]) for a in plan.axes)):
            xi = [slice(None)] * x.ndim
            wi = [slice(None)] * w.ndim
            for i, a in enumerate(plan.axes):
                first = tap[i] * plan.dilation[i] - plan.pads[i][0]  # x index read by output 0
                s, n_out = plan.stride[i], (hi - lo if a == axis else plan.out_shape[a])
                start = first + (lo if a == axis else 0) * s
                xi[a] = slice(start, start + (n_out - 1) * s + 1, s)
                wi[a] = slice(tap[i], tap[i] + 1)
            part = x[tuple(xi)]
            part = part.reshape(part.shape[:axis] + (rows, length) + part.shape[axis + 1:])
            tw = w[tuple(wi)]
            terms.append(part * tw.reshape(tw.shape[:axis] + (1, 1) + tw.shape[axis + 1:]))
        while len(terms) > 1:
            terms = [terms[i] + terms[i + 1] if i + 1 < len(terms) else terms[i]
                     for i in range(0, len(terms), 2)]
        shape = list(plan.out_shape)
        shape[axis] = hi - lo
        acc = terms[0].reshape(terms[0].shape[:axis] + (hi - lo,) + terms[0].shape[axis + 2:])
        return jnp.broadcast_to(acc, tuple(shape))

    def _conv_any(self, plan: Plan, x, w):
        """``lax.conv_general_dilated`` for float or complex (as four real convolutions)."""
        if plan.acc_dtype.kind != "c":
            return self._conv(plan, x, w, plan.acc_dtype)
        jnp = self.xp
        plan_r = plan
        if plan.boundary == "constant" and plan.fillvalue != 0:
            x, plan_r = self.pad(plan, x), _no_pad(plan)
        xr, xi, wr, wi = jnp.real(x), jnp.imag(x), jnp.real(w), jnp.imag(w)
        real = xr.dtype
        rr = self._conv(plan_r, xr, wr, real)
        ii = self._conv(plan_r, xi, wi, real)
        ri = self._conv(plan_r, xr, wi, real)
        ir = self._conv(plan_r, xi, wr, real)
        return _complex(rr - ii, ri + ir, plan.acc_dtype)

    def _conv(self, plan: Plan, x, w, acc):
        """One ``lax.conv_general_dilated`` for real or integer ``x`` and ``w``.

        Non-convolution axes map to lax dims: kernel size 1 -> batch (N); equal sizes ->
        feature groups; input size 1 -> output features. No data is copied to broadcast.
        """
        from jax import lax

        jnp = self.xp
        if plan.boundary == "constant" and plan.fillvalue == 0:
            x, padding = _zero_padded(x, plan.pads, plan.axes)  # cuDNN skips padded positions (S9)
        else:
            x = self.pad(plan, x)
            padding = [(0, 0)] * len(plan.axes)
        conv = list(plan.axes)
        others = [a for a in range(plan.ndim) if a not in plan.axes]
        n_ax = [a for a in others if w.shape[a] == 1]                   # kernel shared
        g_ax = [a for a in others if w.shape[a] > 1 and x.shape[a] > 1]  # paired (equal sizes)
        f_ax = [a for a in others if w.shape[a] > 1 and x.shape[a] == 1]  # one input, many kernels
        n = math.prod(x.shape[a] for a in n_ax)
        g = math.prod(x.shape[a] for a in g_ax)
        f = math.prod(w.shape[a] for a in f_ax)
        spatial_x = tuple(x.shape[a] for a in conv)
        spatial_w = tuple(w.shape[a] for a in conv)
        lhs = jnp.transpose(x, n_ax + g_ax + f_ax + conv).reshape((n, g) + spatial_x)
        rhs = jnp.transpose(w, g_ax + f_ax + n_ax + conv).reshape((g * f, 1) + spatial_w)
        out = lax.conv_general_dilated(
            lhs, rhs, window_strides=plan.stride, padding=padding, rhs_dilation=plan.dilation,
            feature_group_count=g, precision=_precision(plan.precision),
            preferred_element_type=acc,
        ).astype(acc)
        sizes = ([x.shape[a] for a in n_ax] + [x.shape[a] for a in g_ax] + [w.shape[a] for a in f_ax]
                 + list(out.shape[2:]))
        order = n_ax + g_ax + f_ax + conv
        return jnp.transpose(out.reshape(sizes), tuple(int(i) for i in np.argsort(order)))

    def _tap_loop(self, plan: Plan, x, w, acc_dtype):
        """Direct correlation as a ``fori_loop`` over blocks of taps.

        A block is up to ``_CHUNK`` taps of the last two convolution axes. Each iteration
        takes ONE dynamic slice of the padded input and unrolls the block's taps as static
        shifts of it, so XLA fuses the block into one pass over the output.
        """
        import itertools

        from jax import lax

        jnp = self.xp
        xpad = self.pad(plan, x)
        d = len(plan.axes)
        spans = [(plan.out_shape[a] - 1) * s + 1 for a, s in zip(plan.axes, plan.stride)]
        ksize = [w.shape[a] for a in plan.axes]
        block = [1] * d
        block[-1] = min(ksize[-1], _CHUNK)
        if d >= 2:
            block[-2] = min(ksize[-2], max(1, _CHUNK // block[-1]))
        # per axis: (first tap, taps per block, number of blocks) for the full blocks and the rest
        parts = []
        for m, b in zip(ksize, block):
            p = [(0, b, m // b)]
            if m % b:
                p.append(((m // b) * b, m % b, 1))
            parts.append(p)

        def run(acc, part):
            grid = [n for _, _, n in part]

            def body(flat, acc):
                idx = jnp.unravel_index(flat, grid) if d > 1 else (flat,)
                start, size = [0] * x.ndim, list(xpad.shape)
                wstart, wsize = [0] * w.ndim, list(w.shape)
                for i, a in enumerate(plan.axes):
                    first, count, _ = part[i]
                    base = first + idx[i] * count
                    start[a], size[a] = base * plan.dilation[i], spans[i] + (count - 1) * plan.dilation[i]
                    wstart[a], wsize[a] = base, count
                xs = lax.dynamic_slice(xpad, start, size)
                ws = lax.dynamic_slice(w, wstart, wsize)
                for offs in itertools.product(*(range(c) for _, c, _ in part)):
                    xi = [slice(None)] * x.ndim
                    wi = [slice(None)] * w.ndim
                    for i, a in enumerate(plan.axes):
                        o = offs[i] * plan.dilation[i]
                        xi[a] = slice(o, o + spans[i], plan.stride[i])
                        wi[a] = slice(offs[i], offs[i] + 1)
                    acc = acc + xs[tuple(xi)] * ws[tuple(wi)]
                return acc

            return lax.fori_loop(0, math.prod(grid), body, acc)

        acc = jnp.zeros(plan.out_shape, acc_dtype)
        for part in itertools.product(*parts):
            acc = run(acc, part)
        return acc



def _pieces(plan: Plan) -> tuple[int, list[tuple[int, int]]] | None:
    """Where to cut a large CPU direct into concurrent pieces: ``(axis, [(lo, hi), ...])``.

    XLA:CPU already runs a fused loop with many rows on all cores (it partitions the outer
    dimensions), but a long 1-D loop on one; so only outputs with fewer rows than pieces are
    cut, along the outermost axis long enough. The cut depends on the plan alone, never on
    the number of cores (S8: the same bits on any machine; a cut changes how the interior is
    summed): one piece per ``_PIECE_WORK`` multiply-adds, at most ``_MAX_PIECES``, and not
    cut below 2 pieces. One core runs the pieces one after the other (still faster: the
    interior rows need no padding branches).
    """
    work = math.prod(plan.out_shape) * plan.taps
    n = min(_MAX_PIECES, work // _PIECE_WORK) if _PIECE_WORK else _MAX_PIECES
    if n < 2:
        return None
    if _XLA_SPLITS_ROWS and math.prod(plan.out_shape[:-1]) >= n:
        return None
    for axis, size in enumerate(plan.out_shape):
        if size >= 2 * n:
            edges = [round(i * size / n) for i in range(n + 1)]
            return axis, list(zip(edges[:-1], edges[1:]))
    return None


def _interior(plan: Plan, axis: int) -> tuple[int, int] | None:
    """Outputs ``(lo, hi)`` along ``axis`` whose windows lie inside ``x``, where
    :meth:`JaxBackend._interior_rows` applies: unrolled taps, not bool, a constant
    boundary, ``axis`` a convolution axis, no padding on the other convolution axes, and at
    least half the outputs inside. Else ``None``."""
    if (axis not in plan.axes or plan.taps > _UNROLL_TAPS or plan.acc_dtype.kind == "b"
            or plan.boundary != "constant"):
        return None
    if any(p != (0, 0) for a, p in zip(plan.axes, plan.pads) if a != axis):
        return None
    i = plan.axes.index(axis)
    s, pad_lo, n = plan.stride[i], plan.pads[i][0], plan.x_shape[axis]
    n_out = plan.out_shape[axis]
    lo = min(n_out, max(0, -(-pad_lo // s)))                              # first read >= 0
    hi = min(n_out, max(lo, (n - plan.effective_kernel[i] + pad_lo) // s + 1))  # last read < n
    if 2 * (hi - lo) < n_out:
        return None
    return lo, hi


