"""The NumPy backend's OpenCV engine (backends/opencv_engine.py): where it runs, and that what it
computes is S1's canonical form within the S5 bounds, with S9's NaN/Inf positions.

Oracles: ``tests/reference.py`` (exact float64 shift-and-add, independent of convkit) and SciPy.
The conformance suite runs every case on the ``numpy`` runner (OpenCV) and the ``numpy-scipy``
runner (without it); these tests make sure OpenCV really ran where it should, and did not where
it must not.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import scipy.signal
from reference import reference

import convkit
from convkit.backends import numpy as nb
from convkit.backends import opencv_engine as oe
from convkit.plan import plan_call
from convkit.testing import assert_conv_close

pytest.importorskip("cv2")


@pytest.fixture(autouse=True)
def without_numba(monkeypatch):
    """These tests are about OpenCV: the default backend without Numba's loop (which would take
    the larger calls; tests/test_numba_engine.py covers it)."""
    be = convkit.get_backend("numpy")
    monkeypatch.setattr(be, "numba", False)
    monkeypatch.setattr(be, "_route_cache", {})
    yield
    be._route_cache = {}


@pytest.fixture
def spy(monkeypatch):
    """Names of the OpenCV entry points called (filter2D, sepFilter2D, and dft: the FFT method's
    forward transforms)."""
    import cv2

    assert oe.available()[0]  # imported now, so the spy below is not replaced by the real module
    calls: list[str] = []
    fake = type("cv2spy", (), {})()
    for name in dir(cv2):
        if name.startswith(("BORDER_", "NORM_", "DFT_")):
            setattr(fake, name, getattr(cv2, name))
    fake.norm = cv2.norm  # auto's data pass before an OpenCV filter (not a filter: not recorded)
    fake.sumElems = cv2.sumElems  # the finiteness test of a separable filter's output (not recorded)
    for name in ("copyMakeBorder", "mulSpectrums", "idft"):  # the FFT method's steps besides its "dft"
        setattr(fake, name, getattr(cv2, name))
    for name in ("filter2D", "sepFilter2D", "dft"):
        real = getattr(cv2, name)
        setattr(fake, name, lambda *a, _r=real, _n=name, **k: calls.append(_n) or _r(*a, **k))
    monkeypatch.setattr(oe, "_cv2", fake)
    oe._layout.cache_clear()
    yield calls
    oe._layout.cache_clear()


def _check(out, a, k, op="convolve", method="direct", **kw):
    assert_conv_close(out, reference(op, a, k, **kw), a, k, op, method=method, check_dtype=False, **kw)


GEOMETRIES = [
    dict(mode="same"), dict(mode="full"), dict(mode="valid"), dict(mode="same", boundary="symm"),
    dict(mode="same", boundary="reflect"), dict(mode="same", boundary="nearest"),
    dict(mode="same", boundary="wrap"), dict(mode="same", fillvalue=2.5), dict(mode="same", stride=(2, 3)),
    dict(mode="full", dilation=(2, 1)), dict(mode="same", origin=(1, -1)), dict(mode="causal"),
]


@pytest.mark.parametrize("kw", GEOMETRIES, ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("op", ["convolve", "correlate"])
def test_direct_runs_opencv_within_the_bound(spy, rng, kw, dtype, op):  # S1, S5, S7, S10
    a = rng.standard_normal((23, 19)).astype(dtype)
    k = rng.standard_normal((4, 3)).astype(dtype) + 3.0
    out = getattr(convkit, op)(a, k, method="direct", **kw)
    assert spy == ["filter2D"]
    assert out.dtype == dtype
    _check(out, a, k, op, **kw)


THREADED_SHAPES = [  # (data shape, axes): one image, a contiguous batch, batches with the axes not last
    ((150, 41), None), ((3, 150, 41), (1, 2)), ((150, 5, 41), (0, 2)), ((41, 2, 150), (2, 0)),
]


@pytest.mark.parametrize("kw", GEOMETRIES, ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()))
@pytest.mark.parametrize("kshape", [(4, 3), (9, 5), (1, 11), (11, 1)])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_threads_give_the_same_bits(spy, rng, kw, kshape, dtype):  # S8, S5
    """Bands of rows (one image) and groups of images on 2-4 threads: bit for bit what one
    call per image computes, and within the bound of the exact reference."""
    be = convkit.get_backend("numpy")
    for shape, axes in THREADED_SHAPES:
        a = rng.standard_normal(shape).astype(dtype)
        kfull = [1] * len(shape)
        for ax, m in zip(axes or (0, 1), kshape):
            kfull[ax] = m
        k = (rng.standard_normal(kfull) + 3.0).astype(dtype)
        extra = {} if axes is None else {"axes": axes}
        plan = plan_call("correlate", a, k, be.capabilities, method="direct", **kw, **extra)
        if plan.swap or not oe.applies(plan):
            continue
        w = be.dilate(plan, k)
        one = oe.correlate(plan, a, w, be.pad)
        _check(one, a, k, "correlate", **kw, **extra)
        for threads in (2, 3, 4):
            spy.clear()
            out = oe.correlate(plan, a, w, be.pad, nb._map, threads)
            np.testing.assert_array_equal(out, one)
            assert out.shape == one.shape and out.dtype == one.dtype
            assert len(spy) > 1 or oe._layout(plan)[2][0] * 8 > plan.out_shape[plan.axes[0]]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kw", [dict(mode="same"), dict(mode="same", boundary="symm"), dict(mode="full"),
                                dict(mode="same", stride=2, dilation=2)])
def test_separable_threads_give_the_same_bits(spy, rng, dtype, kw):  # S8
    be = convkit.get_backend("numpy")
    a = rng.standard_normal((2, 300, 70)).astype(dtype)
    ky, kx = (rng.standard_normal(n).astype(dtype) + 2.0 for n in (9, 5))
    k = np.outer(ky, kx)[None]
    plan = plan_call("correlate", a, k, be.capabilities, axes=(1, 2), **kw)
    factors = []
    for f, d in zip((ky, kx), plan.dilation):
        factors.append(np.zeros((f.size - 1) * d + 1, dtype))
        factors[-1][::d] = f
    one = oe.correlate_separable(plan, a, factors, be.pad)
    _check(one, a, k, "correlate", axes=(1, 2), **kw)
    for threads in (2, 3):
        for images in (a, a[:1]):  # groups of images, bands of one image
            spy.clear()
            out = oe.correlate_separable(plan, images, factors, be.pad, nb._map, threads)
            np.testing.assert_array_equal(out, one[:images.shape[0]])
            assert len(spy) > 1  # one image: bands, and the rows around each cut again


def test_the_backend_threads_opencv_where_the_cost_model_says(spy, rng, monkeypatch):  # S8
    """From ``THREADED_FROM`` (the model's OpenCV time for the call; ``BANDS_FROM`` for fewer
    images than cores) and below ``OWN_THREADS_FROM`` pixels an image, the backend runs
    OpenCV's filter on its threads; the result has the bits of one call."""
    be = convkit.get_backend("numpy")
    a = rng.standard_normal((200, 90)).astype(np.float32)
    k = rng.standard_normal((5, 5)).astype(np.float32) + 3.0
    one = convkit.convolve(a, k, "same")
    assert spy == ["filter2D"]
    monkeypatch.setattr(oe, "THREADED_FROM", 0.0)  # groups of images from here; one image stays one call
    monkeypatch.setattr(be, "_route_cache", {})
    spy.clear()
    np.testing.assert_array_equal(convkit.convolve(a, k, "same"), one)
    assert spy == ["filter2D"]
    batch = np.stack([a, a[::-1]])
    second = convkit.convolve(np.ascontiguousarray(a[::-1]), k, "same")  # one call
    spy.clear()
    out = convkit.convolve(batch, k[None], "same", axes=(1, 2))
    assert spy == ["filter2D"] * 2  # one per image, on the backend's threads
    np.testing.assert_array_equal(out, np.stack([one, second]))
    monkeypatch.setattr(oe, "BANDS_FROM", 0.0)  # bands of one image from here
    monkeypatch.setattr(be, "_route_cache", {})
    monkeypatch.setattr(nb, "_busy_until", 0.0)
    spy.clear()
    out = convkit.convolve(a, k, "same")
    bands = (len(spy) + 1) // 2  # the bands and the rows around each cut
    cores = nb.cpu_threads()
    assert len(spy) == 2 * bands - 1 and (2 <= bands <= cores if cores > 1 else bands == 1)
    np.testing.assert_array_equal(out, one)
    monkeypatch.setattr(oe, "OWN_THREADS_FROM", a.size)  # OpenCV's own threads from here on
    monkeypatch.setattr(be, "_route_cache", {})
    spy.clear()
    np.testing.assert_array_equal(convkit.convolve(a, k, "same"), one)
    assert spy == ["filter2D"]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_opencv_threads_itself_from_two_to_the_twentieth_pixels(monkeypatch, dtype):
    """OpenCV runs a filter on several cores from 2**20 pixels an image (its own threshold,
    measured: docs/backends/numpy.md). Below, a long single image runs in bands on convkit's
    threads (1000x1000 with 7x7 and a 15-tap separable kernel: 1000**2 < 2**20, where OpenCV
    would leave the second core idle); from 1024x1024 (and 512x2048) it is one OpenCV call."""
    monkeypatch.setattr(nb, "cpu_threads", lambda: 2)
    caps = convkit.get_backend("numpy").capabilities
    assert oe.OWN_THREADS_FROM == 2**20
    for shape, cores in [((1000, 1000), 2), ((1023, 1023), 2), ((1024, 1024), 1), ((512, 2048), 1)]:
        for k in [(7, 7), (15, 15)]:
            plan = plan_call("correlate", np.zeros(shape, dtype), np.ones(k, dtype), caps, mode="same",
                             method="direct")
            route = nb._route(plan, caps, numba=False, always=False)
            assert (route.opencv_cores if k == (7, 7) else route.opencv_separable_cores) == cores, (shape, k)


