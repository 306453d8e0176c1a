"""method="auto": the cost model's decisions (S8), exactness for integers (S5), NaN safety (S9),
the separable path of the NumPy backend and its threaded direct path, against SciPy oracles."""

from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
import pytest
import scipy.ndimage
import scipy.signal
from reference import gaussian_kernel

import convkit
from convkit.backends import numpy as npb
from convkit.backends._base import separable_pays
from convkit.choose import (
    Capabilities,
    choose_method,
    dft_tiles,
    fast_len,
    fused_dft_cost,
    method_costs,
    phases_cost,
    separable_cost,
)
from convkit.options import make_options
from convkit.testing import assert_conv_close

CAPS = npb.backend.capabilities


def _choose(x_shape, k_shape, dtype=np.float64, mode="same", caps=CAPS, fill_finite=True):
    axes = tuple(range(len(x_shape)))
    if mode == "same":
        pads = tuple((m // 2, (m - 1) // 2) for m in k_shape)
        out = x_shape
    else:
        pads = tuple((m - 1, m - 1) for m in k_shape)
        out = tuple(n + m - 1 for n, m in zip(x_shape, k_shape))
    return choose_method("auto", out_dtype=np.dtype(dtype), out_shape=out, x_shape=x_shape, k_shape=k_shape,
                         axes=axes, pads=pads, stride=(1,) * len(axes), dilation=(1,) * len(axes),
                         fill_finite=fill_finite, caps=caps)


_gauss = gaussian_kernel


# ----------------------------------------------------------------------------- cost model (S8)


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64, np.uint16, np.bool_])
def test_auto_never_picks_fft_for_integers(dtype):  # S5
    assert _choose((2000, 2000), (63, 63), dtype) == ("direct", False)
    assert _choose((10**6,), (4096,), dtype, mode="full") == ("direct", False)


def test_auto_picks_a_transform_for_big_float_kernels_and_marks_it_nan_safe():  # S8, S9
    for shape, k in (((1024, 1024), (63, 63)), ((10**6,), (4096,)), ((128,) * 3, (15,) * 3)):
        method, nan_safe = _choose(shape, k, mode="same" if len(shape) > 1 else "full")
        assert method in ("fft", "oa") and nan_safe


def test_auto_keeps_direct_for_small_kernels_and_small_calls():  # S8
    assert _choose((2000, 2000), (3, 3)) == ("direct", False)
    assert _choose((10**6,), (16,), mode="full") == ("direct", False)
    assert _choose((64,), (3,), mode="full") == ("direct", False)
    assert _choose((64, 64), (5, 5)) == ("direct", False)


def test_long_1d_kernels_prefer_overlap_add():  # S8: one huge 1-D FFT leaves the cache
    c = method_costs(out_shape=(10**6 + 4095,), x_shape=(10**6,), k_shape=(4096,), axes=(0,),
                     pads=((4095, 4095),), dilation=(1,), caps=CAPS)
    assert c["oa"] < c["fft"] < c["direct"]


def test_nonfinite_fill_and_explicit_methods():  # S8, S9
    assert _choose((2000, 2000), (63, 63), fill_finite=False) == ("direct", False)
    kw = dict(out_dtype=np.dtype(np.float64), out_shape=(10,), x_shape=(10,), k_shape=(3,), axes=(0,),
              pads=((1, 1),), stride=(1,), dilation=(1,), fill_finite=True, caps=CAPS)
    for m in ("direct", "fft", "oa"):
        assert choose_method(m, **kw) == (m, False)
    no_oa = Capabilities(methods=("direct", "fft"))
    assert choose_method("oa", **{**kw, "caps": no_oa}) == ("fft", False)


def test_single_precision_makes_fft_cheaper():
    args = dict(out_shape=(2000, 2000), x_shape=(2000, 2000), k_shape=(7, 7), axes=(0, 1),
                pads=((3, 3), (3, 3)), dilation=(1, 1), caps=CAPS)
    caps = dataclasses.replace(CAPS, fused_engine="")  # ndimage computes float32 in float64
    c32 = method_costs(dtype=np.float32, **{**args, "caps": caps})
    c64 = method_costs(dtype=np.float64, **{**args, "caps": caps})
    assert c32["fft"] < c64["fft"] and c32["direct"] == c64["direct"]


