"""Rules every backend must follow the same way: long double on JAX (S4/S13), one exactness
rule for integer FFTs (S5/S8), and results that do not depend on the number of cores (S8).

Oracles are independent of convkit: exact Python ``int`` / ``fractions.Fraction`` arithmetic
(tests/reference.py and the helpers below), NumPy/SciPy, and, for determinism, the bytes of
the same call run in a fresh process pinned to one core.
"""

from __future__ import annotations

import importlib.util
import itertools
import math
import os
import subprocess
import sys
import textwrap
from fractions import Fraction

import numpy as np
import pytest
from reference import reference

import convkit
from convkit.errors import ConvkitTypeError, ConvkitValueError

LONG = np.dtype(np.longdouble)
CLONG = np.dtype(np.clongdouble)
needs_long = pytest.mark.skipif(LONG.itemsize <= 8, reason="long double is float64 on this platform")


def _jax():
    return pytest.importorskip("convkit.backends.jax")


def _jax_device(a):
    """``a`` as a JAX array with its 64-bit type kept."""
    import jax
    import jax.numpy as jnp

    with jax.enable_x64(True):
        return jnp.asarray(a)


# ----------------------------------------------------------------------------- long double (S4, S13)


@needs_long
@pytest.mark.parametrize("case", ["in1", "in2-complex", "dtype", "correlate-fft"])
def test_jax_refuses_long_double_with_a_convkit_error_before_any_jax_call(case, monkeypatch):
    """S4/S13: JAX has no long double. A long double input (or ``dtype=``) on the JAX backend
    is a one-line ConvkitTypeError naming the argument and dtype and saying what to do, raised
    before any JAX call (never JAX's own jit TypeError)."""
    jb = _jax()

    def no_jax(*args, **kwargs):
        raise AssertionError("JAX was called")

    monkeypatch.setattr(jb, "_plan_function", no_jax)
    monkeypatch.setattr(jb, "_enable_x64", no_jax)
    x = np.arange(10.0)
    calls = {
        "in1": (lambda: convkit.convolve(x.astype(LONG), [1.0, 2, 3], backend="jax"), "in1", LONG),
        "in2-complex": (lambda: convkit.convolve(x, np.array([1 + 1j, 2], CLONG), "same", backend="jax"),
                        "in2", CLONG),
        "dtype": (lambda: convkit.convolve(x, [1.0, 2], dtype=LONG, backend="jax"), "dtype", LONG),
        "correlate-fft": (lambda: convkit.correlate(x.astype(LONG), x, method="fft", backend="jax"),
                          "in1", LONG),
    }
    call, name, dt = calls[case]
    cast = "complex128" if dt.kind == "c" else "float64"
    with pytest.raises(ConvkitTypeError) as info:
        call()
    msg = str(info.value)
    assert "\n" not in msg, msg
    assert name in msg and str(dt) in msg and cast in msg and "backend='numpy'" in msg, msg


@needs_long
def test_jax_device_inputs_with_long_double_dtype_refused_first(monkeypatch):
    """S4/S13: JAX arrays with ``dtype=longdouble`` get the long-double message (not the x64 one)."""
    jb = _jax()
    import jax.numpy as jnp

    monkeypatch.setattr(jb, "_plan_function", lambda *a: pytest.fail("JAX plan function was called"))
    with pytest.raises(ConvkitTypeError) as info:
        convkit.convolve(jnp.ones(5, jnp.float32), jnp.ones(2, jnp.float32), dtype=LONG)
    msg = str(info.value)
    assert "dtype" in msg and str(LONG) in msg and "backend='numpy'" in msg, msg
    assert "jax_enable_x64" not in msg, msg


def _exact_conv_1d(x, k):
    """Full 1-D convolution in exact rational arithmetic."""
    fx = [Fraction(*v.as_integer_ratio()) for v in x]
    fk = [Fraction(*v.as_integer_ratio()) for v in k]
    out = [Fraction(0)] * (len(fx) + len(fk) - 1)
    for i, a in enumerate(fx):
        for j, b in enumerate(fk):
            out[i + j] += a * b
    return out


