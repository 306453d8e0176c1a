"""What is timed: convkit on each backend, and the peer libraries, all guarded by availability.

Peer families: ``scipy`` (``signal.convolve``, ``fftconvolve``, ``oaconvolve``,
``ndimage.convolve``), ``opencv`` (``cv2.filter2D``, ``cv2.sepFilter2D``), ``torch``
(``torch.nn.functional.conv1d/2d/3d`` on the CPU), ``jax`` (``jax.scipy.signal``, jitted; convkit[jax]
jitted too unless ``--jax-call eager``) and
``cupy`` (``cupyx.scipy``). Every contender can be rebuilt by name alone
(:func:`contender`), which is how an isolated worker process makes just the one it times.

A contender turns a workload and its NumPy inputs into a zero-argument callable (inputs are
moved to the device once, outside the timing) plus a ``sync`` that blocks until a result
is computed, and a ``to_numpy`` for the correctness check. ``prepare`` returns ``None``
when the contender does not compute the same thing for that workload (e.g. ndimage has no
``"full"`` mode).
"""

from __future__ import annotations

import functools
import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .workloads import Workload

__all__ = ["Contender", "contenders", "contender", "SCIPY_PEERS", "FAMILIES", "REFERENCE_ONLY",
           "JAX_CALL_ENV"]

#: ``eager``: convkit[jax] is timed as written, outside ``jax.jit`` (``--jax-call``; the
#: benchmark sets it for its timing processes); anything else: inside ``jax.jit``
JAX_CALL_ENV = "CONVKIT_BENCH_JAX_CALL"


@dataclass
class Contender:
    name: str
    family: str  # "convkit", "scipy", "opencv", "torch", "jax", "cupy"
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

    if w.mode != "same" or any(m % 2 == 0 for m in w.dilated(k).shape):
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

#: contenders timed only as the reference of one target (the tiny-call overhead), never a "peer"
REFERENCE_ONLY = ("scipy.signal.convolve(direct)",)


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
        if name == "jax" and os.environ.get(JAX_CALL_ENV, "jit") != "eager":
            import jax

            f = jax.jit(lambda a, b: convkit.convolve(a, b, w.mode, axes=w.axes, dilation=w.dilation))
            return functools.partial(f, xb, kb)
        return functools.partial(convkit.convolve, xb, kb, w.mode, axes=w.axes, dilation=w.dilation)

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


# ----------------------------------------------------------------------------- OpenCV peers


def _installed(module: str) -> tuple[bool, str]:
    """(True, "") when ``module`` can be imported; found without importing it, so that listing
    the contenders starts no library's threads (a broken install fails at ``prepare``)."""
    if importlib.util.find_spec(module) is not None:
        return True, ""
    return False, f"{module} is not installed"


def _cv2_planes(w: Workload, x):
    """The 2-D planes OpenCV filters: ``[x]`` for a 2-D workload, ``x[i]`` for a batch of images
    convolved over the last two axes; None for anything else (1-D, 3-D, other axes)."""
    if x.ndim == 2 and w.conv_axes == (0, 1):
        return None if x.dtype not in (np.float32, np.float64) else [x]
    if x.ndim == 3 and w.conv_axes == (1, 2) and x.dtype in (np.float32, np.float64):
        return list(x)
    return None


