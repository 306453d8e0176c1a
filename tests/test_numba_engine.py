"""The NumPy backend's Numba engine (backends/numba_engine.py): where it runs, and that what it
computes is S1's canonical form within the S5 bounds, with S9's NaN/Inf positions and the same
bits on any number of threads (S8).

Oracles: ``tests/reference.py`` (exact float64 shift-and-add, independent of convkit) and SciPy.
The conformance suite runs every case on the ``numpy-numba`` runner (the loop wherever it
applies) as well; these tests make sure the loop really ran where it should, and did not where
it must not.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from reference import reference

import convkit
from convkit import dispatch
from convkit.backends import numba_engine as ne
from convkit.backends import numpy as nb
from convkit.choose import fused_direct_cost, method_costs, phases_cost
from convkit.plan import plan_call
from convkit.testing import assert_conv_close

pytest.importorskip("numba")


def _spy_threads(monkeypatch, name: str) -> list[int]:
    """Replace ``numba_engine.<name>`` by a wrapper; returns the list of ``threads`` each run was given."""
    runs: list[int] = []
    real = getattr(ne, name)

    def spy(plan, x, w, pad, run_jobs, threads):
        runs.append(threads)
        return real(plan, x, w, pad, run_jobs, threads)

    monkeypatch.setattr(ne, name, spy)
    return runs


@pytest.fixture
def always(monkeypatch):
    """The default backend with the loop on every call it applies to; yields the list of
    ``threads`` each run of the loop was given."""
    assert ne.available()[0]
    be = nb.NumpyBackend(numba_always=True)
    convkit.register_backend("numba-test", be)
    yield _spy_threads(monkeypatch, "correlate")
    dispatch._registry.pop("numba-test", None)
    dispatch._loaded.pop("numba-test", None)


def _run(op, a, k, **kw):
    return getattr(convkit, op)(a, k, backend="numba-test", **kw)


def _check(out, a, k, op="convolve", method="direct", **kw):
    assert_conv_close(out, reference(op, a, k, **kw), a, k, op, method=method, check_dtype=False, **kw)


GEOMETRIES = [
    dict(mode="same"), dict(mode="full"), dict(mode="valid"), dict(mode="same", boundary="symm"),
    dict(mode="same", boundary="reflect"), dict(mode="same", boundary="nearest"),
    dict(mode="same", boundary="wrap"), dict(mode="same", fillvalue=2.5), dict(mode="same", origin=(1, -1)),
    dict(mode="causal"), dict(mode=[(1, 1), (-1, 3)]),  # a negative column pad: the general loop
]


@pytest.mark.parametrize("kw", GEOMETRIES, ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("op", ["convolve", "correlate"])
def test_direct_runs_the_loop_within_the_bound(always, rng, kw, dtype, op):  # S1, S5, S7
    a = rng.standard_normal((41, 37)).astype(dtype)
    k = rng.standard_normal((4, 3)).astype(dtype)
    out = _run(op, a, k, method="direct", **kw)
    assert always and out.dtype == dtype
    _check(out, a, k, op, **kw)


@pytest.mark.parametrize("shape", [(1, 1), (3, 9), (9, 3), (5, 8), (7, 7), (2, 11), (6, 13)])
def test_every_kernel_width_and_kernels_larger_than_the_image(always, rng, shape):  # S1, S5
    """Widths up to 7 have a loop each, wider ones the general loop; a kernel wider than the
    image leaves no column inside it (every column an edge column)."""
    for image in [(40, 50), (4, 5)]:
        a = rng.standard_normal(image)
        k = rng.standard_normal(shape)
        for mode in ("full", "same", "valid"):
            if mode == "valid" and any(m > n for m, n in zip(shape, image)):
                continue
            _check(_run("convolve", a, k, mode=mode, method="direct"), a, k, mode=mode)
    assert always


@pytest.mark.parametrize("axes", [(1, 2), (0, 2), (2, 0)])
def test_batches_and_axes_not_last(always, rng, axes):  # S10
    a = rng.standard_normal((3, 24, 20))
    k = rng.standard_normal(tuple(3 if i in axes else 1 for i in range(3)))
    out = _run("convolve", a, k, mode="same", axes=axes, method="direct")
    assert always
    _check(out, a, k, mode="same", axes=axes)


def test_never_with_stride_dilation_or_other_dtypes(always, rng):  # S5 (integers exact), S1 (inserted zeros)
    a = rng.standard_normal((30, 30))
    k = rng.standard_normal((3, 3))
    calls = [(a, k, dict(mode="same", stride=2)), (a, k, dict(mode="full", dilation=2))]
    calls += [(a.astype(t), k.astype(t), dict(mode="same")) for t in ("int32", "complex128", "bool")]
    outs = [_run("convolve", ai, ki, method="direct", **kw) for ai, ki, kw in calls]
    assert always == []  # before the checks: their error bounds may run the loop on float64
    for out, (ai, ki, kw) in zip(outs, calls):
        _check(out, ai, ki, **kw)


def test_nan_data_stay_local_through_zero_taps(always, rng):  # S9
    """The loop multiplies zero taps too: a NaN reaches exactly the windows that hold it."""
    a = rng.standard_normal((30, 33))
    a[4, 5] = np.nan
    a[20, 0] = np.inf
    k = rng.standard_normal((5, 3))
    k[0] = 0.0
    k[:, 1] = 0.0
    for mode in ("same", "full", "valid"):
        out = _run("convolve", a, k, mode=mode, method="direct")
        with np.errstate(invalid="ignore"):  # the oracle's own Inf * 0
            ref = reference("convolve", a, k, mode=mode)
        np.testing.assert_array_equal(np.isnan(out), np.isnan(ref))
        np.testing.assert_array_equal(np.isinf(out), np.isinf(ref))
        with np.errstate(invalid="ignore"):
            _check(out, a, k, mode=mode)
    assert always


def test_nonfinite_taps_never_run_the_loop(always, rng):  # S9: a NaN tap meets the fill everywhere
    a = rng.standard_normal((30, 30))
    k = rng.standard_normal((3, 3))
    k[1, 1] = np.nan
    out = _run("convolve", a, k, mode="same", method="direct")
    assert np.isnan(out).all() and always == []


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_default_routing_checks_the_taps_before_the_loop(monkeypatch, rng, dtype):  # S9, S5
    """Where the loop is preferred, a NaN or Inf tap keeps it out (the loop skips the fill, which
    such a tap must meet: NaN), and taps whose squares overflow the quick test still get a result
    within the bound (from OpenCV's filter or the loop)."""
    runs = _spy_threads(monkeypatch, "correlate")
    a = rng.standard_normal((300, 300)).astype(dtype)
    for bad in (np.nan, np.inf):
        k = rng.standard_normal((3, 3)).astype(dtype)
        k[0, 2] = bad
        out = convkit.convolve(a, k, mode="same", backend="numpy")
        with np.errstate(invalid="ignore"):  # the oracle's 0 * Inf
            _check(out, a, k, mode="same")  # NaN where the tap meets the fill, Inf where it meets data
        assert runs == []
    k = (rng.standard_normal((3, 3)) * 1e20).astype(dtype)  # squares overflow float32
    out = convkit.convolve(a, k, mode="same", backend="numpy")
    _check(out, a, k, mode="same")
    k = rng.standard_normal((3, 3)).astype(dtype)
    _check(convkit.convolve(a, k, mode="same", backend="numpy"), a, k, mode="same")
    assert runs  # a finite kernel runs the loop


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_same_bits_on_any_number_of_threads_and_bands(rng, dtype):  # S8
    assert ne.available()[0]
    be = nb.NumpyBackend()
    a = rng.standard_normal((2, 203, 77)).astype(dtype)
    k = rng.standard_normal((1, 5, 6)).astype(dtype)
    plan = plan_call("correlate", a, k, be.capabilities, mode="same", method="direct", axes=(1, 2))
    one = ne.correlate(plan, a, k[0], be.pad, nb._map, 1)
    for threads in (2, 3, 8):
        np.testing.assert_array_equal(ne.correlate(plan, a, k[0], be.pad, nb._map, threads), one)
    np.testing.assert_array_equal(ne.correlate(plan, a[:1], k[0], be.pad, nb._map, 4), one[:1])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kshape", [(3, 3), (5, 5), (2, 7), (7, 4)])
def test_small_kernel_functions_take_stacks_of_images(rng, dtype, kshape):  # S8
    """The per-shape functions fill rows ``i0:i1`` of every image of a stack with the bits of
    one call per image (pads of every sign, images smaller than the kernel, NaN/Inf)."""
    from convkit.backends import numba_kernels as nk

    band = nk.small(*kshape, dtype)
    m0, m1 = kshape
    k = np.arange(1, 1 + m0 * m1, dtype=dtype).reshape(kshape) / 7
    k[0, 0] = -k[0, 0]  # a negative tap times +0 data: a -0 product
    for image in ((3, 30, 41), (5, 2, 3)):
        x = rng.standard_normal(image).astype(dtype)
        x[1, 0, -1], x[-1, -1, 0] = np.nan, np.inf
        pads = ((m0 // 2, m1 // 2, (m0 - 1) // 2, (m1 - 1) // 2), (m0 + 1, 0, 0, 2), (-1, 1, 2, 0))
        for lo0, lo1, hi0, hi1 in pads:
            n0, n1 = image[1] + lo0 + hi0 - m0 + 1, image[2] + lo1 + hi1 - m1 + 1
            if n0 <= 0 or n1 <= 0:
                continue
            one, stack = (np.full((image[0], n0, n1), 7.0, dtype) for _ in range(2))
            a, b = sorted(int(c) for c in rng.integers(0, n0 + 1, 2))
            with np.errstate(invalid="ignore"):
                for g in range(image[0]):
                    band(x[g], k, lo0, lo1, one[g], a, b)
                band(x, k, lo0, lo1, stack, a, b)
            np.testing.assert_array_equal(stack, one)


def test_batches_of_small_images_run_as_groups_of_images(monkeypatch, rng):  # S8
    """A batch runs as one compiled call per group of images (all of them on one core; groups
    of about ``STACK_PIXELS`` on several, an image each from that size; bands of rows where
    there are fewer than two images per core), with the bits of one image at a time."""
    from convkit.backends import numba_kernels as nk

    assert ne.available()[0]
    assert ne._stack_jobs(16, 128 * 128, 1) == [(0, 16)]
    assert [b - a for a, b in ne._stack_jobs(16, 128 * 128, 2)] == [2] * 8
    assert ne._stack_jobs(5, 256 * 256, 2) == [(i, i + 1) for i in range(5)]
    assert ne._stack_jobs(3, 10, 4) == [(0, 3)]
    be = nb.NumpyBackend()
    a = rng.standard_normal((6, 128, 128)).astype("float32")
    k = rng.standard_normal((5, 5)).astype("float32")
    plan = plan_call("correlate", a, k, be.capabilities, mode="same", method="direct", axes=(1, 2))
    one = plan_call("correlate", a[0], k, be.capabilities, mode="same", method="direct")
    by_image = np.stack([ne.correlate(one, image, k, be.pad, nb._map, 1) for image in a])
    calls = []
    real = nk.small

    def small(*args):
        band = real(*args)

        def spy(x, *rest):
            calls.append(x.shape[0] if x.ndim == 3 else None)
            return band(x, *rest)

        return spy

    monkeypatch.setattr(nk, "small", small)
    # fewer than two images per core (8 threads): bands of rows of each image, as before
    for threads, groups in ((1, [6]), (2, [2, 2, 2]), (3, [2, 2, 2]), (8, None)):
        calls.clear()
        np.testing.assert_array_equal(ne.correlate(plan, a, k, be.pad, nb._map, threads), by_image)
        if groups is None:
            assert len(calls) > 6 and set(calls) == {None}
        else:
            assert sorted(calls) == groups


def test_default_backend_picks_the_loop_where_it_is_faster(rng):
    """Numba's loop where it beats OpenCV's filter on one core: kernels up to 7x7 on float64
    and on float32 with one pass in registers (3x3) from 10 us of OpenCV's time, other
    float32 kernels up to 7x7 from mid-size images, wider ones (up to OpenCV's 49 taps) from
    large images (float64) or very large ones (float32); OpenCV's filter below."""
    be = nb.NumpyBackend()

    def label(shape, dtype, kshape):
        a, w = np.zeros(shape, dtype), rng.standard_normal(kshape).astype(dtype)
        axes = (-2, -1) if a.ndim == 3 else None
        return be.method_label(plan_call("convolve", a, w, be.capabilities, mode="same", axes=axes), w)

    opencv = "direct[opencv]" if "opencv" in be.host_engines() else "direct[numba]"
    for shape in ((128, 128), (16, 128, 128), (500, 500)):
        assert label(shape, "float64", (5, 5)) == "direct[numba]"
        assert label(shape, "float64", (7, 7)) == "direct[numba]"
        assert label(shape, "float32", (3, 3)) == "direct[numba]"
    for shape in ((16, 16), (32, 32)):  # microseconds: not worth loading Numba's functions
        assert label(shape, "float64", (5, 5)) == opencv
        assert label(shape, "float32", (3, 3)) == opencv
    assert label((500, 500), "float32", (5, 5)) == "direct[numba]"
    assert label((3000, 3000), "float32", (5, 5)) == "direct[numba]"
    # other float32 kernels up to 7x7: from about 190x190 with AVX-512, 450x450 without
    assert label((256, 256), "float32", (5, 5)) == ("direct[numba]" if ne.wide_vectors() else opencv)
    assert label((128, 128), "float32", (7, 7)) == opencv
    # 5x5 in one pass of 25 taps with AVX-512: from 10 us of OpenCV's time, as 3x3
    assert label((128, 128), "float32", (5, 5)) == ("direct[numba]" if ne.wide_vectors() else opencv)
    assert label((32, 32), "float64", (3, 11)) == opencv  # the general loop: from about 300x300
    assert label((600, 600), "float64", (3, 11)) == "direct[numba]"
    assert label((600, 600), "float32", (3, 11)) == opencv


def test_auto_runs_kernels_beyond_opencvs_filter_on_the_loop_on_large_images(rng):
    """Kernels with more taps than ``cv2.filter2D`` runs directly (129 float32, 49 float64): on
    large images auto's direct estimate (the loop at its own costs) beats the FFT methods and
    the loop runs them on every core; below ``LOOP_BEYOND_FILTER_FROM`` seconds and for wider
    kernels the FFT methods stay (OpenCV's DFT in tiles where it is there: 1000x1000 float64
    with 15x15 took 2.7 ms there against 4.2-4.3 ms on the loop, with 11x11 2.7 against 2.3)."""
    be = nb.NumpyBackend()

    def label(shape, dtype, kshape):
        a, w = np.zeros(shape, dtype), rng.standard_normal(kshape).astype(dtype)
        return be.method_label(plan_call("convolve", a, w, be.capabilities, mode="same"), w)

    assert be.capabilities.fused_loop_from == nb.LOOP_BEYOND_FILTER_FROM
    assert label((1000, 1000), "float32", (15, 15)) == "direct[numba]"
    assert label((1000, 1000), "float64", (11, 11)) == "direct[numba]"
    for dtype in ("float32", "float64"):
        assert label((2000, 2000), dtype, (11, 11)) == "direct[numba]"
        assert label((256, 256), dtype, (15, 15)).split("[")[0] in ("fft", "oa")
        assert label((2000, 2000), dtype, (31, 31)).split("[")[0] in ("fft", "oa")
    assert label((2000, 2000), "float32", (15, 15)) == "direct[numba]"
    for kw in (dict(stride=2), dict(dilation=2)):  # the loop does neither; nor does filter2D that far
        a, w = np.zeros((1000, 1000)), rng.standard_normal((15, 15))
        assert plan_call("convolve", a, w, be.capabilities, mode="same", **kw).method in ("fft", "oa")
        assert "fused 2-D" not in str(convkit.explain(a, w, mode="same", **kw))
    route = nb._route(plan_call("convolve", np.zeros((1000, 1000)), np.ones((15, 15)), be.capabilities,
                                mode="same", method="direct"), be.capabilities, True, False)
    assert route.numba == nb.cpu_threads() and not route.opencv
    # without Numba, the same call keeps OpenCV's DFT or SciPy's FFT
    plain = nb.NumpyBackend(numba=False)
    a, w = np.zeros((1000, 1000)), rng.standard_normal((15, 15))
    assert plan_call("convolve", a, w, plain.capabilities, mode="same").method in ("fft", "oa")


def test_without_opencv_strided_and_dilated_calls_are_not_priced_on_the_loop(monkeypatch, rng):
    """Where Numba is the only fused engine, every 2-D direct call with stride 1 and no
    dilation is priced at the loop's costs from any size (as before), but a strided or dilated
    one is not: the loop runs neither, so pricing it there made auto pick a direct that SciPy
    ran (1000x1000 15x15 with stride 2: 121 ms against 14-18 ms by FFT)."""
    from convkit.backends import opencv_engine as oe

    monkeypatch.setenv("CONVKIT_OPENCV", "0")
    monkeypatch.setattr(oe, "_state", None)
    be = nb.NumpyBackend()
    monkeypatch.setattr(oe, "_state", None)  # the next ask (after the test) imports it again
    assert be.capabilities.fused_engine == "numba" and be.capabilities.fused_loop_from == 0.0

    def label(n, m, **kw):
        a, w = np.zeros((n, n)), rng.standard_normal((m, m))
        return be.method_label(plan_call("convolve", a, w, be.capabilities, mode="same", **kw), w)

    assert label(1000, 15) == label(300, 5) == label(128, 7) == "direct[numba]"
    assert label(1000, 15, stride=2) in ("fft", "oa")
    assert label(128, 15, stride=2) in ("fft", "oa")
    # a dilated call runs the loop on its input's phases with the undilated kernel, and is priced
    # so (1000x1000 15x15 with dilation 2: direct 8.8 ms, FFT 8.8 ms), not on the dilated kernel
    plan = plan_call("convolve", np.zeros((1000, 1000)), np.ones((15, 15)), be.capabilities, mode="same",
                     dilation=2)
    geo = dict(x_shape=plan.x_shape, k_shape=plan.k_shape, axes=plan.axes, pads=plan.pads,
               dilation=plan.dilation, caps=be.capabilities, dtype=plan.acc_dtype)
    assert fused_direct_cost(**geo) == math.inf
    assert method_costs(out_shape=plan.out_shape, **geo)["direct"] == phases_cost(**geo) < math.inf


@pytest.mark.parametrize("wide", [True, False])
def test_small_float32_kernels_start_sooner_with_avx512(monkeypatch, wide):
    """The float32 threshold of the per-shape functions follows the host's vector width (read
    from LLVM, which Numba compiles for): 256x256 with 7x7 runs the loop only with AVX-512;
    4x4 and 5x5 kernels are summed in one pass there (25 taps), as 3x3 is everywhere, and
    start as soon as 3x3 does."""
    assert ne.available()[0]
    monkeypatch.setattr(ne, "_host_avx512", lambda: wide)
    be = nb.NumpyBackend()
    a, w = np.zeros((256, 256), "float32"), np.ones((7, 7), "float32")
    plan = plan_call("convolve", a, w, be.capabilities, mode="same")
    assert ne.preferred_from(plan) is (ne.SMALL_FROM_WIDE if wide else ne.SMALL_FROM)
    expected = "direct[numba]" if wide or "opencv" not in be.host_engines() else "direct[opencv]"
    assert be.method_label(plan, w) == expected
    three = plan_call("convolve", a, np.ones((3, 3), "float32"), be.capabilities)
    assert ne.preferred_from(three) is ne.ONE_PASS_FROM
    for side in (4, 5):
        small = plan_call("convolve", a, np.ones((side, side), "float32"), be.capabilities)
        assert ne.one_pass(small) == wide
        assert ne.preferred_from(small) is (ne.ONE_PASS_FROM if wide else ne.SMALL_FROM)
    assert not ne.one_pass(plan_call("convolve", a, np.ones((6, 6), "float32"), be.capabilities))
    assert ne.pass_taps("f") == (ne.WIDE_PASS_TAPS if wide else ne.SMALL_PASS_TAPS["f"])
    assert ne.pass_taps("d") == (ne.WIDE_PASS_TAPS if wide else ne.SMALL_PASS_TAPS["d"])


@pytest.mark.parametrize("wide", [True, False])
def test_small_kernels_run_passes_of_the_hosts_size(monkeypatch, rng, wide):  # S5, S8
    """The engine asks the per-shape functions for passes of :func:`pass_taps` (more taps with
    AVX-512), and the result is the same either way."""
    from convkit.backends import numba_kernels as nk

    monkeypatch.setattr(ne, "_host_avx512", lambda: wide)
    asked = []
    real = nk.small
    monkeypatch.setattr(nk, "small", lambda *a: asked.append(a) or real(*a))
    be = nb.NumpyBackend()
    x, w = rng.standard_normal((40, 33)), rng.standard_normal((5, 5))
    plan = plan_call("correlate", x, w, be.capabilities, mode="same", method="direct")
    got = ne.correlate(plan, x, w, be.pad, nb._map, 1)
    assert asked == [(5, 5, np.dtype("float64"), ne.WIDE_PASS_TAPS if wide else ne.SMALL_PASS_TAPS["d"])]
    _check(got, x, w, "correlate", mode="same")


@pytest.mark.parametrize("wide", [False, True])
@pytest.mark.parametrize("shape", [(11, 11), (300,)])
def test_general_loop_runs_blocks_of_the_hosts_size(monkeypatch, rng, wide, shape):  # S5, S8
    """The engine asks the general loop (2-D kernels wider than 7 columns, 1-D kernels) for
    blocks of :func:`row_block` taps (more with AVX-512), and the result is the same either way."""
    from convkit.backends import numba_kernels as nk

    assert ne.available()[0]
    monkeypatch.setattr(ne, "_host_avx512", lambda: wide)
    asked = []
    real = nk.rows
    monkeypatch.setattr(nk, "rows", lambda *a: asked.append(a) or real(*a))
    be = nb.NumpyBackend()
    x, w = rng.standard_normal((40, 33) if len(shape) == 2 else 2000), rng.standard_normal(shape)
    plan = plan_call("correlate", x, w, be.capabilities, mode="same", method="direct")
    run = ne.correlate if len(shape) == 2 else ne.correlate_1d
    got = run(plan, x, w, be.pad, nb._map, 1)
    assert asked == [(shape[-1], ne.WIDE_ROW_BLOCK if wide else ne.ROW_BLOCK)]
    assert ne.row_block() == (ne.WIDE_ROW_BLOCK if wide else ne.ROW_BLOCK)
    _check(got, x, w, "correlate", mode="same")


def test_host_vector_width_reads_llvm():
    import llvmlite.binding

    assert ne.available()[0]
    assert ne.wide_vectors() == bool(llvmlite.binding.get_host_cpu_features().get("avx512f", False))


def test_backend_without_numba_never_calls_it(monkeypatch, rng):
    a = rng.standard_normal((600, 600))
    k = rng.standard_normal((5, 5))
    for be in (nb.NumpyBackend(engines=False), nb.NumpyBackend(numba=False)):
        assert "numba" not in be.host_engines()
        plan = plan_call("convolve", a, k, be.capabilities, mode="same", method="direct")
        with monkeypatch.context() as m:
            m.setattr(ne, "correlate", lambda *a, **k: pytest.fail("numba ran"))
            out = be.execute(plan, a, k)
        _check(out, a, k, mode="same")


def test_environment_variable_keeps_numba_out(monkeypatch):
    monkeypatch.setenv("CONVKIT_NUMBA", "0")
    assert not ne.installed() and ne.reason_missing() == "CONVKIT_NUMBA=0"
    be = nb.NumpyBackend(engines=True)
    assert not be.numba and "numba" not in be.host_engines()


def test_info_lists_the_engine():
    be = nb.NumpyBackend()
    assert "numba" in be.host_engines()
    assert "stride 1" in be.host_engines()["numba"]
    assert ("AVX-512" in be.host_engines()["numba"]) == ne.wide_vectors()


def test_explain_names_the_engine_that_runs():
    big, k = np.zeros((1000, 1000)), np.ones((5, 5))
    assert "numba's fused 2-D loop" in convkit.explain(big, k, mode="same", backend="numpy").method_reason
    if "opencv" in nb.backend.host_engines():
        small = np.zeros((64, 64), np.float32)
        why = convkit.explain(small, np.ones((7, 7), np.float32), mode="same", backend="numpy").method_reason
        assert "opencv's fused 2-D filter" in why


@pytest.fixture
def separable_spy(monkeypatch):
    """Totals returned by Numba's separable loop, one per call."""
    totals: list[float] = []
    real = ne.correlate_separable

    def spy(*args):
        out, total = real(*args)
        totals.append(total)
        return out, total

    monkeypatch.setattr(ne, "correlate_separable", spy)
    return totals


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kw", [dict(mode="same"), dict(mode="full"), dict(mode="valid"),
                                dict(mode="same", boundary="symm"), dict(mode="same", boundary="wrap")])
def test_separable_loop_within_the_bound(always, separable_spy, rng, dtype, kw):  # S5
    a = rng.standard_normal((90, 70)).astype(dtype)
    g = np.exp(-0.5 * np.linspace(-2.5, 2.5, 15) ** 2)
    k = np.outer(g, g * np.linspace(1, 2, 15)).astype(dtype)
    be = convkit.get_backend("numba-test")
    assert be.method_label(plan_call("convolve", a, k, be.capabilities, **kw), k) == "separable[numba]"
    out = _run("convolve", a, k, **kw)
    assert len(separable_spy) == 1 and np.isfinite(separable_spy[0])
    assert out.dtype == dtype
    _check(out, a, k, method="direct", **kw)


@pytest.mark.parametrize("bad", [np.nan, np.inf, "overflow"])
def test_separable_loop_hands_nan_and_overflow_to_the_plan(always, separable_spy, rng, bad):  # S9
    """A NaN/Inf in the data, or a pass that overflows, makes the loop's test of its outputs
    fail (it returns inf): the plan's own method then computes the call, with direct's NaN/Inf
    positions."""
    a = rng.standard_normal((60, 50)).astype("float32")
    g = np.exp(-0.5 * np.linspace(-2.5, 2.5, 9) ** 2).astype("float32")
    k = np.outer(g, g)
    if bad == "overflow":
        a[10:12, 10:12] = 3e38
    else:
        a[7, 9] = bad
    out = _run("convolve", a, k, mode="same")
    assert len(separable_spy) == 1 and not np.isfinite(separable_spy[0])
    direct = _run("convolve", a, k, mode="same", method="direct")
    np.testing.assert_array_equal(np.isnan(out), np.isnan(direct))
    np.testing.assert_array_equal(np.isinf(out), np.isinf(direct))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("height", [1, 2, 3, 4, 5, 8, 9, 12, 13, 17, 21])
@pytest.mark.parametrize("rows", [2, 11, 40])
def test_separable_loop_every_kernel_height(rng, dtype, height, rows):  # S5, S8
    """The column pass adds eight image rows, then four, then one at a time: every height
    (each mix of those passes), on images shorter and taller than the kernel (output rows
    whose window leaves the image at the top, the bottom or both), on one and two cores."""
    assert ne.available()[0]
    be = nb.NumpyBackend()
    a = rng.standard_normal((rows, 50)).astype(dtype)
    gy = (np.exp(-0.5 * np.linspace(-2, 2, height) ** 2) + 0.1).astype(dtype)
    gx = (np.exp(-0.5 * np.linspace(-2, 2, 7) ** 2) * np.linspace(1, 2, 7)).astype(dtype)
    k = np.outer(gy, gx)
    modes = ["same", "full"] + (["valid"] if rows >= height else [])
    for kw in (dict(mode=mode) for mode in modes):
        plan = plan_call("correlate", a, k, be.capabilities, method="direct", **kw)
        out, total = ne.correlate_separable(plan, a, [gy, gx], be.pad, nb._map, 1)
        assert total == 0.0 and out.dtype == dtype
        _check(out, a, k, op="correlate", method="direct", **kw)
        two, total = ne.correlate_separable(plan, a, [gy, gx], be.pad, nb._map, 2)
        assert total == 0.0
        np.testing.assert_array_equal(two, out)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_separable_loop_finds_one_bad_value_anywhere(rng, bad):  # S9
    """The loop's test of its outputs sees a single NaN/Inf output wherever it is (first and
    last output, both bands): what the caller relies on to discard the passes."""
    assert ne.available()[0]
    be = nb.NumpyBackend()
    a = rng.standard_normal((64, 48)).astype("float32")
    g = np.exp(-0.5 * np.linspace(-2, 2, 5) ** 2).astype("float32")
    plan = plan_call("correlate", a, np.outer(g, g), be.capabilities, mode="valid", method="direct")
    for where in [(0, 0), (63, 47), (31, 20), (40, 0)]:
        b = a.copy()
        b[where] = bad
        for threads in (1, 2):
            _, total = ne.correlate_separable(plan, b, [g, g], be.pad, nb._map, threads)
            assert total == np.inf
        _, total = ne.correlate_separable(plan, a, [g, g], be.pad, nb._map, 2)
        assert total == 0.0


def test_default_backend_runs_separable_kernels_on_the_loop_where_it_is_faster():
    """Numba's separable loop, which tests its outputs as it writes them, against OpenCV's
    ``sepFilter2D`` and a sum of its output: from about 350x350 (float32, 15x15) and 128x128
    (float64, 9x9) images; ``sepFilter2D`` below."""
    be = nb.NumpyBackend()
    if "opencv" not in be.host_engines():
        pytest.skip("the crossover is against OpenCV's sepFilter2D")
    g = np.exp(-0.5 * np.linspace(-2.5, 2.5, 15) ** 2)

    def label(side, dtype, m):
        a = np.zeros((side, side), dtype)
        w = np.outer(g[:m], g[:m]).astype(dtype)
        return be.method_label(plan_call("convolve", a, w, be.capabilities, mode="same"), w)

    assert label(500, "float32", 15) == label(2000, "float32", 9) == "separable[numba]"
    assert label(500, "float64", 9) == label(160, "float64", 9) == "separable[numba]"
    assert label(64, "float32", 9) == label(64, "float64", 9) == "separable[opencv]"
    assert label(256, "float32", 9) == "separable[opencv]"


# ----------------------------------------------------------------------------- 1-D


@pytest.fixture
def always_1d(always, monkeypatch):
    """``always``, and the list of ``threads`` each run of the 1-D loop was given."""
    return _spy_threads(monkeypatch, "correlate_1d")


GEOMETRIES_1D = [
    dict(mode="same"), dict(mode="full"), dict(mode="valid"), dict(mode="causal"),
    dict(mode="same", boundary="symm"), dict(mode="same", boundary="reflect"),
    dict(mode="same", boundary="wrap"), dict(mode="same", fillvalue=2.5), dict(mode="same", origin=3),
    dict(mode=((40, -3),)), dict(mode=((-5, 60),)),
]


@pytest.mark.parametrize("kw", GEOMETRIES_1D, ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()))
@pytest.mark.parametrize("m", [1, 2, 5, 8, 13, 24, 70])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("op", ["convolve", "correlate"])
def test_1d_direct_runs_the_loop_within_the_bound(always_1d, rng, kw, m, dtype, op):  # S1, S2, S5, S7
    a = rng.standard_normal(57).astype(dtype)
    k = rng.standard_normal(m).astype(dtype)
    if kw["mode"] == "valid" and m > a.size or kw.get("boundary") in ("symm", "reflect") and m > a.size:
        return
    out = _run(op, a, k, method="direct", **kw)
    assert always_1d == [1], "the loop did not run"
    assert out.dtype == dtype
    _check(out, a, k, op, **kw)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("m", [3, 16, 31])