@pytest.mark.parametrize("axes", [(1, 2), (0, 2), (2, 0)])
def test_batches_and_axes_not_last(spy, rng, axes):  # S10
    a = rng.standard_normal((5, 17, 13))
    shape = [1, 1, 1]
    shape[axes[0]], shape[axes[1]] = 3, 4
    k = rng.standard_normal(shape) + 3.0
    out = convkit.convolve(a, k, mode="same", axes=axes, method="direct")
    assert len(spy) == a.shape[({0, 1, 2} - set(axes)).pop()]
    _check(out, a, k, mode="same", axes=axes)


def test_swapped_operands_and_float16(spy, rng):  # S3, S4
    a = rng.standard_normal((3, 4)) + 3.0
    b = rng.standard_normal((20, 21))
    _check(convkit.convolve(a, b, method="direct"), a, b)  # the larger operand slides (S3)
    h, g = b.astype(np.float16), a.astype(np.float16)
    out = convkit.convolve(h, g, "same", method="direct")
    assert out.dtype == np.float16 and spy
    exp = scipy.signal.convolve(h.astype(np.float64), g.astype(np.float64), "same")
    assert_conv_close(out, exp, h, g, mode="same", method="direct", check_dtype=False)


@pytest.mark.parametrize("dtype", ["int32", "int8", "complex128", "bool"])
def test_never_for_integers_bool_complex(spy, rng, dtype):  # S5: exact integers, OpenCV saturates
    a = (rng.standard_normal((20, 20)) * 50).astype(dtype)
    k = (rng.standard_normal((3, 3)) * 5).astype(dtype)
    convkit.convolve(a, k, method="direct")
    assert spy == []


