"""The benchmark suite's peers and how it ranks them: OpenCV and torch compute exactly what
``scipy.signal.convolve`` does (or say n/a), a wrong peer is reported and never timed, "vs
fastest" is the fastest peer of any library, and each convkit row names the method it ran.
No timing is asserted."""

from __future__ import annotations

import os
import sys
import types

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks import report  # noqa: E402
from benchmarks.contenders import Contender, contender, contenders  # noqa: E402
from benchmarks.runner import Result, convkit_method, run_workload  # noqa: E402
from benchmarks.workloads import SUITES, Workload, suite  # noqa: E402

MODES = ("same", "full", "valid")


def _reference(w: Workload, x, k):
    import scipy.signal

    return scipy.signal.convolve(x.astype(np.float64), w.k_full(k).astype(np.float64), w.mode)


def _assert_exact(c: Contender, w: Workload, dtype):
    """The peer's result has SciPy's shape and the input's dtype, and matches to rounding."""
    x, k = w.make(dtype)
    fn = c.prepare(w, x, k)
    assert fn is not None, f"{c.name} said n/a on {w.describe()}"
    out = np.asarray(c.to_numpy(fn()))
    ref = _reference(w, x, k)
    assert out.shape == ref.shape and out.dtype == np.dtype(dtype)
    scale = np.abs(x).max() * np.abs(k).sum()
    assert np.max(np.abs(out - ref)) <= 1e3 * np.finfo(dtype).eps * scale


# ----------------------------------------------------------------------------- OpenCV


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape, kshape, axes", [((40, 31), (5, 3), None), ((3, 20, 21), (5, 5), (1, 2))])
def test_cv2_filter2d_matches_scipy(shape, kshape, axes, mode, dtype):
    pytest.importorskip("cv2")
    w = Workload("t", "2-D" if axes is None else "batched", shape, kshape, mode, axes=axes)
    _assert_exact(contender("cv2.filter2D", "opencv"), w, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cv2_sep_filter2d_on_the_gaussian_workloads(dtype):
    pytest.importorskip("cv2")
    sep = contender("cv2.sepFilter2D", "opencv")
    _assert_exact(sep, Workload("g", "2-D", (40, 30), (9, 9), kernel="gaussian"), dtype)
    x, k = Workload("r", "2-D", (40, 30), (9, 9)).make(dtype)
    assert sep.prepare(Workload("r", "2-D", (40, 30), (9, 9)), x, k) is None  # not of rank 1


@pytest.mark.parametrize("w", [
    Workload("even", "2-D", (40, 30), (4, 3)),  # OpenCV centres odd kernels only
    Workload("1d", "1-D", (100,), (5,)),
    Workload("3d", "3-D", (8, 9, 10), (3, 3, 3)),
    Workload("axes", "batched", (20, 21, 3), (5, 5), axes=(0, 1)),  # not the last two axes
    Workload("long", "2-D", (10, 10), (13, 3), "valid"),
])
def test_cv2_says_na_where_it_computes_something_else(w):
    pytest.importorskip("cv2")
    x, k = w.make(np.float64)
    assert contender("cv2.filter2D", "opencv").prepare(w, x, k) is None


# ----------------------------------------------------------------------------- torch


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape, kshape, axes", [
    ((100,), (16,), None), ((100,), (7,), None), ((30, 31), (4, 5), None), ((30, 31), (5, 3), None),
    ((10, 11, 12), (3, 4, 5), None), ((4, 20, 21), (5, 4), (1, 2)),
])
def test_torch_conv_matches_scipy(shape, kshape, axes, mode, dtype):
    """Odd kernels (``padding="same"``) and even ones (explicit pads with SciPy's centring)."""
    pytest.importorskip("torch")
    w = Workload("t", "x", shape, kshape, mode, axes=axes)
    _assert_exact(contender("torch.nn.functional.conv", "torch"), w, dtype)


def test_torch_says_na_on_leading_axes():
    pytest.importorskip("torch")
    w = Workload("t", "batched", (20, 21, 3), (5, 5), axes=(0, 1))
    x, k = w.make(np.float32)
    assert contender("torch.nn.functional.conv", "torch").prepare(w, x, k) is None


