"""The torch backend beyond the conformance suite (which runs on its ``torch`` and
``torch-host`` runners: ``pytest --backend torch``).

Oracles are independent of the torch backend: the exact Python-int reference of
tests/reference.py (integers, with two's-complement wrap-around), the NumPy backend and
SciPy within the S5 bounds (floats), ``torch.autograd.gradcheck`` (finite differences) for
gradients, and ``numpy.pad`` for padding.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
import threading
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from reference import random_array, reference  # noqa: E402

import convkit  # noqa: E402
from convkit.errors import ConvkitTypeError, ConvkitValueError, DeviceMismatchError  # noqa: E402
from convkit.plan import plan_call  # noqa: E402
from convkit.testing import assert_conv_close  # noqa: E402

ck_torch = pytest.importorskip("convkit.backends.torch")
BE = ck_torch.backend
INT_DTYPES = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")


def tensor(a) -> torch.Tensor:
    """A CPU tensor copy of ``a`` with its dtype."""
    return torch.from_numpy(np.array(a, order="C", copy=True))


@pytest.fixture
def rng():
    return np.random.default_rng(2024)


@pytest.fixture
def count(monkeypatch):
    """``count(name)``: how often ``TorchBackend.<name>`` ran since the call (spy)."""
    calls: dict[str, int] = {}

    def spy(name):
        orig = getattr(ck_torch.TorchBackend, name)

        def wrapped(self, *a, **kw):
            calls[name] = calls.get(name, 0) + 1
            return orig(self, *a, **kw)

        monkeypatch.setattr(ck_torch.TorchBackend, name, wrapped)
        calls[name] = 0
        return lambda: calls[name]

    return spy


# ----------------------------------------------------------------------------- dispatch (S11, S12)


def test_torch_in_torch_out_dispatched_by_tensor_type(rng):
    """S11/S12: torch tensors pick the torch backend and come back as torch tensors on their
    device, whatever use_backend says; host data beside a tensor is converted like host data."""
    x, k = rng.standard_normal(12), rng.standard_normal(3)
    want = np.convolve(x, k)
    with convkit.use_backend("numpy"):  # device inputs pick their own backend (S12 rule 1)
        for a, b in ((tensor(x), tensor(k)), (tensor(x), k), (x, tensor(k)), (tensor(x), k.tolist())):
            out = convkit.convolve(a, b)
            assert isinstance(out, torch.Tensor) and out.device.type == "cpu"
            assert out.dtype == torch.float64 and out.is_contiguous()
            assert_conv_close(out.numpy(), want, x, k)
    out = convkit.convolve(tensor(x), tensor(k), backend="torch")
    assert isinstance(out, torch.Tensor)
    out = convkit.convolve(tensor(x), tensor(k), backend=convkit.get_backend("torch"))
    assert isinstance(out, torch.Tensor)


def test_host_inputs_with_backend_torch_come_back_as_numpy(rng, count):
    """S11: NumPy in with backend='torch' runs on torch and returns NumPy."""
    ran = count("execute")
    x, k = rng.standard_normal((6, 7)), rng.standard_normal((2, 3))
    for backend in ("torch", convkit.get_backend("torch")):
        out = convkit.correlate(x, k, "same", backend=backend)
        assert type(out) is np.ndarray and out.dtype == np.float64
        assert_conv_close(out, convkit.correlate(x, k, "same", method="direct", backend="numpy"), x, k,
                          "correlate", mode="same")
    with convkit.use_backend("torch"):
        assert type(convkit.convolve([1, 2, 3], [1, 1])) is np.ndarray
    assert ran() == 3


def test_device_conflicts_are_errors():
    """S11/S13: tensors never move silently: backend='numpy' with a tensor, or tensors on two
    devices, are DeviceMismatchErrors (one line, saying what to do)."""
    t = torch.ones(5)
    with pytest.raises(DeviceMismatchError, match="backend='numpy' conflicts with torch"):
        convkit.convolve(t, torch.ones(2), backend="numpy")
    with pytest.raises(DeviceMismatchError, match=r"in1 is on cpu and in2 on meta") as info:
        convkit.convolve(t, torch.ones(2, device="meta"))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("d1", ["bool", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64",
                                "uint64", "float16", "float32", "float64", "complex64", "complex128"])
def test_result_dtype_is_numpys_for_every_torch_dtype(d1, rng):
    """S4: torch inputs get numpy.result_type, not torch's promotion (uint8 + int8 -> int16,
    uint64 + int64 -> float64, float32 + int32 -> float64); float64 is kept."""
    for d2 in ("bool", "int8", "uint8", "uint64", "float32", "float64", "complex64"):
        a, b = random_array(rng, (7,), d1, small=True), random_array(rng, (3,), d2, small=True)
        out = convkit.convolve(tensor(a), tensor(b), "same")
        want = np.result_type(a, b)
        assert out.dtype == getattr(torch, want.name), (d1, d2, out.dtype)
        ref = reference("convolve", a, b, "same")
        if want.kind in "biu":
            np.testing.assert_array_equal(out.numpy(), ref, strict=True)
        else:
            assert_conv_close(out.numpy(), ref, a, b, mode="same", check_dtype=False)


def test_float64_is_kept_and_accurate(rng):
    """S4/S5: float64 tensors compute in float64 on every method (the float64 S5 bound, which
    no float32 computation meets)."""
    x, k = rng.standard_normal((40, 50)), rng.standard_normal((7, 5))
    for method in ("direct", "fft", "auto"):
        out = convkit.convolve(tensor(x), tensor(k), "same", method=method)
        assert out.dtype == torch.float64
        assert_conv_close(out.numpy(), reference("convolve", x, k, "same"), x, k, method=method,
                          mode="same", check_dtype=False)


@pytest.mark.parametrize("name, hint", [("bfloat16", r"x\.float\(\)"), ("complex32", "complex64"),
                                        ("float8_e4m3fn", "expected bool")])
def test_torch_dtypes_without_numpy_twin_are_refused(name, hint):
    """S4/S13: bfloat16, complex32 and float8 tensors: a one-line ConvkitTypeError with what to do."""
    dt = getattr(torch, name, None)
    if dt is None:
        pytest.skip(f"torch has no {name}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # complex32: "ComplexHalf support is experimental"
        t = torch.ones(4).to(dt)
    with pytest.raises(ConvkitTypeError, match=hint) as info:
        convkit.convolve(t, torch.ones(2))
    assert "\n" not in str(info.value) and name in str(info.value)


def test_long_double_with_backend_torch_is_refused():
    if np.dtype(np.longdouble).itemsize <= 8:
        pytest.skip("long double is float64 here")
    with pytest.raises(ConvkitTypeError, match="torch cannot hold.*backend='numpy'"):
        convkit.convolve(np.ones(4, np.longdouble), np.ones(2), backend="torch")


def test_result_does_not_alias_the_inputs():
    """S11: the result is a new tensor, even where the computation is a no-op (one tap of 1)."""
    x = torch.arange(6.0)
    for k in (torch.ones(1), torch.ones((1,), dtype=torch.int64)):
        out = convkit.correlate(x, k, "valid")
        out += 1
        assert x.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]


# ----------------------------------------------------------------------------- gradients


GRAD_CASES = [
    dict(mode="full"),
    dict(mode="valid"),
    dict(mode="same", boundary="symm"),
    dict(mode="same", boundary="mirror", stride=2),
    dict(mode="same", boundary="wrap", align="tf", stride=3, dilation=2),
    dict(mode="causal", boundary="nearest", dilation=2),
    dict(mode="same", fillvalue=1.5),
    dict(mode="full", method="fft"),
    dict(mode="same", boundary="wrap", method="fft", stride=2),
    dict(mode="same", dilation=9),  # dilated kernel longer than the input
]


@pytest.mark.parametrize("path", ["conv", "shift"])
@pytest.mark.parametrize("op", ["convolve", "correlate"])
@pytest.mark.parametrize("kw", GRAD_CASES, ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()))
def test_gradcheck_both_inputs(op, kw, path, monkeypatch):
    """requires_grad tensors differentiate through the result, w.r.t. both inputs, on both
    direct paths (torch conv kernel, shift-and-add) and the FFT path, 1-D and 2-D."""
    monkeypatch.setattr(ck_torch.TorchBackend, "conv_pays", lambda self, plan, x: path == "conv")
    gen = torch.Generator().manual_seed(7)
    fn = getattr(convkit, op)
    for xs, ks in (((11,), (3,)), ((5, 6), (2, 3))):
        x = torch.randn(xs, dtype=torch.float64, generator=gen, requires_grad=True)
        k = torch.randn(ks, dtype=torch.float64, generator=gen, requires_grad=True)
        assert torch.autograd.gradcheck(lambda a, b: fn(a, b, **kw), (x, k), fast_mode=True)


@pytest.mark.parametrize("op", ["convolve", "correlate"])
def test_gradcheck_other_paths(op, count):
    """Gradients through the shift-and-add (complex), batch axes (conv groups), pads that crop,
    and the bounded-memory gather path."""
    gen = torch.Generator().manual_seed(3)
    fn = getattr(convkit, op)

    def rand(*shape, dtype=torch.float64):
        return torch.randn(shape, dtype=dtype, generator=gen, requires_grad=True)

    gathered = count("gather_direct")
    conv = count("conv_direct")
    cases = [
        ((rand(5, 6, dtype=torch.complex128), rand(2, 3, dtype=torch.complex128)), dict(mode="same")),
        ((rand(5, 6, dtype=torch.complex128), rand(2, 3, dtype=torch.complex128)),
         dict(mode="same", method="fft")),
        ((rand(3, 9), rand(3, 2)), dict(mode="same", axes=1)),      # groups
        ((rand(1, 9), rand(3, 2)), dict(mode="full", axes=1)),      # output channels
        ((rand(3, 9), rand(1, 2)), dict(mode="valid", axes=1)),     # batch
        ((rand(11), rand(3)), dict(mode=[(3, -2)], boundary="mirror")),
        ((rand(12), rand(3)), dict(mode=[(10**6, 5 - 10**6)], boundary="wrap")),  # gather
        ((rand(4, 5, 3), rand(2, 2, 2)), dict(mode="same", boundary="nearest", stride=(1, 2, 1))),  # conv3d
    ]
    for args, kw in cases:
        assert torch.autograd.gradcheck(lambda a, b, kw=kw: fn(a, b, **kw), args, fast_mode=True), kw
    assert gathered() > 0 and conv() > 0


def test_gradient_through_mixed_inputs_and_result_values():
    """A tensor that requires grad beside NumPy data: the result carries a grad_fn, its values
    are those of the detached call, and backward() reaches the tensor."""
    k = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64, requires_grad=True)
    x = np.linspace(0, 1, 9)
    out = convkit.correlate(x, k, "valid")
    assert out.requires_grad and out.grad_fn is not None
    np.testing.assert_array_equal(out.detach().numpy(), convkit.correlate(x, k.detach(), "valid").numpy())
    out.sum().backward()
    # d/dk_j sum_i x[i + j] k_j = sum_i x[i + j]
    np.testing.assert_allclose(k.grad.numpy(), [x[j:j + 7].sum() for j in range(3)], rtol=1e-13)


# ----------------------------------------------------------------------------- integers (S5)


@pytest.mark.parametrize("dtype", INT_DTYPES)
def test_integers_exact_with_wraparound(dtype, rng):
    """S5: full-range integers, every boundary, stride, dilation and method: bit-identical to
    the exact Python-int result reduced with two's-complement wrap-around; the dtype is kept
    (uint16/32/64 compute in int64 and come back in their own type)."""
    calls = [("convolve", dict(mode="full")), ("correlate", dict(mode="same", boundary="symm")),
             ("convolve", dict(mode="valid", stride=2)), ("correlate", dict(mode="same", boundary="wrap",
                                                                           dilation=2)),
             ("convolve", dict(mode="same", boundary="fill", fillvalue=int(np.iinfo(dtype).max))),
             ("correlate", dict(mode=[(9, -2)], boundary="mirror")),
             ("convolve", dict(mode="causal", boundary="nearest", stride=3))]
    for shape, kshape in (((23,), (4,)), ((6, 9), (3, 2))):
        a, b = random_array(rng, shape, dtype), random_array(rng, kshape, dtype)
        for op, kw in calls:
            if isinstance(kw["mode"], list):
                kw = dict(kw, mode=kw["mode"] * len(shape))
            want = reference(op, a, b, **kw)
            for method in ("direct", "auto"):
                got = getattr(convkit, op)(tensor(a), tensor(b), method=method, **kw)
                assert got.dtype == getattr(torch, dtype)
                np.testing.assert_array_equal(got.numpy(), want, strict=True, err_msg=f"{op} {kw} {method}")


def test_integer_products_wrap_like_numpy_int64():
    """S5 at the extremes: products and sums that overflow every width wrap exactly."""
    for dt in INT_DTYPES:
        info = np.iinfo(dt)
        a = np.array([info.max, info.min, info.max, info.min + 1], dt)
        b = np.array([info.max, info.max, info.min], dt)
        for op in ("convolve", "correlate"):
            got = getattr(convkit, op)(tensor(a), tensor(b))
            np.testing.assert_array_equal(got.numpy(), reference(op, a, b), strict=True, err_msg=dt)


def test_integer_fft_exact_or_refused_like_numpy(rng):
    """S5/S8: an explicit FFT on integers equals the exact result or raises the same
    ConvkitValueError as the NumPy backend (the rule is judged on the unsigned values)."""
    outcomes = {"exact": 0, "refused": 0}
    for i, dt in enumerate(INT_DTYPES * 3):
        info = np.iinfo(dt)
        top = min(int(info.max), [2**6, 2**20, 2**40][i // len(INT_DTYPES)])
        a = rng.integers(0 if info.min == 0 else -top, top, (3 + i, 5), endpoint=True).astype(dt)
        b = rng.integers(0 if info.min == 0 else -top, top, (3, 2), endpoint=True).astype(dt)
        if i % 4 == 0:
            a[0, 0] = info.max
        for op, kw in (("convolve", {}), ("correlate", dict(mode="same", boundary="symm"))):
            try:
                want = getattr(convkit, op)(a, b, method="fft", backend="numpy", **kw)
            except ConvkitValueError as exc:
                outcomes["refused"] += 1
                with pytest.raises(ConvkitValueError) as info_:
                    getattr(convkit, op)(tensor(a), tensor(b), method="fft", **kw)
                assert str(info_.value) == str(exc)
                continue
            outcomes["exact"] += 1
            got = getattr(convkit, op)(tensor(a), tensor(b), method="fft", **kw)
            np.testing.assert_array_equal(got.numpy(), want, strict=True)
            np.testing.assert_array_equal(want, reference(op, a, b, **kw), strict=True)
    assert outcomes["exact"] > 5 and outcomes["refused"] > 5, outcomes


def test_bool_is_logical(rng):
    a, b = rng.integers(0, 2, (9, 7)).astype(bool), rng.integers(0, 2, (3, 3)).astype(bool)
    for method in ("direct", "fft", "auto"):
        got = convkit.convolve(tensor(a), tensor(b), "same", boundary="wrap", method=method)
        assert got.dtype == torch.bool
        np.testing.assert_array_equal(got.numpy(), reference("convolve", a, b, "same", boundary="wrap"))


# ----------------------------------------------------------------------------- NaN-safe auto (S9)


@pytest.mark.parametrize("where", ["image", "kernel", "inf"])
def test_auto_is_nan_safe_where_it_picks_fft(where, rng):
    """S9: where auto picks the FFT for these shapes, NaN/Inf land where direct puts them."""
    x, k = rng.standard_normal((120, 130)), rng.standard_normal((17, 15))
    assert plan_call("convolve", x, k, BE.capabilities, mode="same").method == "fft"
    if where == "image":
        x[40, 50] = np.nan
    elif where == "kernel":
        k[3, 4] = np.nan
    else:
        x[0, 0], x[100, 7] = np.inf, -np.inf
    got = convkit.convolve(tensor(x), tensor(k), "same").numpy()
    direct = convkit.convolve(x, k, "same", method="direct", backend="numpy")
    for pred in (np.isnan, np.isposinf, np.isneginf):
        np.testing.assert_array_equal(pred(got), pred(direct))
    assert not np.isfinite(got).all()
    fft = convkit.convolve(tensor(x), tensor(k), "same", method="fft").numpy()
    assert np.isnan(fft).all()  # explicit fft keeps FFT behaviour


def test_direct_with_nan_runs_the_shift_and_add(rng, count):
    """S9: the torch conv kernel runs on finite data only; a NaN (or a NaN fill value) goes
    to the shift-and-add, whose NaN positions are the canonical form's."""
    conv = count("conv_direct")
    x, k = rng.standard_normal((9, 10)), rng.standard_normal((3, 3))
    convkit.correlate(tensor(x), tensor(k), "same")
    assert conv() == 1
    x[4, 4] = np.nan
    for kw in (dict(), dict(fillvalue=np.nan)):
        got = convkit.correlate(tensor(x), tensor(k), "same", method="direct", **kw).numpy()
        want = convkit.correlate(x, k, "same", method="direct", backend="numpy", **kw)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    assert conv() == 1


