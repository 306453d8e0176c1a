"""Dilated and strided direct calls on the NumPy backend (backends/polyphase.py, the routes).

With dilation ``d``, output ``j*d + r`` is output ``j`` of the undilated kernel on ``x[r::d]``:
one call of ``M`` taps per output instead of a kernel ``(M - 1) * d + 1`` long. These tests
check the results against the exact oracle (``tests/reference.py``, independent of convkit),
NaN/Inf positions included (S9: the zeros a dilation inserts are not taps, S1), on every
geometry the split has to get right (periods that do not divide the padded length, strides,
origins, every boundary, batches, axes not last), and that the route is the one intended:
phases where the dilated kernel would cost its length, ``scipy.ndimage`` never given a
sparse dilated kernel whose footprint costs more than the filtering; large strides on the
shift-and-add, which reads only the kept outputs' windows.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage
from reference import reference

import convkit
from convkit import dispatch
from convkit.backends import _base, polyphase
from convkit.backends import numpy as nb
from convkit.plan import plan_call
from convkit.testing import assert_conv_close

BACKENDS = {"full": dict(), "scipy-only": dict(engines=False)}


def _always_phases(plan) -> bool:
    """Every plan the phases can run (the cost rule aside: :func:`test_where_the_phases_run`)."""
    return polyphase.applies(plan) and (plan.ndim == 1 or plan.acc_dtype in (np.float32, np.float64))


@pytest.fixture(params=list(BACKENDS))
def backend(request):
    """The NumPy backend with its engines, and with SciPy and NumPy only, running every
    dilated plan it can on the phases; yields its name."""
    name = f"polyphase-{request.param}"
    be = nb.NumpyBackend(**BACKENDS[request.param])
    be._polyphase_pays = _always_phases
    fused = be._fused_plan
    be._fused_plan = lambda plan: not _always_phases(plan) and fused(plan)  # (OpenCV: short dilated kernels)
    convkit.register_backend(name, be)
    yield name
    dispatch._registry.pop(name, None)
    dispatch._loaded.pop(name, None)


@pytest.fixture
def splits(monkeypatch):
    """Counts the calls that ran on phases."""
    calls = []
    real = polyphase.split

    def spy(plan, xpad, w):
        calls.append(plan.dilation)
        return real(plan, xpad, w)

    monkeypatch.setattr(polyphase, "split", spy)
    return calls


def _check(out, a, k, op, **kw):
    """Within the S5 direct bound of the exact oracle, with its NaN and Inf positions (S9)."""
    with np.errstate(invalid="ignore", over="ignore"):  # the oracle's own Inf - Inf, Inf * 0
        ref = reference(op, a, k, **kw)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(ref))
    np.testing.assert_array_equal(np.isinf(out), np.isinf(ref))
    fin = np.isfinite(ref)
    if fin.all():
        assert_conv_close(out, ref, a, k, op, method="direct", check_dtype=False, **kw)
    else:
        np.testing.assert_array_equal(out[~fin], ref[~fin])


GEOMETRIES_2D = [
    dict(mode="same", dilation=2), dict(mode="full", dilation=3), dict(mode="valid", dilation=(2, 5)),
    dict(mode="same", dilation=(4, 1)), dict(mode="same", dilation=3, boundary="symm"),
    dict(mode="same", dilation=2, boundary="reflect"), dict(mode="same", dilation=5, boundary="wrap"),
    dict(mode="same", dilation=3, boundary="edge"), dict(mode="same", dilation=2, fillvalue=-1.5),
    dict(mode="same", dilation=3, stride=2), dict(mode="full", dilation=(2, 3), stride=(3, 1)),
    dict(mode="same", dilation=(3, 2), origin=(1, -1)), dict(mode="same", dilation=2, align="tf"),
    dict(mode=[(5, -2), (0, 7)], dilation=(2, 4)),  # a negative pad crops
]


@pytest.mark.parametrize("kw", GEOMETRIES_2D, ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_2d_within_the_bound_with_nan_positions(backend, splits, rng, kw, dtype):  # S1, S5, S9
    a = rng.standard_normal((121, 117)).astype(dtype)
    k = rng.standard_normal((3, 4)).astype(dtype)
    for op in ("convolve", "correlate"):
        before = len(splits)
        out = getattr(convkit, op)(a, k, method="direct", backend=backend, **kw)
        assert len(splits) == before + 1
        _check(out, a, k, op, **kw)
    a[7, 9], a[40, 33], a[120, 0] = np.nan, np.inf, -np.inf
    _check(convkit.convolve(a, k, method="direct", backend=backend, **kw), a, k, "convolve", **kw)


@pytest.mark.parametrize("n, m, d", [(1000, 3, 7), (999, 5, 10), (4096, 2, 1000), (300, 65, 2), (50, 3, 24)])
@pytest.mark.parametrize("dtype", ["float32", "float64", "int16", "complex128"])
def test_1d_every_dtype(backend, splits, rng, n, m, d, dtype):  # S1, S5 (integers exact)
    if np.dtype(dtype).kind == "i":
        a, k = rng.integers(-300, 300, n).astype(dtype), rng.integers(-9, 9, m).astype(dtype)
    else:
        a, k = rng.standard_normal(n).astype(dtype), rng.standard_normal(m).astype(dtype)
    for kw in (dict(mode="same"), dict(mode="full"), dict(mode="same", boundary="wrap", stride=3)):
        before = len(splits)
        out = convkit.convolve(a, k, method="direct", dilation=d, backend=backend, **kw)
        assert splits[before:] == [(d,)]
        if np.dtype(dtype).kind == "i":  # exact with wrap-around (S5)
            ref = reference("convolve", a, k, dilation=d, **kw)
            assert out.dtype == dtype
            np.testing.assert_array_equal(out, ref)
        else:
            _check(out, a, k, "convolve", dilation=d, **kw)


def test_1d_nan_does_not_meet_the_gaps(backend, rng):  # S1, S9
    """A NaN reaches only the outputs whose windows hold it at a tap, not at a gap."""
    a = rng.standard_normal(5000)
    a[1234] = np.nan
    k = rng.standard_normal(4)
    out = convkit.convolve(a, k, mode="same", dilation=100, method="direct", backend=backend)
    assert np.isnan(out).sum() == 4
    _check(out, a, k, "convolve", mode="same", dilation=100)


@pytest.mark.parametrize("axes", [(1, 2), (0, 2), (2, 0)])
def test_batches_and_axes_not_last(backend, splits, rng, axes):  # S10
    a = rng.standard_normal((3, 40, 45)) if axes == (1, 2) else rng.standard_normal((40, 3, 45))
    k = rng.standard_normal(tuple(3 if i in axes else 1 for i in range(3)))
    kw = dict(mode="same", axes=axes, dilation=(2, 3))
    out = convkit.convolve(a, k, method="direct", backend=backend, **kw)
    assert splits
    _check(out, a, k, "convolve", **kw)


def test_3d(backend, splits, rng):  # S1, S5
    a = rng.standard_normal((20, 19, 23))
    k = rng.standard_normal((3, 2, 3))
    for kw in (dict(mode="same", dilation=2), dict(mode="full", dilation=(1, 3, 2), boundary="wrap")):
        before = len(splits)
        out = convkit.correlate(a, k, method="direct", backend=backend, **kw)
        assert splits[before:] == [kw["dilation"] if isinstance(kw["dilation"], tuple) else (2, 2, 2)]
        _check(out, a, k, "correlate", **kw)


@pytest.fixture(params=list(BACKENDS))
def plain(request):
    """The NumPy backend as it is, with its engines and with SciPy and NumPy only."""
    name = f"polyphase-plain-{request.param}"
    convkit.register_backend(name, nb.NumpyBackend(**BACKENDS[request.param]))
    yield name
    dispatch._registry.pop(name, None)
    dispatch._loaded.pop(name, None)


def test_auto_and_a_huge_dilation(plain, rng):  # S1; a dilation far past the image: the shift-and-add
    """The call that took 20 s in scipy.ndimage (3x3, dilation 200, 50x50, 'full'): the phases
    have a few outputs each, so the shift-and-add runs (one pass per tap)."""
    a = rng.standard_normal((50, 50))
    k = rng.standard_normal((3, 3))
    for boundary in ("fill", "wrap"):
        kw = dict(mode="full", dilation=200, boundary=boundary)
        _check(convkit.convolve(a, k, backend=plain, **kw), a, k, "convolve", **kw)


def test_ndimage_never_gets_a_costly_footprint(plain, monkeypatch, rng):
    """``scipy.ndimage.correlate`` spends ~4e-9 s per squared footprint position before it
    filters (70 ms at 65x65, 1 s at 129x129, on any image): a small image with a large
    dilation must not reach it with the dilated kernel."""
    sizes = []
    real = scipy.ndimage.correlate

    def spy(x, weights, *args, **kwargs):
        sizes.append(np.size(weights))
        return real(x, weights, *args, **kwargs)

    monkeypatch.setattr(scipy.ndimage, "correlate", spy)
    a = rng.standard_normal((64, 64))
    k = rng.standard_normal((3, 3))
    for d in (2, 3, 8, 40):
        for mode in ("same", "full"):
            kw = dict(mode=mode, dilation=d)
            _check(convkit.convolve(a, k, method="direct", backend=plain, **kw), a, k, "convolve", **kw)
    assert max(sizes, default=0) <= 7 * 7  # dilation 3 at most; 8 and 40 (17x17, 81x81) never


def test_cupyx_footprint_rule():
    """The other ndimage (CuPy's) visits every footprint position per output: at most
    NDIMAGE_SPARSE positions per tap."""
    be = _base.ArrayBackend.__new__(nb.NumpyBackend)
    plan = plan_call("correlate", np.ones((100, 100)), np.ones((3, 3)), mode="same", dilation=2)
    assert _base.ArrayBackend.ndimage_pays(be, plan)  # 25 positions for 9 taps
    plan = plan_call("correlate", np.ones((100, 100)), np.ones((3, 3)), mode="same", dilation=3)
    assert not _base.ArrayBackend.ndimage_pays(be, plan)  # 49 for 9


def test_where_the_phases_run():
    """Shapes only: 1-D of any dtype from dilation 8 where numpy.convolve's products of the gaps
    would cost more than the phases' fixed cost; 2-D float32/float64 where the estimates
    (:func:`convkit.choose.phases_cost`) put them before ndimage with the dilated kernel and
    the shift-and-add, unless OpenCV's filter takes the dilated kernel (it skips the zeros)."""
    be = nb.NumpyBackend(engines=False)
    x1, x2 = np.ones(1000), np.ones((300, 300))

    def pays(x, k, **kw):
        return be._polyphase_pays(plan_call("correlate", x, k, method="direct", **kw))

    long = np.ones(100_000)
    assert pays(long, np.ones(3), dilation=64)
    assert pays(long.astype(np.int32), np.ones(3, np.int32), dilation=64)
    assert not pays(long, np.ones(3), dilation=5)  # numpy.convolve: a phase would be a short row
    assert not pays(x1, np.ones(3), dilation=64)  # a call too short for the gaps to cost much
    assert not pays(x1, np.ones(3))  # no dilation
    k3 = np.ones((3, 3))
    assert pays(x2, k3, mode="same", dilation=16)  # ndimage: 6 ms on its 33x33 footprint
    assert not pays(np.ones((2000, 2000)), k3, mode="same", dilation=4)  # ndimage: 9x9, no copies
    engines = nb.NumpyBackend()
    if engines.engines:  # the phases on an engine's loop: far fewer seconds per multiply-add than ndimage
        x32, k32 = np.ones((2000, 2000), np.float32), k3.astype(np.float32)
        assert engines._polyphase_pays(plan_call("correlate", x32, k32, mode="same", dilation=8,
                                                 method="direct"))
        assert not pays(x32, k32, mode="same", dilation=8)  # without engines: ndimage either way
    assert not pays(x2.astype(np.int64), k3.astype(np.int64), mode="same", dilation=16)  # shift-and-add
    assert not pays(x2.astype(np.complex128), k3, mode="same", dilation=16)
    assert not pays(x2, k3, mode="same", dilation=100)  # a 500x500 mosaic for 300x300 outputs
    batch = dict(mode="same", dilation=16, axes=(1, 2))
    assert not pays(np.ones((1, 300, 300)), np.ones((2, 3, 3)), **batch)  # a kernel per image
    assert pays(np.ones((2, 300, 300)), np.ones((1, 3, 3)), **batch)  # one kernel
    short = plan_call("correlate", x2, k3, mode="same", dilation=2, method="direct")
    if engines.engines and engines._routes(short).opencv:
        assert not engines._polyphase_pays(short)


@pytest.mark.parametrize("shape, dilation, pads", [((17, 30), (3, 4), ((2, 2), (0, 5))),
                                                   ((8,), (5,), ((4, 4),)),
                                                   ((2, 9, 10), (2, 3), ((1, 1), (3, 3)))])
def test_split_and_merge_are_the_dilated_correlation(rng, shape, dilation, pads):
    """:func:`polyphase.split` then an undilated valid correlation of every phase (NumPy
    sums written out here) then :func:`polyphase.merge` give the oracle's values."""
    axes = tuple(range(len(shape) - len(dilation), len(shape)))
    k = rng.standard_normal(tuple(3 if a in axes else 1 for a in range(len(shape))))
    plan = plan_call("correlate", np.ones(shape), k, mode=[p for p in pads], dilation=dilation, axes=axes,
                     method="direct")
    x = rng.standard_normal(shape)
    whole = polyphase.whole_periods(plan)
    assert [hi - p[1] for (_, hi), p in zip(whole.pads, pads)] == [
        -(n + lo + hi) % d for n, (lo, hi), d in zip(shape[-len(axes):], pads, dilation)]
    with pytest.raises(ValueError, match="whole periods"):
        polyphase.split(plan, np.pad(x, [(0, 0)] * (len(shape) - len(axes)) + list(pads)), k)
    xpad = np.pad(x, [(0, 0)] * (len(shape) - len(axes)) + list(whole.pads))
    phases, kernel, sub = polyphase.split(plan, xpad, k)
    assert phases.flags.c_contiguous and sub.dilation == (1,) * len(sub.axes)
    out = np.zeros(sub.out_shape)
    for tap in np.ndindex(kernel.shape):
        window = tuple(slice(t, t + n) for t, n in zip(tap, sub.out_shape))
        out += kernel[tap] * phases[window]
    got = polyphase.merge(plan, out)
    ref = reference("correlate", x, k, mode=[p for p in pads], dilation=dilation, axes=axes)
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)


