"""``convkit.conv`` (S15) against the real libraries: torch ``conv1d/2d/3d``, ``lax.conv_general_dilated``,
Keras 3 ``Conv1D``/``Conv2D``/``DepthwiseConv2D`` (JAX backend, in a subprocess), and ``np.convolve`` /
``scipy.signal.convolve2d`` / ``scipy.signal.correlate`` spelled through ``conv`` (flipped kernel,
explicit pads or ``padding="centered"``), exactly for integers.

Every case runs on every available backend (NumPy, JAX, torch). Float comparisons are float64 with
a tolerance of ``64 * eps * sum |x| |w|`` (both sides err by at most ``gamma_K`` of that, K <= 64).
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal
from keras_subprocess import run_keras

import convkit

#: torch warns that its 'same' with an even kernel copies the input: the peer is still what is compared
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same'")

#: numpy-scipy (tests/conftest.py): the NumPy backend without its host engines (its own GEMM path)
BACKENDS = [b.name for b in convkit.list_backends()
            if b.available and b.name in ("numpy", "numpy-scipy", "jax", "torch")]
EPS = np.finfo(np.float64).eps


@pytest.fixture(params=BACKENDS)
def be(request):
    return request.param


def _close(got, want, mag):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, (got.shape, want.shape)
    np.testing.assert_array_less(np.abs(got - want), 64 * EPS * np.asarray(mag) + 1e-300)


def _mag_torch(F, x, w, **kw):
    """sum |x| |w| per output, by the peer itself on absolute values."""
    return getattr(F, f"conv{x.ndim - 2}d")(x.abs(), w.abs(), **kw).numpy()


# ----------------------------------------------------------------------------- torch

TORCH = [
    ((2, 3, 17), (4, 3, 5), dict(stride=2, dilation=2, padding=3)),
    ((2, 4, 16), (6, 2, 4), dict(groups=2, padding="same")),
    ((2, 3, 9, 11), (5, 3, 3, 3), dict(stride=(2, 1), padding=(1, 2))),
    ((2, 6, 10, 9), (6, 1, 3, 2), dict(groups=6, dilation=(2, 1))),                # depthwise
    ((1, 4, 8, 8), (4, 2, 4, 4), dict(groups=2, padding="same")),                   # even kernel
    ((1, 2, 5, 6, 7), (3, 2, 2, 3, 3), dict(stride=(1, 2, 2), padding=(1, 0, 2))),
    ((1, 4, 5, 6, 6), (4, 2, 3, 3, 2), dict(groups=2, dilation=(1, 2, 1), padding="same")),
]


@pytest.mark.parametrize("case", range(len(TORCH)))
def test_torch_conv_nd(be, rng, case):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    xs, ws, kw = TORCH[case]
    x, w, b = rng.standard_normal(xs), rng.standard_normal(ws), rng.standard_normal(ws[0])
    tx, tw, tb = map(torch.from_numpy, (x, w, b))
    want = getattr(F, f"conv{len(xs) - 2}d")(tx, tw, tb, **kw).numpy()
    mag = _mag_torch(F, tx, tw, **{k: v for k, v in kw.items()})
    got = convkit.conv(x, w, bias=b, backend=be, **kw)
    _close(got, want, mag + np.abs(b)[(None, slice(None)) + (None,) * (len(xs) - 2)])


# ----------------------------------------------------------------------------- lax


LAX = [
    ((2, 9, 10, 3), (3, 2, 3, 4), "NHWC", "HWIO", dict(stride=2, padding="same"), (2, 2), "SAME", 1),
    ((2, 9, 10, 4), (2, 2, 2, 6), "NHWC", "HWIO", dict(groups=2, padding="same"), (1, 1), "SAME", 2),
    ((2, 4, 9, 10), (6, 4, 4, 3), "NCHW", "OIHW", dict(padding=((2, 1), (0, 3)), dilation=(2, 1)),
     (1, 1), ((2, 1), (0, 3)), 1),
    ((2, 13, 3), (4, 3, 5), "NWC", "WIO", dict(stride=3, padding="same"), (3,), "SAME", 1),
]


@pytest.mark.parametrize("case", range(len(LAX)))
def test_lax_conv_general_dilated(be, rng, case):
    jax = pytest.importorskip("jax")
    from jax import lax

    xs, ws, layout, klayout, kw, strides, padding, groups = LAX[case]
    x, w = rng.standard_normal(xs), rng.standard_normal(ws)
    dil = kw.get("dilation", 1)
    dil = (dil,) * len(strides) if isinstance(dil, int) else dil
    with jax.enable_x64(True):
        def peer(a, b):
            return np.asarray(lax.conv_general_dilated(
                a, b, strides, padding, rhs_dilation=dil, dimension_numbers=(layout, klayout, layout),
                feature_group_count=groups, precision=lax.Precision.HIGHEST))
        want, mag = peer(x, w), peer(np.abs(x), np.abs(w))
    got = convkit.conv(x, w, layout=layout, kernel_layout=klayout, backend=be, **kw)
    assert np.asarray(got).dtype == np.float64
    _close(got, want, mag)


# ----------------------------------------------------------------------------- SciPy, NumPy: exact


@pytest.mark.parametrize("mode", ["full", "same", "valid"])
@pytest.mark.parametrize("kshape", [(3, 3), (2, 4), (4, 5)])
def test_scipy_convolve2d_exact(be, rng, mode, kshape):
    """``convolve2d(a, k, mode)`` = ``conv`` of ``a`` with the flipped kernel: pads k-1 ('full'),
    'centered' ('same': SciPy's centring, the extra pad at the start) or 'valid'; integers, exact."""
    a = rng.integers(-1000, 1000, (9, 11))
    k = rng.integers(-1000, 1000, kshape)
    padding = {"full": tuple((m - 1, m - 1) for m in kshape), "same": "centered", "valid": "valid"}[mode]
    got = convkit.conv(a[None, None], np.flip(k)[None, None], padding=padding, backend=be)
    np.testing.assert_array_equal(np.asarray(got)[0, 0], scipy.signal.convolve2d(a, k, mode))
    got = convkit.conv(a[None, None], k[None, None], padding=padding, backend=be)
    np.testing.assert_array_equal(np.asarray(got)[0, 0], scipy.signal.correlate(a, k, mode, method="direct"))


@pytest.mark.parametrize("mode", ["full", "same", "valid"])
@pytest.mark.parametrize("m", [1, 4, 5])
def test_numpy_convolve_exact(be, rng, mode, m):
    a, v = rng.integers(-99, 99, 12), rng.integers(-99, 99, m)
    padding = {"full": ((m - 1, m - 1),), "same": "centered", "valid": "valid"}[mode]
    got = convkit.conv(a[None, None], np.flip(v)[None, None], padding=padding, backend=be)
    np.testing.assert_array_equal(np.asarray(got)[0, 0], np.convolve(a, v, mode))


def test_scipy_convolve2d_float(be, rng):
    a, k = rng.standard_normal((12, 10)), rng.standard_normal((4, 3))
    got = convkit.conv(a[None, None], np.flip(k)[None, None], padding="centered", backend=be)
    got = np.asarray(got)[0, 0]
    _close(got, scipy.signal.convolve2d(a, k, "same"), scipy.signal.convolve2d(np.abs(a), np.abs(k), "same"))


# ----------------------------------------------------------------------------- Keras (subprocess)

KERAS_BODY = """
results = []
for kind, x, w, kw in pickle.load(open(sys.argv[1], "rb")):
    cls = getattr(keras.layers, kind)
    if kind == "DepthwiseConv2D":
        layer = cls(w.shape[:2], use_bias=False, dtype="float64", **kw)
    else:
        layer = cls(w.shape[-1], w.shape[:-2], use_bias=False, dtype="float64", **kw)
    layer.build(x.shape)
    layer.set_weights([w])
    results.append(np.asarray(layer(x)))
pickle.dump(results, open(sys.argv[2], "wb"))
"""

#: (layer, x shape NHWC, kernel shape as Keras holds it, Keras keywords, convkit keywords)
KERAS = [
    ("Conv2D", (2, 8, 9, 3), (2, 2, 3, 4), dict(padding="same", strides=1), dict(padding="same")),
    ("Conv2D", (2, 8, 9, 3), (2, 2, 3, 4), dict(padding="same", strides=2), dict(padding="same", stride=2)),
    ("Conv2D", (1, 9, 10, 2), (4, 4, 2, 3), dict(padding="same", strides=1), dict(padding="same")),
    ("Conv2D", (1, 9, 10, 2), (4, 4, 2, 3), dict(padding="same", strides=2), dict(padding="same", stride=2)),
    ("Conv2D", (1, 10, 10, 2), (3, 3, 2, 2), dict(padding="same", strides=2, dilation_rate=1),
     dict(padding="same", stride=2)),
    ("Conv2D", (2, 7, 8, 4), (3, 2, 2, 6), dict(padding="valid", groups=2), dict(groups=2)),
    ("Conv2D", (1, 9, 9, 2), (3, 3, 2, 2), dict(padding="same", dilation_rate=2),
     dict(padding="same", dilation=2)),
    ("Conv1D", (2, 11, 3), (3, 3, 2), dict(padding="causal", dilation_rate=2),
     dict(padding="causal", dilation=2)),
    ("Conv1D", (2, 11, 3), (4, 3, 2), dict(padding="same", strides=3), dict(padding="same", stride=3)),
    ("DepthwiseConv2D", (2, 8, 7, 3), (3, 2, 3, 1), dict(padding="same", strides=2),
     dict(padding="same", stride=2)),
]


def test_keras_layers(tmp_path, rng):
    jobs = []
    for kind, xs, ws, kkw, _ in KERAS:
        jobs.append((kind, rng.standard_normal(xs), rng.standard_normal(ws), kkw))
    results = run_keras(tmp_path, KERAS_BODY, jobs)
    for (kind, x, w, _), (_, _, _, _, ckw), want in zip(jobs, KERAS, results):
        layout, klayout = ("NWC", "WIO") if x.ndim == 3 else ("NHWC", "HWIO")
        if kind == "DepthwiseConv2D":  # Keras holds (H, W, C, multiplier); conv: HWIO with I = 1, groups = C
            c = w.shape[2]
            w = w.reshape(w.shape[:2] + (1, c * w.shape[3]))
            ckw = dict(ckw, groups=c)
        for be in BACKENDS:
            got = convkit.conv(x, w, layout=layout, kernel_layout=klayout, backend=be, **ckw)
            mag = convkit.conv(np.abs(x), np.abs(w), layout=layout, kernel_layout=klayout, **ckw)
            _close(got, want, mag)
