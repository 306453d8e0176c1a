"""What is timed: convkit on each backend, and the peer libraries, all guarded by availability.

A contender turns a workload and its NumPy inputs into a zero-argument callable (inputs are
moved to the device once, outside the timing) plus a ``sync`` that blocks until a result
is computed, and a ``to_numpy`` for the correctness check. ``prepare`` returns ``None``
when the contender does not compute the same thing for that workload (e.g. ndimage has no
``"full"`` mode).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .workloads import Workload

__all__ = ["Contender", "contenders", "SCIPY_PEERS"]


@dataclass
class Contender:
    name: str
    family: str  # "convkit", "scipy", "jax", "cupy"
    host: bool  # runs on NumPy arrays (its memory is measured with tracemalloc)
    prepare: Callable[[Workload, np.ndarray, np.ndarray], Callable[[], Any] | None]
    sync: Callable[[Any], None] = lambda r: None
    to_numpy: Callable[[Any], np.ndarray] = np.asarray
    available: tuple[bool, str] = (True, "")
    device: str = "cpu"


# ----------------------------------------------------------------------------- SciPy peers


def _scipy_signal(fn_name: str, **kw):
    def prepare(w: Workload, x, k):
        import scipy.signal

        fn = getattr(scipy.signal, fn_name)
        kk = w.k_full(k)
        if fn_name == "convolve":
            return functools.partial(fn, x, kk, w.mode, **kw)
        return functools.partial(fn, x, kk, w.mode, axes=w.axes)

    return prepare


def _ndimage(w: Workload, x, k):
    import scipy.ndimage

    if w.mode != "same" or any(m % 2 == 0 for m in k.shape):
        return None  # ndimage computes 'same' only; even kernels need an origin shift
    kk = w.k_full(k)
    if w.x_shape == (w.x_shape[0],):
        return functools.partial(scipy.ndimage.convolve1d, x, kk, mode="constant")
    return functools.partial(scipy.ndimage.convolve, x, kk, mode="constant")


def ndimage_same(w: Workload, x, k) -> tuple[np.ndarray, tuple[int, ...]] | None:
    """``(weights, origin)`` with which ``ndimage.convolve(x, weights, mode="constant",
    origin=origin)`` computes ``convolve(x, k, "same", axes=w.axes)`` with SciPy's centring
    (``out[i] = full[i + (m - 1) // 2]``): origin -1 on axes of even length, 0 on odd ones; None
    where it does not compute the same thing (other modes, kernels longer than the input,
    anything but real floats). Checked against ``scipy.signal.convolve`` in the tests."""
    if w.mode != "same" or np.dtype(x.dtype).kind != "f" or np.dtype(k.dtype).kind != "f":
        return None
    kk = w.k_full(k)
    if kk.ndim != x.ndim or any(m > n for m, n in zip(kk.shape, x.shape)):
        return None
    return kk, tuple(m % 2 - 1 for m in kk.shape)


def _scipy_direct(w: Workload, x, k):
    if w.group != "overhead":
        return None  # the direct SciPy call is the reference only for the overhead workload
    import scipy.signal

    return functools.partial(scipy.signal.convolve, x, w.k_full(k), w.mode, method="direct")


SCIPY_PEERS = ("scipy.signal.convolve", "scipy.signal.fftconvolve", "scipy.signal.oaconvolve",
               "scipy.ndimage.convolve")


def _scipy_contenders() -> list[Contender]:
    return [
        Contender("scipy.signal.convolve", "scipy", True, _scipy_signal("convolve")),
        Contender("scipy.signal.fftconvolve", "scipy", True, _scipy_signal("fftconvolve")),
        Contender("scipy.signal.oaconvolve", "scipy", True, _scipy_signal("oaconvolve")),
        Contender("scipy.ndimage.convolve", "scipy", True, _ndimage),
        Contender("scipy.signal.convolve(direct)", "scipy", True, _scipy_direct),
    ]


# ----------------------------------------------------------------------------- convkit


def _convkit(name: str) -> Contender:
    import convkit

    try:
        be = convkit.get_backend(name)
        ok, why = True, ""
    except Exception as exc:  # unavailable or broken backend: reported, not fatal
        be, ok, why = None, False, f"{type(exc).__name__}: {exc}"

    def prepare(w: Workload, x, k):
        xb, kb = (x, k) if name == "numpy" else (be.asarray(x), be.asarray(k))
        if name == "jax":
            import jax

            f = jax.jit(lambda a, b: convkit.convolve(a, b, w.mode, axes=w.axes))
            return functools.partial(f, xb, kb)
        return functools.partial(convkit.convolve, xb, kb, w.mode, axes=w.axes)

    sync = (lambda r: be.sync(r)) if be is not None else (lambda r: None)
    if name == "jax":  # the very call the jax.scipy.signal peers are synchronised with
        sync = lambda r: r.block_until_ready()  # noqa: E731
    to_numpy = (lambda r: np.asarray(be.to_host(r))) if be is not None else np.asarray
    return Contender(f"convkit[{name}]", "convkit", name == "numpy", prepare, sync, to_numpy,
                     (ok, why), _device_of(name))


# ----------------------------------------------------------------------------- JAX / CuPy peers


def _jax_contenders() -> list[Contender]:
    try:
        import jax
        import jax.numpy as jnp
        import jax.scipy.signal as jss
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}"
        return [Contender(n, "jax", False, lambda w, x, k: None, available=(False, reason))
                for n in ("jax.scipy.signal.convolve", "jax.scipy.signal.fftconvolve")]

    def make(fn_name):
        def prepare(w: Workload, x, k):
            fn = getattr(jss, fn_name)
            if (fn_name == "convolve" and x.dtype == np.float64 and x.nbytes % 4096 == 0
                    and jax.devices()[0].platform == "cpu"):
                # XLA:CPU's float64 convolution reads past the end of its input (README); an
                # input that fills whole pages (128^3, 64 x 256 x 256, 1024^2) segfaulted here
                # and would kill the whole run: not timed
                raise RuntimeError("not run: XLA:CPU's float64 lax convolution reads past a "
                                   "page-aligned input and segfaults")
            xb, kb = jnp.asarray(x), jnp.asarray(w.k_full(k))
            if xb.dtype != x.dtype:
                return None  # float64 without jax_enable_x64: not the same computation
            # jax's fftconvolve does not broadcast size-1 batch axes: give it all axes
            # (the kernel has size 1 on the batch axes, so it is the same computation)
            f = jax.jit(functools.partial(fn, mode=w.mode))
            return functools.partial(f, xb, kb)

        return prepare

    dev = str(jax.devices()[0])
    return [Contender(f"jax.scipy.signal.{n}", "jax", False, make(n), lambda r: r.block_until_ready(),
                      np.asarray, device=dev) for n in ("convolve", "fftconvolve")]


def _cupy_contenders() -> list[Contender]:
    try:
        import cupy
        import cupyx.scipy.signal as css

        cupy.cuda.runtime.getDeviceCount()
        cupy.zeros(1).sum().item()
        dev = cupy.cuda.runtime.getDeviceProperties(0)["name"]
        dev = dev.decode() if isinstance(dev, bytes) else str(dev)
        ok, why = True, ""
    except Exception as exc:
        ok, why, dev = False, f"{type(exc).__name__}: {exc}", "none"

    def make(fn_name):
        def prepare(w: Workload, x, k):
            fn = getattr(css, fn_name)
            xb, kb = cupy.asarray(x), cupy.asarray(w.k_full(k))
            if fn_name == "fftconvolve":
                return functools.partial(fn, xb, kb, w.mode, axes=w.axes)
            return functools.partial(fn, xb, kb, w.mode)

        return prepare

    def ndimage(w: Workload, x, k):
        same = ndimage_same(w, x, k)
        if same is None:
            return None
        import cupyx.scipy.ndimage as cnd

        kk, origin = same
        return functools.partial(cnd.convolve, cupy.asarray(x), cupy.asarray(kk), mode="constant",
                                 origin=origin)

    def sync(r):
        cupy.cuda.get_current_stream().synchronize()

    return [Contender(f"cupyx.scipy.signal.{n}", "cupy", False, make(n), sync,
                      (lambda r: r.get()), (ok, why), dev) for n in ("convolve", "fftconvolve")] + [
        Contender("cupyx.scipy.ndimage.convolve", "cupy", False, ndimage, sync, (lambda r: r.get()),
                  (ok, why), dev)]


def _device_of(backend: str) -> str:
    try:
        if backend == "jax":
            import jax

            return str(jax.devices()[0])
        if backend == "cupy":
            import cupy

            name = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)["name"]
            return name.decode() if isinstance(name, bytes) else str(name)
    except Exception:
        return "unavailable"
    return "cpu"


def contenders(backends: list[str], peers: list[str] | None) -> list[Contender]:
    """convkit on ``backends`` and the peers (default: SciPy, plus JAX/CuPy for those backends)."""
    out = [_convkit(b) for b in backends]
    families = {"scipy"} | {b for b in backends if b in ("jax", "cupy")}
    if peers is not None:
        families = set(peers)
    if "scipy" in families:
        out += _scipy_contenders()
    if "jax" in families:
        out += _jax_contenders()
    if "cupy" in families:
        out += _cupy_contenders()
    return out
