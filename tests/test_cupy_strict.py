"""Strict CuPy emulation (issue 12): backends/cupy.py against the recorded CuPy 13.0 and 14
signatures, the NaN ``cval`` CUDA-source trap, host-device syncs per call, and ``sync()``."""

from __future__ import annotations

import types

import numpy as np
import pytest
from cupy_emulated import (
    CALLS,
    NAME,
    NAME13,
    TRANSFERS,
    CompileException,
    DeviceArray,
    EmulatedDevice,
    emulated,
    install_fake_cupy,
    spy_ndimage,
    strict_modules,
)
from cupy_signatures import SIGNATURES, signature
from reference import assert_matches, reference

import convkit
from convkit.backends import cupy as ck_cupy

VERSIONS = ["13", "14"]


# ----------------------------------------------------------------------------- the signature tables


def test_tables_record_the_axes_difference():
    """cupyx correlate has ``axes`` from v14 only; correlate1d has none in either."""
    assert "axes" not in signature("13", "cupyx.scipy.ndimage.correlate").parameters
    assert "axes" in signature("14", "cupyx.scipy.ndimage.correlate").parameters
    for v in VERSIONS:
        assert "axes" not in signature(v, "cupyx.scipy.ndimage.correlate1d").parameters
        assert set(SIGNATURES[v]) >= {"cupy.fft.rfftn", "cupy.fft.irfftn", "cupy.fft.fftn", "cupy.fft.ifftn",
                                      "cupyx.scipy.fft.next_fast_len", "cupy.pad", "cupy.asnumpy"}


@pytest.mark.parametrize("version", VERSIONS)
def test_stand_ins_refuse_what_cupy_refuses(version):
    m = strict_modules(version)
    x = m["cupy"].asarray(np.ones((4, 5)))
    w = m["cupy"].asarray(np.ones((3,)))
    if version == "13":
        with pytest.raises(TypeError, match="CuPy 13.*axes"):
            m["cupyx.scipy.ndimage"].correlate(x, w, axes=(1,))
    else:
        m["cupyx.scipy.ndimage"].correlate(x, w, axes=(1,))
    with pytest.raises(TypeError, match="workers"):
        m["cupy.fft"].rfftn(x, s=(4, 5), axes=(0, 1), workers=-1)
    with pytest.raises(ValueError, match="not supported"):
        m["cupy"].pad(x, 1, mode="median")
    with pytest.raises(AttributeError, match="not in the recorded"):
        m["cupy"].convolve  # noqa: B018


@pytest.mark.parametrize("name", [NAME, NAME13])
def test_both_runners_are_registered(name):
    from convkit.testing import runners

    (r,) = [r for r in runners([name]) if r.name == name]
    a, k = np.arange(6.0).reshape(2, 3), np.ones((1, 2))
    np.testing.assert_allclose(r.run("correlate", a, k, "same"), reference("correlate", a, k, mode="same"))


@pytest.mark.parametrize("kw", [dict(mode="same"), dict(mode="full"), dict(mode="same", axes=1),
                                dict(mode="valid", axes=(0,)), dict(mode="same", boundary="wrap", axes=-1)])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_float_direct_uses_ndimage_on_both_versions(emu, rng, monkeypatch, kw, dtype):
    """Item 1: every float direct call reaches cupyx correlate in a form both versions accept."""
    calls = spy_ndimage(monkeypatch, emu, "correlate")
    a = rng.standard_normal((6, 9)).astype(dtype)
    k = rng.standard_normal({(0,): (3, 1)}.get(kw.get("axes"), (1, 3) if "axes" in kw else (3, 2)))
    k = k.astype(dtype) + 3
    out = convkit.correlate(a, k, method="direct", backend=emu, **kw)
    assert calls and all("axes" not in c for c in calls)
    assert_matches(out, reference("correlate", a, k, **kw), a, k, "correlate", method="direct", **kw)