def test_split_is_one_mosaic_of_the_padded_input(rng):
    """N-d: the phases are the tiles of one array of the padded input's shape, so that one
    engine call runs them all (a 3x3 kernel with dilation 32 on a 512x512 image: 0.35-0.45 ms,
    against 2.7 ms for a call per 16x16 phase); tile ``r`` of a dilated axis is ``x[r::d]``."""
    plan = plan_call("correlate", np.ones((30, 7, 28)), np.ones((3, 1, 2)), mode="same", dilation=(3, 4),
                     axes=(0, 2), method="direct")
    whole = polyphase.whole_periods(plan)
    shape = tuple(n + lo + hi for n, (lo, hi) in zip((30, 28), whole.pads))
    xpad = rng.standard_normal((shape[0], 7, shape[1]))
    phases, kernel, sub = polyphase.split(plan, xpad, np.ones((3, 1, 2)))
    assert phases.shape == xpad.shape == sub.x_shape and sub.axes == (0, 2) and sub.dilation == (1, 1)
    assert kernel.shape == (3, 1, 2)
    b0, b1 = shape[0] // 3, shape[1] // 4
    for r0 in range(3):
        for r1 in range(4):
            tile = phases[r0 * b0:(r0 + 1) * b0, :, r1 * b1:(r1 + 1) * b1]
            np.testing.assert_array_equal(tile, xpad[r0::3, :, r1::4])


