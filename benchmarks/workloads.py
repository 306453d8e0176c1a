"""The named workloads of the benchmark suite (``--suite smoke|quick|standard``)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["Workload", "SUITES", "suite"]


@dataclass(frozen=True)
class Workload:
    """One convolution call: ``convolve(x, k, mode, axes=axes)`` on random data."""

    name: str
    group: str  # "1-D", "2-D", "3-D", "batched", "overhead"
    x_shape: tuple[int, ...]
    k_shape: tuple[int, ...]
    mode: str = "same"
    axes: tuple[int, ...] | None = None
    kernel: str = "random"  # "random" or "gaussian" (separable)

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

    def k_full(self, k):
        """The kernel with size-1 axes inserted so it has the input's ndim (for peers without ``axes``)."""
        if self.axes is None or k.ndim == len(self.x_shape):
            return k
        shape = [1] * len(self.x_shape)
        for a, s in zip(sorted(self.axes), k.shape):
            shape[a] = s
        return k.reshape(shape)

    @property
    def conv_axes(self) -> tuple[int, ...]:
        return tuple(range(len(self.x_shape))) if self.axes is None else tuple(sorted(self.axes))

    @property
    def macs(self) -> int:
        """Multiply-adds of the direct method (a size hint)."""
        return math.prod(self.x_shape) * math.prod(self.k_shape)

    def describe(self) -> str:
        xs = "x".join(map(str, self.x_shape))
        ks = "x".join(map(str, self.k_shape))
        extra = f" axes={self.axes}" if self.axes else ""
        kind = " gauss" if self.kernel == "gaussian" else ""
        return f"{xs} * {ks}{kind} {self.mode}{extra}"


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


def _std() -> list[Workload]:
    return _graded(10**6, "1e6", 2000, 1024, 128, (64, 256))


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


SUITES = {"smoke": _smoke, "quick": _quick, "standard": _std}


def suite(name: str) -> list[Workload]:
    """The workloads of suite ``name``."""
    try:
        return SUITES[name]()
    except KeyError:
        raise ValueError(f"--suite {name!r} is not known; expected one of {', '.join(SUITES)}") from None