# ----------------------------------------------------------------------------- paths and padding


def test_conv_kernel_path_matches_the_reference_on_batch_layouts(rng, count, monkeypatch):
    """The conv1d/2d/3d path (batch axes -> N, groups, output channels; stride, dilation,
    every boundary) stays within the S5 direct bound of the exact result, float32 and float64
    (forced here: on CPU ``conv_pays`` keeps large float64 outputs on the shift-and-add)."""
    monkeypatch.setattr(ck_torch.TorchBackend, "conv_pays", lambda self, plan, x: x.is_floating_point())
    conv = count("conv_direct")
    layouts = [((4, 20), (1, 3), dict(axes=1)), ((4, 20), (4, 3), dict(axes=1)),
               ((1, 20), (5, 3), dict(axes=1)), ((3, 1, 12, 11), (3, 2, 3, 2), dict(axes=(2, 3))),
               ((6, 7, 8), (2, 3, 2), {}), ((2, 6, 7, 8), (1, 2, 3, 2), dict(axes=(1, 2, 3)))]
    opts = [dict(mode="same", boundary="symm", stride=2), dict(mode="full", dilation=2),
            dict(mode="valid"), dict(mode="same", boundary="wrap", align="tf", stride=3, dilation=2)]
    n = 0
    for xs, ks, ax in layouts:
        for kw in opts:
            for dt in ("float32", "float64"):
                a, b = rng.standard_normal(xs).astype(dt), rng.standard_normal(ks).astype(dt)
                if kw["mode"] == "valid" and any(b.shape[i] > a.shape[i] for i in range(a.ndim)):
                    continue
                got = convkit.correlate(tensor(a), tensor(b), method="direct", **ax, **kw)
                assert got.dtype == getattr(torch, dt)
                want = reference("correlate", a, b, **ax, **kw)
                assert_conv_close(got.numpy(), want, a, b, "correlate", method="direct", check_dtype=False,
                                  **ax, **kw)
                n += 1
    assert conv() == n


