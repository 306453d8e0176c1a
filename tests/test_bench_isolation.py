"""``--isolation``: each contender timed in a fresh process of its own (the default but for the
smoke suite), or in this process after an idle gap. Checked on one small row; no timing is
asserted, only where and how each contender ran."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.contenders import Contender, contender  # noqa: E402
from benchmarks.isolate import run_isolated  # noqa: E402
from benchmarks.runner import run_workload  # noqa: E402
from benchmarks.workloads import Workload  # noqa: E402

SMALL = Workload("2d-48x5x5", "2-D", (48, 40), (5, 5))


def test_each_contender_runs_in_a_worker_process_of_its_own():
    names = [("convkit[numpy]", "convkit"), ("scipy.signal.convolve", "scipy"),
             ("scipy.ndimage.convolve", "scipy")]
    cons = [contender(n, f) for n, f in names]
    rows = [(SMALL, np.dtype("float32")), (SMALL, np.dtype("float64"))]
    res = run_isolated(rows, cons, min_time=0.001, max_runs=2, memory=True)
    # the order of run_workload: row by row, contenders in order
    assert [(r.dtype, r.contender) for r in res] == [(d.name, n) for _, d in rows for n, _ in names]
    assert all(r.status == "ok" and r.seconds > 0 and r.runs >= 1 for r in res), [r.detail for r in res]
    pids = {r.contender: {x.pid for x in res if x.contender == r.contender} for r in res}
    assert all(len(p) == 1 for p in pids.values())  # one worker per contender, for all its rows
    assert len({next(iter(p)) for p in pids.values()}) == len(names)  # a different one each
    assert os.getpid() not in {r.pid for r in res}
    ck = [r for r in res if r.contender == "convkit[numpy]"]
    assert all(r.method and r.peak_extra_bytes is not None for r in ck)


def test_a_worker_that_fails_costs_only_its_own_rows():
    """A contender whose worker cannot even build it (here: a name its family does not have)
    is reported as an error on each of its rows, with the worker's exit status; the others run."""
    bogus = Contender("scipy.signal.no_such_function", "scipy", True, lambda w, x, k: None)
    cons = [contender("scipy.signal.convolve", "scipy"), bogus]
    res = run_isolated([(SMALL, np.dtype("float64"))], cons, min_time=0.001, max_runs=2, memory=False)
    assert res[0].status == "ok"
    assert res[1].status == "error" and "ended with exit status 1" in res[1].detail
    assert "no contender" in res[1].detail and res[1].seconds is None


def test_unavailable_contender_starts_no_worker():
    gone = Contender("cv2.filter2D", "opencv", True, lambda w, x, k: None, available=(False, "cv2 is gone"))
    res = run_isolated([(SMALL, np.dtype("float64"))], [gone], min_time=0.001, max_runs=2)
    assert res[0].status == "unavailable" and res[0].detail == "cv2 is gone" and res[0].pid == os.getpid()


def test_gap_schedule_pauses_before_each_contender():
    cons = [contender("convkit[numpy]", "convkit"), contender("scipy.signal.convolve", "scipy")]
    t0 = time.perf_counter()
    res = run_workload(SMALL, np.float64, cons, min_time=0.001, max_runs=2, memory=False,
                       schedule="sequential", gap=0.2)
    assert time.perf_counter() - t0 >= 0.4  # two contenders, each after 0.2 s idle
    assert all(r.status == "ok" and r.seconds > 0 for r in res)


