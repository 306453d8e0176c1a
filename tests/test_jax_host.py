"""The JAX backend's CPU handoff (backends/jax/host.py): eager CPU calls that the cost model
puts on the NumPy backend's engines run there and come back as JAX arrays.

Oracles: ``tests/reference.py`` (exact float64 shift-and-add, independent of convkit) within
the S5 bounds, and the NumPy backend on the same host data (the handoff must be that very
computation, bit for bit). The conformance suite runs every case on the ``jax-host`` runner
(every call that may hand off does); these tests check where it happens and where it must not.
"""

from __future__ import annotations

import numpy as np
import pytest
from reference import reference

import convkit
from convkit.backends._base import ALIGNMENT, aligned_empty, aligned_outputs, output_array
from convkit.options import make_options
from convkit.plan import make_plan
from convkit.testing import assert_conv_close

jax = pytest.importorskip("jax")
jnp = jax.numpy
host = pytest.importorskip("convkit.backends.jax.host")
BE = convkit.get_backend("jax")
NB = convkit.get_backend("numpy")

pytestmark = pytest.mark.skipif(jax.default_backend() != "cpu", reason="the handoff is for JAX on a CPU")


def _plan(x_shape, k_shape, dtype="float32", **kw):
    options = make_options(**{"mode": "same", **kw})
    return make_plan("convolve", x_shape, k_shape, np.dtype(dtype), np.dtype(dtype), options,
                     BE._cpu_capabilities())


@pytest.fixture
def spy(monkeypatch):
    """The plans handed to the NumPy backend."""
    plans = []
    real = host.run_on_host

    def run(plan, *args, **kwargs):
        plans.append(plan)
        return real(plan, *args, **kwargs)

    monkeypatch.setattr(host, "run_on_host", run)
    return plans


