"""S13: every bad input gets the right exception class and a one-line message naming the argument.

Errors are raised by the plan (the same text on every backend); the runner test at the end
checks that a device backend raises the same errors.
"""

from __future__ import annotations

import numpy as np
import pytest

import convkit
from convkit import ConvkitError, ConvkitTypeError, ConvkitValueError

A1, B1 = np.arange(6.0), np.ones(3)
A2, B2 = np.ones((5, 6)), np.ones((2, 3))

# (id, in1, in2, keywords, exception class, text the message must contain)
CASES = [
    # unknown choices (S13): the message names the argument and lists what is accepted
    ("mode", A1, B1, dict(mode="bogus"), ConvkitValueError, ["mode=", "'full'", "'causal'"]),
    ("mode-int", A1, B1, dict(mode=3), ConvkitValueError, ["mode="]),
    ("mode-None", A1, B1, dict(mode=None), ConvkitValueError, ["mode="]),
    ("method", A1, B1, dict(method="bogus"), ConvkitValueError, ["method=", "'direct'", "'oa'"]),
    ("method-None", A1, B1, dict(method=None), ConvkitValueError, ["method="]),
    ("boundary", A1, B1, dict(boundary="bogus"), ConvkitValueError, ["boundary=", "'symm'", "'wrap'"]),
    ("align", A1, B1, dict(mode="same", align="bogus"), ConvkitValueError, ["align=", "'tf'"]),
    ("precision", A1, B1, dict(precision="bogus"), ConvkitValueError, ["precision=", "'highest'"]),
    # stride / dilation <= 0
    ("stride-0", A1, B1, dict(stride=0), ConvkitValueError, ["stride=", ">= 1"]),
    ("stride-neg", A1, B1, dict(stride=-2), ConvkitValueError, ["stride="]),
    ("dilation-0", A1, B1, dict(dilation=0), ConvkitValueError, ["dilation=", ">= 1"]),
    ("dilation-neg-tuple", A2, B2, dict(dilation=(1, -1)), ConvkitValueError, ["dilation="]),
    ("stride-float", A1, B1, dict(stride=1.5), ConvkitTypeError, ["stride="]),
    ("stride-str", A1, B1, dict(stride="2"), ConvkitTypeError, ["stride="]),
    ("stride-bool", A1, B1, dict(stride=True), ConvkitTypeError, ["stride="]),
    # wrong-length per-axis tuples
    ("stride-len", A1, B1, dict(stride=(1, 2)), ConvkitValueError, ["stride=", "one per convolution axis"]),
    ("dilation-len", A2, B2, dict(dilation=(1, 2, 3)), ConvkitValueError, ["dilation="]),
    ("origin-len", A2, B2, dict(mode="same", origin=(1,)), ConvkitValueError, ["origin="]),
    ("origin-float", A1, B1, dict(mode="same", origin=0.5), ConvkitTypeError, ["origin="]),
    ("origin-not-same", A1, B1, dict(mode="full", origin=1), ConvkitValueError, ["origin=", "same"]),
    ("pads-len", A1, B1, dict(mode=[(1, 1), (1, 1)]), ConvkitValueError, ["mode=", "pads"]),
    ("pads-shape", A1, B1, dict(mode=[(1,)]), ConvkitValueError, ["mode="]),
    ("pads-float", A1, B1, dict(mode=[(1.5, 1)]), ConvkitValueError, ["mode="]),
    # ndim mismatch, empty input, 0-d with n-d
    ("ndim", A2, B1, {}, ConvkitValueError, ["in1", "in2", "dimensions", "axes="]),
    ("ndim-0d", np.float64(1.0), B1, {}, ConvkitValueError, ["dimensions"]),
    ("empty-in1", np.ones(0), B1, {}, ConvkitValueError, ["in1", "empty"]),
    ("empty-in2", A1, np.ones(0), {}, ConvkitValueError, ["in2", "empty"]),
    ("empty-2d", np.ones((3, 0)), np.ones((1, 1)), {}, ConvkitValueError, ["in1", "empty"]),
    # valid with neither input dominating; kernel longer than the padded input
    ("valid-neither", np.ones((3, 5)), np.ones((5, 3)), dict(mode="valid"), ConvkitValueError, ["valid"]),
    ("valid-stride-kernel", np.ones(3), np.ones(5), dict(mode="valid", stride=2), ConvkitValueError,
     ["kernel"]),
    ("pads-crop-too-much", A1, B1, dict(mode=[(-3, -2)]), ConvkitValueError, ["kernel"]),
    # non-numeric dtypes
    ("object", np.array([1, 2], dtype=object), B1, {}, ConvkitTypeError, ["in1", "dtype", "numeric"]),
    ("str", A1, np.array(["a", "b"]), {}, ConvkitTypeError, ["in2", "dtype", "numeric"]),
    ("bytes", np.array([b"ab"]), B1, {}, ConvkitTypeError, ["in1", "dtype"]),
    ("datetime", np.array(["2020-01-01"], dtype="datetime64[D]"), B1[:1], {}, ConvkitTypeError,
     ["in1", "datetime64", "numeric"]),
    ("timedelta", A1, np.array([1], dtype="timedelta64[s]"), {}, ConvkitTypeError, ["in2", "timedelta64"]),
    ("ragged", [[1, 2], [3]], [1], {}, ConvkitTypeError, ["in1"]),
    # axes out of range or repeated
    ("axes-range", A1, B1, dict(axes=1), ConvkitValueError, ["axes=", "out of range"]),
    ("axes-range-neg", A2, B2, dict(axes=(-3,)), ConvkitValueError, ["axes=", "out of range"]),
    ("axes-repeat", A2, B2, dict(axes=(0, 0)), ConvkitValueError, ["axes=", "repeat"]),
    ("axes-repeat-neg", A2, B2, dict(axes=(1, -1)), ConvkitValueError, ["axes=", "repeat"]),
    ("axes-type", A2, B2, dict(axes="0"), ConvkitTypeError, ["axes="]),
    ("axes-empty", A2, B2, dict(axes=()), ConvkitTypeError, ["axes="]),
    ("axes-kernel-ndim", np.ones((3, 4, 5)), np.ones((2, 2)), dict(axes=2), ConvkitValueError,
     ["in2", "axes="]),
    ("axes-broadcast", A2, np.ones((3, 2)), dict(axes=1), ConvkitValueError, ["broadcast"]),
    # bad fillvalue
    ("fill-str", A1, B1, dict(fillvalue="x"), ConvkitTypeError, ["fillvalue="]),
    ("fill-None", A1, B1, dict(fillvalue=None), ConvkitTypeError, ["fillvalue="]),
    ("fill-array", A1, B1, dict(fillvalue=np.ones(2)), ConvkitTypeError, ["fillvalue="]),
    ("fill-complex-for-real", A1, B1, dict(fillvalue=1j), ConvkitValueError, ["fillvalue="]),
    ("fill-frac-for-int", np.arange(6), np.ones(3, int), dict(fillvalue=1.5), ConvkitValueError,
     ["fillvalue=", "int64"]),
    ("fill-range-uint8", np.ones(6, np.uint8), np.ones(3, np.uint8), dict(fillvalue=300), ConvkitValueError,
     ["fillvalue=", "uint8"]),
    ("fill-neg-uint8", np.ones(6, np.uint8), np.ones(3, np.uint8), dict(fillvalue=-1), ConvkitValueError,
     ["fillvalue="]),
    ("fill-bool", np.ones(6, bool), np.ones(3, bool), dict(fillvalue=2), ConvkitValueError, ["fillvalue="]),
    ("fill-zeros-conflict", A1, B1, dict(boundary="zeros", fillvalue=1.0), ConvkitValueError,
     ["boundary=", "fillvalue="]),
    # bad dtype=
    ("dtype-unknown", A1, B1, dict(dtype="foo"), ConvkitTypeError, ["dtype="]),
    ("dtype-object", A1, B1, dict(dtype=object), ConvkitTypeError, ["dtype=", "numeric"]),
    ("dtype-str", A1, B1, dict(dtype="U3"), ConvkitTypeError, ["dtype="]),
    ("dtype-datetime", A1, B1, dict(dtype="datetime64[s]"), ConvkitTypeError, ["dtype="]),
    ("dtype-kind", A1, B1, dict(dtype="int32"), ConvkitTypeError, ["dtype=", "float64"]),
    ("dtype-complex-to-real", A1 + 0j, B1, dict(dtype="float64"), ConvkitTypeError, ["dtype="]),
]