@needs_long
@pytest.mark.parametrize("method", ["direct", "fft", "oa"])
def test_numpy_long_double_is_computed_in_long_double(method, rng):
    """S4/S5: the NumPy backend keeps long double and stays within the S5 bound for ITS unit
    roundoff (2**-64), which float64 arithmetic could not meet (the inputs differ from their
    float64 roundings). Oracle: exact Fraction arithmetic."""
    x = np.longdouble(1) + rng.integers(1, 1000, 300).astype(LONG) * np.longdouble(2) ** -60
    k = np.longdouble(-0.5) + rng.integers(1, 1000, 9).astype(LONG) * np.longdouble(2) ** -61
    got = convkit.convolve(x, k, method=method, backend="numpy")
    assert got.dtype == LONG
    exact = _exact_conv_1d(x, k)
    err = max(abs(Fraction(*g.as_integer_ratio()) - e) for g, e in zip(got, exact))
    u = Fraction(1, 2**64)  # long double (x87 80-bit) unit roundoff
    absx = [abs(Fraction(*v.as_integer_ratio())) for v in x]
    absk = [abs(Fraction(*v.as_integer_ratio())) for v in k]
    if method == "direct":
        taps = len(k)
        gamma = taps * u / (1 - taps * u)
        scale = max(sum(absx[i - j] * absk[j] for j in range(len(k)) if 0 <= i - j < len(x))
                    for i in range(len(x) + len(k) - 1))
        bound = gamma * scale
    else:  # S5 normwise FFT bound: 8 u log2(L) ||x|| ||k||
        length = len(x) + len(k) - 1
        bound = 8 * u * math.log2(length) * math.sqrt(sum(float(a * a) for a in absx)) \
            * math.sqrt(sum(float(a * a) for a in absk))
        bound = Fraction(bound)
    assert err <= bound, (float(err), float(bound))
    assert err < Fraction(1, 2**56)  # float64 arithmetic would be off by ~2**-52


# ----------------------------------------------------------------------------- integer FFT rule (S5, S8)


def test_rule_accepts_provably_exact_single_tap_and_refuses_unrepresentable():
    """S5: the rule of convkit.bounds is exact-aware: a one-tap product below 2**53 is exact;
    2**53 and more (where float64 has gaps) is refused; so is an FFT whose rigorous error
    bound reaches 1/2."""
    from convkit.bounds import fft_int_is_exact

    one = dict(taps=1, sizes=(1,))
    assert fft_int_is_exact(2**25, 2**25, 2**25, 2**25, sum_x=2**25, sum_k=2**25, **one)
    assert fft_int_is_exact(2**26, 2**26 - 1, 2**26, 2**26 - 1, sum_x=2**26, sum_k=2**26 - 1, **one)
    assert not fft_int_is_exact(2**27, 2**26, 2**27, 2**26, sum_x=2**27, sum_k=2**26, **one)
    # 40 taps of size 2**20 on 1000 samples of size 2**20: products below 2**53, FFT error not
    assert not fft_int_is_exact(2**20, 2**20, 2**20 * 1000**0.5, 2**20 * 40**0.5,
                                sum_x=2**20 * 1000, sum_k=2**20 * 40, taps=40, sizes=(1039,))
    assert fft_int_is_exact(100, 100, 100 * 1000**0.5, 100 * 40**0.5, sum_x=100 * 1000,
                            sum_k=100 * 40, taps=40, sizes=(1039,))


def test_rule_bounds_the_error_actually_made(rng):
    """S5: the rigorous bound of the rule covers the error a float64 FFT actually makes
    (oracle: exact Python-int convolution; the FFT is numpy.fft, not convkit)."""
    from convkit.bounds import int_fft_error

    for n, m, big in [(1000, 40, 2**20), (5000, 7, 2**22), (64, 64, 2**24), (300, 299, 2**18)]:
        x = rng.integers(-big, big, n)
        k = rng.integers(-big, big, m)
        length = n + m - 1
        approx = np.fft.irfft(np.fft.rfft(x, length) * np.fft.rfft(k, length), length)
        exact = np.array([int(v) for v in np.convolve(x.astype(object), k.astype(object))], dtype=object)
        err = max(abs(Fraction(float(a)) - int(e)) for a, e in zip(approx, exact))
        xf, kf = np.abs(x.astype(float)), np.abs(k.astype(float))
        bound = int_fft_error(float(np.linalg.norm(xf)), float(np.linalg.norm(kf)), float(xf.sum()),
                              float(kf.sum()), sizes=(length,))
        assert float(err) <= bound, (n, m, float(err), bound)


def test_single_tap_int_fft_is_exact(runner):
    """S5/S8: ``convolve([2**25], [2**25], method='fft')`` is the exact 2**50 on every runner
    (one tap: the product is exact below 2**53); NumPy used to refuse it."""
    got = runner.run("convolve", np.array([2**25]), np.array([2**25]), method="fft")
    assert got.dtype == np.int64 and got.tolist() == [2**50]