@pytest.mark.parametrize("boundary", ["constant", "symmetric", "reflect", "edge", "wrap"])
def test_pad_is_numpy_pad(boundary, rng):
    """S7: pads of every size (longer than the input, negative pads that crop, crops beyond the
    other end) equal numpy.pad followed by the crop, for floats, ints (uint64 fills) and bool."""
    widths = (-6, -3, -1, 0, 1, 3, 4, 9, 14)
    n = 4
    for dt, fill in (("float64", 2.5), ("uint64", 2**64 - 2), ("int8", -7), ("bool", 1)):
        x = random_array(rng, (3, n), dt)
        for lo in widths:
            for hi in widths:
                if n + lo + hi < 1:
                    continue
                plan = plan_call("correlate", x, np.ones((1, 1), dt), mode=[(0, 0), (lo, hi)],
                                 boundary=boundary, fillvalue=fill, axes=(0, 1))
                want = convkit.get_backend("numpy").pad(plan, x)
                got = BE.pad(plan, BE.astype(tensor(x), plan.acc_dtype))
                got = got.view(torch.uint64) if dt == "uint64" else got
                np.testing.assert_array_equal(got.numpy(), want, strict=True, err_msg=f"{dt} {lo} {hi}")


def test_gather_path_for_absurd_pads_and_dilation(rng, count):
    """Pads or dilations far beyond the data run the bounded-memory gather (torch indices)."""
    gathered = count("gather_direct")
    a, b = rng.integers(-50, 50, 15), rng.integers(-50, 50, 3)
    for kw in (dict(mode=[(10**7, 4 - 10**7)], boundary="wrap"), dict(mode="same", dilation=10**6),
               dict(mode=[(10**7, 3 - 10**7)], boundary="fill", fillvalue=5)):
        for op in ("convolve", "correlate"):
            got = getattr(convkit, op)(tensor(a), tensor(b), **kw)
            np.testing.assert_array_equal(got.numpy(), reference(op, a, b, **kw), strict=True)
    assert gathered() == 6


