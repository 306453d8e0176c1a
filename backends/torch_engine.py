"""torch's CPU convolution as the NumPy backend's engine for :func:`convkit.conv` (optional).

A deep-learning layer is one large matrix product per image (unfolded patches times the
filters). NumPy runs it through OpenBLAS, torch through oneDNN's convolution kernels, which
use the CPU's widest vector units (AVX-512 where there is one; OpenBLAS builds may pick AVX2
kernels on new CPUs) and skip the unfolding: 4-5x faster on a ResNet 3x3 layer on the 2-core
development machine (docs/layers.md). Where torch is installed, the NumPy backend's ``conv``
runs finite float32/float64 direct calls through the torch backend's own ``conv_layer`` on CPU
tensors that share the NumPy arrays' memory (no copy in, none out), which pads explicitly
(S9), and falls back to its patches-and-matmul path for non-finite data. Integers, complex,
``method="fft"`` and calls without torch run convkit's own NumPy implementation
(``convkit.backends._conv``).
"""

from __future__ import annotations

import importlib.util
import math

import numpy as np

from ._base import switched_off

__all__ = ["NAME", "installed", "available", "applies", "conv_layer"]

NAME = "torch"
#: set CONVKIT_TORCH_ENGINE=0 to keep torch out of NumPy calls even where it is installed
_ENV = "CONVKIT_TORCH_ENGINE"

_state: tuple[bool, str] | None = None


def installed() -> bool:
    """Whether torch can be found (no import)."""
    return not switched_off(_ENV) and importlib.util.find_spec("torch") is not None


def available() -> tuple[bool, str]:
    """``(True, "")`` once the torch backend is available, else ``(False, why)``; asked once."""
    global _state
    if _state is None:
        if not installed():
            _state = (False, f"{_ENV}=0" if switched_off(_ENV) else "torch is not installed")
        else:
            from .torch import backend

            _state = backend.available()
    return _state


def applies(plan) -> bool:
    """float32/float64 direct layers (shapes and dtypes only)."""
    return plan.method == "direct" and plan.acc_dtype in (np.dtype(np.float32), np.dtype(np.float64))


def conv_layer(plan, x: np.ndarray, w: np.ndarray, bias) -> np.ndarray:
    """Run ``plan`` through the torch backend on CPU tensors viewing ``x``, ``w`` (and ``bias``).

    The common layer (channels first, no bias, inputs already in the plan's dtype, a kernel
    whose sum is finite, so no tap is NaN/Inf) is one ``conv*d`` call (after an ``F.pad`` where
    the pads are not symmetric, as a torch user writes it) with no other step: every step
    between two calls runs while torch's OpenMP threads still spin after the previous one, and
    cost 0.2-0.4 ms a call on the 2-core development VM. Anything else goes through the torch
    backend's ``conv_layer``, which handles every case."""
    from .torch import backend

    if (bias is None and not plan.channels_last and not plan.kernel_last
            and x.dtype == w.dtype == plan.acc_dtype == plan.out_dtype and math.isfinite(w.sum())):
        return _plain_conv(backend, plan, x, w)
    cpu = backend.torch.device("cpu")
    args = [backend.asarray(a, cpu) for a in (x, w)]
    out = backend.conv_layer(plan, *args, None if bias is None else backend.asarray(bias, cpu))
    return backend.to_host(out)


def _plain_conv(backend, plan, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The torch backend's :meth:`functional_conv` on tensors viewing ``x`` and ``w`` (a
    separate function so the tests can see that the plain path ran)."""
    return backend.functional_conv(plan, backend.asarray(x), backend.asarray(w)).numpy()

