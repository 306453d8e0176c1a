"""Separable kernels under ``auto`` on JAX: the rank-1 test runs inside the jitted function."""

from __future__ import annotations

import dataclasses

import numpy as np

from convkit.plan import Plan

from .._base import rank_one, separable_room
from ._common import (
    _all_finite,
    _all_fn,
    _no_pad,
)


class SeparableMixin:
    """The separable path of :class:`~convkit.backends.jax.JaxBackend`."""

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

        # the factors are read off the kernel in the same function, and XLA fuses those dynamic
        # slices and the division into the passes: recomputed for every output (2-4x slower on
        # a 2000x2000 image). A product with the identity is a kernel of its own, so they are
        # computed once; it is exact (one 1.0 * f term, the others 0 * f: the factors are finite
        # wherever this path runs)
        factors = [self.xp.dot(self.xp.eye(f.shape[0], dtype=f.dtype), f, precision=lax.Precision.HIGHEST)
                   for f in factors]
        y = x
        for i, (a, f) in reversed(list(enumerate(zip(plan.axes, factors)))):
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
            if i > 0:
                # else XLA fuses this pass into the next and recomputes it once per tap
                y = lax.optimization_barrier(y)
        return self.xp.broadcast_to(y, plan.out_shape)



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


