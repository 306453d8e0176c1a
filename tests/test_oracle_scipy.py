"""Oracle grid: convkit against SciPy and NumPy where SPEC says they agree (S1, S2, S4, S5, S7).

SciPy is the oracle only where it computes the SPEC result:

* ``scipy.signal.convolve/correlate(method="direct")``: every dtype but bool and float16 for
  N-d (SciPy raises); float16 1-D accumulates in float16 (less accurate than S5), so bool and
  float16 use the exact reference of tests/reference.py. SciPy's FFT returns floats for
  integer inputs (S4 deviation), so integer oracles are always SciPy's direct method.
* ``fftconvolve/oaconvolve``: float and complex inputs (compared with the FFT bound of S5).
* ``convolve2d/correlate2d``: every boundary; ``correlate2d`` 'same' is ``align="tf"`` (S2,
  scipy#1968). ``correlate2d(a, b, "valid")`` with complex inputs where ``b`` dominates returns
  ``conj`` of the SPEC result (SciPy swaps without the ``flip(conj(.))`` of S3); that case is
  checked against the exact reference instead and the deviation is asserted explicitly.
* ``scipy.ndimage.convolve/correlate``: float64 only (ndimage keeps in1's dtype and truncates,
  S4 deviation); every mode and origin, with the origin mapping of S2.
* ``numpy.convolve``: full/same/valid when ``len(a) >= len(v)`` (numpy#6316, S2).

Float inputs of lower precision are given to SciPy upcast to float64/complex128, so the oracle
is accurate and the comparison uses the S5 bound of the dtype convkit computes in.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.ndimage as ndi
import scipy.signal as sps
from reference import DTYPES, assert_matches, random_array, reference, sample

METHODS = ("direct", "fft", "oa", "auto")
OPS = ("convolve", "correlate")
MODES = ("full", "same", "valid")

# (in1 shape, in2 shape): 1-D to 3-D, odd and even kernels, kernels longer than the input,
# size-1 axes
SHAPES = [
    ((9,), (3,)),
    ((8,), (4,)),
    ((5,), (7,)),
    ((1,), (3,)),
    ((6,), (1,)),
    ((6, 5), (3, 2)),
    ((4, 4), (5, 6)),
    ((1, 7), (1, 3)),
    ((5, 1), (2, 1)),
    ((4, 5, 3), (3, 2, 2)),
    ((3, 3, 1), (2, 4, 1)),
    ((3, 5), (5, 3)),  # neither dominates: 'valid' raises (S3)
]


def _dominates(s1, s2) -> bool:
    return all(p >= q for p, q in zip(s1, s2)) or all(q >= p for p, q in zip(s1, s2))


def _upcast(a: np.ndarray) -> np.ndarray:
    if a.dtype.kind == "c":
        return a.astype(np.complex128)
    if a.dtype.kind == "f":
        return a.astype(np.float64)
    return a


def _ids(shapes):
    return [f"{a}x{b}".replace(" ", "") for a, b in shapes]


# ----------------------------------------------------------------------------- scipy.signal


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shapes", SHAPES, ids=_ids(SHAPES))
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("kind", ["float64", "complex128"])
@pytest.mark.sampled(every=24)
def test_signal_convolve_correlate_float(runner, request, rng, op, shapes, mode, method, kind):
    """S1/S2/S3: defaults reproduce scipy.signal.convolve/correlate (shape, alignment, dtype)."""
    a, b = random_array(rng, shapes[0], kind), random_array(rng, shapes[1], kind)
    sp = getattr(sps, op)
    if mode == "valid" and not _dominates(*shapes):
        with pytest.raises(ValueError):
            sp(a, b, mode)  # SciPy raises too
        with pytest.raises(ValueError, match="valid"):
            runner.run(op, a, b, mode, method=method)
        return
    expected = sp(a, b, mode, method="direct")
    got = runner.run(op, a, b, mode, method=method)
    assert_matches(got, expected, a, b, op, method=method, mode=mode)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.sampled(every=4)
def test_signal_every_dtype(runner, request, rng, dtype, op, method):
    """S4/S5: every dtype, result_type dtype; ints exact with wrap-around on every method."""
    for s1, s2 in (((11,), (4,)), ((5, 4), (3, 3)), ((3, 4, 2), (2, 3, 2))):
        a, b = random_array(rng, s1, dtype), random_array(rng, s2, dtype)
        for mode in sample(runner, MODES, 1):
            if dtype in ("bool", "float16"):  # SciPy: N-d unsupported / float16 accumulation
                expected = reference(op, a, b, mode)
            else:
                expected = getattr(sps, op)(_upcast(a), _upcast(b), mode, method="direct")
            try:
                got = runner.run(op, a, b, mode, method=method)
            except ValueError as exc:  # S5: an explicit FFT on integers may refuse, never lie
                assert method in ("fft", "oa") and np.dtype(dtype).kind in "iu", exc
                assert "method=" in str(exc)
                continue
            assert_matches(got, expected, a, b, op, method=method, mode=mode)


@pytest.mark.parametrize("dtype", ["int8", "uint16", "int64", "bool"])
@pytest.mark.parametrize("method", ["fft", "oa"])
def test_signal_int_fft_small_values_exact(runner, rng, dtype, method):
    """S5: explicit FFT on small integers is exact (rounded back) and keeps the int dtype."""
    a = random_array(rng, (7, 6), dtype, small=True)
    b = random_array(rng, (3, 4), dtype, small=True)
    for op in OPS:
        got = runner.run(op, a, b, "same", method=method)
        assert_matches(got, reference(op, a, b, "same"), a, b, op, method=method, mode="same")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shapes", [s for s in SHAPES if _dominates(*s)], ids=_ids([s for s in SHAPES
                                                                                  if _dominates(*s)]))
@pytest.mark.parametrize("func", ["fftconvolve", "oaconvolve"])
@pytest.mark.parametrize("kind", ["float32", "float64", "complex128"])
@pytest.mark.sampled(every=24)
def test_fftconvolve_oaconvolve(runner, request, rng, func, shapes, mode, kind):
    """S1/S5: scipy.signal.fftconvolve/oaconvolve agree with every method within the FFT bound."""
    a, b = random_array(rng, shapes[0], kind), random_array(rng, shapes[1], kind)
    expected = getattr(sps, func)(_upcast(a), _upcast(b), mode)
    for method in sample(runner, METHODS, 2):
        got = runner.run("convolve", a, b, mode, method=method)
        # the oracle itself carries FFT error: compare with the FFT bound whatever the method
        assert_matches(got, expected, a, b, "convolve", method="fft", mode=mode)


SHAPES_2D = [
    ((6, 7), (3, 3)),
    ((6, 7), (4, 2)),  # even kernel
    ((5, 5), (2, 1)),
    ((1, 6), (1, 3)),  # size-1 axis
    ((3, 4), (5, 6)),  # in1 smaller: boundary still pads in1 (S7)
    ((2, 2), (6, 5)),  # pads longer than the input repeat the rule
]


@pytest.mark.parametrize("boundary", ["fill", "wrap", "symm"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shapes", SHAPES_2D, ids=_ids(SHAPES_2D))
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", ["float64", "int16", "complex128"])
@pytest.mark.sampled(every=24)
def test_convolve2d_correlate2d(runner, request, rng, dtype, op, shapes, mode, boundary):
    """S2/S7: convolve2d/correlate2d with every boundary; correlate2d 'same' == align='tf'."""
    a, b = random_array(rng, shapes[0], dtype), random_array(rng, shapes[1], dtype)
    fill = {"float64": 1.5, "int16": 3, "complex128": 2 - 1j}[dtype]
    kw = dict(mode=mode, boundary=boundary, fillvalue=fill if boundary == "fill" else 0)
    if op == "correlate" and mode == "same":
        kw["align"] = "tf"  # scipy#1968: correlate2d is shifted for even kernels (S2)
    sp = sps.convolve2d if op == "convolve" else sps.correlate2d
    expected = sp(a, b, mode, boundary=boundary, fillvalue=kw["fillvalue"])
    swapped = mode == "valid" and all(q >= p for p, q in zip(*shapes)) and shapes[0] != shapes[1]
    if op == "correlate" and swapped and dtype == "complex128":
        # Known SciPy deviation (S3): correlate2d swaps the inputs for 'valid' but returns
        # conj of correlate(a, b) = flip(conj(correlate(b, a))). Not copied: check the reference.
        exact = reference(op, a, b, **kw)
        np.testing.assert_allclose(expected, np.conj(exact), rtol=1e-12, atol=1e-12)
        expected = exact
    for method in sample(runner, METHODS, 2):
        try:
            got = runner.run(op, a, b, method=method, **kw)
        except ValueError as exc:
            assert method in ("fft", "oa") and dtype == "int16", exc
            continue
        assert_matches(got, expected, a, b, op, method=method, **kw)


def test_correlate2d_same_is_shifted_against_correlate(runner, rng):
    """S2, scipy#1968: for even kernels correlate2d 'same' != correlate 'same'; convkit has both."""
    a, b = rng.standard_normal((6, 6)), rng.standard_normal((4, 4))
    c2d, cnd = sps.correlate2d(a, b, "same"), sps.correlate(a, b, "same")
    assert not np.allclose(c2d, cnd)
    assert_matches(runner.run("correlate", a, b, "same", align="tf"), c2d, a, b, "correlate", mode="same",
                   align="tf")
    assert_matches(runner.run("correlate", a, b, "same"), cnd, a, b, "correlate", mode="same")


