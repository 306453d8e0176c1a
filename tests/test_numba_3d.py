"""The Numba engine's 3-D loop (``numba_engine.correlate_3d``): where it runs, and that it
computes S1's canonical form within the S5 bounds, with S9's NaN/Inf positions and the same
bits on any number of threads (S8).

Oracles: ``tests/reference.py`` (exact float64 shift-and-add, independent of convkit), and for
the order of the sums the same products added with NumPy array operations. The conformance
suite runs its 3-D cases on the ``numpy-numba`` runner (the loop wherever it applies) too.
"""

from __future__ import annotations

import numpy as np
import pytest
from reference import reference

import convkit
from convkit import dispatch
from convkit.backends import numba_engine as ne
from convkit.backends import numpy as nb
from convkit.choose import Capabilities, fused_3d_cost, method_costs
from convkit.plan import plan_call
from convkit.testing import assert_conv_close

pytest.importorskip("numba")


@pytest.fixture
def always(monkeypatch):
    """A backend with the loop on every call it applies to; yields the list of ``threads`` each
    run of the 3-D loop was given."""
    assert ne.available()[0]
    be = nb.NumpyBackend(numba_always=True)
    convkit.register_backend("numba-3d-test", be)
    runs: list[int] = []
    real = ne.correlate_3d

    def spy(plan, x, w, pad, run_jobs, threads):
        runs.append(threads)
        return real(plan, x, w, pad, run_jobs, threads)

    monkeypatch.setattr(ne, "correlate_3d", spy)
    yield runs
    dispatch._registry.pop("numba-3d-test", None)
    dispatch._loaded.pop("numba-3d-test", None)


def _run(op, a, k, **kw):
    return getattr(convkit, op)(a, k, backend="numba-3d-test", **kw)


def _check(out, a, k, op="convolve", **kw):
    assert_conv_close(out, reference(op, a, k, **kw), a, k, op, method="direct", check_dtype=False, **kw)


GEOMETRIES = [
    dict(mode="same"), dict(mode="full"), dict(mode="valid"), dict(mode="same", boundary="symm"),
    dict(mode="same", boundary="reflect"), dict(mode="same", boundary="nearest"),
    dict(mode="same", boundary="wrap"), dict(mode="same", fillvalue=2.5),
    dict(mode="same", origin=(1, 0, -1)),
    dict(mode=[(1, 1), (-1, 3), (0, 2)]),  # a negative pad crops
]


