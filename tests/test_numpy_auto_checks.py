"""auto's S9 checks on the NumPy backend take one pass over the data: ``sum |x|^2`` finds NaN/Inf
and bounds every intermediate value, so the result is scanned only when the data come near the
float range (backends/numpy.py: run_method, try_separable). Oracle: the direct method (S9: auto
is never less finite than direct, and puts NaN/Inf where direct does)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import convkit
from convkit.backends import numpy as nb


@pytest.fixture
def scans(monkeypatch):
    """Sizes of the arrays whose finiteness the backend tests."""
    seen: list[int] = []
    real = nb.NumpyBackend.all_finite
    monkeypatch.setattr(nb.NumpyBackend, "all_finite", lambda self, a: seen.append(a.size) or real(self, a))
    return seen


KINDS = ["oa-1d", "fft-2d", "dft-2d", "separable"]


def _case(kind, rng, scale=1.0):
    if kind == "oa-1d":
        return rng.standard_normal(100_000) * scale, rng.standard_normal(300), dict(mode="full")
    if kind == "fft-2d":  # float32, small image: an FFT (OpenCV's tiles cost more); scales of its range
        scale = {1.0: 1.0, 1e140: 1e14, 1e200: 1e20, 1e305: 1e37}[scale]
        x, k = rng.standard_normal((220, 200)) * scale, rng.standard_normal((40, 33))
        return x.astype(np.float32), k.astype(np.float32), dict(mode="same")
    if kind == "dft-2d":  # four of OpenCV's tiles: cheaper than one FFT of the whole image
        return rng.standard_normal((400, 380)) * scale, rng.standard_normal((31, 31)), dict(mode="same")
    g = np.exp(-0.5 * np.linspace(-2, 2, 21) ** 2)
    return rng.standard_normal((400, 300)) * scale, np.outer(g, g * 1.5), dict(mode="same")


def test_the_cases_take_the_paths_they_name(rng, monkeypatch):
    from convkit.plan import plan_call

    be = nb.backend
    opencv = "opencv" in be.host_engines()
    want = {"oa-1d": "oa", "fft-2d": "fft[opencv]" if opencv else "fft",
            "dft-2d": "oa[opencv]" if opencv else "fft"}
    for kind, label in want.items():
        x, k, kw = _case(kind, rng)
        assert be.method_label(plan_call("convolve", x, k, be.capabilities, **kw), k) == label


@pytest.mark.parametrize("kind", KINDS)
def test_finite_data_are_read_once_and_the_result_not_at_all(scans, rng, monkeypatch, kind):
    if kind == "separable":  # force the separable test (its cost model may prefer OpenCV's direct)
        be = nb.backend
        monkeypatch.setattr(be, "capabilities", dataclasses.replace(be.capabilities, c_sep=1e-30,
                                                                    c_fused_sep=1e-30))
    x, k, kw = _case(kind, rng)
    out = convkit.convolve(x, k, **kw)
    assert out.size not in scans or out.size == x.size and scans.count(x.size) == 1, scans
    assert scans.count(x.size) <= 1
    tol = 1e-3 if x.dtype == np.float32 else 1e-9
    np.testing.assert_allclose(out, convkit.convolve(x, k, method="direct", **kw), rtol=tol, atol=tol)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("scale", [1e140, 1e200, 1e305])
def test_data_near_the_float_range_are_checked_as_before(rng, monkeypatch, kind, scale):
    """No bound holds (1e140: the bound exceeds the range; 1e200: the squares overflow; 1e305:
    the result overflows): the result is scanned, an overflow recomputed by direct (S9)."""
    if kind == "separable":
        be = nb.backend
        monkeypatch.setattr(be, "capabilities", dataclasses.replace(be.capabilities, c_sep=1e-30,
                                                                    c_fused_sep=1e-30))
    x, k, kw = _case(kind, rng, scale)
    with np.errstate(all="ignore"):
        direct = convkit.convolve(x, k, method="direct", **kw)
    out = convkit.convolve(x, k, **kw)
    np.testing.assert_array_equal(np.isfinite(out), np.isfinite(direct))
    np.testing.assert_array_equal(np.isnan(out), np.isnan(direct))
    ok = np.isfinite(direct)
    top = float(np.max(np.abs(x)))
    np.testing.assert_allclose(out[ok] / top, direct[ok] / top, rtol=1e-3, atol=1e-3 * float(np.abs(k).sum()))


def test_nan_data_go_direct(rng):
    for kind in KINDS:
        x, k, kw = _case(kind, rng)
        x.flat[x.size // 3] = np.nan
        out = convkit.convolve(x, k, **kw)
        np.testing.assert_array_equal(np.isnan(out), np.isnan(convkit.convolve(x, k, method="direct", **kw)))


@pytest.mark.parametrize("taps", [3, 31, 33, 200])
@pytest.mark.parametrize("dtype", ["float32", "float64", "complex64", "complex128"])
def test_kernel_finiteness_test_finds_every_nan_and_inf(rng, taps, dtype):  # S9
    """``_finite_kernel`` (a Python sum up to ``_FEW_TAPS`` taps, a dot product above): True
    for finite taps, False wherever one tap is NaN or +-Inf (in either part of a complex tap);
    an overflow may only read as not finite (the caller then takes the other exact path)."""
    w = rng.standard_normal(taps).astype(dtype)
    assert nb._finite_kernel(w)
    bads = [np.nan, np.inf, -np.inf]
    if w.dtype.kind == "c":
        bads += [complex(0, np.nan), complex(np.inf, 1)]
    for bad in bads:
        for at in (0, taps // 2, taps - 1):
            v = w.copy()
            v[at] = bad
            assert not nb._finite_kernel(v), (bad, at)
    assert nb._finite_kernel(np.zeros(taps, dtype)) and nb._finite_kernel(np.arange(taps, dtype="int64"))
    huge = np.full(taps, np.finfo(dtype).max, dtype)
    nb._finite_kernel(huge)  # either answer is safe; it must not raise or warn