def test_default_peers_follow_what_is_installed():
    import importlib.util

    names = {c.name for c in contenders(["numpy"], None)}
    assert ("cv2.filter2D" in names) == (importlib.util.find_spec("cv2") is not None)
    assert ("torch.nn.functional.conv" in names) == (importlib.util.find_spec("torch") is not None)
    assert {c.name for c in contenders(["numpy"], ["scipy"])} >= {"scipy.signal.convolve"}
    assert not {c.family for c in contenders(["numpy"], ["scipy"])} & {"opencv", "torch"}


# ----------------------------------------------------------------------------- correctness before timing


def _wrong_peer(scale: float = 1.0 + 1e-3) -> Contender:
    """A peer that computes almost the right thing: SciPy's result, slightly scaled."""
    import scipy.signal

    def prepare(w, x, k):
        return lambda: (scipy.signal.convolve(x, w.k_full(k), w.mode) * scale).astype(x.dtype)

    return Contender("wrong.peer", "scipy", True, prepare)


@pytest.mark.parametrize("schedule", ["round-robin", "sequential"])
def test_a_wrong_peer_is_reported_and_not_timed(schedule):
    w = Workload("t", "2-D", (40, 30), (5, 5))
    cons = [contender("convkit[numpy]", "convkit"), _wrong_peer(),
            contender("scipy.signal.convolve", "scipy")]
    res = {r.contender: r for r in run_workload(w, np.float64, cons, min_time=0.001, max_runs=2,
                                                schedule=schedule, gap=0.001)}
    bad = res["wrong.peer"]
    assert bad.status == "wrong" and "outside the S5 bound" in bad.detail
    assert bad.seconds is None and bad.times == []
    assert res["convkit[numpy]"].status == res["scipy.signal.convolve"].status == "ok"
    assert res["convkit[numpy]"].seconds > 0
    # a wrong peer never counts as the fastest one
    s = report.summarize(list(res.values()))
    assert s["rows"][0]["fastest_peer"] == "scipy.signal.convolve"


@pytest.mark.parametrize("module, name, family", [("cv2", "cv2.filter2D", "opencv"),
                                                   ("torch", "torch.nn.functional.conv", "torch")])
def test_new_peers_pass_the_oracle_check(module, name, family):
    """The same oracle check as every other contender: timed only when correct."""
    pytest.importorskip(module)
    w = Workload("t", "2-D", (64, 48), (7, 7))
    res = run_workload(w, np.float32, [contender(name, family)], min_time=0.001, max_runs=2, memory=False)
    assert res[0].status == "ok" and res[0].seconds > 0, res[0].detail


# ----------------------------------------------------------------------------- "vs fastest": every peer


def _row(**times):
    """One synthetic row: convkit[numpy] 1 ms on the CPU, peers as given: name -> (family, s, device)."""
    common = dict(workload="w", group="2-D", describe="w same", dtype="float32", input_bytes=1000)
    out = [Result(contender="convkit[numpy]", family="convkit", seconds=1e-3, device="cpu", method="direct",
                  **common)]
    for name, (family, seconds, device) in times.items():
        out.append(Result(contender=name, family=family, seconds=seconds, device=device, **common))
    return out


