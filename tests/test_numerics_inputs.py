"""Awkward numerics on the NumPy backend and the shared ArrayBackend (also CuPy's code):

* ``method="auto"`` is never less finite than ``"direct"`` on finite data (S8, S9);
* NaN/Inf next to padding follow the canonical form literally (S1, S9): padded values are
  multiplied too, so a NaN/Inf kernel tap makes every output non-finite;
* no internal ``RuntimeWarning`` on valid input (S13);
* absurd pads and dilations compute in memory O(input + output) (S1, S2, S7).

Every oracle here is independent of convkit: NumPy/SciPy, ``np.pad`` and the float64
canonical form :func:`canonical` written below, or ``tests/reference.py``.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
from reference import reference

import convkit
from convkit.testing import assert_conv_close

#: convkit boundary -> numpy.pad mode (S7)
PAD_MODE = {"fill": "constant", "symm": "symmetric", "mirror": "reflect", "nearest": "edge", "wrap": "wrap"}


def s2_pads(mode, n: int, me: int) -> tuple[int, int]:
    """S2 pads of one axis (align='scipy', origin 0); ``mode`` may be an explicit (lo, hi)."""
    if not isinstance(mode, str):
        return tuple(mode)
    return {"full": (me - 1, me - 1), "valid": (0, 0), "same": (me // 2, (me - 1) // 2),
            "causal": (me - 1, 0)}[mode]


def canonical(op, x, k, pads, stride, dilation, boundary="fill", fillvalue=0.0) -> np.ndarray:
    """S1 literally, in float64/complex128: ``np.pad`` (negative pads crop afterwards), then for
    every kernel tap add tap * (the padded values it meets). Nothing is skipped: padded fill
    values are multiplied like data, so ``Inf * 0 = NaN`` and a NaN tap reaches every output."""
    cplx = np.iscomplexobj(x) or np.iscomplexobj(k) or isinstance(fillvalue, complex)
    dt = np.complex128 if cplx else np.float64
    x, k = np.asarray(x, dt), np.asarray(k, dt)
    w = np.flip(k) if op == "convolve" else np.conj(k)
    widths = [(max(lo, 0), max(hi, 0)) for lo, hi in pads]
    extra = {"constant_values": fillvalue} if PAD_MODE[boundary] == "constant" else {}
    xp = np.pad(x, widths, mode=PAD_MODE[boundary], **extra)
    xp = xp[tuple(slice(max(-lo, 0), xp.shape[a] - max(-hi, 0)) for a, (lo, hi) in enumerate(pads))]
    n_out = [(xp.shape[a] - (m - 1) * d - 1) // s + 1
             for a, (m, d, s) in enumerate(zip(k.shape, dilation, stride))]
    out = np.zeros(n_out, dt)
    with np.errstate(all="ignore"):
        for t in np.ndindex(*k.shape):
            window = tuple(slice(j * d, j * d + (no - 1) * s + 1, s)
                           for j, d, s, no in zip(t, dilation, stride, n_out))
            out += xp[window] * w[t]
    return out


def assert_same_nonfinite(got, want) -> None:
    """NaN, +Inf and -Inf at the same positions (S9). Complex: the non-finite positions (whether
    a component of a complex product with an infinity is NaN or Inf depends on the
    multiplication formula: NumPy's ufunc, a BLAS dot and an FFT differ)."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape
    preds = (np.isfinite,) if got.dtype.kind == "c" else (np.isnan, np.isposinf, np.isneginf)
    for pred in preds:
        bad = pred(got) != pred(want)
        assert not bad.any(), f"{pred.__name__} positions differ at {np.argwhere(bad)[:5].tolist()}"


def assert_canonical(got, want, op, x, k, mode, pads, method, **kw) -> None:
    """``got`` has the canonical form's NaN/Inf positions (S9) and its finite values within the
    S5 direct bound (complex: the bound ``2 gamma_K (|x| (*) |k|)`` written out here)."""
    assert_same_nonfinite(got, want)
    if np.asarray(got).dtype.kind != "c":
        assert_conv_close(got, want, x, k, op, method=method, check_dtype=False, mode=mode, **kw)
        return
    taps, u = k.size, 2.0**-53
    mag = canonical(op, np.abs(x), np.abs(k), pads, kw["stride"], kw["dilation"], kw["boundary"],
                    abs(kw["fillvalue"]))
    fin = np.isfinite(want)
    err = np.abs(got[fin] - want[fin])
    assert np.all(err <= 2 * taps * u / (1 - taps * u) * mag[fin] + 1e-300), err.max()


# ----------------------------------------------------------------------------- 1. auto vs overflow


def test_s9_auto_oa_overflow_falls_back_to_direct():
    """S8/S9: finite 1e305 data, alternating kernel: overlap-add overflows to NaN, direct is
    finite; 'auto' (which picks overlap-add here) must give direct's finite result.
    Oracle: numpy.convolve (a direct loop)."""
    x, k = np.full(100_000, 1e305), np.tile([1.0, -1.0], 250)
    want = np.convolve(x, k)
    assert np.isfinite(want).all()
    got = convkit.convolve(x, k)
    assert np.isfinite(got).all()
    assert_conv_close(got, want, x, k, method="direct")


@pytest.mark.parametrize("shape, kshape", [((100_000,), (500,)), ((300, 300), (30, 30))])
def test_s9_auto_fft_overflow_with_finite_dc_falls_back(rng, shape, kshape):
    """S8/S9: data of alternating sign 1e305 have a finite DC bin (the plain FFT check passes)
    but overflow at the Nyquist bin; 'auto' must still match direct's finite result.
    Oracle: scipy.signal.convolve(method='direct')."""
    import scipy.signal

    idx = np.indices(shape).sum(axis=0)
    x, k = 1e305 * (-1.0) ** idx, rng.standard_normal(kshape)
    want = scipy.signal.convolve(x, k, method="direct")
    assert np.isfinite(want).all()
    got = convkit.convolve(x, k)
    assert np.isfinite(got).all()
    assert_conv_close(got, want, x, k, method="direct")


def test_s9_auto_separable_overflow_falls_back():
    """S8/S9: a rank-1 kernel whose first 1-D pass overflows (15 x 1e308) although every
    product of the 2-D direct sum is tiny; 'auto' (separable passes) must stay finite.
    Oracle: the float64 canonical form."""
    x = np.full((400, 400), 1e308)
    k = np.outer(np.ones(15), np.full(15, 1e-10))
    want = canonical("convolve", x, k, [(7, 7), (7, 7)], (1, 1), (1, 1))
    assert np.isfinite(want).all()
    got = convkit.convolve(x, k, "same")
    assert np.isfinite(got).all()
    assert_conv_close(got, want, x, k, method="direct", mode="same", check_dtype=False)


# ----------------------------------------------------------------------------- 2. NaN/Inf next to padding


def test_s9_nan_tap_poisons_every_output_1d():
    """S9: the SPEC repro: a NaN tap meets a padded zero in the last 'same' window, so every
    output is NaN, in 1-D exactly as for the same data of shape (1, N)."""
    x, k = np.arange(1.0, 9.0), np.array([np.nan, 1.0, 1.0])
    want = canonical("convolve", x, k, [(1, 1)], (1,), (1,))
    assert np.isnan(want).all()
    for method in ("direct", "auto", "fft", "oa"):
        assert np.isnan(convkit.convolve(x, k, "same", method=method)).all(), method
        assert np.isnan(convkit.convolve(x[None], k[None], "same", method=method)).all(), method


MODES = ("full", "same", "valid", "causal", "explicit")
BOUNDARIES = ("fill", "fill", "symm", "mirror", "nearest", "wrap")


def _nonfinite_cases(rank: int, count: int, seed: int, big: bool = False):
    """Random calls with NaN/+Inf/-Inf in the kernel, the input, or both."""
    rng = np.random.default_rng(seed)
    cases = []
    while len(cases) < count:
        hi_n = {1: 60, 2: 14, 3: 6}[rank] if big else {1: 9, 2: 6, 3: 4}[rank]
        n = [int(v) for v in rng.integers(1, hi_n + 1, rank)]
        m = [int(v) for v in rng.integers(1, (8 if big else 4) + 1, rank)]
        stride = tuple(int(v) for v in rng.choice([1, 1, 2, 3], rank))
        dilation = tuple(int(v) for v in rng.choice([1, 1, 2, 3], rank))
        mode = str(rng.choice(MODES))
        me = [(mm - 1) * d + 1 for mm, d in zip(m, dilation)]
        if mode == "explicit":
            mode = [(int(rng.integers(-2, 6)), int(rng.integers(-2, 6))) for _ in range(rank)]
        if mode == "valid" and stride == (1,) * rank and dilation == (1,) * rank and any(
                a < b for a, b in zip(n, m)):
            continue  # S3 swap: not the case under test
        pads = [s2_pads(mode if isinstance(mode, str) else mode[i], n[i], me[i]) for i in range(rank)]
        if any(nn + lo + hi < e for nn, (lo, hi), e in zip(n, pads, me)):
            continue
        boundary = str(rng.choice(BOUNDARIES))
        fill = float(rng.choice([0.0, 1.5, -2.0])) if boundary == "fill" else 0.0
        cplx = rng.random() < 0.15
        x = rng.standard_normal(n) + (1j * rng.standard_normal(n) if cplx else 0)
        k = rng.standard_normal(m)
        where = str(rng.choice(["kernel", "input", "both"]))
        for arr, name in ((x, "input"), (k, "kernel")):
            if where in (name, "both"):
                for _ in range(int(rng.integers(1, 3)) if name == "input" else 1):
                    pos = tuple(int(rng.integers(0, s)) for s in arr.shape)
                    arr[pos] = rng.choice([np.nan, np.inf, -np.inf])
        op = str(rng.choice(["convolve", "correlate"]))
        cases.append((op, x, k, mode, pads, stride, dilation, boundary, fill))
    return cases


def _sweep():
    for rank in (1, 2, 3):
        yield from _nonfinite_cases(rank, 150, seed=100 + rank)
        yield from _nonfinite_cases(rank, 8, seed=200 + rank, big=True)


@pytest.mark.parametrize("method", ["direct", "auto"])
def test_s9_nonfinite_positions_follow_canonical_form(method):
    """S1/S9: ranks 1-3, modes full/same/valid/causal/explicit (negative pads too), strides,
    dilations, every boundary and fill value, NaN/+Inf/-Inf in kernel and/or input, float64
    and complex128: 'direct' and 'auto' put NaN/Inf exactly where the float64 canonical form
    does (padded values multiplied, no skipping; dilation gaps are not taps); finite outputs
    within S5."""
    for op, x, k, mode, pads, stride, dilation, boundary, fill in _sweep():
        kw = dict(stride=stride, dilation=dilation, boundary=boundary, fillvalue=fill)
        got = getattr(convkit, op)(x, k, mode, method=method, **kw)
        want = canonical(op, x, k, pads, stride, dilation, boundary, fill)
        try:
            assert_canonical(got, want, op, x, k, mode, pads, method, **kw)
        except AssertionError as exc:
            raise AssertionError(f"{op} x{x.shape} k{k.shape} {mode} {kw}: {exc}") from None


def test_s9_nonfinite_on_blocked_paths(rng):
    """S1/S9: calls large enough for the NumPy backend's blocked paths (numpy.convolve in
    output blocks per core, ndimage in row blocks, 'auto' that prefers an FFT) put NaN/Inf
    where the float64 canonical form does: a NaN kernel tap, Inf data with dilation (the
    inserted zeros are not taps), NaN/Inf images with every boundary."""
    x1 = rng.standard_normal(200_000)
    x1[[0, 777, 150_000, -1]] = [np.inf, -np.inf, np.nan, np.inf]
    k1 = rng.standard_normal(20)
    k_nan = k1.copy()
    k_nan[0] = np.nan
    x2 = rng.standard_normal((400, 400))
    x2[[0, 10, 200, 399], [5, 399, 200, 0]] = [np.inf, np.nan, -np.inf, np.inf]
    k2 = rng.standard_normal((5, 5)) + 3.0
    cases = [
        (rng.standard_normal(200_000), k_nan, "same", dict(), "direct"),
        (rng.standard_normal(200_000), k_nan, "full", dict(), "auto"),
        (x1, k1, "full", dict(dilation=3), "direct"),
        (x1, k1, "same", dict(dilation=2), "auto"),
        (x1, k1, "same", dict(), "direct"),
        (x2, k2, "same", dict(boundary="symm"), "direct"),
        (x2, k2, "same", dict(boundary="fill", fillvalue=1.0, dilation=2), "direct"),
        (x2, np.outer(k2[0], k2[:, 0]), "same", dict(boundary="wrap"), "auto"),
    ]
    for x, k, mode, extra, method in cases:
        kw = dict(stride=(1,) * x.ndim, dilation=(extra.get("dilation", 1),) * x.ndim,
                  boundary=extra.get("boundary", "fill"), fillvalue=extra.get("fillvalue", 0.0))
        me = [(m - 1) * kw["dilation"][0] + 1 for m in k.shape]
        pads = [s2_pads(mode, n, e) for n, e in zip(x.shape, me)]
        got = convkit.convolve(x, k, mode, method=method, **kw)
        want = canonical("convolve", x, k, pads, kw["stride"], kw["dilation"], kw["boundary"],
                         kw["fillvalue"])
        try:
            assert_canonical(got, want, "convolve", x, k, mode, pads, method, **kw)
        except AssertionError as exc:
            raise AssertionError(f"x{x.shape} k{k.shape} {mode} {extra} {method}: {exc}") from None


def test_s9_nan_tap_under_fft_methods_reaches_every_output():
    """S9: explicit 'fft'/'oa' keep FFT behaviour, and a NaN kernel tap (which the canonical
    form multiplies in every window) leaves no output finite: ranks 1-3, the sweep above
    (overlap-add that splits a large kernel into blocks must not leave outputs finite)."""
    for op, x, k, mode, _, stride, dilation, boundary, fill in _sweep():
        if not np.isnan(k).any():
            continue
        for method in ("fft", "oa"):
            kw = dict(stride=stride, dilation=dilation, boundary=boundary, fillvalue=fill)
            got = getattr(convkit, op)(x, k, mode, method=method, **kw)
            assert not np.isfinite(got).any(), f"{method} {op} x{x.shape} k{k.shape} {mode} {kw}"


# ----------------------------------------------------------------------------- 3. no internal warnings


def _warning_cases():
    rng = np.random.default_rng(7)
    k2 = rng.standard_normal((20, 20))
    k2[3, 3] = np.inf
    x1 = rng.standard_normal(3000)
    x1[100] = np.inf
    x3 = rng.standard_normal((12, 12, 12))
    x3[0, 5, 5] = -np.inf
    idx = np.indices((300, 300)).sum(axis=0)
    xlong = rng.standard_normal(600_000)
    xlong[1000] = np.inf
    kn = rng.standard_normal(9)
    kn[0] = np.nan
    return [
        ("inf-kernel-2d", rng.standard_normal((200, 200)), k2, {}),
        ("inf-kernel-2d-same-fill", rng.standard_normal((60, 60)), k2, {"mode": "same", "fillvalue": 2.0}),
        ("inf-kernel-2d-symm", rng.standard_normal((60, 60)), k2, {"mode": "same", "boundary": "symm"}),
        ("inf-input-1d-dilated", x1, rng.standard_normal(40), {"mode": "same", "dilation": 3}),
        ("inf-input-3d", x3, rng.standard_normal((3, 3, 3)), {"mode": "same", "stride": 2}),
        ("nan-kernel-1d", rng.standard_normal(500), kn, {"mode": "same"}),
        ("overflow-oa", np.full(100_000, 1e305), np.tile([1.0, -1.0], 250), {}),
        ("overflow-fft-2d", 1e305 * (-1.0) ** idx, rng.standard_normal((30, 30)), {}),
        ("overflow-separable", np.full((400, 400), 1e308), np.outer(np.ones(15), np.full(15, 1e-10)),
         {"mode": "same"}),
        ("overflow-direct-2d", np.full((20, 20), 1e308), np.full((3, 3), 10.0), {}),
        ("overflow-float32", np.full((30, 30), 3e38, np.float32), np.full((3, 3), 10.0, np.float32), {}),
        ("overflow-float16-cast", np.full(200, 6e4, np.float16), np.ones(3, np.float16), {}),
        ("overflow-dtype-cast-1d", np.full(50, 1e300), np.ones(3), {"dtype": np.float32}),
        ("overflow-dtype-cast-2d", np.full((9, 9), 1e300), np.ones((2, 2)), {"dtype": np.float32}),
        ("inf-fill", rng.standard_normal((30, 30)), rng.standard_normal((3, 3)),
         {"mode": "same", "fillvalue": np.inf}),
        ("inf-kernel-fft", rng.standard_normal((64, 64)), k2, {"method": "fft"}),
        ("inf-kernel-oa", rng.standard_normal(5000), np.r_[np.inf, rng.standard_normal(99)],
         {"method": "oa"}),
        ("inf-input-oa-threads", xlong, rng.standard_normal(300), {"method": "oa"}),
        ("inf-input-fft", x1, rng.standard_normal(40), {"method": "fft"}),
    ]


def test_s13_no_runtime_warning_on_valid_input():
    """S13 (and S9): NaN/Inf data, huge finite values that overflow (float64, float32, the
    float16 cast), non-finite fill values, on 'auto' and explicit methods (threaded
    overlap-add too): convkit emits no RuntimeWarning (the arithmetic is intended); 'auto'
    results have the canonical form's NaN/Inf positions (float64 oracle)."""
    failures = []
    for name, x, k, kw in _warning_cases():
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)  # also raised in worker threads
            try:
                got = convkit.convolve(x, k, **kw)
            except RuntimeWarning as exc:
                failures.append(f"{name}: {exc}")
                continue
        if kw.get("method", "auto") == "auto" and x.dtype == np.float64 and "dtype" not in kw:
            mode = kw.get("mode", "full")
            dil = kw.get("dilation", 1)
            me = [(m - 1) * dil + 1 for m in k.shape]
            pads = [s2_pads(mode, n, e) for n, e in zip(x.shape, me)]
            want = canonical("convolve", x, k, pads, (kw.get("stride", 1),) * x.ndim, (dil,) * x.ndim,
                             kw.get("boundary", "fill"), kw.get("fillvalue", 0.0))
            try:
                assert_same_nonfinite(got, want)
            except AssertionError as exc:
                failures.append(f"{name}: {exc}")
    assert not failures, "\n".join(failures)


