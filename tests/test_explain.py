"""``convkit.explain`` (issue 14): every equivalent it prints runs against the real library and gives
convkit's result; its "none exists" claims hold for representative cases; the text names pads,
shapes and the method; ``convkit explain`` works on the command line.

Keras runs in one subprocess with ``KERAS_BACKEND=jax`` (and ``JAX_ENABLE_X64=1`` for float64);
that test is skipped only when Keras cannot be imported there (``pip install keras``).
"""

from __future__ import annotations

import dataclasses
import inspect
import itertools
import os
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest
from keras_subprocess import run_keras

import convkit
from convkit import dispatch
from convkit.explain import LIBRARIES, Equivalent, Explanation, Spec, parse_spec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def _default_backend(monkeypatch):
    """The texts compared here name the default backend: no CONVKIT_BACKEND (a CI job may set it)."""
    monkeypatch.delenv("CONVKIT_BACKEND", raising=False)
    dispatch.reload_environment()
    yield
    monkeypatch.undo()
    dispatch.reload_environment()

# ----------------------------------------------------------------------------- the grid

SHAPES = {
    1: [((9,), (3,)), ((9,), (4,)), ((5,), (7,))],          # odd, even, kernel longer than in1
    2: [((7, 8), (3, 4)), ((6, 7), (2, 3))],                # even/odd mixes
    3: [((5, 6, 6), (2, 3, 3))],
}
MODES = [("full", "scipy"), ("valid", "scipy"), ("same", "scipy"), ("same", "tf"), ("causal", "scipy"),
         ("pads_crop", "scipy"), ("pads_wide", "scipy")]
STRIDE_DILATION = [(1, 1), (2, 1), (1, 2), (2, 2)]
BOUNDARIES = [("fill", 0), ("symm", 0), ("wrap", 0), ("fill", 2), ("nearest", 0), ("mirror", 0)]
DTYPES = ["float64", "complex128", "int64", "float32"]
#: the dtype= keyword, mixed and narrow dtypes, fill values, origin and permuted axes
EXTRA = [
    ("convolve", (9,), (4,), ("int32", "int32"), dict(mode="same", dtype="float64")),
    ("correlate", (7, 8), (3, 4), ("float32", "float64"), dict(mode="full")),
    ("correlate", (9,), (3,), ("int16", "int16"), dict(mode="same", boundary="wrap")),
    ("convolve", (6, 7), (3, 2), ("float16", "float16"), dict(mode="same", align="tf", stride=2)),
    ("correlate", (9,), (4,), ("complex64", "complex64"), dict(mode="causal", dilation=2)),
    ("convolve", (9,), (3,), ("float64", "float64"), dict(mode="same", fillvalue=-1.5)),
    ("correlate", (8,), (3,), ("complex128", "complex128"), dict(mode="same", fillvalue=1 + 2j)),
    ("correlate", (9, 8), (3, 4), ("float64", "float64"), dict(mode="same", origin=(1, -1),
                                                                boundary="nearest")),
    ("convolve", (7, 8), (3, 4), ("float64", "float64"), dict(mode="same", axes=(1, 0), stride=(2, 1))),
    ("correlate", (7, 8), (3, 4), ("int64", "float64"), dict(mode=[(1, 0), (-1, 2)], boundary="mirror",
                                                              dilation=(1, 2))),
]
#: 'valid' with in2 larger on every axis: the inputs swap (S3)
SWAPS = [("convolve", (5,), (7,), "complex128"), ("correlate", (5,), (7,), "complex128"),
         ("correlate", (5,), (7,), "int64"), ("convolve", (3, 4), (5, 6), "float64"),
         ("correlate", (3, 4), (5, 6), "complex128"), ("correlate", (2, 3, 2), (3, 3, 4), "float64")]


def _mode(name: str, ndim: int):
    if name == "pads_crop":
        return [(2, -1)] * ndim            # negative pads crop in1
    if name == "pads_wide":
        return [(0, 3)] * ndim             # more padding than 'full' on one side
    return name