# ----------------------------------------------------------------------------- scipy.ndimage

ND_CASES = [
    ((10,), (3,)),
    ((10,), (4,)),
    ((5,), (8,)),  # kernel longer than the input
    ((1,), (3,)),  # size-1 axis
    ((6, 7), (3, 2)),
    ((5, 1), (2, 3)),
    ((4, 5, 3), (2, 3, 2)),
]


def _origins(kshape):
    """Corner and centre origins allowed by ndimage: -(M//2) <= o <= (M-1)//2 per axis."""
    lo = tuple(-(m // 2) for m in kshape)
    hi = tuple((m - 1) // 2 for m in kshape)
    return sorted({(0,) * len(kshape), lo, hi})


@pytest.mark.parametrize("mode", ["reflect", "constant", "nearest", "mirror", "wrap"])
@pytest.mark.parametrize("shapes", ND_CASES, ids=_ids(ND_CASES))
@pytest.mark.parametrize("op", OPS)
@pytest.mark.sampled(every=24)
def test_ndimage(runner, request, rng, op, shapes, mode):
    """S2/S7: ndimage.correlate(origin=o) = correlate('same', boundary=mode, origin=o);
    ndimage.convolve(origin=o) = convolve('same', boundary=mode, origin=-o - (M even))."""
    a, b = rng.standard_normal(shapes[0]), rng.standard_normal(shapes[1])
    cval = 2.5 if mode == "constant" else 0.0
    for origin in sample(runner, _origins(shapes[1]), 1):
        expected = getattr(ndi, op)(a, b, mode=mode, cval=cval, origin=list(origin))
        if op == "correlate":
            ck_origin = origin
        else:
            ck_origin = tuple(-o - (1 if m % 2 == 0 else 0) for o, m in zip(origin, shapes[1]))
        kw = dict(mode="same", boundary=mode, fillvalue=cval, origin=ck_origin)
        for method in sample(runner, METHODS, 2):
            got = runner.run(op, a, b, method=method, **kw)
            assert_matches(got, expected, a, b, op, method=method, **kw)


# ----------------------------------------------------------------------------- numpy.convolve


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", ["uint8", "int32", "float64", "complex128"])
@pytest.mark.parametrize("lengths", [(9, 3), (8, 4), (5, 5), (6, 1), (1, 1)])
@pytest.mark.sampled(every=24)
def test_numpy_convolve(runner, request, rng, lengths, dtype, mode):
    """S2: np.convolve(a, v, mode) == convkit.convolve(a, v, mode) when len(a) >= len(v)."""
    a, v = random_array(rng, lengths[0], dtype), random_array(rng, lengths[1], dtype)
    expected = np.convolve(a, v, mode)
    for method in sample(runner, METHODS, 2):
        try:
            got = runner.run("convolve", a, v, mode, method=method)
        except ValueError:
            assert method in ("fft", "oa") and dtype in ("uint8", "int32")
            continue
        assert_matches(got, expected, a, v, "convolve", method=method, mode=mode)


def test_numpy_same_differs_when_kernel_longer(runner, rng):
    """S2, numpy#6316: NumPy's 'same' has length max(N, M); convkit's has length N (as SciPy)."""
    a, v = rng.standard_normal(4), rng.standard_normal(7)
    assert np.convolve(a, v, "same").shape == (7,)
    got = runner.run("convolve", a, v, "same")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = sps.convolve(a, v, "same", method="direct")
    assert_matches(got, expected, a, v, mode="same")


def test_s4_deviations_from_scipy_dtypes(runner):
    """S4 deviations, documented: ndimage keeps in1's dtype and truncates; SciPy's FFT returns
    floats for integer inputs. convkit returns result_type and the exact values."""
    a, k = np.array([1, 2, 3, 4, 5]), np.array([0.5, 0.5])
    nd = ndi.correlate(a, k, mode="constant")
    assert nd.dtype == a.dtype  # SciPy: int result, 1.5 truncated to 1
    got = runner.run("correlate", a, k, "same", align="tf", boundary="constant")
    assert_matches(got, reference("correlate", a, k, "same", align="tf"), a, k, "correlate", mode="same",
                   align="tf")
    assert got.dtype == np.float64 and not np.array_equal(got, nd)
    x, w = np.arange(10), np.array([1, 2, 3])
    assert sps.fftconvolve(x, w).dtype.kind == "f"  # SciPy: float for ints
    got = runner.run("convolve", x, w, method="fft")
    np.testing.assert_array_equal(got, np.convolve(x, w), strict=True)  # convkit: exact int64