# ----------------------------------------------------------------------------- 4. absurd geometry


def test_s7_boundary_source_index_matches_np_pad():
    """S7: the index map of the bounded-memory path (padded position -> index into the input,
    ``n`` for a fill value) reproduces np.pad for pads several times the input length,
    including n = 1 and n = 2, and far-away positions (periodic rules reduce exactly)."""
    from convkit.backends._base import boundary_source

    for n in (1, 2, 3, 5):
        x = np.arange(1, n + 1) * 10
        xe = np.r_[x, -1]  # the fill slot
        for boundary, mode in PAD_MODE.items():
            for lo, hi in ((0, 0), (1, 0), (n, 2 * n + 1), (3 * n + 2, 5 * n), (7 * n, 7 * n + 3)):
                pos = np.arange(-lo, n + hi)
                idx = boundary_source(pos, n, {"fill": "constant"}.get(boundary, mode))
                extra = {"constant_values": -1} if mode == "constant" else {}
                want = np.pad(x, (lo, hi), mode=mode, **extra)
                np.testing.assert_array_equal(xe[idx], want, err_msg=f"n={n} {boundary} ({lo}, {hi})")
            # far away: np.pad of a short pad congruent modulo the rule's period
            period = {"wrap": n, "symm": 2 * n, "mirror": max(2 * n - 2, 1)}.get(boundary)
            if period:
                far = 10**12 * period
                pos = np.arange(-2 * n, 3 * n)
                idx = boundary_source(pos - far, n, mode)
                np.testing.assert_array_equal(xe[idx], np.pad(x, (2 * n, 2 * n), mode=mode))
                idx = boundary_source(pos + far, n, mode)
                np.testing.assert_array_equal(xe[idx], np.pad(x, (2 * n, 2 * n), mode=mode))