def _cases():
    """op x rank x mode x (stride, dilation); the shapes of the rank, the boundary and the dtype
    rotate, so that every mode meets every boundary and dtype. Where convkit refuses the call (a
    dilated kernel longer than the input), the next shape of the rank is taken."""
    out = []
    i = 0
    for op in ("convolve", "correlate"):
        for ndim, shapes in SHAPES.items():
            for (mode, align), (s, d) in itertools.product(MODES, STRIDE_DILATION):
                if ndim == 3 and (s, d) == (2, 2):
                    continue
                boundary, fill = BOUNDARIES[i % len(BOUNDARIES)]
                dtype = DTYPES[(i // len(BOUNDARIES) + i) % len(DTYPES)]
                kw = dict(mode=_mode(mode, ndim), boundary=boundary, fillvalue=fill, stride=s, dilation=d)
                if mode == "same":
                    kw["align"] = align
                for j in range(len(shapes)):
                    s1, s2 = shapes[(i + j) % len(shapes)]
                    try:
                        convkit.explain(Spec(s1, dtype), Spec(s2, dtype), op=op, **kw)
                    except ValueError:
                        continue
                    out.append((op, s1, s2, dtype, kw))
                    break
                i += 1
    valid = dict(mode="valid", boundary="fill", fillvalue=0, stride=1, dilation=1)
    out += [(op, s1, s2, dtype, valid) for op, s1, s2, dtype in SWAPS]
    out += EXTRA
    return out


CASES = _cases()


def _data(shape, dtype, seed):
    rng = np.random.default_rng(seed)
    if dtype.startswith("int"):
        return rng.integers(-5, 6, size=shape).astype(dtype)
    x = rng.standard_normal(shape)
    if dtype.startswith("complex"):
        x = x + 1j * rng.standard_normal(shape)
    return x.astype(dtype)


def _case_id(case) -> str:
    op, s1, s2, dtype, kw = case
    rest = {k: v for k, v in kw.items() if k != "mode"}
    mode = kw["mode"] if isinstance(kw["mode"], str) else "pads" + str(kw["mode"][0])
    return f"{op}-{'x'.join(map(str, s1))}*{'x'.join(map(str, s2))}-{mode}-{rest}-{dtype}"


def _dtypes(case) -> tuple[str, str]:
    return case[3] if isinstance(case[3], tuple) else (case[3], case[3])


def _specs(case) -> tuple[Spec, Spec]:
    d1, d2 = _dtypes(case)
    return Spec(case[1], d1), Spec(case[2], d2)


def _inputs(i, case):
    d1, d2 = _dtypes(case)
    return _data(case[1], d1, 2 * i), _data(case[2], d2, 2 * i + 1)


def _compare(got, want, where: str) -> None:
    got = np.asarray(got)
    assert got.shape == want.shape, f"{where}: shape {got.shape} != convkit's {want.shape}"
    assert got.dtype == want.dtype, f"{where}: dtype {got.dtype} != convkit's {want.dtype}"
    if want.dtype.kind in "biu":
        np.testing.assert_array_equal(got, want, err_msg=where)
    elif want.dtype == np.float16:
        np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-3, err_msg=where)
    elif want.dtype in (np.float32, np.complex64):
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5, err_msg=where)
    else:
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12, err_msg=where)


def _run(code: str, in1, in2):
    scope = {"in1": in1, "in2": in2}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exec(compile(code, "<equivalent>", "exec"), scope)
    return scope["out"]


def test_grid_covers_the_brief():
    """1-D/2-D/3-D, both ops, every mode, stride and dilation, every boundary and dtype."""
    assert len(CASES) > 150
    seen = {(c[0], len(c[1]), str(c[4]["mode"]) if isinstance(c[4]["mode"], str) else "pads",
             c[4].get("stride"), c[4].get("dilation")) for c in CASES}
    for op, ndim, s, d in itertools.product(("convolve", "correlate"), (1, 2, 3), (1, 2), (1, 2)):
        if ndim == 3 and (s, d) == (2, 2):
            continue
        for mode in ("full", "valid", "same", "causal", "pads"):
            assert (op, ndim, mode, s, d) in seen, (op, ndim, mode, s, d)
    assert {c[3] for c in CASES} >= set(DTYPES)
    assert {(c[4].get("boundary"), c[4].get("fillvalue")) for c in CASES} >= set(BOUNDARIES)
    assert {c[2] for c in CASES} >= {s2 for shapes in SHAPES.values() for _, s2 in shapes}
    assert sum(convkit.explain(*_specs(c), op=c[0], **c[4]).swap for c in CASES) >= len(SWAPS)


# ----------------------------------------------------------------------------- in-process libraries

IN_PROCESS = {"scipy.signal": None, "scipy.ndimage": None, "numpy.convolve": None, "torch": "torch",
              "lax": "jax"}