def test_zero_and_nonfinite_taps_keep_nan_where_s9_puts_it(spy, rng):  # S9
    a = rng.standard_normal((20, 20))
    a[5, 5] = np.nan
    k = rng.standard_normal((3, 3)) + 3.0
    k[1, 1] = 0.0  # filter2D would skip it: NaN must still reach the centre output
    out = convkit.convolve(a, k, "same", method="direct")
    assert spy == []
    np.testing.assert_array_equal(np.isnan(out), np.isnan(reference("convolve", a, k, mode="same")))
    k[1, 1] = np.inf
    out = convkit.convolve(a, k, "same", method="direct")
    assert spy == []
    _check(out, a, k, mode="same")


@pytest.mark.parametrize("size", [1, 9, 64, 65, 400])
def test_taps_rule_refuses_every_kernel_a_fused_filter_would_get_wrong(size, rng):  # S9
    """``taps_above_eps``: a NaN, +-Inf, zero or sub-epsilon tap anywhere refuses the engine (the
    small-kernel path and the array path agree); ordinary taps of either sign pass."""
    from convkit.backends._base import taps_above_eps

    w = rng.standard_normal(size) + np.where(rng.random(size) < 0.5, 2.0, -2.0)
    assert taps_above_eps(w)
    for pos in {0, size // 2, size - 1}:
        for bad in (np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-17):
            v = w.copy()
            v[pos] = bad
            assert not taps_above_eps(v), (pos, bad)
            assert not taps_above_eps(v.astype(np.float32).reshape(1, -1)), (pos, bad)


def test_nan_data_stay_local(spy, rng):  # S9: the direct loop, never its DFT
    for dtype, m in (("float64", 7), ("float32", 11)):
        a = rng.standard_normal((60, 60)).astype(dtype)
        a[30, 30] = np.nan
        k = (rng.standard_normal((m, m)) + 3.0).astype(dtype)
        out = convkit.convolve(a, k, "same", method="direct")
        assert np.isnan(out).sum() == m * m
    assert spy == ["filter2D", "filter2D"]


@pytest.mark.parametrize("dtype, side", [("float64", 8), ("float32", 12)])
def test_kernels_beyond_the_direct_limit_never_run_its_dft_on_nan(spy, rng, dtype, side):  # S9
    """From 50 (float64) / 130 (float32) taps filter2D runs a DFT: direct must not use it, and
    auto uses it only on data it found finite."""
    a = rng.standard_normal((300, 300)).astype(dtype)
    k = (rng.standard_normal((side, side)) + 3).astype(dtype)
    convkit.convolve(a, k, "same", method="direct")
    assert spy == []
    a[100, 100] = np.nan
    out = convkit.convolve(a, k, "same")
    assert np.isnan(out).sum() == side * side and spy == []


@pytest.mark.parametrize("seed", range(6))
def test_auto_transform_plans_put_nonfinite_where_direct_does(seed):  # S9
    """``auto``'s FFT and overlap-add keep S9 whatever the NaN/Inf data (a transform would
    smear them over its block): random images, kernels (some with zero taps, where Inf x 0 =
    NaN), 1-3 NaN/+Inf/-Inf data, modes, boundaries, strides; the NaN, +Inf and -Inf positions
    are those of the exact direct sums, and at least one call per seed is a transform plan."""
    rng = np.random.default_rng(seed)
    be = convkit.get_backend("numpy")
    transforms = 0
    for _ in range(8):
        dtype = ("float32", "float64")[int(rng.integers(2))]
        shape = (int(rng.integers(60, 300)), int(rng.integers(60, 300)))
        m = int(rng.choice([12, 15, 21, 31]))
        a = rng.standard_normal(shape).astype(dtype)
        k = rng.standard_normal((m, m)).astype(dtype)
        if rng.random() < 0.5:
            k[rng.random((m, m)) < 0.3] = 0
        for _ in range(int(rng.integers(1, 4))):
            at = int(rng.integers(shape[0])), int(rng.integers(shape[1]))
            a[at] = rng.choice([np.nan, np.inf, -np.inf])
        kw = {"mode": str(rng.choice(["same", "full", "valid"]))}
        if kw["mode"] == "same" and rng.random() < 0.3:
            kw["boundary"] = str(rng.choice(["wrap", "symmetric", "reflect"]))
        if rng.random() < 0.2:
            kw["stride"] = 2
        op = str(rng.choice(["convolve", "correlate"]))
        transforms += plan_call(op, a, k, be.capabilities, **kw).method in ("fft", "oa")
        auto = getattr(convkit, op)(a, k, **kw)
        with np.errstate(invalid="ignore"):  # Inf x 0 in the oracle's products
            exp = reference(op, a, k, **kw)  # exact float64 shift-and-add: direct's NaN/Inf positions
        for where in (np.isnan, np.isposinf, np.isneginf):
            np.testing.assert_array_equal(where(auto), where(exp), err_msg=f"{dtype} {shape} {m} {op} {kw}")
    assert transforms


@pytest.mark.parametrize("dtype, shape, m", [("float64", (600, 500), 15), ("float32", (2000, 1900), 25)])
def test_auto_overlap_add_through_the_tiled_dft(spy, rng, dtype, shape, m):  # S5 (FFT bound), S8
    """OpenCV's DFT in tiles (not ``filter2D``'s own tiles), float32 in float32, within the FFT
    bound; kernels up to about 17x17 run Numba's loop on large float32 images instead."""
    a = rng.standard_normal(shape).astype(dtype)
    k = rng.standard_normal((m, m)).astype(dtype)
    be = convkit.get_backend("numpy")
    plan = plan_call("convolve", a, k, be.capabilities, mode="same")
    assert plan.method == "oa" and be.method_label(plan, k) == "oa[opencv]"
    lengths, _ = be._dft_tiles(plan)
    tiles = math.prod(-(-n // (length - m + 1)) for n, length in zip(shape, lengths))
    out = convkit.convolve(a, k, "same")
    assert "filter2D" not in spy and out.dtype == a.dtype
    assert spy.count("dft") == tiles + 1  # the kernel once, then each tile
    if dtype == "float64":
        exp = scipy.signal.convolve(a, k, "same", method="direct")
    else:  # a float64 FFT: its error is far below the float32 bound, and a direct oracle takes seconds
        exp = scipy.signal.fftconvolve(a.astype(np.float64), k.astype(np.float64), "same")
    assert_conv_close(out, exp, a, k, mode="same", method="oa", check_dtype=False)
    if dtype == "float64":
        for kw in (dict(mode="full"), dict(mode="same", boundary="wrap"), dict(mode="same", stride=2)):
            _check(convkit.convolve(a, k, **kw), a, k, method="oa", **kw)


TILED = [dict(mode="same"), dict(mode="full"), dict(mode="valid"), dict(mode="same", boundary="symm"),
         dict(mode="same", boundary="wrap"), dict(mode="same", fillvalue=2.5),
         dict(mode="same", stride=(2, 3)), dict(mode="full", dilation=(2, 1)),
         dict(mode="same", origin=(1, -1))]


@pytest.mark.parametrize("kw", TILED, ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shapes", [((61, 47), (7, 9), None), ((3, 40, 33), (1, 5, 8), (1, 2)),
                                    ((29, 2, 35), (6, 1, 4), (0, 2))], ids=["image", "batch", "moved-axes"])
@pytest.mark.parametrize("lengths", [(16, 24), (30, 18), (128, 128)], ids=lambda v: f"{v[0]}x{v[1]}")
def test_tiled_dft_every_geometry_within_the_bound(rng, kw, dtype, shapes, lengths):  # S1, S5, S7, S10
    """OpenCV's DFT in tiles (:func:`opencv_engine.tiled_correlate`), given its tiles: many small
    ones (each axis cut in pieces, the last one short), or one larger than the image; every
    boundary, stride, dilation and origin, batches and axes that are not the last two, against
    the exact oracle within the FFT bound."""
    (xs, ks, axes) = shapes
    a = rng.standard_normal(xs).astype(dtype)
    k = rng.standard_normal(ks).astype(dtype)
    be = convkit.get_backend("numpy")
    if axes is not None:
        kw = dict(kw, axes=axes)
    plan = plan_call("correlate", a, k, be.capabilities, method="oa", **kw)
    assert oe.applies(plan, "dft") or oe.applies(plan)
    lengths = tuple(max(n, m) for n, m in zip(lengths, sorted(plan.effective_kernel)))
    out = oe.tiled_correlate(plan, a.reshape(plan.x_shape), be.dilate(plan, k), be.pad, lengths)
    assert out.dtype == dtype and out.shape == plan.out_shape
    _check(out.reshape(plan.out_shape), a, k, "correlate", method="oa", **kw)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_tiled_dft_bits_do_not_depend_on_threads(rng, dtype):  # S8
    """Each tile is the same transforms of the same data on any thread: the same bytes on one,
    two or five threads (the pool's own, as auto runs it)."""
    a = rng.standard_normal((4, 150, 170)).astype(dtype)
    k = rng.standard_normal((1, 17, 13)).astype(dtype)
    be = convkit.get_backend("numpy")
    plan = plan_call("correlate", a, k, be.capabilities, method="oa", mode="same", axes=(1, 2))
    runs = [oe.tiled_correlate(plan, a, k, be.pad, (48, 40), nb._map, threads).tobytes()
            for threads in (1, 2, 5)]
    assert runs[0] == runs[1] == runs[2]


def test_tile_lengths_are_the_fast_ones():
    """The tiles' lengths: ascending, 2-3-5-smooth, at most 640; from 144 on none a power of two
    (256 and 512 ran 1.4x slower per point) and none with fewer than four factors of two."""
    lengths = oe.TILE_LENGTHS
    assert list(lengths) == sorted(set(lengths)) and lengths[-1] == 640
    for n in lengths:
        q = n
        for p in (2, 3, 5):
            while q % p == 0:
                q //= p
        assert q == 1, n
        if n >= 144:
            assert n & (n - 1) and n % 16 == 0, n
    assert {144, 160, 192, 240, 288, 320, 384, 432, 480, 576, 640} <= set(lengths)
    assert not {256, 360, 512, 600, 648} & set(lengths)


def test_auto_tiled_dft_keeps_nan_where_direct_puts_it(rng):  # S9
    """``auto``'s data pass finds NaN/Inf before any tile is transformed; direct computes the call."""
    a = rng.standard_normal((700, 650))
    k = rng.standard_normal((31, 31))
    be = convkit.get_backend("numpy")
    assert be.method_label(plan_call("convolve", a, k, be.capabilities, mode="same"), k) == "oa[opencv]"
    a[300, 100], a[5, 600], a[690, 640] = np.nan, np.inf, -np.inf
    out = convkit.convolve(a, k, "same")
    with np.errstate(invalid="ignore"):
        exp = reference("convolve", a, k, mode="same")
    for where in (np.isnan, np.isposinf, np.isneginf):
        np.testing.assert_array_equal(where(out), where(exp))
    assert np.isfinite(out).sum() > 0.8 * out.size


# ---------------------------------------------------------------- OpenCV's DFT as the FFT method


@pytest.mark.parametrize("kw", GEOMETRIES, ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("op", ["convolve", "correlate"])
def test_fft_method_runs_on_opencv_dft_within_the_bound(spy, rng, kw, dtype, op):  # S1, S5, S7, S10
    """One real image: the FFT (explicit here) is ``cv2.dft`` of the image and of the kernel, the
    product, one inverse, whatever the boundary, stride, dilation or origin."""
    a = rng.standard_normal((37, 29)).astype(dtype)
    k = rng.standard_normal((9, 6)).astype(dtype)
    be = convkit.get_backend("numpy")
    plan = plan_call(op, a, k, be.capabilities, method="fft", **kw)
    assert be.method_label(plan, k) == "fft[opencv]"
    out = getattr(convkit, op)(a, k, method="fft", **kw)
    assert spy == ["dft", "dft"] and out.dtype == dtype
    _check(out, a, k, op, method="fft", **kw)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape, m, kw", [((640, 600), 63, dict(mode="same")),
                                          ((660, 531), (16, 31), dict(mode="full")),
                                          ((1100, 610), 9, dict(mode="same", stride=(3, 2)))])
def test_fft_on_opencv_dft_on_periods_of_its_own_length(spy, rng, monkeypatch, dtype, shape, m, kw):  # S1, S5
    """Beyond 512 points an axis, OpenCV's DFT takes a longer period where its transform is
    faster (675 -> 720 here): the kept slices wrap around less, and the result is the same
    convolution, within the FFT bound."""
    periods = []
    real = oe.dft_length
    monkeypatch.setattr(oe, "dft_length", lambda n: periods.append((n, real(n))) or real(n))
    a = rng.standard_normal(shape).astype(dtype)
    k = rng.standard_normal(m if isinstance(m, tuple) else (m, m)).astype(dtype)
    out = convkit.convolve(a, k, method="fft", **kw)
    assert spy == ["dft", "dft"] and out.dtype == dtype
    _check(out, a, k, method="fft", **kw)
    assert any(n != longer for n, longer in periods)


def test_dft_length_takes_opencvs_fast_lengths():
    """2-3-5-smooth, at least the period asked for and at most 1.3 times it; lengths up to 512
    as given; odd lengths, those with few factors of two, and 2**k / 3 * 2**k from 768 avoided."""
    from convkit.choose import fast_len

    for n in range(2, 3100, 7):
        got = oe.dft_length(fast_len(n))
        assert fast_len(got) == got and fast_len(n) <= got <= 1.3 * fast_len(n)
        if fast_len(n) <= 512:
            assert got == fast_len(n)
        else:
            assert oe._quick_length(got) or got == fast_len(n)
    slow = (675, 1024, 1125, 1215, 1536, 2048)
    assert [oe.dft_length(n) for n in slow] == [720, 1080, 1152, 1280, 1600, 2160]
    assert oe.dft_length(720) == 720 and oe.dft_length(1080) == 1080


def test_fft_on_opencv_dft_axes_in_any_order(spy, rng):  # S10
    a, k = rng.standard_normal((40, 33)), rng.standard_normal((7, 12))
    out = convkit.convolve(a, k, "same", method="fft", axes=(1, 0))
    assert spy == ["dft", "dft"]
    _check(out, a, k, method="fft", mode="same")


def test_auto_fft_on_opencv_dft_keeps_nan_where_direct_puts_it(spy, rng):  # S9
    """``auto``'s data pass finds the NaN before any transform, and direct computes the call."""
    a, k = rng.standard_normal((128, 128)), rng.standard_normal((31, 31))
    be = convkit.get_backend("numpy")
    plan = plan_call("convolve", a, k, be.capabilities, mode="same")
    assert plan.method == "fft" and be.method_label(plan, k) == "fft[opencv]"
    finite = convkit.convolve(a, k, "same")
    assert spy == ["dft", "dft"]
    _check(finite, a, k, method="fft", mode="same")
    a[40, 50] = np.nan
    out = convkit.convolve(a, k, "same")
    exp = reference("convolve", a, k, mode="same")
    np.testing.assert_array_equal(np.isnan(out), np.isnan(exp))
    assert 0 < np.isnan(out).sum() < out.size and spy == ["dft", "dft"]


_LANE = {"same", "full", "valid", "causal"}  # zero fill, no dilation: the one-image lane applies


def _without_lane(monkeypatch, be):
    """The general steps (``fft_corr``) for every FFT on OpenCV's DFT from now on."""
    monkeypatch.setattr(be, "_one_image_period", lambda plan: None)
    monkeypatch.setattr(be, "_route_cache", {})


def test_per_plan_facts_are_worked_out_once_per_capabilities(rng):
    """``NumpyBackend._per_plan`` keeps every fact, ``None`` included, until the capabilities
    change (``convkit tune``, a test): then it works them out again."""
    import dataclasses

    be = nb.NumpyBackend()
    a, k = rng.standard_normal((40, 30)), rng.standard_normal((5, 5))
    plan = plan_call("convolve", a, k, be.capabilities, mode="same")
    asked = []
    for _ in range(3):
        assert be._per_plan("fact", plan, lambda p: asked.append(p)) is None
    assert asked == [plan]
    be.capabilities = dataclasses.replace(be.capabilities, c_fft=be.capabilities.c_fft * 2)
    be._per_plan("fact", plan, lambda p: asked.append(p))
    assert asked == [plan, plan]


def test_per_plan_facts_follow_the_engines_switch(rng):
    """Setting ``engines`` (``convkit tune`` times SciPy alone that way) works the per-plan facts
    out again, both ways: none says an engine runs while they are off, none stays off after."""
    be = nb.NumpyBackend()
    a, k = rng.standard_normal((128, 128)), rng.standard_normal((7, 7))
    direct = plan_call("convolve", a, k, be.capabilities, mode="same", method="direct")
    fft = plan_call("convolve", a, k, be.capabilities, mode="same", method="fft")
    facts = lambda: (be._per_plan("lane", direct, be._lane), be._opencv_fft_ok(fft))  # noqa: E731
    assert facts() == ("fused", True)
    be.engines = False
    assert facts() == ("", False)
    be.engines = True
    assert facts() == ("fused", True)
    be.numba = False
    assert be._routes(direct).numba == -1


@pytest.mark.parametrize("kw", GEOMETRIES, ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()))
@pytest.mark.parametrize("op", ["convolve", "correlate"])
def test_one_image_dft_lane_gives_the_general_steps_bits(spy, rng, monkeypatch, kw, op):  # S1, S10
    """The FFT of one image on OpenCV's DFT with its shapes worked out once per plan
    (``NumpyBackend._execute_dft``) gives the bits of the general steps wherever it runs."""
    be = convkit.get_backend("numpy")
    a, k = rng.standard_normal((37, 29)), rng.standard_normal((9, 6))
    plan = plan_call(op, a, k, be.capabilities, method="fft", **kw)
    lane = be._per_plan("lane", plan, be._lane)
    assert lane == ("dft" if set(kw) <= {"mode", "stride", "origin"} and kw["mode"] in _LANE else "")
    fast = getattr(convkit, op)(a, k, method="fft", **kw)
    _without_lane(monkeypatch, be)
    general = getattr(convkit, op)(a, k, method="fft", **kw)
    assert be._per_plan("lane", plan, be._lane) == "" and spy == ["dft", "dft"] * 2
    np.testing.assert_array_equal(fast, general)
    _check(fast, a, k, op, method="fft", **kw)


