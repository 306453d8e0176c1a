"""Input layouts and option types through every runner and through Dask (S3, S4, S5, S11, S13).

* byte order: non-native inputs and kernels ('>f8', '>i4', '>c16', '>u2', ...), alone or mixed
  with native ones, give the native-order answer in a NATIVE result dtype (S4: the result dtype
  is ``numpy.result_type``, which is native); a native call followed by the same shapes in '>f8'
  must not reuse anything that reads the bytes the wrong way (the JAX backend returned zeros);
* memory layouts: Fortran order, negative strides, non-contiguous slices, unaligned buffers,
  read-only arrays; convkit never writes to its inputs;
* 0-d and empty inputs (S3): 0-d x 0-d is the product; an empty input is a ValueError everywhere;
* option types (S13): a bool, a float or a complex where an int / a real is expected is a convkit
  error whatever ran before (in a fresh process and after a valid call with the equal value 1,
  which hashes the same), for every shape including 0-d; the value checks (stride >= 1, origin
  only with 'same', axes in range) apply to 0-d inputs as to 1-element arrays.

Oracle: the exact reference of tests/reference.py on native C-contiguous copies, compared with
the S5 bounds of ``convkit.testing`` (exact for integers and bool). Device runners get native
arrays for byte-swapped inputs (JAX arrays cannot hold another byte order; ``jnp.asarray``
refuses them); every other layout reaches them as is.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from layouts import (
    LAYOUTS,
    assert_unchanged,
    check_against_reference,
    layout,
    native,
    readonly,
    run,
    run_beside_device,
    snapshot,
    swapped,
    unaligned,
)
from reference import DTYPES, SAMPLED_BACKENDS, assert_matches, random_array, reference

import convkit
from convkit import ConvkitError, ConvkitValueError

METHODS = ("direct", "fft", "oa", "auto")
BOUNDARIES = ("fill", "symm", "mirror", "nearest", "wrap")
SWAPPED = (">f8", ">f4", ">f2", ">i2", ">i4", ">i8", ">u2", ">u4", ">u8", ">c8", ">c16")


def _examples(runner, numpy_n: int, other_n: int) -> settings:
    """As tests/test_properties.py: derandomized, fewer examples on runners that compile per shape."""
    return settings(max_examples=other_n if runner.backend in SAMPLED_BACKENDS else numpy_n, derandomize=True,
                    deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# ----------------------------------------------------------------------------- helpers


check = check_against_reference


# ----------------------------------------------------------------------------- properties


@st.composite
def layout_cases(draw):
    nd = draw(st.sampled_from([0, 1, 1, 2, 2, 3]))
    s1 = tuple(draw(st.integers(1, 6)) for _ in range(nd))
    s2 = tuple(draw(st.integers(1, 4)) for _ in range(nd))
    dt1 = draw(st.sampled_from(DTYPES))
    dt2 = dt1 if draw(st.booleans()) else draw(st.sampled_from(DTYPES))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    small = draw(st.booleans())
    a, b = random_array(rng, s1, dt1, small=small), random_array(rng, s2, dt2, small=small)
    kw: dict = {"mode": draw(st.sampled_from(["full", "same", "valid", "causal"]))}
    if nd:
        if draw(st.booleans()):
            kw["boundary"] = draw(st.sampled_from(BOUNDARIES))
        if draw(st.integers(0, 2)) == 0:
            kw["stride"] = draw(st.integers(1, 3))
        if draw(st.integers(0, 2)) == 0:
            kw["dilation"] = draw(st.integers(1, 2))
    kw["method"] = draw(st.sampled_from(METHODS))
    op = draw(st.sampled_from(["convolve", "correlate"]))
    return op, a, b, draw(st.sampled_from(LAYOUTS)), draw(st.sampled_from(LAYOUTS)), kw


def test_property_layouts(runner):
    """S4/S5/S11: any dtype pair in any byte order and memory layout equals the native answer."""

    @_examples(runner, 200, 12)
    @given(layout_cases())
    def prop(case):
        op, a, b, la, lb, kw = case
        check(runner, op, layout(a, la), layout(b, lb), **kw)

    prop()


# ----------------------------------------------------------------------------- byte order


def _data(dt: str, shape, seed: int = 0) -> np.ndarray:
    """Native test data of the kind of ``dt`` (full-range integers: wrap-around is exact, S5)."""
    return random_array(np.random.default_rng(seed), shape, np.dtype(dt).newbyteorder("="))


@pytest.mark.parametrize("which", ["both", "in1", "in2"])
@pytest.mark.parametrize("dt", SWAPPED)
def test_byte_order(runner, dt, which):
    """S4/S5: '>' inputs (both, or one of them next to a native one) give the native answer,
    with a native result dtype."""
    x, k = _data(dt, (5, 6), 1), _data(dt, (3, 2), 2)
    xs = swapped(x) if which in ("both", "in1") else x
    ks = swapped(k) if which in ("both", "in2") else k
    assert not (xs.dtype.isnative and ks.dtype.isnative)
    if runner.to_device is not None:
        # device arrays are always native: the swapped input is a host array beside a device one
        xs, ks = (x, swapped(k)) if which != "in1" else (swapped(x), k)
        for method in ("auto", "direct"):
            got = run_beside_device(runner, "convolve", xs, ks, "full", method=method)
            assert got.dtype.isnative
            assert_matches(got, reference("convolve", x, k, "full"), x, k, "convolve", method=method,
                           mode="full")
        return
    methods = ("auto",) if runner.backend in SAMPLED_BACKENDS else METHODS
    for method in methods:
        check(runner, "convolve", xs, ks, "full", method=method)
        check(runner, "correlate", xs[0], ks[0], "same", method=method)


@pytest.mark.parametrize("dt", ["f8", "i4", "c16", "u2"])
def test_swapped_after_native_call(runner, dt):
    """Regression: a native call then the same shapes in '>' byte order must not reuse a
    compiled function that reads the bytes as native (the JAX backend returned zeros), and
    the reverse order too."""
    x, k = _data(dt, (7,), 3), _data(dt, (3,), 4)
    x[0] = k[0] = 1  # never all zeros
    pairs = [(x, k), (swapped(x), swapped(k)), (x, k), (swapped(x), k), (x, swapped(k))]
    if runner.to_device is not None:  # one input stays a host array beside the device one
        pairs = [(x, k), (x, swapped(k)), (x, k), (swapped(x), k)]
    for a, b in pairs:
        mixed = runner.to_device is not None and not (a.dtype.isnative and b.dtype.isnative)
        got = (run_beside_device if mixed else run)(runner, "convolve", a, b)
        assert got.dtype.isnative, f"result dtype {got.dtype.str} is not native byte order (S4)"
        assert np.any(got != 0)
        check(runner, "convolve", a, b)


# ----------------------------------------------------------------------------- memory layouts


@pytest.mark.parametrize("lay", LAYOUTS)
def test_memory_layouts(runner, lay):
    """S11: Fortran order, negative strides, slices, unaligned and read-only inputs (each input
    alone and both) give the reference answer, and convkit leaves its inputs untouched."""
    cases = [("float64", (5, 6), (3, 2)), ("int32", (4, 5, 3), (2, 3, 2)), ("complex64", (9,), (4,))]
    sampled = runner.backend in SAMPLED_BACKENDS  # (JAX compiles per call: fewer calls)
    for i, (dt, s1, s2) in enumerate(cases[:2] if sampled else cases):
        x, k = _data(dt, s1, 10 + i), _data(dt, s2, 20 + i)
        pairs = [(layout(x, lay), k), (x, layout(k, lay)), (layout(x, lay), layout(k, lay))]
        for a, b in pairs[2:] if sampled else pairs:
            check(runner, "convolve", a, b, "full")
        check(runner, "correlate", layout(x, lay), layout(k, lay), "same", boundary="symm", stride=2)


def test_unaligned_construction():
    """The unaligned layout is really misaligned, the read-only one really read-only."""
    u = unaligned(np.arange(5.0))
    assert not u.flags.aligned and u.flags.writeable
    assert not readonly(np.arange(3)).flags.writeable
    assert not swapped(np.arange(3.0)).dtype.isnative


# ----------------------------------------------------------------------------- 0-d and empty


ZERO_D = [("f8", "f8"), ("f4", "f8"), ("i4", "i4"), ("u1", "u1"), ("c16", "c16"), ("c8", "f4"), ("?", "?"),
          (">f8", ">f8"), (">i8", "i2"), ("f8", ">c16"), (">u2", ">u2")]


@pytest.mark.parametrize("dts", ZERO_D, ids=["*".join(d) for d in ZERO_D])
def test_zero_d_product(runner, dts):
    """S3: 0-d x 0-d is the product (conj(in2) for correlate), in the S4 dtype, wrap-around exact."""
    vals = {"f": 1.5, "i": -7, "u": 200, "c": 1.5 - 2j, "b": True}
    a, b = (np.array(vals[np.dtype(d).kind], dtype=d) for d in dts)
    modes = ("full",) if runner.backend in SAMPLED_BACKENDS else ("full", "same", "valid")
    for op in ("convolve", "correlate"):
        for mode in modes:
            check(runner, op, a, b, mode)


EMPTY = [((0,), (3,)), ((3,), (0,)), ((0,), (0,)), ((0, 3), (2, 2)), ((4, 0), (2, 1)), ((2, 2), (1, 0))]


@pytest.mark.parametrize("shapes", EMPTY, ids=[f"{a}*{b}" for a, b in EMPTY])
def test_empty_input_raises(runner, shapes):
    """S3: an empty input is a ConvkitValueError (a ValueError) on every runner, every mode."""
    a, b = np.ones(shapes[0]), np.ones(shapes[1])
    for op in ("convolve", "correlate"):
        for mode in ("full", "same", "valid"):
            with pytest.raises(ConvkitValueError):
                run(runner, op, a, b, mode)
    assert issubclass(ConvkitValueError, ValueError)


# ----------------------------------------------------------------------------- option types (S13)

# name -> (bad keywords, the valid keywords with the equal (same-hash) value 1), per ndim n
BAD_OPTIONS = {
    "stride=True": (lambda n: dict(stride=True), lambda n: dict(stride=1)),
    "dilation=True": (lambda n: dict(dilation=True), lambda n: dict(dilation=1)),
    "origin=1.0": (lambda n: dict(mode="same", origin=1.0), lambda n: dict(mode="same", origin=1)),
    "stride=(1.0,)": (lambda n: dict(stride=(1.0,) * max(n, 1)), lambda n: dict(stride=(1,) * max(n, 1))),
    "dilation=np.True_": (lambda n: dict(dilation=np.True_), lambda n: dict(dilation=1)),
    "fillvalue=1+0j": (lambda n: dict(fillvalue=1 + 0j), lambda n: dict(fillvalue=1)),
    "stride=1.0": (lambda n: dict(stride=1.0), lambda n: dict(stride=1)),
    "fillvalue=np.complex128(1)": (lambda n: dict(fillvalue=np.complex128(1)), lambda n: dict(fillvalue=1)),
}
# (in1 shape, in2 shape): 0-d, 1-element, 1-D, 2-D
OPTION_SHAPES = [((), ()), ((1,), (1,)), ((5,), (3,)), ((4, 3), (2, 2))]
# the fresh-process check runs the bad options in these groups, one process each: no two
# options of a group can share a plan-cache key (True == 1.0 == np.True_ hash alike)
FRESH_GROUPS = [["stride=True", "dilation=True", "origin=1.0", "fillvalue=1+0j"],
                ["stride=1.0", "dilation=np.True_", "stride=(1.0,)", "fillvalue=np.complex128(1)"]]


def _option_dtypes(name: str):
    return ("float64", "int32") if name.startswith("fillvalue") else ("float64",)


def fresh_process_main(names: list[str]) -> list[str]:
    """Run each bad option FIRST (nothing valid ran before) on every available runner and
    shape; return what was not a convkit error. Called in a subprocess."""
    import cupy_emulated

    from convkit.testing import runners

    cupy_emulated.register()
    problems = []
    for r in runners():
        if not r.available()[0]:
            continue
        for name in names:
            bad = BAD_OPTIONS[name][0]
            for dt in _option_dtypes(name):
                for s1, s2 in OPTION_SHAPES:
                    a, b = np.ones(s1, dt), np.ones(s2, dt)
                    try:
                        run(r, "convolve", a, b, **bad(len(s1)))
                        problems.append(f"{r.name} {name} {dt} {s1}*{s2}: accepted")
                    except ConvkitError:
                        pass
                    except Exception as exc:  # noqa: BLE001 (reported, not raised)
                        problems.append(f"{r.name} {name} {dt} {s1}*{s2}: {type(exc).__name__}: {exc}")
    return problems


def test_bad_option_types_fresh_process():
    """S13: in a fresh process each wrongly typed option is a convkit error on every runner and shape."""
    here = os.path.dirname(os.path.abspath(__file__))
    code = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {here!r})
        import test_input_layouts as t
        print("RESULT" + json.dumps(t.fresh_process_main(json.loads(sys.argv[1]))))
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code, json.dumps(g)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=here) for g in FRESH_GROUPS]
    problems = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        lines = [ln for ln in out.splitlines() if ln.startswith("RESULT")]
        assert p.returncode == 0 and lines, f"subprocess failed (rc {p.returncode}):\n{err[-3000:]}"
        problems += json.loads(lines[-1][len("RESULT"):])
    assert not problems, "wrongly typed options not rejected in a fresh process:\n" + "\n".join(problems)


def _rejection(fn, *args, **kw):
    """How ``fn(*args, **kw)`` is rejected: (exception type, message); or what went wrong, as a string."""
    try:
        fn(*args, **kw)
    except ConvkitError as exc:
        return type(exc), str(exc)
    except Exception as exc:  # noqa: BLE001 (reported by the caller)
        return f"{type(exc).__name__} (not a ConvkitError): {exc}"
    return "accepted"


def _outcome(before, after) -> str:
    def say(r):
        return r if isinstance(r, str) else f"rejected ({r[0].__name__}: {r[1]})"
    return f"first {say(before)}; after a valid call {say(after)}"


@pytest.mark.parametrize("name", list(BAD_OPTIONS))
def test_bad_option_types_after_valid_call(runner, name):
    """S13: a wrongly typed option is rejected the same way before and after a valid call whose
    value is equal (and hashes equal: True == 1 == 1.0 == 1+0j), on every shape including 0-d."""
    bad, good = BAD_OPTIONS[name]
    ops = ("convolve",) if runner.backend in SAMPLED_BACKENDS else ("convolve", "correlate")
    problems = []
    for dt in _option_dtypes(name):
        for s1, s2 in OPTION_SHAPES:
            a, b = np.ones(s1, dt), np.ones(s2, dt)
            n = len(s1)
            for op in ops:
                before = _rejection(run, runner, op, a, b, **bad(n))
                try:
                    run(runner, op, a, b, **good(n))  # the equal valid value (may itself be refused for 0-d)
                except ConvkitError:
                    pass
                after = _rejection(run, runner, op, a, b, **bad(n))
                if isinstance(before, str) or after != before:
                    problems.append(f"{op} {dt} {s1}*{s2}: {_outcome(before, after)}")
    assert not problems, f"{name} not rejected the same way every time:\n" + "\n".join(problems)


ZERO_D_VALUE_CHECKS = [dict(stride=-1), dict(stride=0), dict(dilation=0), dict(dilation=-2),
                       dict(mode="full", origin=5), dict(mode="valid", origin=-1), dict(axes=7),
                       dict(axes=(0, 0)), dict(stride=(1, 2)), dict(mode="bogus"), dict(method="bogus"),
                       dict(boundary="bogus")]


@pytest.mark.parametrize("kw", ZERO_D_VALUE_CHECKS, ids=[repr(k) for k in ZERO_D_VALUE_CHECKS])
def test_zero_d_option_values_checked(runner, kw):
    """S3/S13: 0-d inputs get the same option checks as 1-element arrays (no silent product)."""
    for op in ("convolve", "correlate"):
        with pytest.raises(ConvkitError) as one:
            run(runner, op, np.array([3.0]), np.array([2.0]), **kw)
        with pytest.raises(type(one.value)):
            run(runner, op, np.array(3.0), np.array(2.0), **kw)
    with pytest.raises(type(one.value)):
        convkit.convolve(3.0, 2.0, **kw)  # Python scalars, as in the SPEC


def test_numpy_int_options_accepted(runner):
    """S13: NumPy integers are ints: stride/dilation/origin as np.int64/np.int32 equal the int call."""
    x, k = _data("f8", (9,), 5), _data("f8", (3,), 6)
    check(runner, "convolve", x, k, "full", stride=np.int64(2))
    check(runner, "correlate", x, k, "same", origin=np.int64(1), dilation=np.int32(2))
    check(runner, "convolve", x.reshape(3, 3), k.reshape(3, 1), "same", stride=(np.int64(2), np.int32(1)))
    check(runner, "convolve", np.array(3.0), np.array(2.0), "full", stride=np.int64(2))  # S3: the product
    got = run(runner, "convolve", x, k, stride=np.int64(2))
    np.testing.assert_array_equal(got, run(runner, "convolve", x, k, stride=2), strict=True)


# ----------------------------------------------------------------------------- Dask


@pytest.fixture
def da():
    return pytest.importorskip("dask.array")


DASK_BACKENDS = ["numpy", "cupy-emulated", "jax"]


def _dask_backend(name):
    info = {b.name: b for b in convkit.list_backends()}.get(name)
    if info is None or not info.available:
        pytest.skip(f"backend {name!r} unavailable")
    return name


def dask_check(da, op, x, k, chunks, mode="full", backend="numpy", **kw):
    """Lazy convkit on ``da.from_array(x, chunks)`` (kernel ``k``: NumPy) equals the reference."""
    x0, k0 = native(x), native(k)
    snaps = snapshot(x), snapshot(k)
    expected = reference(op, x0, k0, mode, **kw)
    lazy = getattr(convkit, op)(da.from_array(x, chunks=chunks), k, mode, backend=backend, **kw)
    assert isinstance(lazy, da.Array)
    assert lazy.dtype.isnative, f"lazy dtype {lazy.dtype.str} is not native byte order (S4)"
    got = np.asarray(lazy.compute(scheduler="threads"))
    assert_unchanged(x, snaps[0])
    assert_unchanged(k, snaps[1])
    assert got.dtype.isnative, f"result dtype {got.dtype.str} is not native byte order (S4)"
    assert_matches(got, expected, x0, k0, op, mode=mode, **kw)


DASK_BYTE_ORDER = [(dt, "numpy") for dt in (">f8", ">i4", ">c16", ">u2", ">f4")] + [
    (dt, be) for be in DASK_BACKENDS[1:] for dt in (">f8", ">i8")]


@pytest.mark.parametrize("dt, backend", DASK_BYTE_ORDER)
def test_dask_byte_order(da, dt, backend):
    """Dask (issue #6): '>' chunks and/or a '>' kernel give the native answer, natively typed."""
    backend = _dask_backend(backend)
    x, k = _data(dt, (11,), 7), _data(dt, (3,), 8)
    for a, b in [(swapped(x), swapped(k)), (swapped(x), k), (x, swapped(k))]:
        dask_check(da, "convolve", a, b, 4, "full", backend=backend)
        dask_check(da, "correlate", a, b, (5, 1, 5), "same", backend=backend, boundary="wrap")
    x2, k2 = _data(dt, (6, 7), 9), _data(dt, (2, 3), 10)
    dask_check(da, "convolve", swapped(x2), swapped(k2), (4, 3), "same", backend=backend)


@pytest.mark.parametrize("lay", LAYOUTS)
def test_dask_layouts(da, lay):
    """Dask chunks of Fortran / negative-stride / sliced / unaligned / read-only arrays."""
    x, k = _data("f8", (6, 7), 11), _data("f8", (2, 3), 12)
    dask_check(da, "convolve", layout(x, lay), layout(k, lay), (4, 3), "full")
    xi, ki = _data("i8", (10,), 13), _data("i8", (3,), 14)
    dask_check(da, "correlate", layout(xi, lay), layout(ki, lay), 3, "same", stride=2)


def test_dask_zero_d_and_empty(da):
    """S3 through Dask: 0-d x 0-d is the product; an empty chunked input is a ValueError."""
    for dt in ("f8", ">f8", ">i4"):
        a, b = np.array(3, dtype=dt), np.array(2, dtype=dt)
        got = np.asarray(convkit.convolve(da.from_array(a), b).compute())
        assert got.shape == () and got.dtype.isnative and got == 6
    for s1, s2 in [((0,), (3,)), ((3, 0), (2, 1))]:
        with pytest.raises(ConvkitValueError):
            convkit.convolve(da.from_array(np.ones(s1), chunks=2), np.ones(s2)).compute()


def _dask_call(da, a, b, **kw):
    return convkit.convolve(da.from_array(a, chunks=2), b, **kw).compute()


@pytest.mark.parametrize("name", list(BAD_OPTIONS))
def test_dask_bad_option_types_after_valid_call(da, name):
    """S13 through Dask: wrongly typed options are errors before and after an equal valid call."""
    bad, good = BAD_OPTIONS[name]
    problems = []
    for dt in _option_dtypes(name):
        for s1, s2 in OPTION_SHAPES[1:]:
            a, b = np.ones(s1, dt), np.ones(s2, dt)
            n = len(s1)

            before = _rejection(_dask_call, da, a, b, **bad(n))
            _dask_call(da, a, b, **good(n))
            after = _rejection(_dask_call, da, a, b, **bad(n))
            if isinstance(before, str) or after != before:
                problems.append(f"{dt} {s1}*{s2}: {_outcome(before, after)}")
    assert not problems, f"{name} not rejected the same way every time:\n" + "\n".join(problems)