@pytest.mark.parametrize("library", sorted(IN_PROCESS))
def test_equivalents_execute_and_agree(library):
    """Every equivalent this library gets in the grid runs and equals convkit's result."""
    module = IN_PROCESS[library]
    if module:
        pytest.importorskip(module)
    ran = 0
    failures = []
    for i, case in enumerate(CASES):
        op, s1, s2, dtype, kw = case
        in1, in2 = _inputs(i, case)
        e = convkit.explain(in1, in2, op=op, **kw)
        eq = e.equivalents[library]
        if eq.code is None:
            assert eq.reason, f"{_case_id(case)}: {library} has neither code nor a reason"
            continue
        want = getattr(convkit, op)(in1, in2, **kw)
        try:
            _compare(_run(eq.code, in1, in2), want, f"{_case_id(case)} {library}")
        except Exception as exc:  # collect them all: one report for the whole grid
            failures.append(f"{_case_id(case)}: {type(exc).__name__}: {str(exc)[:300]}\n{eq.code}")
        ran += 1
    assert not failures, (f"{len(failures)} of {ran} {library} equivalents failed:\n"
                          + "\n\n".join(failures[:5]))
    assert ran >= 10, f"only {ran} {library} equivalents in the grid"


def test_canonical_call_gives_the_same_result():
    """The 'pads spelled out' call is the same computation (S2)."""
    n = 0
    for i, case in enumerate(CASES):
        op, s1, s2, dtype, kw = case
        in1, in2 = _inputs(i, case)
        e = convkit.explain(in1, in2, op=op, **kw)
        if e.canonical_call is None:
            assert e.swap
            continue
        got = _run("import convkit\nout = " + e.canonical_call, in1, in2)
        np.testing.assert_array_equal(got, getattr(convkit, op)(in1, in2, **kw), err_msg=_case_id(case))
        n += 1
    assert n > 140


def test_every_library_has_code_somewhere_and_a_reason_elsewhere():
    have = {k: 0 for k in LIBRARIES}
    for case in CASES:
        e = convkit.explain(*_specs(case), op=case[0], **case[4])
        assert list(e.equivalents) == list(LIBRARIES)
        for key, eq in e.equivalents.items():
            assert isinstance(eq, Equivalent) and eq.library == key
            assert (eq.code is None) == bool(eq.reason)
            have[key] += eq.code is not None
    assert all(v >= 10 for v in have.values()), have


# ----------------------------------------------------------------------------- Keras (subprocess)

KERAS_BODY = """
jobs = pickle.load(open(sys.argv[1], "rb"))
results = []
for code, in1, in2 in jobs:
    scope = {"in1": in1, "in2": in2}
    try:
        exec(compile(code, "<keras equivalent>", "exec"), scope)
        results.append(("ok", np.asarray(scope["out"])))
    except Exception:
        results.append(("error", traceback.format_exc()))
claims = {}
# "none": Keras refuses strides > 1 with dilation_rate > 1
try:
    keras.layers.Conv1D(1, 3, strides=2, dilation_rate=2)
    claims["stride+dilation"] = "accepted"
except ValueError as exc:
    claims["stride+dilation"] = "refused: " + str(exc)
# "none": Keras layers take no complex dtype
try:
    layer = keras.layers.Conv1D(1, 2, use_bias=False, dtype="complex128")
    layer.build((1, 5, 1))
    claims["complex"] = "accepted"
except Exception as exc:
    claims["complex"] = "refused: " + type(exc).__name__
# padding='same' with an even kernel is align='tf', never SciPy's centring
x, k = np.array([1.0, 2, 3, 4]), np.array([1.0, 2, 3, 4])
layer = keras.layers.Conv1D(1, 4, padding="same", use_bias=False, dtype="float64")
layer.build((1, 4, 1))
layer.set_weights([k[:, None, None]])
claims["same"] = np.asarray(layer(x[None, :, None]))[0, :, 0]
pickle.dump((results, claims), open(sys.argv[2], "wb"))
"""