@pytest.mark.parametrize("case", ["same", "correlate", "swapped", "nan", "separable", "float32-kernel"])
def test_auto_one_image_dft_lane_keeps_auto_rules(spy, rng, monkeypatch, case):  # S3, S9
    """``auto``'s FFT through the lane: the separable test, the data pass (NaN to direct) and the
    operands' swap and dtypes as in the general steps, with the same bits."""
    be = convkit.get_backend("numpy")
    a, k = rng.standard_normal((128, 128)), rng.standard_normal((31, 31))
    op, mode = ("correlate" if case == "correlate" else "convolve"), ("full" if case == "swapped" else "same")
    if case == "swapped":
        a, k = k, a  # the larger operand becomes the image (S3)
    elif case == "nan":
        a[40, 50] = np.nan
    elif case == "separable":
        k = np.outer(rng.standard_normal(31), rng.standard_normal(31))
    elif case == "float32-kernel":
        k = k.astype(np.float32)  # cast to float64 first: the general steps run
    plan = plan_call(op, a, k, be.capabilities, mode=mode)
    assert plan.method == "fft" and be._per_plan("lane", plan, be._lane) == "dft"
    fast = getattr(convkit, op)(a, k, mode)
    _without_lane(monkeypatch, be)
    general = getattr(convkit, op)(a, k, mode)
    np.testing.assert_array_equal(fast, general)
    exp = reference(op, a, k, mode=mode)
    if case == "nan":
        np.testing.assert_array_equal(np.isnan(fast), np.isnan(exp))
    else:
        assert_conv_close(fast, exp, a, k, op, method="fft", mode=mode)
    dfts = 0 if case in ("nan", "separable") else 4
    assert spy.count("dft") == dfts


