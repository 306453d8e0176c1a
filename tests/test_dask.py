"""Dask inputs (issue #6): lazy results equal to the unchunked call for every chunking.

Oracles: the NumPy backend on the same (unchunked) data, exact for integers and within the
S5 bound for floats; SciPy (``scipy.signal`` / ``scipy.ndimage``) as an independent oracle
where SPEC says they agree. Graphs run on the threaded scheduler and on a two-process
``dask.distributed`` LocalCluster.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import scipy.ndimage
import scipy.signal

import convkit
from convkit.testing import assert_conv_close

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")

MODES_1D = ["full", "valid", "same", "causal", ((3, -2),), ((-4, 7),)]
BOUNDARIES = ["fill", "symm", "mirror", "nearest", "wrap"]
# even, uneven with a 1-chunk, chunks smaller than the effective kernel, a single chunk
CHUNKS_1D = [5, (7, 1, 9, 6), 2, 23]


def _compute(*arrays, scheduler="threads"):
    return dask.compute(*arrays, scheduler=scheduler)


def _cases_1d(x, k, mode):
    """(lazy, expected, kwargs) for every boundary/stride/dilation/align/chunking of one mode."""
    cases = []
    for op in ("convolve", "correlate"):
        fn = getattr(convkit, op)
        for boundary in BOUNDARIES:
            for stride, dilation in [(1, 1), (2, 1), (3, 2)]:
                for align in (("scipy", "tf") if mode == "same" else ("scipy",)):
                    kw = dict(boundary=boundary, stride=stride, dilation=dilation, align=align)
                    if boundary == "fill":
                        kw["fillvalue"] = 7
                    if mode == "same":
                        kw["origin"] = 1
                    try:
                        expected = fn(x, k, mode, backend="numpy", **kw)
                    except ValueError:  # an effective kernel longer than the padded input (S3)
                        with pytest.raises(ValueError):
                            fn(da.from_array(x, chunks=5), k, mode, **kw)
                        continue
                    for chunks in CHUNKS_1D:
                        lazy = fn(da.from_array(x, chunks=chunks), k, mode, **kw)
                        assert isinstance(lazy, da.Array)
                        assert lazy.shape == expected.shape and lazy.dtype == expected.dtype
                        cases.append((lazy, expected, (op, kw, chunks)))
    return cases


@pytest.mark.parametrize("mode", MODES_1D, ids=str)
def test_1d_grid_int_exact(mode, rng):  # S1, S2, S5, S7
    x = rng.integers(-50, 50, 23).astype(np.int64)
    k = rng.integers(-5, 6, 4)  # even kernel; dilation 2 -> Me = 7 > the tiny chunks
    cases = _cases_1d(x, k, mode)
    results = _compute(*(c[0] for c in cases))
    for (lazy, expected, info), got in zip(cases, results):
        assert got.dtype == expected.dtype, info
        np.testing.assert_array_equal(got, expected, err_msg=str(info))
        assert 0 not in lazy.chunks[0], info  # no empty output chunks are left behind


def test_2d_float_against_scipy(rng):  # S2, S5: scipy.signal agrees for full/valid/same
    x = rng.standard_normal((19, 17)).astype(np.float32)
    k = rng.standard_normal((4, 5)).astype(np.float32)
    lazy, want = [], []
    for chunks in [((6, 13), (2, 2, 13)), 3, (19, 17)]:
        dx = da.from_array(x, chunks=chunks)
        for op in ("convolve", "correlate"):
            for mode in ("full", "valid", "same"):
                lazy.append(getattr(convkit, op)(dx, k, mode))
                ref = getattr(scipy.signal, op)(x.astype(np.float64), k.astype(np.float64), mode, "direct")
                want.append((ref, op, mode))
    for got, (ref, op, mode) in zip(_compute(*lazy), want):
        assert got.dtype == np.float32
        assert_conv_close(got, ref, x, k, op, mode=mode, check_dtype=False)


@pytest.mark.parametrize("ndmode", ["wrap", "reflect", "mirror", "nearest", "constant"])
def test_ndimage_modes_tiny_chunks(ndmode, rng):  # S7: the periodic trap of dask-image#242
    x = rng.standard_normal((11, 9))
    k = rng.standard_normal((5, 4))  # larger than the 2x2 chunks; even axis
    boundary = {"constant": "fill"}.get(ndmode, ndmode)
    if ndmode == "reflect":
        boundary = "symm"
    for chunks in (2, ((3, 1, 7), (2, 7))):
        got = convkit.correlate(da.from_array(x, chunks=chunks), k, "same", boundary=boundary, origin=(1, -1))
        ref = scipy.ndimage.correlate(x, k, mode=ndmode, origin=(1, -1))
        assert_conv_close(got.compute(scheduler="threads"), ref, x, k, "correlate", mode="same",
                          boundary=boundary, origin=(1, -1))


@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_pads_longer_than_input(boundary, rng):  # S7: long pads repeat the rule, as np.pad
    x = rng.integers(-9, 9, 5)
    k = rng.integers(-3, 4, 9)
    for mode in ("full", "same"):
        expected = convkit.convolve(x, k, mode, boundary=boundary, dilation=2, backend="numpy")
        got = convkit.convolve(da.from_array(x, chunks=2), k, mode, boundary=boundary, dilation=2)
        np.testing.assert_array_equal(got.compute(scheduler="threads"), expected)


def test_nd_axes_batch_origin_align_complex(rng):  # S1, S2, S10, S5
    x = rng.standard_normal((4, 13, 11)) + 1j * rng.standard_normal((4, 13, 11))
    k_batch = rng.standard_normal((4, 3, 4)) + 1j * rng.standard_normal((4, 3, 4))
    k_bcast = rng.standard_normal((3, 4)).astype(np.float32)
    lazy, want = [], []
    for chunks in [((1, 3), (4, 9), (2, 2, 7)), (3, 2, 2)]:
        dx = da.from_array(x, chunks=chunks)
        for op in ("convolve", "correlate"):
            fn = getattr(convkit, op)
            for mode, extra in [("full", {}), ("valid", {}), ("causal", {}),
                                ("same", {"origin": (1, -1)}), ("same", {"align": "tf"})]:
                for k in (k_batch, k_bcast):
                    kw = dict(axes=(2, 1), boundary="wrap", stride=(3, 2), dilation=(2, 1), **extra)
                    lazy.append(fn(dx, k, mode, **kw))
                    ref = fn(x, k.astype(np.complex128), mode, backend="numpy", **kw)
                    want.append((ref, k, op, mode, kw))
    for got, (ref, k, op, mode, kw) in zip(_compute(*lazy), want):
        assert got.dtype == np.complex128
        assert_conv_close(got, ref, x, k, op, mode=mode, check_dtype=False, **kw)


def test_output_chunks(rng):
    x = da.from_array(rng.standard_normal((40, 30)), chunks=((10, 10, 20), (15, 15)))
    k = rng.standard_normal((5, 4))
    assert convkit.correlate(x, k, "same", boundary="wrap").chunks == x.chunks  # 'same' keeps the chunks
    assert convkit.correlate(x, k, "same", stride=2).chunks == ((5, 5, 10), (8, 7))
    for mode in ("full", "valid", "causal"):
        y = convkit.convolve(x, k, mode, stride=(3, 2), dilation=2)
        assert all(c > 0 for cs in y.chunks for c in cs)


def test_kernel_wider_on_a_batch_axis(rng):  # S10: x of batch size 1 broadcasts
    x = rng.standard_normal((1, 20))
    k = rng.standard_normal((3, 4))
    got = convkit.correlate(da.from_array(x, chunks=(1, 6)), k, "same", axes=1)
    ref = convkit.correlate(x, k, "same", axes=1, backend="numpy")
    assert got.shape == (3, 20)
    assert_conv_close(got.compute(scheduler="threads"), ref, x, k, "correlate", mode="same", axes=1)


def test_dtypes(rng):  # S4, S5
    # int8 data with a fill only int16 can hold: padded in the accumulation dtype
    xi = rng.integers(-100, 100, 30).astype(np.int8)
    ki = np.array([1, 2, 3], np.int16)
    # int8 wrap-around must be exact: big values overflow
    xo = rng.integers(-128, 128, 30).astype(np.int8)
    ko = np.array([100, -77, 55], np.int8)
    xb = rng.integers(0, 2, 25).astype(bool)
    kb = np.array([True, False, True])
    calls = [
        ("convolve", xi, ki, dict(mode="same", fillvalue=1000)),
        ("correlate", xo, ko, dict(mode="full")),
        ("convolve", xo, ko, dict(mode="same", dtype=np.int32)),
        ("correlate", xb, kb, dict(mode="same", fillvalue=1)),
    ]
    for op, x, k, kw in calls:
        fn = getattr(convkit, op)
        expected = fn(x, k, backend="numpy", **kw)
        got = fn(da.from_array(x, chunks=4), k, **kw)
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(got.compute(scheduler="threads"), expected)
    # float16 stays float16 (accumulated in float32, like the NumPy backend); fill needs float32
    xh = rng.standard_normal(40).astype(np.float16)
    kh = np.array([0.5, 0.25, 0.125], np.float16)
    got = convkit.convolve(da.from_array(xh, chunks=7), kh, "full", fillvalue=0.1)
    ref = convkit.convolve(xh.astype(np.float64), kh.astype(np.float64), "full", fillvalue=0.1,
                           backend="numpy")
    assert got.dtype == np.float16
    assert_conv_close(got.compute(scheduler="threads"), ref, xh, kh, mode="full", fillvalue=0.1,
                      check_dtype=False)


def test_valid_swap_computes_the_small_input(rng):  # S3
    a = rng.standard_normal((5, 6)) + 1j * rng.standard_normal((5, 6))
    b = rng.standard_normal((9, 8)) + 1j * rng.standard_normal((9, 8))
    for op in ("convolve", "correlate"):
        ref = getattr(scipy.signal, op)(a, b, "valid")
        for in1, in2 in [(da.from_array(a, chunks=2), b), (a, da.from_array(b, chunks=3)),
                         (da.from_array(a, chunks=2), da.from_array(b, chunks=3))]:
            got = getattr(convkit, op)(in1, in2, "valid")
            assert isinstance(got, da.Array)
            assert_conv_close(got.compute(scheduler="threads"), ref, a, b, op, mode="valid")


def test_large_kernels_are_refused(monkeypatch, rng):
    from convkit import _dask

    monkeypatch.setattr(_dask, "MAX_KERNEL_BYTES", 100)
    x = da.from_array(rng.standard_normal(200), chunks=50)
    small = da.from_array(rng.standard_normal(12), chunks=5)  # 96 bytes: computed and used
    np.testing.assert_allclose(convkit.convolve(x, small).compute(),
                               np.convolve(x.compute(), small.compute()))
    with pytest.raises(convkit.ConvkitValueError, match=r"^in2 is a dask array of 104 bytes"):
        convkit.convolve(x, da.from_array(rng.standard_normal(13), chunks=5))
    # 'valid' swap makes the smaller in1 the kernel
    with pytest.raises(ValueError, match=r"^in1 is a dask array .*swaps the inputs"):
        convkit.correlate(da.from_array(rng.standard_normal(20), chunks=5), rng.standard_normal(30), "valid")


def test_lazy_and_errors_raised_in_the_caller(rng):  # S13: same errors, before any compute
    calls = []

    def make():
        calls.append(1)
        return np.arange(10.0)

    x = da.from_delayed(dask.delayed(make)(), shape=(10,), dtype=np.float64)
    out = convkit.convolve(x, [1.0, 2.0], "same", boundary="wrap")
    assert calls == [] and isinstance(out, da.Array)
    np.testing.assert_allclose(out.compute(scheduler="threads"),
                               convkit.convolve(np.arange(10.0), [1.0, 2.0], "same", boundary="wrap"))
    with pytest.raises(convkit.ConvkitValueError, match="^mode='nope' is not accepted"):
        convkit.convolve(x, [1.0], "nope")
    with pytest.raises(convkit.ConvkitValueError, match="^stride=0 is not accepted"):
        convkit.convolve(x, [1.0], stride=0)
    unknown = x[x > 3]
    with pytest.raises(convkit.ConvkitValueError, match="^in1 is a dask array with unknown chunk sizes"):
        convkit.convolve(unknown, [1.0])
    assert calls == [1]  # only the explicit compute ran the input


def test_scalars_and_host_in1(rng):  # S3 (0-d), S11
    got = convkit.correlate(da.from_array(np.array(2 + 1j)), np.array(3j))
    assert isinstance(got, da.Array)
    assert got.compute() == (2 + 1j) * np.conj(3j)
    x = rng.standard_normal(30)
    got = convkit.convolve(x, da.from_array(np.array([1.0, -2.0, 0.5]), chunks=2), "same")
    assert isinstance(got, da.Array)
    np.testing.assert_allclose(got.compute(), scipy.signal.convolve(x, [1.0, -2.0, 0.5], "same"),
                               rtol=1e-13, atol=1e-13)


class _Spy:
    """A registered backend that counts the chunks it computes (NumPy underneath)."""

    name = "dask-spy"

    def __init__(self):
        from convkit.backends.numpy import NumpyBackend

        self._np = NumpyBackend()
        self.capabilities = self._np.capabilities
        self.device = False
        self.calls = 0

    def available(self):
        return True, ""

    def owns(self, x):
        return False

    def to_host(self, x):
        return np.asarray(x)

    def execute(self, plan, in1, in2):
        self.calls += 1
        return self._np.execute(plan, in1, in2)


def test_backend_is_resolved_in_the_caller(rng):  # S12: contexts do not reach workers
    spy = _Spy()
    convkit.register_backend(spy.name, spy)
    x = rng.standard_normal(40)
    dx = da.from_array(x, chunks=10)
    with convkit.use_backend(spy.name):
        lazy = convkit.convolve(dx, [1.0, 2.0, 3.0], "same")
    assert spy.calls == 0
    np.testing.assert_allclose(lazy.compute(scheduler="threads"), np.convolve(x, [1.0, 2.0, 3.0], "same"))
    assert spy.calls == dx.numblocks[0]  # every chunk ran on the backend named when the graph was built
    built_outside = convkit.convolve(dx, [1.0, 2.0, 3.0], "same")
    with convkit.use_backend(spy.name):
        built_outside.compute(scheduler="threads")
    assert spy.calls == dx.numblocks[0]  # a context at compute time changes nothing


@pytest.mark.parametrize("name", [b.name for b in convkit.list_backends() if b.available])
def test_host_chunks_on_every_available_backend(name, rng):  # S11, S12: NumPy chunks stay NumPy
    x = rng.standard_normal((26, 19)).astype(np.float32)
    k = rng.standard_normal((4, 3)).astype(np.float32)
    kw = dict(boundary="mirror", stride=(2, 1), dilation=(1, 2))
    got = convkit.convolve(da.from_array(x, chunks=(5, 7)), k, "same", backend=name, **kw)
    assert isinstance(got._meta, np.ndarray)
    out = got.compute(scheduler="threads")
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    ref = convkit.convolve(x.astype(np.float64), k.astype(np.float64), "same", backend="numpy", **kw)
    assert_conv_close(out, ref, x, k, mode="same", check_dtype=False, **kw)


@pytest.mark.gpu
def test_cupy_chunks_stay_on_the_device(request, rng):  # S11: CuPy chunks run on the CuPy backend
    ok = {b.name: b for b in convkit.list_backends()}.get("cupy")
    if ok is None or not ok.available:
        reason = ok.reason if ok is not None else "not registered"
        expr = request.config.getoption("-m") or ""
        if "gpu" in expr and "not gpu" not in expr:
            pytest.fail(f"-m gpu asked for a GPU but the cupy backend is unavailable: {reason}")
        pytest.skip(f"backend 'cupy' unavailable: {reason}")
    import cupy

    x = rng.standard_normal((300, 200)).astype(np.float32)
    k = rng.standard_normal((7, 6)).astype(np.float32)
    dx = da.from_array(x, chunks=(64, 50)).map_blocks(cupy.asarray)
    for kern in (k, cupy.asarray(k)):
        got = convkit.correlate(dx, kern, "same", boundary="wrap", stride=(2, 3))
        assert isinstance(got._meta, cupy.ndarray)
        out = got.compute(scheduler="threads")
        assert isinstance(out, cupy.ndarray)
        ref = convkit.correlate(x.astype(np.float64), k.astype(np.float64), "same", boundary="wrap",
                                stride=(2, 3), backend="numpy")
        assert_conv_close(out.get(), ref, x, k, "correlate", mode="same", boundary="wrap", stride=(2, 3),
                          check_dtype=False)


@pytest.fixture(scope="module")
def cluster_client():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None, worker_dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            yield client


def test_distributed_local_cluster(cluster_client, rng):  # the graph pickles and runs in processes
    x = rng.integers(-50, 50, (30, 21)).astype(np.int32)
    k = rng.integers(-4, 5, (4, 3)).astype(np.int32)
    xf = rng.standard_normal((30, 21)).astype(np.float32)
    lazy, want = [], []
    for chunks in [(7, 5), ((10, 1, 19), (2, 19))]:  # (tiny chunks: the threaded tests)
        for mode, kw in [("full", dict(boundary="wrap")), ("same", dict(boundary="symm", stride=2, origin=1)),
                         ("same", dict(align="tf", stride=(2, 3), dilation=(1, 2), boundary="mirror")),
                         ("causal", dict(boundary="nearest", fillvalue=3)), ("valid", dict(dilation=2))]:
            lazy.append(convkit.correlate(da.from_array(x, chunks=chunks), k, mode, **kw))
            want.append(convkit.correlate(x, k, mode, backend="numpy", **kw))
            lazy.append(convkit.convolve(da.from_array(xf, chunks=chunks), k, mode, **kw))
            want.append((convkit.convolve(xf.astype(np.float64), k, mode, backend="numpy", **kw), mode, kw))
    results = cluster_client.gather(cluster_client.compute(lazy))
    for got, ref in zip(results, want):
        if isinstance(ref, tuple):
            ref, mode, kw = ref
            assert got.dtype == np.float64  # float32 (*) int32 -> float64 (S4)
            assert_conv_close(got, ref, xf, k, mode=mode, check_dtype=False, **kw)
        else:
            assert got.dtype == ref.dtype
            np.testing.assert_array_equal(got, ref)


def test_without_dask_nothing_changes():
    code = textwrap.dedent("""
        import sys
        import convkit
        assert not any(m == "dask" or m.startswith("dask.") for m in sys.modules), "import imported dask"
        assert convkit.convolve([1, 2, 3], [1, 1]).tolist() == [1, 3, 5, 3]
        assert not any(m == "dask" or m.startswith("dask.") for m in sys.modules), "a call imported dask"
        sys.modules["dask"] = None  # dask not installed
        for m in [m for m in sys.modules if m.startswith("dask.")]:
            sys.modules[m] = None
        import numpy as np
        want = np.correlate(np.pad([1, 2, 3], (1, 0), mode="wrap"), [1, 2], "valid")  # S2 'same' pads (1, 0)
        assert convkit.correlate([1, 2, 3], [1, 2], "same", boundary="wrap").tolist() == want.tolist()
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
