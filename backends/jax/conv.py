"""``convkit.conv`` on JAX: ``lax.conv_general_dilated``, or patches and one dot where it cannot be used.

* real floats run ``lax.conv_general_dilated`` with the caller's layouts as its
  ``dimension_numbers`` (no transposes), ``feature_group_count=groups``, explicit padding
  (on accelerators a zero-padded copy of ``x``, since cuDNN skips padded positions and a
  NaN/Inf tap must meet them, S9),
  ``window_strides``, ``rhs_dilation`` and ``lax.Precision.HIGHEST`` for ``precision="highest"``
  (S6: no TF32/bf16 on accelerators);
* float64 on CPU never does: XLA:CPU's float64 convolution kernel reads past its input and can
  segfault (docs/backends/jax.md). Neither do complex data (XLA:CPU has no complex
  convolution) nor integers (cuDNN has none, and their sums must wrap exactly, S5): these run
  the same sum as strided patches of the padded input and ONE ``dot_general`` per call,
  accumulated in the result's type (integer sums wrap modulo ``2**bits``);
* one jitted function per :class:`~convkit.conv.ConvPlan` (a static argument), so repeated calls
  with the same shapes never re-trace; host (NumPy) inputs run with 64-bit types enabled for that
  call only and come back as NumPy (float64 kept, S4); JAX arrays keep JAX's types, and a plan
  that needs 64 bits while ``jax_enable_x64`` is off is a ConvkitTypeError;
* every ``method`` is computed direct (all methods agree within S5; direct also keeps S9's NaN
  positions).
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from convkit.conv import ConvPlan

from ._common import _enable_x64, _jax, _platform, _precision, _zero_padded

__all__ = ["ConvMixin"]

_JITTED: dict = {}


class ConvMixin:
    """:meth:`conv_layer` of :class:`~convkit.backends.jax.JaxBackend`."""

    def conv_layer(self, plan: ConvPlan, x, w, bias):
        """Run ``plan`` (see :func:`convkit.conv`) on JAX arrays or host data."""
        from . import _check_32bit, _check_jax_dtypes

        _check_jax_dtypes(plan, x, w)
        args = (x, w) if bias is None else (x, w, bias)
        if not any(self.owns(a) for a in args):
            host = tuple(np.asarray(a) for a in args)
            with _enable_x64():
                return np.asarray(_conv_function()(plan, _platform(), *host))
        if not _jax().config.jax_enable_x64:
            _check_32bit(plan)
        return _conv_function()(plan, _platform(*args), *args)


def _conv_function():
    fn = _JITTED.get("conv")
    if fn is None:
        fn = _JITTED["conv"] = _jax().jit(run_conv, static_argnums=(0, 1))
    return fn


def run_conv(plan: ConvPlan, platform: str, x, w, bias=None):
    """The whole layer as a pure JAX function of the arrays (traced once per plan and platform)."""
    import jax.numpy as jnp
    from jax import lax

    acc = plan.acc_dtype
    x, w = jnp.asarray(x).astype(acc), jnp.asarray(w).astype(acc)
    if acc.kind == "f" and not (platform == "cpu" and acc.itemsize > 4):
        pads = plan.pads
        if platform != "cpu":
            first = 1 if plan.channels_last else 2
            x, pads = _zero_padded(x, pads, range(first, first + plan.rank))
        out = lax.conv_general_dilated(
            x, w, window_strides=plan.stride, padding=pads, rhs_dilation=plan.dilation,
            dimension_numbers=(plan.layout, plan.kernel_layout, plan.layout),
            feature_group_count=plan.groups, precision=_precision(plan.precision),
            preferred_element_type=acc,
        )
    else:
        out = _patches_dot(plan, x, w)
    if bias is not None:
        shape = [1] * (plan.rank + 2)
        shape[-1 if plan.channels_last else 1] = plan.out_channels
        out = out + jnp.asarray(bias).astype(acc).reshape(shape)
    return out.astype(plan.out_dtype)


def _patches_dot(plan: ConvPlan, x, w):
    """Direct as ``(groups, O/g, C/g * taps) x (N, groups, C/g * taps, positions)``: the strided
    patches of the padded input, one per tap, then one ``dot_general`` in the accumulation dtype."""
    import jax.numpy as jnp
    from jax import lax

    r = plan.rank
    if plan.channels_last:
        x = jnp.moveaxis(x, -1, 1)
    if plan.kernel_last:
        w = jnp.transpose(w, (r + 1, r) + tuple(range(r)))
    zero = jnp.zeros((), x.dtype)
    xpad = lax.pad(x, zero, [(0, 0, 0), (0, 0, 0)] + [(lo, hi, 0) for lo, hi in plan.pads])
    n, k = plan.batch, plan.taps
    patches = []
    for tap in itertools.product(*(range(m) for m in plan.kernel_spatial)):
        start = [0, 0] + [t * d for t, d in zip(tap, plan.dilation)]
        limit = [n, plan.in_channels] + [t * d + (m - 1) * s + 1 for t, d, m, s in
                                         zip(tap, plan.dilation, plan.out_spatial, plan.stride)]
        patches.append(lax.slice(xpad, start, limit, [1, 1] + list(plan.stride)))
    positions = math.prod(plan.out_spatial)
    cols = jnp.stack(patches, axis=2).reshape((n, plan.groups, plan.group_in * k, positions))
    wm = w.reshape((plan.groups, plan.group_out, plan.group_in * k))
    # out[n, g, o, p] = sum_j wm[g, o, j] * cols[n, g, j, p]
    out = lax.dot_general(cols, wm, (((2,), (2,)), ((1,), (0,))), precision=_precision(plan.precision),
                          preferred_element_type=plan.acc_dtype)          # (G, N, P, Og)
    out = jnp.transpose(out, (1, 0, 3, 2)).reshape((n, plan.out_channels) + plan.out_spatial)
    return jnp.moveaxis(out, 1, -1) if plan.channels_last else out
