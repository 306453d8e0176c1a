"""The benchmark suite's ``layers`` suite (``python -m benchmarks --suite layers``): its rows,
its float64 reference, its peers, its verdicts and its runs end to end. No assertion depends on
a timing: verdicts are checked on synthetic results, and ``--check`` runs move the targets out
of reach, or into certain reach, before the suite starts."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks import layers_report  # noqa: E402
from benchmarks.cli import _parser  # noqa: E402
from benchmarks.contenders import Contender  # noqa: E402
from benchmarks.layers import (  # noqa: E402
    LAX_NAME,
    TORCH_NAME,
    LayerWorkload,
    layer_contender,
    layer_method,
    layer_oracle,
    layer_suite,
    reference,
    workload_from_json,
)
from benchmarks.runner import Result, run_workload  # noqa: E402
from benchmarks.workloads import SUITES  # noqa: E402

ENV = {k: v for k, v in os.environ.items() if k != "CONVKIT_BACKEND"}
FAST = ["--min-time", "0.002", "--max-runs", "2", "--no-progress"]


# ----------------------------------------------------------------------------- the suites


def test_layers_suite_rows():
    """The rows of issue 16: ResNet 3x3 (NCHW target row, NHWC/HWIO), depthwise, strided, 1-D, float64."""
    rows = {w.name: w for w in layer_suite("layers")}
    assert list(rows) == ["resnet3x3-nchw", "resnet3x3-nhwc", "depthwise3x3", "strided3x3-s2",
                          "conv1d-4096x9", "resnet3x3-b2"]
    r = rows["resnet3x3-nchw"]
    assert (r.x_shape, r.k_shape, r.layout, r.kernel_layout, r.padding, r.stride, r.groups, r.dtypes) == (
        (8, 64, 56, 56), (64, 64, 3, 3), "NCHW", "OIHW", "same", 1, 1, ("float32",))
    assert [w.name for w in rows.values() if w.target] == ["resnet3x3-nchw"]
    nhwc = rows["resnet3x3-nhwc"]
    assert (nhwc.x_shape, nhwc.k_shape, nhwc.layout, nhwc.kernel_layout) == (
        (8, 56, 56, 64), (3, 3, 64, 64), "NHWC", "HWIO")
    dw = rows["depthwise3x3"]
    assert (dw.x_shape, dw.k_shape, dw.groups) == ((8, 64, 56, 56), (64, 1, 3, 3), 64)
    st = rows["strided3x3-s2"]
    assert (st.x_shape, st.k_shape, st.stride) == ((8, 64, 56, 56), (128, 64, 3, 3), 2)
    c1 = rows["conv1d-4096x9"]
    assert (c1.x_shape, c1.k_shape, c1.layout) == ((16, 32, 4096), (32, 32, 9), "NCW")
    f64 = rows["resnet3x3-b2"]
    assert (f64.x_shape, f64.dtypes) == ((2, 64, 56, 56), ("float64",))
    assert all(w.dtypes == ("float32",) for n, w in rows.items() if n != "resnet3x3-b2")


def test_smoke_variant_is_tiny_and_has_the_same_kinds_of_rows():
    full, smoke = layer_suite("layers"), layer_suite("layers-smoke")
    assert len(smoke) == len(full) and max(w.macs for w in smoke) < 1e6
    for a, b in zip(full, smoke):
        assert (a.layout, a.kernel_layout, a.stride, a.target, a.dtypes, a.padding) == (
            b.layout, b.kernel_layout, b.stride, b.target, b.dtypes, b.padding)
        assert (a.groups == 1) == (b.groups == 1)


def test_layer_suites_are_not_convolve_suites_but_are_on_the_command_line():
    assert not {"layers", "layers-smoke"} & set(SUITES)  # never part of quick/standard
    choices = next(a.choices for a in _parser("x")._actions if a.dest == "suite")
    assert {"layers", "layers-smoke", "smoke", "standard"} <= set(choices)
    with pytest.raises(ValueError, match="not a layer suite"):
        layer_suite("standard")


@pytest.mark.parametrize("suite", ["layers", "layers-smoke"])
def test_every_row_runs_direct_so_the_direct_bound_applies(suite):
    """The oracle's tolerance is a direct-sum bound: every row must run direct on the NumPy backend."""
    for w in layer_suite(suite):
        x = np.empty(w.x_shape, w.dtypes[0])
        k = np.empty(w.k_shape, w.dtypes[0])
        assert layer_method(w, x, k, "numpy").split("[")[0] == "direct", w.name
        assert w.taps < 16