def test_mid_suite_isolated_end_to_end(tmp_path):
    """``python -m benchmarks --suite mid`` isolates by default; one small mid row, every default
    peer (OpenCV and torch where installed), each in its own worker process."""
    cmd = [sys.executable, "-m", "benchmarks", "--suite", "mid", "--only", "2d-500x3x3", "--dtype", "float32",
           "--min-time", "0.002", "--max-runs", "2", "--no-memory", "--no-progress", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads((tmp_path / "results.json").read_text())
    assert doc["options"]["isolation"] == "process" and doc["options"]["suite"] == "mid"
    res = {r["contender"]: r for r in doc["results"]}
    timed = [r for r in res.values() if r["status"] == "ok"]
    assert len({r["pid"] for r in timed}) == len(timed) >= 3
    assert not [r for r in res.values() if r["status"] in ("wrong", "error")], res
    e = doc["summary"]["rows"][0]
    assert e["workload"] == "2d-500x3x3" and e["method"]
    fastest = min((r["seconds"], n) for n, r in res.items() if r["seconds"] and r["family"] != "convkit"
                  and n != "scipy.signal.convolve(direct)")
    assert e["fastest_peer"] == fastest[1]
    if _installed("cv2"):
        assert res["cv2.filter2D"]["status"] == "ok"
    if _installed("torch"):
        assert res["torch.nn.functional.conv"]["status"] == "ok"
    assert "fastest peer" in proc.stdout and "as fast as the fastest peer" in proc.stdout


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


@pytest.mark.parametrize("suite, expected", [("smoke", "none"), ("quick", "process"), ("mid", "process"),
                                             ("standard", "process")])
def test_default_isolation_per_suite(suite, expected):
    from benchmarks.cli import default_isolation

    assert default_isolation(suite) == expected


def test_rounds_run_fresh_workers_in_turns_and_keep_the_fastest(monkeypatch):
    """--rounds: each contender's worker runs once per round, contenders in turns, and each row
    keeps its fastest round (a failed round never replaces a timed one)."""
    import benchmarks.isolate as iso
    from benchmarks.runner import Result

    order, times = [], {"a": [3.0, 1.0, 2.0], "b": [None, 5.0, 4.0]}

    def fake_worker(c, job, folder, progress=None):
        order.append(c.name)
        t = times[c.name][sum(n == c.name for n in order) - 1]
        r = Result(SMALL.name, SMALL.group, "", job["rows"][0]["dtype"], c.name, c.family,
                   status="ok" if t is not None else "error", seconds=t)
        return [r], ""

    monkeypatch.setattr(iso, "_run_worker", fake_worker)
    cons = [Contender(n, "scipy", True, lambda w, x, k: None) for n in ("a", "b")]
    res = run_isolated([(SMALL, np.dtype("float64"))], cons, min_time=0.001, max_runs=1, rounds=3)
    assert order == ["a", "b", "a", "b", "a", "b"]
    assert [(r.contender, r.seconds, r.status) for r in res] == [("a", 1.0, "ok"), ("b", 4.0, "ok")]


def test_rounds_option(tmp_path):
    from benchmarks.cli import default_rounds, main

    assert default_rounds("mid") == 3 and default_rounds("layers") == 3 and default_rounds("quick") == 1
    assert default_rounds("standard") == 3
    assert main(["--suite", "smoke", "--rounds", "0", "--isolation", "process", "--out", str(tmp_path),
                 "--backends", "numpy", "--peers", "scipy", "--no-progress"]) == 2


def test_steady_allocator_is_set_in_workers_and_recorded(tmp_path):
    """``--allocator steady`` (the default) fixes glibc's malloc thresholds in every timing
    process and says so in results.json; ``as-is`` leaves them."""
    import json as _json

    from benchmarks.allocator import steady
    from benchmarks.cli import main

    note = steady()
    if sys.platform.startswith("linux"):
        assert "mmap threshold 32 MiB" in note
    for flag, expected in (("steady", note or "as-is (not glibc)"), ("as-is", "as-is")):
        out = tmp_path / flag
        assert main(["--suite", "smoke", "--only", "tiny", "--dtype", "float64", "--peers", "scipy",
                     "--allocator", flag, "--out", str(out), "--no-progress"]) == 0
        with open(out / "results.json") as f:
            assert _json.load(f)["options"]["allocator"] == expected