@pytest.mark.parametrize("kw", GEOMETRIES, ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("op", ["convolve", "correlate"])
def test_direct_runs_the_loop_within_the_bound(always, rng, kw, dtype, op):  # S1, S5, S7
    a = rng.standard_normal((13, 11, 17)).astype(dtype)
    k = rng.standard_normal((4, 3, 2)).astype(dtype)
    out = _run(op, a, k, method="direct", **kw)
    assert always and out.dtype == dtype
    _check(out, a, k, op, **kw)


@pytest.mark.parametrize("shape", [(1, 1, 1), (3, 3, 3), (2, 5, 7), (1, 1, 8), (3, 2, 9), (2, 2, 17)])
def test_every_row_width_and_kernels_larger_than_the_volume(always, rng, shape):  # S1, S5
    """Rows up to 7 taps have a loop each, longer ones blocks of 8 taps and the taps left."""
    for volume in [(9, 10, 30), (2, 3, 4)]:
        a = rng.standard_normal(volume)
        k = rng.standard_normal(shape)
        for mode in ("full", "same", "valid"):
            if mode == "valid" and any(m > n for m, n in zip(shape, volume)):
                continue
            _check(_run("convolve", a, k, mode=mode, method="direct"), a, k, mode=mode)
    assert always


@pytest.mark.parametrize("axes", [(1, 2, 3), (0, 2, 3), (3, 1, 0)])
def test_batches_and_axes_not_last(always, rng, axes):  # S10
    a = rng.standard_normal((3, 8, 9, 10))
    k = rng.standard_normal(tuple(3 if i in axes else 1 for i in range(4)))
    out = _run("convolve", a, k, mode="same", axes=axes, method="direct")
    assert always
    _check(out, a, k, mode="same", axes=axes)


def test_never_with_stride_or_other_dtypes(always, rng):  # S5 (integers exact)
    a = rng.standard_normal((10, 10, 10))
    k = rng.standard_normal((3, 3, 3))
    calls = [(a, k, dict(mode="same", stride=2))]
    calls += [(a.astype(t), k.astype(t), dict(mode="same")) for t in ("int32", "complex128", "bool")]
    outs = [_run("convolve", ai, ki, method="direct", **kw) for ai, ki, kw in calls]
    assert always == []
    for out, (ai, ki, kw) in zip(outs, calls):
        _check(out, ai, ki, **kw)


@pytest.mark.parametrize("kw", [dict(mode="full", dilation=2),
                                dict(mode="same", dilation=(3, 1, 2), boundary="wrap"),
                                dict(mode="valid", dilation=(2, 3, 2), stride=(1, 2, 1))])
def test_dilation_reaches_the_loop_only_as_phases(always, rng, monkeypatch, kw):  # S1 (inserted zeros), S9
    """A dilated call runs the loop on its input's phases (backends/polyphase.py), with the
    undilated kernel: the loop never sees a dilated kernel, whose zeros would be taps."""
    seen = []
    spy = ne.correlate_3d

    def record(plan, *args):
        seen.append(plan.dilation)
        return spy(plan, *args)

    monkeypatch.setattr(ne, "correlate_3d", record)
    a = rng.standard_normal((30, 31, 32))  # (20x21x22 with these dilations: the shift-and-add is cheaper)
    a[5, 6, 7], a[11, 3, 19] = np.nan, np.inf
    k = rng.standard_normal((3, 3, 3))
    out = _run("convolve", a, k, method="direct", **kw)
    assert seen and all(set(d) == {1} for d in seen)
    with np.errstate(invalid="ignore"):  # the oracle's own Inf - Inf
        ref = reference("convolve", a, k, **kw)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(ref))
    np.testing.assert_array_equal(np.isinf(out), np.isinf(ref))
    fin = np.isfinite(ref)
    b = rng.standard_normal(a.shape)
    _check(_run("convolve", b, k, method="direct", **kw), b, k, **kw)
    assert np.isfinite(out[fin]).all()


def test_nan_data_stay_local_through_zero_taps(always, rng):  # S9
    """The loop multiplies zero taps too: a NaN or Inf reaches exactly the windows that hold it."""
    a = rng.standard_normal((9, 12, 11))
    a[2, 4, 5] = np.nan
    a[7, 0, 10] = np.inf
    k = rng.standard_normal((3, 5, 3))
    k[0] = 0.0
    k[:, :, 1] = 0.0
    for mode in ("same", "full", "valid"):
        out = _run("convolve", a, k, mode=mode, method="direct")
        with np.errstate(invalid="ignore"):  # the oracle's own Inf * 0
            ref = reference("convolve", a, k, mode=mode)
        np.testing.assert_array_equal(np.isnan(out), np.isnan(ref))
        np.testing.assert_array_equal(np.isinf(out), np.isinf(ref))
    assert always


def test_nonfinite_taps_never_run_the_loop(always, rng):  # S9: a NaN tap meets the fill everywhere
    a = rng.standard_normal((8, 8, 8))
    k = rng.standard_normal((3, 3, 3))
    k[1, 1, 1] = np.nan
    out = _run("convolve", a, k, mode="same", method="direct")
    assert np.isnan(out).all() and always == []


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_sums_run_row_by_row_in_the_input_precision_on_any_threads(rng, dtype):  # S5, S8
    """Every output is ``((0 + k0*x0) + k1*x1) + ...`` rounded to the dtype after each product
    and add (kernel planes, rows, then taps; the zero fill's products leave it as it is), on
    any number of threads and bands. Oracle: the same order written with NumPy."""
    assert ne.available()[0]
    be = nb.NumpyBackend()
    cases = [((3, 3, 3), "same"), ((2, 4, 5), "full"), ((3, 2, 11), "valid"), ((1, 2, 7), "same")]
    for kshape, mode in cases:
        a = rng.standard_normal((7, 9, 40)).astype(dtype)
        k = rng.standard_normal(kshape).astype(dtype)
        plan = plan_call("correlate", a, k, be.capabilities, mode=mode, method="direct")
        out = ne.correlate_3d(plan, a, k, be.pad, nb._map, 1)
        padded = np.pad(a, plan.pads)
        acc = np.zeros(out.shape, dtype)
        n0, n1, n2 = out.shape
        for c in range(kshape[0]):
            for r in range(kshape[1]):
                for t in range(kshape[2]):
                    acc = acc + k[c, r, t] * padded[c:c + n0, r:r + n1, t:t + n2]
        np.testing.assert_array_equal(out, acc, err_msg=f"{kshape} {mode}")
        assert not np.signbit(out[out == 0]).any()
        for threads in (2, 3, 8):
            np.testing.assert_array_equal(ne.correlate_3d(plan, a, k, be.pad, nb._map, threads), out)
    batch = rng.standard_normal((3, 6, 5, 8)).astype(dtype)
    k = rng.standard_normal((1, 3, 3, 3)).astype(dtype)
    plan = plan_call("correlate", batch, k, be.capabilities, mode="same", method="direct", axes=(1, 2, 3))
    one = ne.correlate_3d(plan, batch, k[0], be.pad, nb._map, 1)
    np.testing.assert_array_equal(ne.correlate_3d(plan, batch, k[0], be.pad, nb._map, 4), one)


