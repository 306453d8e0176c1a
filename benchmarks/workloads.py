"""The named workloads of the benchmark suite (``--suite smoke|quick|mid|standard|dilated``).

``standard`` is the large rows (1e6 samples, 2000² and 4096² images, 128³ volumes) followed by
the ``mid`` rows (512² images, 1e5 samples, 64³ volumes: the sizes most calls have), so one
standard run answers both the large-input and the mid-size targets. ``quick`` is the large
rows' shapes at mid sizes (under a minute), ``smoke`` seconds-long shapes for the tests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["Workload", "SUITES", "suite"]


@dataclass(frozen=True)
class Workload:
    """One convolution call: ``convolve(x, k, mode, axes=axes, dilation=dilation)`` on random data."""

    name: str
    group: str  # "1-D", "2-D", "3-D", "batched", "overhead"
    x_shape: tuple[int, ...]
    k_shape: tuple[int, ...]
    mode: str = "same"
    axes: tuple[int, ...] | None = None
    kernel: str = "random"  # "random" or "gaussian" (separable)
    dtypes: tuple[str, ...] | None = None  # run only in these dtypes (None: every requested one)
    dilation: int = 1  # on every convolved axis; peers without a dilation get the zero-stuffed kernel

    def make(self, dtype, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Inputs in ``dtype`` (the same arrays are given to every contender)."""
        rng = np.random.default_rng(seed)
        x = rng.standard_normal(self.x_shape).astype(dtype)
        if self.kernel == "gaussian":
            k = np.ones((), dtype=np.float64)
            for m in self.k_shape:
                t = np.linspace(-2.5, 2.5, m)
                g = np.exp(-0.5 * t * t)
                k = np.multiply.outer(k, g / g.sum())
            k = k.astype(dtype)
        else:
            k = rng.standard_normal(self.k_shape).astype(dtype)
        return x, k

    def dilated(self, k):
        """The kernel with ``dilation - 1`` zeros between its taps on every axis: what a peer
        without a dilation computes the same correlation with (on finite data)."""
        if self.dilation == 1:
            return k
        out = np.zeros(tuple((m - 1) * self.dilation + 1 for m in k.shape), dtype=k.dtype)
        out[(slice(None, None, self.dilation),) * k.ndim] = k
        return out

    def k_full(self, k):
        """The :meth:`dilated` kernel with size-1 axes inserted so it has the input's ndim (for
        peers without ``axes``)."""
        k = self.dilated(k)
        if self.axes is None or k.ndim == len(self.x_shape):
            return k
        shape = [1] * len(self.x_shape)
        for a, s in zip(sorted(self.axes), k.shape):
            shape[a] = s
        return k.reshape(shape)

    def runs_in(self, dtype) -> bool:
        """Whether this workload is part of a run in ``dtype`` (some rows exist for one dtype only)."""
        return self.dtypes is None or np.dtype(dtype).name in self.dtypes

    @property
    def conv_axes(self) -> tuple[int, ...]:
        return tuple(range(len(self.x_shape))) if self.axes is None else tuple(sorted(self.axes))

    @property
    def macs(self) -> int:
        """Multiply-adds of the direct method, the kernel's taps only (a size hint)."""
        return math.prod(self.x_shape) * math.prod(self.k_shape)

    def describe(self) -> str:
        xs = "x".join(map(str, self.x_shape))
        ks = "x".join(map(str, self.k_shape))
        extra = f" axes={self.axes}" if self.axes else ""
        kind = " gauss" if self.kernel == "gaussian" else ""
        dilated = f" dilation={self.dilation}" if self.dilation > 1 else ""
        return f"{xs} * {ks}{kind} {self.mode}{extra}{dilated}"