def test_workload_survives_json():
    for w in layer_suite("layers-smoke"):
        assert workload_from_json(json.loads(json.dumps(w.__dict__))) == w


# ----------------------------------------------------------------------------- the oracle


def _loop(w: LayerWorkload, x, k) -> np.ndarray:
    """The layer by its definition, one output at a time (tiny inputs only)."""
    xc, kc = w.canonical(x.astype(np.float64), k.astype(np.float64))
    n, c = xc.shape[:2]
    o, g = kc.shape[0], w.groups
    xp = np.pad(xc, [(0, 0), (0, 0)] + list(w.pads()))
    kern = kc.shape[2:]
    out_sp = [(p - m) // w.stride + 1 for p, m in zip(xp.shape[2:], kern)]
    out = np.zeros([n, o] + out_sp)
    for b, oc in itertools.product(range(n), range(o)):
        grp = oc // (o // g)
        chans = range(grp * (c // g), (grp + 1) * (c // g))
        for pos in itertools.product(*map(range, out_sp)):
            s = 0.0
            for ci, cc in enumerate(chans):
                for tap in itertools.product(*map(range, kern)):
                    idx = tuple(p * w.stride + t for p, t in zip(pos, tap))
                    s += xp[(b, cc) + idx] * kc[(oc, ci) + tap]
            out[(b, oc) + pos] = s
    order = w.output_order()
    return out if order is None else out.transpose(order)


TINY = [
    LayerWorkload("t-nchw", "x", (1, 4, 5, 6), (2, 4, 3, 3)),
    LayerWorkload("t-nhwc-s2", "x", (2, 5, 6, 4), (3, 2, 4, 6), "NHWC", "HWIO", stride=2),
    LayerWorkload("t-groups", "x", (1, 4, 5, 5), (4, 2, 3, 3), groups=2, padding="valid"),
    LayerWorkload("t-1d", "x", (2, 3, 11), (2, 3, 4), "NCW", "OIW"),
]


@pytest.mark.parametrize("w", TINY, ids=lambda w: w.name)
def test_reference_is_the_definition(w):
    x, k = w.make(np.float64)
    np.testing.assert_allclose(reference(w, x, k), _loop(w, x, k), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("w", TINY, ids=lambda w: w.name)
def test_reference_agrees_with_convkit_conv(w):
    import convkit

    x, k = w.make(np.float32)
    ref, tol = layer_oracle(w, x, k)
    out = convkit.conv(x, k, backend="numpy", **w.conv_kwargs())
    assert out.shape == ref.shape and np.all(np.abs(out - ref) <= tol)
    assert np.all(tol > 0) and np.all(tol < 1e-3 * (1 + np.abs(ref)).max())


# ----------------------------------------------------------------------------- the peers


def _check_peer(c: Contender, w: LayerWorkload) -> None:
    dt = w.dtypes[0]
    x, k = w.make(dt)
    ref, tol = layer_oracle(w, x, k)
    fn = c.prepare(w, x, k)
    out = fn()
    c.sync(out)
    got = np.asarray(c.to_numpy(out))
    assert got.shape == ref.shape and got.dtype == np.dtype(dt)
    assert np.all(np.abs(got - ref) <= tol), w.name


@pytest.mark.parametrize("w", [w for w in layer_suite("layers-smoke") + TINY if w.dtypes != ("float64",)],
                         ids=lambda w: w.name)
def test_torch_peer_computes_the_layer(w):
    pytest.importorskip("torch")
    _check_peer(layer_contender(TORCH_NAME, "torch"), w)


@pytest.mark.parametrize("w", [w for w in layer_suite("layers-smoke") + TINY if w.dtypes != ("float64",)],
                         ids=lambda w: w.name)
def test_lax_peer_computes_the_layer(w):
    pytest.importorskip("jax")
    _check_peer(layer_contender(LAX_NAME, "jax"), w)


def test_lax_peer_refuses_float64_on_cpu():
    jax = pytest.importorskip("jax")
    if jax.devices()[0].platform != "cpu":
        pytest.skip("not on XLA:CPU")
    w = layer_suite("layers-smoke")[-1]
    x, k = w.make(np.float64)
    with pytest.raises(RuntimeError, match="not run"):
        layer_contender(LAX_NAME, "jax").prepare(w, x, k)


# ----------------------------------------------------------------------------- a wrong contender


def test_a_wrong_contender_is_reported_and_never_timed():
    w = layer_suite("layers-smoke")[0]
    calls = {"wrong": 0}

    def prepare(wl, x, k):
        ref = reference(wl, x, k).astype(x.dtype)
        ref.flat[7] += 1.0  # one output off by far more than the bound

        def call():
            calls["wrong"] += 1
            return ref

        return call

    wrong = Contender("wrong-peer", "torch", True, prepare)
    ck = layer_contender("convkit[numpy]", "convkit")
    got = run_workload(w, np.dtype(np.float32), [ck, wrong], min_time=0.001, max_runs=2, memory=False,
                       oracle_fn=layer_oracle, method_of=layer_method)
    by = {r.contender: r for r in got}
    bad = by["wrong-peer"]
    assert bad.status == "wrong" and "1 outputs outside" in bad.detail
    assert bad.seconds is None and bad.times == [] and bad.runs == 0
    assert calls["wrong"] == 1  # the checking call only
    assert by["convkit[numpy]"].status == "ok" and by["convkit[numpy]"].seconds > 0
    summary = layers_report.summarize_layers(got, {w.name: True})
    table = layers_report.layer_table(summary, got)
    assert "wrong-peer" in table and "wrong" in table


# ----------------------------------------------------------------------------- verdicts


def _res(workload: str, contender: str, seconds: float | None, status: str = "ok", dtype="float32") -> Result:
    family = "convkit" if contender.startswith("convkit[") else contender.split(".")[0]
    return Result(workload, "ResNet 3x3", f"{workload} call", dtype, contender, family, status=status,
                  seconds=seconds, method="direct" if family == "convkit" else "")


def _verdicts(results, targets=None):
    s = layers_report.summarize_layers(results, {"resnet3x3-nchw": True} if targets is None else targets)
    return s, {v["target"]: v for v in s["verdicts"]}


def test_verdicts_met():
    results = [_res("resnet3x3-nchw", "convkit[numpy]", 0.010), _res("resnet3x3-nchw", "convkit[jax]", 0.021),
               _res("resnet3x3-nchw", TORCH_NAME, 0.012), _res("resnet3x3-nchw", LAX_NAME, 0.020),
               _res("depthwise3x3", "convkit[numpy]", 0.5), _res("depthwise3x3", TORCH_NAME, 0.001)]
    s, v = _verdicts(results)
    assert {k: x["verdict"] for k, x in v.items()} == {"correct": "MET", "numpy_vs_torch": "MET",
                                                      "jax_vs_lax": "MET"}
    assert "1.20x" in v["numpy_vs_torch"]["measured"] and "1.05x lax's time" in v["jax_vs_lax"]["measured"]
    assert layers_report.missed_layers(s) == []  # the slow non-target depthwise row is not judged
    row = s["rows"][0]
    assert row["ratio_numpy_vs_torch"] == pytest.approx(1.2)
    assert row["ratio_jax_vs_lax"] == pytest.approx(20 / 21)


def test_verdicts_missed_print_the_numbers():
    results = [_res("resnet3x3-nchw", "convkit[numpy]", 0.030), _res("resnet3x3-nchw", "convkit[jax]", 0.030),
               _res("resnet3x3-nchw", TORCH_NAME, 0.015), _res("resnet3x3-nchw", LAX_NAME, 0.020)]
    s, v = _verdicts(results)
    assert v["numpy_vs_torch"]["verdict"] == "MISSED" and v["jax_vs_lax"]["verdict"] == "MISSED"
    assert "convkit[numpy] 30.00 ms, torch 15.00 ms: 0.50x" in v["numpy_vs_torch"]["measured"]
    assert "convkit[jax] 30.00 ms, lax 20.00 ms: 1.50x lax's time" in v["jax_vs_lax"]["measured"]
    misses = layers_report.missed_layers(s)
    assert len(misses) == 2 and all("ms" in m for m in misses)
    table = layers_report.layer_table(s, results)
    assert "MISSED  NumPy backend: ResNet 3x3 row at least as fast as torch CPU conv2d" in table
    assert "MISSED  JAX backend: within 1.1x of a jitted lax.conv_general_dilated on the same call" in table


def test_verdicts_at_the_jax_threshold_and_not_applicable():
    within = [_res("resnet3x3-nchw", "convkit[jax]", 0.0219), _res("resnet3x3-nchw", LAX_NAME, 0.020)]
    assert _verdicts(within)[1]["jax_vs_lax"]["verdict"] == "MET"
    beyond = [_res("resnet3x3-nchw", "convkit[jax]", 0.0221), _res("resnet3x3-nchw", LAX_NAME, 0.020)]
    assert _verdicts(beyond)[1]["jax_vs_lax"]["verdict"] == "MISSED"
    # no torch peer, no lax peer, or no target row: N/A, never a failure
    alone = [_res("resnet3x3-nchw", "convkit[numpy]", 0.01), _res("resnet3x3-nchw", "convkit[jax]", 0.01)]
    s, v = _verdicts(alone)
    assert v["numpy_vs_torch"]["verdict"] == v["jax_vs_lax"]["verdict"] == "N/A"
    assert v["correct"]["verdict"] == "MET" and layers_report.missed_layers(s) == []
    s, v = _verdicts(within, targets={})
    assert v["jax_vs_lax"]["verdict"] == "N/A"


def test_a_wrong_convkit_result_misses_correctness():
    results = [_res("resnet3x3-nchw", "convkit[numpy]", None, status="wrong"),
               _res("resnet3x3-nchw", TORCH_NAME, 0.01)]
    s, v = _verdicts(results)
    assert v["correct"]["verdict"] == "MISSED" and v["numpy_vs_torch"]["verdict"] == "N/A"
    assert s["timed_convkit"] == []


def test_threshold_constants_are_read_at_verdict_time(monkeypatch):
    results = [_res("resnet3x3-nchw", "convkit[numpy]", 0.010), _res("resnet3x3-nchw", TORCH_NAME, 0.012)]
    monkeypatch.setattr(layers_report, "NUMPY_VS_TORCH_MIN_RATIO", 1.5)
    assert _verdicts(results)[1]["numpy_vs_torch"]["verdict"] == "MISSED"


# ----------------------------------------------------------------------------- end to end


def _bench(argv: list[str], targets: dict[str, float] | None = None, timeout: int = 240):
    """``python -m benchmarks`` with the layer targets' constants set first."""
    code = textwrap.dedent(f"""
        import sys
        from benchmarks import layers_report
        for name, value in {targets or {}!r}.items():
            setattr(layers_report, name, value)
        from benchmarks.cli import main
        sys.exit(main({argv!r}))
    """)
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=ENV)


def _available(name: str) -> bool:
    import convkit

    try:
        convkit.get_backend(name)
    except Exception:
        return False
    return True


@pytest.mark.parametrize("isolation", ["none", "process"])
def test_smoke_layers_run_end_to_end(tmp_path, isolation):
    r = _bench(["--suite", "layers-smoke", "--isolation", isolation, "--out", str(tmp_path)] + FAST)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "== convkit.conv (layers-smoke suite) ==" in r.stdout
    assert "vs torch" in r.stdout and "vs lax" in r.stdout and "targets:" in r.stdout
    assert {p.name for p in tmp_path.iterdir()} == {"results.json", "results.md"}
    doc = json.loads((tmp_path / "results.json").read_text())
    assert doc["options"]["suite"] == "layers-smoke" and doc["options"]["isolation"] == isolation
    expected = [b for b in ("numpy", "jax", "torch") if _available(b)]
    assert doc["options"]["backends"] == expected  # the default backends: those that run here
    results = doc["results"]
    ck = [x for x in results if x["family"] == "convkit"]
    assert {x["contender"] for x in ck} == {f"convkit[{b}]" for b in expected}
    assert all(x["status"] == "ok" and x["seconds"] > 0 and x["method"] for x in ck), ck
    assert {x["dtype"] for x in ck} == {"float32", "float64"}
    names = {x["contender"] for x in results}
    import importlib.util

    assert (TORCH_NAME in names) == (importlib.util.find_spec("torch") is not None)
    assert (LAX_NAME in names) == ("jax" in expected)
    peers = [x for x in results if x["family"] != "convkit"]
    assert all(x["status"] == "ok" for x in peers if x["dtype"] == "float32"), peers
    pids = {x["contender"]: x["pid"] for x in results if x["status"] == "ok"}
    if isolation == "process":  # one fresh process per contender
        assert len(set(pids.values())) == len(pids) and os.getpid() not in pids.values()
    else:
        assert len(set(pids.values())) == 1
    verdicts = [v["target"] for v in doc["summary"]["verdicts"]]
    assert verdicts == ["correct", "numpy_vs_torch", "jax_vs_lax"]
    md = (tmp_path / "results.md").read_text()
    assert "layers-smoke suite" in md and "**MET** correct" in md


def test_check_exits_1_on_a_missed_layer_target_and_0_when_met(tmp_path):
    pytest.importorskip("torch")
    base = ["--suite", "layers-smoke", "--only", "resnet3x3-nchw", "--backends", "numpy", "--peers", "torch",
            "--isolation", "none", "--no-memory", "--check"] + FAST
    r = _bench(base + ["--out", str(tmp_path / "a")], {"NUMPY_VS_TORCH_MIN_RATIO": 1e9})
    assert r.returncode == 1, r.stdout + r.stderr
    assert "MISSED  NumPy backend: ResNet 3x3 row" in r.stdout and "--check: exit status 1" in r.stdout
    assert "1 target(s) MISSED" in r.stdout and "convkit[numpy] " in r.stdout.split("target(s) MISSED")[1]
    doc = json.loads((tmp_path / "a" / "results.json").read_text())
    assert {v["target"]: v["verdict"] for v in doc["summary"]["verdicts"]} == {
        "correct": "MET", "numpy_vs_torch": "MISSED", "jax_vs_lax": "N/A"}
    r = _bench(base + ["--out", str(tmp_path / "b")], {"NUMPY_VS_TORCH_MIN_RATIO": 0.0})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "every target MET (or N/A)" in r.stdout and "MISSED" not in r.stdout


@pytest.mark.parametrize("args, message", [
    (["--peers", "scipy"], "not a peer family of the layer suites"),
    (["--only", "no-such-row"], "matches no workload"),
    (["--only", "resnet3x3-nchw", "--dtype", "float64"], "no workload selected runs in it"),
    (["--backends", "bogus"], "--backends bogus"),
    (["--backends", ""], "names no backend"),
])
def test_bad_layer_requests_are_refused(tmp_path, args, message):
    out = tmp_path / "out"
    r = _bench(["--suite", "layers-smoke", "--out", str(out)] + args, timeout=60)
    assert r.returncode == 2 and message in r.stderr, r.stdout + r.stderr
    assert not out.exists()
