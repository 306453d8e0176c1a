"""The NumPy backend's torch engine for convkit.conv (backends/torch_engine.py): it runs where it
should (float32/float64 direct layers), not elsewhere, and computes S15's layer (oracle: the
exact loop reference of tests/conv_reference.py, independent of convkit and torch)."""

from __future__ import annotations

import numpy as np
import pytest
from conv_reference import assert_close_to_reference, reference_conv

import convkit
from convkit.backends import numpy as nb
from convkit.backends import torch_engine as te

pytest.importorskip("torch")


@pytest.fixture
def spy(monkeypatch):
    calls = []
    real = te.conv_layer
    monkeypatch.setattr(te, "conv_layer", lambda *a: calls.append(a[0]) or real(*a))
    return calls


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("pads, kw", [(((1, 1), (1, 1)), dict()), (0, dict(stride=2)),
                                      (((2, 0), (1, 1)), dict(dilation=(1, 2))),
                                      (((1, 1), (1, 1)), dict(groups=2))])
def test_float_layers_run_torch(spy, rng, dtype, pads, kw):  # S15, S5
    groups = kw.get("groups", 1)
    x = rng.standard_normal((2, 4, 11, 9)).astype(dtype)
    w = rng.standard_normal((6, 4 // groups, 3, 3)).astype(dtype)
    b = rng.standard_normal(6).astype(dtype)
    out = convkit.conv(x, w, bias=b, padding=pads, **kw)
    assert len(spy) == 1 and out.dtype == dtype and isinstance(out, np.ndarray)
    ref, mag = reference_conv(x, w, pads=pads, bias=b, **kw)
    assert_close_to_reference(out, ref, mag, 4 // groups * 9 + 1, dtype)


def test_nan_data_and_inf_taps_follow_s9(spy, rng):
    x = rng.standard_normal((1, 2, 8, 8))
    x[0, 0, 0, 0] = np.nan  # at the border: meets the padded zeros
    w = rng.standard_normal((3, 2, 3, 3))
    out = convkit.conv(x, w, padding="same")
    np.testing.assert_array_equal(np.isnan(out), np.isnan(reference_conv(x, w, pads=1)[0]))
    x[0, 0, 0, 0] = 1.0
    w[0, 1, 0, 0] = np.inf  # an Inf tap times a padded zero is NaN (S9): torch's padding would skip it
    out = convkit.conv(x, w, padding="same")
    with np.errstate(invalid="ignore"):  # the reference's own Inf * 0
        ref = reference_conv(x, w, pads=1)[0]
    np.testing.assert_array_equal(np.isnan(out), np.isnan(ref))
    assert np.isnan(out[0, 0]).any() and np.isfinite(out[0, 1:]).all()


def test_integers_fft_and_no_engines_stay_numpy(spy, rng):
    x = rng.integers(-100, 100, (1, 2, 7, 7)).astype(np.int32)
    w = rng.integers(-9, 9, (2, 2, 3, 3)).astype(np.int32)
    np.testing.assert_array_equal(convkit.conv(x, w), reference_conv(x, w)[0].astype(np.int64))
    xf, wf = x.astype(np.float64), w.astype(np.float64)
    convkit.conv(xf, wf, method="fft")
    convkit.conv(xf, wf, backend=nb.NumpyBackend(engines=False))
    assert spy == []


def test_environment_variable_keeps_torch_out(monkeypatch):
    monkeypatch.setenv("CONVKIT_TORCH_ENGINE", "0")
    monkeypatch.setattr(te, "_state", None)
    assert not te.installed() and te.available() == (False, "CONVKIT_TORCH_ENGINE=0")
    assert "torch" not in nb.NumpyBackend().host_engines()
    monkeypatch.setattr(te, "_state", None)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_plain_layers_are_one_torch_call_and_others_take_the_backend(monkeypatch, rng, dtype):  # S15, S9
    """Channels first, no bias and finite taps: one ``conv*d`` call (no other step between two
    layers; asymmetric pads by ``F.pad`` first); a bias or a NaN tap take the torch backend's
    full path, which keeps S9's NaN positions."""
    plain = []
    real = te._plain_conv
    monkeypatch.setattr(te, "_plain_conv", lambda *a: plain.append(1) or real(*a))
    x = rng.standard_normal((2, 4, 11, 9)).astype(dtype)
    w = rng.standard_normal((6, 2, 3, 3)).astype(dtype)
    same = ((1, 1), (1, 1))
    for pads, kw, lean in ((same, dict(), True), (((2, 2), (2, 2)), dict(dilation=2, stride=2), True),
                           (((0, 1), (2, 1)), dict(), True), (same, dict(bias=np.ones(6, dtype)), False)):
        plain.clear()
        out = convkit.conv(x, w, padding=pads, groups=2, **kw)
        assert plain == ([1] if lean else []), kw
        ref, mag = reference_conv(x, w, pads=pads, groups=2, **kw)
        assert_close_to_reference(out, ref, mag, 2 * 9 + 1, dtype)
    bad = w.copy()
    bad[1, 0, 1, 1] = np.nan
    plain.clear()
    out = convkit.conv(x, bad, padding="same", groups=2)
    assert plain == []
    ref, _ = reference_conv(x, bad, pads=same, groups=2)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(ref))