def _data(x_shape, k_shape, dtype="float32", seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(x_shape).astype(dtype), rng.standard_normal(k_shape).astype(dtype)


def test_large_image_hands_off_and_is_the_numpy_result(spy):
    """A 2000x1900 float32 image with a 7x7 kernel: XLA's loop is estimated far slower than the
    host engines, so the call runs there; the JAX array holds the NumPy backend's bits, within
    S5 of the exact float64 sum, on the CPU, in float32."""
    a, k = _data((2000, 1900), (7, 7))
    out = convkit.convolve(jnp.asarray(a), jnp.asarray(k), "same")
    assert len(spy) == 1
    assert isinstance(out, jax.Array) and out.dtype == jnp.float32 and out.shape == a.shape
    assert next(iter(out.devices())).platform == "cpu"
    np.testing.assert_array_equal(np.asarray(out), convkit.convolve(a, k, "same", backend="numpy"))
    assert_conv_close(np.asarray(out), reference("convolve", a, k, mode="same"), a, k, "convolve",
                      method="direct", check_dtype=False, mode="same")


def test_result_is_adopted_without_a_copy(monkeypatch):
    """The engines write an aligned output and the JAX array uses that memory."""
    seen = []
    real = host.run_on_host

    def run(*args, **kwargs):
        out = real(*args, **kwargs)
        seen.append(out.ctypes.data)
        return out

    monkeypatch.setattr(host, "run_on_host", run)
    a, k = _data((2000, 1900), (7, 7))
    out = convkit.correlate(jnp.asarray(a), jnp.asarray(k), "same")
    assert seen and seen[0] % ALIGNMENT == 0
    assert out.unsafe_buffer_pointer() == seen[0]


def test_small_calls_stay_on_xla(spy):
    """64x64 with 3x3: the handoff's fixed cost (JAX's dispatch, adopting the result) is more
    than XLA's whole call."""
    a, k = _data((64, 64), (3, 3))
    out = convkit.convolve(jnp.asarray(a), jnp.asarray(k), "same")
    assert spy == []
    assert_conv_close(np.asarray(out), reference("convolve", a, k, mode="same"), a, k, "convolve",
                      method="direct", check_dtype=False, mode="same")


def test_traced_calls_stay_on_xla(spy):
    """Under ``jax.jit`` the inputs are tracers: XLA runs the plan (there are no values to hand)."""
    a, k = _data((2000, 1900), (7, 7))
    out = jax.jit(lambda x, w: convkit.convolve(x, w, "same"))(jnp.asarray(a), jnp.asarray(k))
    assert spy == []
    assert_conv_close(np.asarray(out), reference("convolve", a, k, mode="same"), a, k, "convolve",
                      method="direct", check_dtype=False, mode="same")


def test_switched_off_by_environment(spy, monkeypatch):
    monkeypatch.setenv("CONVKIT_JAX_HOST", "0")
    a, k = _data((2000, 1900), (7, 7))
    convkit.convolve(jnp.asarray(a), jnp.asarray(k), "same")
    assert spy == []


def test_host_data_with_backend_jax_runs_on_numpy(spy):
    """NumPy data with ``backend="jax"`` on a CPU: the NumPy backend's result, as NumPy (S11)."""
    a, k = _data((2000, 1900), (7, 7), "float64")
    out = convkit.convolve(a, k, "same", backend="jax")
    assert len(spy) == 1
    assert type(out) is np.ndarray and out.dtype == np.float64
    np.testing.assert_array_equal(out, convkit.convolve(a, k, "same", backend="numpy"))


@pytest.mark.parametrize("case", [
    dict(x=(2000, 1900), k=(7,), dtype="float32", why="one convolution axis"),
    dict(x=(2000, 1900), k=(7, 7), dtype="int32", why="integers: XLA's exact loop"),
    dict(x=(2000, 1900), k=(7, 7), dtype="complex64", why="complex"),
    dict(x=(2000, 1900), k=(7, 7), dtype="float16", why="float16 (accumulates in float32)"),
])
def test_which_plans_may_hand_off(case):
    """Only real float32/float64 plans with two or more convolution axes (the host engines'
    plans); every other plan stays on XLA whatever the estimates."""
    k = case["k"]
    axes = None if len(k) == 2 else (1,)
    plan = _plan(case["x"], k if len(k) == 2 else (1,) + k, case["dtype"], axes=axes)
    with host.forced():
        assert host.host_plan(plan, BE._cpu_capabilities(), NB, adopt=True) is None, case["why"]


def test_decision_follows_the_estimates():
    """Large and mid-size images hand off (500x500 to 4096x4096 with 3x3 and 7x7, 512x512 with
    5x5), small float32 ones (64x64 and 256x256 with 3x3) do not; the host plan is the NumPy
    backend's own choice."""
    caps = BE._cpu_capabilities()
    for n, m in ((2000, 3), (2000, 7), (4096, 3), (500, 3), (512, 5), (500, 7)):
        moved = host.host_plan(_plan((n, n), (m, m)), caps, NB, adopt=True)
        assert moved is not None and moved.method == "direct", (n, m)
    for n in (64, 256):
        assert host.host_plan(_plan((n, n), (3, 3)), caps, NB, adopt=True) is None, n
    # the estimates with the fixed cost and margin, recomputed by hand for one plan
    plan = _plan((2000, 2000), (7, 7))
    moved = host.host_plan(plan, caps, NB, adopt=True)
    host_s = host._estimate(moved, NB.capabilities) + host.HANDOFF_SECONDS
    assert host.MARGIN * host_s < host._estimate(plan, caps)


def test_decision_prices_the_constants_handoff_call():
    """The fixed cost is the constants' ``handoff_call`` (what ``convkit tune --backend jax``
    measures), the shipped :data:`HANDOFF_SECONDS` where they have none (files saved before it):
    a 256x256 3x3 call that stays on XLA at the shipped price hands off when the handoff costs
    nothing, and a 2000x2000 7x7 one stays when it costs a second."""
    import dataclasses

    caps = BE._cpu_capabilities()
    assert caps.handoff_call == host.HANDOFF_SECONDS
    mid, large = _plan((256, 256), (3, 3)), _plan((2000, 2000), (7, 7))
    free = dataclasses.replace(caps, handoff_call=0.0)
    moved = host.host_plan(mid, free, NB, adopt=True)
    assert host.host_plan(mid, caps, NB, adopt=True) is None
    assert moved is not None and moved.method == "direct"
    assert host.MARGIN * host._estimate(moved, NB.capabilities) < host._estimate(mid, caps)  # by hand
    assert host.host_plan(large, dataclasses.replace(caps, handoff_call=1.0), NB, adopt=True) is None
    unset = dataclasses.replace(caps, handoff_call=None)
    assert host.handoff_seconds(unset) == host.HANDOFF_SECONDS
    assert host.host_plan(mid, unset, NB, adopt=True) is None
    assert host.host_plan(large, unset, NB, adopt=True) is not None
    # the handoff is priced on adopted results only: host data with backend="jax" comes back as NumPy
    assert host.host_plan(large, dataclasses.replace(caps, handoff_call=1.0), NB, adopt=False) is not None


def test_measure_is_the_handoff_less_the_numpy_call(monkeypatch):
    """``measure`` times a forced handoff and the NumPy backend's call on the same host data
    and returns the difference, never below its floor; the forced call really hands off."""
    handed = []
    real = host.run_on_host
    monkeypatch.setattr(host, "run_on_host",
                        lambda plan, *a, **kw: handed.append(plan) or real(plan, *a, **kw))
    times = {"handed": 7e-4, "on_host": 2e-4}

    def fake_best(fn):
        fn()
        return times[fn.__name__]

    assert host.measure(fake_best, side=32) == pytest.approx(5e-4)
    assert handed and all(p.x_shape == (32, 32) for p in handed)
    times["handed"] = 1e-4  # faster than the NumPy call: noise, floored
    assert host.measure(fake_best, side=32) == host._MEASURE_FLOOR
    from convkit.tune import _best  # the tuner's own timer

    real_timer = host.measure(lambda fn: _best(fn, 2), side=48)
    assert host._MEASURE_FLOOR <= real_timer < 0.05


def test_volumes_are_decided_without_the_3d_loop(spy):
    """Volumes hand off only where the NumPy backend wins without its 3-D Numba loop (XLA's 3-D
    loops are as fast, docs/backends/jax.md): the decision is the one with ``c_fused_3d = 0``,
    and an eager volume call on the loop's shapes stays on XLA."""
    import dataclasses

    caps = BE._cpu_capabilities()
    looped = dataclasses.replace(NB.capabilities, c_fused_3d=1e-12, c_fused_3d_out=1e-12)
    plain = dataclasses.replace(NB.capabilities, c_fused_3d=0.0)

    class Host:  # the NumPy backend with a 3-D loop the estimates put far ahead
        capabilities = looped
        writes_whole_output = staticmethod(NB.writes_whole_output)

    class Plain(Host):
        capabilities = plain

    for shape, k, dtype in [((128,) * 3, (3,) * 3, "float32"), ((64,) * 3, (5,) * 3, "float64"),
                            ((64,) * 3, (9,) * 3, "float64")]:
        plan = _plan(shape, k, dtype)
        decided = host.host_plan(plan, caps, Host(), adopt=True)
        assert decided == host.host_plan(plan, caps, Plain(), adopt=True)
    a, k = _data((128, 128, 128), (3, 3, 3))
    convkit.convolve(jnp.asarray(a), jnp.asarray(k), "same")
    assert spy == []


def test_explicit_methods_follow_the_geometry(spy):
    """S9 on the JAX backend: ``auto`` keeps the NaN/Inf positions of ``"direct"``. So ``"direct"``
    hands off exactly where the NumPy backend's ``auto`` picks direct (2000x2000 with 7x7), and
    not where it picks an FFT method (300x300 with 31x31): there only ``auto`` hands off, with
    its result checked. An explicit FFT method always stays on XLA."""
    caps = BE._cpu_capabilities()
    direct = host.host_plan(_plan((2000, 2000), (7, 7), method="direct"), caps, NB, adopt=True)
    assert direct is not None and direct.method == "direct" and not host.needs_check(direct)
    with host.forced():
        assert host.host_plan(_plan((300, 300), (31, 31), method="direct"), caps, NB, adopt=True) is None
        auto = host.host_plan(_plan((300, 300), (31, 31)), caps, NB, adopt=True)
        assert auto.method in ("fft", "oa") and auto.nan_safe and host.needs_check(auto)
        for method in ("fft", "oa"):
            assert host.host_plan(_plan((300, 300), (31, 31), method=method), caps, NB, adopt=True) is None


def test_fft_handoff_with_overflow_reruns_on_xla(spy):
    """Finite float32 data whose sums overflow: the handed-off FFT result is not finite, so XLA
    computes the call again, and ``auto`` has exactly the non-finite positions of XLA's
    ``"direct"`` (where such sums overflow depends on the order of the additions)."""
    a, k = _data((300, 300), (31, 31), seed=5)
    a[:60, :60] = 3e38
    xa, xk = jnp.asarray(a), jnp.asarray(k)
    with host.forced():
        auto = np.asarray(convkit.convolve(xa, xk, "same"))
        direct = np.asarray(convkit.convolve(xa, xk, "same", method="direct"))
    assert [p.method for p in spy] in (["fft"], ["oa"])  # auto handed off once; direct did not
    for pred in (np.isnan, np.isposinf, np.isneginf):
        np.testing.assert_array_equal(pred(auto), pred(direct))
    assert not np.isfinite(direct).all() and np.isfinite(direct).any()


@pytest.mark.parametrize("kw", [dict(mode="same"), dict(mode="valid"), dict(mode="full"),
                                dict(mode="same", boundary="symm"), dict(mode="same", boundary="wrap"),
                                dict(mode="same", stride=2), dict(mode="same", dilation=2),
                                dict(mode="same", align="tf")])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_forced_handoff_matches_numpy_bitwise(kw, dtype, spy):
    """Whatever the geometry, a handed-off call is the NumPy backend's computation: the same bits,
    the JAX array's dtype and shape, and within S5 of the exact sum."""
    a, k = _data((40, 33), (4, 5), dtype, seed=3)
    with jax.enable_x64(True), host.forced():
        out = convkit.correlate(jnp.asarray(a), jnp.asarray(k), **kw)
    assert len(spy) == 1
    assert isinstance(out, jax.Array) and out.dtype == np.dtype(dtype)
    expect = convkit.correlate(a, k, backend="numpy", **kw)
    np.testing.assert_array_equal(np.asarray(out), expect)
    assert_conv_close(np.asarray(out), reference("correlate", a, k, **kw), a, k, "correlate", method="direct",
                      check_dtype=False, **kw)


def test_forced_handoff_keeps_nan_local(spy):
    """S9: a NaN in the data reaches only the outputs whose window holds it."""
    a, k = _data((60, 50), (5, 5), "float64", seed=4)
    a[30, 20] = np.nan
    with jax.enable_x64(True), host.forced():
        out = np.asarray(convkit.convolve(jnp.asarray(a), jnp.asarray(k), "same"))
    assert len(spy) == 1
    bad = np.argwhere(np.isnan(out))
    assert bad.min(axis=0).tolist() == [28, 18] and bad.max(axis=0).tolist() == [32, 22]
    assert np.isnan(out).sum() == 25


def test_view_of_an_input_is_copied(spy):
    """A result that is a view of an input (a 1x1 kernel of one on a host path) is read-only:
    DLPack cannot export it and JAX must not alias it, so it is copied."""
    a = np.arange(12.0, dtype=np.float32).reshape(3, 4)
    with host.forced():
        out = convkit.convolve(jnp.asarray(a), jnp.ones((1, 1), jnp.float32), "same")
    np.testing.assert_array_equal(np.asarray(out), a)


def test_explain_and_method_label_name_the_handoff():
    a, k = _data((2000, 2000), (7, 7))
    e = convkit.explain(jnp.asarray(a), jnp.asarray(k), "same")
    assert any("CPU handoff" in n for n in e.notes)
    assert BE.method_label(_plan((2000, 2000), (7, 7)), k).startswith("host:direct")
    small = convkit.explain(jnp.ones((64, 64)), jnp.ones((3, 3)), "same")
    assert not any("CPU handoff" in n for n in small.notes)
    assert not BE.method_label(_plan((64, 64), (3, 3)), k[:3, :3]).startswith("host:")


@pytest.mark.parametrize("shape,dtype", [((5, 7), "float32"), ((3,), "float64"), ((0, 4), "float32"),
                                         ((2, 3, 4), "complex128"), ((9,), "int8")])
def test_aligned_empty(shape, dtype):
    a = aligned_empty(shape, dtype)
    assert a.shape == shape and a.dtype == np.dtype(dtype) and a.flags.c_contiguous and a.flags.writeable
    if a.size:
        assert a.ctypes.data % ALIGNMENT == 0
    assert output_array(shape, dtype) is None  # outside aligned_outputs: the engine allocates
    with aligned_outputs():
        b = output_array(shape, dtype)
        assert b is not None and b.shape == shape and (not b.size or b.ctypes.data % ALIGNMENT == 0)
    assert output_array(shape, dtype) is None


def test_adopt_aliases_through_jaxs_own_put(monkeypatch):
    """Where this JAX has it and its trial passes, the result is adopted by the call that
    ``jax.device_put`` ends in (no DLPack, no ``device_put`` Python), without a copy: a committed
    JAX array on the input's device, which JAX computes on as on any other."""
    assert host._zero_copy_put() is not None  # the JAX that the tests install has it
    out = aligned_empty((64, 48), np.float32)
    out[...] = np.arange(out.size, dtype=np.float32).reshape(out.shape)
    like = jnp.zeros(3)
    monkeypatch.setattr(jax, "device_put", lambda *a, **kw: pytest.fail("adopted through device_put"))
    monkeypatch.setattr(jax.dlpack, "from_dlpack", lambda *a, **kw: pytest.fail("adopted through DLPack"))
    got = host.adopt(out, like)
    assert isinstance(got, jax.Array) and got.committed and got.devices() == like.devices()
    assert got.shape == out.shape and got.dtype == out.dtype
    assert got.unsafe_buffer_pointer() == out.ctypes.data
    np.testing.assert_array_equal(np.asarray(got * 2), out * 2)  # XLA reads it
    assert float(jnp.sum(got)) == float(np.sum(out.astype(np.float64)))


def test_zero_copy_put_falls_back_without_jaxs_internal_call(monkeypatch):
    """A JAX without ``xla_client.batched_device_put`` (or one whose trial fails) gets ``None``
    and the public ``device_put``."""
    from jax._src.lib import xla_client

    host._zero_copy_put.cache_clear()
    try:
        monkeypatch.delattr(xla_client, "batched_device_put")
        assert host._zero_copy_put() is None
        host._zero_copy_put.cache_clear()
        monkeypatch.undo()
        monkeypatch.setattr(xla_client, "batched_device_put", lambda *a, **kw: jnp.zeros((4, 16), np.float32))
        assert host._zero_copy_put() is None  # the trial: no shared memory, other values
    finally:
        monkeypatch.undo()
        host._zero_copy_put.cache_clear()
    assert host._zero_copy_put() is not None


def test_adoptable_copies_views_once_into_aligned_memory():
    """An aligned, contiguous, writeable result is adopted as it is; a view (an FFT's window of
    its period, a read-only array) becomes one aligned contiguous copy with the same values."""
    own = aligned_empty((30, 20), np.float64)
    own[...] = 2.0
    assert host.adoptable(own) is own
    period = np.arange(40 * 50, dtype=np.float32).reshape(40, 50)
    for view in (period[3:33, 5:25], period[::2], np.broadcast_to(np.float32(3), (8, 8))):
        got = host.adoptable(view)
        assert got is not view and got.flags.c_contiguous and got.flags.writeable
        assert got.ctypes.data % host.ALIGNMENT == 0
        np.testing.assert_array_equal(got, view)


def test_adopt_aliases_through_device_put(monkeypatch):
    """Without that call, the result is adopted by ``jax.device_put(..., may_alias=True)`` (not
    DLPack, whose JAX arrays of NumPy memory can hang or abort the process at exit), without a
    copy."""
    monkeypatch.setattr(host, "_zero_copy_put", lambda: None)
    assert host._device_put_aliases()  # looked up on the real device_put (cached) before the spy
    out = aligned_empty((64, 48), np.float32)
    out[...] = 1.5
    like = jnp.zeros(3)
    calls = []
    real = jax.device_put
    monkeypatch.setattr(jax, "device_put", lambda *a, **kw: calls.append(kw) or real(*a, **kw))
    monkeypatch.setattr(jax.dlpack, "from_dlpack", lambda *a, **kw: pytest.fail("adopted through DLPack"))
    got = host.adopt(out, like)
    assert calls == [{"may_alias": True}]
    assert got.unsafe_buffer_pointer() == out.ctypes.data and float(got.sum()) == 1.5 * out.size