def test_uint_types_without_torch_arithmetic(rng):
    """uint16/32/64 tensors (storage only in torch) come back in their own dtype, exact."""
    for dt in ("uint16", "uint32", "uint64"):
        a, b = random_array(rng, (12,), dt), random_array(rng, (3,), dt)
        for kw in (dict(mode="same", boundary="symm"), dict(mode="full", dilation=3)):
            out = convkit.convolve(tensor(a), tensor(b), **kw)
            assert out.dtype == getattr(torch, dt)
            np.testing.assert_array_equal(out.numpy(), reference("convolve", a, b, **kw), strict=True)
        small = random_array(rng, (9,), "uint8")
        out = convkit.convolve(tensor(small), tensor(b), dtype=dt)  # uint8 widened by dtype=
        np.testing.assert_array_equal(out.numpy(), reference("convolve", small, b, dtype=dt), strict=True)


# ----------------------------------------------------------------------------- precision (S6)


def _flags() -> dict:
    b = torch.backends
    out = {"cudnn.enabled": b.cudnn.enabled, "nnpack": torch._C._get_nnpack_enabled()}
    if hasattr(getattr(b.cudnn, "conv", None), "fp32_precision"):
        out.update({"matmul.fp32_precision": b.cuda.matmul.fp32_precision,
                    "cudnn.conv.fp32_precision": b.cudnn.conv.fp32_precision,
                    "mkldnn.conv.fp32_precision": b.mkldnn.conv.fp32_precision})
    else:
        out.update({"matmul.allow_tf32": b.cuda.matmul.allow_tf32, "cudnn.allow_tf32": b.cudnn.allow_tf32})
    return out


