"""JAX backend specifics (issue #3): dtypes and x64 (S4, S5), precision (S6), methods and
NaN safety (S8, S9), broadcasting axes (S10), arrays in/out (S11), jit/grad/vmap (S14),
the per-plan jit cache, and agreement with the NumPy backend.

The generic conformance suite runs on the ``jax``, ``jax-device`` and ``jax-jit`` runners
registered by ``convkit.backends.jax.test_runners``; this file checks what is JAX-only.
Oracles: ``tests/reference.py`` (exact, independent of convkit) and SciPy.
"""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import scipy.signal

import convkit
from convkit import dispatch
from convkit.testing import assert_conv_close

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
from jax import lax  # noqa: E402
from reference import reference  # noqa: E402

from convkit.backends import jax as jb  # noqa: E402
from convkit.backends.jax import direct as jdirect  # noqa: E402

INT_DTYPES = ["int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64"]


def full_range(rng, shape, dtype):
    dt = np.dtype(dtype)
    if dt.kind == "b":
        return rng.integers(0, 2, shape).astype(bool)
    info = np.iinfo(dt)
    return rng.integers(info.min, info.max, shape, dtype=dt, endpoint=True)


def _cut_everything(monkeypatch):
    """Make the CPU direct cut every output long enough into 3 uneven concurrent pieces."""
    monkeypatch.setattr(jdirect, "_PIECE_WORK", 0)
    monkeypatch.setattr(jdirect, "_MAX_PIECES", 3)
    monkeypatch.setattr(jdirect, "_XLA_SPLITS_ROWS", False)


@pytest.fixture(params=["unrolled", "one-kernel", "loop", "pieces-unrolled", "pieces-loop",
                        "lax.conv"])
def direct_path(request, monkeypatch):
    """Run each direct case through every implementation of the JAX direct method:
    fused shifted multiply-adds (with one shared padded input, or, as small calls do, each
    term padded on its own), the blocked ``fori_loop`` (tiny blocks to hit every remainder),
    both cut into concurrent pieces as large CPU calls are, and
    ``lax.conv_general_dilated`` (the accelerator path, forced on CPU)."""
    jb._FUNCTIONS.clear()
    one = request.param == "one-kernel"
    monkeypatch.setattr(jdirect, "_ONE_KERNEL_OUT", 1 << 30 if one else 0)
    monkeypatch.setattr(jdirect, "_ONE_KERNEL_TAPS", 1 << 30 if one else 0)
    if request.param.startswith("pieces"):
        _cut_everything(monkeypatch)
    if request.param.endswith("loop") or request.param == "lax.conv":
        monkeypatch.setattr(jdirect, "_UNROLL_TAPS", 0)
        monkeypatch.setattr(jdirect, "_CHUNK", 2)
    if request.param == "lax.conv":
        monkeypatch.setattr(jb, "_platform", lambda *a: "gpu")
    yield request.param
    jb._FUNCTIONS.clear()


# ----------------------------------------------------------------------------- S4, S5 dtypes


@pytest.mark.parametrize("dtype", INT_DTYPES + ["bool"])
def test_integers_exact_wraparound_all_paths(dtype, direct_path, rng):
    """S5: integer/bool results are bit-identical to the exact wrap-around reference, on
    every direct implementation (integers on accelerators take the loop, never lax.conv)."""
    a = full_range(rng, (6, 7), dtype)
    b = full_range(rng, (3, 4), dtype)
    for op, kw in (("convolve", dict(mode="full")),
                   ("correlate", dict(mode="same", boundary="wrap", stride=(2, 1), dilation=(1, 2)))):
        got = getattr(convkit, op)(a, b, backend="jax", **kw)
        assert isinstance(got, np.ndarray) and got.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(got, reference(op, a, b, **kw))