@pytest.mark.parametrize("where", ["data", "kernel"])
def test_opencv_dft_shows_each_spectrum_to_the_check(rng, where):  # S9: the DC bin is the sum
    a, k = rng.standard_normal((20, 30)), rng.standard_normal((5, 4))
    (a if where == "data" else k)[3, 2] = np.inf
    seen = []

    def check(spec):
        seen.append(spec[0, 0])
        if not np.isfinite(spec[0, 0]):
            raise FloatingPointError

    with pytest.raises(FloatingPointError):
        oe.dft_linear_conv(a, np.flip(k), (24, 36), (slice(2, 22), slice(1, 31)), check)
    assert len(seen) == (1 if where == "data" else 2) and not np.isfinite(seen[-1])


@pytest.mark.parametrize("case", ["int64", "batch", "complex", "large", "no-engines"])
def test_fft_keeps_scipy_where_opencv_dft_does_not_apply(spy, rng, case):  # S5
    """Integers (their exactness rule is proved for ``scipy.fft``), batches, complex data and
    transforms of more than ``fused_fft_points`` points stay on ``scipy.fft``."""
    be = convkit.get_backend("numpy")
    a, k = rng.standard_normal((40, 40)), rng.standard_normal((9, 9))
    if case == "int64":
        a, k = (a * 20).astype(np.int64), (k * 20).astype(np.int64)
    elif case == "batch":
        a, k = rng.standard_normal((3, 40, 40)), k[None]
    elif case == "complex":
        a = a + 1j * rng.standard_normal(a.shape)
    elif case == "large":  # a backend whose limit this 40x40 image's 44x44 period exceeds
        be = nb.NumpyBackend()
        be.capabilities = dataclasses.replace(be.capabilities, fused_fft_points=43 * 43)
    elif case == "no-engines":
        be = nb.NumpyBackend(engines=False)
    out = convkit.convolve(a, k, "same", method="fft", backend=be)
    assert spy == []
    _check(out, a, k, method="fft", mode="same")