def _cv2_geometry(w: Workload, x, k) -> tuple[int, int] | None:
    """``(pad, crop)`` for ``w.mode`` with an odd ``k``: ``full`` pads every side by (m-1)/2 with
    zeros first, ``valid`` crops (m-1)/2 from each side of the 'same' result; None for an even
    kernel or a 'valid' kernel longer than the input (OpenCV centres odd kernels only)."""
    if k.ndim != 2 or any(m % 2 == 0 for m in k.shape):
        return None
    if w.mode == "valid" and any(m > n for m, n in zip(k.shape, x.shape[-2:])):
        return None
    a = (k.shape[0] // 2, k.shape[1] // 2)
    return {"same": (None, None), "full": (a, None), "valid": (None, a)}[w.mode]


def _cv2_call(w: Workload, x, k, apply):
    """A zero-argument call running ``apply(plane, out_plane_or_None)`` on every plane of ``x``."""
    import cv2

    planes = _cv2_planes(w, x)
    geometry = None if planes is None else _cv2_geometry(w, x, k)
    if geometry is None:
        return None
    pad, crop = geometry
    if pad is not None:
        planes_in = lambda: [cv2.copyMakeBorder(p, pad[0], pad[0], pad[1], pad[1],  # noqa: E731
                                                cv2.BORDER_CONSTANT, value=0) for p in planes]
    else:
        planes_in = lambda: planes  # noqa: E731

    def call():
        src = planes_in()
        if x.ndim == 2:
            out = apply(src[0], None)
        else:  # a batch: one filter per image, written into one output array
            out = np.empty((len(src),) + src[0].shape, x.dtype)
            for i, p in enumerate(src):
                apply(p, out[i])
        if crop is not None:
            out = out[..., crop[0]:out.shape[-2] - crop[0], crop[1]:out.shape[-1] - crop[1]]
        return out

    return call


def _cv2_filter2d(w: Workload, x, k):
    """``cv2.filter2D`` computes a correlation: it gets the flipped kernel (contiguous), anchored at
    its centre, with zeros outside the image (``BORDER_CONSTANT``)."""
    import cv2

    k = w.dilated(k)
    kf = np.ascontiguousarray(k[::-1, ::-1]) if k.ndim == 2 else None
    return _cv2_call(w, x, k, lambda p, dst: cv2.filter2D(p, -1, kf, dst=dst, borderType=cv2.BORDER_CONSTANT))


def _rank1_factors(k) -> tuple[np.ndarray, np.ndarray] | None:
    """``(column, row)`` with ``k == outer(column, row)`` to rounding (SVD in float64), in ``k``'s
    dtype; None when ``k`` is not of rank 1."""
    if k.ndim != 2:
        return None
    u, s, vt = np.linalg.svd(k.astype(np.float64))
    if s[0] == 0 or (len(s) > 1 and s[1] > 1e-7 * s[0]):
        return None
    r = np.sqrt(s[0])
    return (u[:, 0] * r).astype(k.dtype), (vt[0] * r).astype(k.dtype)


def _cv2_sep_filter2d(w: Workload, x, k):
    """``cv2.sepFilter2D`` on the separable (Gaussian) workloads: the rank-1 factors of the
    kernel, each flipped, with ``BORDER_CONSTANT``."""
    import cv2

    if w.kernel != "gaussian":
        return None
    k = w.dilated(k)
    factors = _rank1_factors(k)
    if factors is None:
        return None
    col, row = (np.ascontiguousarray(f[::-1]) for f in factors)
    return _cv2_call(w, x, k, lambda p, dst: cv2.sepFilter2D(p, -1, row, col, dst=dst,
                                                             borderType=cv2.BORDER_CONSTANT))


def _opencv_contenders() -> list[Contender]:
    avail = _installed("cv2")
    return [Contender("cv2.filter2D", "opencv", True, _cv2_filter2d, available=avail),
            Contender("cv2.sepFilter2D", "opencv", True, _cv2_sep_filter2d, available=avail)]


# ----------------------------------------------------------------------------- torch peer


def _torch_layout(w: Workload, x) -> tuple[tuple[int, ...], int] | None:
    """``(leading shape, spatial ndim)``: the convolved axes must be the last 1-3 axes of ``x``
    (the leading ones become torch's batch axis); None otherwise."""
    ax = w.conv_axes
    d = len(ax)
    if not 1 <= d <= 3 or ax != tuple(range(x.ndim - d, x.ndim)):
        return None
    return x.shape[:x.ndim - d], d


def _torch_padding(w: Workload, k_spatial: tuple[int, ...], x_spatial: tuple[int, ...]):
    """``(padding argument, explicit pads or None)`` for ``w.mode``: 'valid' 0, 'full' m-1 per
    side, 'same' ``"same"`` for odd kernels; for even ones an explicit ``F.pad`` of m/2 before and
    m/2-1 after each axis (SciPy's centring, which ``padding="same"`` does not follow)."""
    if w.mode == "valid":
        if any(m > n for m, n in zip(k_spatial, x_spatial)):
            return None
        return 0, None
    if w.mode == "full":
        return tuple(m - 1 for m in k_spatial), None
    if all(m % 2 for m in k_spatial):
        return "same", None
    pads = []
    for m in reversed(k_spatial):  # F.pad lists the last axis first
        pads += [m // 2, (m - 1) // 2] if m % 2 == 0 else [m // 2, m // 2]
    return 0, pads


#: the most bytes torch's float64 CPU convolution may unfold the input into (see below)
TORCH_IM2COL_LIMIT = 2**31


def _torch_workspace_guard(w: Workload, x, k_spatial: tuple[int, ...], d: int) -> None:
    """Refuse (as an error saying why) a float64 call that would unfold the input into more than
    :data:`TORCH_IM2COL_LIMIT` bytes: torch has no oneDNN path for float64 on the CPU and copies
    every output's window (im2col), 5.8 GB for 128³ x 7³ and 33 GB for 1024² x 63², which
    exhausts or swaps a shared machine. float32 runs oneDNN and is always timed."""
    if x.dtype != np.float64:
        return
    sign = {"same": 0, "full": 1, "valid": -1}[w.mode]
    outputs = np.prod(x.shape[:x.ndim - d], dtype=np.int64) * np.prod(
        [n + sign * (m - 1) for n, m in zip(x.shape[-d:], k_spatial)], dtype=np.int64)
    size = int(outputs) * int(np.prod(k_spatial)) * x.itemsize
    if size > TORCH_IM2COL_LIMIT:
        raise RuntimeError(f"not run: torch's float64 CPU convolution would unfold the input into "
                           f"{size / 2**30:.1f} GiB (im2col; limit {TORCH_IM2COL_LIMIT / 2**30:g} GiB)")


def _torch_conv(w: Workload, x, k):
    """``torch.nn.functional.conv{1,2,3}d`` on the CPU, single channel: torch correlates, so the
    kernel is flipped; the inputs become tensors once (sharing NumPy's memory), the call runs
    under ``torch.inference_mode`` (with the workload's dilation, which torch takes) and returns
    a view in the expected shape."""
    import torch
    import torch.nn.functional as F

    layout = _torch_layout(w, x)
    if layout is None or x.dtype not in (np.float32, np.float64):
        return None
    lead, d = layout
    kk = np.reshape(k, k.shape[-d:]) if k.ndim > d else k
    reach = tuple((m - 1) * w.dilation + 1 for m in kk.shape)  # the dilated kernel's extent
    padding = _torch_padding(w, reach, x.shape[-d:])
    if padding is None:
        return None
    pad_arg, pads = padding
    _torch_workspace_guard(w, x, kk.shape, d)
    conv = (F.conv1d, F.conv2d, F.conv3d)[d - 1]
    n = int(np.prod(lead)) if lead else 1
    xt = torch.from_numpy(np.ascontiguousarray(x)).reshape((n, 1) + x.shape[-d:])
    kt = torch.from_numpy(np.ascontiguousarray(np.flip(kk))).reshape((1, 1) + kk.shape)

    def call():
        with torch.inference_mode():
            src = F.pad(xt, pads) if pads else xt
            out = conv(src, kt, padding=pad_arg, dilation=w.dilation)
            return out.reshape(lead + tuple(out.shape[2:]))

    return call


def _torch_contenders() -> list[Contender]:
    return [Contender("torch.nn.functional.conv", "torch", True, _torch_conv,
                      to_numpy=lambda t: t.numpy(), available=_installed("torch"))]


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


#: builders of every peer family's contenders, by family name
FAMILIES: dict[str, Callable[[], list[Contender]]] = {
    "scipy": _scipy_contenders, "opencv": _opencv_contenders, "torch": _torch_contenders,
    "jax": _jax_contenders, "cupy": _cupy_contenders,
}


def default_families(backends: list[str]) -> list[str]:
    """SciPy, OpenCV and torch where installed (the CPU peers), plus the families of ``backends``."""
    out = ["scipy"] + [f for f, mod in (("opencv", "cv2"), ("torch", "torch"))
                       if importlib.util.find_spec(mod) is not None]
    return out + [b for b in backends if b in ("jax", "cupy", "torch") and b not in out]


def contenders(backends: list[str], peers: list[str] | None) -> list[Contender]:
    """convkit on ``backends`` and the peers (``peers``, or else :func:`default_families`)."""
    out = [_convkit(b) for b in backends]
    for family in (default_families(backends) if peers is None else peers):
        out += FAMILIES[family]()
    return out


def contender(name: str, family: str) -> Contender:
    """The one contender called ``name`` (``convkit[<backend>]`` or a peer of ``family``)."""
    if family == "convkit":
        return _convkit(name[len("convkit["):-1])
    found = [c for c in FAMILIES[family]() if c.name == name]
    if not found:
        raise ValueError(f"no contender {name!r} in family {family!r}")
    return found[0]