def test_integer_fft_request_is_exact_or_raises(rng):
    """S5: an explicit method='fft' on integers follows the rule of every backend: full-range
    int64 cannot be exact through float64 and raises; small values are exact (computed
    direct); under jit the values are unknown and the exact direct result comes back."""
    a, b = full_range(rng, (40,), "int64"), full_range(rng, (9,), "int64")
    with pytest.raises(ValueError, match="method='fft' cannot give the exact integer"):
        convkit.convolve(a, b, "same", method="fft", backend="jax")
    with jax.enable_x64(True):
        got = jax.jit(lambda p, q: convkit.convolve(p, q, "same", method="fft"))(a, b)
    np.testing.assert_array_equal(np.asarray(got), reference("convolve", a, b, "same"))
    a, b = a % 1000, b % 1000
    got = convkit.convolve(a, b, "same", method="fft", backend="jax")
    np.testing.assert_array_equal(got, reference("convolve", a, b, "same"))


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64", "complex64", "complex128"])
def test_float_dtypes_host(dtype, direct_path, rng):
    """S4: host float inputs keep the NumPy result dtype (float64 not dropped; float16
    accumulates in float32); values within the S5 direct bound of the exact reference."""
    dt = np.dtype(dtype)
    a = rng.standard_normal((5, 8)).astype(dt)
    b = rng.standard_normal((3, 3)).astype(dt)
    if dt.kind == "c":
        a = a + 1j * rng.standard_normal(a.shape).astype(dt)
        b = b - 1j * rng.standard_normal(b.shape).astype(dt)
    kw = dict(mode="same", boundary="fill", fillvalue=0.5)
    got = convkit.correlate(a, b, backend="jax", method="direct", **kw)
    assert isinstance(got, np.ndarray) and got.dtype == dt
    exp = reference("correlate", a, b, **kw)
    if dt == np.float16:  # the oracle is exact; the bound of the f32 accumulation + final rounding
        err = np.abs(got.astype(np.float64) - exp)
        assert np.all(err <= 2.0**-11 * np.abs(exp) + 1e-5 * (np.abs(a).sum() * np.abs(b).max()))
    else:
        assert_conv_close(got, exp, a, b, "correlate", method="direct", check_dtype=False, **kw)


def test_x64_only_for_the_call_and_numpy_back(rng):
    """S4/S11: host float64/int64 run with 64-bit types, come back as NumPy, and the global
    jax_enable_x64 flag is untouched."""
    assert not jax.config.jax_enable_x64
    a = rng.standard_normal(30)
    b = rng.standard_normal(5)
    got = convkit.convolve(a, b, backend="jax")
    assert type(got) is np.ndarray and got.dtype == np.float64
    assert_conv_close(got, scipy.signal.convolve(a, b), a, b)
    ai = np.array([2**40, -3, 5], dtype=np.int64)
    np.testing.assert_array_equal(convkit.convolve(ai, ai, backend="jax"), np.convolve(ai, ai))
    assert not jax.config.jax_enable_x64


def test_jax_arrays_keep_jax_types_and_64bit_request_raises(rng):
    """S4: JAX inputs keep JAX's types; a plan that needs 64 bits with x64 off is a
    TypeError naming jax_enable_x64 (never a silent downcast)."""
    assert not jax.config.jax_enable_x64
    x = jnp.asarray(rng.standard_normal(20), dtype=jnp.float32)
    k = jnp.asarray(rng.standard_normal(4), dtype=jnp.float32)
    out = convkit.convolve(x, k)
    assert isinstance(out, jax.Array) and out.dtype == jnp.float32
    xi = jnp.arange(10, dtype=jnp.int32)
    assert convkit.convolve(xi, xi).dtype == jnp.int32
    for call in (lambda: convkit.convolve(x, k, dtype="float64"),
                 lambda: convkit.convolve(xi, k),  # result_type(int32, float32) is float64
                 lambda: convkit.correlate(xi, xi, dtype=np.int64)):
        with pytest.raises(convkit.ConvkitTypeError, match="jax_enable_x64"):
            call()
    with jax.enable_x64(True):  # with x64 on, the same request works
        x64 = jnp.asarray(np.asarray(x), dtype=jnp.float64)
        assert convkit.convolve(x64, k, dtype="float64").dtype == jnp.float64


# ----------------------------------------------------------------------------- S6 precision


