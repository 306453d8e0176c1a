"""The NumPy backend's real FFT: one axis at a time, over the rows it needs only (S1, S5).

``linear_conv`` transforms the real axis over the rows of the data and of the kernel only, and
inverts it over the rows that ``keep`` selects. Oracles: SciPy's direct convolution in float64
(the full linear convolution, then the same slices), and the shared ``rfftn``/``irfftn`` path
over the padded arrays.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal

from convkit.backends import numpy as nb
from convkit.backends._base import ArrayBackend

CASES = [
    # x shape, kernel shape, axes, FFT sizes, kept slices
    ((37, 29), (5, 7), (0, 1), (45, 36), (slice(4, 37), slice(6, 29))),
    ((37, 29), (5, 7), (0, 1), (45, 36), (slice(2, 39, 3), slice(1, 34, 2))),
    ((3, 20, 24), (1, 9, 4), (1, 2), (30, 27), (slice(None), slice(8, 28), slice(0, 27, 5))),
    ((20, 3, 24), (9, 1, 4), (0, 2), (28, 27), (slice(0, 28, 4), slice(None), slice(3, 24))),
    ((6, 7, 8), (3, 2, 5), (0, 1, 2), (8, 8, 12), (slice(2, 8), slice(1, 7, 2), slice(4, 12))),
    ((50,), (9,), (0,), (60,), (slice(8, 58, 7),)),
]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", CASES, ids=range(len(CASES)))
def test_kept_rows_are_those_of_the_whole_convolution(rng, dtype, case):
    x_shape, k_shape, axes, sizes, keep = case
    be = nb.NumpyBackend()
    x = rng.standard_normal(x_shape).astype(dtype)
    wf = rng.standard_normal(k_shape).astype(dtype)
    got = be.linear_conv(x, wf, sizes, axes, True, "fft", keep=keep)
    whole = ArrayBackend.linear_conv(be, x, wf, sizes, axes, True, "fft")
    oracle = _full_direct(x.astype(np.float64), wf.astype(np.float64), axes)
    eps = np.finfo(dtype).eps
    scale = np.sqrt(x.size) * np.abs(x).max() * np.abs(wf).sum()
    assert got.shape == whole[keep].shape and got.dtype == whole.dtype
    np.testing.assert_allclose(got, whole[keep], rtol=0, atol=64 * eps * scale)
    np.testing.assert_allclose(got, oracle[keep], rtol=0, atol=64 * eps * scale)


def _full_direct(x, wf, axes):
    """The full linear convolution over ``axes`` by SciPy's direct method, image by image
    along the one other dimension (where the kernel has size 1)."""
    if len(axes) == x.ndim:
        return scipy.signal.convolve(x, wf, method="direct")
    batch = next(a for a in range(x.ndim) if a not in axes)
    k = np.take(wf, 0, batch)
    images = np.moveaxis(x, batch, 0)
    return np.stack([scipy.signal.convolve(img, k, method="direct") for img in images], batch)


def test_without_keep_the_whole_circular_convolution(rng):
    be = nb.NumpyBackend()
    x, wf = rng.standard_normal((12, 10)), rng.standard_normal((3, 4))
    got = be.linear_conv(x, wf, (14, 13), (0, 1), True, "fft")
    oracle = scipy.signal.convolve(x, wf, method="direct")
    assert got.shape == (14, 13)
    np.testing.assert_allclose(got, oracle, rtol=0, atol=1e-12)
