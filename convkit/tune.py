"""Measure this machine's constants for the cost model of ``method="auto"`` (NumPy backend).

The NumPy backend ships constants measured on a 2-core x86-64; on another machine the
cross-over points between direct, FFT, overlap-add and separable passes move. ``tune()``
times each primitive through the backend itself (a few seconds), and returns a
:class:`convkit.choose.Capabilities` with the fitted constants; ``apply=True`` makes the
backend use them for the rest of the process, and :func:`save` / :func:`load` keep them in a
JSON file (``$CONVKIT_TUNE_FILE`` or ``~/.cache/convkit/tune-numpy.json``). Nothing is loaded
automatically: call ``convkit.tune.apply(convkit.tune.load())`` at start-up to use saved ones.

>>> import convkit.tune
>>> caps = convkit.tune.tune(apply=False, quick=True)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time

import numpy as np

from .choose import Capabilities, _log_work, fast_len

__all__ = ["tune", "apply", "save", "load", "default_path"]


def default_path() -> str:
    """Where :func:`save` and :func:`load` keep the constants by default."""
    env = os.environ.get("CONVKIT_TUNE_FILE", "").strip()
    if env:
        return env
    return os.path.join(os.path.expanduser("~"), ".cache", "convkit", "tune-numpy.json")


def _best(fn, repeats: int) -> float:
    fn()
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def tune(*, apply: bool = True, quick: bool = False, repeats: int = 3) -> Capabilities:
    """Time the NumPy backend's primitives here and return fitted :class:`Capabilities`."""
    from .api import convolve
    from .dispatch import get_backend

    be = get_backend("numpy")
    base = be.capabilities
    rng = np.random.default_rng(0)
    n2 = 500 if quick else 1000
    x2 = rng.standard_normal((n2, n2))
    big = rng.standard_normal(n2 * n2)
    c_out = _best(lambda: big.copy(), repeats) / big.size

    x1 = rng.standard_normal(50_000 if quick else 200_000)
    k1 = rng.standard_normal(128)
    t = _best(lambda: convolve(x1, k1, method="direct"), repeats)
    c_direct_1d = max(t - c_out * x1.size, t / 2) / (x1.size * k1.size)

    k7 = rng.standard_normal((7, 7))
    t = _best(lambda: convolve(x2, k7, "same", method="direct"), repeats)
    c_direct = max(t - c_out * x2.size, t / 2) / (x2.size * k7.size)

    k15 = rng.standard_normal((15, 15))
    t = _best(lambda: convolve(x2, k15, "same", method="fft"), repeats)
    lengths = [fast_len(n2 + 14)] * 2
    tt = math.prod(lengths)
    c_fft = max(t - 3 * c_out * tt - base.fft_call, t / 2) / (2.5 * tt * _log_work(lengths))

    g = np.exp(-0.5 * np.linspace(-2.5, 2.5, 15) ** 2)
    plan_caps = dataclasses.replace(base, c_sep=1e-30)  # force the separable path for the timing
    be_caps = be.capabilities
    try:
        be.capabilities = plan_caps
        t = _best(lambda: convolve(x2, np.outer(g, g), "same"), repeats)
    finally:
        be.capabilities = be_caps
    c_sep = max(t - 4 * c_out * x2.size, t / 2) / (x2.size * 30)

    caps = dataclasses.replace(base, c_direct=c_direct, c_direct_1d=c_direct_1d, c_fft=c_fft, c_out=c_out,
                               c_sep=c_sep)
    if apply:
        globals()["apply"](caps)
    return caps


def apply(caps: Capabilities, backend: str = "numpy") -> None:
    """Make ``backend`` use ``caps`` for the rest of this process (plans are re-derived)."""
    from .dispatch import get_backend

    if not isinstance(caps, Capabilities):
        raise TypeError(f"caps={caps!r} is not accepted; expected a convkit.choose.Capabilities")
    get_backend(backend).capabilities = caps


def save(caps: Capabilities, path: str | None = None) -> str:
    """Write ``caps`` as JSON (default :func:`default_path`); return the path."""
    path = path or default_path()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(dataclasses.asdict(caps), f, indent=1)
    return path


def load(path: str | None = None) -> Capabilities:
    """Read constants written by :func:`save`."""
    with open(path or default_path()) as f:
        data = json.load(f)
    data["methods"] = tuple(data.get("methods", ("direct", "fft", "oa")))
    fields = {f.name for f in dataclasses.fields(Capabilities)}
    return Capabilities(**{k: v for k, v in data.items() if k in fields})
