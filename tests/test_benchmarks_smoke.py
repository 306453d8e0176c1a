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
    ok = [r for r in results if r["status"] == "ok"]
    assert ok and all(r["seconds"] > 0 and r["runs"] >= 1 for r in ok)
    # every contender that ran was checked against the oracle: nothing is wrong on the smoke suite
    bad = [r for r in results if r["status"] in ("wrong", "error") and r["family"] in ("convkit", "scipy")]
    assert not bad
    ck = [r for r in results if r["contender"] == "convkit[numpy]"]
    assert {r["dtype"] for r in ck} == {"float64", "float32"}
    assert all(r["peak_extra_bytes"] is not None for r in ck)
    assert {r["method"] for r in ck} >= {"direct", "separable"}
    summary = doc["summary"]
    assert summary["geomean_vs_scipy_auto"] > 0
    assert set(summary["targets"]) >= {"faster_than_fastest_scipy_everywhere",
                                       "geomean_vs_scipy_auto_at_least_2", "overhead_within_20us",
                                       "fft_2d_peak_within_4x"}
    assert len(summary["rows"]) == len(ck)


def test_markdown_table(smoke_run):
    out, _ = smoke_run
    md = (out / "results.md").read_text()
    lines = [ln for ln in md.splitlines() if ln.startswith("|")]
    assert len(lines) >= 2 + 6 * 2  # header, rule, 6 workloads x 2 dtypes
    width = lines[0].count("|")
    assert all(ln.count("|") == width for ln in lines)
    assert "geometric mean" in md


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
    from benchmarks.runner import _check, _oracle
    from benchmarks.workloads import Workload

    w = Workload("t", "2-D", (40, 30), (5, 5))
    x, k = w.make(np.float32)
    ref, tol = _oracle(w, x, k)
    import scipy.signal

    good = scipy.signal.convolve(x, k, "same")
    assert _check(good, ref, tol, np.float32) == ""
    bad = good.copy()
    bad[3, 4] += 1e-3 * abs(good).max()
    assert "outside the S5 bound" in _check(bad, ref, tol, np.float32)
    assert "shape" in _check(good[1:], ref, tol, np.float32)
    assert "dtype" in _check(good.astype(np.float64), ref, tol, np.float32)


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
