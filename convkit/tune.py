"""Measure this machine's constants for the cost model of ``method="auto"``.

The NumPy backend ships constants measured on a 2-core x86-64; the CuPy backend and the JAX
backend on a GPU ship constants derived from published H100-class figures (docs/gpu.md, "Cost
model"). On another machine or device the cross-over points between direct, FFT, overlap-add
and separable passes move (the NumPy backend's batched 1-D overlap-add included: ``oa_1d_out``).
``tune()`` times each primitive through the backend itself (a few
seconds; device backends wait for the device with ``backend.sync``), and returns a
:class:`convkit.choose.Capabilities` with the fitted constants; ``apply=True`` makes the
backend use them for the rest of the process (the JAX backend: on its current platform only),
and :func:`save` / :func:`load` keep them in a JSON file per backend and device
(``~/.cache/convkit/tune-numpy.json``, ``tune-cupy-<device>.json``, ``tune-jax-<device>.json``;
``$CONVKIT_TUNE_FILE`` replaces the NumPy one). Nothing is loaded automatically: call
``convkit.tune.apply(convkit.tune.load())`` (``backend="cupy"`` for both, say) at start-up.

Device backends (``backend="cupy"`` or ``"jax"``, or any backend with ``device = True``) also
measure ``c_mem`` (seconds per byte moved, from a device copy; their per-element ``c_out`` is then
0), the fixed cost of an FFT call (``fft_call``) and the float32 factors.

>>> import convkit.tune
>>> caps = convkit.tune.tune(apply=False, quick=True)  # doctest: +SKIP
>>> caps = convkit.tune.tune(apply=False, quick=True, backend="jax")  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import re
import time

import numpy as np

from .choose import Capabilities, _fft_traffic, _log_work, fft_lengths, oa_1d_block

__all__ = ["tune", "apply", "save", "load", "default_path", "device_name"]


def device_name(backend: str = "numpy") -> str:
    """A file-name-safe name of the device ``backend`` computes on (``"cpu"`` for NumPy; the GPU's
    name for CuPy; JAX's default device kind), used in :func:`default_path`."""
    if backend == "numpy":
        return "cpu"
    from .dispatch import get_backend

    be = get_backend(backend)
    name = ""
    try:
        if getattr(be, "array_module", "") == "jax":
            import jax

            dev = jax.devices()[0]
            name = f"{dev.platform}-{getattr(dev, 'device_kind', '') or ''}"
        else:
            cuda = getattr(be.xp, "cuda", None)
            if cuda is not None:
                dev = cuda.Device()
                props = cuda.runtime.getDeviceProperties(dev.id)
                raw = props.get("name", b"")
                name = raw.decode() if isinstance(raw, bytes) else str(raw)
    except Exception:  # no device, stand-in modules: a generic name
        name = ""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-").lower()
    return name or "device"


def default_path(backend: str = "numpy", device: str | None = None) -> str:
    """Where :func:`save` and :func:`load` keep ``backend``'s constants by default: one file per
    backend and device (``device``: :func:`device_name` when left out)."""
    if backend == "numpy":
        env = os.environ.get("CONVKIT_TUNE_FILE", "").strip()
        if env:
            return env
        fname = "tune-numpy.json"
    else:
        fname = f"tune-{backend}-{device or device_name(backend)}.json"
    return os.path.join(os.path.expanduser("~"), ".cache", "convkit", fname)


def _best(fn, repeats: int) -> float:
    fn()
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def tune(*, apply: bool = True, quick: bool = False, repeats: int = 3, backend: str = "numpy",
         size: int | None = None) -> Capabilities:
    """Time ``backend``'s primitives here (its device, synchronised) and return fitted
    :class:`Capabilities`. ``size``: side of the 2-D test input (default 1000, 500 with
    ``quick``; tests use tiny ones)."""
    from .dispatch import get_backend

    if backend != "numpy" or size is not None:
        be = get_backend(backend)
        ctx = contextlib.nullcontext()
        if getattr(be, "array_module", "") == "jax":  # float64 on the device, as host data runs
            from convkit.backends.jax._common import _enable_x64

            ctx = _enable_x64()
        with ctx:
            caps = _tune_device(be, quick=quick, repeats=repeats, size=size)
        if apply:
            globals()["apply"](caps, backend)
        return caps
    from .api import convolve

    be = get_backend("numpy")
    base = be.capabilities
    rng = np.random.default_rng(0)
    n2 = 500 if quick else 1000
    x2 = rng.standard_normal((n2, n2))
    big = rng.standard_normal(n2 * n2)
    c_out = _best(lambda: big.copy(), repeats) / big.size

    x1 = rng.standard_normal(50_000 if quick else 200_000)
    k1 = rng.standard_normal(128)
    k7 = rng.standard_normal((7, 7))
    engines, numba = getattr(be, "engines", False), getattr(be, "numba", False)
    try:  # numpy.convolve and scipy.ndimage themselves, not a host engine's loop or filter
        be.engines = be.numba = False
        t = _best(lambda: convolve(x1, k1, method="direct"), repeats)
        c_direct_1d = max(t - c_out * x1.size, t / 2) / (x1.size * k1.size)
        t = _best(lambda: convolve(x2, k7, "same", method="direct"), repeats)
        k15 = rng.standard_normal((15, 15))
        # scipy.fft itself: on a quick run's 500x500 image OpenCV's DFT would run the FFT instead
        t_fft = _best(lambda: convolve(x2, k15, "same", method="fft"), repeats)
    finally:
        be.engines, be.numba = engines, numba
    c_direct = max(t - c_out * x2.size, t / 2) / (x2.size * k7.size)

    lengths = fft_lengths([n2 + 14] * 2, [15, 15], [(7, 7)] * 2)  # 'same': n2 + 7 per axis
    tt = math.prod(lengths)
    fixed = base.fft_call + base.fft_nd_call  # a 2-D call
    c_fft = max(t_fft - 3 * c_out * tt - fixed, t_fft / 2) / (2.5 * tt * _log_work(lengths))

    g = np.exp(-0.5 * np.linspace(-2.5, 2.5, 15) ** 2)
    plan_caps = dataclasses.replace(base, c_sep=1e-30)  # force the separable path for the timing
    be_caps = be.capabilities
    try:
        be.capabilities = plan_caps
        t = _best(lambda: convolve(x2, np.outer(g, g), "same"), repeats)
    finally:
        be.capabilities = be_caps
    c_sep = max(t - 4 * c_out * x2.size, t / 2) / (x2.size * 30)

    # the batched one-axis overlap-add: its cost beyond the transforms, per block element
    extra = {}
    if base.oa_1d_out is not None:
        nfft = oa_1d_block(k1.size)
        total = math.ceil((x1.size + k1.size - 1) / (nfft - k1.size + 1)) * nfft
        t = _best(lambda: convolve(x1, k1, method="oa"), repeats)
        transforms = c_fft * 2.5 * total * _log_work([nfft]) + (base.oa_1d_call or 0.0)
        extra["oa_1d_out"] = max(t - transforms, t / 4) / total

    # the host engines' constants (OpenCV on the NumPy backend), measured by the backend itself
    fused = (be.measure_engines(n2, lambda fn: _best(fn, repeats))
             if engines and hasattr(be, "measure_engines") else {})
    caps = dataclasses.replace(base, c_direct=c_direct, c_direct_1d=c_direct_1d, c_fft=c_fft, c_out=c_out,
                               c_sep=c_sep, **extra, **fused)
    if apply:
        globals()["apply"](caps)
    return caps


def _tune_device(be, *, quick: bool, repeats: int, size: int | None) -> Capabilities:
    """The tuner of a device backend: inputs moved to the device once, every timing ends with
    ``be.sync`` on the result, memory traffic measured as its own term (``c_mem``)."""
    from .api import convolve

    base = be.capabilities
    rng = np.random.default_rng(0)
    n2 = size or (1024 if quick else 2048)
    n1 = max(n2 * n2 // 16, 64)

    def timed(fn) -> float:
        return _best(lambda: be.sync(fn()), repeats)

    def conv(x, k, **kw):
        return lambda: convolve(x, k, "same", backend=be.name, **kw)

    big = be.asarray(rng.standard_normal(n2 * n2))
    xp = be.xp
    t = timed(lambda: xp.multiply(big, 1.0))  # one read, one write, no arithmetic to speak of
    c_mem = t / (2 * 8 * n2 * n2)

    x2 = be.asarray(rng.standard_normal((n2, n2)))
    x2s = be.asarray(rng.standard_normal((n2, n2)).astype(np.float32))
    k7 = rng.standard_normal((7, 7))
    d_bytes = 8 * 2 * n2 * n2
    t64 = timed(conv(x2, be.asarray(k7), method="direct"))
    c_direct = max(t64 - c_mem * d_bytes, t64 / 2) / (n2 * n2 * 49)
    t32 = timed(conv(x2s, be.asarray(k7.astype(np.float32)), method="direct"))
    single_direct = min(max(t32 / t64, 0.1), 2.0)

    x1 = be.asarray(rng.standard_normal(n1))
    k1 = be.asarray(rng.standard_normal(31))
    t = timed(lambda: convolve(x1, k1, backend=be.name, method="direct"))
    c_direct_1d = max(t - c_mem * 8 * 2 * n1, t / 2) / (n1 * 31)

    tiny, ktiny = be.asarray(rng.standard_normal((8, 8))), be.asarray(rng.standard_normal((3, 3)))
    fft_call = timed(conv(tiny, ktiny, method="fft"))

    k15 = rng.standard_normal((15, 15))
    t64 = timed(conv(x2, be.asarray(k15), method="fft"))
    lengths = fft_lengths([n2 + 14] * 2, [15, 15], [(7, 7)] * 2)  # 'same': n2 + 7 per axis
    tt = math.prod(lengths)
    traffic = c_mem * _fft_traffic(1, [n2 + 14] * 2, [15, 15], n2 * n2, 8, pads=[(7, 7)] * 2)
    c_fft = max(t64 - traffic - fft_call, t64 / 4) / (2.5 * tt * _log_work(lengths))
    t32 = timed(conv(x2s, be.asarray(k15.astype(np.float32)), method="fft"))
    single_fft = min(max(t32 / t64, 0.1), 2.0)

    g = np.exp(-0.5 * np.linspace(-2.5, 2.5, 15) ** 2)
    outer = np.outer(g, g)
    kg, kg32 = be.asarray(outer), be.asarray(outer.astype(np.float32))
    saved = be.capabilities
    try:
        be.capabilities = dataclasses.replace(base, c_sep=1e-30)  # force the separable path
        t = timed(lambda: convolve(x2, kg, "same", backend=be.name))
        t32 = timed(lambda: convolve(x2s, kg32, "same", backend=be.name))
    finally:
        be.capabilities = saved
    c_sep = max(t - c_mem * 8 * 4 * n2 * n2, t / 2) / (n2 * n2 * 30)
    single_sep = min(max(t32 / t, 0.05), 2.0)

    # the backend's own extra constants (the JAX backend's CPU handoff), measured by the backend
    extra = be.measure_engines(n2, lambda fn: _best(fn, repeats)) if hasattr(be, "measure_engines") else {}
    return dataclasses.replace(base, c_direct=c_direct, c_direct_1d=c_direct_1d, c_fft=c_fft, c_out=0.0,
                               c_mem=c_mem, c_sep=c_sep, fft_call=fft_call, single_direct=single_direct,
                               single_direct_1d=single_direct, single_fft=single_fft, single_sep=single_sep,
                               **extra)


def apply(caps: Capabilities, backend: str = "numpy") -> None:
    """Make ``backend`` use ``caps`` for the rest of this process (plans are re-derived; a backend
    with per-platform constants, JAX, replaces those of its current platform only)."""
    from .dispatch import get_backend

    if not isinstance(caps, Capabilities):
        raise TypeError(f"caps={caps!r} is not accepted; expected a convkit.choose.Capabilities")
    get_backend(backend).capabilities = caps


def save(caps: Capabilities, path: str | None = None, *, backend: str = "numpy",
         device: str | None = None) -> str:
    """Write ``caps`` as JSON (default :func:`default_path` of ``backend`` and ``device``); return
    the path. The file also names the backend and device it was measured on."""
    if path is None:
        device = device or device_name(backend)
        path = default_path(backend, device)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    data = dataclasses.asdict(caps)
    data["_backend"], data["_device"] = backend, device or device_name(backend)
    with open(path, "w") as f:
        json.dump(data, f, indent=1)
    return path


def load(path: str | None = None, *, backend: str = "numpy", device: str | None = None) -> Capabilities:
    """Read constants written by :func:`save` (default: ``backend``'s file for ``device``, the
    current device when left out)."""
    with open(path or default_path(backend, device)) as f:
        data = json.load(f)
    data["methods"] = tuple(data.get("methods", ("direct", "fft", "oa")))
    data = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}  # JSON has no tuples
    fields = {f.name for f in dataclasses.fields(Capabilities)}
    return Capabilities(**{k: v for k, v in data.items() if k in fields})
