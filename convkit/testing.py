"""Test helpers for convkit and for users' own suites.

* :func:`direct_bound`, :func:`fft_bound`: the rigorous error bounds of SPEC S5 for a call;
* :func:`assert_conv_close`: compare a result with an oracle using those bounds (exact
  equality for integers and bool, equal NaN/Inf positions for direct and ``auto``);
* :class:`Runner` and :func:`runners`: run one call on a backend the way a user would
  (device arrays in, device arrays out, optionally under ``jax.jit``) and return NumPy.

Example
-------
>>> import numpy as np, scipy.signal, convkit
>>> from convkit.testing import assert_conv_close
>>> x, k = np.random.default_rng(0).standard_normal((2, 50))
>>> assert_conv_close(convkit.convolve(x, k, "same"), scipy.signal.convolve(x, k, "same"), x, k, mode="same")
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .bounds import direct_factor, fft_factor, unit_roundoff
from .dispatch import get_backend, list_backends
from .plan import plan_call

__all__ = [
    "direct_bound",
    "fft_bound",
    "assert_conv_close",
    "to_numpy",
    "Runner",
    "runners",
    "register_runner",
]

_GEOMETRY = ("mode", "axes", "boundary", "fillvalue", "align", "origin", "stride", "dilation")


def to_numpy(x: Any) -> np.ndarray:
    """Any array convkit returns (NumPy, CuPy, JAX, ...) as a NumPy array, through the owning
    backend's ``to_host``."""
    from .dispatch import array_owner

    owner = array_owner(x)
    if owner is not None:
        return np.asarray(get_backend(owner).to_host(x))
    return np.asarray(x)


def _plan(op: str, in1, in2, options: dict):
    opts = {k: v for k, v in options.items() if k in _GEOMETRY or k == "dtype"}
    return plan_call(op, in1, in2, get_backend("numpy").capabilities, method="direct", **opts)


def _geometry(options: dict) -> dict:
    return {k: v for k, v in options.items() if k in _GEOMETRY}


def direct_bound(in1, in2, op: str = "convolve", **options) -> np.ndarray:
    """Elementwise S5 bound ``gamma_K * (|x| (*) |k|)`` for a direct computation.

    ``options`` are the call's keywords (mode, boundary, stride, dtype, ...). The magnitude
    convolution is computed in float64 and inflated by its own rounding bound.
    """
    from .api import convolve, correlate

    plan = _plan(op, in1, in2, options)
    geo = _geometry(options)
    if "fillvalue" in geo:
        geo["fillvalue"] = abs(geo["fillvalue"])
    a = np.abs(np.asarray(in1)).astype(np.float64)
    b = np.abs(np.asarray(in2)).astype(np.float64)
    fn = convolve if op == "convolve" else correlate
    mag = np.abs(fn(a, b, method="direct", backend="numpy", **geo))
    taps = max(plan.taps, 1)
    return direct_factor(taps, plan.acc_dtype) * mag * (1.0 + direct_factor(taps, np.float64))


def fft_bound(in1, in2, op: str = "convolve", **options) -> float:
    """Normwise S5 bound ``c * u * log2(L) * ||pad(x)||_2 * ||k||_2`` for an FFT computation."""
    if "fillvalue" in options:  # |x| is padded with |fillvalue| (a complex fill must not lose its imag)
        options = {**options, "fillvalue": abs(options["fillvalue"])}
    plan = _plan(op, in1, in2, options)
    if plan.scalar:
        return 0.0
    x, k = (in2, in1) if plan.swap else (in1, in2)
    x = np.reshape(np.abs(np.asarray(x)).astype(np.float64), plan.x_shape)
    k = np.abs(np.asarray(k)).astype(np.float64)
    xpad = get_backend("numpy").pad(plan, x)
    # non-finite values give non-finite outputs, which are compared by position, not bound
    xpad, k = (np.where(np.isfinite(v), v, 0.0) for v in (xpad, k))
    length = math.prod(xpad.shape[a] + m - 1 for a, m in zip(plan.axes, plan.effective_kernel))
    acc = plan.acc_dtype if plan.acc_dtype.kind in "fc" else np.dtype(np.float64)
    return fft_factor(length, acc) * float(np.linalg.norm(xpad.ravel())) * float(np.linalg.norm(k.ravel()))


