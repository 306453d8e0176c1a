"""Non-finite values (S9): method='auto' is NaN-safe, explicit FFT spreads NaN."""

from __future__ import annotations

import numpy as np
import pytest
from reference import assert_matches, reference

import convkit
from convkit.dispatch import get_backend
from convkit.options import make_options
from convkit.plan import make_plan


def _auto_method(runner, op, x, k, mode, **kw):
    """The method the cost model of ``runner``'s backend picks for this call."""
    plan = make_plan(op, x.shape, k.shape, x.dtype, k.dtype, make_options(mode=mode, axes=kw.get("axes")),
                     get_backend(runner.backend).capabilities)
    return plan.method


def _window_nan_mask(x, k, op, mode, **kw):
    """Outputs whose window contains a non-finite input: exact integer reference of S1."""
    bad = (~np.isfinite(x)).astype(np.int64)
    return reference(op, bad, np.ones(k.shape, dtype=np.int64), mode, **kw) != 0


@pytest.mark.parametrize("mode", ["full", "same", "valid"])
@pytest.mark.parametrize("op", ["convolve", "correlate"])
def test_s9_auto_is_nan_safe_where_fft_is_chosen(runner, rng, op, mode):
    """S9: 5000 samples with one NaN, 500 taps: the cost model picks FFT, yet 'auto' gives
    the NaN positions of 'direct' (only windows containing the NaN)."""
    x, k = rng.standard_normal(5000), rng.standard_normal(500)
    if runner.backend == "numpy":
        assert _auto_method(runner, op, x, k, mode) in ("fft", "oa"), "case no longer exercises the FFT pick"
    x[2500] = np.nan
    direct = runner.run(op, x, k, mode, method="direct")
    auto = runner.run(op, x, k, mode, method="auto")
    np.testing.assert_array_equal(np.isnan(auto), np.isnan(direct))
    np.testing.assert_array_equal(np.isnan(direct), _window_nan_mask(x, k, op, mode))
    assert 0 < np.isnan(auto).sum() < auto.size
    assert_matches(auto, reference(op, x, k, mode), x, k, op, method="auto", mode=mode)


@pytest.mark.parametrize("method", ["fft", "oa"])
def test_s9_explicit_fft_spreads_nan(runner, rng, method):
    """S9: an explicit method='fft'/'oa' keeps FFT behaviour: one NaN poisons every output
    (at least far more outputs than the windows that contain it)."""
    x, k = rng.standard_normal(1000), rng.standard_normal(200)
    x[500] = np.nan
    out = runner.run("convolve", x, k, "same", method=method)
    assert np.isnan(out).sum() > np.sum(_window_nan_mask(x, k, "convolve", "same"))
    assert not np.isfinite(out).any()


@pytest.mark.parametrize("value", [np.inf, -np.inf, np.nan])
def test_s9_inf_positions_2d(runner, rng, value):
    """S9: Inf/NaN in a 2-D image: 'auto' equals 'direct' position for position (+Inf, -Inf, NaN)."""
    x, k = rng.standard_normal((120, 120)), np.abs(rng.standard_normal((15, 15))) + 0.1
    x[30, 40] = value
    direct = runner.run("correlate", x, k, "same", method="direct")
    auto = runner.run("correlate", x, k, "same", method="auto")
    for pred in (np.isnan, np.isposinf, np.isneginf):
        np.testing.assert_array_equal(pred(auto), pred(direct))
    assert_matches(auto, reference("correlate", x, k, "same"), x, k, "correlate", mode="same")


def test_s9_nan_in_kernel_and_complex(runner, rng):
    """S9: a NaN in the kernel poisons every output containing that tap; complex data too."""
    x = rng.standard_normal(600) + 1j * rng.standard_normal(600)
    k = rng.standard_normal(150) + 1j * rng.standard_normal(150)
    k[10] = np.nan
    auto = runner.run("convolve", x, k, "valid")
    direct = runner.run("convolve", x, k, "valid", method="direct")
    np.testing.assert_array_equal(np.isnan(auto), np.isnan(direct))
    assert np.isnan(direct).all()  # every valid window meets every tap
    x[300] = np.nan + 0j
    k[10] = 1.0
    auto = runner.run("convolve", x, k, "full")
    direct = runner.run("convolve", x, k, "full", method="direct")
    np.testing.assert_array_equal(np.isnan(auto), np.isnan(direct))
    assert np.isnan(direct).sum() == 150