def test_default_backend_runs_the_loop_where_it_pays(rng):
    be = nb.NumpyBackend()
    if not be.numba:
        pytest.skip("CONVKIT_NUMBA=0")

    def label(shape, kshape, dtype="float64", **kw):
        a, w = np.zeros(shape, dtype), np.ones(kshape, dtype)
        return be.method_label(plan_call("convolve", a, w, be.capabilities, method="direct", **kw), w)

    assert label((64, 64, 64), (3, 3, 3)) == "direct[numba]"
    assert label((64, 64, 64), (5, 5, 5), "float32") == "direct[numba]"
    assert label((2, 32, 32, 32), (1, 3, 3, 3), axes=(1, 2, 3)) == "direct[numba]"
    assert label((4, 4, 4), (3, 3, 3)) == "direct"  # microseconds: no Numba start-up for them
    assert label((64, 64, 64), (3, 3, 3), "int64") == "direct"
    assert label((64, 64, 64), (3, 3, 3), stride=2) == "direct"
    assert label((64, 64, 64), (3, 3, 3), dilation=2) == "direct"
    # auto: the loop's cost makes direct the pick where SciPy's ndimage lost to the FFT
    x = rng.standard_normal((64, 64, 64)).astype("float32")
    w = rng.standard_normal((5, 5, 5)).astype("float32")
    plain = nb.NumpyBackend(numba=False)
    assert convkit.explain(x, w, mode="same", backend=plain).method == "fft"
    why = convkit.explain(x, w, mode="same", backend=be)
    assert why.method == "direct" and "numba's fused 3-D loop" in why.method_reason
    out = convkit.convolve(x, w, mode="same", backend=be)
    assert_conv_close(out, reference("convolve", x, w, mode="same"), x, w, "convolve", mode="same",
                      method="direct", check_dtype=False)


def test_cost_model_knows_the_loop_only_where_it_applies():
    caps = Capabilities(c_direct=1e-9, c_out=1e-9, c_fused_3d=4e-11, c_fused_3d_out=1e-9, single_fused_3d=0.5)
    geo = dict(out_shape=(32, 32, 32), x_shape=(32, 32, 32), k_shape=(3, 3, 3), axes=(0, 1, 2),
               dilation=(1, 1, 1), stride=(1, 1, 1), caps=caps)
    f64 = fused_3d_cost(**geo, dtype="float64")
    assert f64 == pytest.approx((4e-11 * 27 + 1e-9) * 32**3)
    assert fused_3d_cost(**geo, dtype="float32") == pytest.approx(0.5 * f64)
    assert fused_3d_cost(**{**geo, "stride": (1, 2, 1)}, dtype="float64") == np.inf
    assert fused_3d_cost(**{**geo, "dilation": (2, 1, 1)}, dtype="float64") == np.inf
    assert fused_3d_cost(**geo, dtype="int64") == np.inf
    assert fused_3d_cost(**{**geo, "caps": Capabilities()}, dtype="float64") == np.inf
    geo.pop("stride")
    costs = method_costs(pads=((1, 1),) * 3, dtype="float64", **geo)
    assert costs["direct"] == pytest.approx(f64)