_DTYPES = (np.int32, np.float64, np.complex128, np.bool_)


def _gather_cases(seed: int, count: int):
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < count:
        rank = int(rng.integers(1, 4))
        dt = np.dtype(_DTYPES[len(out) % len(_DTYPES)])
        n = [int(v) for v in rng.integers(1, 7, rank)]
        m = [int(v) for v in rng.integers(1, 4, rank)]
        stride = tuple(int(v) for v in rng.integers(1, 4, rank))
        dilation = tuple(int(v) for v in rng.integers(1, 5, rank))
        me = [(mm - 1) * d + 1 for mm, d in zip(m, dilation)]
        mode = [(int(rng.integers(-3, 3 * nn + 2)), int(rng.integers(-3, 3 * nn + 2))) for nn in n]
        if any(nn + lo + hi < e for nn, (lo, hi), e in zip(n, mode, me)):
            continue
        boundary = str(rng.choice(list(PAD_MODE)))
        fill = 0
        if boundary == "fill":
            fill = {"b": True, "i": -3, "f": 2.5, "c": 1.5 - 2j}[dt.kind] if rng.random() < 0.6 else 0
        if dt.kind == "b":
            x, k = rng.random(n) < 0.4, rng.random(m) < 0.6
        elif dt.kind == "i":
            x = rng.integers(-2**31, 2**31, n).astype(dt)  # products and sums wrap around (S5)
            k = rng.integers(-2**31, 2**31, m).astype(dt)
        else:
            x, k = rng.standard_normal(n).astype(dt), rng.standard_normal(m).astype(dt)
            if dt.kind == "c":
                x, k = x + 1j * rng.standard_normal(n), k + 1j * rng.standard_normal(m)
        op = str(rng.choice(["convolve", "correlate"]))
        kw = dict(stride=stride, dilation=dilation, boundary=boundary, fillvalue=fill)
        out.append((op, x, k, mode, kw))
    return out