@pytest.mark.parametrize("shape", [(3000,), (60, 70)])
def test_s9_complex_inf_positions(runner, rng, shape):
    """S9: an Inf in complex data makes non-finite exactly the outputs whose window holds it;
    which part of such an output is NaN follows the engine's complex arithmetic (NumPy's
    ``convolve`` multiplies ``inf+0j`` by ``a+bj`` to ``nan+infj`` where the elementwise
    product gives ``inf+infj``), so only finiteness is compared, part by part where finite."""
    x = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    k = rng.standard_normal(tuple(5 for _ in shape)) + 1j * rng.standard_normal(tuple(5 for _ in shape))
    x.flat[x.size // 3], x.flat[x.size // 2] = np.inf + 0j, complex(0.5, -np.inf)
    with np.errstate(invalid="ignore"):
        ref = reference("correlate", x, k, "same")
    for method in ("direct", "auto"):
        out = np.asarray(runner.run("correlate", x, k, "same", method=method))
        np.testing.assert_array_equal(np.isfinite(out), np.isfinite(ref))
        assert 0 < (~np.isfinite(out)).sum() < out.size
        fin = np.isfinite(ref)
        np.testing.assert_allclose(out[fin], ref[fin], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("mode", ["full", "same"])
@pytest.mark.parametrize("dtype", ["float32", "float64", "complex128"])
def test_s9_inf_tap_meets_padded_zeros(runner, rng, mode, dtype):
    """S9: an Inf tap meets a value, real or padded, in every window, so every output is
    non-finite (Inf x 0 = NaN), in 1-D and 2-D, with small and large kernels (more than 64 taps
    run cuDNN through lax.conv on JAX accelerators, which skips the zeros of its own padding)."""
    for xs, ks in (((300,), (9,)), ((300,), (101,)), ((40, 37), (3, 3)), ((40, 37), (9, 11))):
        x = rng.standard_normal(xs).astype(dtype)
        k = rng.standard_normal(ks).astype(dtype)
        k.flat[0] = np.inf
        for method in ("direct", "auto"):
            out = np.asarray(runner.run("correlate", x, k, mode, method=method))
            assert not np.isfinite(out).any(), f"{xs} {ks} {method}: {np.isfinite(out).sum()} finite"


def test_s9_nan_fillvalue_keeps_direct(runner, rng):
    """S9: a NaN fillvalue poisons exactly the outputs whose window reaches the padding."""
    x, k = rng.standard_normal(1000), rng.standard_normal(200)
    out = runner.run("convolve", x, k, "same", fillvalue=np.nan)
    direct = runner.run("convolve", x, k, "same", fillvalue=np.nan, method="direct")
    np.testing.assert_array_equal(np.isnan(out), np.isnan(direct))
    assert np.isfinite(out).any() and np.isnan(out).any()


def test_s9_docstring_says_fft_spreads():
    """S9: the explicit FFT behaviour is documented."""
    doc = convkit.convolve.__doc__
    assert "'fft'" in doc and "NaN" in doc


@pytest.mark.parametrize("where", ["image", "kernel", "overflow"])
def test_s9_auto_2d_fft_pick_falls_back_to_direct(runner, rng, where):
    """S9: a 2-D case where the cost model picks the plain FFT (whose NaN check reads the
    spectra's DC bins, not the inputs): NaN in the image, Inf in the kernel, or finite
    float32 data whose sum overflows all give exactly direct's non-finite positions."""
    x = rng.standard_normal((220, 220)).astype(np.float32)
    k = rng.standard_normal((31, 31)).astype(np.float32)
    if runner.backend == "numpy":
        assert _auto_method(runner, "convolve", x, k, "same") == "fft", "case no longer picks the FFT"
    if where == "image":
        x[100, 200] = np.nan
    elif where == "kernel":
        k[3, 4] = np.inf
    else:
        x[:60, :60] = 3e38  # finite, but windows (and the DC bin) overflow float32
    auto = runner.run("convolve", x, k, "same")
    direct = runner.run("convolve", x, k, "same", method="direct")
    for pred in (np.isnan, np.isposinf, np.isneginf):
        np.testing.assert_array_equal(pred(auto), pred(direct))
    assert not np.isfinite(direct).all()
    if where == "image":
        assert np.isfinite(direct).any()