@pytest.mark.parametrize("k_shape, dilation", [((1, 4), (3, 2)), ((5, 1), (2, 7)), ((1, 1), (4, 4))])
def test_kernels_of_one_tap_along_a_dilated_axis(backend, splits, rng, k_shape, dilation):  # S1
    """A kernel of size 1 along a dilated axis: every tile is kept whole by the merge."""
    a = rng.standard_normal((37, 41))
    a[5, 6] = np.nan
    k = rng.standard_normal(k_shape)
    for kw in (dict(mode="same"), dict(mode="full", stride=(2, 1)), dict(mode="valid")):
        out = convkit.correlate(a, k, method="direct", dilation=dilation, backend=backend, **kw)
        _check(out, a, k, "correlate", dilation=dilation, **kw)
    assert splits


def test_explain_says_so():
    x, k = np.ones((500, 500)), np.ones((3, 3))
    text = str(convkit.explain(x, k, mode="same", dilation=16, backend=nb.NumpyBackend(engines=False)))
    assert "the dilation runs as one call on the input's 256 phases" in text
    assert "phases" not in str(convkit.explain(x, k, mode="same", backend=nb.NumpyBackend(engines=False)))


# -- strides: ndimage and OpenCV's filter compute every stride-1 output, the shift-and-add the kept ones