def test_float32_accumulates_in_float32():
    """cupyx ndimage on float32 input accumulates in float32 (W = float32)."""
    m = strict_modules("14")
    x = np.array([1.0, 1e-8, 1e-8, 1e-8], np.float32)
    out = m["cupyx.scipy.ndimage"].correlate(m["cupy"].asarray(x), np.ones(3, np.float32), mode="constant")
    assert out[1] == np.float32(1.0)  # float32 sums: the 1e-8 terms vanish
    exact = (np.float64(x[0]) + np.float64(x[1]) + np.float64(x[2])).astype(np.float32)
    assert exact == np.float32(1.0)  # (and a float64 sum rounds to the same here)
    big = np.array([1.0, 2**-24, 2**-24], np.float32)
    got = m["cupyx.scipy.ndimage"].correlate(m["cupy"].asarray(big), np.ones(3, np.float32), mode="constant")
    assert got[1] == np.float32(1.0) != np.float32(np.float64(1.0) + 2 * 2**-24)


# ----------------------------------------------------------------------------- item 2: NaN cval


@pytest.mark.parametrize("fill", [float("nan"), np.float64("nan"), np.float32("nan"), np.nan, np.inf,
                                  -np.inf, np.float32("inf")], ids=lambda v: f"{type(v).__name__}({v})")
def test_non_finite_fill_reaches_cupyx_as_compilable_source(emu, rng, monkeypatch, fill):
    """Item 2: any NaN spelling reaches cupyx as ``numpy.nan`` itself, +-inf as a float."""
    calls = spy_ndimage(monkeypatch, emu, "correlate")
    a = rng.standard_normal((5, 6))
    k = rng.standard_normal((3, 3)) + 4
    out = convkit.correlate(a, k, mode="same", boundary="fill", fillvalue=fill, method="direct", backend=emu)
    assert calls, "ndimage path not taken"
    assert all(c["cval"] is np.nan or not np.isnan(c["cval"]) for c in calls)
    ref = reference("correlate", a, k, mode="same", boundary="fill", fillvalue=fill)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(ref))
    np.testing.assert_allclose(out[1:-1, 1:-1], ref[1:-1, 1:-1], rtol=1e-12)


def test_the_emulation_rejects_a_nan_that_is_not_numpy_nan():
    m = strict_modules("14")
    x = m["cupy"].asarray(np.ones(4))
    with pytest.raises(CompileException):
        m["cupyx.scipy.ndimage"].correlate(x, np.ones(2), mode="constant", cval=float("nan"))
    assert np.isnan(m["cupyx.scipy.ndimage"].correlate(x, np.ones(2), mode="constant", cval=np.nan)).any()


# ----------------------------------------------------------------------------- item 3: syncs per call


def _transfers(be, op, a, b, **kw):
    TRANSFERS.reset()
    out = getattr(convkit, op)(a, b, backend=be, **kw)
    log = list(TRANSFERS.log)
    assert log[-1] == "asnumpy"  # the result copy to the host (host in, host out)
    return out, log[:-1]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", ["direct", "direct-batch", "fft", "auto-fft", "auto-direct", "auto-fft-nan"])
def test_at_most_one_sync_per_float_call(emu, rng, dtype, case):
    """Item 3: on the float paths a call reads the device at most once (besides the result)."""
    method = case.split("-")[0]
    big = case.startswith("auto-fft")  # 1-D: no separable test (see test_separable_reads_the_kernel_once)
    a = rng.standard_normal((30000,) if big else (20, 17)).astype(dtype)  # big: an FFT under auto
    k = (rng.standard_normal((3001,) if big else (5, 4)) + 5).astype(dtype)
    kw = dict(axes=1) if case == "direct-batch" else {}
    if case == "direct-batch":
        k = k[:1]
    if case == "auto-fft-nan":
        a[3000] = np.nan
    before = CALLS.get("cupy.fft.rfftn", 0)
    out, log = _transfers(emu, "correlate", a, k, method=method, mode="same", **kw)
    assert len(log) <= 1, log
    assert (CALLS.get("cupy.fft.rfftn", 0) > before) == ("fft" in case)
    assert_matches(out, reference("correlate", a, k, mode="same", **kw), a, k, "correlate",
                   method="direct" if case == "auto-fft-nan" else method, mode="same", **kw)