@pytest.mark.parametrize("precision, expected", [("highest", lax.Precision.HIGHEST), ("default", None)])
def test_precision_passed_to_every_convolution(precision, expected, monkeypatch, rng):
    """S6: precision='highest' passes lax.Precision.HIGHEST to every lax convolution
    (complex runs four); 'default' passes None."""
    seen = []
    real_conv = lax.conv_general_dilated

    def spy(*args, **kwargs):
        seen.append(kwargs.get("precision"))
        return real_conv(*args, **kwargs)

    monkeypatch.setattr(lax, "conv_general_dilated", spy)
    monkeypatch.setattr(jb, "_platform", lambda *a: "gpu")  # the accelerator path uses lax.conv
    monkeypatch.setattr(jdirect, "_UNROLL_TAPS", 0)
    jb._FUNCTIONS.clear()
    a = rng.standard_normal((6, 6)) + 1j * rng.standard_normal((6, 6))
    convkit.convolve(a, a[:3, :3], backend="jax", method="direct", precision=precision)
    jb._FUNCTIONS.clear()
    assert len(seen) == 4 and all(p == expected for p in seen)


def _barrier_spy(monkeypatch) -> list:
    """Counts the optimization barriers traced (each padded copy that cuDNN must not fold)."""
    seen = []
    real = lax.optimization_barrier
    monkeypatch.setattr(lax, "optimization_barrier", lambda x: seen.append(x.shape) or real(x))
    return seen


@pytest.mark.parametrize("kind", ["float32", "complex64"])
def test_accelerator_lax_conv_multiplies_padded_zeros(kind, monkeypatch, rng):
    """S9 on accelerators: cuDNN skips the positions of lax.conv's own ``padding``, so an Inf
    tap would miss the zeros of 'same' and leave edge outputs finite. The accelerator path (forced
    here on the CPU) pads a real zero copy behind an optimization barrier, which XLA cannot fold
    back into the convolution; every output meets the Inf tap (Inf x 0 = NaN)."""
    seen = _barrier_spy(monkeypatch)
    monkeypatch.setattr(jb, "_platform", lambda *a: "gpu")
    monkeypatch.setattr(jb.backend, "_cost_platform", "gpu")  # no CPU handoff to NumPy
    monkeypatch.setattr(jdirect, "_UNROLL_TAPS", 0)
    jb._FUNCTIONS.clear()
    x = rng.standard_normal((20, 17)).astype(kind)
    k = rng.standard_normal((9, 4)).astype(kind)
    got = convkit.convolve(x, k, "same", backend="jax", method="direct")
    assert_conv_close(got, reference("convolve", x, k, "same"), x, k, mode="same", check_dtype=False)
    k[0, 0] = np.inf
    jb._FUNCTIONS.clear()
    seen.clear()
    got = np.asarray(convkit.convolve(x, k, "same", backend="jax", method="direct"))
    assert not np.isfinite(got).any()
    assert seen and all(s == (28, 20) for s in seen)  # the zero-padded copy: 8 rows, 3 columns
    got = np.asarray(convkit.convolve(x, k, "valid", backend="jax", method="direct"))
    assert not np.isfinite(got).any() and len(seen) == (1 if kind == "float32" else 4)  # valid: none
    jb._FUNCTIONS.clear()


def test_accelerator_conv_layer_multiplies_padded_zeros(monkeypatch, rng):
    """The same for convkit.conv's lax.conv on accelerators (forced here on the CPU): an Inf tap
    of filter 1 makes all its outputs non-finite, padded edges included, and no other filter's."""
    from convkit.backends.jax import conv as jconv

    seen = _barrier_spy(monkeypatch)
    monkeypatch.setattr(jconv, "_platform", lambda *a: "gpu")
    jconv._JITTED.clear()
    x = rng.standard_normal((1, 9, 9, 2)).astype(np.float32)  # NHWC: the spatial axes are 1 and 2
    w = rng.standard_normal((3, 3, 2, 3)).astype(np.float32)  # HWIO
    w[0, 0, 0, 1] = np.inf
    out = np.asarray(convkit.conv(x, w, padding="same", layout="NHWC", kernel_layout="HWIO",
                                  backend="jax"))
    jconv._JITTED.clear()
    assert not np.isfinite(out[..., 1]).any() and np.isfinite(out[..., [0, 2]]).all()
    assert seen == [(1, 11, 11, 2)]