def test_large_strides_take_the_shift_and_add(plain, monkeypatch, rng):  # S1, S5, S9
    """With a large stride, ``ndimage`` (every output at stride 1, then sliced) costs more than
    the shift-and-add over the kept outputs' windows: a 15x15 kernel at stride 8 on a
    2000x2000 float64 image took 480 ms in ``ndimage``, 22 ms now."""
    calls = []
    real = scipy.ndimage.correlate
    monkeypatch.setattr(scipy.ndimage, "correlate", lambda *a, **k: calls.append(1) or real(*a, **k))
    a = rng.standard_normal((200, 190))
    a[50, 60] = np.nan
    k = rng.standard_normal((9, 9))
    for kw in (dict(mode="same", stride=4), dict(mode="full", stride=(5, 3), boundary="symm")):
        _check(convkit.convolve(a, k, method="direct", backend=plain, **kw), a, k, "convolve", **kw)
    assert not calls
    be = nb.NumpyBackend(engines=False)
    big, k15 = np.ones((2000, 2000)), np.ones((15, 15))
    assert not be.ndimage_pays(plan_call("convolve", big, k15, mode="same", stride=8, method="direct"))
    assert be.ndimage_pays(plan_call("convolve", big, k15, mode="same", stride=2, method="direct"))
    assert be.ndimage_pays(plan_call("convolve", big, k15, mode="same", method="direct"))