def _graded(n: int, tag: str, side: int, big_side: int, cube: int, batch: tuple[int, int]) -> list[Workload]:
    """The workload list of the standard and quick suites, at one set of sizes.

    ``n`` samples (``tag`` names it), ``side``-square images, a ``big_side`` image for the 63x63
    kernel, ``cube``-cubed volumes and ``batch = (count, side)`` batched images.
    """
    w = [Workload(f"1d-{tag}x{m}", "1-D", (n,), (m,), "full") for m in (16, 256, 4096)]
    w += [Workload(f"2d-{side}x{m}x{m}", "2-D", (side, side), (m, m)) for m in (3, 7, 15)]
    w += [Workload(f"2d-{side}xgauss15", "2-D", (side, side), (15, 15), kernel="gaussian"),
          Workload(f"2d-{big_side}x63x63", "2-D", (big_side, big_side), (63, 63))]
    w += [Workload(f"3d-{cube}x{m}^3", "3-D", (cube,) * 3, (m, m, m)) for m in (3, 7)]
    count, bside = batch
    w += [Workload(f"batch-{count}x{bside}x5x5", "batched", (count, bside, bside), (5, 5), axes=(1, 2)),
          Workload("tiny-64x3", "overhead", (64,), (3,), "full")]
    return w


def _large() -> list[Workload]:
    """The large rows: :func:`_graded` at 1e6 samples and 2000² images, plus a 4096² float32 3x3
    image (a 64 MB input: the memory-bound case of issue 13)."""
    w = _graded(10**6, "1e6", 2000, 1024, 128, (64, 256))
    at = next(i for i, x in enumerate(w) if x.name == "2d-2000x3x3")
    w.insert(at + 1, Workload("2d-4096x3x3", "2-D", (4096, 4096), (3, 3), dtypes=("float32",)))
    return w


def _mid() -> list[Workload]:
    """The mid-size rows of issue 17 (0.1-5 ms calls, where fixed costs decide), float32 and float64."""
    return [
        Workload("2d-500x3x3", "2-D", (500, 500), (3, 3)),
        Workload("2d-512x5x5", "2-D", (512, 512), (5, 5)),
        Workload("2d-500x7x7", "2-D", (500, 500), (7, 7)),
        Workload("2d-256x63x63", "2-D", (256, 256), (63, 63)),
        Workload("1d-1e5x16", "1-D", (10**5,), (16,), "full"),
        Workload("1d-1e5x256", "1-D", (10**5,), (256,), "full"),
        Workload("1d-1e5x65-same", "1-D", (10**5,), (65,)),
        Workload("3d-64x5^3", "3-D", (64, 64, 64), (5, 5, 5)),
        Workload("batch-16x128x5x5", "batched", (16, 128, 128), (5, 5), axes=(1, 2)),
    ]


def _std() -> list[Workload]:
    """The standard run: the large rows, then the mid rows."""
    return _large() + _mid()


def _quick() -> list[Workload]:
    return _graded(10**5, "1e5", 500, 256, 64, (16, 128))


def _smoke() -> list[Workload]:
    return [
        Workload("1d-2000x16", "1-D", (2000,), (16,), "full"),
        Workload("2d-64x3x3", "2-D", (64, 64), (3, 3)),
        Workload("2d-64xgauss9", "2-D", (64, 64), (9, 9), kernel="gaussian"),
        Workload("3d-16x3^3", "3-D", (16, 16, 16), (3, 3, 3)),
        Workload("batch-4x32x5x5", "batched", (4, 32, 32), (5, 5), axes=(1, 2)),
        Workload("tiny-64x3", "overhead", (64,), (3,), "full"),
    ]


def _dilated() -> list[Workload]:
    """Dilated kernels (``--suite dilated``): the NumPy backend runs them on the input's phases;
    torch takes the dilation, the other peers a zero-stuffed kernel (docs/benchmarks.md)."""
    return [
        Workload("2d-2000x3x3-d32", "2-D", (2000, 2000), (3, 3), dilation=32),
        Workload("2d-1000x5x5-d4", "2-D", (1000, 1000), (5, 5), dilation=4),
        Workload("2d-512x3x3-d8", "2-D", (512, 512), (3, 3), dilation=8),
        Workload("1d-1e6x9-d16", "1-D", (10**6,), (9,), dilation=16),
        Workload("1d-1e5x3-d64", "1-D", (10**5,), (3,), dilation=64),
    ]


SUITES = {"smoke": _smoke, "quick": _quick, "mid": _mid, "standard": _std, "dilated": _dilated}


def suite(name: str) -> list[Workload]:
    """The workloads of suite ``name``."""
    try:
        return SUITES[name]()
    except KeyError:
        raise ValueError(f"--suite {name!r} is not known; expected one of {', '.join(SUITES)}") from None