# ----------------------------------------------------------------------------- S3, S7, S10 geometry


def test_shapes_jax_scipy_rejects():
    """S3: 'full'/'same' accept (3,5)*(5,3), which jax.scipy.signal.convolve rejects."""
    a = np.arange(15.0).reshape(3, 5)
    b = np.arange(15.0).reshape(5, 3) - 7
    with pytest.raises(ValueError):
        jax.scipy.signal.convolve(a, b)
    for mode in ("full", "same"):
        got = convkit.convolve(a, b, mode, backend="jax")
        assert_conv_close(got, reference("convolve", a, b, mode), a, b, mode=mode, check_dtype=False)


def test_broadcast_axes_all_layouts(direct_path, rng):
    """S10: non-convolution axes broadcast: shared kernel (lax batch), paired (feature
    groups) and one input with many kernels (output features), in one call."""
    a = rng.standard_normal((3, 1, 4, 9, 7))
    b = rng.standard_normal((1, 2, 4, 3, 2))
    kw = dict(mode="same", axes=(4, 3), stride=(1, 2), boundary="symm", align="tf")
    got = convkit.convolve(a, b, backend="jax", method="direct", **kw)
    assert got.shape == (3, 2, 4, 5, 7)
    assert_conv_close(got, reference("convolve", a, b, **kw), a, b, method="direct", **kw)


@pytest.mark.parametrize("method", ["fft", "oa"])
def test_transform_methods_geometry(method, rng):
    """S8: FFT and overlap-add (blocked on the long axes) agree with the exact reference."""
    cases = [((700,), (9,), dict(mode="same", boundary="mirror")),
             ((300, 40), (5, 3), dict(mode="full")),
             ((2, 500), (1, 13), dict(mode=((3, 2), (6, 0)), axes=None, dilation=2)),
             ((130, 90), (4, 11), dict(mode="valid"))]
    for xs, ks, kw in cases:
        a = rng.standard_normal(xs) + 1j * rng.standard_normal(xs)
        b = rng.standard_normal(ks)
        for op in ("convolve", "correlate"):
            got = getattr(convkit, op)(a, b, backend="jax", method=method, **kw)
            assert_conv_close(got, reference(op, a, b, **kw), a, b, op, method=method,
                              check_dtype=False, **kw)


# ----------------------------------------------------------------------------- S8, S9 auto


def test_auto_picks_transforms_for_big_kernels_and_direct_for_small():
    """S8: the JAX cost model sends big kernels to FFT/overlap-add and small ones to direct."""
    from convkit.options import make_options
    from convkit.plan import make_plan

    def method(xs, ks, dt="float32"):
        d = np.dtype(dt)
        return make_plan("convolve", xs, ks, d, d, make_options(mode="same"), jb.backend.capabilities).method

    assert method((1_000_000,), (4096,)) in ("fft", "oa")
    assert method((1024, 1024), (63, 63)) in ("fft", "oa")
    assert method((2000, 2000), (3, 3)) == "direct"
    assert method((1_000_000,), (16,)) == "direct"
    assert method((1_000_000,), (4096,), "int32") == "direct"  # S5: never FFT for integers


def _nan_case(rng):
    x = rng.standard_normal(3000)
    k = rng.standard_normal(600)
    x[[10, 1500]] = np.nan
    x[2500] = np.inf
    return x, k


def test_auto_nan_safe_host_jit_vmap(rng, jax_on_cpu):
    """S9: auto (an FFT plan here) puts NaN/Inf where direct does, eagerly, under jit and vmap."""
    from convkit.options import make_options
    from convkit.plan import make_plan

    x, k = _nan_case(rng)
    d = np.dtype(np.float64)
    plan = make_plan("convolve", x.shape, k.shape, d, d, make_options(mode="same"), jb.backend.capabilities)
    assert plan.method in ("fft", "oa") and plan.nan_safe
    exp = reference("convolve", x, k, "same")
    assert_conv_close(convkit.convolve(x, k, "same", backend="jax"), exp, x, k, mode="same")
    with jax.enable_x64(True):
        xj, kj = jnp.asarray(x), jnp.asarray(k)
        got = jax.jit(lambda a, b: convkit.convolve(a, b, "same"))(xj, kj)
        assert_conv_close(got, exp, x, k, mode="same")
        xs = jnp.stack([xj, jnp.nan_to_num(xj, nan=0.0, posinf=0.0)])
        got2 = jax.vmap(lambda a: convkit.convolve(a, kj, "same"))(xs)
        assert_conv_close(got2[0], exp, x, k, mode="same")
        clean = np.nan_to_num(x, nan=0.0, posinf=0.0)
        assert_conv_close(got2[1], reference("convolve", clean, k, "same"), clean, k, mode="same")
    # an explicit FFT keeps FFT behaviour: the NaN spreads
    assert np.isnan(convkit.convolve(x, k, "same", method="fft", backend="jax")).all()