@pytest.mark.parametrize("op", ["convolve", "correlate"])
@pytest.mark.parametrize(("in1", "in2", "kw", "exc", "texts"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_s13_bad_input(op, in1, in2, kw, exc, texts):
    """S13: right class (also a builtin ValueError/TypeError), one line, names the argument."""
    kw = dict(kw)
    mode = kw.pop("mode", "full")
    with pytest.raises(exc) as info:
        getattr(convkit, op)(in1, in2, mode, **kw)
    err = info.value
    assert isinstance(err, ConvkitError)
    builtin = ValueError if issubclass(exc, ConvkitValueError) else TypeError
    assert isinstance(err, builtin)
    msg = str(err)
    assert "\n" not in msg, msg
    for t in texts:
        assert t in msg, f"{t!r} not in {msg!r}"


def test_s13_catchable_as_builtins():
    """S13: code that does not know convkit can catch ValueError / TypeError."""
    with pytest.raises(ValueError):
        convkit.convolve(A1, B1, "bogus")
    with pytest.raises(TypeError):
        convkit.convolve(np.array(["a"]), B1)
    assert issubclass(convkit.BackendUnavailableError, ImportError)
    assert issubclass(convkit.DeviceMismatchError, TypeError)


def test_s13_choices_are_case_insensitive_and_aliases_work():
    """S2/S7/S8: option strings are case-insensitive; boundary/align aliases are accepted."""
    a, b = np.arange(8.0), np.array([1.0, 2.0, 3.0, 4.0])
    base = convkit.correlate(a, b, "same", boundary="symm", align="tf")
    for bnd in ("SYMM", "symmetric", "reflect"):
        for al in ("TF", "keras", "torch", "lax"):
            np.testing.assert_array_equal(convkit.correlate(a, b, "SAME", boundary=bnd, align=al), base)
    for bnd in ("fill", "constant", "zeros", "Fill"):
        np.testing.assert_array_equal(convkit.convolve(a, b, "full", boundary=bnd), convkit.convolve(a, b))
    for m in ("Direct", "FFT", "OA", "AUTO"):
        assert convkit.convolve(a, b, method=m).shape == (11,)


def test_s13_errors_same_on_every_backend(runner):
    """S13: the plan raises once, with the same text, whatever backend runs the call."""
    for kw, exc in ((dict(mode="bogus"), ConvkitValueError), (dict(stride=0), ConvkitValueError),
                    (dict(dtype="int32"), ConvkitTypeError), (dict(method="nope"), ConvkitValueError)):
        kw = dict(kw)
        mode = kw.pop("mode", "full")
        with pytest.raises(exc) as on_runner:
            runner.run("convolve", A1, B1, mode, **kw)
        with pytest.raises(exc) as on_numpy:
            convkit.convolve(A1, B1, mode, backend="numpy", **kw)
        assert str(on_runner.value) == str(on_numpy.value)
    with pytest.raises(ConvkitValueError, match="empty"):
        runner.run("convolve", np.ones(0), B1)
    with pytest.raises(ConvkitValueError, match="valid"):
        runner.run("correlate", np.ones((3, 5)), np.ones((5, 3)), "valid")
