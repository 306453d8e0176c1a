"""JAX backend: fused multiply-adds or ``lax.conv_general_dilated`` for direct, ``jnp.fft`` for FFT.

What this module adds to the shared code of :mod:`convkit.backends._base`:

* one jitted function per static :class:`~convkit.plan.Plan` (the plan is a hashable static
  argument), so repeated calls with the same shapes and options never re-trace;
* direct on CPU: shifted multiply-adds that XLA fuses into one loop (unrolled up to
  ``_UNROLL_TAPS`` taps, else a ``fori_loop`` over blocks of taps); long 1-D loops are cut into
  pieces that XLA:CPU runs concurrently; float32 1-D kernels with many taps use
  ``lax.conv_general_dilated``. float64 never does on CPU: XLA:CPU's float64 convolution kernel
  reads past its input and can segfault (README);
* direct on accelerators: the same fused loops up to ``_UNROLL_TAPS`` taps; floats with more
  taps use ``lax.conv_general_dilated`` (cuDNN) with explicit padding,
  ``window_strides``, ``rhs_dilation`` and ``precision`` (``lax.Precision.HIGHEST`` for
  ``precision="highest"``). Non-convolution axes become lax batch dims (kernel shared), feature
  groups (kernel and input paired) or output features (one input, many kernels), so
  broadcasting needs no copy;
* integers and bool are always exact (S5): the multiply-add loops, in the integer type (wrapping
  like NumPy); never a float convolution. An explicit ``method="fft"`` on integers is therefore
  also exact;
* complex through ``lax.conv``: four real convolutions (no complex convolution on accelerators);
* ``method="auto"`` chose FFT: the FFT runs under ``lax.cond`` and falls back to direct when
  an input holds NaN or Inf (S9), which works under ``jit``/``vmap``/``grad``;
* host (NumPy) inputs run with ``jax.enable_x64(True)`` for that call only and come back as
  NumPy with the SciPy dtype (S4); JAX inputs keep JAX's types, and a plan that needs a
  64-bit type while ``jax_enable_x64`` is off raises :class:`~convkit.ConvkitTypeError`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import sys
from typing import Any

import numpy as np

from convkit.choose import Capabilities
from convkit.errors import ConvkitTypeError
from convkit.plan import Plan

from ._base import ArrayBackend, cpu_threads, rank_one, separable_pays, separable_room

__all__ = ["JaxBackend", "backend", "test_runners"]

#: number of times a plan function was traced (tests use it to check the jit cache)
TRACE_COUNT = 0

# up to this many taps direct is unrolled into fused shifted multiply-adds
_UNROLL_TAPS = 64
# taps unrolled inside one iteration of the direct loop for larger kernels
_CHUNK = 64
# a CPU direct is cut into at most this many concurrent pieces, each of at least this many MACs
_MAX_PIECES = 8
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


def _jax():
    import jax

    return jax


def _enable_x64():
    """Context manager enabling 64-bit types (``jax.enable_x64``; older JAX: experimental)."""
    jax = _jax()
    ctx = getattr(jax, "enable_x64", None)
    if ctx is None:  # pragma: no cover - JAX < 0.7
        from jax.experimental import enable_x64 as ctx
    return ctx(True)


def _capabilities(**values) -> Capabilities:
    """Capabilities with the given constants (those the installed cost model knows)."""
    names = {f.name for f in dataclasses.fields(Capabilities)}
    return Capabilities(**{k: v for k, v in values.items() if k in names})


class JaxBackend(ArrayBackend):
    """Runs convkit on JAX arrays (CPU, GPU or TPU) and on host data with 64-bit types."""

    name = "jax"
    install_hint = 'install JAX with `pip install "convkit[jax]"` (see the JAX docs for GPU wheels)'
    device = True
    # seconds per unit on a 2-core x86 CPU (XLA:CPU, jaxlib 0.10), float64; float32 costs
    # ``single_*`` times as much. Fitted so that the cheapest estimate picks the fastest measured
    # method (direct / fft / oa, jitted) on 34 workloads: 1-D 1e5-1e6 samples x 64-1024 taps,
    # 500^2-2000^2 images x 5^2-63^2, 64^3-128^3 volumes x 5^3-9^3, batched 64 x 256^2 x 5^2-11^2,
    # both dtypes; every pick within 1.1x of the fastest (the previous constants: up to 1.9x).
    # On 26 more (the quick suite's sizes and neighbours) the same constants stay best: picks
    # within 1.22x, the worst being batched 16 x 128^2 x 15^2 (direct; FFT is faster).
    # Only ratios matter for the choice; XLA's large 2-D FFTs and its N-d overlap-add cost more
    # than the shared model assumes, which is folded into c_out. c_sep: the separable passes
    # (2000^2 image, 15 + 15 taps, float64).
    capabilities = _capabilities(methods=("direct", "fft", "oa"), c_direct=6.4e-11, c_fft=2.4e-10,
                                 c_out=9.6e-10, small_direct=50_000, c_direct_1d=8.0e-11,
                                 single_direct=0.45, single_fft=0.55, single_direct_1d=1.0,
                                 fft_call=1.6e-5, oa_call=1.6e-4, c_sep=2.1e-10)

    @property
    def xp(self):  # type: ignore[override]
        import jax.numpy as jnp

        return jnp

    # -- contract
    def available(self) -> tuple[bool, str]:
        try:
            import jax

            jax.devices()
        except Exception as exc:  # any failure (missing jaxlib, broken plugin) is a reason
            return False, f"jax cannot run here ({type(exc).__name__}: {exc})"
        return True, ""

    def owns(self, x: Any) -> bool:
        if "jax" not in sys.modules:
            return False
        from array_api_compat import is_jax_array

        return bool(is_jax_array(x))

    def asarray(self, x: Any):
        import jax.numpy as jnp

        return jnp.asarray(x)

    def to_host(self, x: Any) -> np.ndarray:
        return np.asarray(x)

    def sync(self, x: Any) -> None:
        ready = getattr(x, "block_until_ready", None)  # the method: no pytree walk (tiny-call timing)
        if ready is not None:
            ready()
        else:
            _jax().block_until_ready(x)

    def execute(self, plan: Plan, in1, in2):
        jax = _jax()
        if not (self.owns(in1) or self.owns(in2)):
            # host data: 64-bit types preserved for this computation only; NumPy back
            with _enable_x64():
                fn = _plan_function(plan, _platform(in1, in2))
                return np.asarray(fn(np.asarray(in1), np.asarray(in2)))
        if not jax.config.jax_enable_x64:
            _check_32bit(plan)
        return _plan_function(plan, _platform(in1, in2))(in1, in2)

    # -- array helpers (JAX arrays are immutable)
    def set_at(self, a, index, values):
        return a.at[index].set(values)

    # -- the plan as one traceable function
    def run_plan(self, plan: Plan, platform: str, in1, in2):
        """The whole computation of ``plan`` as a pure JAX function (traced once per plan)."""
        global TRACE_COUNT
        TRACE_COUNT += 1
        jnp = self.xp
        if plan.scalar:
            return self.scalar_product(plan, jnp.asarray(in1), jnp.asarray(in2))
        x, k = (in2, in1) if plan.swap else (in1, in2)
        x = jnp.reshape(jnp.asarray(x), plan.x_shape)
        k = jnp.reshape(jnp.asarray(k), plan.k_shape)
        x = self.astype(x, plan.acc_dtype)
        k = self.astype(k, plan.acc_dtype)
        w = jnp.flip(k, axis=plan.axes) if plan.op == "convolve" else self.conj(k)
        if separable_pays(plan, self.capabilities):
            out = self._separable_or_planned(plan, platform, x, w)
        else:
            out = self._planned(plan, platform, x, w)
        if plan.flip_conj_result:
            out = self.conj(jnp.flip(out, axis=plan.axes))
        return self.astype(out, plan.out_dtype)

    def _planned(self, plan: Plan, platform: str, x, w):
        """The method the plan chose, NaN-safe (S9) where ``auto`` chose an FFT method."""
        if plan.method == "direct" or plan.acc_dtype.kind in "biu":  # integers: always exact direct
            return self.direct_jax(plan, platform, x, w)
        out = self.fft_corr(plan, x, w, plan.method)
        if plan.nan_safe:  # S9: direct's NaN/Inf positions when an input is not finite
            from jax import lax

            # a NaN/Inf in either input makes EVERY FFT output non-finite (it enters every
            # sum), so checking the (smaller, just computed) output is enough; finite
            # inputs that overflow fall back to direct too, which is still correct
            ok = _all_finite(out)
            out = lax.cond(ok, lambda o, a, b: o,
                           lambda o, a, b: self.direct_jax(plan, platform, a, b), out, x, w)
        return out

    # -- separable kernels under auto: decided at run time, the kernel may be traced
    def _separable_or_planned(self, plan: Plan, platform: str, x, w):
        """One 1-D direct pass per axis when ``w`` is rank 1 to rounding (:func:`_rank_one`)
        and ``x`` is finite, else the plan's method (which keeps direct's NaN/Inf positions, S9).

        The kernel's values are known only when the jitted function runs, so the test is a
        ``lax.cond``: both branches are compiled and one runs (the test stays unbatched under
        ``vmap``, so a batch takes one branch). Gradients: exact for ``x`` (the passes are
        linear in it); for the kernel the plan's linear method gives the derivative of the
        convolution itself, not of the rank-1 factors.
        """
        import jax
        from jax import lax

        @jax.custom_jvp
        def separable(a, b):
            return self._separable(plan, platform, a, _rank_one(plan, b)[0])

        def jvp(primals, tangents):
            # the passes are linear in x; in the kernel they are not (the factors are read off
            # it), so the kernel's tangent goes through the plan's linear method: the exact
            # derivative of the convolution, not of the rank-1 parametrisation
            (a, b), (da, db) = primals, tangents
            factors = _rank_one(plan, b)[0]
            zero = jax.custom_derivatives.SymbolicZero
            dy = None
            if not isinstance(da, zero):
                dy = self._separable(plan, platform, da, factors)
            if not isinstance(db, zero):
                dw = (self.direct_jax(plan, platform, a, db) if plan.method == "direct"
                      else self.fft_corr(plan, a, db, plan.method))
                dy = dw if dy is None else dy + dw
            y = self._separable(plan, platform, a, factors)
            return y, (self.xp.zeros_like(y) if dy is None else dy)

        separable.defjvp(jvp, symbolic_zeros=True)

        ok = _all_fn()(_rank_one(plan, w)[1] & _all_finite(x))
        return lax.cond(ok, separable, lambda a, b: self._planned(plan, platform, a, b), x, w)

    def _separable(self, plan: Plan, platform: str, x, factors):
        """Valid correlation of ``pad(x)`` with ``outer(factors)``: one direct pass per axis.

        Padding along one axis commutes with a pass along another (zero fill or an index
        mapping along its own axis), so each pass pads only its own axis."""
        from jax import lax

        y = x
        for i, (a, f) in enumerate(zip(plan.axes, factors)):
            k_shape = tuple(f.shape[0] if b == a else 1 for b in range(plan.ndim))
            out_shape = tuple(plan.out_shape[a] if b == a else n for b, n in enumerate(y.shape))
            one = dataclasses.replace(
                plan, swap=False, in1_shape=tuple(y.shape), in2_shape=k_shape, axes=(a,),
                pads=(plan.pads[i],), stride=(plan.stride[i],), dilation=(plan.dilation[i],),
                out_shape=out_shape, method="direct", requested_method="direct", nan_safe=False)
            # padded once up front: the padded-term kernels of direct_jax, fed by the previous
            # pass, are not fused by XLA (one padded copy of the image per tap)
            y = self.pad(one, y)
            y = self.direct_jax(dataclasses.replace(_no_pad(one), in1_shape=tuple(y.shape)),
                                platform, y, f.reshape(k_shape))
            if i + 1 < len(plan.axes):
                # else XLA fuses this pass into the next and recomputes it once per tap
                y = lax.optimization_barrier(y)
        return self.xp.broadcast_to(y, plan.out_shape)

    # -- direct
    def direct_jax(self, plan: Plan, platform: str, x, w):
        """Valid correlation of ``pad(x)`` with ``dilate(w)``, strided, exact for integers.

        XLA's CPU convolution is slow for single-channel data (3-10 ns per multiply-add,
        measured), so on CPU direct is shifted multiply-adds that XLA fuses: unrolled up to
        ``_UNROLL_TAPS`` taps, else (N-d, or integers) a ``fori_loop`` over blocks of taps;
        1-D float32 kernels with more taps use ``lax.conv_general_dilated``. Elementwise products
        are full precision on every device (S6). On accelerators, floats with many taps use
        ``lax.conv_general_dilated`` (cuDNN); integers there loop too (cuDNN has no integer
        convolution). On CPU a large fused direct is cut into independent pieces along one
        output axis, which XLA:CPU runs concurrently on its thread pool (one fused loop runs on
        one core); with a constant boundary the outputs whose windows lie inside ``x`` are
        read from ``x`` itself in rows, and only the two edges are padded.
        """
        kind = plan.acc_dtype.kind
        if plan.taps > _UNROLL_TAPS and kind in "fc" and (
                platform != "cpu" or (len(plan.axes) == 1 and not _wide(plan.acc_dtype))):
            # XLA's 1-D CPU convolution is fine for long float32 kernels; XLA:CPU's float64
            # convolution kernel reads past its input and can segfault (README), so 64-bit
            # stays on the fused loops
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
            padding = [tuple(p) for p in plan.pads]
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

    # -- FFT and overlap-add (the shared fft_corr does the geometry)
    def next_fast_len(self, n: int, real: bool) -> int:
        from convkit.choose import fast_len

        return fast_len(n)

    def linear_conv(self, x, wf, sizes, axes, real: bool, method: str):
        if method == "oa":
            blocks = _oa_blocks(x.shape, wf.shape, axes)
            if blocks:
                return self._overlap_add(x, wf, axes, blocks, real)
        return super().linear_conv(x, wf, sizes, axes, real, method)

    def _overlap_add(self, x, wf, axes, blocks: dict, real: bool):
        """Full linear convolution over ``axes``, blocked on the axes in ``blocks`` (axis -> FFT size).

        The input is cut into blocks of ``step = f - m + 1`` samples, each block is
        transformed with length ``f`` (the kernel once), and the block results are added
        with their ``m - 1`` overlap. Axes not in ``blocks`` get one transform of full length.
        """
        jnp = self.xp
        shape, fft_axes, fsizes, wshape = [], [], [], []
        oa = []  # (position of the block-count axis in the blocked array, step, m)
        for a in range(x.ndim):
            n, m = x.shape[a], wf.shape[a]
            if a in blocks:
                f = blocks[a]
                step = f - m + 1
                nb = -(-n // step)
                if nb * step != n:
                    widths = [(0, 0)] * x.ndim
                    widths[a] = (0, nb * step - n)
                    x = jnp.pad(x, widths)
                oa.append((len(shape), step, m))
                shape += [nb, step]
                wshape += [1, m]
                fft_axes.append(len(shape) - 1)
                fsizes.append(f)
            else:
                shape.append(n)
                wshape.append(m)
                if a in axes:
                    fft_axes.append(len(shape) - 1)
                    fsizes.append(self.next_fast_len(n + m - 1, real))
        xb = jnp.reshape(x, shape)
        wb = jnp.reshape(wf, wshape)
        if real:
            spec = jnp.fft.rfftn(xb, s=fsizes, axes=fft_axes) * jnp.fft.rfftn(wb, s=fsizes, axes=fft_axes)
            y = jnp.fft.irfftn(spec, s=fsizes, axes=fft_axes)
        else:
            spec = jnp.fft.fftn(xb, s=fsizes, axes=fft_axes) * jnp.fft.fftn(wb, s=fsizes, axes=fft_axes)
            y = jnp.fft.ifftn(spec, s=fsizes, axes=fft_axes)
        for pos, step, m in reversed(oa):  # later axes first: earlier positions stay valid
            y = _overlap(y, pos, step, m)
        return y

def _oa_blocks(x_shape, k_shape, axes) -> dict:
    """Overlap-add block FFT size per axis, for axes where the input is much longer than the
    kernel (the rule of :func:`convkit.choose._oa_cost`)."""
    from convkit.choose import fast_len

    out = {}
    for a in axes:
        n, m = x_shape[a], k_shape[a]
        if n > 8 * m and m > 1:
            out[a] = fast_len(max(8 * m, 64))
    return out


def _overlap(y, pos: int, step: int, m: int):
    """Add blocks ``y[..., b, :]`` (axis ``pos`` = block, ``pos+1`` = f samples) at offsets ``b*step``."""
    import jax.numpy as jnp

    y = jnp.moveaxis(y, (pos, pos + 1), (-2, -1))
    nb = y.shape[-2]
    head, tail = y[..., :step], y[..., step:step + m - 1]
    if m > 1 and nb > 1:
        head = head.at[..., 1:, : m - 1].add(tail[..., :-1, :])
    flat = jnp.reshape(head, head.shape[:-2] + (nb * step,))
    flat = jnp.concatenate([flat, tail[..., -1, :]], axis=-1)
    return jnp.moveaxis(flat, -1, pos)


@functools.lru_cache(maxsize=1)
def _all_fn():
    """``all(b)`` that stays unbatched under ``vmap``: one False anywhere in the batch sends
    the whole batch to the fallback branch (still correct), so ``lax.cond`` keeps one branch
    instead of running both."""
    import jax
    import jax.numpy as jnp

    @jax.custom_batching.custom_vmap
    def all_true(b):
        return jnp.all(b)

    @all_true.def_vmap
    def _rule(axis_size, in_batched, b):
        return jnp.all(b), False

    return all_true


def _all_finite(x):
    import jax.numpy as jnp
    from jax import lax

    return _all_fn()(jnp.isfinite(lax.stop_gradient(x)))


def _rank_one(plan: Plan, w):
    """:func:`rank_one` of ``w`` traced (the rule of ``separable_factors``): ``(factors, ok)``,
    with the test's own rounding in ``w``'s dtype."""
    import jax.numpy as jnp
    from jax import lax

    sizes = tuple(w.shape[a] for a in plan.axes)
    delta = separable_room(sizes, plan.acc_dtype, np.dtype(w.dtype))
    factors, ok = rank_one(jnp, lax.stop_gradient(w).reshape(sizes), delta)
    if not delta > 0:
        ok = jnp.zeros((), bool)
    return factors, ok


def _pieces(plan: Plan) -> tuple[int, list[tuple[int, int]]] | None:
    """Where to cut a large CPU direct into concurrent pieces: ``(axis, [(lo, hi), ...])``.

    XLA:CPU already runs a fused loop with many rows on all cores (it partitions the outer
    dimensions), but a long 1-D loop on one; so only outputs with fewer rows than pieces are
    cut, along the outermost axis long enough for ``2 * cores`` pieces (up to 8). Work below
    ``_PIECE_WORK`` multiply-adds per piece, or one core, is not cut.
    """
    cores = cpu_threads()
    n = min(_MAX_PIECES, 2 * cores)
    work = math.prod(plan.out_shape) * plan.taps
    if cores < 2 or work < n * _PIECE_WORK:
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


def _complex(re, im, dtype):
    """``re + 1j*im`` in ``dtype`` (``lax.complex`` keeps float32 -> complex64)."""
    from jax import lax

    return lax.complex(re, im).astype(dtype)


def _no_pad(plan: Plan) -> Plan:
    """The same plan for an input that is already padded."""
    return dataclasses.replace(plan, pads=tuple((0, 0) for _ in plan.pads), boundary="constant",
                               fillvalue=0)


def _precision(name: str):
    from jax import lax

    return {"highest": lax.Precision.HIGHEST, "high": lax.Precision.HIGH}.get(name)


def _platform(*arrays) -> str:
    """Platform the computation runs on: the inputs' device, else JAX's default backend."""
    jax = _jax()
    for a in arrays:
        if isinstance(a, jax.Array) and not isinstance(a, jax.core.Tracer):
            try:
                return next(iter(a.devices())).platform
            except Exception:  # pragma: no cover - deleted or exotic arrays
                break
    return jax.default_backend()


def _check_32bit(plan: Plan) -> None:
    """With x64 off, JAX would silently compute a 64-bit plan in 32 bits: refuse (S4)."""
    for what, dt in (("result dtype", plan.out_dtype), ("accumulation dtype", plan.acc_dtype)):
        if dt.itemsize >= 8 and not (dt.kind == "c" and dt.itemsize == 8):
            raise ConvkitTypeError(
                f"the {what} {dt} needs 64-bit types but jax_enable_x64 is off; enable it "
                "(jax.config.update('jax_enable_x64', True) or `with jax.enable_x64(True):`), "
                "pass dtype= with a 32-bit type, or cast the inputs"
            )


def _wide(dtype) -> bool:
    """float64 / complex128: the dtypes XLA:CPU's convolution is not trusted with."""
    return np.dtype(dtype) in (np.float64, np.complex128)


