"""PyTorch backend: convkit on torch tensors, on CPU and CUDA devices.

Registered like a third-party backend would be: one entry point in ``pyproject.toml``
(``torch = "convkit.backends.torch:backend"``, group ``convkit.backends``); convkit's core
knows nothing about torch. Everything that is the same code over an array namespace lives in
:class:`convkit.backends._base.ArrayBackend`; this module holds what differs on torch:

* dispatch by tensor type: torch tensors pick this backend (``owns``, asked only once
  ``torch`` is imported; nothing here imports torch before a call needs it). Torch tensors in,
  torch tensors out, on the inputs' device; host (NumPy) inputs with ``backend="torch"`` run on
  torch's default device and come back as NumPy (``device = True``: the api converts them);
* dtypes: ``dtype_of`` maps torch dtypes to NumPy's, so the plan applies S4 exactly as on
  every backend. ``bfloat16``, ``complex32`` and the float8/quantized types are refused with a
  hint. Torch has no arithmetic for ``uint16``/``uint32``/``uint64``: those compute in
  ``int64`` (the same ring modulo ``2**64``, so wrap-around is exact) and are reduced back;
* ``xp`` is ``array_api_compat.torch``; NumPy-style ``pad`` (every boundary, pads longer than
  the input, negative pads that crop), ``dilate``, ``astype``, ``conj`` and the pieces of
  ``ArrayBackend`` that read NumPy dtype attributes (``fft_corr``, the integer FFT,
  ``gather_direct``) are overridden;
* float32/float64 direct runs ``torch.nn.functional.conv1d/2d/3d`` (valid convolution of the
  padded input, stride and dilation passed through, batch axes folded into the batch, the
  group or the output channels) when the data are finite and the kernel pays
  (:meth:`TorchBackend.conv_pays`: always on CUDA); everything else runs the shared
  shift-and-add. FFT methods use ``torch.fft``; ``method="oa"`` runs the plain FFT path;
* ``precision="highest"`` (S6): the convolution kernel runs with TF32 off (cuBLAS and cuDNN)
  and, on CUDA, without cuDNN (whose FFT and Winograd algorithms are not direct sums), on CPU
  without NNPACK (Winograd); the global flags are restored after the call;
* autograd: every step is a torch operation (no host round trip), so tensors with
  ``requires_grad`` differentiate through the result. The finiteness checks (``auto``'s NaN
  rule, the guard of the conv kernel) read one boolean each under ``torch.no_grad()``.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import itertools
import math
import sys
import threading
from typing import Any

import numpy as np

from convkit import dispatch
from convkit.choose import Capabilities
from convkit.conv import ConvPlan
from convkit.errors import BackendUnavailableError, ConvkitTypeError, DeviceMismatchError
from convkit.plan import Plan

from ._base import ArrayBackend, boundary_source

__all__ = ["TorchBackend", "backend", "INSTALL_HINT"]

#: the extra of convkit's distribution (``pyconvkit``; the import name is ``convkit``)
INSTALL_HINT = f'install PyTorch with `pip install "{getattr(dispatch, "DISTRIBUTION", "convkit")}[torch]"`'

#: NumPy dtype names torch tensors can stand for (torch.<name>); the unsigned types above
#: uint8 exist from torch 2.3 on, with storage but no arithmetic
_TORCH_NAMES = ("bool", "uint8", "int8", "int16", "int32", "int64", "uint16", "uint32", "uint64",
                "float16", "float32", "float64", "complex64", "complex128")
#: the same as NumPy dtypes in native byte order (a set lookup: ``asarray`` runs on every call)
_TORCH_DTYPES = frozenset(np.dtype(n) for n in _TORCH_NAMES)
#: computed in int64 (torch has no add for them); the result is reduced back exactly
_WIDE_UNSIGNED = {"uint16": 16, "uint32": 32, "uint64": 64}
#: seconds of Python and dispatch per tap of the shift-and-add, and per conv*d call (CPU)
_TAP_CALL = 8e-6
_CONV_CALL = 2e-5
_REFUSED = {
    "bfloat16": "convkit has no bfloat16 arithmetic; cast it with x.float() (float32)",
    "complex32": "convkit has no complex32 arithmetic; cast it with x.to(torch.complex64)",
}


_TORCH_MODULE = None


def _torch():
    """The torch module, once it is fully imported. ``import_module`` waits for an import
    under way in another thread; ``sys.modules`` alone would hand out a half-initialised module
    (a Dask graph's first tasks import it concurrently: ``torch.float32`` was missing)."""
    global _TORCH_MODULE
    if _TORCH_MODULE is None:
        _TORCH_MODULE = importlib.import_module("torch")
    return _TORCH_MODULE


# ----------------------------------------------------------------------------- full precision (S6)

def _set(obj, attr: str, value, restore: list) -> None:
    """``obj.attr = value`` unless it already is, remembering how to undo it."""
    old = getattr(obj, attr)
    if old != value:
        setattr(obj, attr, value)
        restore.append((obj, attr, old))


def _apply_cpu_precision(torch, restore: list) -> None:
    """Turn off the reduced-precision paths of CPU convolutions: oneDNN's bf16/TF32 modes (torch
    2.9's ``fp32_precision`` flag) and NNPACK (Winograd and FFT algorithms: not direct sums, so
    neither S5's bound nor S9's NaN rule would hold)."""
    onednn, nnpack = _cpu_flag_owners(torch)
    if onednn is not None and onednn.fp32_precision not in ("ieee", "none"):
        _set(onednn, "fp32_precision", "ieee", restore)
    if nnpack is not None and torch._C._get_nnpack_enabled():
        restore.append((nnpack, None, nnpack.set_flags(False)[0]))


@functools.lru_cache(maxsize=1)
def _cpu_flag_owners(torch) -> tuple[Any, Any]:
    """``(torch.backends.mkldnn.conv, torch.backends.nnpack)``, each ``None`` where this torch
    has no such flag (oneDNN's ``fp32_precision``: torch 2.9) or no NNPACK; looked up once."""
    backends = torch.backends
    onednn = getattr(getattr(backends, "mkldnn", None), "conv", None)
    nnpack = getattr(backends, "nnpack", None)
    return (onednn if hasattr(onednn, "fp32_precision") else None,
            nnpack if nnpack is not None and nnpack.is_available() else None)


def _apply_cuda_precision(torch, restore: list) -> None:
    """Turn off TF32 and cuDNN for CUDA matrix products and convolutions.

    Torch 2.9 introduced ``fp32_precision`` flags; where they exist only they are touched
    (reading the legacy ``cudnn.allow_tf32`` raises once the two APIs were mixed).
    """
    backends = torch.backends
    matmul, cudnn = backends.cuda.matmul, backends.cudnn
    if hasattr(getattr(cudnn, "conv", None), "fp32_precision"):
        _set(matmul, "fp32_precision", "ieee", restore)
        _set(cudnn.conv, "fp32_precision", "ieee", restore)
    else:  # torch < 2.9
        _set(matmul, "allow_tf32", False, restore)
        _set(cudnn, "allow_tf32", False, restore)
    # cuDNN may pick FFT or Winograd algorithms (not direct sums: S5's bound and S9's NaN rule
    # would not hold); without it CUDA convolutions are im2col + cuBLAS GEMM (TF32 off above)
    _set(cudnn, "enabled", False, restore)


class _FlagScope:
    """A context manager that sets process-wide torch flags while any thread is inside it.

    The flags are process-wide in torch: concurrent users share one reference-counted setting
    (the first in sets it, the last out restores the saved values), so threads never leave
    each other's flags changed. A class, not a generator: every CPU layer enters one, and
    the calls between two torch convolutions run while torch's threads still spin."""

    def __init__(self, apply) -> None:
        self._apply = apply
        self._lock = threading.Lock()
        self._users = 0
        self._restore: list = []

    def __enter__(self) -> _FlagScope:
        with self._lock:
            if self._users == 0:
                self._restore.clear()
                try:
                    self._apply(_torch(), self._restore)
                except BaseException:
                    _undo(self._restore)
                    raise
            self._users += 1
        return self

    def __exit__(self, *exc) -> None:
        with self._lock:
            self._users -= 1
            if self._users == 0:
                _undo(self._restore)


_CPU_PRECISION = _FlagScope(_apply_cpu_precision)
_CUDA_PRECISION = _FlagScope(_apply_cuda_precision)


@contextlib.contextmanager
def _full_precision_everywhere():
    with _CPU_PRECISION, _CUDA_PRECISION:
        yield


def full_precision(cuda: bool = True):
    """A context manager that runs its block with TF32, cuDNN, oneDNN's reduced-precision modes
    and NNPACK off, and restores the caller's flags afterwards (S6). ``cuda=False`` (tensors on
    the CPU only) leaves the CUDA flags alone: they do not apply, and touching them costs more
    than a small CPU convolution. Safe across threads (reference-counted)."""
    return _full_precision_everywhere() if cuda else _CPU_PRECISION


def _undo(restore: list) -> None:
    while restore:
        obj, attr, old = restore.pop()
        if attr is None:
            obj.set_flags(old)
        else:
            setattr(obj, attr, old)


# ----------------------------------------------------------------------------- the backend


class TorchBackend(ArrayBackend):
    """Runs convkit on torch tensors (CPU or CUDA); see the module docstring."""

    name = "torch"
    array_module = "torch"
    install_hint = INSTALL_HINT
    #: results are torch tensors: host inputs come back through ``to_host`` (S11)
    device = True
    # measured on a 2-core x86-64 (torch 2.13, CPU, one thread): the direct paths ~1.1 ns per
    # float64 multiply-add (~0.4 for float32), torch.fft ~0.4 ns per element and log2 (float32
    # about half); no overlap-add ("oa" runs the FFT path)
    capabilities = Capabilities(methods=("direct", "fft"), c_direct=1.1e-9, c_fft=0.45e-9, c_out=1.0e-9,
                                fft_call=6.0e-5, single_fft=0.55, single_direct=0.4)

    def __init__(self) -> None:
        self._import_error: str | None = None
        self._xp = None

    # -- availability: never imports torch (listing backends must stay light)
    def available(self) -> tuple[bool, str]:
        if self._import_error is not None:
            return False, self._import_error
        if "torch" in sys.modules:
            return True, ""
        try:
            found = importlib.util.find_spec("torch") is not None
        except (ImportError, ValueError):
            found = False
        return (True, "") if found else (False, "PyTorch is not installed")

    @property
    def torch(self):
        try:
            return _torch()
        except Exception as exc:
            self._import_error = f"PyTorch is installed but failed to import ({type(exc).__name__}: {exc})"
            raise BackendUnavailableError(
                f"backend {self.name!r} is not available: {self._import_error}. {self.install_hint}"
            ) from None

    @property
    def xp(self):  # type: ignore[override]
        if self._xp is None:
            self.torch  # noqa: B018 - the import error, if any, as BackendUnavailableError
            import array_api_compat.torch

            self._xp = array_api_compat.torch
        return self._xp

    # -- arrays
    def owns(self, x: Any) -> bool:
        torch = sys.modules.get("torch")  # no import: a tensor exists only once torch is imported
        return torch is not None and isinstance(x, getattr(torch, "Tensor", ()))

    def dtype_of(self, x: Any) -> np.dtype:
        if isinstance(x, (np.ndarray, np.generic)):
            return np.dtype(x.dtype)
        name = str(x.dtype).removeprefix("torch.")
        if name in _TORCH_NAMES:
            return np.dtype(name)
        hint = _REFUSED.get(name, "expected bool, (u)int8-64, float16/32/64 or complex64/128")
        raise ConvkitTypeError(f"a torch tensor of dtype {x.dtype} is not accepted: {hint}")

    def torch_dtype(self, dtype) -> Any:
        """The torch dtype of the NumPy dtype ``dtype``; ConvkitTypeError where torch has none."""
        dt = np.dtype(dtype)
        t = getattr(self.torch, dt.name, None) if dt.name in _TORCH_NAMES else None
        if t is None:
            raise ConvkitTypeError(
                f"dtype {dt} has no torch equivalent here; expected bool, integer, float16/32/64 or "
                "complex64/128 (use backend='numpy' for long double)"
            )
        return t

    def compute_dtype(self, dtype) -> Any:
        """The torch dtype the arithmetic of NumPy ``dtype`` runs in (int64 for uint16-64)."""
        dt = np.dtype(dtype)
        return self.torch.int64 if dt.name in _WIDE_UNSIGNED else self.torch_dtype(dt)

    def asarray(self, x: Any, device: Any = None):
        torch = self.torch
        if isinstance(x, torch.Tensor):
            return x if device is None else x.to(device)
        a = np.asarray(x)
        if a.dtype not in _TORCH_DTYPES and (a.dtype.kind not in "biufc" or a.dtype.name not in _TORCH_NAMES):
            self.torch_dtype(a.dtype)  # the ConvkitTypeError
        if not a.flags.writeable or any(s < 0 for s in a.strides) or not a.dtype.isnative:
            a = np.array(a, dtype=a.dtype.newbyteorder("="), order="C", copy=True)
        t = torch.from_numpy(a)
        return t if device is None else t.to(device)

    def to_host(self, x: Any) -> np.ndarray:
        torch = sys.modules.get("torch")
        if torch is not None and isinstance(x, getattr(torch, "Tensor", ())):
            return x.detach().cpu().resolve_conj().resolve_neg().numpy()
        return np.asarray(x)

    def sync(self, x: Any) -> None:
        torch = sys.modules.get("torch")
        if torch is not None and isinstance(x, getattr(torch, "Tensor", ())) and x.is_cuda:
            torch.cuda.synchronize(x.device)

    def test_runners(self) -> list:
        return _test_runners()

    # -- the canonical form
    def _device(self, in1, in2):
        """The device of the tensor inputs (equal), else torch's default device (host inputs)."""
        torch = self.torch
        devices = [a.device for a in (in1, in2) if isinstance(a, torch.Tensor)]
        if len(devices) == 2 and devices[0] != devices[1]:
            raise DeviceMismatchError(
                f"in1 is on {devices[0]} and in2 on {devices[1]}; move one of them first "
                f"(e.g. in2.to(in1.device))"
            )
        if devices:
            return devices[0]
        get_default = getattr(torch, "get_default_device", None)
        return get_default() if get_default is not None else torch.empty(0).device

    def execute(self, plan: Plan, in1, in2):
        for name, dt in (("in1", self.dtype_of(in1)), ("in2", self.dtype_of(in2)), ("dtype", plan.acc_dtype),
                         ("dtype", plan.out_dtype)):
            if dt.name not in _TORCH_NAMES or getattr(self.torch, dt.name, None) is None:
                raise ConvkitTypeError(
                    f"{name} has dtype {dt}, which torch cannot hold; expected bool, integer, "
                    "float16/32/64 or complex64/128 (use backend='numpy' for long double)"
                )
        device = self._device(in1, in2)
        out = super().execute(plan, self.asarray(in1, device), self.asarray(in2, device))
        target = self.torch_dtype(plan.out_dtype)
        if out.dtype != target:
            out = out.to(target)  # int64 -> uint16..64 wraps modulo 2**bits, as NumPy's astype
        return out.resolve_conj().contiguous()

    def astype(self, a, dtype):
        """``a`` in the torch compute dtype of the NumPy ``dtype``: unsigned types wider than
        uint8 hold their values in int64 (uint64: its bits). S4 never casts a signed input to
        an unsigned result (``same_kind``), so the values stay those NumPy's astype gives."""
        torch = self.torch
        target = self.compute_dtype(dtype)
        if a.dtype == target:
            return a
        if a.dtype == torch.uint64 and target == torch.int64:
            return a.view(torch.int64)
        return a.to(target)

    def kind(self, a) -> str:
        if a.dtype == self.torch.bool:
            return "b"
        if a.is_complex():
            return "c"
        return "f" if a.is_floating_point() else ("u" if a.dtype == self.torch.uint8 else "i")

    def float64_of(self, plan: Plan, a):
        f = a.to(self.torch.float64)
        if plan.acc_dtype == np.uint64:  # int64 holding uint64 bits: values >= 2**63 read as negative
            f = self.torch.where(a < 0, f + 2.0**64, f)
        return f

    def pad_constant(self, a, widths, value):
        torch = self.torch
        for axis, (lo, hi) in enumerate(widths):
            parts = []
            for width in (lo, None, hi):
                if width is None:
                    parts.append(a)
                elif width > 0:
                    shape = list(a.shape)
                    shape[axis] = width
                    parts.append(torch.full(shape, self._fill_value(value, a.dtype), dtype=a.dtype,
                                            device=a.device))
            a = torch.cat(parts, dim=axis) if len(parts) > 1 else a
        return a

    def index_array(self, idx: np.ndarray, like):
        return self.torch.as_tensor(idx, device=like.device)

    def conj(self, a):
        return self.torch.conj_physical(a) if a.is_complex() else a

    def all_finite(self, a) -> bool:
        if not (a.is_floating_point() or a.is_complex()):
            return True
        with self.torch.no_grad():
            # one sum (no temporary) is enough when finite: NaN and Inf always reach it; a sum
            # that overflows although every value is finite gets the full test
            total = a.sum()
            if bool(self.torch.isfinite(total).item()):
                return True
            return bool(self.torch.isfinite(a).all().item())

    def _fill(self, plan: Plan, dtype):
        return self._fill_value(plan.fillvalue, dtype)

    def _fill_value(self, fill, dtype):
        """The fill value as a Python number of the compute dtype (uint64 -> its int64 bits)."""
        if dtype == self.torch.bool:
            return bool(fill)
        if not (dtype.is_floating_point or dtype.is_complex):
            fill = int(fill)
            if fill >= 2**63:
                fill -= 2**64
        return fill

    def pad(self, plan: Plan, x):
        """``numpy.pad`` of ``x`` by ``plan.pads`` on the convolution axes (S7), negative pads
        cropping: constant pads by concatenation, the other rules (and every pad that crops
        more than the input or meets the other end) by ``index_select`` of the source index of
        each padded position, computed on the host with :func:`boundary_source`."""
        torch = self.torch
        for a, (lo, hi) in zip(plan.axes, plan.pads):
            if lo == 0 and hi == 0:
                continue
            n = x.shape[a]
            if plan.boundary == "constant" and max(-lo, 0) + max(-hi, 0) < n:
                x = x.narrow(a, max(-lo, 0), n - max(-lo, 0) - max(-hi, 0))
                widths = [(0, 0)] * x.ndim
                widths[a] = (max(lo, 0), max(hi, 0))
                x = self.pad_constant(x, widths, plan.fillvalue)
                continue
            src = boundary_source(np.arange(-lo, n + hi, dtype=np.int64), n, plan.boundary)
            if plan.boundary == "constant":  # index n: one slot holding the fill value
                shape = list(x.shape)
                shape[a] = 1
                slot = torch.full(shape, self._fill(plan, x.dtype), dtype=x.dtype, device=x.device)
                x = torch.cat([x, slot], dim=a)
            x = torch.index_select(x, a, torch.as_tensor(src, device=x.device))
        return x

    def dilate(self, plan: Plan, w):
        if all(d == 1 for d in plan.dilation):
            return w
        shape = list(w.shape)
        index = [slice(None)] * w.ndim
        for a, d in zip(plan.axes, plan.dilation):
            shape[a] = (w.shape[a] - 1) * d + 1
            index[a] = slice(None, None, d)
        out = w.new_zeros(shape)
        out[tuple(index)] = w
        return out

    # -- direct: torch's convolution kernels for finite float32/float64, else shift-and-add
    def direct(self, plan: Plan, x, w):
        if self.conv_pays(plan, x) and self.all_finite(w):
            xpad = self.pad(plan, x)
            if self.all_finite(xpad):  # NaN/Inf: the shift-and-add puts them where S9 says
                return self.conv_direct(plan, xpad, w)
        return super().direct(plan, x, w)

    def conv_pays(self, plan: Plan, x) -> bool:
        """Whether ``conv*d`` beats the shift-and-add (float32/float64, 1-3 convolution axes).

        On CUDA always (one kernel instead of two per tap). On CPU the shift-and-add costs
        ``taps * (_TAP_CALL + c * outputs)`` and the kernel ``_CONV_CALL + c' * outputs * taps``
        (measured, torch 2.13, x86-64: float64 runs im2col + GEMM at ~5.5 ns per multiply-add
        against ~1.1 for the shift-and-add; float32 oneDNN ~0.35 ns with many taps, ~1.5 with
        few, against ~0.45), so the kernel wins for small outputs and for float32 with many taps.
        """
        torch = self.torch
        if x.dtype not in (torch.float32, torch.float64) or not 1 <= len(plan.axes) <= 3:
            return False
        if x.device.type != "cpu":
            return True
        outputs, taps = math.prod(plan.out_shape), plan.taps
        if x.dtype == torch.float64:
            shift, conv = 1.1e-9, 5.5e-9
        else:
            shift, conv = 0.45e-9, (0.35e-9 if taps >= 32 else 1.5e-9)
        return _CONV_CALL + conv * outputs * taps < taps * (_TAP_CALL + shift * outputs)

    def conv_direct(self, plan: Plan, xpad, w):
        """Valid correlation of the padded input with ``w`` by ``torch.nn.functional.conv*d``.

        Non-convolution axes map to conv dims: kernel size 1 -> batch (N); sizes equal and
        above 1 -> groups; input size 1 -> output channels. Stride and dilation pass through.
        """
        F = self.torch.nn.functional

        conv = list(plan.axes)
        others = [a for a in range(plan.ndim) if a not in conv]
        n_ax = [a for a in others if w.shape[a] == 1]
        g_ax = [a for a in others if w.shape[a] > 1 and xpad.shape[a] > 1]
        f_ax = [a for a in others if w.shape[a] > 1 and xpad.shape[a] == 1]
        n = math.prod(xpad.shape[a] for a in n_ax)
        g = math.prod(xpad.shape[a] for a in g_ax)
        f = math.prod(w.shape[a] for a in f_ax)
        lhs = xpad.permute(n_ax + g_ax + f_ax + conv).reshape((n, g) + tuple(xpad.shape[a] for a in conv))
        rhs = w.permute(g_ax + f_ax + n_ax + conv).reshape((g * f, 1) + tuple(w.shape[a] for a in conv))
        fn = (F.conv1d, F.conv2d, F.conv3d)[len(conv) - 1]
        guard = full_precision(not xpad.is_cpu) if plan.precision == "highest" else contextlib.nullcontext()
        with guard:
            out = fn(lhs, rhs, stride=plan.stride, dilation=plan.dilation, groups=g)
        sizes = ([xpad.shape[a] for a in n_ax] + [xpad.shape[a] for a in g_ax] + [w.shape[a] for a in f_ax]
                 + list(out.shape[2:]))
        order = n_ax + g_ax + f_ax + conv
        return out.reshape(sizes).permute(tuple(int(i) for i in np.argsort(order)))

    # -- the deep-learning layer (convkit.conv, S15)
    def conv_layer(self, plan: ConvPlan, x, w, bias):
        """:func:`convkit.conv` on torch: ``conv1d/2d/3d`` for float32/float64 with a finite kernel
        (torch's own zero padding where it is symmetric: it skips only products of zeros and
        finite taps), else strided patches of the explicitly padded input (a NaN/Inf tap meets the
        padded zeros, S9) and one matrix product (integers exact: float64 where every partial sum stays below
        2**53, else int64, wrapping like two's complement)."""
        torch = self.torch
        args = {"x": x, "w": w} if bias is None else {"x": x, "w": w, "bias": bias}
        for name, a in args.items():
            dt = self.dtype_of(a)
            if dt.name not in _TORCH_NAMES or getattr(torch, dt.name, None) is None:
                raise ConvkitTypeError(f"{name} has dtype {dt}, which torch cannot hold; expected an "
                                       "integer, float16/32/64 or complex64/128 dtype")
        device = self._device(x, w)
        x, w = self.asarray(x, device), self.asarray(w, device)
        r = plan.rank
        if plan.channels_last:
            x = x.movedim(-1, 1)
        if plan.kernel_last:
            w = w.permute((r + 1, r) + tuple(range(r)))
        x, w = self.astype(x, plan.acc_dtype), self.astype(w, plan.acc_dtype)
        if x.dtype in (torch.float32, torch.float64) and self.all_finite(w):
            out = self.functional_conv(plan, x, w)
        else:
            flat = [p for lo_hi in reversed(plan.pads) for p in lo_hi]
            out = self._conv_patches(plan, torch.nn.functional.pad(x, flat) if any(flat) else x, w)
        if bias is not None:
            b = self.astype(self.asarray(bias, device), plan.acc_dtype)
            out = out + b.reshape((1, plan.out_channels) + (1,) * r)
        if plan.channels_last:
            out = out.movedim(1, -1)
        target = self.torch_dtype(plan.out_dtype)
        return (out if out.dtype == target else out.to(target)).contiguous()

    def functional_conv(self, plan: ConvPlan, x, w):
        """``torch.nn.functional.conv{1,2,3}d`` of channels-first float ``x`` and a FINITE kernel
        ``w``: torch's implicit zero padding where the pads are symmetric (it skips only products
        of a padded zero and a finite tap, 0 either way, so NaN/Inf data land where S9 puts them,
        and saves a padded copy), else on ``x`` zero-padded by ``F.pad``; under
        :func:`full_precision` for ``precision="highest"``."""
        functional = self.torch.nn.functional
        fn = getattr(functional, f"conv{plan.rank}d")
        if all(lo == hi for lo, hi in plan.pads):
            padding = tuple(lo for lo, _ in plan.pads)
        else:
            x, padding = functional.pad(x, [p for lo_hi in reversed(plan.pads) for p in lo_hi]), 0
        guard = full_precision(not x.is_cpu) if plan.precision == "highest" else contextlib.nullcontext()
        with guard:
            return fn(x, w, stride=plan.stride, padding=padding, dilation=plan.dilation, groups=plan.groups)

    def _conv_patches(self, plan: ConvPlan, xpad, w):
        """``(N, O, *out)``: strided patches of the padded input times the filters, one batched
        matrix product; every product is formed (S9), integers exact with wrap-around (S5)."""
        torch = self.torch
        n, k = plan.batch, plan.taps
        index = [tuple(slice(t * d, t * d + (m - 1) * s + 1, s) for t, d, m, s in
                       zip(tap, plan.dilation, plan.out_spatial, plan.stride))
                 for tap in itertools.product(*(range(m) for m in plan.kernel_spatial))]
        cols = torch.stack([xpad[(slice(None), slice(None)) + i] for i in index], dim=2)
        cols = cols.reshape((n, plan.groups, plan.group_in * k, math.prod(plan.out_spatial)))
        wm = w.reshape((plan.groups, plan.group_out, plan.group_in * k))
        if not (cols.is_floating_point() or cols.is_complex()):
            f64, i64 = torch.float64, torch.int64
            bound = float(plan.group_in * k) * float(cols.to(f64).abs().max()) * float(wm.to(f64).abs().max())
            wide = f64 if bound < 2.0**53 else i64  # float64: exact and BLAS-fast; int64: wraps mod 2**64
            prod = (wm.to(wide) @ cols.to(wide)).to(i64).to(cols.dtype)
            return prod.reshape((n, plan.out_channels) + plan.out_spatial)
        return (wm @ cols).reshape((n, plan.out_channels) + plan.out_spatial)

    # -- FFT (torch.fft) and the exact integer FFT
    def rfftn(self, a, s, axes):
        return self.torch.fft.rfftn(a, s=list(s), dim=list(axes))

    def irfftn(self, a, s, axes):
        return self.torch.fft.irfftn(a, s=list(s), dim=list(axes))

    def fftn(self, a, s, axes):
        return self.torch.fft.fftn(a, s=list(s), dim=list(axes))

    def ifftn(self, a, s, axes):
        return self.torch.fft.ifftn(a, s=list(s), dim=list(axes))


backend = TorchBackend()


# ----------------------------------------------------------------------------- test runners


def _to_tensor(a: np.ndarray):
    """A CPU tensor copy of ``a`` with its dtype."""
    import torch

    return torch.from_numpy(np.array(a, order="C", copy=True))


def _is_cpu_tensor(r: Any) -> bool:
    import torch

    return isinstance(r, torch.Tensor) and r.device.type == "cpu"


def _cuda_status() -> tuple[bool, str]:
    ok, reason = backend.available()
    if not ok:
        return ok, reason
    try:
        if "torch" not in sys.modules:
            from importlib.metadata import version

            if "+cpu" in version("torch"):  # a CPU-only wheel: no need to import torch to know
                return False, "no CUDA device: this PyTorch build has no CUDA support"
        torch = _torch()
        if not torch.cuda.is_available():
            if torch.version.cuda is None:
                return False, "no CUDA device: this PyTorch build has no CUDA support"
            return False, "no CUDA device: torch.cuda.is_available() is False"
    except Exception as exc:
        return False, f"torch.cuda failed ({type(exc).__name__}: {exc})"
    return True, ""


def _to_cuda(a: np.ndarray):
    return _to_tensor(a).to("cuda")


def _from_cuda(call):
    """The result of ``call`` must be a CUDA tensor; hand it back on the CPU (``to_numpy``)."""

    def run(a, b):
        out = call(a, b)
        assert getattr(getattr(out, "device", None), "type", None) == "cuda", f"result on {out.device}"
        return out.cpu()

    return run


def _cuda_runner():
    """The ``torch-cuda`` runner: CUDA tensors in and out (marked ``gpu``)."""
    from convkit.testing import Runner

    class CudaRunner(Runner):
        def available(self) -> tuple[bool, str]:
            return _cuda_status()

    marks: tuple = ()
    if "pytest" in sys.modules:
        marks = (sys.modules["pytest"].mark.gpu,)
    return CudaRunner("torch-cuda", "torch", to_device=_to_cuda, wrap=_from_cuda,
                      array_check=lambda r: isinstance(r, _torch().Tensor), marks=marks)


def _test_runners() -> list:
    """Conformance-suite runners (:mod:`convkit.testing`):

    * ``torch``: CPU tensors in (NumPy data copied, dtype kept), a CPU tensor out;
    * ``torch-host``: NumPy in with ``backend="torch"``, NumPy out;
    * ``torch-cuda`` (marked ``gpu``): CUDA tensors in and out; listed only where PyTorch sees
      a CUDA device, because ``--backend torch`` selects every runner of the backend and an
      unavailable requested runner fails the run (see docs/writing-a-backend.md).
    """
    from convkit.testing import Runner

    runners = [
        Runner("torch", "torch", to_device=_to_tensor, array_check=_is_cpu_tensor),
        Runner("torch-host", "torch", array_check=lambda r: isinstance(r, np.ndarray)),
    ]
    if _cuda_status()[0]:
        runners.append(_cuda_runner())
    return runners