@pytest.mark.parametrize("shapes, runs", [(((1, 9), (1, 3)), True), (((2, 9), (2, 3)), True),
                                           (((9, 2), (3, 2)), True), (((9, 1), (3, 1)), False),
                                           (((1, 1), (1, 1)), False)])
@pytest.mark.parametrize("mode", ["full", "same", "valid"])
def test_opencv_dft_on_thin_images(spy, rng, shapes, runs, mode):  # S1, S5
    """OpenCV refuses ``nonzeroRows`` on a one-column period: those calls keep ``scipy.fft``."""
    a, k = (rng.standard_normal(s) for s in shapes)
    out = convkit.convolve(a, k, mode, method="fft")
    assert spy == (["dft", "dft"] if runs else [])
    _check(out, a, k, method="fft", mode=mode)


def test_fft_on_opencv_dft_bits_do_not_depend_on_its_threads(rng):  # S8
    import cv2

    a = rng.standard_normal((500, 500)).astype(np.float32)
    k = rng.standard_normal((31, 31)).astype(np.float32)
    threads = cv2.getNumThreads()
    try:
        cv2.setNumThreads(1)
        one = convkit.convolve(a, k, "same", method="fft")
        cv2.setNumThreads(max(threads, 2))
        many = convkit.convolve(a, k, "same", method="fft")
    finally:
        cv2.setNumThreads(threads)
    assert one.tobytes() == many.tobytes()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kw", [dict(mode="same"), dict(mode="full"), dict(mode="same", boundary="symm"),
                                dict(mode="same", stride=2, dilation=2)])