def test_1d_same_bits_on_any_number_of_threads(rng, dtype, m):  # S8
    assert ne.available()[0]
    be = nb.NumpyBackend()
    a = rng.standard_normal(50_003).astype(dtype)
    k = rng.standard_normal(m).astype(dtype)
    for mode in ("full", "same", "valid", ((100, 20_000),)):
        plan = plan_call("correlate", a, k, be.capabilities, mode=mode, method="direct")
        one = ne.correlate_1d(plan, a, k, be.pad, nb._map, 1)
        _check(one, a, k, "correlate", mode=mode)
        for threads in (2, 3, 8):
            np.testing.assert_array_equal(ne.correlate_1d(plan, a, k, be.pad, nb._map, threads), one)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kshape", [(3, 3), (1, 7), (7, 1), (2, 5), (5, 5), (7, 7), (4, 6)])
@pytest.mark.parametrize("taps", [None, 1, ne.WIDE_PASS_TAPS, 49])
def test_small_kernel_functions_give_the_general_loops_bits(rng, dtype, kshape, taps):  # S8
    """The functions of one kernel shape (all loops of constant length; the edges from
    zero-padded copies) and the general band function sum the same products in the same order:
    equal bits and signs of zero, on images smaller and larger than the kernel, with pads of
    every sign, zeros of both signs, NaN and Inf in the edge rows and columns, and bands that
    start and end anywhere; with passes of any size (the dtype's default, one kernel row, the
    AVX-512 size, the whole window)."""
    from convkit.backends import numba_kernels as nk

    m0, m1 = kshape
    small, general = nk.small(m0, m1, dtype, taps), nk.rows(m1)
    k = rng.standard_normal(kshape).astype(dtype)
    k[0, 0] = -abs(k[0, 0])  # a negative tap times +0 data: a -0 product
    for image, special in itertools.product(((40, 37), (3, 9), (m0, m1), (1, 1)), (False, True)):
        x = rng.standard_normal(image).astype(dtype)
        x[0, 0] = 0.0
        if special:
            x[-1, :] = -0.0
            x[:, 0] = 0.0
            x[image[0] // 2, -1] = np.nan
            x[-1, image[1] // 2] = np.inf
            x[0, -1] = -np.inf
        for lo0, lo1, hi0, hi1 in ((m0 // 2, m1 // 2, (m0 - 1) // 2, (m1 - 1) // 2), (0, 0, 0, 0),
                                   (m0 - 1, m1 - 1, m0 - 1, m1 - 1), (m0 + 3, m1 + 2, 0, 1), (-1, 0, 2, 0)):
            n0, n1 = image[0] + lo0 + hi0 - m0 + 1, image[1] + lo1 + hi1 - m1 + 1
            if n0 <= 0 or n1 <= 0:
                continue
            a, b = np.full((n0, n1), np.nan, dtype), np.full((n0, n1), np.nan, dtype)
            with np.errstate(invalid="ignore"):
                general(x, k, lo0, lo1, a, 0, n0)
                cut = int(rng.integers(0, n0 + 1))  # two bands, cut anywhere
                small(x, k, lo0, lo1, b, 0, cut)
                small(x, k, lo0, lo1, b, cut, n0)
            np.testing.assert_array_equal(a, b)
            number = ~np.isnan(a)  # a NaN's sign is not defined (IEEE 754): where two meet, either
            np.testing.assert_array_equal(np.signbit(a[number]), np.signbit(b[number]))
    assert nk.small(8, 3, dtype) is None and nk.small(3, 8, dtype) is None


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_sums_run_tap_by_tap_in_the_input_precision(rng, dtype):  # S5, S8
    """Every interior output is ``((0 + k0*x0) + k1*x1) + ...`` rounded to the dtype after each
    product and each add (kernel rows, then taps): the unrolled widths, the blocks of 8 taps of
    wider kernels and the taps left after them all sum in this order (no fused multiply-add).
    Oracle: the same order written with NumPy array operations."""
    assert ne.available()[0]
    be = nb.NumpyBackend()
    shapes = ((3, 5), (2, 13), (1, 24), (2, 7), (3, 3), (5, 5), (7, 7), (1, 7), (7, 1), (6, 4))
    for kshape, mode in itertools.product(shapes, ("valid", "same", "full")):
        a = rng.standard_normal((40, 90)).astype(dtype)
        k = rng.standard_normal(kshape).astype(dtype)
        plan = plan_call("correlate", a, k, be.capabilities, mode=mode, method="direct")
        out = ne.correlate(plan, a, k, be.pad, nb._map, 1)
        n0, n1 = out.shape
        # the zero fill: its products (+-0) leave a sum begun at +0.0 bit for bit as it is
        (lo0, hi0), (lo1, hi1) = plan.pads
        padded = np.pad(a, ((lo0, hi0), (lo1, hi1)))
        acc = np.zeros((n0, n1), dtype)
        for r in range(kshape[0]):
            for c in range(kshape[1]):
                acc = acc + k[r, c] * padded[r:r + n0, c:c + n1]
        np.testing.assert_array_equal(out, acc, err_msg=f"{kshape} {mode}")
        assert not np.signbit(out[out == 0]).any()
    x, k = rng.standard_normal(1000).astype(dtype), rng.standard_normal(21).astype(dtype)
    plan = plan_call("correlate", x, k, be.capabilities, mode="valid", method="direct")
    acc = np.zeros(1000 - 20, dtype)
    for c in range(21):
        acc = acc + k[c] * x[c:c + 980]
    np.testing.assert_array_equal(ne.correlate_1d(plan, x, k, be.pad, nb._map, 1), acc)


_WIDTHS_AND_BLOCKS = ([(w, ne.ROW_BLOCK) for w in range(8, 18)]
                      + [(w, ne.WIDE_ROW_BLOCK) for w in (8, 15, 23, 24, 25, 31, 48, 50)])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(("width", "block"), _WIDTHS_AND_BLOCKS)
def test_general_loop_every_tap_count_and_chunk_in_bands(rng, dtype, width, block):  # S1, S8
    """Wider kernels sum blocks of ``block`` taps (8, or 24 on AVX-512 hosts), then the rest in
    one pass, over rows copied with zero columns once per chunk of ``_CHUNK`` output rows: the
    same bits as the tap-by-tap sum written with NumPy, for images taller than a chunk cut into
    bands that start and end anywhere, with pads of every sign (origins) and NaN/Inf data at the
    edges."""
    from convkit.backends import numba_kernels as nk

    band = nk.rows(width, block)
    k = rng.standard_normal((3, width)).astype(dtype)
    x = rng.standard_normal((nk._CHUNK * 2 + 11, 61)).astype(dtype)
    x[5, 0], x[-1, -1], x[70, 30] = np.nan, np.inf, -np.inf
    pads = ((1, width // 2, 1, (width - 1) // 2), (0, 0, 0, 0), (2, width - 1, 2, width - 1),
            (-1, -2, 0, 3), (4, width + 3, 0, 0))
    for lo0, lo1, hi0, hi1 in pads:
        n0, n1 = x.shape[0] + lo0 + hi0 - 2, x.shape[1] + lo1 + hi1 - width + 1
        rows = np.pad(x, ((max(lo0, 0), max(hi0, 0)), (max(lo1, 0), max(hi1, 0))))
        rows = rows[max(-lo0, 0):, max(-lo1, 0):]
        want = np.zeros((n0, n1), dtype)
        with np.errstate(invalid="ignore"):
            for r in range(3):
                for c in range(width):
                    want = want + k[r, c] * rows[r:r + n0, c:c + n1]
            got = np.full((n0, n1), 7.0, dtype)
            cuts = sorted(int(c) for c in rng.integers(0, n0 + 1, 3))
            for a, b in zip([0] + cuts, cuts + [n0]):
                band(x, k, lo0, lo1, got, a, b)
        np.testing.assert_array_equal(got, want, err_msg=f"pads {lo0, lo1, hi0, hi1}")


def test_1d_nan_data_stay_local_and_nonfinite_taps_skip_the_loop(always_1d, rng):  # S9
    a = rng.standard_normal(300)
    a[[0, 150, 299]] = [np.nan, np.inf, np.nan]
    k = rng.standard_normal(9)
    k[4] = 0.0
    out = _run("convolve", a, k, mode="same", method="direct")
    assert always_1d == [1]
    with np.errstate(invalid="ignore"):  # the oracle forms Inf * 0 too
        np.testing.assert_array_equal(np.isnan(out), np.isnan(reference("convolve", a, k, mode="same")))
    k[2] = np.inf
    always_1d.clear()
    out = _run("convolve", a[1:149], k, mode="full", method="direct")
    assert always_1d == []  # an Inf tap meets the zero fill: numpy.convolve's exact path
    with np.errstate(invalid="ignore"):
        expected = reference("convolve", a[1:149], k, mode="full")
    np.testing.assert_array_equal(np.isnan(out), np.isnan(expected))


def test_default_backend_runs_1d_calls_on_the_loop_where_it_pays(rng):
    be = nb.NumpyBackend()

    def label(n, m, dtype, **kw):
        a, w = np.zeros(n, dtype), np.ones(m, dtype)
        return be.method_label(plan_call("convolve", a, w, be.capabilities, method="direct", **kw), w)

    assert label(100_000, 16, "float64") == "direct[numba]"
    assert label(100_000, 2, "float32") == "direct[numba]"
    assert label(100_000, 3, "float64") == "direct"  # numpy.convolve is as fast
    assert label(200, 16, "float64") == "direct"  # microseconds: no Numba start-up for them
    assert label(100_000, 16, "int64") == "direct"
    assert label(100_000, 16, "float64", stride=2) == "direct"
    assert label(100_000, 16, "float64", dilation=2) == "direct"
    why = convkit.explain(np.zeros(100_000), np.ones(16), method="direct", backend=be).method_reason
    assert "numba's fused loop" in why