@pytest.mark.parametrize("backend", ["numpy", "cupy-emulated"])
def test_s1_bounded_memory_path_matches_direct(monkeypatch, backend):
    """S1/S5/S7: the bounded-memory gather path (forced on every call) equals the existing
    direct path (forced off) and the exact reference (tests/reference.py) on a random grid:
    ranks 1-3, every boundary, fill values, strides, dilations, negative and long pads,
    int32 (exact, wrap-around), float64, complex128 (S5 bound) and bool (exact)."""
    from convkit.backends._base import ArrayBackend

    for op, x, k, mode, kw in _gather_cases(seed=11, count=160):
        monkeypatch.setattr(ArrayBackend, "gather_pays", lambda self, plan: True)
        got = getattr(convkit, op)(x, k, mode, method="direct", backend=backend, **kw)
        monkeypatch.setattr(ArrayBackend, "gather_pays", lambda self, plan: False)
        old = getattr(convkit, op)(x, k, mode, method="direct", backend=backend, **kw)
        want = reference(op, x, k, mode, **kw)
        where = f"{op} {x.dtype} x{x.shape} k{k.shape} {mode} {kw}"
        if x.dtype.kind in "bi":
            assert got.dtype == x.dtype, where
            np.testing.assert_array_equal(got, want, err_msg=where, strict=True)
            np.testing.assert_array_equal(got, old, err_msg=where, strict=True)
        else:
            try:
                assert_conv_close(got, want, x, k, op, method="direct", check_dtype=False, mode=mode, **kw)
                assert_conv_close(got, old, x, k, op, method="direct", mode=mode, **kw)
            except AssertionError as exc:
                raise AssertionError(f"{where}: {exc}") from None


