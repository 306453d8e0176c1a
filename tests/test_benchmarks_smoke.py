"""The benchmark suite runs end to end (``python -m benchmarks --suite smoke``) and writes
well-formed JSON, Markdown and PNG. No timing is asserted: speed is checked by the suite."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    cmd = [sys.executable, "-m", "benchmarks", "--suite", "smoke", "--dtype", "float64,float32",
           "--out", str(out), "--min-time", "0.005", "--max-runs", "3"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


def test_terminal_table_and_progress(smoke_run):
    _, proc = smoke_run
    assert "convkit[numpy]" in proc.stdout
    assert "vs fastest" in proc.stdout and "geometric mean" in proc.stdout
    assert "tiny-call overhead" in proc.stdout
    assert "benchmarks" in proc.stderr  # the tqdm progress bar
    # one verdict per target of the NumPy backend, each MET, MISSED or N/A
    lines = proc.stdout.splitlines()
    start = lines.index("targets of convkit[numpy]:")
    block = lines[start + 1:lines.index("", start)]
    verdicts = [ln.split()[0] for ln in block if not ln.startswith("    ")]
    assert len(verdicts) == 6 and set(verdicts) <= {"MET", "MISSED", "N/A"}
    assert "fastest peer" in proc.stdout and "vs fastest SciPy" in proc.stdout


def test_json_is_complete(smoke_run):
    out, _ = smoke_run
    doc = json.loads((out / "results.json").read_text())
    assert doc["options"]["suite"] == "smoke"
    assert doc["machine"]["cores"] >= 1 and doc["machine"]["cpu"]
    assert doc["versions"]["numpy"] and doc["versions"]["scipy"]
    assert doc["devices"]["convkit[numpy]"] == "cpu"
    results = doc["results"]
    names = {r["contender"] for r in results}
    assert {"convkit[numpy]", "scipy.signal.convolve", "scipy.signal.fftconvolve",
            "scipy.signal.oaconvolve", "scipy.ndimage.convolve"} <= names
    # OpenCV and torch are default peers wherever they are installed
    import importlib.util

    for module, peer in (("cv2", "cv2.filter2D"), ("torch", "torch.nn.functional.conv")):
        assert (peer in names) == (importlib.util.find_spec(module) is not None)
    ok = [r for r in results if r["status"] == "ok"]
    assert ok and all(r["seconds"] > 0 and r["runs"] >= 1 for r in ok)
    # every contender that ran was checked against the oracle: nothing is wrong on the smoke suite
    bad = [r for r in results if r["status"] in ("wrong", "error")
           and r["family"] in ("convkit", "scipy", "opencv", "torch")]
    assert not bad
    ck = [r for r in results if r["contender"] == "convkit[numpy]"]
    assert {r["dtype"] for r in ck} == {"float64", "float32"}
    assert all(r["peak_extra_bytes"] is not None for r in ck)
    assert all(r["method"] for r in ck)  # the method (and engine) of every convkit row
    assert doc["options"]["isolation"] == "none"  # the smoke suite's default
    summary = doc["summary"]
    assert summary["geomean_vs_scipy_auto"] > 0
    assert set(summary["targets"]) >= {"faster_than_fastest_peer_everywhere",
                                       "faster_than_fastest_scipy_everywhere",
                                       "geomean_vs_scipy_auto_at_least_2", "overhead_within_20us",
                                       "fft_2d_peak_within_4x"}
    assert len(summary["rows"]) == len(ck)
    assert [v["target"] for v in summary["verdicts"]] == ["correct", "fastest_peer", "fastest_scipy",
                                                         "geomean", "overhead", "memory"]
    for e in summary["rows"]:  # the fastest peer is the fastest of all peers timed on that row
        peers = {n: t for n, t in e["others"].items() if t and n != "scipy.signal.convolve(direct)"}
        assert e["fastest_peer_s"] == min(peers.values())
        assert e["ratio_vs_fastest_peer"] <= e["ratio_vs_fastest_scipy"]
    assert {v["target"]: v["verdict"] for v in summary["verdicts"]}["correct"] == "MET"
    assert set(doc["summaries"]) == {"numpy"} and doc["options"]["check"] is False


def test_markdown_table(smoke_run):
    out, _ = smoke_run
    md = (out / "results.md").read_text()
    lines = [ln for ln in md.splitlines() if ln.startswith("|")]
    assert len(lines) >= 2 + 6 * 2  # header, rule, 6 workloads x 2 dtypes
    width = lines[0].count("|")
    assert all(ln.count("|") == width for ln in lines)
    assert "geometric mean" in md
    assert "convkit[numpy], smoke suite. Machine: " in md
    assert sum(ln.startswith(("- **MET**", "- **MISSED**", "- **N/A**")) for ln in md.splitlines()) == 6


def test_png_plot(smoke_run):
    out, _ = smoke_run
    data = (out / "speedup.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    img = matplotlib.image.imread(str(out / "speedup.png"))
    assert img.shape[0] > 100 and img.shape[1] > 100


def test_the_oracle_check_rejects_a_wrong_result():
    import numpy as np

    sys.path.insert(0, ROOT)
    from benchmarks.runner import _check, oracle
    from benchmarks.workloads import Workload

    w = Workload("t", "2-D", (40, 30), (5, 5))
    x, k = w.make(np.float32)
    ref, tol = oracle(w, x, k)
    import scipy.signal

    good = scipy.signal.convolve(x, k, "same")
    assert _check(good, ref, tol, np.float32) == ""
    bad = good.copy()
    bad[3, 4] += 1e-3 * abs(good).max()
    assert "outside the S5 bound" in _check(bad, ref, tol, np.float32)
    assert "shape" in _check(good[1:], ref, tol, np.float32)
    assert "dtype" in _check(good.astype(np.float64), ref, tol, np.float32)


@pytest.mark.parametrize("family, runs", [("convkit", 3), ("jax", 3), ("scipy", 1)])
def test_a_compiling_first_call_is_not_what_gets_timed(monkeypatch, family, runs):
    """A first call that compiles for seconds (Numba without its disk cache) plans the runs on a
    second, warm call for the families that compile; others are not called again."""
    import numpy as np

    sys.path.insert(0, ROOT)
    from benchmarks import runner
    from benchmarks.contenders import Contender
    from benchmarks.workloads import Workload

    w = Workload("t", "2-D", (40, 30), (5, 5))
    x, k = w.make(np.float64)
    ref, tol = runner.oracle(w, x, k)
    import scipy.signal

    good = scipy.signal.convolve(x, k, "same")
    clock = iter([0.0, 5.0, 10.0, 10.001] + [20.0] * 10)  # first call 5 s, the warm one 1 ms
    monkeypatch.setattr(runner.time, "perf_counter", lambda: next(clock))
    calls = []
    c = Contender("fake", family, True, lambda *a: (lambda: calls.append(1) or good))
    r = runner.new_result(w, np.float64, c, x, k)
    planned = runner.prepare_checked(c, w, np.float64, x, k, ref, tol, r, min_time=0.01, max_runs=3,
                                     method_of=lambda *a: "direct")
    assert planned is not None and planned[1] == runs and len(calls) == (2 if runs == 3 else 1)


def test_jax_float64_convolve_peer_skipped_on_page_aligned_inputs():
    """The jax.scipy.signal.convolve peer can segfault on float64 inputs that fill whole pages
    (XLA:CPU reads past its input, README): those are reported as not run, others are timed."""
    import numpy as np

    pytest.importorskip("jax")
    import jax

    if jax.devices()[0].platform != "cpu":
        pytest.skip("the XLA:CPU crash guard applies on CPU only")
    sys.path.insert(0, ROOT)
    from benchmarks.contenders import _jax_contenders
    from benchmarks.workloads import Workload

    peer = next(c for c in _jax_contenders() if c.name == "jax.scipy.signal.convolve")
    aligned = Workload("a", "2-D", (64, 64), (3, 3))  # 64*64*8 bytes = 8 pages
    x, k = aligned.make(np.float64)
    from convkit.backends.jax import _enable_x64

    with _enable_x64(), pytest.raises(RuntimeError, match="page-aligned"):
        peer.prepare(aligned, x, k)
    x32, k32 = aligned.make(np.float32)
    assert peer.prepare(aligned, x32, k32) is not None
    odd = Workload("b", "2-D", (60, 64), (3, 3))
    x, k = odd.make(np.float64)
    with _enable_x64():
        assert peer.prepare(odd, x, k) is not None


# ----------------------------------------------------------------------------- verdicts and the figure


def _report():
    sys.path.insert(0, ROOT)
    from benchmarks import report
    from benchmarks.runner import Result

    return report, Result


def _results(Result, ratios: dict[tuple[str, str], float], convkit_status=None):
    """Synthetic results: convkit[numpy] 1 ms on each (workload, dtype); SciPy peers ratio x slower."""
    out = []
    for (wl, dt), ratio in ratios.items():
        group = "overhead" if wl.startswith("tiny") else "2-D"
        common = dict(workload=wl, group=group, describe=f"{wl} same", dtype=dt, input_bytes=1000)
        status = (convkit_status or {}).get((wl, dt), "ok")
        out.append(Result(contender="convkit[numpy]", family="convkit", method="fft", status=status,
                          seconds=1e-3 if status == "ok" else None, peak_extra_bytes=1500, **common))
        for name in ("scipy.signal.convolve", "scipy.signal.fftconvolve"):
            out.append(Result(contender=name, family="scipy", seconds=ratio * 1e-3, **common))
        if group == "overhead":
            out.append(Result(contender="scipy.signal.convolve(direct)", family="scipy",
                              seconds=1e-3 - 5e-6, **common))
    return out


def test_verdicts_met_missed_and_na():
    report, Result = _report()
    ratios = {("a", "float32"): 3.0, ("a", "float64"): 0.5, ("b", "float64"): 4.0, ("tiny", "float64"): 2.0}
    s = report.summarize(_results(Result, ratios))
    v = {x["target"]: x for x in s["verdicts"]}
    assert v["correct"]["verdict"] == "MET" and v["correct"]["measured"] == "4 of 4 rows"
    assert v["fastest_scipy"]["verdict"] == "MISSED"
    assert v["fastest_scipy"]["detail"] == ["a float64: 0.50x (convolve)"]
    assert v["fastest_peer"]["verdict"] == "MISSED"  # the SciPy peers are the only ones here
    assert v["overhead"]["verdict"] == "MET" and v["overhead"]["measured"] == "+5.0 us"
    assert v["memory"]["verdict"] == "MET" and v["memory"]["measured"] == "max 1.50x"
    assert report.missed(s) == [v["fastest_peer"]["description"], v["fastest_scipy"]["description"],
                                v["geomean"]["description"]]
    # geometric mean of 3, 0.5, 4 (the overhead row excluded): 1.82x < 2x
    assert v["geomean"]["verdict"] == "MISSED" and v["geomean"]["measured"] == "1.82x"
    # a wrong convkit result is a MISSED correctness target; nothing measured is N/A
    s = report.summarize(_results(Result, {("a", "float32"): 3.0}, {("a", "float32"): "wrong"}))
    v = {x["target"]: x["verdict"] for x in s["verdicts"]}
    assert v == {"correct": "MISSED", "fastest_peer": "N/A", "fastest_scipy": "N/A", "geomean": "N/A",
                 "overhead": "N/A", "memory": "N/A"}
    assert s["rows"] == []


def test_verdicts_of_another_backend():
    report, Result = _report()
    res = [Result("w", "2-D", "w same", "float32", "convkit[jax]", "convkit", seconds=1e-3),
           Result("w", "2-D", "w same", "float32", "jax.scipy.signal.convolve", "jax", seconds=0.5e-3)]
    v = report.summarize(res, "jax")["verdicts"]
    assert [(x["target"], x["verdict"]) for x in v] == [("correct", "MET"), ("fastest_native_peer", "MISSED")]
    assert "jax.scipy.signal" in v[1]["description"]


def _env():
    return {"machine": {"cpu": "Test CPU 3000", "cores": 2, "load_average": [3.5, 3, 3]},
            "versions": {"numpy": "9.9", "scipy": "8.8"}, "devices": {"convkit[numpy]": "cpu"}}


def _no_overlap(boxes) -> bool:
    boxes = sorted(boxes, key=lambda b: b.x0)
    return all(not a.overlaps(b) for a, b in zip(boxes, boxes[1:]))


@pytest.mark.parametrize("spread", [(0.3, 3.0), (0.02, 90.0), (0.95, 1.05)])
def test_figure_is_clean(spread):
    """Titled with backend, suite and machine; every bar labelled; no two tick labels touch."""
    report, Result = _report()
    lo, hi = spread
    wls = [f"w{i}" for i in range(6)]
    ratios = {(w, dt): lo * (hi / lo) ** (i / 5) for i, w in enumerate(wls) for dt in ("float32", "float64")}
    s = report.summarize(_results(Result, ratios))
    fig = report.figure(s, _env(), "quick")
    fig.canvas.draw()
    texts = [t.get_text() for t in fig.texts]
    assert "convkit[numpy]: speed-up per workload (quick suite)" in texts
    assert any("Test CPU 3000, 2 cores (load average 3.5); numpy 9.9, scipy 8.8" in t for t in texts)
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        labels = [t for t in ax.get_xticklabels() if t.get_text() and t.get_visible()]
        assert len(labels) >= 2 and "1x" in [t.get_text() for t in labels]
        assert _no_overlap([t.get_window_extent(renderer) for t in labels])
        n_bars = len(ax.patches)
        assert n_bars == 2 * len(wls)  # both series, every row
        assert sum(t.get_text().endswith("x") for t in ax.texts) == n_bars  # every bar labelled
    ylabels = [t.get_window_extent(renderer) for t in fig.axes[0].get_yticklabels() if t.get_text()]
    assert len(ylabels) == len(wls)
    ys = sorted(ylabels, key=lambda b: b.y0)
    assert all(not a.overlaps(b) for a, b in zip(ys, ys[1:]))
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_empty_run_writes_no_plot(tmp_path):
    report, Result = _report()
    s = report.summarize(_results(Result, {("a", "float32"): 3.0}, {("a", "float32"): "error"}))
    assert report.figure(s) is None
    assert report.plot(str(tmp_path / "speedup.png"), s) is False
    assert not (tmp_path / "speedup.png").exists()
