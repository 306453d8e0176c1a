"""``convkit.conv`` (S15) on every backend against independent loop references: geometry (strides,
dilations, paddings, groups, layouts, 1-3 spatial dims), bias, dtype rules (integers exact with
wrap-around, float64 kept), NaN locality (S9), dispatch (S12) and every error (S13).

Peers (torch, Keras, lax, SciPy, NumPy) are compared in tests/test_conv_peers.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from conv_reference import assert_close_to_reference, reference_conv, same_pads, wrap

import convkit
from convkit import ConvkitTypeError, ConvkitValueError, DeviceMismatchError, dispatch

#: numpy-scipy (tests/conftest.py): the NumPy backend without its host engines (its own GEMM path)
BACKENDS = [b.name for b in convkit.list_backends()
            if b.available and b.name in ("numpy", "numpy-scipy", "jax", "torch")]


@pytest.fixture(params=BACKENDS + ["cupy-emulated"])
def be(request):
    """A backend name, or the strict CuPy emulation object (tests/cupy_emulated.py)."""
    if request.param == "cupy-emulated":
        from cupy_emulated import emulated

        return emulated("14")
    return request.param


def _np(a):
    return a.numpy() if hasattr(a, "numpy") and not isinstance(a, np.ndarray) else np.asarray(a)


def _rand(rng, shape, dtype):
    dt = np.dtype(dtype)
    if dt.kind in "iu":
        info = np.iinfo(dt)
        return rng.integers(info.min, info.max, size=shape, dtype=dt, endpoint=True)
    return rng.standard_normal(shape).astype(dt)


# (x shape NC..., w shape OI..., keywords, explicit pads for the reference or a padding name)
CASES = [
    ((2, 3, 11), (4, 3, 3), dict()),
    ((1, 2, 10), (3, 2, 4), dict(padding="causal", dilation=2)),
    ((2, 4, 9), (4, 2, 3), dict(groups=2, stride=2, padding="same")),
    ((2, 3, 7, 8), (4, 3, 3, 2), dict(padding=((1, 0), (2, 1)))),
    ((1, 4, 9, 7), (6, 2, 2, 3), dict(groups=2, stride=(2, 1), dilation=(1, 2), padding="same")),
    ((2, 3, 6, 7), (3, 1, 3, 3), dict(groups=3, padding=1)),                      # depthwise
    ((1, 2, 8, 8), (2, 2, 4, 4), dict(stride=2, padding="same")),                 # even kernel, stride 2
    ((1, 2, 6, 7), (3, 2, 2, 3), dict(padding="centered")),
    ((1, 2, 4, 5, 5), (2, 2, 2, 3, 2), dict(stride=(1, 2, 1), padding="same")),
    ((1, 4, 4, 4, 3), (4, 1, 2, 2, 2), dict(groups=4, dilation=(1, 2, 1), padding=(1, 2, 0))),
]


def _ref_pads(xs, ws, kw):
    r = len(xs) - 2
    stride = kw.get("stride", 1)
    dilation = kw.get("dilation", 1)
    stride = (stride,) * r if isinstance(stride, int) else stride
    dilation = (dilation,) * r if isinstance(dilation, int) else dilation
    p = kw.get("padding", "valid")
    pads = []
    for a in range(r):
        n, k, s, d = xs[2 + a], ws[2 + a], stride[a], dilation[a]
        me = (k - 1) * d + 1
        if p == "valid":
            pads.append((0, 0))
        elif p == "same":
            pads.append(same_pads(n, k, s, d))
        elif p == "causal":
            pads.append((me - 1, 0))
        elif p == "centered":
            pads.append((me // 2, (me - 1) // 2))
        elif isinstance(p, int):
            pads.append((p, p))
        elif isinstance(p[a], int):
            pads.append((p[a], p[a]))
        else:
            pads.append(tuple(p[a]))
    return tuple(pads)


def _reference(x, w, kw, bias=None):
    return reference_conv(x, w, stride=kw.get("stride", 1), dilation=kw.get("dilation", 1),
                          groups=kw.get("groups", 1), pads=_ref_pads(x.shape, w.shape, kw), bias=bias)


@pytest.mark.parametrize("case", range(len(CASES)))
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_float_matches_reference(be, rng, case, dtype):
    xs, ws, kw = CASES[case]
    x, w = _rand(rng, xs, dtype), _rand(rng, ws, dtype)
    bias = _rand(rng, (ws[0],), dtype)
    ref, mag = _reference(x, w, kw, bias)
    out = convkit.conv(x, w, bias=bias, backend=be, **kw)
    assert isinstance(out, np.ndarray) and out.dtype == np.dtype(dtype) and out.shape == ref.shape
    assert_close_to_reference(out, ref, mag, ws[1] * int(np.prod(ws[2:])), dtype)


@pytest.mark.parametrize("case", [0, 4, 5, 8])
def test_channels_last_is_the_transpose(be, rng, case):
    """NHWC/HWIO gives the numbers of NCHW/OIHW, transposed (within the S5 bound)."""
    xs, ws, kw = CASES[case]
    x, w = _rand(rng, xs, "float64"), _rand(rng, ws, "float64")
    r = len(xs) - 2
    first = convkit.conv(x, w, backend=be, **kw)
    letters = {1: ("NWC", "WIO"), 2: ("NHWC", "HWIO"), 3: ("NDHWC", "DHWIO")}[r]
    xl = np.moveaxis(x, 1, -1)
    wl = np.transpose(w, tuple(range(2, r + 2)) + (1, 0))
    last = convkit.conv(xl, wl, layout=letters[0], kernel_layout=letters[1], backend=be, **kw)
    np.testing.assert_allclose(np.moveaxis(_np(last), -1, 1), _np(first), rtol=1e-13, atol=1e-13)
    mixed = convkit.conv(xl, w, layout="channels_last", backend=be, **kw)
    np.testing.assert_allclose(_np(mixed), _np(last), rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("dtype", ["int8", "int16", "int32", "uint8", "int64"])
@pytest.mark.parametrize("case", [2, 4, 9])
def test_integers_exact_with_wraparound(be, rng, dtype, case):
    """Full-range integers: the exact sum reduced to the result type (two's complement), S5."""
    xs, ws, kw = CASES[case]
    x, w = _rand(rng, xs, dtype), _rand(rng, ws, dtype)
    ref, _ = _reference(x, w, kw)
    out = _np(convkit.conv(x, w, backend=be, **kw))
    assert out.dtype == np.dtype(dtype)
    expected = np.array([wrap(int(v), dtype) for v in ref.ravel()], dtype=dtype).reshape(ref.shape)
    np.testing.assert_array_equal(out, expected)


def test_integer_dtype_override_and_mixed(be, rng):
    x, w = _rand(rng, (1, 2, 9), "int8"), _rand(rng, (2, 2, 3), "int16")
    ref, _ = reference_conv(x, w)
    out = _np(convkit.conv(x, w, backend=be))
    assert out.dtype == np.int16
    expected = np.array([wrap(int(v), "int16") for v in ref.ravel()]).reshape(ref.shape)
    np.testing.assert_array_equal(out, expected)
    wide = _np(convkit.conv(x, w, dtype="int64", backend=be))
    np.testing.assert_array_equal(wide, ref.astype(np.int64))


def test_float32_with_float64_gives_float64(be, rng):
    x, w = _rand(rng, (1, 2, 9), "float32"), _rand(rng, (2, 2, 3), "float64")
    assert _np(convkit.conv(x, w, backend=be)).dtype == np.float64
    assert _np(convkit.conv(x, w, dtype="float32", backend=be)).dtype == np.float32


def test_nan_locality(be, rng):
    """S9: a NaN in x reaches exactly the outputs whose window holds it; an Inf tap of filter o
    makes every output of o non-finite (padded zeros included: Inf * 0 is NaN) and no other."""
    x, w = _rand(rng, (1, 2, 9, 9), "float64"), _rand(rng, (3, 2, 3, 3), "float64")
    x[0, 1, 4, 0] = np.nan
    kw = dict(padding="same", stride=1)
    out = _np(convkit.conv(x, w, backend=be, **kw))
    hit = np.zeros((9, 9), bool)
    hit[3:6, 0:2] = True  # windows (3x3, pad 1) that contain row 4, column 0
    assert (np.isnan(out[0]) == hit[None]).all()
    x[0, 1, 4, 0] = 1.0
    w[1, 0, 0, 0] = np.inf
    out = _np(convkit.conv(x, w, backend=be, **kw))
    assert not np.isfinite(out[0, 1]).any() and np.isfinite(out[0, [0, 2]]).all()


def test_auto_fft_keeps_nan_locality(rng):
    """A large float kernel may run an FFT under auto (NumPy): NaN positions stay those of direct."""
    x, w = _rand(rng, (1, 1, 64, 64), "float64"), _rand(rng, (1, 1, 15, 15), "float64")
    direct = convkit.conv(x, w, method="direct")
    fft = convkit.conv(x, w, method="fft")
    np.testing.assert_allclose(fft, direct, atol=1e-9)
    x[0, 0, 30, 30] = np.nan
    auto = convkit.conv(x, w)
    assert (np.isnan(auto) == np.isnan(convkit.conv(x, w, method="direct"))).all()
    assert np.isnan(auto).sum() == 15 * 15
    assert np.isnan(convkit.conv(x, w, method="fft")).all()


def test_auto_chooses_fft_only_for_large_float_kernels():
    from convkit.conv import conv_plan

    f64 = np.dtype("float64")
    big = conv_plan("NCHW", "OIHW", (1, 1, 256, 256), (1, 1, 31, 31), f64, f64, None, "same", (1, 1), (1, 1),
                    1, None, "highest", "auto")
    small = conv_plan("NCHW", "OIHW", (8, 64, 56, 56), (64, 64, 3, 3), f64, f64, None, "same", (1, 1),
                      (1, 1), 1, None, "highest", "auto")
    ints = conv_plan("NCHW", "OIHW", (1, 1, 256, 256), (1, 1, 31, 31), np.dtype("int32"), np.dtype("int32"),
                     None, "same", (1, 1), (1, 1), 1, None, "highest", "auto")
    assert (big.method, big.nan_safe) == ("fft", True)
    assert small.method == "direct" and ints.method == "direct"


def test_jax_keeps_float64_and_types(rng):
    pytest.importorskip("jax")
    import jax
    import jax.numpy as jnp

    x, w = _rand(rng, (1, 2, 9, 9), "float64"), _rand(rng, (2, 2, 3, 3), "float64")
    ref, mag = reference_conv(x, w)
    out = convkit.conv(x, w, backend="jax")
    assert out.dtype == np.float64
    assert_close_to_reference(out, ref, mag, 18, "float64")
    x32 = jnp.asarray(x.astype(np.float32))
    y = convkit.conv(x32, jnp.asarray(w.astype(np.float32)), padding="same")  # JAX arrays pick JAX
    assert isinstance(y, jax.Array) and y.dtype == jnp.float32
    f = jax.jit(lambda a, b: convkit.conv(a, b, stride=2))  # traced inputs
    np.testing.assert_allclose(np.asarray(f(x32, jnp.asarray(w, jnp.float32))),
                               convkit.conv(x.astype(np.float32), w.astype(np.float32), stride=2),
                               rtol=1e-5, atol=1e-5)
    if not jax.config.jax_enable_x64:
        with pytest.raises(ConvkitTypeError, match="jax_enable_x64"):
            convkit.conv(x32, jnp.asarray(w.astype(np.float32)), dtype="float64")


def test_torch_tensors_in_torch_out(rng):
    torch = pytest.importorskip("torch")
    x, w = _rand(rng, (1, 2, 9), "float64"), _rand(rng, (2, 2, 3), "float64")
    out = convkit.conv(torch.from_numpy(x), torch.from_numpy(w), bias=torch.ones(2, dtype=torch.float64))
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float64
    np.testing.assert_allclose(out.numpy(), convkit.conv(x, w, bias=np.ones(2)), rtol=1e-14)
    with pytest.raises(DeviceMismatchError):
        convkit.conv(torch.from_numpy(x), torch.from_numpy(w), backend="numpy")


def test_dispatch_like_convolve(monkeypatch, rng):
    x, w = _rand(rng, (1, 1, 5), "float64"), _rand(rng, (1, 1, 2), "float64")
    seen = []

    class Spy:
        name = "spy"
        capabilities = dispatch.get_backend("numpy").capabilities
        device = False

        def execute(self, *a):  # the backend contract
            raise AssertionError

        def available(self):
            return True, ""

        def conv_layer(self, plan, x, w, bias):
            seen.append(plan.out_shape)
            return np.zeros(plan.out_shape)

    monkeypatch.setattr(dispatch, "_registry", dict(dispatch._registry))  # the registration is undone
    dispatch.register_backend("spy", Spy())
    convkit.conv(x, w, backend="spy")
    with convkit.use_backend("spy"):
        convkit.conv(x, w)
    monkeypatch.setenv("CONVKIT_BACKEND", "spy")
    dispatch.reload_environment()
    convkit.conv(x, w)
    assert seen == [(1, 1, 4)] * 3


def test_backend_without_conv(rng):
    class Bare:
        name = "bare"
        device = False

        def execute(self, *a):
            raise AssertionError

    with pytest.raises(ConvkitTypeError, match="cannot run conv"):
        convkit.conv(np.ones((1, 1, 3)), np.ones((1, 1, 2)), backend=Bare())


X2, W2 = np.ones((1, 4, 6, 6)), np.ones((2, 4, 3, 3))
ERRORS = [
    (dict(layout="NCHWX"), ConvkitValueError, "layout='NCHWX'"),
    (dict(layout="NCW"), ConvkitValueError, "x has 4 dimensions"),
    (dict(kernel_layout="OIW"), ConvkitValueError, "kernel_layout='OIW'"),
    (dict(w=np.ones((2, 3, 3, 3))), ConvkitValueError, "x has 4 channels"),
    (dict(groups=3), ConvkitValueError, "groups=3"),
    (dict(groups=2, w=np.ones((3, 2, 3, 3))), ConvkitValueError, "groups=2 does not divide"),
    (dict(groups=0), ConvkitValueError, "groups=0"),
    (dict(groups=2.0), ConvkitTypeError, "groups=2.0"),
    (dict(stride=-1), ConvkitValueError, "stride=-1"),
    (dict(stride=0), ConvkitValueError, "stride=0"),
    (dict(stride=True), ConvkitTypeError, "stride=True"),
    (dict(stride=(1, 2, 3)), ConvkitValueError, "stride=(1, 2, 3)"),
    (dict(dilation=0), ConvkitValueError, "dilation=0"),
    (dict(dilation=4), ConvkitValueError, "effective kernel"),
    (dict(w=np.ones((2, 4, 7, 3))), ConvkitValueError, "effective kernel"),
    (dict(padding="full"), ConvkitValueError, "padding='full'"),
    (dict(padding="causal"), ConvkitValueError, "padding='causal'"),
    (dict(padding=-1), ConvkitValueError, "padding=-1"),
    (dict(padding=((1, 2),)), ConvkitTypeError, "padding=((1, 2),)"),
    (dict(padding=1.5), ConvkitTypeError, "padding=1.5"),
    (dict(x=np.ones((1, 4, 6, 6), bool)), ConvkitTypeError, "x has dtype bool"),
    (dict(w=np.ones((2, 4, 3, 3), "U1")), ConvkitTypeError, "w has dtype <U1"),
    (dict(x=np.ones((1, 4, 6, 6), np.float32), dtype="int32"), ConvkitTypeError, "dtype=int32"),
    (dict(dtype="nonsense"), ConvkitTypeError, "dtype='nonsense'"),
    (dict(bias=np.ones(3)), ConvkitValueError, "bias has shape (3,)"),
    (dict(bias=np.ones(2, bool)), ConvkitTypeError, "bias has dtype bool"),
    (dict(precision="fast"), ConvkitValueError, "precision='fast'"),
    (dict(method="oa"), ConvkitValueError, "method='oa'"),
    (dict(x=np.ones((1, 4, 0, 6))), ConvkitValueError, "x is empty"),
    (dict(x=np.ones((4, 6))), ConvkitValueError, "x has 2 dimensions"),
    (dict(backend="nope"), ConvkitValueError, "backend='nope'"),
]


@pytest.mark.parametrize("kw,exc,text", ERRORS, ids=[e[2] for e in ERRORS])
def test_errors(kw, exc, text):
    kw = dict(kw)
    x, w = kw.pop("x", X2), kw.pop("w", W2)
    with pytest.raises(exc) as info:
        convkit.conv(x, w, **kw)
    msg = str(info.value)
    assert text in msg and "\n" not in msg, msg


@pytest.mark.parametrize("good, bad, exc", [
    (dict(stride=1), dict(stride=True), ConvkitTypeError),
    (dict(stride=(1, 1)), dict(stride=(1.0, 1)), ConvkitTypeError),
    (dict(stride=[1, 1]), dict(stride=[True, 1]), ConvkitTypeError),
    (dict(padding=1), dict(padding=1.0), ConvkitTypeError),
    (dict(groups=2), dict(groups=2.0), ConvkitTypeError),
    (dict(groups=2), dict(groups=True), ConvkitTypeError),
], ids=repr)
def test_s15_cached_plans_never_admit_an_invalid_spelling(good, bad, exc):
    """S13/S15: a valid call's plan is reused only by calls whose options have the same types and
    values; a value equal to an accepted one but of a refused type (``True == 1``) is still refused
    after it, and the valid call still gives the same result."""
    w = np.ones((2, 4 // good.get("groups", 1), 3, 3))
    first = convkit.conv(X2, w, **good)
    with pytest.raises(exc):
        convkit.conv(X2, w, **bad)
    np.testing.assert_array_equal(convkit.conv(X2, w, **good), first)


def test_s15_cached_plan_follows_the_shapes():
    """A plan cached for one input shape is not reused for another (the output shape follows x)."""
    w = np.ones((2, 4, 3, 3))
    assert convkit.conv(X2, w, padding="same").shape == (1, 2, 6, 6)
    assert convkit.conv(np.ones((2, 4, 9, 5)), w, padding="same").shape == (2, 2, 9, 5)
    with pytest.raises(ConvkitValueError, match="x has 3 channels"):
        convkit.conv(np.ones((1, 3, 6, 6)), w, padding="same")


def test_errors_same_on_every_backend(be):
    with pytest.raises(ConvkitValueError, match="x has 4 channels"):
        convkit.conv(X2, np.ones((2, 3, 3, 3)), backend=be)
    with pytest.raises(ConvkitTypeError, match="x has dtype bool"):
        convkit.conv(X2.astype(bool), W2, backend=be)


@pytest.mark.parametrize("case", [1, 4, 9])
def test_explain_conv_equivalents_run(rng, case):
    """``convkit.explain.conv``: the plan's pads and shapes, and torch/lax code that gives conv's result."""
    pytest.importorskip("torch")
    jax = pytest.importorskip("jax")
    from convkit.explain import Spec

    xs, ws, kw = CASES[case]
    x, w = _rand(rng, xs, "float64"), _rand(rng, ws, "float64")
    e = convkit.explain.conv(Spec(xs), w, **kw)
    want = convkit.conv(x, w, **kw)
    assert e.plan.out_shape == want.shape and e.plan.pads == _ref_pads(xs, ws, kw)
    assert "pads" in str(e) and e.backend == "numpy"
    for lib, code in e.equivalents.items():
        scope = {"x": x, "w": w}
        with jax.enable_x64(True):
            exec(compile(code, f"<{lib}>", "exec"), scope)
        np.testing.assert_allclose(np.asarray(scope["out"]), want, rtol=1e-12, atol=1e-12, err_msg=lib)
    with pytest.raises(ConvkitValueError, match="x has 4 channels"):
        convkit.explain.conv(Spec((1, 4, 6, 6)), Spec((2, 3, 3, 3)))