_FUNCTIONS: dict = {}


def _plan_function(plan: Plan, platform: str):
    """The jitted function for ``plan`` (a static argument: one trace per plan and x64 mode)."""
    fn = _FUNCTIONS.get("run")
    if fn is None:
        jax = _jax()
        fn = _FUNCTIONS["run"] = jax.jit(backend.run_plan, static_argnums=(0, 1))
    return lambda a, b: fn(plan, platform, a, b)


backend = JaxBackend()


# ----------------------------------------------------------------------------- test runners


def _x64_device(a: np.ndarray):
    import jax.numpy as jnp

    with _enable_x64():
        return jnp.asarray(a)


def _x64_wrap(jit: bool):
    def wrap(call):
        import jax

        inner = jax.jit(call) if jit else call

        def run(a, b):
            with _enable_x64():
                return inner(a, b)

        return run

    return wrap


def _is_jax_array(r) -> bool:
    import jax

    return isinstance(r, jax.Array)


def test_runners() -> list:
    """Conformance-suite runners for this backend (see :mod:`convkit.testing`).

    * ``jax``: NumPy inputs with ``backend="jax"``; the result must be NumPy;
    * ``jax-device``: inputs as JAX arrays (64-bit enabled for the call); result a JAX array;
    * ``jax-jit``: as ``jax-device`` with each call under ``jax.jit`` (options static).
    """
    from convkit.testing import Runner

    return [
        Runner("jax", "jax", array_check=lambda r: isinstance(r, np.ndarray)),
        Runner("jax-device", "jax", to_device=_x64_device, wrap=_x64_wrap(False),
               array_check=_is_jax_array),
        Runner("jax-jit", "jax", to_device=_x64_device, wrap=_x64_wrap(True),
               array_check=_is_jax_array),
    ]


test_runners.__test__ = False  # not a pytest test