def test_vs_fastest_is_the_fastest_peer_of_any_library():
    res = _row(**{"scipy.signal.convolve": ("scipy", 4e-3, "cpu"),
                  "scipy.ndimage.convolve": ("scipy", 2e-3, "cpu"),
                  "cv2.filter2D": ("opencv", 0.5e-3, "cpu"),
                  "torch.nn.functional.conv": ("torch", 8e-3, "cpu"),
                  "cupyx.scipy.signal.convolve": ("cupy", 0.01e-3, "NVIDIA H200"),  # not a CPU peer
                  "scipy.signal.convolve(direct)": ("scipy", 0.1e-3, "cpu")})  # the overhead reference only
    s = report.summarize(res)
    e = s["rows"][0]
    assert e["fastest_peer"] == "cv2.filter2D" and e["ratio_vs_fastest_peer"] == pytest.approx(0.5)
    assert e["fastest_scipy"] == "scipy.ndimage.convolve"
    assert e["ratio_vs_fastest_scipy"] == pytest.approx(2.0)
    assert e["ratio_vs_scipy_auto"] == pytest.approx(4.0) and s["geomean_vs_scipy_auto"] == pytest.approx(4.0)
    v = {x["target"]: x for x in s["verdicts"]}
    assert v["fastest_peer"]["verdict"] == "MISSED" and v["fastest_peer"]["detail"] == ["w float32: 0.50x "
                                                                                         "(cv2.filter2D)"]
    assert v["fastest_scipy"]["verdict"] == "MET" and v["geomean"]["verdict"] == "MET"
    head, rows = report._table_rows(s)
    cells = dict(zip(head, rows[0]))
    assert cells["fastest peer"] == "500.0 us (cv2.filter2D)" and cells["vs fastest"] == "0.50x"
    assert cells["vs fastest SciPy"] == "2.00x (ndimage.convolve)" and cells["vs scipy auto"] == "4.00x"


def test_fastest_peer_met_when_convkit_beats_all():
    res = _row(**{"scipy.signal.convolve": ("scipy", 4e-3, "cpu"), "cv2.filter2D": ("opencv", 1.5e-3, "cpu")})
    v = {x["target"]: x["verdict"] for x in report.summarize(res)["verdicts"]}
    assert v["fastest_peer"] == "MET"


def test_gpu_backend_is_measured_against_gpu_peers():
    common = dict(workload="w", group="2-D", describe="w same", dtype="float32", input_bytes=1000)
    res = [Result(contender="convkit[cupy]", family="convkit", seconds=1e-4, device="NVIDIA H200", **common),
           Result(contender="cv2.filter2D", family="opencv", seconds=1e-5, device="cpu", **common),
           Result(contender="cupyx.scipy.signal.convolve", family="cupy", seconds=2e-4, device="NVIDIA H200",
                  **common)]
    e = report.summarize(res, "cupy")["rows"][0]
    assert e["fastest_peer"] == "cupyx.scipy.signal.convolve"
    assert e["ratio_vs_fastest_peer"] == pytest.approx(2)


# ----------------------------------------------------------------------------- method / engine per row


def test_convkit_method_prefers_the_backends_own_label(monkeypatch):
    import convkit

    real = convkit.get_backend("numpy")
    seen = []

    def label(plan, kernel):
        seen.append((plan.method, kernel.shape))
        return "direct[test-engine]"

    w = Workload("t", "2-D", (64, 64), (3, 3))
    x, k = w.make(np.float32)
    labelled = types.SimpleNamespace(capabilities=real.capabilities, method_label=label)
    monkeypatch.setattr(convkit, "get_backend", lambda name: labelled)
    assert convkit_method(w, x, k) == "direct[test-engine]" and seen and seen[0][1] == (3, 3)
    # a backend without method_label: the plan's method, or separable where the rank-1 test passes
    monkeypatch.setattr(convkit, "get_backend",
                        lambda name: types.SimpleNamespace(capabilities=real.capabilities))
    assert convkit_method(w, x, k) in ("direct", "fft", "oa")
    g = Workload("g", "2-D", (256, 256), (15, 15), kernel="gaussian")
    xg, kg = g.make(np.float64)
    assert convkit_method(g, xg, kg) in ("separable", "direct", "fft", "oa")


# ----------------------------------------------------------------------------- suites