def test_highest_precision_sets_flags_only_for_the_call(rng, monkeypatch):
    """S6: precision='highest' runs a CPU conv kernel with NNPACK and oneDNN's reduced-precision
    modes off, leaves the CUDA flags alone (they do not apply to CPU tensors) and torch's global
    flags as they were; 'default' leaves them alone."""
    before = _flags()
    seen = []
    orig = torch.nn.functional.conv2d

    def spy(*a, **kw):
        seen.append(_flags())
        return orig(*a, **kw)

    monkeypatch.setattr(torch.nn.functional, "conv2d", spy)
    x, k = tensor(rng.standard_normal((20, 20)).astype(np.float32)), tensor(np.ones((3, 3), np.float32))
    convkit.convolve(x, k, "same")
    assert _flags() == before
    inside = seen[-1]
    assert inside.get("mkldnn.conv.fp32_precision", "ieee") in ("ieee", "none")
    if torch.backends.nnpack.is_available():
        assert inside["nnpack"] is False
    assert {key: v for key, v in inside.items() if key != "nnpack"} == \
        {key: v for key, v in before.items() if key != "nnpack"}
    convkit.convolve(x, k, "same", precision="default")
    assert seen[-1] == before and _flags() == before


def test_full_precision_turns_off_every_reduced_precision_path():
    """S6: ``full_precision()`` (any device) turns TF32, cuDNN and NNPACK off; ``cuda=False``
    only the CPU paths; both restore the flags."""
    before = _flags()
    with ck_torch.full_precision():
        inside = _flags()
    assert _flags() == before
    assert inside["cudnn.enabled"] is False
    assert inside.get("matmul.fp32_precision", "ieee") == "ieee"
    assert inside.get("cudnn.conv.fp32_precision", "ieee") == "ieee"
    assert inside.get("matmul.allow_tf32", False) is False and inside.get("cudnn.allow_tf32", False) is False
    with ck_torch.full_precision(cuda=False):
        cpu_only = _flags()
    assert cpu_only["cudnn.enabled"] == before["cudnn.enabled"]
    if torch.backends.nnpack.is_available():
        assert inside["nnpack"] is False and cpu_only["nnpack"] is False
    assert _flags() == before