_HUGE = r"""
import resource, sys
import numpy as np
import convkit
import scipy.fft, scipy.ndimage, scipy.signal  # imported before the limit (address space)

convkit.convolve(np.arange(4.0), [1.0, 2.0], backend=sys.argv[1])  # warm every import
resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
be = sys.argv[1]
x = np.arange(10.0) - 3.5
k = np.array([1.0, 2.0, 3.0])
# 'same', dilation 1e9: pads (1e9, 1e9); only the centre tap meets the data, the others meet zeros
for method in ("auto", "direct", "fft", "oa"):
    got = convkit.convolve(x, k, "same", dilation=10**9, method=method, backend=be)
    assert got.shape == (10,) and np.array_equal(got, 2.0 * x), (method, got)
    got = convkit.correlate(x, k, "same", dilation=10**9, method=method, backend=be)
    assert np.array_equal(got, 2.0 * x), (method, got)
got = convkit.convolve(np.arange(10), np.array([4, 5, 6]), "same", dilation=10**9, backend=be)
assert got.dtype == np.int64 and np.array_equal(got, 5 * np.arange(10)), got
# explicit pads (1e6, 1e6), dilation 1e6: out[i] = w0 * p(i - 1e6) + w1 * x[i] + w2 * p(i + 1e6)
w = k[::-1]
for boundary, mode in (("fill", "constant"), ("symm", "symmetric"), ("mirror", "reflect"),
                       ("nearest", "edge"), ("wrap", "wrap")):
    for fill in ((0.0, -1.5) if boundary == "fill" else (0.0,)):
        got = convkit.convolve(x, k, [(10**6, 10**6)], dilation=10**6, boundary=boundary,
                               fillvalue=fill, backend=be)
        if mode == "constant":
            lo = hi = np.full(10, fill)
        elif mode == "edge":
            lo, hi = np.full(10, x[0]), np.full(10, x[-1])
        else:  # periodic rule: np.pad with a short pad congruent to 1e6 modulo the period
            period = {"wrap": 10, "symmetric": 20, "reflect": 18}[mode]
            r = 10**6 % period
            padded = np.pad(x, (r + period, r + period), mode=mode)
            lo, hi = padded[period:period + 10], padded[2 * r + period:][:10]
        want = w[0] * lo + w[1] * x + w[2] * hi
        assert np.allclose(got, want, rtol=1e-14, atol=1e-12), (boundary, fill, got, want)
# 2-D: pads (1e6, 1e6) and dilation 1e6 on both axes: (2e6)^2 padded elements, 4 x 5 outputs
x2 = np.arange(20.0).reshape(4, 5)
k2 = np.arange(1.0, 10.0).reshape(3, 3)
got = convkit.correlate(x2, k2, [(10**6, 10**6)] * 2, dilation=10**6, backend=be)
assert np.array_equal(got, k2[1, 1] * x2), got
got = convkit.correlate(x2, k2, [(10**6, 10**6)] * 2, dilation=10**6, fillvalue=1.0, backend=be)
assert np.array_equal(got, k2[1, 1] * x2 + (k2.sum() - k2[1, 1])), got
print("ok")
"""