@pytest.mark.parametrize("method", ["fft", "oa"])
def test_single_tap_large_int_grids_are_exact(runner, method, rng):
    """S5: one-tap kernels with large integers (exact results up to ~2**52) give the exact
    Python-int result on every runner, every mode/boundary, N-d and batched."""
    cases = [((5, 7), (1, 1), {}), ((4, 9), (1, 1), dict(mode="same", boundary="symm")),
             ((13,), (1,), dict(mode="valid")), ((3, 8), (3, 1), dict(axes=1, mode="same", boundary="wrap"))]
    for xs, ks, kw in cases:
        a = rng.integers(-(2**26), 2**26, xs)
        b = rng.integers(-(2**26) + 1, 2**26, ks)
        for op in ("convolve", "correlate"):
            got = runner.run(op, a, b, method=method, **kw)
            np.testing.assert_array_equal(got, reference(op, a, b, **kw), strict=True)


def _backend_call(backend: str, op: str, a, b, **kw):
    if backend == "jax-device":
        import jax

        with jax.enable_x64(True):  # as the jax-device runner: 64-bit device arrays in and out
            return np.asarray(getattr(convkit, op)(_jax_device(a), _jax_device(b), **kw))
    if backend.startswith("jax"):
        _jax()
    return getattr(convkit, op)(a, b, backend=backend, **kw)


