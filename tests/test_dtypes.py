"""Result dtype (S4) and exactness of integer and bool results (S5) on every method.

Expected values come from tests/reference.py: exact Python-int arithmetic reduced to the
result dtype with two's-complement wrap-around.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from reference import DTYPES, assert_matches, random_array, reference, sample

import convkit

INT_DTYPES = [d for d in DTYPES if np.dtype(d).kind in "iu"]
METHODS = ("direct", "fft", "oa", "auto")


@pytest.mark.parametrize("dtype2", DTYPES)
def test_s4_result_type_every_pair(runner, rng, dtype2):
    """S4: dtype=None gives numpy.result_type(in1, in2) for every pair of dtypes, with values."""
    for dtype1 in sample(runner, DTYPES, 3):  # all 14 x 14 pairs except on JAX runners
        a = random_array(rng, (5, 4), dtype1, small=True)
        b = random_array(rng, (2, 3), dtype2, small=True)
        for op in ("convolve", "correlate"):
            got = runner.run(op, a, b, "same")
            assert got.dtype == np.result_type(a, b), (dtype1, dtype2, got.dtype)
            assert_matches(got, reference(op, a, b, "same"), a, b, op, mode="same")


@pytest.mark.parametrize("method", METHODS)
def test_s4_float16_stays_float16(runner, rng, method):
    """S4: float16 stays float16 (not promoted to float32), within the S5 bound."""
    a = rng.standard_normal((20, 3)).astype(np.float16)
    b = rng.standard_normal((4, 3)).astype(np.float16)
    for op in ("convolve", "correlate"):
        got = runner.run(op, a, b, "full", method=method)
        assert got.dtype == np.float16
        assert_matches(got, reference(op, a, b, "full"), a, b, op, method=method)


@pytest.mark.parametrize("method", METHODS)
def test_s4_bool_is_sum_nonzero(runner, rng, method):
    """S4: bool stays bool and means sum != 0 (a logical OR of ANDs, never a wrapped count)."""
    a = rng.integers(0, 2, (9, 8)).astype(bool)
    b = np.ones((3, 3), dtype=bool)  # many overlapping True products: count up to 9
    for op in ("convolve", "correlate"):
        for mode in ("full", "same", "valid"):
            got = runner.run(op, a, b, mode, method=method)
            assert got.dtype == np.bool_
            counts = reference(op, a.astype(np.int64), b.astype(np.int64), mode)
            np.testing.assert_array_equal(got, counts != 0)
    # 256 overlapping ones: a uint8 count would wrap to 0, bool must stay True
    x, k = np.ones(256, dtype=bool), np.ones(256, dtype=bool)
    assert runner.run("convolve", x, k, "valid", method=method).tolist() == [True]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", INT_DTYPES)
def test_s5_integer_wraparound_every_method(runner, rng, dtype, method):
    """S5: full-range integers wrap exactly like the exact integer result; an explicit FFT
    on integers is exact or raises ConvkitValueError (never a rounded answer)."""
    a = random_array(rng, (13, 5), dtype)
    b = random_array(rng, (4, 3), dtype)
    calls = itertools.product(("convolve", "correlate"), ("full", "same", "valid"))
    for op, mode in sample(runner, calls, 2):
        expected = reference(op, a, b, mode)
        try:
            got = runner.run(op, a, b, mode, method=method)
        except convkit.ConvkitValueError as exc:
            assert method in ("fft", "oa"), exc
            assert "method=" in str(exc) and "exact" in str(exc)
            continue
        assert got.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(got, expected, strict=True)


@pytest.mark.parametrize("method", ["fft", "oa"])
@pytest.mark.parametrize("dtype", INT_DTYPES)
def test_s5_explicit_fft_on_small_ints_is_exact(runner, rng, dtype, method):
    """S5: an explicit FFT on integers is exact where float64 FFT rounding allows it."""
    a = random_array(rng, (30, 6), dtype, small=True)
    b = random_array(rng, (5, 3), dtype, small=True)
    for op in ("convolve", "correlate"):
        got = runner.run(op, a, b, "full", method=method)
        np.testing.assert_array_equal(got, reference(op, a, b, "full"), strict=True)


def test_s5_uint8_wraps(runner):
    """S5: uint8 200*200 + 200*200 wraps modulo 256 (exact two's-complement)."""
    a = np.array([200, 200], dtype=np.uint8)
    got = runner.run("convolve", a, a, "valid")
    assert got.dtype == np.uint8 and got.tolist() == [(2 * 200 * 200) % 256]
    got = runner.run("correlate", np.array([-128, -128], np.int8), np.array([-1, -1], np.int8), "valid")
    assert got.dtype == np.int8 and got.tolist() == [0]  # 256 wraps to 0


def test_s5_int64_large_values_auto_is_exact(runner):
    """S5: 'auto' never sends integers to an FFT: values near 2**62 stay exact."""
    x = np.array([2**62 - 1, 3, -(2**61), 7, 2**40 + 1] * 60, dtype=np.int64)
    k = np.array([1, -1, 2**20, 5, 1] * 20, dtype=np.int64)
    got = runner.run("convolve", x, k, "full")
    np.testing.assert_array_equal(got, reference("convolve", x, k, "full"), strict=True)


@pytest.mark.parametrize(("dt_in", "dt_out"), [
    ("int8", "int32"), ("int32", "int16"), ("uint8", "int64"), ("int16", "float32"),
    ("float64", "float32"), ("float32", "float64"), ("float16", "float64"), ("float32", "complex64"),
    ("complex128", "complex64"), ("bool", "int8"), ("bool", "float32"),
])
def test_s4_dtype_argument(runner, rng, dt_in, dt_out):
    """S4: dtype= sets the output and the accumulation dtype (same_kind casting)."""
    a = random_array(rng, (12, 5), dt_in, small=True)
    b = random_array(rng, (3, 2), dt_in, small=True)
    for op in ("convolve", "correlate"):
        got = runner.run(op, a, b, "same", dtype=dt_out)
        assert got.dtype == np.dtype(dt_out)
        assert_matches(got, reference(op, a, b, "same", dtype=dt_out), a, b, op, mode="same", dtype=dt_out)


def test_s4_dtype_accumulates_wider(runner):
    """S4: dtype='int32' on int8 inputs accumulates in int32 (no int8 wrap on the way)."""
    a = np.full(10, 100, dtype=np.int8)
    got = runner.run("convolve", a, a, "valid", dtype="int32")
    assert got.dtype == np.int32 and got.tolist() == [100000]
    assert runner.run("convolve", a, a, "valid").tolist() == [np.int64(100000) % 256 - 256]  # -96 in int8


@pytest.mark.parametrize(("dt_in", "dt_out"), [("float64", "int64"), ("complex64", "float64"),
                                               ("int32", "uint8"), ("int8", "bool"), ("float32", "bool")])
def test_s4_dtype_argument_rejects_kind_change(dt_in, dt_out):
    """S4: dtype= must be a same_kind cast of result_type; otherwise a TypeError naming dtype."""
    a = np.ones(4, dtype=dt_in)
    if np.can_cast(np.dtype(dt_in), np.dtype(dt_out), "same_kind"):
        pytest.fail(f"test case {dt_in}->{dt_out} is a same_kind cast")
    with pytest.raises(TypeError, match="dtype"):
        convkit.convolve(a, a, dtype=dt_out)


def test_s4_python_lists_and_scalars():
    """S4/S11: lists and scalars are host data with NumPy's dtypes."""
    got = convkit.convolve([1, 2, 3], [1, 1])
    assert isinstance(got, np.ndarray) and got.dtype == np.result_type(np.asarray([1]), np.asarray([1]))
    assert got.tolist() == [1, 3, 5, 3]
    got = convkit.convolve([1.0, 2.0], [1j])
    assert got.dtype == np.complex128 and got.tolist() == [1j, 2j]