def test_fft_nd_call_charges_transforms_over_two_or_more_axes_only():
    """``fft_nd_call`` is the extra fixed cost of an FFT over 2+ axes (the NumPy backend makes six
    library calls there, three in 1-D): it leaves 1-D estimates, and every other method, alone."""
    plain = dataclasses.replace(CAPS, fft_nd_call=0.0, fused_fft_points=0)
    extra = dataclasses.replace(CAPS, fft_nd_call=1e-3, fused_fft_points=0)
    one = dict(out_shape=(10_000,), x_shape=(10_000,), k_shape=(257,), axes=(0,), pads=((256, 256),),
               dilation=(1,))
    two = dict(out_shape=(128, 128), x_shape=(128, 128), k_shape=(31, 31), axes=(0, 1),
               pads=((15, 15), (15, 15)), dilation=(1, 1))
    assert method_costs(caps=extra, dtype=np.float64, **one) == method_costs(caps=plain, dtype=np.float64,
                                                                             **one)
    a, b = (method_costs(caps=c, dtype=np.float32, **two) for c in (plain, extra))
    assert b["fft"] == pytest.approx(a["fft"] + 1e-3)  # not scaled by single_fft: a fixed cost
    assert {k: v for k, v in a.items() if k != "fft"} == {k: v for k, v in b.items() if k != "fft"}
    # OpenCV's DFT runs this FFT (one image, 144x144 points): its library calls cost no fft_nd_call
    engine = dataclasses.replace(extra, fused_fft_points=144 * 144)
    # (and it is priced at the rate of the engine's DFT in tiles where that is lower: one period's
    # steps, the kernel's transform half of them)
    whole = CAPS.c_fused_dft * 1.5 * 144 * 144 + CAPS.fused_dft_call
    assert method_costs(caps=engine, dtype=np.float32, **two)["fft"] == pytest.approx(min(a["fft"], whole))
    assert method_costs(caps=dataclasses.replace(engine, fused_fft_points=144 * 144 - 1), dtype=np.float32,
                        **two)["fft"] == pytest.approx(b["fft"])