def assert_conv_close(actual, expected, in1, in2, op: str = "convolve", *, method: str = "auto",
                      reference_dtype=np.float64, check_dtype: bool = True, **options) -> None:
    """Assert ``actual`` equals the oracle ``expected`` within the S5 bounds.

    ``expected`` is an independent result (SciPy, NumPy, an exact reference) computed in
    ``reference_dtype`` by a direct method. Integers and bool must be identical. For
    ``method`` 'direct' and 'auto' the NaN/Inf positions must be identical too (S9).
    """
    actual, expected = to_numpy(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"shape {actual.shape} != expected {expected.shape}"
    if check_dtype:
        assert actual.dtype == expected.dtype, f"dtype {actual.dtype} != expected {expected.dtype}"
    if actual.dtype.kind in "biu":
        np.testing.assert_array_equal(actual, expected, strict=False)
        return
    if method in ("direct", "auto"):
        preds = ((("NaN", np.isnan), ("Inf", np.isinf)) if actual.dtype.kind == "c" else
                 (("NaN", np.isnan), ("+Inf", np.isposinf), ("-Inf", np.isneginf)))
        for name, pred in preds:
            pa, pe = pred(actual), pred(expected)
            assert np.array_equal(pa, pe), f"{name} positions differ: {np.argwhere(pa != pe)[:5].tolist()}"
    finite = np.isfinite(actual) & np.isfinite(expected)
    geo = dict(options)
    bound = direct_bound(in1, in2, op, **geo)
    if actual.dtype.kind == "c" or expected.dtype.kind == "c":
        reference_dtype = np.promote_types(reference_dtype, np.complex64)
    ref_bound = direct_bound(in1, in2, op, **{**geo, "dtype": reference_dtype})
    if method in ("fft", "oa", "auto"):
        fb = fft_bound(in1, in2, op, **geo)
        bound = np.maximum(bound, fb) if method == "auto" else np.maximum(bound * 0, fb)
    out_u = unit_roundoff(actual.dtype)
    tol = np.broadcast_to(bound + ref_bound + out_u * np.abs(expected), actual.shape)
    with np.errstate(invalid="ignore"):  # inf - inf at non-finite positions (checked above)
        err = np.abs(actual.astype(np.complex128 if actual.dtype.kind == "c" else np.float64) - expected)
    bad = finite & ~(err <= tol)
    if np.any(bad):
        i = tuple(np.argwhere(bad)[0])
        raise AssertionError(
            f"{int(bad.sum())} of {actual.size} outputs exceed the S5 bound; first at {i}: "
            f"actual {actual[i]!r}, expected {expected[i]!r}, error {err[i]:.3g} > bound {tol[i]:.3g}"
        )


# ----------------------------------------------------------------------------- runners


@dataclass
class Runner:
    """How a test runs one call on one backend.

    ``to_device`` turns NumPy inputs into the backend's arrays (None: pass NumPy with
    ``backend=name``); ``wrap`` may transform the call (e.g. ``jax.jit``); ``array_check``
    verifies the result has the backend's array type before it is converted to NumPy.
    """

    name: str
    backend: str
    to_device: Callable[[np.ndarray], Any] | None = None
    wrap: Callable[[Callable], Callable] | None = None
    array_check: Callable[[Any], bool] | None = None
    marks: tuple = field(default_factory=tuple)

    def available(self) -> tuple[bool, str]:
        for info in list_backends():
            if info.name == self.backend:
                return info.available, info.reason
        return False, f"backend {self.backend!r} is not registered"

    def run(self, op: str, in1, in2, *args, **kwargs) -> np.ndarray:
        """Call ``convkit.<op>`` on this backend and return the result as NumPy."""
        import convkit

        fn = getattr(convkit, op)
        if self.to_device is not None:
            in1, in2 = self.to_device(np.asarray(in1)), self.to_device(np.asarray(in2))
        else:
            kwargs.setdefault("backend", self.backend)

        def call(a, b):
            return fn(a, b, *args, **kwargs)

        if self.wrap is not None:
            call = self.wrap(call)
        out = call(in1, in2)
        if self.array_check is not None:
            assert self.array_check(out), f"{self.name}: result has type {type(out).__name__}"
        return to_numpy(out)


_RUNNERS: dict[str, Runner] = {
    "numpy": Runner("numpy", "numpy", array_check=lambda r: isinstance(r, np.ndarray)),
}


def register_runner(runner: Runner) -> None:
    """Add a way of running the conformance suite (backend modules register theirs)."""
    _RUNNERS[runner.name] = runner


def runners(requested: list[str] | None = None) -> list[Runner]:
    """The runners to test: ``requested`` names, ``CONVKIT_TEST_BACKENDS``, or all known."""
    _load_builtin_runners()
    if requested is None:
        env = os.environ.get("CONVKIT_TEST_BACKENDS", "")
        requested = [n.strip() for n in env.split(",") if n.strip()] or None
    if requested is None:
        return list(_RUNNERS.values())
    out: list[Runner] = []
    for name in requested:
        # a backend name selects all of that backend's runners, else a runner's own name
        matches = [r for r in _RUNNERS.values() if r.backend == name]
        if not matches and name in _RUNNERS:
            matches = [_RUNNERS[name]]
        if not matches:
            matches = [Runner(name, name)]  # unknown: the fixture fails it with the reason
        out.extend(r for r in matches if r not in out)
    return out


def _load_builtin_runners() -> None:
    """Every registered backend contributes its ``test_runners()`` (built-ins and entry points
    alike); a backend that fails to load is left out here and reported by the fixture."""
    from .dispatch import _known_names, _load

    for name in _known_names():
        obj = _load(name)
        try:
            found = obj.test_runners() if obj is not None and hasattr(obj, "test_runners") else []
        except Exception:
            continue
        for r in found:
            _RUNNERS.setdefault(r.name, r)