BACKENDS = ["numpy", "jax", "jax-device", "cupy-emulated"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("method", ["fft", "oa"])
def test_int_fft_that_cannot_be_exact_raises_on_every_backend(backend, method):
    """S5/S8/S13: products near 2**61 are not float64 numbers, so no float64 FFT can return
    them; an explicit FFT raises ConvkitValueError with the same message on every backend
    (JAX used to run direct instead)."""
    a = np.array([2**31 + 1, 3, 2**31 - 1, -7], np.int64)
    b = np.array([2**30 + 7, 5], np.int64)
    with pytest.raises(ConvkitValueError) as info:
        _backend_call(backend, "convolve", a, b, method=method)
    with pytest.raises(ConvkitValueError) as ref_info:
        convkit.convolve(a, b, method=method, backend="numpy")
    assert str(info.value) == str(ref_info.value)
    assert f"method={method!r} cannot give the exact integer result" in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("backend", BACKENDS)
def test_random_int_fft_grids_bit_identical_or_refused_together(backend, rng):
    """S5/S8: over a random grid of integer dtypes, shapes, modes, boundaries and sizes, an
    explicit FFT either equals the exact Python-int result bit for bit (wrapped to the result
    dtype) or raises ConvkitValueError, and it does the same on every backend as on NumPy."""
    dtypes = ["int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64", "bool"]
    modes = [dict(mode="full"), dict(mode="same", boundary="symm"), dict(mode="valid"),
             dict(mode="same", boundary="fill", fillvalue=3), dict(mode="causal", stride=2)]
    outcomes = {"exact": 0, "refused": 0}
    for i in range(27):
        dt = np.dtype(dtypes[i % len(dtypes)])
        nd = 1 + i % 2
        xs = tuple(int(v) for v in rng.integers(4, 30, nd))
        ks = tuple(int(v) for v in rng.integers(1, 5, nd))
        if i % 7 == 0:
            ks = (1,) * nd  # single tap
        if dt.kind == "b":
            a, b = rng.integers(0, 2, xs).astype(bool), rng.integers(0, 2, ks).astype(bool)
        else:
            info = np.iinfo(dt)
            top = min(info.max, [2**5, 2**12, 2**20, 2**28, 2**40][i % 5])
            lo = 0 if dt.kind == "u" else -top
            a = rng.integers(lo, top, xs, endpoint=True).astype(dt)
            b = rng.integers(lo, top, ks, endpoint=True).astype(dt)
        kw = dict(modes[i % len(modes)])
        if kw.get("fillvalue") and dt.kind == "b":
            kw["fillvalue"] = 1
        op = ("convolve", "correlate")[i % 2]
        method = ("fft", "oa")[(i // 2) % 2]
        try:
            want = convkit.__dict__[op](a, b, method=method, backend="numpy", **kw)
        except ConvkitValueError as exc:
            outcomes["refused"] += 1
            with pytest.raises(ConvkitValueError) as info:
                _backend_call(backend, op, a, b, method=method, **kw)
            assert str(info.value) == str(exc)
            continue
        outcomes["exact"] += 1
        exp = reference(op, a, b, **kw)
        np.testing.assert_array_equal(want, exp, strict=True)
        got = _backend_call(backend, op, a, b, method=method, **kw)
        np.testing.assert_array_equal(np.asarray(got), exp, strict=True)
    assert outcomes["exact"] >= 15 and outcomes["refused"] >= 2, outcomes


# ----------------------------------------------------------------------------- determinism (S8)

_CHILD = textwrap.dedent("""
    import json, os, sys
    cores, case, path = sys.argv[1], sys.argv[2], sys.argv[3]
    if cores == "one":
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    import numpy as np
    import convkit
    from convkit.backends import numpy as nb

    rng = np.random.default_rng(7)
    seen = {"jobs": 0, "pieces": 0}
    real_map = nb._map

    def spy_map(func, jobs):
        jobs = list(jobs)
        seen["jobs"] = max(seen["jobs"], len(jobs))
        return real_map(func, jobs)

    nb._map = spy_map
    if case.startswith("jax"):
        from convkit.backends import jax as jb

        real_pieces = jb.JaxBackend._fused_in_pieces

        def spy_pieces(self, plan, x, w, axis, bounds):
            seen["pieces"] = max(seen["pieces"], len(bounds))
            return real_pieces(self, plan, x, w, axis, bounds)

        jb.JaxBackend._fused_in_pieces = spy_pieces
    x, k, kw = CASES[case](rng)
    out = convkit.convolve(x, k, **kw)
    np.save(path, np.asarray(out))
    print(json.dumps(seen))
""")

_numba = importlib.util.find_spec("numba") is not None
_opencv = importlib.util.find_spec("cv2") is not None

#: case -> (code building ``(x, k, kwargs)`` from ``rng``, what must be cut on all cores)
_CASES = {
    # overlap-add in fixed blocks: _OA_THREAD_MIN_SIZE samples
    "numpy-oa-1d": ("rng.standard_normal(500_000), rng.standard_normal(64), "
                    "dict(method='oa', backend='numpy')", "jobs"),
    # numpy.convolve blocks: more than thread_min_time of work on one core
    "numpy-direct-1d": ("rng.standard_normal(400_000), rng.standard_normal(16), "
                        "dict(method='direct', backend='numpy')", "jobs"),
    # ndimage row blocks: more than thread_min_time of work on one core (OpenCV left out)
    "numpy-ndimage-2d": ("rng.standard_normal((400, 400)), rng.standard_normal((5, 5)) + 3, "
                         "dict(mode='same', boundary='symm', method='direct', "
                         "backend=__import__('convkit.backends.numpy').backends.numpy.NumpyBackend(engines=False))",
                         "jobs"),
    # Numba's loop in bands of rows (a call large enough for every core)
    "numpy-numba-2d": ("rng.standard_normal((600, 500)), rng.standard_normal((7, 7)), "
                       "dict(mode='same', boundary='symm', method='direct', backend='numpy')",
                       "jobs" if _numba else None),
    # OpenCV's filter2D and sepFilter2D in bands of rows on convkit's threads, and its DFT in tiles
    # on them
    "numpy-opencv-2d": ("rng.standard_normal((1000, 900)), rng.standard_normal((7, 7)), "
                        "dict(mode='same', boundary='symm', method='direct', "
                        "backend=__import__('convkit.backends.numpy').backends.numpy.NumpyBackend(numba=False))",
                        "jobs" if _opencv else None),
    "numpy-opencv-separable-2d": ("rng.standard_normal((700, 600)).astype('float32'), "
                                  "np.outer(*[np.exp(-np.linspace(-2, 2, 15) ** 2).astype('float32')] * 2), "
                                  "dict(mode='same', method='auto', backend='numpy')",
                                  "jobs" if _opencv else None),
    "numpy-opencv-dft-2d": ("rng.standard_normal((900, 1000)), rng.standard_normal((31, 31)), "
                            "dict(mode='same', method='auto', backend='numpy')", "jobs" if _opencv else None),
    "numpy-fft-2d": ("rng.standard_normal((300, 401)), rng.standard_normal((21, 17)), "
                     "dict(method='fft', backend='numpy')", None),
    # JAX direct cut into pieces (_PIECE_WORK per piece), unrolled taps
    "jax-direct-1d": ("rng.standard_normal(100_000), rng.standard_normal(16), "
                      "dict(method='direct', backend='jax')", "pieces"),
    # JAX overlap-add on 1-D data: one-axis FFTs of many block rows (XLA spreads rows on threads)
    "jax-oa-1d": ("rng.standard_normal(200_000), rng.standard_normal(300), "
                  "dict(method='oa', backend='jax')", None),
    # JAX FFT over 2 axes: XLA's multi-axis FFT is NOT thread-count independent (xfail below)
    "jax-fft-2d": ("rng.standard_normal((300, 401)), rng.standard_normal((21, 17)), "
                   "dict(method='fft', backend='jax')", None),
    # JAX direct, float32 with more taps than _UNROLL_TAPS (was lax.conv on CPU)
    "jax-direct-1d-float32-long": ("rng.standard_normal(100_000).astype('float32'), "
                                   "rng.standard_normal(100).astype('float32'), "
                                   "dict(method='direct', backend='jax')", "pieces"),
}


def _run_child(case: str, cores: str, path) -> dict:
    import json

    cases = ", ".join(f"{name!r}: lambda rng: ({expr})" for name, (expr, _) in _CASES.items())
    code = f"CASES = {{{cases}}}\n" + _CHILD
    env = dict(os.environ, PYTHONHASHSEED="0")
    if case.startswith("jax"):  # the CPU's cores are the question, also where JAX's default is a GPU
        env["JAX_PLATFORMS"] = "cpu"
    done = subprocess.run([sys.executable, "-c", code, cores, case, str(path)], capture_output=True,
                          text=True, env=env, timeout=120, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


_KNOWN = {"jax-fft-2d": "known exception (docs/determinism.md): XLA:CPU's multi-axis FFT splits "
                        "its lines over its threads; 2-D bits follow the split (in some runs)"}


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs CPU affinity control and at least 2 cores")
@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.xfail(reason=_KNOWN[c], strict=False))
                                  if c in _KNOWN else c for c in _CASES])
def test_same_bits_on_one_core_and_on_all_cores(case, tmp_path):
    """S8 (and docs/determinism.md): per backend, method and input, the result is bit-identical
    whatever the number of cores. The same call runs in two fresh processes, one pinned to a
    single core before NumPy/JAX are imported, one on all cores; the saved bytes must match.
    The all-cores run must really take the blocked/cut path. Oracle for the values: SciPy."""
    if case.startswith("jax"):
        _jax()
    expr, cut = _CASES[case]
    one, everyone = tmp_path / "one.npy", tmp_path / "all.npy"
    _run_child(case, "one", one)
    seen = _run_child(case, "all", everyone)
    if cut:
        assert seen[cut] >= 2, seen
    a, b = np.load(one), np.load(everyone)
    assert a.dtype == b.dtype and a.shape == b.shape
    assert a.tobytes() == b.tobytes(), f"{np.mean(a != b):.1%} of the outputs differ"
    # the values themselves: SciPy's direct/FFT result within the S5 bound
    import scipy.signal

    from convkit.testing import assert_conv_close

    x, k, kw = eval(f"lambda rng: ({expr})")(np.random.default_rng(7))
    kw = {key: v for key, v in kw.items() if key not in ("backend",)}
    mode = kw.pop("mode", "full")
    method = kw.pop("method")
    if kw.get("boundary") == "symm":
        exp = scipy.signal.convolve2d(x, k, mode, boundary="symm")
    else:
        exp = scipy.signal.convolve(x.astype(np.float64), k.astype(np.float64), mode, method="direct")
    assert_conv_close(a, exp, x, k, method=method, mode=mode, check_dtype=False, **kw)


def test_auto_pick_does_not_depend_on_the_core_count(monkeypatch):
    """S8: the NumPy backend's constants, so auto's pick and its bits, are the same on one core as
    on sixteen (OpenCV's DFT in tiles is priced on a fixed number of threads, not one per core)."""
    from convkit.backends import numpy as nb

    caps = []
    for cores in (1, 2, 16):
        monkeypatch.setattr(nb, "cpu_threads", lambda cores=cores: cores)
        caps.append(nb.NumpyBackend().capabilities)
    assert caps[0] == caps[1] == caps[2]


@pytest.mark.parametrize("threads", [1, 2, 3, 5, 8])
def test_blocked_numpy_paths_do_not_depend_on_thread_count(threads, monkeypatch, rng):
    """S8: the NumPy backend's cut paths (overlap-add, numpy.convolve and ndimage row blocks,
    separable passes) give the same bytes whatever cpu_threads() says. Oracle: SciPy within S5."""
    import scipy.signal

    from convkit.backends import numpy as nb
    from convkit.testing import assert_conv_close

    x1 = rng.standard_normal(600_000)
    k1 = rng.standard_normal(96)
    x2 = rng.standard_normal((300, 280))
    k2 = rng.standard_normal((4, 5)) + 2
    calls = [(x1, k1, dict(method="oa")), (x1[:150_000], k1[:20], dict(method="direct")),
             (x2, k2, dict(mode="same", boundary="wrap", method="direct"))]
    with monkeypatch.context() as mp:
        mp.setattr(nb, "cpu_threads", lambda: 1)
        base = [convkit.convolve(x, k, backend="numpy", **kw) for x, k, kw in calls]
    monkeypatch.setattr(nb, "cpu_threads", lambda: threads)
    for (x, k, kw), want in zip(calls, base):
        got = convkit.convolve(x, k, backend="numpy", **kw)
        assert got.tobytes() == want.tobytes(), (kw, threads)
    assert_conv_close(base[0], scipy.signal.fftconvolve(x1, k1), x1, k1, method="oa")


@pytest.mark.parametrize("shape, axes", [((1001,), (0,)), ((37, 1000), (1,)), ((37, 1000), (0, 1)),
                                         ((5, 3, 64, 81), (2, 3)), ((130, 77), (0,))])
def test_scipy_fft_bits_do_not_depend_on_workers(shape, axes, rng):
    """S8: the NumPy backend calls scipy.fft with ``workers=-1`` (``os.cpu_count()``, which
    ignores the affinity mask); its determinism rests on pocketfft computing every line the
    same way whatever the number of workers. Checked here on the transforms it runs."""
    import scipy.fft

    x = rng.standard_normal(shape)
    s = [2 * shape[a] for a in axes]
    spec = scipy.fft.rfftn(x, s=s, axes=axes, workers=1)
    for fn, a in ((scipy.fft.rfftn, x), (scipy.fft.fftn, x + 1j * x[::-1]), (scipy.fft.irfftn, spec)):
        want = fn(a, s=s, axes=axes, workers=1).tobytes()
        for workers in (2, 3, 8):
            assert fn(a, s=s, axes=axes, workers=workers).tobytes() == want, (fn.__name__, workers)


def test_jax_direct_pieces_depend_only_on_the_shape(monkeypatch, jax_on_cpu):
    """S8: where the JAX CPU direct is cut into pieces depends on the plan alone (never on
    the number of cores), and large 1-D work is still cut into at least 2 pieces."""
    jb = _jax()
    d = np.dtype(np.float64)
    seen = []
    real = jb._pieces

    def spy(p):
        r = real(p)
        seen.append(r)
        return r

    monkeypatch.setattr(jb.direct, "_pieces", spy)
    import jax

    x, k = np.ones(300_000, d), np.ones(16, d)
    for cores in (1, 2, 3, 64):
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid, c=cores: set(range(c)), raising=False)
        jax.clear_caches()  # trace again: _pieces runs while tracing
        convkit.convolve(x, k, method="direct", backend="jax")
    jax.clear_caches()
    assert len(seen) == 4 and all(s == seen[0] for s in seen), seen
    assert seen[0] is not None and len(seen[0][1]) >= 2
    assert list(itertools.chain.from_iterable(seen[0][1]))[0] == 0


def test_long_numpy_convolve_is_cut_below_blas_threading(monkeypatch):
    """Determinism: numpy.convolve's BLAS dot products stay at most _BLAS_DOT_TAPS long (OpenBLAS
    threads longer ones), and the pieces add up to the one-call result within the S5 bound."""
    from convkit.backends import numpy as npb

    rng = np.random.default_rng(5)
    x, k = rng.standard_normal(30_000), rng.standard_normal(20_000)
    lengths = []
    real = np.convolve

    def spy(a, v, mode="full"):
        lengths.append(min(len(a), len(v)))
        return real(a, v, mode)

    monkeypatch.setattr(npb.np, "convolve", spy)
    got = convkit.convolve(x, k, method="direct", backend=npb.NumpyBackend(numba=False))  # numpy.convolve
    monkeypatch.setattr(npb.np, "convolve", real)
    assert lengths and max(lengths) <= npb._BLAS_DOT_TAPS
    from convkit.testing import assert_conv_close

    assert_conv_close(got, real(x, k), x, k, method="direct")  # numpy's one-call sums as the oracle
