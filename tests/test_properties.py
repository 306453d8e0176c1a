"""Property tests (hypothesis) against the exact reference of tests/reference.py.

Random shapes (1-D to 3-D, even kernels, kernels longer than the input, size-1 axes), dtype
pairs, modes (incl. causal and explicit lax-style pads, negative ones too), boundaries and
fill values, align, origin, stride, dilation, axes with broadcasting, and every method
(S1-S5, S7, S8, S10). Every input is also drawn in a random memory layout (tests/layouts.py:
byte-swapped, Fortran order, negative strides, read-only, ...; native most often): the oracle sees
native copies, convkit the layout, which it must not modify (S4, S11). Runs derandomized (a fixed
sequence of examples); JAX runners, which compile per shape, take fewer examples.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from layouts import PROPERTY_LAYOUTS, check_against_reference, layout, native, run
from reference import DTYPES, SAMPLED_BACKENDS, assert_matches, random_array, reference, result_dtype

BOUNDARIES = ("fill", "symm", "mirror", "nearest", "wrap")
METHODS = ("direct", "fft", "oa", "auto")


def _examples(runner, numpy_n: int, other_n: int) -> settings:
    return settings(max_examples=other_n if runner.backend in SAMPLED_BACKENDS else numpy_n, derandomize=True,
                    deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _per_axis(draw, n_ax, lo, hi):
    """An int or a per-axis tuple."""
    if draw(st.booleans()):
        return draw(st.integers(lo, hi))
    return tuple(draw(st.integers(lo, hi)) for _ in range(n_ax))


def _fill_for(draw, dt: np.dtype):
    if dt.kind == "b":
        return draw(st.sampled_from([0, 1]))
    if dt.kind in "iu":
        return draw(st.sampled_from([0, 1, 3]))
    if dt.kind == "f":
        return draw(st.sampled_from([0, 1.5, -2.0]))
    return draw(st.sampled_from([0, 1.5, 1 - 2j]))


@st.composite
def options(draw, n_ax: int, rdt: np.dtype) -> dict:
    """Keywords of one call: mode, boundary/fill, align/origin, stride, dilation, method."""
    mode = draw(st.sampled_from(["full", "same", "valid", "causal", "pads"]))
    kw: dict = {}
    if mode == "pads":
        mode = [(draw(st.integers(-2, 4)), draw(st.integers(-2, 4))) for _ in range(n_ax)]
    kw["mode"] = mode
    if draw(st.booleans()):
        kw["boundary"] = draw(st.sampled_from(BOUNDARIES))
    if kw.get("boundary", "fill") == "fill" and draw(st.booleans()):
        kw["fillvalue"] = _fill_for(draw, rdt)
    if mode == "same":
        kw["align"] = draw(st.sampled_from(["scipy", "tf"]))
        if draw(st.booleans()):
            kw["origin"] = _per_axis(draw, n_ax, -1, 1)
    if draw(st.integers(0, 2)) == 0:
        kw["stride"] = _per_axis(draw, n_ax, 1, 3)
    if draw(st.integers(0, 2)) == 0:
        kw["dilation"] = _per_axis(draw, n_ax, 1, 3)
    kw["method"] = draw(st.sampled_from(METHODS))
    return kw


def _arrays(draw, s1, s2, dt1, dt2):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    small = draw(st.booleans())  # small ints keep an explicit FFT exact; full range tests wrap-around
    return _layouts(draw, random_array(rng, s1, dt1, small=small), random_array(rng, s2, dt2, small=small))


def _layouts(draw, *arrays):
    """Each array in a random layout (byte order, Fortran, negative strides, read-only, ...)."""
    names = [draw(st.sampled_from(PROPERTY_LAYOUTS)) for _ in arrays]
    note(f"layouts: {names}")
    return tuple(layout(a, name) for a, name in zip(arrays, names))


@st.composite
def cases(draw):
    nd = draw(st.integers(1, 3))
    s1 = tuple(draw(st.integers(1, 7)) for _ in range(nd))
    s2 = tuple(draw(st.integers(1, 5)) for _ in range(nd))
    dt1 = draw(st.sampled_from(DTYPES))
    dt2 = dt1 if draw(st.booleans()) else draw(st.sampled_from(DTYPES))
    a, b = _arrays(draw, s1, s2, dt1, dt2)
    op = draw(st.sampled_from(["convolve", "correlate"]))
    kw = draw(options(nd, result_dtype(a, b)))
    return op, a, b, kw


@st.composite
def axes_cases(draw):
    """Batched calls: convolution over a subset of the axes, the rest broadcast (S10)."""
    nd = draw(st.integers(2, 3))
    n_ax = draw(st.integers(1, nd - 1))
    axes = draw(st.permutations(range(nd)))[:n_ax]
    axes = tuple(a - nd if draw(st.booleans()) else a for a in axes)  # negative axes too
    conv = {a % nd for a in axes}
    s1, s2 = [], []
    for ax in range(nd):
        if ax in conv:
            s1.append(draw(st.integers(1, 6)))
            s2.append(draw(st.integers(1, 4)))
        else:
            size = draw(st.integers(1, 3))
            s1.append(draw(st.sampled_from([size, 1])))
            s2.append(draw(st.sampled_from([size, 1])))
    if draw(st.booleans()):  # kernel given only over the convolution axes
        s2 = [s2[ax] for ax in range(nd) if ax in conv]
    dt1 = draw(st.sampled_from(["int16", "uint8", "float32", "float64", "complex128", "bool"]))
    dt2 = draw(st.sampled_from([dt1, "float64", "int32"]))
    a, b = _arrays(draw, tuple(s1), tuple(s2), dt1, dt2)
    op = draw(st.sampled_from(["convolve", "correlate"]))
    kw = draw(options(n_ax, result_dtype(a, b)))
    kw["axes"] = axes if len(axes) > 1 or draw(st.booleans()) else axes[0]
    return op, a, b, kw


def _check_against_reference(runner, op, a, b, kw):
    kw = dict(kw)
    method = kw.pop("method")
    mode = kw.pop("mode")
    check_against_reference(runner, op, a, b, mode, method=method, **kw)


def test_property_against_reference(runner):
    """S1-S5/S7/S8: any shapes, dtypes and options equal the exact reference."""

    @_examples(runner, 500, 12)
    @given(cases())
    def prop(case):
        op, a, b, kw = case
        _check_against_reference(runner, op, a, b, kw)

    prop()


def test_property_axes_broadcast(runner):
    """S10: convolution over some axes, the others broadcast; kernels over the axes only."""

    @_examples(runner, 250, 8)
    @given(axes_cases())
    def prop(case):
        op, a, b, kw = case
        _check_against_reference(runner, op, a, b, kw)

    prop()


@st.composite
def int_pairs(draw):
    nd = draw(st.integers(1, 3))
    s1 = tuple(draw(st.integers(1, 6)) for _ in range(nd))
    s2 = tuple(draw(st.integers(1, 6)) for _ in range(nd))
    dt = draw(st.sampled_from(["int8", "int32", "uint16", "int64", "uint64"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return _layouts(draw, random_array(rng, s1, dt), random_array(rng, s2, dt))


def test_property_full_identities_exact(runner):
    """S1/S3/S5: with wrap-around integers, exactly: convolve(a, b) == convolve(b, a) and
    correlate(a, b) == flip(correlate(b, a)) in 'full' mode (no rounding anywhere)."""

    @_examples(runner, 80, 5)
    @given(int_pairs())
    def prop(pair):
        a, b = pair
        ab = run(runner, "convolve", a, b)
        np.testing.assert_array_equal(ab, run(runner, "convolve", b, a), strict=True)
        np.testing.assert_array_equal(ab, reference("convolve", native(a), native(b)), strict=True)
        cab = run(runner, "correlate", a, b)
        np.testing.assert_array_equal(cab, np.flip(run(runner, "correlate", b, a)), strict=True)

    prop()


@pytest.mark.parametrize("kind", ["float32", "complex64"])
def test_property_methods_agree(runner, kind):
    """S8: every method gives the same answer within S5 (float and complex, any shapes)."""

    @st.composite
    def float_cases(draw):
        nd = draw(st.integers(1, 2))
        s1 = tuple(draw(st.integers(1, 40 if nd == 1 else 12)) for _ in range(nd))
        s2 = tuple(draw(st.integers(1, 12)) for _ in range(nd))
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        mode = draw(st.sampled_from(["full", "same", "valid"]))
        return (*_layouts(draw, random_array(rng, s1, kind), random_array(rng, s2, kind)), mode)

    @_examples(runner, 40, 3)
    @given(float_cases())
    def prop(case):
        a, b, mode = case
        a0, b0 = native(a), native(b)
        try:
            expected = reference("correlate", a0, b0, mode)
        except ValueError:
            return
        for method in METHODS:
            got = run(runner, "correlate", a, b, mode, method=method)
            assert_matches(got, expected, a0, b0, "correlate", method=method, mode=mode)

    prop()