def test_highest_precision_turns_off_onednn_bf16_on_cpu():
    """S6: a user who set oneDNN's float32 convolutions to bf16 gets full-precision CPU layers
    from convkit, and keeps the setting afterwards."""
    mkl = getattr(getattr(torch.backends, "mkldnn", None), "conv", None)
    if mkl is None or not hasattr(mkl, "fp32_precision"):
        pytest.skip(f"torch {torch.__version__} has no oneDNN fp32_precision flag (added in 2.9)")
    saved = mkl.fp32_precision
    seen = []
    orig = torch.nn.functional.conv2d

    def spy(*a, **kw):
        seen.append(mkl.fp32_precision)
        return orig(*a, **kw)

    try:
        mkl.fp32_precision = "bf16"
        x = np.random.default_rng(0).standard_normal((2, 3, 9, 9)).astype(np.float32)
        w = np.random.default_rng(1).standard_normal((4, 3, 3, 3)).astype(np.float32)
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(torch.nn.functional, "conv2d", spy)
            convkit.conv(x, w, padding="same", backend="numpy")
        assert seen == ["ieee"] and mkl.fp32_precision == "bf16"
    finally:
        mkl.fp32_precision = saved


def test_highest_precision_restores_user_tf32_settings():
    """A user who enabled TF32 keeps it after convkit calls (new API where torch has it)."""
    b = torch.backends
    new_api = hasattr(getattr(b.cudnn, "conv", None), "fp32_precision")
    saved = _flags()
    try:
        if new_api:
            b.cuda.matmul.fp32_precision = "tf32"
            b.cudnn.conv.fp32_precision = "tf32"
        else:
            b.cuda.matmul.allow_tf32 = True
            b.cudnn.allow_tf32 = True
        user = _flags()
        convkit.convolve(torch.ones(30, 30), torch.ones(3, 3), "same")
        assert _flags() == user
    finally:
        if new_api:
            b.cuda.matmul.fp32_precision = saved["matmul.fp32_precision"]
            b.cudnn.conv.fp32_precision = saved["cudnn.conv.fp32_precision"]
        else:
            b.cuda.matmul.allow_tf32 = saved["matmul.allow_tf32"]
            b.cudnn.allow_tf32 = saved["cudnn.allow_tf32"]
    assert _flags() == saved