def test_mid_suite_rows_and_the_standard_run_includes_them():
    mid = suite("mid")
    names = [w.name for w in mid]
    assert names == ["2d-500x3x3", "2d-512x5x5", "2d-500x7x7", "2d-256x63x63", "1d-1e5x16", "1d-1e5x256",
                     "1d-1e5x65-same", "3d-64x5^3", "batch-16x128x5x5"]
    assert all(w.dtypes is None for w in mid)  # float32 and float64 each
    assert {(w.x_shape, w.k_shape, w.mode) for w in mid} >= {
        ((10**5,), (16,), "full"), ((10**5,), (256,), "full"), ((10**5,), (65,), "same"),
        ((64, 64, 64), (5, 5, 5), "same"), ((16, 128, 128), (5, 5), "same")}
    std = suite("standard")
    assert [w.name for w in std[-len(mid):]] == names
    assert len({w.name for w in std}) == len(std)
    by = {w.name: w for w in std}
    assert by["2d-2000x7x7"].x_shape == (2000, 2000) and by["2d-2000x7x7"].dtypes is None
    big = by["2d-4096x3x3"]
    assert big.x_shape == (4096, 4096) and big.runs_in(np.float32) and not big.runs_in(np.float64)
    assert set(SUITES) == {"smoke", "quick", "mid", "standard", "dilated"}
    assert len(suite("smoke")) <= 8 and max(w.macs for w in suite("smoke")) < 1e6


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name, family, module, w", [
    ("cv2.filter2D", "opencv", "cv2", Workload("d", "2-D", (60, 50), (3, 5), dilation=4)),
    ("cv2.filter2D", "opencv", "cv2", Workload("d", "2-D", (60, 50), (3, 3), "full", dilation=7)),
    ("torch.nn.functional.conv", "torch", "torch", Workload("d", "2-D", (60, 50), (3, 5), dilation=4)),
    ("torch.nn.functional.conv", "torch", "torch", Workload("d", "1-D", (500,), (4,), "full", dilation=9)),
    # an even reach (28): explicit pads with SciPy's centring
    ("torch.nn.functional.conv", "torch", "torch", Workload("d", "1-D", (500,), (4,), dilation=9)),
    ("torch.nn.functional.conv", "torch", "torch", Workload("d", "1-D", (500,), (3,), "valid", dilation=30)),
    ("scipy.signal.fftconvolve", "scipy", "scipy", Workload("d", "1-D", (500,), (4,), dilation=9)),
    ("scipy.ndimage.convolve", "scipy", "scipy", Workload("d", "2-D", (60, 50), (3, 3), dilation=6)),
])
def test_dilated_workloads_peers_compute_the_dilated_correlation(name, family, module, w, dtype):
    """torch with its own ``dilation``, the others with the zero-stuffed kernel: all equal to
    SciPy's direct convolution with the zero-stuffed kernel (the oracle's)."""
    pytest.importorskip(module)
    _assert_exact(contender(name, family), w, dtype)


def test_dilated_suite_and_convkit_takes_the_dilation():
    """The ``dilated`` rows: convkit gets ``dilation=``, and is checked against the zero-stuffed
    kernel's oracle like every peer (run_workload's check), on the NumPy backend's phases."""
    rows = suite("dilated")
    assert {w.dilation for w in rows} == {32, 4, 8, 16, 64} and all("dilation=" in w.describe() for w in rows)
    w = Workload("d", "2-D", (300, 280), (3, 3), dilation=16)
    x, k = w.make(np.float32)
    assert w.k_full(k).shape == (33, 33) and np.count_nonzero(w.k_full(k)) == np.count_nonzero(k)
    res = run_workload(w, np.float32, [contender("convkit[numpy]", "convkit")], min_time=0.001, max_runs=2,
                       memory=False)
    assert res[0].status == "ok", res[0].detail
    assert convkit_method(w, x, k).startswith("direct")


def test_torch_float64_im2col_guard():
    """torch's float64 CPU convolution unfolds the input (im2col): a call that would take more than
    the limit is refused with the reason (reported as an error, never run); float32 is timed."""
    pytest.importorskip("torch")
    from benchmarks import contenders as mod

    w = Workload("t", "2-D", (64, 64), (7, 7))
    x, k = w.make(np.float64)
    peer = contender("torch.nn.functional.conv", "torch")
    assert peer.prepare(w, x, k) is not None  # 64² x 49 x 8 bytes: well under the limit
    limit = mod.TORCH_IM2COL_LIMIT
    try:
        mod.TORCH_IM2COL_LIMIT = 64 * 64 * 49 * 8 - 1
        with pytest.raises(RuntimeError, match="not run: .*im2col"):
            peer.prepare(w, x, k)
        x32, k32 = w.make(np.float32)
        assert peer.prepare(w, x32, k32) is not None
    finally:
        mod.TORCH_IM2COL_LIMIT = limit