def test_keras_equivalents_execute_and_agree(tmp_path):
    jobs, wants = [], []
    for i, case in enumerate(CASES):
        op, s1, s2, dtype, kw = case
        in1, in2 = _inputs(i, case)
        e = convkit.explain(in1, in2, op=op, **kw)
        eq = e.equivalents["keras"]
        if eq.code is None:
            assert eq.reason
            continue
        jobs.append((eq.code, in1, in2))
        wants.append((_case_id(case), eq.code, getattr(convkit, op)(in1, in2, **kw)))
    assert len(jobs) >= 30
    results, claims = run_keras(tmp_path, KERAS_BODY, jobs, timeout=900)
    failures = []
    for (where, code, want), (status, got) in zip(wants, results):
        try:
            assert status == "ok", got
            _compare(got, want, f"{where} keras")
        except AssertionError as exc:
            failures.append(f"{where}: {str(exc)[:400]}\n{code}")
    assert not failures, (f"{len(failures)} of {len(jobs)} Keras equivalents failed:\n"
                          + "\n\n".join(failures[:5]))
    # the reasons explain() gives for "none" hold
    assert claims["stride+dilation"].startswith("refused"), claims
    assert claims["complex"].startswith("refused"), claims
    x = np.array([1.0, 2, 3, 4])
    np.testing.assert_allclose(claims["same"], convkit.correlate(x, x, "same", align="tf"))
    assert not np.allclose(claims["same"], convkit.correlate(x, x, "same"))
    e = convkit.explain(Spec((9,)), Spec((3,)), op="correlate", stride=2, dilation=2)
    assert "strides > 1" in e.equivalents["keras"].reason
    e = convkit.explain(Spec((9,), "complex128"), Spec((3,)), op="correlate")
    assert "complex" in e.equivalents["keras"].reason


# ----------------------------------------------------------------------------- "none exists" claims


def test_none_claims_hold():
    import scipy.ndimage
    import scipy.signal

    # numpy.convolve is 1-D only
    e = convkit.explain(Spec((4, 4)), Spec((2, 2)))
    assert e.equivalents["numpy.convolve"].code is None and "1-D" in e.equivalents["numpy.convolve"].reason
    with pytest.raises(ValueError):
        np.convolve(np.ones((4, 4)), np.ones((2, 2)))
    # scipy.ndimage gives same-size output only: no 'full'
    e = convkit.explain(Spec((6,)), Spec((3,)), "full", op="correlate")
    assert e.equivalents["scipy.ndimage"].code is None and "size" in e.equivalents["scipy.ndimage"].reason
    assert scipy.ndimage.correlate(np.ones(6), np.ones(3)).shape == (6,) != e.out_shape
    # scipy.signal has no dilation argument
    e = convkit.explain(Spec((9,)), Spec((3,)), dilation=2)
    assert e.equivalents["scipy.signal"].code is None and "dilation" in e.equivalents["scipy.signal"].reason
    for fn in (scipy.signal.convolve, scipy.signal.correlate, scipy.signal.convolve2d, np.convolve):
        assert "dilation" not in inspect.signature(fn).parameters
    # scipy.signal has no 'nearest' boundary
    e = convkit.explain(Spec((5, 5)), Spec((3, 3)), "same", boundary="nearest")
    assert e.equivalents["scipy.signal"].code is None
    with pytest.raises(ValueError):
        scipy.signal.convolve2d(np.ones((5, 5)), np.ones((3, 3)), "same", boundary="nearest")


def test_torch_none_claims_hold():
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    # no symmetric (half-sample) padding in torch
    e = convkit.explain(Spec((8,)), Spec((3,)), "same", boundary="symm")
    assert e.equivalents["torch"].code is None and "symmetric" in e.equivalents["torch"].reason
    with pytest.raises((NotImplementedError, ValueError, RuntimeError)):
        F.pad(torch.ones(1, 1, 8), (1, 1), mode="symmetric")
    # F.pad(mode='reflect') refuses pads as long as the input
    e = convkit.explain(Spec((3,)), Spec((7,)), "same", boundary="mirror")
    assert e.equivalents["torch"].code is None and "reflect" in e.equivalents["torch"].reason
    with pytest.raises(RuntimeError):
        F.pad(torch.ones(1, 1, 3), (3, 3), mode="reflect")
    # padding='same' is refused with stride: the explanation spells the pads out instead
    e = convkit.explain(Spec((8,)), Spec((3,)), "same", op="correlate", align="tf", stride=2)
    assert 'padding="same"' not in e.equivalents["torch"].code and "refused" in e.equivalents["torch"].note
    with pytest.raises(RuntimeError):
        F.conv1d(torch.ones(1, 1, 8), torch.ones(1, 1, 3), stride=2, padding="same")


# ----------------------------------------------------------------------------- the object and its text


