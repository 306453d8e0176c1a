"""One command line under two names, and the benchmark suite's refusals and verdicts, run as a user
runs them: in subprocesses. No assertion depends on a timing (the --check runs move a target
out of reach, or into certain reach, before the suite starts)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMANDS = ("demo", "info", "check", "bench", "tune", "explain")
ENV = {k: v for k, v in os.environ.items() if k != "CONVKIT_BACKEND"}


def _script() -> str:
    path = shutil.which("convkit")
    assert path, "the console script `convkit` is not installed (pip install -e .)"
    return path


def _run(argv: list[str], cwd: str = ROOT, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=ENV)


FRONT_DOORS = {"convkit": lambda: [_script()], "python -m convkit": lambda: [sys.executable, "-m", "convkit"]}


def test_info_is_the_same_under_both_names():
    a = _run([_script(), "info"])
    b = _run([sys.executable, "-m", "convkit", "info"])
    assert a.returncode == b.returncode == 0, a.stderr + b.stderr
    assert a.stdout == b.stdout and "backends:" in a.stdout
    assert "Traceback" not in a.stderr + b.stderr


@pytest.mark.parametrize("door", sorted(FRONT_DOORS))
def test_help_lists_every_command(door):
    r = _run(FRONT_DOORS[door]() + ["--help"])
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"usage: {door} ")
    for command in COMMANDS:
        assert command in r.stdout


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("door", sorted(FRONT_DOORS))
def test_each_command_has_help(door, command):
    r = _run(FRONT_DOORS[door]() + [command, "--help"])
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"usage: {door} {command}")
    if command == "bench":
        assert "--check" in r.stdout and "results-<backend>.md" in r.stdout and "exit status" in r.stdout
    if command == "tune":
        assert "--save" in r.stdout


def test_unknown_command_is_a_usage_error():
    r = _run([sys.executable, "-m", "convkit", "bogus"])
    assert r.returncode == 2 and "invalid choice" in r.stderr


def test_no_command_is_the_same_under_both_names():
    """`python -m convkit` (the README's main job) and `convkit`: backends, then the demo."""
    a = _run([_script()], timeout=300)
    b = _run([sys.executable, "-m", "convkit"], timeout=300)
    assert a.returncode == b.returncode == 0, a.stdout + a.stderr
    assert a.stdout == b.stdout
    assert "  numpy      available" in a.stdout and "all checks passed" in a.stdout
    assert "more: convkit --help" in a.stdout


# ----------------------------------------------------------------------------- refusals


def _previous_results(out) -> dict[str, str]:
    """A results folder from an earlier run, which a refused run must leave alone."""
    out.mkdir()
    files = {"results.json": '{"earlier": true}', "results.md": "earlier\n", "speedup.png": "earlier"}
    for name, text in files.items():
        (out / name).write_text(text)
    return files


def _unavailable_backend() -> str | None:
    import convkit

    return next((r.name for r in convkit.list_backends() if not r.available), None)


BENCH_DOORS = {
    "convkit bench": lambda: [_script(), "bench"],
    "python -m convkit bench": lambda: [sys.executable, "-m", "convkit", "bench"],
    "python -m benchmarks": lambda: [sys.executable, "-m", "benchmarks"],
}


@pytest.mark.parametrize("door", sorted(BENCH_DOORS))
def test_bogus_backend_refused_at_once_nothing_written(door, tmp_path):
    out = tmp_path / "new"
    r = _run(BENCH_DOORS[door]() + ["--backends", "bogus", "--out", str(out)], timeout=60)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "--backends bogus" in r.stderr and "not a known backend" in r.stderr
    assert "nothing was run or written" in r.stderr
    assert not out.exists()


def test_unavailable_backend_refused_previous_results_kept(tmp_path):
    name = _unavailable_backend()
    if name is None:
        pytest.skip("every backend is available here")
    out = tmp_path / "bench-results"
    before = _previous_results(out)
    r = _run([_script(), "bench", "--backends", f"numpy,{name}", "--suite", "quick", "--out", str(out)],
             timeout=60)
    assert r.returncode == 2, r.stdout + r.stderr
    assert f"--backends {name}:" in r.stderr and "is not available" in r.stderr
    assert {p.name: p.read_text() for p in out.iterdir()} == before


@pytest.mark.parametrize("args, message", [
    (["--peers", "bogus"], "not a peer family"),
    (["--dtype", "int8"], "expected float32, float64"),
    (["--only", "no-such-workload"], "matches no workload"),
    (["--backends", ""], "names no backend"),
    (["--only", "2d-4096", "--dtype", "float64"], "no workload selected runs in it"),  # a float32-only row
    (["--gap", "-1", "--isolation", "gap"], "--gap -1"),
])
def test_other_bad_requests_refused(tmp_path, args, message):
    out = tmp_path / "out"
    r = _run([sys.executable, "-m", "benchmarks", "--out", str(out)] + args, timeout=60)
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert not out.exists()


# ----------------------------------------------------------------------------- verdicts and --check

#: one small 2-D workload in float64: a geometric mean exists, nothing else is measured at length
TINY = ["--suite", "smoke", "--only", "2d-64x3x3", "--dtype", "float64", "--peers", "scipy",
        "--min-time", "0.001", "--max-runs", "3", "--no-progress", "--no-memory"]


def _bench_with_targets(targets: dict[str, float], argv: list[str]) -> subprocess.CompletedProcess:
    """``python -m benchmarks`` with the report's target constants set first."""
    code = textwrap.dedent(f"""
        import sys
        from benchmarks import report
        for name, value in {targets!r}.items():
            setattr(report, name, value)
        from benchmarks.cli import main
        sys.exit(main({argv!r}))
    """)
    return _run([sys.executable, "-c", code], timeout=240)


UNREACHABLE = {"GEOMEAN_TARGET": 1e9}
CERTAIN = {"GEOMEAN_TARGET": 0.0, "FASTEST_PEER_MIN_RATIO": 0.0, "FASTEST_SCIPY_MIN_RATIO": 0.0,
           "OVERHEAD_TARGET_S": 1e9, "MEMORY_TARGET": 1e9}


def test_check_exits_non_zero_on_a_missed_target(tmp_path):
    r = _bench_with_targets(UNREACHABLE, TINY + ["--out", str(tmp_path), "--check"])
    assert r.returncode == 1, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert any(ln.strip().startswith("MISSED") and "geometric mean" in ln and ">= 1e+09x" in ln
               for ln in lines)
    assert any(ln.strip().startswith("MET") and "correct" in ln for ln in lines)
    assert "--check: exit status 1" in r.stdout
    doc = json.loads((tmp_path / "results.json").read_text())  # a missed target is still reported in full
    verdicts = {v["target"]: v["verdict"] for v in doc["summary"]["verdicts"]}
    assert verdicts["geomean"] == "MISSED" and verdicts["correct"] == "MET"
    assert verdicts["overhead"] == "N/A" and verdicts["memory"] == "N/A"  # not measured in this run
    assert "**MISSED** geometric mean" in (tmp_path / "results.md").read_text()


def test_missed_target_without_check_exits_zero(tmp_path):
    r = _bench_with_targets(UNREACHABLE, TINY + ["--out", str(tmp_path)])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "target(s) MISSED" in r.stdout and "--check: exit status 1" not in r.stdout
    assert "--check makes a MISSED target exit with status 1" in r.stdout


def test_check_exits_zero_when_every_target_is_met(tmp_path):
    r = _bench_with_targets(CERTAIN, TINY + ["--out", str(tmp_path), "--check"])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "MISSED" not in r.stdout and "every target MET (or N/A)" in r.stdout
    assert {p.name for p in tmp_path.iterdir()} == {"results.json", "results.md", "speedup.png"}


def test_per_backend_files(tmp_path):
    """A second backend gets results-<name>.md and speedup-<name>.png; results.json has both."""
    import convkit

    second = next((r.name for r in convkit.list_backends() if r.available and r.name == "jax"), None)
    if second is None:
        pytest.skip("JAX is not available")
    r = _bench_with_targets({}, TINY + ["--backends", f"numpy,{second}", "--out", str(tmp_path)])
    assert r.returncode == 0, r.stdout + r.stderr
    names = {p.name for p in tmp_path.iterdir()}
    assert names == {"results.json", "results.md", "speedup.png", f"results-{second}.md",
                     f"speedup-{second}.png"}
    doc = json.loads((tmp_path / "results.json").read_text())
    assert set(doc["summaries"]) == {"numpy", second}


@pytest.mark.parametrize("how", ["jit", "eager"])
def test_jax_call_option(tmp_path, how, monkeypatch):
    """``--jax-call``: convkit[jax] timed inside ``jax.jit`` (default) or as written (where an eager
    call on a CPU may hand off to the NumPy backend); results.json records which, and the timed
    callable is that call."""
    pytest.importorskip("jax")
    import functools

    import numpy as np

    import convkit
    from benchmarks.contenders import JAX_CALL_ENV, contender
    from benchmarks.runner import convkit_method
    from benchmarks.workloads import Workload, suite

    r = _bench_with_targets({}, TINY + ["--backends", "jax", "--jax-call", how, "--out", str(tmp_path)])
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads((tmp_path / "results.json").read_text())["options"]["jax_call"] == how
    monkeypatch.setenv(JAX_CALL_ENV, how)
    w = next(x for x in suite("smoke") if x.name == "2d-64x3x3")
    x, k = w.make("float32")
    call = contender("convkit[jax]", "convkit").prepare(w, x, k)
    assert isinstance(call, functools.partial)
    assert (call.func is convkit.convolve) == (how == "eager")
    # the method column: a call under jit never hands off to the NumPy backend (host:...)
    big = Workload("2d-2000x7x7", "2-D", (2000, 2000), (7, 7))
    label = convkit_method(big, np.zeros(big.x_shape, np.float32), np.ones(big.k_shape, np.float32), "jax")
    assert label.startswith("host:") == (how == "eager")


# ----------------------------------------------------------------------------- installed layout


def test_bench_runs_as_convkit_benchmarks_outside_a_checkout(tmp_path):
    """From any folder (no top-level `benchmarks` importable) `convkit bench` finds the suite
    as `convkit.benchmarks`: installed, or this checkout's folder loaded under that name; the
    suite's modules import each other relatively, so both names work."""
    code = ("import sys; from convkit.cli import bench_module; m = bench_module(); "
            "print(m.__name__, m.cli.__name__, m.report.__name__); "
            "import importlib.util; print(importlib.util.find_spec('benchmarks') is None)")
    r = _run([sys.executable, "-c", code], cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["convkit.benchmarks", "convkit.benchmarks.cli", "convkit.benchmarks.report",
                                "True"]
    r = _run([_script(), "bench", "--backends", "bogus"], cwd=str(tmp_path), timeout=60)
    assert r.returncode == 2 and "usage" not in r.stderr and "not a known backend" in r.stderr
    assert not (tmp_path / "bench-results").exists()
