"""Conformance-suite runners of the JAX backend (see :mod:`convkit.testing`)."""

from __future__ import annotations

import numpy as np

from ._common import (
    _enable_x64,
)


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


def _host_wrap(call):
    """The call with 64-bit types enabled and every call that may hand off to the NumPy
    backend's engines doing so (:func:`convkit.backends.jax.host.forced`)."""
    from .host import forced

    def run(a, b):
        with _enable_x64(), forced():
            return call(a, b)

    return run


def _is_jax_array(r) -> bool:
    import jax

    return isinstance(r, jax.Array)


def _test_runners() -> list:
    """Conformance-suite runners for this backend (see :mod:`convkit.testing`).

    * ``jax``: NumPy inputs with ``backend="jax"``; the result must be NumPy;
    * ``jax-device``: inputs as JAX arrays (64-bit enabled for the call); result a JAX array;
    * ``jax-jit``: as ``jax-device`` with each call under ``jax.jit`` (options static);
    * ``jax-host``: as ``jax-device`` with every call that may hand off to the NumPy backend
      (CPU handoff, :mod:`convkit.backends.jax.host`) doing so, whatever the estimates; on
      other devices the same calls as ``jax-device``.
    """
    from convkit.testing import Runner

    return [
        Runner("jax", "jax", array_check=lambda r: isinstance(r, np.ndarray)),
        Runner("jax-device", "jax", to_device=_x64_device, wrap=_x64_wrap(False),
               array_check=_is_jax_array),
        Runner("jax-jit", "jax", to_device=_x64_device, wrap=_x64_wrap(True),
               array_check=_is_jax_array),
        Runner("jax-host", "jax", to_device=_x64_device, wrap=_host_wrap, array_check=_is_jax_array),
    ]