def test_full_precision_is_safe_across_threads():
    """Overlapping calls in two threads: the last one out restores the flags (reference count)."""
    before = _flags()
    entered, release = threading.Event(), threading.Event()

    def other():
        with ck_torch.full_precision():
            entered.set()
            release.wait(10)

    t = threading.Thread(target=other)
    t.start()
    entered.wait(10)
    with ck_torch.full_precision():
        assert _flags()["cudnn.enabled"] is False
    assert _flags()["cudnn.enabled"] is False  # the other thread is still inside
    release.set()
    t.join(10)
    assert _flags() == before


# ----------------------------------------------------------------------------- import, availability, runners


def _modules_after(code: str) -> list[str]:
    probe = textwrap.dedent(code) + "\nimport json, sys\nprint(json.dumps('torch' in sys.modules))\n"
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "CONVKIT_BACKEND": ""})
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.splitlines()[-1])


def test_import_and_numpy_calls_never_import_torch():
    """``import convkit``, NumPy calls, list_backends() and the torch backend's availability
    never import torch (owns() is asked only once torch is imported)."""
    assert _modules_after("""
        import numpy as np
        import convkit
        assert convkit.convolve(np.ones(5), np.ones(2)).tolist() == [1, 2, 2, 2, 2, 1]
        convkit.correlate(np.ones((40, 40)), np.ones((9, 9)), "same", method="fft")
        assert [b.available for b in convkit.list_backends() if b.name == "torch"] == [True]
        assert convkit.get_backend("torch").name == "torch"
    """) is False


