"""``convkit.conv``: the deep-learning convolution layer (SPEC S15), on every backend.

A layer sums over input channels, has many filters, feature groups and a data layout; it is
the cross-correlation that torch ``conv1d/2d/3d``, Keras ``Conv1D/2D/3D`` and
``lax.conv_general_dilated`` compute (the kernel is not flipped, nor conjugated)::

    out[n, o, p] = bias[o] + sum over c in group(o), taps t of
                   pad(x)[n, c, p * stride + t * dilation] * w[o, c, t]

Each call: pick the backend exactly as :func:`convkit.convolve` does (S12) -> validate the
options against the shapes and build the frozen :class:`ConvPlan` (cached by the options'
types as well as values, so ``stride=True`` is refused even after a call with ``stride=1``)
-> the backend runs it -> the result comes back in the caller's array type.

Backends run a plan through their method ``conv_layer(plan, x, w, bias)``. An array-namespace
backend (one with ``xp``: NumPy, CuPy, a plugin on the ArrayBackend base) that has none runs the
default implementation ``convkit.backends._conv.conv_layer``; it is imported by name, so this
module imports no backend library.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Union

import numpy as np

from . import dispatch
from ._hash_once import hash_once
from .api import _shape_dtype
from .errors import ConvkitTypeError, ConvkitValueError, DeviceMismatchError
from .options import PRECISIONS, TypedCache, _dtype, _per_axis, is_int, normalize_choice
from .plan import MAX_OUTPUT_FRACTION, physical_memory, result_dtype

__all__ = ["conv", "ConvPlan", "conv_plan", "LAYOUTS", "KERNEL_LAYOUTS", "PADDINGS", "CONV_METHODS"]

#: data layouts per number of spatial dimensions: (channels first, channels last)
LAYOUTS = {1: ("NCW", "NWC"), 2: ("NCHW", "NHWC"), 3: ("NCDHW", "NDHWC")}
#: kernel layouts per number of spatial dimensions: (torch's, TF/Keras's)
KERNEL_LAYOUTS = {1: ("OIW", "WIO"), 2: ("OIHW", "HWIO"), 3: ("OIDHW", "DHWIO")}
#: named paddings (S15); explicit ints or (lo, hi) pairs are accepted too
PADDINGS = ("valid", "same", "causal", "centered")
CONV_METHODS = ("auto", "direct", "fft")

Padding = Union[str, int, Sequence[Any]]  # noqa: UP007 (a runtime alias, Python 3.10)
PerAxis = Union[int, Sequence[int]]  # noqa: UP007


@hash_once
@dataclass(frozen=True)
class ConvPlan:
    """Everything a backend needs to run one :func:`conv` call; derived from shapes only.

    Backends compute in the canonical order ``x: (N, C, *spatial)``, ``w: (O, C/groups,
    *kernel)``, ``out: (N, O, *out_spatial)`` and convert from and to the caller's layouts
    (:attr:`channels_last`, :attr:`kernel_last`).
    """

    layout: str
    kernel_layout: str
    x_shape: tuple[int, ...]
    w_shape: tuple[int, ...]
    batch: int
    in_channels: int
    out_channels: int
    groups: int
    in_spatial: tuple[int, ...]
    kernel_spatial: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    pads: tuple[tuple[int, int], ...]
    out_spatial: tuple[int, ...]
    out_shape: tuple[int, ...]
    out_dtype: np.dtype
    acc_dtype: np.dtype
    has_bias: bool
    precision: str
    method: str
    #: ``auto`` chose the FFT: it falls back to direct when an input is not finite (S9)
    nan_safe: bool = False

    @property
    def rank(self) -> int:
        """Number of spatial dimensions (1, 2 or 3)."""
        return len(self.in_spatial)

    @property
    def channels_last(self) -> bool:
        """Whether the data layout is ``N...C`` (else ``NC...``)."""
        return self.layout.endswith("C")

    @property
    def kernel_last(self) -> bool:
        """Whether the kernel layout is ``...IO`` (TF/Keras; else ``OI...``, torch)."""
        return self.kernel_layout.endswith("O")

    @property
    def group_in(self) -> int:
        """Input channels per group (the kernel's ``I``)."""
        return self.in_channels // self.groups

    @property
    def group_out(self) -> int:
        """Output channels per group."""
        return self.out_channels // self.groups

    @property
    def taps(self) -> int:
        """Spatial kernel taps per (output, input) channel pair."""
        return math.prod(self.kernel_spatial)

    @property
    def effective_kernel(self) -> tuple[int, ...]:
        """Dilated kernel length ``(k - 1) * dilation + 1`` per spatial axis."""
        return tuple((k - 1) * d + 1 for k, d in zip(self.kernel_spatial, self.dilation))

    @property
    def padded_spatial(self) -> tuple[int, ...]:
        """Spatial sizes of the padded input."""
        return tuple(n + lo + hi for n, (lo, hi) in zip(self.in_spatial, self.pads))

    @property
    def macs(self) -> int:
        """Multiply-adds of the direct method."""
        return self.batch * self.out_channels * self.group_in * self.taps * math.prod(self.out_spatial)


# ----------------------------------------------------------------------------- argument checks


def _layout(value: Any, rank: int | None) -> tuple[str, int]:
    """A data layout (``None``: channels first for ``rank``) -> (canonical name, rank)."""
    if value is None:
        return LAYOUTS[rank][0], rank  # type: ignore[index]
    if isinstance(value, str):
        v = value.upper()
        alias = {"CHANNELS_FIRST": 0, "CHANNELS_LAST": 1}.get(v)
        if alias is not None and rank in LAYOUTS:
            return LAYOUTS[rank][alias], rank
        for r, names in LAYOUTS.items():
            if v in names:
                return v, r
    accepted = ", ".join(repr(n) for names in LAYOUTS.values() for n in names)
    raise ConvkitValueError(
        f"layout={value!r} is not accepted; expected one of {accepted}, 'channels_first' or 'channels_last'"
    )


def _kernel_layout(value: Any, rank: int) -> str:
    if value is None:
        return KERNEL_LAYOUTS[rank][0]
    if isinstance(value, str) and value.upper() in KERNEL_LAYOUTS[rank]:
        return value.upper()
    raise ConvkitValueError(
        f"kernel_layout={value!r} is not accepted for {rank} spatial dimension(s); expected "
        f"{KERNEL_LAYOUTS[rank][0]!r} or {KERNEL_LAYOUTS[rank][1]!r}"
    )


def _axis_values(name: str, value: Any, rank: int, minimum: int) -> tuple[int, ...]:
    v = _per_axis(name, value, minimum)
    if isinstance(v, int):
        return (v,) * rank
    if len(v) != rank:
        raise ConvkitValueError(
            f"{name}={value!r} has {len(v)} entries; expected an int or one per spatial axis ({rank})"
        )
    return v


def _padding(value: Any, rank: int) -> str | tuple[tuple[int, int], ...]:
    """A named padding (lower case) or explicit ``((lo, hi), ...)`` pads, one pair per axis."""
    accepted = ("'valid', 'same', 'causal' (1-D), 'centered', an int, one int per spatial axis, or "
                "one (lo, hi) pair per spatial axis (non-negative)")
    if isinstance(value, str):
        v = value.lower()
        if v not in PADDINGS:
            raise ConvkitValueError(f"padding={value!r} is not accepted; expected {accepted}")
        if v == "causal" and rank != 1:
            raise ConvkitValueError(
                f"padding='causal' is only accepted with 1 spatial dimension (got {rank}); expected "
                "explicit (lo, hi) pairs such as ((k - 1, 0), ...)"
            )
        return v
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if is_int(value):
        pairs = ((int(value), int(value)),) * rank
    elif isinstance(value, (tuple, list)) and len(value) == rank and all(is_int(p) for p in value):
        pairs = tuple((int(p), int(p)) for p in value)
    elif (isinstance(value, (tuple, list)) and len(value) == rank
          and all(isinstance(p, (tuple, list)) and len(p) == 2 and all(is_int(q) for q in p) for p in value)):
        pairs = tuple((int(p[0]), int(p[1])) for p in value)
    else:
        raise ConvkitTypeError(f"padding={value!r} is not accepted; expected {accepted}")
    if any(p < 0 for pair in pairs for p in pair):
        raise ConvkitValueError(f"padding={value!r} is not accepted; expected {accepted}")
    return pairs


def _groups(value: Any) -> int:
    if not is_int(value):
        raise ConvkitTypeError(f"groups={value!r} is not accepted; expected a positive int")
    if value < 1:
        raise ConvkitValueError(f"groups={value!r} is not accepted; expected a positive int")
    return int(value)


def _kind_check(name: str, dt: np.dtype) -> None:
    if dt.kind not in "iufc":
        hint = "; cast it with .astype('float32') or an integer type" if dt.kind == "b" else ""
        raise ConvkitTypeError(
            f"{name} has dtype {dt}; conv expects an integer, float or complex dtype{hint}"
        )


# ----------------------------------------------------------------------------- geometry


def _axis_pads(padding, n: int, me: int, s: int) -> tuple[int, int]:
    if padding == "valid":
        return 0, 0
    if padding == "causal":
        return me - 1, 0
    if padding == "centered":  # scipy.signal.correlate(..., "same"): the centred part of 'full'
        return me // 2, (me - 1) // 2
    # "same": TF/Keras/torch/lax placement, stride-aware (extra pad at the end)
    total = max((-(-n // s) - 1) * s + me - n, 0)
    return total // 2, total - total // 2


@lru_cache(maxsize=1024)
def conv_plan(layout: str, kernel_layout: str, x_shape: tuple[int, ...], w_shape: tuple[int, ...],
              x_dtype: np.dtype, w_dtype: np.dtype, bias: tuple[tuple[int, ...], np.dtype] | None,
              padding, stride: tuple[int, ...], dilation: tuple[int, ...], groups: int, dtype,
              precision: str, method: str, caps_fft: bool = True) -> ConvPlan:
    """Apply S15 to normalised arguments (see :func:`conv`); raise for any bad input.

    Pure shapes and dtypes: safe while JAX traces. ``bias`` is ``(shape, dtype)`` or ``None``;
    ``caps_fft`` says whether the backend has an FFT method for ``method="auto"``.

    >>> p = conv_plan("NCHW", "OIHW", (8, 64, 56, 56), (64, 64, 3, 3), np.dtype("float32"),
    ...               np.dtype("float32"), None, "same", (1, 1), (1, 1), 1, None, "highest", "auto")
    >>> p.out_shape, p.pads, str(p.out_dtype)
    ((8, 64, 56, 56), ((1, 1), (1, 1)), 'float32')
    """
    rank = len(layout) - 2
    for name, shape, want in (("x", x_shape, layout), ("w", w_shape, kernel_layout)):
        if len(shape) != len(want):
            what = "layout" if name == "x" else "kernel_layout"
            raise ConvkitValueError(
                f"{name} has {len(shape)} dimensions (shape {shape}); {what}={want!r} expects {len(want)}"
            )
        if 0 in shape:
            raise ConvkitValueError(f"{name} is empty (shape {shape}); conv needs at least one element")
    _kind_check("x", x_dtype)
    _kind_check("w", w_dtype)
    channels_last = layout.endswith("C")
    n, c_in = x_shape[0], x_shape[-1 if channels_last else 1]
    in_spatial = x_shape[1:-1] if channels_last else x_shape[2:]
    if kernel_layout.endswith("O"):
        c_out, w_in, ksize = w_shape[-1], w_shape[-2], w_shape[:-2]
    else:
        c_out, w_in, ksize = w_shape[0], w_shape[1], w_shape[2:]
    if c_in != groups * w_in:
        raise ConvkitValueError(
            f"x has {c_in} channels (layout {layout!r}) but w has {w_in} input channels per group "
            f"(kernel_layout {kernel_layout!r}) and groups={groups}; expected x channels = groups * "
            f"w input channels ({groups * w_in})"
        )
    if c_out % groups:
        raise ConvkitValueError(
            f"groups={groups} does not divide the {c_out} output channels of w; expected a divisor "
            f"of both the input and the output channels"
        )
    dtypes = [x_dtype, w_dtype]
    if bias is not None:
        b_shape, b_dtype = bias
        _kind_check("bias", b_dtype)
        if tuple(b_shape) != (c_out,):
            raise ConvkitValueError(
                f"bias has shape {tuple(b_shape)}; expected ({c_out},), one value per output channel"
            )
        dtypes.append(b_dtype)
    natural = np.result_type(*dtypes)
    out_dtype, acc_dtype = result_dtype(natural, natural, dtype)
    pads, out_spatial = [], []
    for i in range(rank):
        me = (ksize[i] - 1) * dilation[i] + 1
        p = padding[i] if isinstance(padding, tuple) else _axis_pads(padding, in_spatial[i], me, stride[i])
        padded = in_spatial[i] + p[0] + p[1]
        if padded < me:
            raise ConvkitValueError(
                f"the effective kernel (length {me} on spatial axis {i}, with dilation {dilation[i]}) is "
                f"longer than the padded x (length {padded}) for padding={padding!r}; expected a smaller "
                "kernel or dilation, or more padding"
            )
        pads.append(p)
        out_spatial.append((padded - me) // stride[i] + 1)
    out_shape = (n, *out_spatial, c_out) if channels_last else (n, c_out, *out_spatial)
    nbytes = math.prod(out_shape) * out_dtype.itemsize
    if nbytes > MAX_OUTPUT_FRACTION * physical_memory():
        raise ConvkitValueError(
            f"the output would have shape {out_shape} ({nbytes / 2**30:.3g} GiB), more than half of this "
            f"machine's memory; expected a smaller x, more stride or fewer output channels"
        )
    plan = ConvPlan(
        layout=layout, kernel_layout=kernel_layout, x_shape=x_shape, w_shape=w_shape, batch=n,
        in_channels=c_in, out_channels=c_out, groups=groups, in_spatial=tuple(in_spatial),
        kernel_spatial=tuple(ksize), stride=stride, dilation=dilation, pads=tuple(pads),
        out_spatial=tuple(out_spatial), out_shape=out_shape, out_dtype=out_dtype, acc_dtype=acc_dtype,
        has_bias=bias is not None, precision=precision, method="direct",
    )
    chosen = _choose(plan, method, caps_fft)
    if chosen == "direct":
        return plan
    return dataclasses.replace(plan, method=chosen, nan_safe=method == "auto")


#: rough seconds (2-core x86-64, NumPy/OpenBLAS, float64) per multiply-add of the direct GEMM, per
#: element of the unfolded patches, per element and log2 of an FFT, and per complex multiply-add of
#: the frequency-domain channel sums (small batched products); only their ratios matter
_C_GEMM = 1.0e-10
_C_COLS = 1.0e-9
_C_FFT = 2.5e-10
_C_SPECTRAL = 1.5e-9


def fft_length(plan: ConvPlan) -> int:
    """Elements of one FFT of the padded input (power-of-two bound of the fast lengths)."""
    sizes = zip(plan.padded_spatial, plan.effective_kernel)
    return math.prod(1 << (p + me - 2).bit_length() for p, me in sizes)


def _choose(plan: ConvPlan, method: str, caps_fft: bool) -> str:
    """``direct`` or ``fft``. Integers always direct (exact, S5); ``auto`` estimates both on
    floats (the FFT result then falls back to direct when an input is not finite, S9)."""
    if method == "direct" or plan.acc_dtype.kind not in "fc":
        return "direct"
    if method == "fft":
        return "fft"
    if not caps_fft or plan.taps < 16:
        return "direct"
    length = fft_length(plan)
    transforms = (plan.batch * plan.in_channels + plan.out_channels * plan.group_in
                  + plan.batch * plan.out_channels) * length * math.log2(max(length, 2))
    spectral = plan.batch * plan.out_channels * plan.group_in * length / 2
    fft = _C_FFT * transforms + _C_SPECTRAL * spectral
    cols = plan.batch * plan.in_channels * plan.taps * math.prod(plan.out_spatial)
    return "fft" if fft < _C_GEMM * plan.macs + _C_COLS * cols else "direct"


# ----------------------------------------------------------------------------- the front door


def _resolve(x, w, bias, backend):
    be, host = dispatch.resolve_backend(x, w, backend)
    if bias is not None:
        owner = dispatch.array_owner(bias)
        if owner is not None and owner != getattr(be, "name", None):
            raise DeviceMismatchError(
                f"bias is a {owner} array but the call runs on {getattr(be, 'name', be)!r}; convert bias "
                "to the type of x and w"
            )
    return be, host


def _run_plan(be, plan: ConvPlan, x, w, bias):
    layer = getattr(be, "conv_layer", None)
    if layer is not None:
        return layer(plan, x, w, bias)
    if getattr(be, "xp", None) is not None:  # an array-namespace backend: the default implementation
        return importlib.import_module("convkit.backends._conv").conv_layer(be, plan, x, w, bias)
    raise ConvkitTypeError(
        f"backend {getattr(be, 'name', be)!r} cannot run conv: it has neither conv_layer() nor an array "
        "namespace xp; expected a backend built on convkit.backends._base.ArrayBackend"
    )


#: plans of calls validated before, keyed by the raw options (type and value: ``stride=True``
#: never hits the entry of ``stride=1``) and the inputs' shapes and dtypes; a hit skips the
#: option parsing that dominates a small layer's call
_PLANS = TypedCache()


def _validated_plan(x_shape, w_shape, x_dt, w_dt, bias_info, layout, kernel_layout, padding, stride, dilation,
                    groups, dtype, precision: str, method: str, caps_fft: bool) -> ConvPlan:
    """Validate the raw layer options against the shapes and build the plan (S15)."""
    if layout is None and len(x_shape) - 2 not in LAYOUTS:
        raise ConvkitValueError(
            f"x has {len(x_shape)} dimensions; conv expects 3, 4 or 5 (N, C and 1-3 spatial axes)"
        )
    layout_c, rank = _layout(layout, len(x_shape) - 2 if len(x_shape) - 2 in LAYOUTS else 2)
    kernel_c = _kernel_layout(kernel_layout, rank)
    return conv_plan(layout_c, kernel_c, x_shape, w_shape, x_dt, w_dt, bias_info, _padding(padding, rank),
                     _axis_values("stride", stride, rank, 1), _axis_values("dilation", dilation, rank, 1),
                     _groups(groups), _dtype(dtype), precision, method, caps_fft)


def conv(
    x: Any,
    w: Any,
    *,
    stride: PerAxis = 1,
    padding: Padding = "valid",
    dilation: PerAxis = 1,
    groups: int = 1,
    layout: str | None = None,
    kernel_layout: str | None = None,
    bias: Any = None,
    dtype: Any = None,
    precision: str = "highest",
    method: str = "auto",
    backend: Any = None,
):
    """A deep-learning convolution layer: torch ``conv*d``, Keras ``Conv*D``, ``lax.conv_general_dilated``.

    Computes the cross-correlation (no kernel flip) summed over the input channels of each
    group, for 1, 2 or 3 spatial dimensions (SPEC S15)::

        out[n, o, p] = bias[o] + sum_{c in group(o), t} pad(x)[n, c, p*stride + t*dilation] * w[o, c, t]

    Parameters
    ----------
    x : array_like
        Input batch in ``layout``.
    w : array_like
        Kernel in ``kernel_layout``; its ``I`` axis holds ``in_channels / groups`` channels.
    stride, dilation : int or tuple of int
        One value or one per spatial axis, at least 1.
    padding : {'valid', 'same', 'causal', 'centered'}, int, ints or (lo, hi) pairs
        ``'same'`` as TF/Keras/torch/lax (stride-aware, the extra pad at the end); ``'causal'``
        (1-D) all on the left; ``'centered'`` SciPy's centred ``'same'`` (the extra pad at the
        start); an int, one int per axis, or one ``(lo, hi)`` pair per axis.
    groups : int
        Feature groups: ``in_channels = groups * w_in``; ``groups == in_channels`` is depthwise.
    layout : str, optional
        ``'NCW'``/``'NWC'``, ``'NCHW'``/``'NHWC'``, ``'NCDHW'``/``'NDHWC'`` (or ``'channels_first'``/
        ``'channels_last'``). Default: channels first, with ``x.ndim - 2`` spatial axes.
    kernel_layout : str, optional
        ``'OIW'``/``'WIO'``, ``'OIHW'``/``'HWIO'``, ``'OIDHW'``/``'DHWIO'``; default ``'OI...'`` (torch).
    bias : array_like, optional
        One value per output channel, added to every output of that channel.
    dtype : dtype, optional
        Output and accumulation dtype; default ``numpy.result_type(x, w, bias)`` (S4: integers
        exact with wrap-around, float64 kept on every backend).
    precision : {'highest', 'high', 'default'}
        ``'highest'`` forbids TF32/bf16 shortcuts (S6).
    method : {'auto', 'direct', 'fft'}
        ``'direct'``: a NaN or Inf reaches only the outputs whose window holds it (S9).
        ``'auto'`` may use an FFT for large float kernels, falling back to direct when an input
        is not finite; ``'fft'`` keeps FFT behaviour. Integers are always computed exactly.
    backend : str or backend object, optional
        As for :func:`convkit.convolve` (S12).

    Returns
    -------
    array of the inputs' type, in ``layout``.

    Examples
    --------
    >>> import numpy as np
    >>> import convkit
    >>> x = np.arange(10).reshape(1, 2, 5)                 # N=1, C=2, W=5
    >>> w = np.array([[[1, 0, -1], [0, 1, 0]]])            # O=1, I=2, K=3
    >>> convkit.conv(x, w).tolist()                        # no flip, summed over channels
    [[[4, 5, 6]]]
    >>> convkit.conv(x, w, padding="same", stride=2).shape
    (1, 1, 3)
    """
    if not isinstance(precision, str):
        raise ConvkitTypeError(f"precision={precision!r} is not accepted; expected a string")
    precision_c = normalize_choice("precision", precision, PRECISIONS)
    method_c = normalize_choice("method", method, CONV_METHODS)
    be, host = _resolve(x, w, bias, backend)
    x, x_shape, x_dt = _shape_dtype("x", x, host, be)
    w, w_shape, w_dt = _shape_dtype("w", w, host, be)
    bias_info = None
    if bias is not None:
        bias, b_shape, b_dt = _shape_dtype("bias", bias, host, be)
        bias_info = (b_shape, b_dt)
    caps_fft = "fft" in getattr(getattr(be, "capabilities", None), "methods", ())
    raw = (layout, kernel_layout, padding, stride, dilation, groups, dtype, precision, method)
    key, plan = _PLANS.lookup(raw, (x_shape, w_shape, x_dt, w_dt, bias_info, caps_fft))
    if plan is None:
        plan = _validated_plan(x_shape, w_shape, x_dt, w_dt, bias_info, layout, kernel_layout, padding,
                               stride, dilation, groups, dtype, precision_c, method_c, caps_fft)
        _PLANS.store(key, plan)
    out = _run_plan(be, plan, x, w, bias)
    return be.to_host(out) if host and be.device else out
