"""backends/cupy.py on CPU: its code with NumPy/SciPy standing in for cupy/cupyx.

The whole conformance suite also runs through this backend with
``pytest tests --backend cupy-emulated``; the tests here make sure every branch of the
CuPy adapter (ndimage and shift-and-add direct paths, FFT, integer FFT, device scoping,
host round trip, dtype limits, the real loader) runs on every CI machine.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.fft
import scipy.ndimage
from cupy_emulated import NAME, NAME13, FakeArray, FakeDevice, install_fake_cupy, spy_ndimage
from reference import assert_matches, random_array, reference

import convkit
from convkit.backends import cupy as ck_cupy


def _check(be, rng, op, shape1, shape2, dtype, method="auto", **kw):
    a = random_array(rng, shape1, dtype, small=True)
    b = random_array(rng, shape2, dtype, small=True)
    out = getattr(convkit, op)(a, b, method=method, backend=be, **kw)
    assert isinstance(out, np.ndarray)  # S11: host in, host out
    assert_matches(out, reference(op, a, b, **kw), a, b, op, method=method, **kw)
    return out


@pytest.mark.parametrize("op", ["convolve", "correlate"])
@pytest.mark.parametrize("dtype", ["bool", "int16", "uint8", "float16", "float32", "float64", "complex64",
                                   "complex128"])
@pytest.mark.parametrize("method", ["direct", "fft", "oa", "auto"])
@pytest.mark.parametrize("mode,boundary", [("full", "fill"), ("same", "symm"), ("valid", "fill"),
                                           ("causal", "wrap"), ("same", "mirror")])
def test_matrix_1d_2d(emu, rng, op, dtype, method, mode, boundary):
    """S1/S2/S4/S5/S7: every dtype x method x mode x boundary, 1-D and 2-D, even kernels."""
    _check(emu, rng, op, (11,), (4,), dtype, method, mode=mode, boundary=boundary)
    _check(emu, rng, op, (6, 7), (3, 2), dtype, method, mode=mode, boundary=boundary)


@pytest.mark.parametrize("kw", [
    dict(mode="same"),                                     # ndimage, same-size window
    dict(mode="same", boundary="nearest", origin=(1, -1)),  # ndimage modes + origin
    dict(mode="same", boundary="wrap", fillvalue=0),
    dict(mode="same", boundary="fill", fillvalue=2.5),       # cval
    dict(mode="full"),                                     # ndimage on the padded input
    dict(mode="same", align="tf", stride=2),                 # strides on the ndimage output
    dict(mode="valid", dilation=(2, 1)),                     # dilated weights
    dict(mode=((2, 0), (1, 3))),                             # explicit pads
])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_ndimage_direct_path(emu, rng, monkeypatch, kw, dtype):
    """Floats with a nonzero, finite kernel go through ndimage.correlate, results within S5."""
    calls = spy_ndimage(monkeypatch, emu, "correlate")
    _check(emu, rng, "correlate", (9, 8), (3, 4), dtype, "direct", **kw)
    assert calls, "ndimage path not taken"


def test_ndimage_not_used_when_it_would_differ(emu, rng, monkeypatch):
    """S9: a zero tap must still propagate a NaN (ndimage skips zero weights) -> shift-and-add."""
    calls = spy_ndimage(monkeypatch, emu, "correlate")
    x = rng.standard_normal((7, 7))
    x[3, 3] = np.nan
    k = np.ones((3, 3))
    k[1, 1] = 0.0
    out = convkit.correlate(x, k, "same", method="direct", backend=emu)
    assert not calls
    assert np.isnan(out[2:5, 2:5]).all() and np.isfinite(out).sum() == 49 - 9
    # ints never use ndimage (float64 weights are not exact)
    xi = np.full((5, 5), 2**40 + 1, dtype=np.int64)
    got = convkit.convolve(xi, np.ones((2, 2), np.int64), "full", method="direct", backend=emu)
    np.testing.assert_array_equal(got, reference("convolve", xi, np.ones((2, 2), np.int64)))
    assert not calls
    # a kernel with extent on a batch axis cannot be an ndimage weight array
    _check(emu, rng, "convolve", (4, 9), (4, 3), "float64", "direct", mode="same", axes=1)
    assert not calls


def test_nan_safe_auto_and_fft(emu, rng):
    """S9: auto keeps NaN local even where it would choose FFT; explicit fft spreads it."""
    x = rng.standard_normal(4000)
    k = rng.standard_normal(400)
    x[100] = np.nan
    auto = convkit.convolve(x, k, method="auto", backend=emu)
    assert np.isnan(auto).sum() == 400
    fft = convkit.convolve(x, k, method="fft", backend=emu)
    assert np.isnan(fft).all()
    y = rng.standard_normal(4000)
    assert_matches(convkit.convolve(y, k, backend=emu), reference("convolve", y, k), y, k, method="auto")


def test_integer_fft_exact_or_raises(emu, rng):
    """S5: explicit FFT on integers is exact or a ValueError."""
    a = rng.integers(-1000, 1000, 300)
    b = rng.integers(-1000, 1000, 50)
    np.testing.assert_array_equal(convkit.convolve(a, b, method="fft", backend=emu),
                                  reference("convolve", a, b))
    big = np.full(64, 2**40, dtype=np.int64)
    with pytest.raises(ValueError, match="method='fft' cannot give the exact integer"):
        convkit.convolve(big, big, method="fft", backend=emu)


def test_scalars_and_batched_axes(emu, rng):
    """S3 0-d inputs and S10 broadcasting of non-convolution axes."""
    assert convkit.correlate(np.array(2 + 1j), np.array(1 - 1j), backend=emu) == (2 + 1j) * (1 + 1j)
    _check(emu, rng, "convolve", (3, 1, 10), (1, 2, 3), "float64", "fft", mode="same", axes=2)
    _check(emu, rng, "correlate", (2, 10), (2, 10), "int32", "auto", mode="valid", axes=1)


def test_valid_swap(emu, rng):
    """S3: 'valid' with in2 larger swaps (and correlate flips and conjugates)."""
    _check(emu, rng, "correlate", (3, 4), (6, 7), "complex128", "direct", mode="valid")
    _check(emu, rng, "correlate", (3,), (9,), "complex128", "fft", mode="valid")


def test_long_double_is_a_clean_type_error(emu):
    """CuPy has no long double: a one-line TypeError naming the argument, never a CuPy error."""
    if np.dtype(np.longdouble).itemsize == 8:  # pragma: no cover - platforms where longdouble is double
        pytest.skip("longdouble is float64 on this platform")
    with pytest.raises(TypeError, match="in1 has dtype .*CuPy cannot hold"):
        convkit.convolve(np.ones(3, np.longdouble), np.ones(2), backend=emu)


def test_backend_object_contract(emu):
    assert emu.name in (NAME, NAME13) and emu.device is True
    assert emu.available() == (True, "")
    assert not emu.owns(np.ones(2))  # NumPy arrays are host data, never "cupy" arrays
    a = emu.asarray([1, 2])
    assert isinstance(emu.to_host(a), np.ndarray)
    emu.sync(a)  # waits on the (emulated) device of a
    assert emu.next_fast_len(97, True) == scipy.fft.next_fast_len(97, real=True) == 100
    assert emu.name in repr(emu)


def test_registered_runner_runs_the_emulated_backend():
    """The conformance runner 'cupy-emulated' (registered by conftest) is available and host in/out."""
    from convkit.testing import runners

    (r,) = [r for r in runners([NAME]) if r.name == NAME]
    assert r.available() == (True, "")
    out = r.run("convolve", np.arange(5.0), np.ones(2), "same")
    np.testing.assert_array_equal(out, [0.0, 1.0, 3.0, 5.0, 7.0])


# ------------------------------------------------------------------------ the real loader, on a fake cupy


@pytest.fixture
def fake_backend(monkeypatch):
    """``CupyBackend()`` (the real, lazily loading one) with a fake cupy in sys.modules."""
    install_fake_cupy(monkeypatch)
    return ck_cupy.CupyBackend()


def test_loader_path_end_to_end(fake_backend, rng):
    """The lazily loaded modules are used for every primitive; host inputs come back as NumPy."""
    assert fake_backend.available() == (True, "")
    a = rng.standard_normal((6, 5))
    b = rng.standard_normal((3, 3))
    for method in ("direct", "fft"):
        out = convkit.convolve(a, b, "same", method=method, backend=fake_backend)
        assert type(out) is np.ndarray
        assert_matches(out, reference("convolve", a, b, mode="same"), a, b, method=method, mode="same")


def test_device_inputs_run_inside_their_device(fake_backend, rng):
    """CuPy inputs are computed under ``with x.device`` (S11: same device) and stay device arrays."""
    a = rng.standard_normal(10).view(FakeArray)
    b = rng.standard_normal(3).view(FakeArray)
    assert fake_backend.owns(a) and not fake_backend.owns(np.ones(2))
    before = FakeDevice.entered
    out = convkit.correlate(a, b, method="direct", backend=fake_backend)
    assert FakeDevice.entered > before
    assert_matches(np.asarray(out), reference("correlate", np.asarray(a), np.asarray(b)),
                   np.asarray(a), np.asarray(b), "correlate", method="direct")
    fake_backend.sync(out)  # stream synchronize on the (fake) CUDA stream


def test_test_runners_use_device_arrays(monkeypatch):
    """``test_runners()`` gives a device runner (cupy arrays in/out) and a host runner, marked gpu."""
    install_fake_cupy(monkeypatch)
    device, host = ck_cupy.backend.test_runners()
    assert (device.name, host.name) == ("cupy", "cupy-host")
    assert all(m.name == "gpu" for m in device.marks + host.marks)
    d = device.to_device(np.ones(3))
    assert isinstance(d, FakeArray) and device.array_check(d)
    assert not device.array_check(np.ones(3)) and host.array_check(np.ones(3))


@pytest.mark.parametrize("kw", [
    dict(mode="same"),
    dict(mode="full"),
    dict(mode="same", boundary="symm", stride=(2, 3)),
    dict(mode="same", boundary="wrap", dilation=(1, 2)),
    dict(mode=((4, -1), (0, 3))),
])
def test_separable_path(emu, rng, monkeypatch, kw):
    """S5/S8: with auto, a rank-1 kernel runs as one ``correlate1d`` pass per axis on the
    device (the rank-1 test reads a host copy of the small kernel); NaN data, a rank-2 kernel
    or an explicit method take the plan's method instead (S9). (NaN data may run the passes:
    the data's finiteness is read after them, with the passes', in one transfer; the passes'
    result is then discarded.)"""
    import dataclasses

    cheap = dataclasses.replace(emu.capabilities, c_sep=1e-30, c_mem=0.0)
    monkeypatch.setattr(emu, "capabilities", cheap)
    calls = spy_ndimage(monkeypatch, emu, "correlate1d")
    a = rng.standard_normal((21, 19))
    g = np.exp(-0.5 * np.linspace(-2, 2, 5) ** 2)
    k = np.outer(g, [1.0, -2.0, 0.5, 3.0])
    out = convkit.convolve(a, k, backend=emu, **kw)
    assert len(calls) == 2, "separable passes not taken"
    assert_matches(out, reference("convolve", a, k, **kw), a, k, "convolve", method="direct", **kw)
    calls.clear()
    bad = a.copy()
    bad[5, 6] = np.nan
    for x, w, method in ((bad, k, "auto"), (a, rng.standard_normal(k.shape), "auto"), (a, k, "direct")):
        calls.clear()
        out = convkit.convolve(x, w, backend=emu, method=method, **kw)
        assert_matches(out, reference("convolve", x, w, **kw), x, w, "convolve", method="direct", **kw)
        assert x is bad or not calls
        assert np.isnan(out).any() == (x is bad)