def test_text_names_pads_shape_dtype_method_and_libraries():
    e = convkit.explain(Spec((100, 100), "float32"), Spec((5, 5), "float32"), "same", stride=2)
    text = str(e)
    assert isinstance(e, Explanation)
    assert e.out_shape == (50, 50) and e.out_dtype == np.float32
    assert [f.pads for f in e.axes] == [(2, 2), (2, 2)] and [f.out for f in e.axes] == [50, 50]
    for needle in ("(2, 2)", "(50, 50)", "float32", "backend: numpy", "method: auto -> direct",
                   "estimated run time", "flip", "scipy.signal", "scipy.ndimage", "numpy.convolve: none",
                   "F.conv2d", "keras.layers.Conv2D", "lax.conv_general_dilated"):
        assert needle in text, needle
    assert set(e.costs) == {"direct", "fft", "oa"} and all(v > 0 for v in e.costs.values())
    with pytest.raises(dataclasses.FrozenInstanceError):
        e.method = "fft"


def test_method_choice_and_costs_follow_choose():
    from convkit.plan import plan_call

    x, k = np.zeros(200_000), np.zeros(2_000)
    e = convkit.explain(x, k)
    assert e.method == e.auto_method == plan_call("convolve", x, k).method
    assert e.method in ("fft", "oa") and e.nan_safe and "NaN" in e.method_reason
    assert min(e.costs, key=e.costs.get) == e.method
    e = convkit.explain(Spec((200_000,), "int64"), Spec((2_000,), "int64"))
    assert e.method == "direct" and "int64" in e.method_reason
    e = convkit.explain(Spec((10,)), Spec((3,)), method="fft")
    assert e.method == "fft" and e.auto_method == "direct" and "as requested" in str(e)
    e = convkit.explain(Spec((10,)), Spec((3,)), backend="numpy")
    assert e.backend == "numpy" and "backend= argument" in str(e)


def test_correlate_notes_conj_swap_and_same():
    e = convkit.explain(Spec((3,), "complex128"), Spec((5,), "complex128"), "valid", op="correlate")
    assert e.swap and e.flip_conj_result and e.kernel == "conj(in1)"
    text = str(e)
    assert "swap" in text and "flip(conj(.))" in text and "conjugate" in text
    e = convkit.explain(Spec((8,)), Spec((4,)), "same", op="correlate")
    assert e.axes[0].pads == (2, 1) and "(1, 2)" in str(e)


def test_same_errors_as_convolve():
    for kw in ({"mode": "valid", "stride": 2}, {"stride": True}, {"boundary": "bogus"}):
        with pytest.raises(Exception) as want:
            convkit.convolve(np.ones((3, 5)), np.ones((5, 3)), **kw)
        with pytest.raises(type(want.value)) as got:
            convkit.explain(Spec((3, 5)), Spec((5, 3)), **kw)
        assert str(got.value) == str(want.value)
    with pytest.raises(ValueError):
        convkit.explain(Spec((3,)), Spec((3,)), op="conv")


def test_zero_d_and_batch_axes():
    e = convkit.explain(2, 3j, op="correlate")
    assert e.out_shape == () and e.equivalents["numpy.convolve"].code is None
    assert _run(e.code("scipy.signal"), np.asarray(2), np.asarray(3j)) == convkit.correlate(2, 3j)
    e = convkit.explain(Spec((4, 10)), Spec((3,)), axes=1)
    assert e.out_shape == (4, 12)
    assert all(q.code is None and "batch" in q.reason for q in e.equivalents.values())


def test_spec_and_parse_spec():
    assert convkit.explain.Spec is Spec
    assert Spec([3, 4], "f4") == Spec((3, 4), np.float32) and Spec(5).shape == (5,)
    assert parse_spec("100x100:float32") == Spec((100, 100), "float32")
    assert parse_spec("7", dtype="int32") == Spec((7,), "int32") and parse_spec("()") == Spec(())
    with pytest.raises(ValueError):
        parse_spec("10xfoo")
    with pytest.raises(TypeError):
        Spec((3,), "not-a-dtype")
    # arrays and Specs mix; shapes and dtypes come from the arrays
    e = convkit.explain(np.ones(5, np.int32), Spec((2,), "int32"))
    assert e.out_dtype == np.int32 and e.out_shape == (6,)


# ----------------------------------------------------------------------------- the command line