@pytest.mark.parametrize("backend", ["numpy", "cupy-emulated"])
def test_s2_absurd_dilation_and_pads_in_bounded_memory(tmp_path, backend):
    """S1/S2/S7: 'same' with dilation 1e9 (10 outputs) and explicit pads (1e6, 1e6) with dilation
    1e6 (1-D, every boundary; 2-D: 4e12 padded elements) compute without materialising the
    padded input or the dilated kernel, for every method, under a 2 GiB address-space limit.
    Oracle by hand: only the centre tap meets the data; the other taps meet fill values, edge
    values or (periodic rules) np.pad of a short pad congruent modulo the period."""
    script = tmp_path / "huge.py"
    body = _HUGE
    if backend == "cupy-emulated":
        register = (f"sys.path.insert(0, {str(_tests_dir())!r})\n"
                    "import cupy_emulated\ncupy_emulated.register()\n")
        body = body.replace("import convkit\n", "import convkit\n" + register)
    script.write_text(textwrap.dedent(body))
    proc = subprocess.run([sys.executable, str(script), backend], capture_output=True, text=True,
                          timeout=300, env=_env())
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), (proc.stdout + proc.stderr)[-4000:]


def _tests_dir():
    from pathlib import Path

    return Path(__file__).resolve().parent


def _env():
    import os

    env = dict(os.environ)
    env.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env