def test_separable_through_sepfilter2d(spy, rng, dtype, kw):  # S5
    a = rng.standard_normal((700, 600)).astype(dtype)
    g = np.exp(-0.5 * np.linspace(-2.5, 2.5, 25) ** 2)
    k = np.outer(g, g * np.linspace(1, 2, 25)).astype(dtype)
    be = convkit.get_backend("numpy")
    plan = plan_call("convolve", a, k, be.capabilities, **kw)
    assert be.method_label(plan, k) == "separable[opencv]"
    out = convkit.convolve(a, k, **kw)
    assert set(spy) == {"sepFilter2D"}  # one call, or bands on the backend's threads
    _check(out, a, k, method="direct", **kw)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kw", [dict(mode="same"), dict(mode="full"), dict(mode="same", boundary="symm"),
                                dict(mode="same", stride=2, dilation=2)])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, "overflow"])
def test_separable_hands_nan_inf_and_overflow_to_the_plan(spy, rng, dtype, kw, bad):  # S9
    """Non-finite data, or passes that overflow, give direct's NaN/Inf positions: with every
    tap non-zero the filter's output is tested (sepFilter2D runs, its result is dropped), with
    a dilation (zeros between the taps) the data pass finds NaN/Inf first (sepFilter2D never
    runs) and bounds finite data, whose overflowing result is then scanned."""
    a = rng.standard_normal((300, 280)).astype(dtype)
    g = np.exp(-0.5 * np.linspace(-2.5, 2.5, 25) ** 2)
    k = np.outer(g, g * np.linspace(1, 2, 25)).astype(dtype)
    if bad == "overflow":
        a = (a / np.abs(a).max() * (np.finfo(dtype).max / 4)).astype(dtype)  # finite; the sums overflow
    else:
        a[4, 4] = bad
        a[10, 12] = -bad  # NaN twice, or +Inf and -Inf in one window (NaN there, S9)
    with np.errstate(all="ignore"):
        out = convkit.convolve(a, k, **kw)
        direct = convkit.convolve(a, k, method="direct", **kw)
    assert ("sepFilter2D" in spy) == (bad == "overflow" or "dilation" not in kw)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(direct))
    np.testing.assert_array_equal(np.isposinf(out), np.isposinf(direct))
    np.testing.assert_array_equal(np.isneginf(out), np.isneginf(direct))
    assert np.isfinite(direct).any() and not np.isfinite(direct).all()


