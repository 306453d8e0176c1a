"""Small helpers every part of the JAX backend shares: lazy imports, x64 scoping, plans."""

from __future__ import annotations

import dataclasses
import functools

from convkit.choose import Capabilities
from convkit.plan import Plan


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


def _complex(re, im, dtype):
    """``re + 1j*im`` in ``dtype`` (``lax.complex`` keeps float32 -> complex64)."""
    from jax import lax

    return lax.complex(re, im).astype(dtype)


def _no_pad(plan: Plan) -> Plan:
    """The same plan for an input that is already padded."""
    return dataclasses.replace(plan, pads=tuple((0, 0) for _ in plan.pads), boundary="constant",
                               fillvalue=0)


def _zero_padded(x, pads, spatial) -> tuple[object, list[tuple[int, int]]]:
    """``(x', padding)`` for ``lax.conv_general_dilated`` on an accelerator: ``x'`` is ``x`` with
    the positive parts of ``pads`` (``(lo, hi)`` per axis of ``spatial``) as real zeros, and
    ``padding`` what is left for the convolution itself (the negative parts: crops).

    cuDNN's convolutions skip the padded positions of their ``padding`` argument, so a NaN/Inf
    tap that meets them gives a finite output where S9 asks for ``Inf x 0 = NaN``; XLA folds a
    zero ``lax.pad`` into that argument, so the padded array goes through an optimization
    barrier. It costs one copy of the input, on accelerators only (XLA:CPU multiplies the zeros);
    without positive pads ``x`` is returned as it is.
    """
    pads = [(int(lo), int(hi)) for lo, hi in pads]
    if not any(p > 0 for lo_hi in pads for p in lo_hi):
        return x, pads
    from jax import lax

    config = [(0, 0, 0)] * x.ndim
    for a, (lo, hi) in zip(spatial, pads):
        config[a] = (max(lo, 0), max(hi, 0), 0)
    padded = lax.optimization_barrier(lax.pad(x, lax.convert_element_type(0, x.dtype), config))
    return padded, [(min(lo, 0), min(hi, 0)) for lo, hi in pads]


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


