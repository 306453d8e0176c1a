"""Conventions: deep-learning padding rules, the classic confusions, argument order, axes.

The deep-learning conventions are written here as plain NumPy loops from the libraries'
documented formulas (no TensorFlow/torch/JAX needed):

* TF/Keras ``padding="SAME"``: ``out = ceil(N/s)``, ``total = max((out-1)*s + Me - N, 0)``,
  ``before = total // 2`` (extra pad at the END); ``"VALID"``: ``out = (N - Me)//s + 1``;
* Keras ``Conv1D(padding="causal")``: ``(k-1)*d`` zeros on the left;
* torch ``padding="same"`` (stride 1): ``total = d*(k-1)``, ``left = total // 2``;
* lax ``"SAME_LOWER"``: as SAME but the extra pad at the START;
* lax explicit ``padding=[(lo, hi)]``: zeros, negative values crop.

All of them are cross-correlations WITHOUT kernel flip and without conjugation (S1).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.signal as sps
from reference import assert_matches, random_array, reference

import convkit

# ----------------------------------------------------------------------------- plain references


def dl_correlate_nd(x, k, pads, strides, dilations):
    """Plain-loop DL cross-correlation: zero padding by ``pads`` (negative crops), no flip."""
    x, k = np.asarray(x, dtype=np.float64), np.asarray(k, dtype=np.float64)
    # pad with zeros, then crop negative pads
    widths = [(max(lo, 0), max(hi, 0)) for lo, hi in pads]
    xp = np.pad(x, widths)
    crop = tuple(slice(max(-lo, 0), xp.shape[i] - max(-hi, 0)) for i, (lo, hi) in enumerate(pads))
    xp = xp[crop]
    eff = [(m - 1) * d + 1 for m, d in zip(k.shape, dilations)]
    out_shape = [(n - e) // s + 1 for n, e, s in zip(xp.shape, eff, strides)]
    out = np.zeros(out_shape)
    for o in np.ndindex(*out_shape):
        acc = 0.0
        for t in np.ndindex(*k.shape):
            idx = tuple(oi * s + ti * d for oi, ti, s, d in zip(o, t, strides, dilations))
            acc += xp[idx] * k[t]
        out[o] = acc
    return out


def tf_same_pads(n, k, s, d=1):
    """TF/Keras 'SAME' (documented formula)."""
    out = math.ceil(n / s)
    eff = (k - 1) * d + 1
    total = max((out - 1) * s + eff - n, 0)
    return total // 2, total - total // 2


def tf_conv(x, k, padding, strides, dilations=None):
    """TF ``tf.nn.convolution`` / Keras ``Conv*`` for one channel (cross-correlation)."""
    dilations = dilations or (1,) * x.ndim
    if padding == "VALID":
        pads = [(0, 0)] * x.ndim
    else:
        pads = [tf_same_pads(n, m, s, d) for n, m, s, d in zip(x.shape, k.shape, strides, dilations)]
    return dl_correlate_nd(x, k, pads, strides, dilations)


def keras_conv2d(image, kernel, strides, padding):
    """A single-channel Keras ``Conv2D(1, kernel.shape, strides, padding, use_bias=False)``."""
    h, w = image.shape
    kh, kw = kernel.shape
    if padding == "valid":
        oh, ow = (h - kh) // strides + 1, (w - kw) // strides + 1
        top = left = 0
        padded = image
    else:
        oh, ow = -(-h // strides), -(-w // strides)
        ph = max((oh - 1) * strides + kh - h, 0)
        pw = max((ow - 1) * strides + kw - w, 0)
        top, left = ph // 2, pw // 2
        padded = np.zeros((h + ph, w + pw))
        padded[top:top + h, left:left + w] = image
    out = np.zeros((oh, ow))
    for i in range(oh):
        for j in range(ow):
            window = padded[i * strides:i * strides + kh, j * strides:j * strides + kw]
            out[i, j] = np.sum(window * kernel)
    return out


def _check(got, expected, x, k, **kw):
    assert_matches(got, expected, x, k, "correlate", **kw)


# ----------------------------------------------------------------------------- classic confusions


def test_convolution_by_hand_flips_the_kernel(runner):
    """S1: convolve flips the kernel; correlate does not (hand-computed values)."""
    x, k = np.array([1, 2, 3, 4, 5]), np.array([1, 10, 100])
    # by hand: 1*100 + 2*10 + 3*1 = 123 ; correlation window sum: 1*1 + 2*10 + 3*100 = 321
    np.testing.assert_array_equal(runner.run("convolve", x, k, "valid"), [123, 234, 345])
    np.testing.assert_array_equal(runner.run("correlate", x, k, "valid"), [321, 432, 543])
    np.testing.assert_array_equal(runner.run("convolve", x, k), [1, 12, 123, 234, 345, 450, 500])


@pytest.mark.parametrize("shapes", [((9,), (4,)), ((6, 7), (3, 2)), ((3, 4), (5, 2))])
def test_textbook_convolution_sum(runner, rng, shapes):
    """S1: full convolution is the textbook sum (f*g)[n] = sum_m f[m] g[n-m] (kernel flipped)."""
    x, k = rng.standard_normal(shapes[0]), rng.standard_normal(shapes[1])
    out_shape = tuple(a + b - 1 for a, b in zip(x.shape, k.shape))
    expected = np.zeros(out_shape)
    for n in np.ndindex(*out_shape):
        for m in np.ndindex(*x.shape):
            j = tuple(ni - mi for ni, mi in zip(n, m))
            if all(0 <= ji < s for ji, s in zip(j, k.shape)):
                expected[n] += x[m] * k[j]
    for method in ("direct", "fft", "auto"):
        assert_matches(runner.run("convolve", x, k, method=method), expected, x, k, method=method)


@pytest.mark.parametrize("kind", ["float64", "complex128"])
def test_correlate_is_window_sum(runner, rng, kind):
    """S1: correlate(x, k, 'valid')[i] = sum_j x[i+j] * conj(k[j]) (window sum, no flip)."""
    x, k = random_array(rng, (7, 6), kind), random_array(rng, (3, 2), kind)
    expected = np.array([[np.sum(x[i:i + 3, j:j + 2] * np.conj(k)) for j in range(5)] for i in range(5)])
    assert_matches(runner.run("correlate", x, k, "valid"), expected, x, k, "correlate", mode="valid")


@pytest.mark.parametrize("strides", [1, 2])
@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("shapes", [((7, 8), (3, 3)), ((8, 6), (2, 4)), ((5, 5), (5, 2))])
def test_keras_conv2d_single_channel(runner, rng, shapes, padding, strides):
    """S1/S2: Keras Conv2D (one channel, no bias) == correlate(x, k, align='tf', stride=s)."""
    x, k = rng.standard_normal(shapes[0]), rng.standard_normal(shapes[1])
    expected = keras_conv2d(x, k, strides, padding)
    kw = dict(mode=padding, align="tf", stride=strides)
    _check(runner.run("correlate", x, k, **kw), expected, x, k, **kw)
    # and it is NOT convolve (the classic confusion): differs unless the kernel is symmetric
    assert not np.allclose(runner.run("convolve", x, k, **kw), expected)


# ----------------------------------------------------------------------------- TF / Keras / torch / lax


@pytest.mark.parametrize(("n", "pads"), [(7, (1, 1)), (8, (0, 1))])
def test_tf_same_pads_depend_on_n(runner, rng, n, pads):
    """S2: TF 'SAME', k=3, s=2: pads (1, 1) for N=7 and (0, 1) for N=8."""
    assert tf_same_pads(n, 3, 2) == pads
    x, k = rng.standard_normal(n), rng.standard_normal(3)
    expected = dl_correlate_nd(x, k, [pads], (2,), (1,))
    got = runner.run("correlate", x, k, "same", align="tf", stride=2)
    _check(got, expected, x, k, mode="same", align="tf", stride=2)
    explicit = runner.run("correlate", x, k, [pads], stride=2)
    _check(explicit, expected, x, k, mode=[pads], stride=2)
    assert got.shape == (math.ceil(n / 2),)


TF_CASES = [  # (x shape, k shape, strides, dilations)
    ((7,), (3,), (2,), (1,)),
    ((8,), (3,), (2,), (1,)),
    ((10,), (4,), (3,), (1,)),
    ((9,), (3,), (1,), (2,)),
    ((12,), (2,), (1,), (3,)),
    ((5,), (3,), (4,), (1,)),  # stride larger than the kernel
    ((7, 8), (3, 2), (2, 3), (1, 1)),
    ((9, 6), (2, 3), (1, 1), (2, 2)),
    ((6, 7, 5), (2, 3, 2), (2, 1, 2), (1, 1, 1)),
]


@pytest.mark.parametrize("padding", ["SAME", "VALID"])
@pytest.mark.parametrize("case", TF_CASES, ids=[str(c) for c in TF_CASES])
def test_tf_same_valid_stride_dilation(runner, rng, case, padding):
    """S2: TF/Keras/lax 'SAME' == align='tf' and 'VALID' == 'valid', with stride and dilation."""
    xs, ks, s, d = case
    x, k = rng.standard_normal(xs), rng.standard_normal(ks)
    expected = tf_conv(x, k, padding, s, d)
    kw = dict(mode=padding.lower(), stride=s, dilation=d)
    if padding == "SAME":
        kw["align"] = "tf"
        assert expected.shape == tuple(math.ceil(n / si) for n, si in zip(xs, s))
    for align_name in (("tf", "keras", "lax") if padding == "SAME" else ("tf",)):
        if padding == "SAME":
            kw["align"] = align_name
        _check(runner.run("correlate", x, k, **kw), expected, x, k, **kw)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize(("n", "k", "d"), [(10, 3, 1), (10, 4, 2), (6, 5, 1), (3, 3, 2)])
def test_keras_causal_conv1d(runner, rng, n, k, d, stride):
    """S2: Keras Conv1D(padding='causal') = left zero pad (k-1)*d, then VALID correlation."""
    x, w = rng.standard_normal(n), rng.standard_normal(k)
    expected = dl_correlate_nd(x, w, [((k - 1) * d, 0)], (stride,), (d,))
    kw = dict(mode="causal", dilation=d, stride=stride)
    got = runner.run("correlate", x, w, **kw)
    _check(got, expected, x, w, **kw)
    if stride == 1:
        assert got.shape == (n,)
        # causality: out[i] depends only on x[:i+1]
        x2 = x.copy()
        x2[n // 2:] += 100.0
        got2 = runner.run("correlate", x2, w, **kw)
        np.testing.assert_array_equal(got2[:n // 2], got[:n // 2])


@pytest.mark.parametrize(("xs", "ks", "d"), [((9,), (4,), 1), ((9,), (4,), 2), ((8, 7), (2, 3), (1, 2)),
                                             ((5, 6), (6, 1), 1)])
def test_torch_padding_same(runner, rng, xs, ks, d):
    """S2: torch conv(padding='same') (stride 1): total = d*(k-1), left = total//2 == align='torch'."""
    x, k = rng.standard_normal(xs), rng.standard_normal(ks)
    dd = (d,) * len(xs) if isinstance(d, int) else d
    pads = []
    for m, di in zip(ks, dd):
        total = di * (m - 1)
        pads.append((total // 2, total - total // 2))
    expected = dl_correlate_nd(x, k, pads, (1,) * len(xs), dd)
    kw = dict(mode="same", align="torch", dilation=d)
    got = runner.run("correlate", x, k, **kw)
    assert got.shape == xs
    _check(got, expected, x, k, **kw)


@pytest.mark.parametrize(("xs", "ks", "d"), [((9,), (4,), 1), ((9,), (3,), 2), ((8, 7), (2, 3), 1),
                                             ((7, 6), (4, 2), (2, 1))])
def test_lax_same_lower_is_align_scipy(runner, rng, xs, ks, d):
    """S2: lax 'SAME_LOWER' (extra pad at the start) == align='scipy' (stride 1).

    Note: with stride > 1 SAME_LOWER's total pad depends on N while align='scipy' keeps
    (Me//2, (Me-1)//2), so the two agree for stride 1 only."""
    x, k = rng.standard_normal(xs), rng.standard_normal(ks)
    dd = (d,) * len(xs) if isinstance(d, int) else d
    pads = []
    for n, m, di in zip(xs, ks, dd):
        total = max((n - 1) + (m - 1) * di + 1 - n, 0)
        pads.append((total - total // 2, total // 2))
    expected = dl_correlate_nd(x, k, pads, (1,) * len(xs), dd)
    kw = dict(mode="same", dilation=d)
    _check(runner.run("correlate", x, k, **kw), expected, x, k, **kw)
    # ... and the scipy.signal centring (dilation 1)
    if d == 1:
        np.testing.assert_allclose(sps.correlate(x, k, "same"), expected, atol=1e-12)


LAX_PADS = [
    ((9,), (3,), [(2, 1)], (1,), (1,)),
    ((9,), (3,), [(-2, 1)], (1,), (1,)),  # negative pad crops the input
    ((9,), (3,), [(0, -3)], (2,), (1,)),
    ((10,), (3,), [(4, 4)], (3,), (2,)),  # pads longer than the kernel
    ((7, 8), (3, 2), [(1, -1), (-2, 3)], (1, 2), (2, 1)),
    ((6, 5, 4), (2, 2, 3), [(0, 0), (1, 1), (-1, 2)], (1, 1, 1), (1, 2, 1)),
]


@pytest.mark.parametrize("case", LAX_PADS, ids=[str(c[2]) for c in LAX_PADS])
def test_lax_explicit_pads(runner, rng, case):
    """S2: explicit lax-style pads per axis (incl. negative) with stride and dilation."""
    xs, ks, pads, s, d = case
    x, k = rng.standard_normal(xs), rng.standard_normal(ks)
    expected = dl_correlate_nd(x, k, pads, s, d)
    kw = dict(mode=pads, stride=s, dilation=d)
    _check(runner.run("correlate", x, k, **kw), expected, x, k, **kw)
    # the tuple-of-tuples spelling is the same mode
    kw_t = dict(kw, mode=tuple(tuple(p) for p in pads))
    _check(runner.run("correlate", x, k, **kw_t), expected, x, k, **kw_t)


def test_dl_layers_are_correlate_without_conjugation(runner, rng):
    """S1: DL conv layers = correlate(x, conj(k)): with a complex kernel conj must be undone."""
    x = random_array(rng, (8,), "complex128")
    k = random_array(rng, (3,), "complex128")
    expected = np.array([np.sum(x[i:i + 3] * k) for i in range(6)])  # no conjugation
    got = runner.run("correlate", x, np.conj(k), "valid")
    assert_matches(got, expected, x, np.conj(k), "correlate", mode="valid")


# ----------------------------------------------------------------------------- S3 argument order


@pytest.mark.parametrize("mode", ["full", "same", "causal"])
@pytest.mark.parametrize("op", ["convolve", "correlate"])
def test_s3_any_shapes_for_full_same_causal(runner, rng, op, mode):
    """S3: 'full', 'same', 'causal' accept any shapes, e.g. (3,5) with (5,3) (not jax.scipy's)."""
    a, b = rng.standard_normal((3, 5)), rng.standard_normal((5, 3))
    got = runner.run(op, a, b, mode)
    expected = reference(op, a, b, mode)
    assert_matches(got, expected, a, b, op, mode=mode)
    if mode != "causal":
        np.testing.assert_allclose(getattr(sps, op)(a, b, mode), expected, atol=1e-12)
    # explicit pads too
    got = runner.run(op, a, b, [(2, 1), (0, 1)])
    assert_matches(got, reference(op, a, b, [(2, 1), (0, 1)]), a, b, op, mode=[(2, 1), (0, 1)])


@pytest.mark.parametrize("kind", ["float64", "complex128", "int32"])
@pytest.mark.parametrize(("s1", "s2"), [((3,), (7,)), ((2, 3), (4, 3)), ((3, 3), (3, 3)),
                                      ((2, 1, 3), (4, 2, 3))])
def test_s3_valid_swap_rule(runner, rng, kind, s1, s2):
    """S3: 'valid' where in2 dominates swaps: convolve commutes, correlate(a, b) =
    flip(conj(correlate(b, a))), i.e. full[min-1 : max] on every axis."""
    a, b = random_array(rng, s1, kind, small=True), random_array(rng, s2, kind, small=True)
    sl = tuple(slice(min(p, q) - 1, max(p, q)) for p, q in zip(s1, s2))
    for op in ("convolve", "correlate"):
        got = runner.run(op, a, b, "valid")
        full = reference(op, a, b, "full")
        assert_matches(got, full[sl], a, b, op, mode="valid")
        if op == "convolve":
            assert_matches(got, reference(op, b, a, "valid"), a, b, op, mode="valid")
        else:
            swapped = np.flip(np.conj(reference(op, b, a, "valid")))
            assert_matches(got, swapped.astype(got.dtype) if kind == "int32" else swapped, a, b, op,
                           mode="valid")
        if kind != "int32":
            np.testing.assert_allclose(getattr(sps, op)(a, b, "valid"), full[sl], atol=1e-12)


def test_s3_valid_neither_dominates(runner):
    """S3: 'valid' where neither input dominates on every axis is a ValueError."""
    for op in ("convolve", "correlate"):
        with pytest.raises(ValueError, match="valid"):
            runner.run(op, np.ones((3, 5)), np.ones((5, 3)), "valid")


def test_s3_stride_dilation_never_swap(runner, rng):
    """S3: with stride or dilation != 1, in2 is always the kernel; a kernel longer than the
    padded input raises, and full/same use in2 as the kernel even when it is larger."""
    a, b = rng.standard_normal(4), rng.standard_normal(6)
    for kw in (dict(stride=2), dict(dilation=2), dict(stride=(2,))):
        with pytest.raises(ValueError, match="kernel"):
            runner.run("convolve", a, b, "valid", **kw)
        with pytest.raises(ValueError, match="kernel"):
            runner.run("correlate", a, b, "valid", **kw)
    # dilation makes a 3-tap kernel effectively 5 long: longer than a 4-sample input
    with pytest.raises(ValueError, match="kernel"):
        runner.run("correlate", a, rng.standard_normal(3), "valid", dilation=2)
    for mode in ("full", "same", "causal"):
        kw = dict(mode=mode, stride=2, dilation=2)
        got = runner.run("correlate", a, b, **kw)
        assert_matches(got, reference("correlate", a, b, **kw), a, b, "correlate", **kw)
    # same with in2 larger, tf align, stride 2: shape ceil(N/s) from in1
    got = runner.run("correlate", a, b, "same", align="tf", stride=2)
    assert got.shape == (2,)


@pytest.mark.parametrize(("x", "y"), [(2.5, -4.0), (3, 7), (1 + 2j, 3 - 1j), (True, True),
                                      (np.int8(100), np.int8(3))])
def test_s3_zero_dim_product(runner, x, y):
    """S3: 0-d inputs give the product (conj(in2) for correlate), result_type dtype."""
    a, b = np.asarray(x), np.asarray(y)
    for op in ("convolve", "correlate"):
        got = runner.run(op, a, b)
        expected = reference(op, a, b)
        assert got.shape == ()
        assert_matches(got, expected, a, b, op)
    if np.iscomplexobj(a):
        assert runner.run("correlate", a, b) == x * np.conj(y)


def test_s3_empty_is_value_error(runner):
    """S3: an empty input is a ValueError on every backend."""
    for a, b in ((np.ones(0), np.ones(3)), (np.ones(3), np.ones(0)), (np.ones((2, 0)), np.ones((1, 1)))):
        for op in ("convolve", "correlate"):
            with pytest.raises(ValueError, match="empty"):
                runner.run(op, a, b)


# ----------------------------------------------------------------------------- S10 axes


@pytest.mark.parametrize("mode", ["full", "same", "valid", "causal"])
def test_s10_broadcast_axes(runner, rng, mode):
    """S10: broadcast the non-convolution axes in every mode; 'same' too (scipy#21876)."""
    a, b = rng.standard_normal((4, 1, 10)), rng.standard_normal((1, 3, 5))
    got = runner.run("convolve", a, b, mode, axes=2)
    n_out = {"full": 14, "same": 10, "valid": 6, "causal": 10}[mode]
    assert got.shape == (4, 3, n_out)
    expected = reference("convolve", a, b, mode, axes=2)
    assert_matches(got, expected, a, b, mode=mode, axes=2)
    if mode != "causal":  # per-slice oracle: scipy 1-D
        for i in range(4):
            for j in range(3):
                np.testing.assert_allclose(got[i, j], sps.convolve(a[i, 0], b[0, j], mode), atol=1e-12)


def test_s10_scipy_21876_same_shape(runner, rng):
    """S10 deviation: SciPy returns in1's batch shape for 'same' with broadcasting."""
    a, b = rng.standard_normal((4, 1, 10)), rng.standard_normal((1, 3, 5))
    assert sps.oaconvolve(a, b, "same", axes=2).shape == (4, 1, 10)  # SciPy's shape (wrong)
    for method in ("direct", "fft", "oa", "auto"):
        assert runner.run("convolve", a, b, "same", axes=2, method=method).shape == (4, 3, 10)


@pytest.mark.parametrize("op", ["convolve", "correlate"])
def test_s10_kernel_with_ndim_equal_len_axes(runner, rng, op):
    """S10: a kernel with ndim == len(axes) applies to every batch entry."""
    a, k = rng.standard_normal((3, 8, 9)), rng.standard_normal((3, 2))
    for mode in ("full", "same", "valid"):
        got = runner.run(op, a, k, mode, axes=(1, 2))
        for i in range(3):
            np.testing.assert_allclose(got[i], getattr(sps, op)(a[i], k, mode), atol=1e-12)
        assert_matches(got, reference(op, a, k, mode, axes=(1, 2)), a, k, op, mode=mode, axes=(1, 2))
    # negative axes, kernel first
    got = runner.run(op, k, a, "full", axes=(-2, -1))
    assert_matches(got, reference(op, k, a, "full", axes=(-2, -1)), k, a, op, mode="full", axes=(-2, -1))


def test_s10_per_axis_tuples(runner, rng):
    """S10: origin/stride/dilation tuples are aligned with the convolution axes as given."""
    a = rng.standard_normal((9, 3, 8))
    k = rng.standard_normal((3, 1, 2))
    kw = dict(mode="same", axes=(2, 0), stride=(2, 1), dilation=(1, 2), origin=(1, 0), align="tf")
    got = runner.run("correlate", a, k, **kw)
    # axis 2: N=8, stride 2 -> 4 outputs; axis 0: N=9, stride 1 -> 9
    assert got.shape == (9, 3, 4)
    assert_matches(got, reference("correlate", a, k, **kw), a, k, "correlate", **kw)
    # the same call with the axes listed in array order must reorder the tuples
    kw2 = dict(kw, axes=(0, 2), stride=(1, 2), dilation=(2, 1), origin=(0, 1))
    np.testing.assert_allclose(runner.run("correlate", a, k, **kw2), got, atol=1e-12)


def test_s10_broadcast_mismatch_raises():
    """S10: non-convolution axes must be equal or 1."""
    with pytest.raises(ValueError, match="broadcast"):
        convkit.convolve(np.ones((4, 5)), np.ones((3, 2)), axes=1)