def _cli(*args, timeout=120):
    env = {k: v for k, v in os.environ.items() if k != "CONVKIT_BACKEND"}
    return subprocess.run([sys.executable, "-m", "convkit", "explain", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env=env)


def test_cli_explain():
    r = _cli("100x100", "5x5", "--mode", "same", "--dtype", "float32", "--stride", "2")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert out.startswith("convkit.convolve(in1: 100x100 float32, in2: 5x5 float32, mode='same', stride=2)")
    for needle in ("(2, 2)", "(50, 50)", "dtype float32", "method: auto -> direct", "scipy.signal",
                   "F.conv2d", "lax.conv_general_dilated"):
        assert needle in out, needle
    assert out == str(convkit.explain(Spec((100, 100), "float32"), Spec((5, 5), "float32"), "same",
                                      stride=2)) + "\n"
    r = _cli("9:complex128", "4", "--op", "correlate", "--mode", "2:1", "--boundary", "wrap",
             "--dilation", "2", "--fillvalue", "0")
    assert r.returncode == 0, r.stderr
    assert "convkit.correlate(in1: 9 complex128, in2: 4 float64, mode=((2, 1),)" in r.stdout
    assert "conj" in r.stdout


def test_cli_explain_library_only_and_errors():
    r = _cli("8", "3", "--mode", "same", "--align", "tf", "--op", "correlate", "--stride", "2",
             "--code", "lax")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == convkit.explain(Spec((8,)), Spec((3,)), "same", op="correlate", align="tf",
                                               stride=2).code("lax")
    r = _cli("4x4", "2x2", "--code", "numpy.convolve")
    assert r.returncode == 1 and "1-D only" in r.stderr and not r.stdout
    r = _cli("3x5", "5x3", "--mode", "valid")
    assert r.returncode == 2 and "mode='valid'" in r.stderr and "Traceback" not in r.stderr
    r = _cli("10xfoo", "3")
    assert r.returncode == 2 and "10xfoo" in r.stderr
    r = _cli("--help")
    assert r.returncode == 0 and r.stdout.startswith("usage: python -m convkit explain")


def test_cli_console_script():
    script = shutil.which("convkit")
    if script is None:
        pytest.skip("the console script `convkit` is not installed (pip install -e .)")
    r = subprocess.run([script, "explain", "16", "4", "--mode", "same"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and "(2, 1)" in r.stdout, r.stderr


def test_docs_example_is_real_output():
    """docs/explain.md shows the output of its example command as it is now (with OpenCV
    installed, as the test extra does: its cost constants are in the estimates)."""
    pytest.importorskip("cv2")
    text = open(os.path.join(ROOT, "docs", "explain.md"), encoding="utf-8").read()
    cmd = "$ convkit explain 100x100 5x5 --mode same --dtype float32 --stride 2\n"
    assert cmd in text
    shown = text.split(cmd, 1)[1].split("\n```", 1)[0]
    r = _cli(*cmd.split()[3:])
    assert r.returncode == 0, r.stderr
    assert shown + "\n" == r.stdout


def test_separable_line_names_the_engine_the_call_runs(monkeypatch):
    """explain's separable line says whether this kernel is rank 1, and names the engine whose
    passes the same call then runs (spied on), or none where no engine runs them."""
    from scipy.signal.windows import gaussian

    from convkit.backends import numba_engine, opencv_engine
    from convkit.backends import numpy as npb

    ran: list[str] = []
    for module, name in ((opencv_engine, "OpenCV's sepFilter2D"), (numba_engine, "numba's separable loop")):
        real = module.correlate_separable

        def spy(*args, _real=real, _name=name, **kwargs):
            ran.append(_name)
            return _real(*args, **kwargs)

        monkeypatch.setattr(module, "correlate_separable", spy)
    g = gaussian(15, 2.5)
    rng = np.random.default_rng(0)
    for dtype in ("float32", "float64"):
        x = rng.standard_normal((500, 500)).astype(dtype)
        k = np.outer(g, g).astype(dtype)
        for be in ("numpy", npb.NumpyBackend(engines=False)):
            line = next((ln for ln in str(convkit.explain(x, k, "same", backend=be)).splitlines()
                         if "separable" in ln), None)
            ran.clear()
            convkit.convolve(x, k, "same", backend=be)
            if line is None:  # no separable path here (without engines the cost model prices none)
                assert not ran and be != "numpy"
                continue
            assert "(this kernel is" in line and "(this kernel is not)" not in line
            if ran:
                assert line.endswith(f"; its passes run on {ran[0]})"), (dtype, line, ran)
            else:
                assert line.endswith("(this kernel is)"), (dtype, line)
        line = next(ln for ln in str(convkit.explain(x, rng.standard_normal((15, 15)).astype(dtype), "same"))
                    .splitlines() if "separable" in ln)
        assert line.endswith("(this kernel is not)")