def test_separable_reads_the_kernel_once(emu, rng, monkeypatch):
    """Separable auto: the kernel and the data's finiteness come back in one read (issue 12)."""
    import dataclasses

    monkeypatch.setattr(emu, "capabilities", dataclasses.replace(emu.capabilities, c_sep=1e-30))
    calls = spy_ndimage(monkeypatch, emu, "correlate1d")
    a = rng.standard_normal((40, 30))
    k = np.outer(np.hanning(7) + 0.1, [1.0, 2.0, 3.0, 0.5])
    out, log = _transfers(emu, "convolve", a, k, mode="same")
    assert len(calls) == 2 and len(log) <= 1, log
    ref = reference("convolve", a, k, mode="same")
    assert_matches(out, ref, a, k, "convolve", method="direct", mode="same")


@pytest.mark.parametrize("data", ["nan", "huge"])
def test_separable_single_read_keeps_s9(emu, rng, monkeypatch, data):
    """The one read decides NaN data (the plan's method runs) and data near the float range
    (the result's flag is read too; an overflow is recomputed by direct): as direct (S9)."""
    import dataclasses

    monkeypatch.setattr(emu, "capabilities", dataclasses.replace(emu.capabilities, c_sep=1e-30))
    calls = spy_ndimage(monkeypatch, emu, "correlate1d")
    a = rng.standard_normal((40, 30))
    if data == "nan":
        a[7, 9] = np.nan
    else:
        a *= 1e307
    k = np.outer(np.hanning(7) + 0.1, [1.0, 2.0, 3.0, 0.5])
    out, log = _transfers(emu, "convolve", a, k, mode="same")
    direct = convkit.convolve(a, k, mode="same", method="direct")
    np.testing.assert_array_equal(np.isfinite(out), np.isfinite(direct))
    np.testing.assert_array_equal(np.isnan(out), np.isnan(direct))
    assert (len(calls) == 0) == (data == "nan")
    assert len(log) == (1 if data == "nan" else 2), log


def test_exact_integer_fft_check_reads_once(emu, rng):
    a = rng.integers(-1000, 1000, (60, 50))
    b = rng.integers(-1000, 1000, (9, 7))
    out, log = _transfers(emu, "convolve", a, b, method="fft")
    assert len(log) <= 1, log
    np.testing.assert_array_equal(out, reference("convolve", a, b))
    big = np.full(64, 2**40, dtype=np.int64)
    with pytest.raises(ValueError, match="method='fft' cannot give the exact integer"):
        convkit.convolve(big, big, method="fft", backend=emu)


# ----------------------------------------------------------------------------- item 5: sync()


def test_sync_waits_on_the_arrays_device(monkeypatch):
    """Item 5: ``sync(x)`` synchronizes x's device, not the current device/stream."""
    mods = install_fake_cupy(monkeypatch)
    waited = []

    def current_stream():
        raise AssertionError("sync() used the current stream")

    cuda = {**vars(mods["cupy"].cuda), "get_current_stream": current_stream}
    mods["cupy"].cuda = types.SimpleNamespace(**cuda)

    class Dev:
        def synchronize(self):
            waited.append(self)

    dev = Dev()

    class OnDevice1(np.ndarray):
        device = dev

    be = ck_cupy.CupyBackend()
    be.sync(np.ones(3).view(OnDevice1))
    assert waited == [dev]
    before = EmulatedDevice.syncs
    emulated("14").sync(np.ones(2).view(DeviceArray))
    assert EmulatedDevice.syncs == before + 1