def test_backend_self_description():
    assert BE.name == "torch" and BE.array_module == "torch" and BE.device is True
    assert f'pip install "{convkit.dispatch.DISTRIBUTION}[torch]"' in BE.install_hint
    assert BE.available() == (True, "")
    assert BE.owns(torch.ones(1)) and BE.owns(torch.nn.Parameter(torch.ones(1)))
    assert not BE.owns(np.ones(1)) and not BE.owns([1.0])
    assert BE.dtype_of(torch.ones(1, dtype=torch.uint16)) == np.uint16
    names = [r.name for r in BE.test_runners()]
    assert names[:2] == ["torch", "torch-host"]


def test_cuda_runner_says_why_it_cannot_run():
    """The torch-cuda runner (marked gpu) is listed only where PyTorch sees a CUDA device;
    elsewhere its availability names the missing device."""
    runner = ck_torch._cuda_runner()
    assert runner.marks and runner.marks[0].name == "gpu"
    if torch.cuda.is_available():
        assert runner.available() == (True, "")
        assert "torch-cuda" in [r.name for r in BE.test_runners()]
    else:
        ok, reason = runner.available()
        assert not ok and "no CUDA device" in reason
        assert "torch-cuda" not in [r.name for r in BE.test_runners()]


def test_plan_is_not_changed_by_the_backend():
    """The backend computes uint16..64 in int64 without rewriting the (cached, shared) plan."""
    a = np.arange(5, dtype=np.uint32)
    plan = plan_call("convolve", a, a, BE.capabilities)
    snapshot = dataclasses.asdict(plan)
    BE.execute(plan, tensor(a), tensor(a))
    assert dataclasses.asdict(plan) == snapshot


# ----------------------------------------------------------------------------- CUDA (marked gpu)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="PyTorch sees no CUDA device")
def test_cuda_tensors_in_cuda_tensors_out(rng):
    """S11/S6 on CUDA: same device out; float32 'highest' meets the float32 direct bound (TF32
    would miss it by ~1000x) and the flags are unchanged afterwards."""
    before = _flags()
    x, k = rng.standard_normal((64, 64)).astype(np.float32), rng.standard_normal((9, 9)).astype(np.float32)
    for method in ("direct", "fft", "auto"):
        out = convkit.convolve(tensor(x).cuda(), tensor(k).cuda(), "same", method=method)
        assert out.device.type == "cuda" and out.dtype == torch.float32
        assert_conv_close(out.cpu().numpy(), reference("convolve", x, k, "same"), x, k, method=method,
                          mode="same", check_dtype=False)
    a, b = random_array(rng, (50,), "int32"), random_array(rng, (5,), "int32")
    got = convkit.correlate(tensor(a).cuda(), tensor(b).cuda(), "same", boundary="wrap")
    np.testing.assert_array_equal(got.cpu().numpy(), reference("correlate", a, b, "same", boundary="wrap"))
    with pytest.raises(DeviceMismatchError):
        convkit.convolve(tensor(x).cuda(), tensor(k))
    assert _flags() == before


def test_first_calls_on_many_threads_wait_for_torch_to_import():
    """A Dask graph's first tasks call the torch backend on several threads at once, while torch
    is still being imported: each call must wait for the whole module (``torch.float32`` was
    missing from the half-initialised module and the call refused float32)."""
    code = textwrap.dedent("""
        import sys, threading
        import numpy as np
        import convkit
        assert "torch" not in sys.modules
        x, k = np.ones((9, 9), np.float32), np.ones((3, 3), np.float32)
        start, errors = threading.Barrier(6), []

        def call():
            start.wait()
            try:
                out = convkit.convolve(x, k, "same", backend="torch")
                assert out.dtype == np.float32 and out[4, 4] == 9, out
            except Exception as exc:
                errors.append(repr(exc))

        threads = [threading.Thread(target=call) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
    """)
    for _ in range(3):
        subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
