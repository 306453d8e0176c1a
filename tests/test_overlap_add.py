"""The NumPy backend's 1-D overlap-add (batched block transforms): against ``numpy.convolve``
in float64 (S5), its blocks fixed by the kernel alone (S8), dtypes kept (S4), and the cost
model's one-axis terms."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import convkit
from convkit.backends import numpy as npb
from convkit.backends.overlap_add import block_fft_size, overlap_add_full
from convkit.choose import method_costs
from convkit.testing import assert_conv_close

CAPS = npb.backend.capabilities


def _bound(x, w, nfft) -> float:
    """A generous S5-style bound for one block FFT product: eps * log2(nfft) * sum|x| * max|w|-ish."""
    eps = np.finfo(np.result_type(x, w)).eps
    return 8 * eps * np.log2(nfft) * float(np.abs(x).max()) * float(np.abs(w).sum()) + 1e-300


@pytest.mark.parametrize("n, m", [(1, 1), (10, 1), (5, 3), (100, 7), (64, 200), (513, 64),
                                  (476, 65), (952, 65), (953, 65), (10_000, 16), (100_000, 65)])
def test_matches_numpy_convolve_float64(rng, n, m):  # S5
    x, w = rng.standard_normal(n), rng.standard_normal(m)
    got = overlap_add_full(x, w, 0)
    ref = np.convolve(x, w)
    assert got.shape == ref.shape
    assert np.abs(got - ref).max() <= _bound(x, w, block_fft_size(m))


@pytest.mark.parametrize("dtype", ["float32", "float64", "complex64", "complex128"])
def test_dtype_is_kept(rng, dtype):  # S4
    x = rng.standard_normal(3000).astype(dtype)
    w = rng.standard_normal(33).astype(dtype)
    if np.dtype(dtype).kind == "c":
        x = x + 1j * rng.standard_normal(3000).astype(dtype)
    got = overlap_add_full(x, w, 0)
    assert got.dtype == np.dtype(dtype)
    wide = np.complex128 if x.dtype.kind == "c" else np.float64
    ref = np.convolve(x.astype(wide), w.astype(wide))
    assert np.abs(got - ref).max() <= _bound(x, w, block_fft_size(33))


def test_other_axes_broadcast(rng):  # S10
    x, w = rng.standard_normal((3, 1000, 2)), rng.standard_normal((1, 33, 2))
    got = overlap_add_full(x, w, 1)
    ref = np.stack([np.stack([np.convolve(x[i, :, j], w[0, :, j]) for j in range(2)], -1) for i in range(3)])
    assert got.shape == ref.shape and np.abs(got - ref).max() <= _bound(x, w, block_fft_size(33))
    x1, wk = rng.standard_normal((1, 900)), rng.standard_normal((4, 20))  # one input, many kernels
    got = overlap_add_full(x1, wk, 1)
    ref = np.stack([np.convolve(x1[0], wk[i]) for i in range(4)])
    assert got.shape == (4, 919) and np.abs(got - ref).max() <= _bound(x1, wk, block_fft_size(20))


def test_blocks_depend_on_the_kernel_only(rng):  # S8
    """Outputs before the last whole block of a prefix are the same bits for the prefix and for
    the whole signal: where the blocks start never depends on the input length."""
    m = 65
    step = block_fft_size(m) - m + 1
    x, w = rng.standard_normal(20 * step + 17), rng.standard_normal(m)
    whole = overlap_add_full(x, w, 0)
    for q in (2, 7, 20):
        prefix = overlap_add_full(x[:q * step], w, 0)
        np.testing.assert_array_equal(prefix[:q * step], whole[:q * step])


@pytest.mark.parametrize("mode", ["full", "same", "valid"])
@pytest.mark.parametrize("op", ["convolve", "correlate"])
def test_numpy_backend_oa_is_the_batched_path(rng, monkeypatch, op, mode):  # S1, S2, S5
    calls = []
    real = npb.overlap_add_full
    monkeypatch.setattr(npb, "overlap_add_full", lambda *a: calls.append(1) or real(*a))
    a, b = rng.standard_normal(5000), rng.standard_normal(40)
    got = getattr(convkit, op)(a, b, mode, method="oa", backend="numpy")
    import scipy.signal

    ref = getattr(scipy.signal, op)(a, b, mode, method="direct")
    assert_conv_close(got, ref, a, b, op, method="oa", mode=mode)
    assert calls == [1]


def test_one_axis_costs_use_their_own_constants():
    """``oa_1d_out`` / ``oa_1d_call`` price overlap-add along one axis only; without them the
    general terms apply, and 2-D overlap-add never uses them."""
    one = dict(out_shape=(10**5 + 255,), x_shape=(10**5,), k_shape=(256,), axes=(0,),
               pads=((255, 255),), dilation=(1,))
    two = dict(out_shape=(600, 600), x_shape=(600, 600), k_shape=(31, 31), axes=(0, 1),
               pads=((15, 15), (15, 15)), dilation=(1, 1))
    general = dataclasses.replace(CAPS, oa_1d_out=None, oa_1d_call=None, fused_engine="", c_fused_dft=0.0)
    cheap = dataclasses.replace(general, oa_1d_out=0.0, oa_1d_call=0.0)
    assert method_costs(caps=cheap, **one)["oa"] < method_costs(caps=general, **one)["oa"]
    assert method_costs(caps=cheap, **two)["oa"] == method_costs(caps=general, **two)["oa"]


def test_auto_picks_overlap_add_for_long_mid_size_signals():  # S8 (shapes only)
    from convkit.plan import plan_call

    x, k = np.zeros(10**5), np.zeros(256)
    assert plan_call("convolve", x, k, CAPS, mode="full").method == "oa"
    assert plan_call("convolve", np.zeros(10**4), np.zeros(16), CAPS, mode="full").method == "direct"