def test_opencv_strides():
    """OpenCV's filter too computes every stride-1 output: a 3x3 kernel at stride 16 takes the
    shift-and-add, at stride 2 OpenCV's filter (shapes only)."""
    be = nb.NumpyBackend()
    x, k = np.ones((4096, 4096), np.float32), np.ones((3, 3), np.float32)
    plans = {s: plan_call("convolve", x, k, mode="same", stride=s, method="direct") for s in (1, 2, 16)}
    if not (be.engines and be._routes(plans[2]).opencv):
        pytest.skip("OpenCV is not installed")
    assert be._strided_shift_add(plans[16])
    assert not be._strided_shift_add(plans[2]) and not be._strided_shift_add(plans[1])
    assert be._lane(plans[16]) == "" and be._lane(plans[2]) == "fused"


def test_explain_names_the_shift_and_add():
    be = nb.NumpyBackend(engines=False)
    big, k15 = np.ones((2000, 2000)), np.ones((15, 15))
    kw = dict(mode="same", method="direct", backend=be)
    assert "shift-and-add" in str(convkit.explain(big, k15, stride=8, **kw))
    assert "shift-and-add" not in str(convkit.explain(big, k15, **kw))
    engines = nb.NumpyBackend()
    x, k = np.ones((4096, 4096), np.float32), np.ones((3, 3), np.float32)
    if engines.engines and engines._routes(plan_call("convolve", x, k, mode="same", stride=2)).opencv:
        assert "shift-and-add" in str(convkit.explain(x, k, mode="same", stride=16, backend=engines))
        assert "opencv" in str(convkit.explain(x, k, mode="same", stride=2, backend=engines))