def test_small_float64_images_with_long_kernels_leave_scipy_fft():
    """128x128 float64 with 11x11 to 31x31 kernels: ``scipy.fft`` through six calls took 0.69-0.75
    ms, OpenCV's DFT filter 0.22-0.28 ms and ``cv2.dft`` as the FFT 0.25-0.27 ms: auto picks one of
    OpenCV's (the FFT method or overlap-add, its DFT in tiles) under SciPy's estimate. One
    tile covering the image is the FFT method's own whole-image DFT, which the tiles leave to it."""
    caps = dataclasses.replace(CAPS, fused_engine="opencv", c_fused_dft=5.3e-9, fused_dft_call=5e-5,
                               fused_taps=(129, 49), fused_dft_threads=2, fused_fft_points=0)
    scipy_only = dataclasses.replace(caps, c_fused_dft=0.0)
    for m in (11, 15, 31):
        geo = dict(out_shape=(128, 128), x_shape=(128, 128), k_shape=(m, m), axes=(0, 1),
                   pads=((m // 2, m // 2),) * 2, dilation=(1, 1), dtype=np.float64)
        scipy_fft = method_costs(caps=scipy_only, **geo)["fft"]
        costs = method_costs(caps=caps, **geo)
        assert costs["oa"] < min(costs["fft"], costs["direct"]) and costs["fft"] == scipy_fft, m
        costs = method_costs(caps=dataclasses.replace(caps, fused_fft_points=300_000), **geo)
        assert min(costs["fft"], costs["oa"]) < min(costs["direct"], scipy_fft), m
    one_tile = dataclasses.replace(caps, fused_dft_lengths=(160,), fused_fft_points=300_000)
    geo = dict(x_shape=(128, 128), k_shape=(31, 31), axes=(0, 1), pads=((15, 15),) * 2, dilation=(1, 1),
               dtype=np.float64)
    assert fused_dft_cost(caps=one_tile, **geo) == math.inf
    assert fused_dft_cost(caps=dataclasses.replace(one_tile, fused_fft_points=0), **geo) < math.inf


def test_fused_1d_loop_costs():
    """The fused 1-D loop (Numba's) prices 1-D float direct calls with stride 1 and no dilation
    from its fewest taps on (float32 at ``single_fused_1d``); anything else keeps
    ``numpy.convolve``'s estimate, and a cheaper loop moves auto's crossover to overlap-add."""
    caps = dataclasses.replace(Capabilities(c_direct_1d=1e-8, c_out=1e-9), c_fused_1d=5e-11,
                               c_fused_1d_out=1e-9, single_fused_1d=0.5, fused_1d_taps=(2, 4))
    plain = dataclasses.replace(caps, c_fused_1d=0.0)
    geo = dict(out_shape=(100_000,), x_shape=(100_000,), k_shape=(65,), axes=(0,), pads=((32, 32),),
               dilation=(1,))
    want = 100_000 * (65 * 5e-11 + 1e-9)
    assert method_costs(caps=caps, dtype=np.float64, **geo)["direct"] == pytest.approx(want)
    assert method_costs(caps=caps, dtype=np.float32, **geo)["direct"] == pytest.approx(0.5 * want)
    assert method_costs(caps=caps, dtype=np.float64, stride=(1,), **geo)["direct"] == pytest.approx(want)
    for dtype, extra in [(np.int64, {}), (np.complex128, {}), (np.float64, dict(stride=(2,))),
                         (np.float64, dict(dilation=(2,))), (np.float64, dict(k_shape=(3,)))]:
        case = {**geo, **extra}
        assert (method_costs(caps=caps, dtype=dtype, **case)["direct"]
                == method_costs(caps=plain, dtype=dtype, **case)["direct"]), (dtype, extra)
    two_d = dict(out_shape=(300, 300), x_shape=(300, 300), k_shape=(5, 5), axes=(0, 1),
                 pads=((2, 2), (2, 2)), dilation=(1, 1))
    assert method_costs(caps=caps, dtype=np.float64, **two_d) == method_costs(caps=plain, dtype=np.float64,
                                                                              **two_d)
    kw = dict(out_dtype=np.dtype(np.float64), out_shape=(100_000,), x_shape=(100_000,), k_shape=(65,),
              axes=(0,), pads=((32, 32),), stride=(1,), dilation=(1,), fill_finite=True)
    assert choose_method("auto", caps=plain, **kw)[0] != "direct"
    assert choose_method("auto", caps=caps, **kw)[0] == "direct"


def test_fused_engine_costs():
    """The fused 2-D engine (OpenCV) lowers direct's cost up to its tap limit, costs float32 at
    ``single_fused``, and prices its tiled DFT as overlap-add beyond that limit."""
    caps = dataclasses.replace(Capabilities(), fused_engine="opencv", c_fused=0.03e-9, c_fused_out=1e-9,
                               single_fused=0.5, fused_taps=(129, 49), c_fused_dft=1e-8)
    plain = dataclasses.replace(caps, fused_engine="")
    geo = dict(x_shape=(2000, 2000), axes=(0, 1), dilation=(1, 1))
    small = dict(geo, out_shape=(2000, 2000), k_shape=(7, 7), pads=((3, 3), (3, 3)))
    want = 2000 * 2000 * (49 * 0.03e-9 + 1e-9)
    assert method_costs(caps=caps, dtype=np.float64, **small)["direct"] == pytest.approx(want)
    assert method_costs(caps=caps, dtype=np.float32, **small)["direct"] == pytest.approx(0.5 * want)
    assert method_costs(caps=plain, dtype=np.float64, **small)["direct"] > want
    # integers and 1-D never use it
    assert method_costs(caps=caps, dtype="int32", **small) == method_costs(caps=plain, dtype="int32", **small)
    big = dict(geo, out_shape=(2000, 2000), k_shape=(9, 9), pads=((4, 4), (4, 4)))  # 81 taps > 49
    c = method_costs(caps=caps, dtype=np.float64, **big)
    assert c["direct"] == method_costs(caps=plain, dtype=np.float64, **big)["direct"]
    # OpenCV's DFT in tiles; without lengths to choose from, one tile of fast_len(2000 + 8) = 2025
    # points a side, and the kernel's transform counts half a tile
    assert c["oa"] == pytest.approx(1e-8 * 2025 * 2025 * 1.5)
    c32 = method_costs(caps=caps, dtype=np.float32, **big)
    assert c32["direct"] < c["direct"]  # 81 <= 129: its direct loop
    # with lengths: square tiles of the least time, two at a time, plus a per-tile and a per-call cost
    # (float32 at float64's cost). 15x15: a tile of L gives L - 14 outputs a side
    tiles = dataclasses.replace(caps, fused_dft_lengths=(32, 240, 432, 576), fused_dft_threads=2,
                                fused_dft_call=1e-4, fused_dft_tile=2e-5)
    huge = dict(geo, out_shape=(2000, 2000), k_shape=(15, 15), pads=((7, 7), (7, 7)))

    def seconds(length, count):  # count x count tiles of length x length, two threads woken
        return 1e-8 * length**2 * (0.5 + -(-count**2 // 2)) + 2e-5 * count**2 + tiles.thread_min_time / 2

    options = {32: seconds(32, 112), 240: seconds(240, 9), 432: seconds(432, 5), 576: seconds(576, 4)}
    best = min(options, key=options.get)
    assert dft_tiles((2000, 2000), (15, 15), tiles) == ((best, best), True)
    for dtype in (np.float32, np.float64):
        assert method_costs(caps=tiles, dtype=dtype, **huge)["oa"] == pytest.approx(options[best] + 1e-4)
    # an axis that one tile covers keeps that tile: 100 + 14 -> 240; the other is cut in squares
    assert dft_tiles((100, 2000), (15, 15), tiles)[0] in ((240, 240), (240, 432), (240, 576))
    # where waking the other thread (half of thread_min_time) costs more than it saves, the tiles
    # run on one, and are priced so: 2000x2000 in the 240s
    slow_start = dataclasses.replace(tiles, fused_dft_lengths=(240,), thread_min_time=1.0)
    assert dft_tiles((2000, 2000), (15, 15), slow_start) == ((240, 240), False)
    assert method_costs(caps=slow_start, dtype=np.float64, **huge)["oa"] == pytest.approx(
        1e-8 * 240 * 240 * (0.5 + 81) + 2e-5 * 81 + 1e-4)
    # 'full' output: the engine pads first (a copy) and computes every output of the padded image
    full = dict(geo, out_shape=(2006, 2006), k_shape=(7, 7), pads=((6, 6), (6, 6)))
    assert method_costs(caps=caps, dtype=np.float64, **full)["direct"] == pytest.approx(
        2012 * 2012 * (49 * 0.03e-9 + 1e-9) + caps.c_out * 2012 * 2012)
    # 'valid' output: no pads, no copy; it computes the image's size and crops
    valid = dict(geo, out_shape=(1994, 1994), k_shape=(7, 7), pads=((0, 0), (0, 0)))
    assert method_costs(caps=caps, dtype=np.float64, **valid)["direct"] == pytest.approx(want)


def test_phases_costs():
    """A dilated direct call that the backend runs on its input's phases (``phases_1d_from``)
    is priced as one undilated valid call on a mosaic of them, the input padded to whole
    periods, plus two transposing copies at ``c_out / 2`` per element and ``phases_nd_call``; a 1-D one as a
    ``(blocks, d)`` image with an ``(M, 1)`` kernel, dearer per output where its rows are short."""
    caps = dataclasses.replace(Capabilities(), fused_engine="opencv", c_fused=0.03e-9, c_fused_out=1e-9,
                               single_fused=0.5, fused_taps=(129, 49), c_out=2e-9, c_direct_1d=1e-10,
                               direct_1d_gaps=True, phases_1d_from=8, phases_call=5e-5, phases_1d_row=32)
    # 2-D: 1000 + 2 * 32 = 1064 = 33.25 periods of 32 -> 1088; valid outputs 1086 per axis (the
    # engine computes the image's size and crops)
    geo = dict(x_shape=(1000, 1000), k_shape=(3, 3), axes=(0, 1), pads=((32, 32), (32, 32)),
               dilation=(32, 32))
    engine = 1088 * 1088 * (9 * 0.03e-9 + 1e-9)
    copies = 1e-9 * (1088 * 1088 + 1086 * 1086)
    assert phases_cost(caps=caps, dtype=np.float64, **geo) == pytest.approx(engine + copies + 1e-4)
    assert phases_cost(caps=caps, dtype=np.float32, **geo) == pytest.approx(engine / 2 + copies + 1e-4)
    for dtype in ("int32", "complex128"):
        assert phases_cost(caps=caps, dtype=dtype, **geo) == math.inf
    assert phases_cost(caps=dataclasses.replace(caps, phases_1d_from=0), dtype=np.float64, **geo) == math.inf
    assert phases_cost(caps=caps, dtype=np.float64, **dict(geo, dilation=(1, 1))) == math.inf
    costs = method_costs(caps=caps, dtype=np.float64, out_shape=(1000, 1000), **geo)
    assert costs["direct"] == phases_cost(caps=caps, dtype=np.float64, **geo)
    # 1-D, 10**6 samples, 3 taps, dilation 512: numpy.convolve would multiply 1025 taps
    one = dict(x_shape=(10**6,), k_shape=(3,), axes=(0,), pads=((512, 512),), dilation=(512,))
    # 10**6 + 1024 samples -> 1956 whole periods of 512: a (1956, 512) image (all of it computed)
    assert phases_cost(caps=caps, dtype=np.float64, **one) == pytest.approx(
        1956 * 512 * (3 * 0.03e-9 + 1e-9) + 5e-5)
    plain = dataclasses.replace(caps, phases_1d_from=0)
    assert method_costs(caps=plain, dtype=np.float64, out_shape=(10**6,), **one)["direct"] == pytest.approx(
        1e-10 * 10**6 * 1025 + 2e-9 * 10**6)
    # short rows: dilation 8 costs 32 / 8 = 4 times the engine's estimate per output
    eight = dict(one, pads=((8, 8),), dilation=(8,))
    rows = (10**6 + 16) // 8
    assert phases_cost(caps=caps, dtype=np.float64, **eight) == pytest.approx(
        4 * rows * 8 * (3 * 0.03e-9 + 1e-9) + 5e-5)
    # below phases_1d_from, or where the gaps cost less than the phases' call: numpy.convolve
    assert phases_cost(caps=caps, dtype=np.float64, **dict(one, pads=((7, 7),), dilation=(7,))) == math.inf
    short = dict(x_shape=(1000,), k_shape=(3,), axes=(0,), pads=((64, 64),), dilation=(64,))
    assert phases_cost(caps=caps, dtype=np.float64, **short) == math.inf


def test_auto_runs_short_dilated_kernels_direct_on_the_phases():  # S8
    """With the NumPy backend's constants, ``auto`` prices a dilated direct call on the phases
    that run it: 10**6 float32 samples, 3 taps, dilation 512 took 0.3-0.4 ms direct against
    2.2-2.4 ms by overlap-add (which ``auto`` picked while direct was priced as numpy.convolve);
    a 512x512 image with a 3x3 kernel and dilation 32, 0.35-0.45 ms against 1.0-1.5 ms by FFT."""
    for dtype in (np.float32, np.float64):
        # (float64 1000x1000 with 3x3 and 5x5 kernels and dilation 4, footprints beyond OpenCV's direct
        # filter, runs its DFT in tiles, as fast or faster: 4.8-5.2 against 5.0-6.0 ms direct with 3x3,
        # 3.0-5.5 against 5.4-5.5 ms with 5x5; float32 runs them direct, 2.0-2.1 ms with 5x5)
        cases = (((10**6,), (3,), 512), ((512, 512), (3, 3), 32))
        if dtype == np.float32:
            cases += (((1000, 1000), (3, 3), 4), ((1000, 1000), (5, 5), 4))
        for x, k, d in cases:
            pads = tuple(((m - 1) * d // 2, (m - 1) * d - (m - 1) * d // 2) for m in k)
            got = choose_method("auto", out_dtype=np.dtype(dtype), out_shape=x, x_shape=x, k_shape=k,
                                axes=tuple(range(len(x))), pads=pads, stride=(1,) * len(x),
                                dilation=(d,) * len(x), fill_finite=True, caps=CAPS)
            assert got == ("direct", False), (dtype, x, k, d)


def test_fast_len():
    for n in (1, 7, 11, 97, 1000, 1025, 4097):
        f = fast_len(n)
        assert f >= n
        r = f
        for p in (2, 3, 5):
            while r % p == 0:
                r //= p
        assert r == 1
        assert all(fast_len(m) >= m for m in range(n, f))


def test_separable_cost_only_for_two_or_more_long_axes():
    assert separable_cost(out_shape=(100,), x_shape=(100,), k_shape=(15,), axes=(0,), caps=CAPS) == np.inf
    assert separable_cost(out_shape=(100, 100), x_shape=(100, 100), k_shape=(1, 15), axes=(0, 1),
                          caps=CAPS) == np.inf
    assert np.isfinite(separable_cost(out_shape=(100, 100), x_shape=(100, 100), k_shape=(15, 15),
                                      axes=(0, 1), caps=CAPS))
    assert separable_cost(out_shape=(100, 100), x_shape=(100, 100), k_shape=(15, 15), axes=(0, 1),
                          caps=Capabilities()) == np.inf


# ----------------------------------------------------------------------------- exactness and NaN (S5, S9)


def test_auto_integers_are_exact_on_a_size_fft_would_pick(rng):  # S5
    x = rng.integers(-1000, 1000, (300, 300)).astype(np.int64)
    k = rng.integers(-1000, 1000, (31, 31)).astype(np.int64)
    out = convkit.convolve(x, k, "same")
    expected = scipy.signal.convolve(x, k, "same", method="direct")
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_auto_fft_plan_falls_back_to_direct_on_nonfinite_data(rng, bad):  # S9
    x = rng.standard_normal((300, 300))
    k = rng.standard_normal((31, 31))
    x[40, 200] = bad
    out = convkit.convolve(x, k, "same")
    expected = scipy.signal.convolve(x, k, "same", method="direct")
    assert np.isnan(out).sum() + np.isinf(out).sum() < out.size // 2  # not spread everywhere
    assert_conv_close(out, expected, x, k, mode="same")


def test_all_finite_is_exact_when_the_sum_overflows():
    be = npb.backend
    assert be.all_finite(np.array([1e308, 1e308, -1e308]))
    assert not be.all_finite(np.array([1.0, np.nan]))
    assert not be.all_finite(np.array([np.inf, -np.inf]))
    assert not be.all_finite(np.array([1 + 1j, complex(0, np.inf)]))


# ----------------------------------------------------------------------------- separable kernels


def test_separable_factors_detects_rank_one():
    g = _gauss(15)
    f = npb.separable_factors(g, (0, 1), np.float64)
    assert f is not None
    np.testing.assert_allclose(np.multiply.outer(*f), g, rtol=1e-15)
    box = np.ones((5, 7))
    assert npb.separable_factors(box, (0, 1), np.float64) is not None
    zeros_inside = np.outer([1.0, 0.0, -2.0, 1.0, 0.5], [0.5, 0.0, 3.0, 1.0, 2.0])  # zero rows and columns
    f = npb.separable_factors(zeros_inside, (0, 1), np.float64)
    assert f is not None and np.array_equal(np.multiply.outer(*f) == 0, zeros_inside == 0)
    g3 = _gauss(7, ndim=3)
    f3 = npb.separable_factors(g3, (0, 1, 2), np.float64)
    assert f3 is not None and len(f3) == 3
    np.testing.assert_allclose(np.multiply.outer(np.multiply.outer(f3[0], f3[1]), f3[2]), g3, rtol=1e-14)
    assert npb.separable_factors(_gauss(15).astype(np.float32), (0, 1), np.float32) is not None


def _kernels_near_rank_one(rng):
    """Rank-1 kernels (2-D and 3-D, float32 and float64, zero rows, negative taps) and copies
    nudged by a relative 1e-12 ... 1e-2 at the peak, at the tap the quick test reads, or elsewhere."""
    for shape in [(5, 5), (7, 3), (1, 9, 9), (4, 4, 4), (15, 15)]:
        for dtype in (np.float32, np.float64):
            factors = [rng.standard_normal(m) for m in shape]
            factors[0][rng.integers(shape[0])] = 0.0
            k = factors[0]
            for f in factors[1:]:
                k = np.multiply.outer(k, f)
            k = k.astype(dtype)
            yield k
            peak = np.unravel_index(np.argmax(np.abs(k)), k.shape)
            quick = tuple(p if m == 1 else int(p == 0) for p, m in zip(peak, k.shape))
            other = tuple(m - 1 for m in k.shape)
            for where in (peak, quick, other):
                for scale in (1e-12, 1e-7, 1e-5, 1e-2):
                    nudged = k.copy()
                    nudged[where] = nudged[where] * (1 + scale) + (scale if nudged[where] == 0 else 0)
                    yield nudged
    yield rng.standard_normal((63, 63)).astype(np.float32)
    yield np.zeros((5, 5))
    outer = np.outer(rng.standard_normal(5), rng.standard_normal(6))
    for special in (np.nan, np.inf, -np.inf):  # at the peak, beside it, and off its rows
        for where in ((0, 0), (2, 3), (4, 5)):
            k = outer.copy()
            k[where] = special
            yield k
    for scale in (1e300, 1e-300, 2.0**1000):  # near the float range: overflow or underflow in the test
        yield outer * scale
        yield np.multiply.outer(outer, rng.standard_normal(3)) * scale
    flipped = np.full((3, 3), 1.5e308)
    flipped[2, 2] *= -1  # passes the one-tap test; the full test's difference overflows
    yield flipped


def test_separable_factors_follows_the_full_rank_one_rule(rng):
    """The quick one-tap rejection and the host's own rank-1 test decide as the shared test
    (``rank_one``, which the JAX backend traces) and return its factors bit for bit."""
    from convkit.backends._base import rank_one, separable_room

    for k in _kernels_near_rank_one(rng):
        axes = tuple(range(k.ndim))
        for acc in (np.float32, np.float64):
            delta = separable_room(list(k.shape), np.dtype(acc), np.float64)
            if not delta > 0:
                continue
            with np.errstate(all="ignore"):
                expected, ok = rank_one(np, k.astype(np.float64), delta)
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # no floating-point warnings leak (S13)
                got = npb.separable_factors(k, axes, acc)
            assert (got is not None) == bool(ok), (k.shape, k.dtype, acc)
            if got is not None:
                assert all(f.tobytes() == e.tobytes() for f, e in zip(got, expected, strict=True))
                assert all(np.isfinite(f).all() for f in got)


def test_separable_factors_rejects_other_kernels(rng):
    assert npb.separable_factors(rng.standard_normal((15, 15)), (0, 1), np.float64) is None
    g = _gauss(15)
    nudged = g.copy()
    nudged[3, 4] *= 1 + 1e-9  # far beyond rounding for float64, tiny for float32
    assert npb.separable_factors(nudged, (0, 1), np.float64) is None
    assert npb.separable_factors(nudged, (0, 1), np.float32) is not None
    nudged[3, 4] *= 1 + 1e-3
    assert npb.separable_factors(nudged, (0, 1), np.float32) is None
    hole = g.copy()
    hole[7, 7] = 0.0  # a zero the outer product does not have
    assert npb.separable_factors(hole, (0, 1), np.float64) is None
    assert npb.separable_factors(g.astype(np.complex128), (0, 1), np.complex128) is None
    assert npb.separable_factors(g[:1], (0, 1), np.float64) is None  # one long axis: nothing to gain
    assert npb.separable_factors(np.zeros((5, 5)), (0, 1), np.float64) is None
    ramp = np.outer([1, 2, 3, 4, 5], [1, 1, 1, 1, 1]) * 1.0
    assert npb.separable_factors(ramp, (0, 1), np.float64) is not None
    # 3x3 float64: the S5 bound leaves no room for the check's own rounding
    assert npb.separable_factors(np.ones((3, 3)), (0, 1), np.float64) is None


def test_separable_is_tried_only_where_it_pays():
    big = npb.backend.capabilities
    f64 = np.dtype(np.float64)
    same = make_options(mode="same")
    plan = convkit.plan.make_plan("convolve", (2000, 2000), (15, 15), f64, f64, same, big)
    assert separable_pays(plan, big)
    small = convkit.plan.make_plan("convolve", (64, 64), (3, 3), f64, f64, make_options(mode="same"), big)
    assert not separable_pays(small, big)
    filled = convkit.plan.make_plan("convolve", (2000, 2000), (15, 15), f64, f64,
                                    make_options(mode="same", fillvalue=1.5), big)
    assert not separable_pays(filled, big)


@pytest.fixture
def spy_separable(monkeypatch):
    """Records the calls of the separable path (SciPy's or OpenCV's passes, or Numba's loop);
    makes it the cheapest wherever it is allowed."""
    cheap = Capabilities(**{**npb.backend.capabilities.__dict__, "c_sep": 1e-30, "c_out": 0.0})
    monkeypatch.setattr(npb.backend, "capabilities", cheap)
    calls = []
    orig = npb.NumpyBackend.separable_passes

    def spy(self, plan, x, factors, ndimage):
        calls.append(plan)
        return orig(self, plan, x, factors, ndimage)

    monkeypatch.setattr(npb.NumpyBackend, "separable_passes", spy)
    from convkit.backends import numba_engine

    real = numba_engine.correlate_separable

    def spy_numba(plan, *args):  # Numba's separable loop (larger images), where its result is kept
        out, total = real(plan, *args)
        if np.isfinite(total):
            calls.append(plan)
        return out, total

    monkeypatch.setattr(numba_engine, "correlate_separable", spy_numba)
    return calls


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("mode", ["same", "full", "valid"])
def test_separable_path_is_within_the_direct_bound(rng, spy_separable, dtype, mode):  # S5
    x = rng.standard_normal((400, 300)).astype(dtype)
    k = _gauss(21).astype(dtype)
    out = convkit.convolve(x, k, mode)
    assert spy_separable, "the separable path was not taken"
    expected = scipy.signal.convolve(x.astype(np.float64), k.astype(np.float64), mode, method="direct")
    assert_conv_close(out, expected, x, k, mode=mode, method="direct", check_dtype=False)
    assert out.dtype == dtype


@pytest.mark.parametrize("boundary,ndmode", [("symm", "reflect"), ("mirror", "mirror"),
                                             ("nearest", "nearest"), ("wrap", "wrap")])
def test_separable_path_boundaries(rng, spy_separable, boundary, ndmode):  # S5, S7
    x = rng.standard_normal((400, 300))
    k = _gauss(21) * np.linspace(1, 2, 21)[None, :]  # rank 1, not symmetric
    out = convkit.convolve(x, k, "same", boundary=boundary)
    assert spy_separable
    expected = scipy.ndimage.convolve(x, k, mode=ndmode)
    assert_conv_close(out, expected, x, k, mode="same", boundary=boundary, method="direct")


def test_separable_path_correlate_stride_dilation_and_axes(rng, spy_separable):  # S1, S10
    x = rng.standard_normal((300, 300))
    k = _gauss(17)
    kd = np.zeros((33, 33))
    kd[::2, ::2] = k
    out = convkit.convolve(x, k, "full", dilation=2, stride=(2, 3))
    expected = scipy.signal.convolve(x, kd, "full", method="direct")[::2, ::3]
    assert_conv_close(out, expected, x, k, mode="full", dilation=2, stride=(2, 3), method="direct")
    kr = k * np.linspace(1, 3, 17)[:, None]
    out = convkit.correlate(x, kr, "same")
    assert_conv_close(out, scipy.signal.correlate(x, kr, "same", method="direct"), x, kr, "correlate",
                      mode="same", method="direct")
    xb = rng.standard_normal((3, 200, 200))
    out = convkit.convolve(xb, k, "same", axes=(1, 2))
    expected = scipy.signal.convolve(xb, k[None], "same", method="direct")
    assert_conv_close(out, expected, xb, k, mode="same", axes=(1, 2), method="direct")
    assert len(spy_separable) == 3


def test_separable_kernel_with_nan_data_matches_direct(rng, spy_separable):  # S9
    x = rng.standard_normal((400, 300))
    x[100, 50] = np.nan
    x[300, 250] = np.inf
    k = _gauss(21)
    out = convkit.convolve(x, k, "same")
    assert not spy_separable  # non-finite data: the general path decides
    assert_conv_close(out, scipy.signal.convolve(x, k, "same", method="direct"), x, k, mode="same")


def test_separable_not_used_for_nonzero_fill_or_explicit_methods(rng, spy_separable):
    x = rng.standard_normal((400, 300))
    k = _gauss(21)
    out = convkit.convolve(x, k, "same", fillvalue=2.0)
    expected = scipy.ndimage.convolve(x, k, mode="constant", cval=2.0)
    assert_conv_close(out, expected, x, k, mode="same", fillvalue=2.0)
    convkit.convolve(x, k, "same", method="direct")
    convkit.convolve(x, k, "same", method="fft")
    assert not spy_separable


# ----------------------------------------------------------------------------- threaded direct path


@pytest.mark.parametrize("boundary", ["fill", "symm", "wrap"])
def test_threaded_direct_blocks_match_convolve2d(rng, boundary):  # S5, S7
    x = rng.standard_normal((700, 500))
    k = rng.standard_normal((7, 7))
    out = convkit.convolve(x, k, "same", boundary=boundary, method="direct")
    expected = scipy.signal.convolve2d(x, k, "same", boundary=boundary)
    assert_conv_close(out, expected, x, k, mode="same", boundary=boundary, method="direct")


def test_threaded_direct_batched_axes(rng):  # S10
    x = rng.standard_normal((9, 300, 300)).astype(np.float32)
    k = rng.standard_normal((5, 5)).astype(np.float32)
    out = convkit.convolve(x, k, "same", axes=(1, 2))
    x64, k64 = x.astype(np.float64), k[None].astype(np.float64)
    expected = scipy.signal.convolve(x64, k64, "same", method="direct")
    assert_conv_close(out, expected, x, k, mode="same", axes=(1, 2), method="direct", check_dtype=False)
    assert out.dtype == np.float32


def test_tune_measures_saves_loads_and_applies(tmp_path, monkeypatch):
    import convkit.tune as tune

    caps = tune.tune(apply=False, quick=True, repeats=1)
    names = ["c_direct", "c_direct_1d", "c_fft", "c_out", "c_sep", "oa_1d_out"]
    if npb.backend.host_engines():  # OpenCV's filter: measured too, and kept by save/load
        names += ["c_fused", "c_fused_out", "c_fused_sep", "c_fused_dft", "single_fused"]
        assert caps.fused_engine == "opencv" and caps.fused_taps == (129, 49)
    if npb.backend.numba:  # Numba's 1-D loop
        names += ["c_fused_1d", "c_fused_1d_out", "single_fused_1d", "c_fused_3d", "c_fused_3d_out",
                  "single_fused_3d"]
        assert caps.fused_1d_taps == (2, 4)
    for name in names:
        v = getattr(caps, name)
        assert 0 < v < 1e-3 or name.startswith("single_fused") and 0 < v <= 1, (name, v)
    monkeypatch.setenv("CONVKIT_TUNE_FILE", str(tmp_path / "t.json"))
    path = tune.save(caps)
    assert path == str(tmp_path / "t.json")
    assert tune.load() == caps
    be = npb.backend
    monkeypatch.setattr(be, "capabilities", be.capabilities)  # restored after the test
    tune.apply(caps)
    assert be.capabilities == caps
    x, k = np.arange(20.0), np.ones(3)
    np.testing.assert_array_equal(convkit.convolve(x, k), np.convolve(x, k))
    with pytest.raises(TypeError, match="caps="):
        tune.apply({"c_fft": 1.0})


_FORK_SCRIPT = """
import multiprocessing, numpy as np, convkit
def child(q):
    x = np.ones((700, 500))
    q.put(float(convkit.convolve(x, np.ones((7, 7)), "same", method="direct")[350, 250]))
if __name__ == "__main__":
    convkit.convolve(np.ones((700, 500)), np.ones((7, 7)), "same", method="direct")  # the pool exists
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=child, args=(q,))
    p.start()
    p.join(60)
    if p.is_alive():
        p.kill()
        raise SystemExit("hung")
    print(q.get(timeout=5))
"""


def test_threaded_direct_works_in_a_forked_child(tmp_path):
    """A forked child (its copy of the thread pool has no threads) builds its own pool.
    Run in a fresh interpreter: this test process may hold JAX's threads, unsafe to fork."""
    import multiprocessing
    import subprocess
    import sys

    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork start method on this platform")
    script = tmp_path / "fork_check.py"
    script.write_text(_FORK_SCRIPT)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "49.0"


@pytest.mark.parametrize("mode, n, m, want", [("same", 100, 15, 108), ("full", 100, 15, 120),
                                              ("valid", 100, 15, 100), ("same", 64, 64, 96)])
def test_fft_lengths_are_the_ones_the_backend_transforms(monkeypatch, mode, n, m, want):
    """The cost model prices the FFT method at the lengths ``fft_corr`` transforms: the input plus
    its longer zero pad ('same', 15 taps: 100 + 7 -> 108), never input plus kernel plus pads."""
    from convkit.choose import fft_lengths
    from convkit.plan import plan_call

    be = convkit.get_backend("numpy")
    asked = []
    real = be.next_fast_len
    monkeypatch.setattr(be, "next_fast_len", lambda k, r: asked.append(k) or real(k, r))
    x, k = np.ones((n, n)), np.ones((m, m))
    convkit.convolve(x, k, mode, method="fft")
    plan = plan_call("convolve", x, k, be.capabilities, mode=mode, method="fft")
    ns = [n + lo + hi for lo, hi in plan.pads]
    assert fft_lengths(ns, [m, m], plan.pads) == [fast_len(a) for a in asked] == [want, want]


def test_a_call_plans_with_the_backends_current_capabilities(monkeypatch, rng):  # S4
    """``convolve`` keeps the plan of each call signature (``api._plan``), but only for the
    capabilities it was made with: new constants (``convkit tune``, a test) plan afresh."""
    from convkit import api

    be = npb.backend
    a, k = rng.standard_normal((300, 300)), rng.standard_normal((25, 25))
    seen = []
    real = api.make_plan
    monkeypatch.setattr(api, "make_plan", lambda *args: seen.append(args[-1]) or real(*args))
    api._PLANS.clear()
    first = convkit.convolve(a, k, "same")
    convkit.convolve(a, k, "same")
    assert seen == [be.capabilities]  # the second call found its plan
    assert api._plan("convolve", a.shape, k.shape, a.dtype, k.dtype, make_options(mode="same"),
                     be.capabilities).method != "direct"
    direct_only = dataclasses.replace(be.capabilities, c_direct=1e-30, c_fused=1e-30)
    monkeypatch.setattr(be, "capabilities", direct_only)
    again = convkit.convolve(a, k, "same")
    assert seen == [seen[0], direct_only]
    assert api._plan("convolve", a.shape, k.shape, a.dtype, k.dtype, make_options(mode="same"),
                     direct_only).method == "direct"
    assert_conv_close(again, scipy.signal.convolve(a, k, "same"), a, k, mode="same")
    np.testing.assert_allclose(again, first, rtol=1e-9, atol=1e-9)