# ----------------------------------------------------------------------------- jit cache, S14


def test_one_trace_per_plan(rng):
    """Compiled functions are cached per static plan: repeated calls do not re-trace."""
    x = jnp.asarray(rng.standard_normal(37), dtype=jnp.float32)
    k = jnp.asarray(rng.standard_normal(5), dtype=jnp.float32)
    before = jb.TRACE_COUNT
    convkit.convolve(x, k, "same", stride=2)
    after_first = jb.TRACE_COUNT
    for _ in range(3):
        convkit.convolve(x + 1, k, "same", stride=2)
    assert after_first == before + 1 and jb.TRACE_COUNT == after_first
    convkit.convolve(x[:-1], k, "same", stride=2)  # new shape: one new trace
    assert jb.TRACE_COUNT == after_first + 1
    xh = np.asarray(x, dtype=np.float64)
    convkit.convolve(xh, np.asarray(k, np.float64), backend="jax")
    n = jb.TRACE_COUNT
    convkit.convolve(xh * 2, np.asarray(k, np.float64), backend="jax")
    assert jb.TRACE_COUNT == n


@pytest.mark.parametrize("method", ["direct", "fft", "auto"])
def test_grad_matches_adjoint_and_finite_differences(method, rng):
    """S14: d/dx sum(w * convolve(x, k)) = correlate(w, k, 'valid') (the adjoint of full
    convolution), and d/dk likewise = correlate(w, x, 'valid'); checked with finite
    differences too."""
    with jax.enable_x64(True):
        x = jnp.asarray(rng.standard_normal(40))
        k = jnp.asarray(rng.standard_normal(7))
        w = jnp.asarray(rng.standard_normal(46))

        def f(x, k):
            return jnp.sum(w * convkit.convolve(x, k, method=method))

        gx, gk = jax.jit(jax.grad(f, argnums=(0, 1)))(x, k)
        np.testing.assert_allclose(gx, scipy.signal.correlate(np.asarray(w), np.asarray(k), "valid"),
                                   rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(gk, scipy.signal.correlate(np.asarray(w), np.asarray(x), "valid"),
                                   rtol=1e-10, atol=1e-10)
        e = np.zeros(40)
        e[17] = 1e-6
        fd = (f(x + e, k) - f(x - e, k)) / 2e-6
        np.testing.assert_allclose(gx[17], fd, rtol=1e-6)


def test_vmap_and_jit_match_loop(rng):
    """S14: vmap over a batch (with a per-example kernel) equals the per-example calls."""
    x = jnp.asarray(rng.standard_normal((4, 12, 10)), dtype=jnp.float32)
    k = jnp.asarray(rng.standard_normal((4, 3, 3)), dtype=jnp.float32)
    f = jax.jit(jax.vmap(lambda a, b: convkit.correlate(a, b, "same", boundary="nearest", stride=2)))
    got = f(x, k)
    for i in range(4):
        a, b = np.asarray(x[i]), np.asarray(k[i])
        kw = dict(mode="same", boundary="nearest", stride=2)
        assert_conv_close(got[i], reference("correlate", a, b, **kw), a, b, "correlate",
                          check_dtype=False, **kw)


# ----------------------------------------------------------------------------- S11, S12


def test_device_arrays_stay_and_come_back_as_jax(rng):
    x = jnp.asarray(rng.standard_normal((8, 8)), dtype=jnp.float32)
    out = convkit.convolve(x, x[:3, :3], "same")
    assert isinstance(out, jax.Array) and out.devices() == x.devices()


def test_jax_and_cupy_arrays_mixed_is_device_mismatch(monkeypatch):
    """S11: a JAX array with a CuPy array is a DeviceMismatchError (a TypeError) that says
    how to convert. CuPy has no device here, so a stand-in module provides cupy.ndarray."""
    fake = types.ModuleType("cupy")

    class ndarray:  # noqa: N801 - the name array_api_compat looks for
        shape, dtype = (3,), np.dtype(np.float32)

    fake.ndarray = ndarray
    monkeypatch.setitem(sys.modules, "cupy", fake)
    assert dispatch.array_owner(ndarray()) == "cupy"
    with pytest.raises(convkit.DeviceMismatchError, match=r"jax array and in2 a cupy array.*asarray"):
        convkit.convolve(jnp.ones(3), ndarray())
    with pytest.raises(TypeError):
        convkit.convolve(ndarray(), jnp.ones(3))


def test_jax_array_with_conflicting_backend_argument():
    with pytest.raises(convkit.DeviceMismatchError, match="backend='numpy'"):
        convkit.convolve(jnp.ones(3), jnp.ones(2), backend="numpy")


def test_env_backend_jax_returns_numpy_with_scipy_dtype(monkeypatch, rng):
    """S12: CONVKIT_BACKEND=jax with NumPy inputs returns NumPy arrays of the SciPy dtype."""
    monkeypatch.setenv("CONVKIT_BACKEND", "jax")
    dispatch.reload_environment()
    for a, b in ((rng.standard_normal(20), rng.standard_normal(4).astype(np.float32)),
                 (np.arange(9, dtype=np.int16), np.arange(3, dtype=np.uint8)),
                 ([1, 2, 3], [0.5, 1])):
        expected = scipy.signal.convolve(a, b, method="direct")
        before = jb.TRACE_COUNT
        got = convkit.convolve(a, b)
        assert jb.TRACE_COUNT == before + 1  # it really ran on JAX
        assert type(got) is np.ndarray and got.dtype == expected.dtype
        np.testing.assert_allclose(got, expected, rtol=1e-6)


def _direct_plan(op, xs, ks, dtype, mode="same", axes=None, boundary="fill", align="scipy",
                 stride=1, dilation=1):
    from convkit.options import make_options
    from convkit.plan import make_plan

    d = np.dtype(dtype)
    options = make_options(mode=mode, axes=axes, boundary=boundary, align=align, stride=stride,
                           dilation=dilation, method="direct")
    return make_plan(op, xs, ks, d, d, options, jb.backend.capabilities)


@pytest.mark.parametrize("x_shape, k_shape, kw", [
    ((7, 1, 10), (1, 1, 3), dict(axes=(2,))),             # cut a shared-kernel (batch) axis
    ((7, 1, 10), (7, 1, 3), dict(axes=(2,))),             # cut a paired axis: both sliced
    ((1, 1, 10), (7, 2, 3), dict(axes=(2,))),             # cut a many-kernels axis: kernel sliced
    ((40,), (3,), dict(stride=3, dilation=2, boundary="wrap")),  # cut a strided dilated axis
    ((9, 30), (4, 5), dict(stride=(1, 2), boundary="symm", align="tf")),
])
@pytest.mark.parametrize("dtype", ["float64", "int16", "bool"])
def test_direct_cut_into_pieces_is_unchanged(x_shape, k_shape, kw, dtype, monkeypatch, rng):
    """The CPU direct cut into concurrent pieces along each kind of axis gives the exact
    reference (bit-identical for integers, the S5 bound for floats)."""
    jb._FUNCTIONS.clear()
    _cut_everything(monkeypatch)
    if dtype == "float64":
        a, b = rng.standard_normal(x_shape), rng.standard_normal(k_shape)
    else:
        a, b = full_range(rng, x_shape, dtype), full_range(rng, k_shape, dtype)
    kw = dict(mode="same", **kw)
    assert jb._pieces(_direct_plan("correlate", a.shape, b.shape, a.dtype, **kw))
    got = convkit.correlate(a, b, backend="jax", method="direct", **kw)
    exp = reference("correlate", a, b, **kw)
    if dtype == "float64":
        assert_conv_close(got, exp, a, b, "correlate", method="direct", **kw)
    else:
        np.testing.assert_array_equal(got, exp)
    jb._FUNCTIONS.clear()


@pytest.mark.parametrize("x_shape, k_shape, kw", [
    ((200,), (16,), dict(mode="full")),
    ((200,), (7,), dict(mode="same", fillvalue=3)),
    ((200,), (6,), dict(mode="same", align="tf", stride=3)),
    ((201,), (4,), dict(mode="valid", dilation=3)),
    ((200,), (5,), dict(mode=((-3, 7),), stride=2, dilation=2)),   # negative (cropping) pad
    ((200,), (5,), dict(mode=((9, -4),))),
    ((2, 150), (1, 5), dict(mode="full", axes=(1,))),              # shared kernel, two rows
    ((1, 150), (3, 5), dict(mode="same", axes=(1,))),              # one signal, three kernels
    ((4, 150), (2, 5), dict(mode=((0, 0), (4, 2)))),               # 2-D, the other axis valid
])
@pytest.mark.parametrize("dtype", ["float64", "complex128", "int16", "uint8"])
def test_direct_interior_rows_exact(x_shape, k_shape, kw, dtype, monkeypatch, rng, jax_on_cpu):
    """A cut CPU direct computes the outputs whose windows lie inside ``x`` from ``x`` itself,
    in rows, and only the edges from padded slices: every offset, stride, dilation, fill value,
    cropping pad and broadcast layout gives the exact reference (S5)."""
    jb._FUNCTIONS.clear()
    _cut_everything(monkeypatch)
    calls = []
    rows = jb.JaxBackend._interior_rows
    monkeypatch.setattr(jdirect.DirectMixin, "_interior_rows",
                        lambda self, *a: calls.append(a[-3:]) or rows(self, *a))
    if dtype == "float64":
        a, b = rng.standard_normal(x_shape), rng.standard_normal(k_shape)
    elif dtype == "complex128":
        a = rng.standard_normal(x_shape) + 1j * rng.standard_normal(x_shape)
        b = rng.standard_normal(k_shape) - 1j * rng.standard_normal(k_shape)
    else:
        a, b = full_range(rng, x_shape, dtype), full_range(rng, k_shape, dtype)
    got = convkit.convolve(a, b, backend="jax", method="direct", **kw)
    (lo, hi, n_rows), = calls                      # the rows path ran, on part of the output
    assert 0 <= lo < hi <= got.shape[-1] and (hi - lo) % n_rows == 0 and n_rows > 1
    exp = reference("convolve", a, b, **kw)
    if dtype in ("float64", "complex128"):
        assert_conv_close(got, exp, a, b, method="direct", check_dtype=False, **kw)
    else:
        np.testing.assert_array_equal(got, exp)
    jb._FUNCTIONS.clear()


def test_interior_is_where_windows_lie_inside():
    """The interior bounds: the first and last window inside ``x`` exactly, and no rows path
    for boundaries other than a constant, bool, or padding on another convolution axis."""
    plan = _direct_plan("convolve", (100,), (5,), np.float64, mode="full")
    assert jb._interior(plan, 0) == (4, 100)                    # outputs 4..99 read x[0..99]
    plan = _direct_plan("convolve", (100,), (5,), np.float64, mode="same", stride=3, align="tf")
    lo, hi = jb._interior(plan, 0)
    pad_lo = plan.pads[0][0]
    assert lo * 3 - pad_lo >= 0 > (lo - 1) * 3 - pad_lo
    assert (hi - 1) * 3 - pad_lo + 4 <= 99 < hi * 3 - pad_lo + 4
    for kw in (dict(boundary="reflect"), dict(boundary="wrap")):
        assert jb._interior(_direct_plan("convolve", (100,), (5,), np.float64, **kw), 0) is None
    assert jb._interior(_direct_plan("convolve", (100,), (5,), np.bool_), 0) is None
    assert jb._interior(_direct_plan("convolve", (4, 100), (3, 5), np.float64), 1) is None


def test_large_cpu_direct_is_cut_small_is_not():
    """Only long 1-D work worth a thread is cut, by the work alone: the same pieces on any
    number of cores (S8, docs/determinism.md)."""
    big = _direct_plan("convolve", (10**6,), (16,), np.float64, mode="full")
    axis, bounds = jb._pieces(big)
    assert axis == 0 and len(bounds) == jb._MAX_PIECES and bounds[0][0] == 0
    assert bounds[-1][1] == big.out_shape[0]
    assert all(lo < hi == nxt for (lo, hi), (nxt, _) in zip(bounds, bounds[1:]))
    assert jb._pieces(_direct_plan("convolve", (64,), (3,), np.float64, mode="full")) is None
    rows = _direct_plan("convolve", (2000, 2000), (3, 3), np.float64)  # XLA spreads rows itself
    assert jb._pieces(rows) is None
    mid = _direct_plan("convolve", (50_000,), (16,), np.float64, mode="full")  # 3 pieces' work
    assert len(jb._pieces(mid)[1]) == 3


# ----------------------------------------------------------------------------- cross-backend


def test_random_cases_numpy_and_jax_agree(rng):
    """The same random cases on the NumPy and JAX backends agree with each other (and with
    the exact reference): shapes, modes, boundaries, stride, dilation, axes, dtypes."""
    modes = ["full", "same", "causal", "valid"]
    bounds = ["fill", "symm", "mirror", "nearest", "wrap"]
    for _ in range(24):
        nd = int(rng.integers(1, 3))
        xs = tuple(int(v) for v in rng.integers(3, 12, nd))
        ks = tuple(int(v) for v in rng.integers(1, 5, nd))
        mode = modes[int(rng.integers(4))]
        kw = dict(mode=mode, boundary=bounds[int(rng.integers(5))] if mode != "valid" else "fill",
                  stride=int(rng.integers(1, 3)), dilation=int(rng.integers(1, 3)),
                  align=["scipy", "tf"][int(rng.integers(2))])
        if mode == "valid":
            kw.update(stride=1, dilation=1)
        op = ["convolve", "correlate"][int(rng.integers(2))]
        dtype = ["float64", "float32", "int32", "complex128"][int(rng.integers(4))]
        if dtype == "int32":
            a, b = full_range(rng, xs, dtype), full_range(rng, ks, dtype)
        else:
            a = rng.standard_normal(xs).astype(dtype)
            b = rng.standard_normal(ks).astype(dtype)
        try:
            ref_np = getattr(convkit, op)(a, b, backend="numpy", **kw)
        except ValueError:
            with pytest.raises(ValueError):
                getattr(convkit, op)(a, b, backend="jax", **kw)
            continue
        got = getattr(convkit, op)(a, b, backend="jax", **kw)
        assert got.dtype == ref_np.dtype and got.shape == ref_np.shape
        if dtype == "int32":
            np.testing.assert_array_equal(got, ref_np)
        else:  # both within the bound of the exact result: within twice the bound of each other
            exact = reference(op, a, b, **kw)
            assert_conv_close(got, exact, a, b, op, check_dtype=False, **kw)
            assert_conv_close(ref_np, exact, a, b, op, check_dtype=False, **kw)


def test_auto_overlap_add_nan_safe_with_stride(rng, jax_on_cpu):
    """S9 with an overlap-add plan: a NaN poisons only its own blocks; with strides some
    sampled outputs miss it. The output check still falls back to direct exactly when an
    output is affected, so NaN/Inf positions equal direct's."""
    from convkit.options import make_options
    from convkit.plan import make_plan

    x = rng.standard_normal(50000)
    k = rng.standard_normal(200)
    d = np.dtype(np.float64)
    plan = make_plan("convolve", x.shape, k.shape, d, d, make_options(mode="same"), jb.backend.capabilities)
    assert plan.method == "oa" and plan.nan_safe
    x[[5, 12345]] = [np.nan, -np.inf]
    for kw in (dict(mode="same"), dict(mode="same", stride=7), dict(mode="full", stride=3)):
        got = convkit.convolve(x, k, backend="jax", **kw)
        assert_conv_close(got, reference("convolve", x, k, **kw), x, k, check_dtype=False, **kw)