def test_separable_batch_on_threads_hands_nan_to_the_plan(spy, rng, monkeypatch):  # S8, S9
    """A batch on the backend's threads (groups of images, OpenCV's filter in each): a NaN in
    one image gives direct's NaN positions in that image only."""
    be = convkit.get_backend("numpy")
    monkeypatch.setattr(nb, "_cores_now", lambda cores: 2)
    monkeypatch.setattr(nb, "_busy", lambda: False)
    jobs, real_map = [], nb._map
    monkeypatch.setattr(nb, "_map", lambda f, todo, *a, **kw: jobs.append(len(todo))
                        or real_map(f, todo, *a, **kw))
    a = rng.standard_normal((5, 120, 100)).astype(np.float32)
    g = np.exp(-0.5 * np.linspace(-2.5, 2.5, 25) ** 2).astype(np.float32)
    k = np.outer(g, g)
    plan = plan_call("convolve", a, k, be.capabilities, mode="same", axes=(1, 2))
    assert be.method_label(plan, k) == "separable[opencv]"
    a[2, 60, 50] = np.nan
    out = convkit.convolve(a, k, "same", axes=(1, 2))
    direct = convkit.convolve(a, k, "same", axes=(1, 2), method="direct")
    assert "sepFilter2D" in spy and jobs and jobs[0] > 1  # the images ran as jobs on the threads
    np.testing.assert_array_equal(np.isnan(out), np.isnan(direct))
    assert np.isnan(out[2]).any() and not np.isnan(out[[0, 1, 3, 4]]).any()


def test_separable_output_test_is_one_sum(rng, monkeypatch):  # S9
    """Finite data on sepFilter2D: no pass over the data, one sum of the output."""
    be = convkit.get_backend("numpy")
    totals, squares = [], []
    real_total, real_squares = oe.total, oe.sum_squares
    monkeypatch.setattr(oe, "total", lambda a: totals.append(a.shape) or real_total(a))
    monkeypatch.setattr(oe, "sum_squares", lambda a: squares.append(a.shape) or real_squares(a))
    monkeypatch.setattr(be, "all_finite", lambda a, _r=be.all_finite: a.size < 1000 and _r(a))
    a = rng.standard_normal((700, 600)).astype(np.float32)
    g = np.exp(-0.5 * np.linspace(-2.5, 2.5, 25) ** 2).astype(np.float32)
    out = convkit.convolve(a, np.outer(g, g), "same")
    assert totals == [(700, 600)] and squares == []
    _check(out, a, np.outer(g, g), mode="same")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_data_pass_by_opencv_finds_what_numpy_finds(rng, dtype):  # S9
    """auto's data pass (``cv2.norm`` where the engines run) gives the bound NumPy's gives,
    ``None`` for NaN/Inf data, and no bound (``inf``) where float64 squares overflow."""
    be, plain = convkit.get_backend("numpy"), nb.NumpyBackend(engines=False)
    assert be._opencv_sums() and not plain._opencv_sums()
    a = rng.standard_normal((300, 200)).astype(dtype)
    plan = plan_call("convolve", a, np.ones((15, 15), dtype), be.capabilities, mode="same")
    assert be._data_bound(plan, a) == pytest.approx(plain._data_bound(plan, a), rel=1e-5)
    for bad in (np.nan, np.inf, -np.inf):
        b = a.copy()
        b[7, 9] = bad
        assert be._data_bound(plan, b) is None and plain._data_bound(plan, b) is None
    if dtype == "float64":
        assert be._data_bound(plan, a * 1e200) == plain._data_bound(plan, a * 1e200) == np.inf


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_kernel_sum_by_opencv_finds_what_numpy_finds(rng, dtype):  # S9
    """``sum |w|`` of auto's FFT (its gain bound and finiteness test) by ``cv2.norm`` on a
    flipped kernel (the canonical form's view) as by NumPy; NaN/Inf taps make it not finite."""
    be, plain = convkit.get_backend("numpy"), nb.NumpyBackend(engines=False)
    k = rng.standard_normal((9, 7)).astype(dtype)
    flipped = np.flip(k)
    want = float(np.sum(np.abs(k.astype(np.float64))))
    assert be._abs_sum(flipped) == pytest.approx(want, rel=1e-6)
    assert plain._abs_sum(flipped) == pytest.approx(want, rel=1e-6)
    for bad in (np.nan, np.inf, -np.inf):
        b = k.copy()
        b[4, 2] = bad
        assert not math.isfinite(be._abs_sum(np.flip(b))) and not math.isfinite(plain._abs_sum(np.flip(b)))


def test_backend_without_engines_never_calls_opencv(spy, rng):
    plain = nb.NumpyBackend(engines=False)
    assert plain.host_engines() == {} and plain.capabilities.fused_engine == ""
    a, k = rng.standard_normal((50, 40)), rng.standard_normal((5, 5)) + 3
    out = convkit.convolve(a, k, "same", backend=plain)
    assert spy == []
    np.testing.assert_allclose(out, convkit.convolve(a, k, "same"), rtol=1e-12, atol=1e-12)
    assert "turned off" in plain.engines_reason()


def test_environment_variable_keeps_opencv_out(monkeypatch):
    monkeypatch.setenv("CONVKIT_OPENCV", "0")
    monkeypatch.setattr(oe, "_state", None)
    assert not oe.installed()
    assert oe.available() == (False, "CONVKIT_OPENCV=0")
    be = nb.NumpyBackend()
    assert "opencv" not in be.host_engines() and be.capabilities.fused_engine in ("", "numba")
    monkeypatch.setattr(oe, "_state", None)  # undone: the next ask imports it again


def test_info_lists_the_engine():
    import io

    from convkit.cli import info

    buf = io.StringIO()
    info(buf)
    text = buf.getvalue()
    assert "host engines:" in text and f"opencv         {oe.version()} (2-D float32/float64" in text
