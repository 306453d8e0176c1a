"""SPEC rules S2-S10 as pure functions of shapes, dtypes and options.

Nothing here touches an array: :func:`make_plan` turns shapes, dtypes and normalised
options into a frozen :class:`Plan` (pads, swap, output shape and dtype, method), and
raises every bad-input error, once, with the same text on every backend. Because it
only sees static information it is safe to call while JAX traces a function.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ._hash_once import hash_once
from .choose import choose_method
from .errors import ConvkitTypeError, ConvkitValueError
from .options import ALIGNS, BOUNDARIES, METHODS, MODES, PRECISIONS, Options, make_options

__all__ = ["Plan", "make_plan", "plan_call", "MODES", "METHODS", "BOUNDARIES", "ALIGNS", "PRECISIONS"]

#: largest output convkit computes, as a fraction of the machine's physical memory
MAX_OUTPUT_FRACTION = 0.5
#: longest padded input or effective kernel on one axis (beyond it sizes overflow int64 index math)
MAX_AXIS_LENGTH = 2**53


@hash_once
@dataclass(frozen=True)
class Plan:
    """Everything a backend needs to run one call; derived from shapes and options only.

    The backend computes ``VALIDCORR(pad(x, pads, boundary), dilate(w))[::stride]`` over
    ``axes`` where ``x, k = (in2, in1) if swap else (in1, in2)`` and ``w = flip(k)`` for
    convolve, ``conj(k)`` for correlate; then ``flip(conj(.))`` if ``flip_conj_result``.
    """

    op: str
    scalar: bool
    swap: bool
    flip_conj_result: bool
    ndim: int
    axes: tuple[int, ...]
    in1_shape: tuple[int, ...]
    in2_shape: tuple[int, ...]
    pads: tuple[tuple[int, int], ...]
    boundary: str
    fillvalue: object
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    out_shape: tuple[int, ...]
    out_dtype: np.dtype
    acc_dtype: np.dtype
    method: str
    requested_method: str
    nan_safe: bool
    precision: str

    @property
    def x_shape(self) -> tuple[int, ...]:
        """Shape (expanded to ``ndim``) of the array that is padded and slid over."""
        return self.in2_shape if self.swap else self.in1_shape

    @property
    def k_shape(self) -> tuple[int, ...]:
        """Shape (expanded to ``ndim``) of the kernel."""
        return self.in1_shape if self.swap else self.in2_shape

    @property
    def kernel_size(self) -> tuple[int, ...]:
        """Kernel length on each convolution axis."""
        return tuple(self.k_shape[a] for a in self.axes)

    @property
    def effective_kernel(self) -> tuple[int, ...]:
        """Dilated kernel length ``(M-1)*dilation + 1`` on each convolution axis."""
        return tuple((m - 1) * d + 1 for m, d in zip(self.kernel_size, self.dilation))

    @property
    def taps(self) -> int:
        """Number of kernel taps K (product of the kernel sizes on the convolution axes)."""
        return math.prod(self.kernel_size)

    @property
    def batch_shape(self) -> tuple[int, ...]:
        """Output sizes on the non-convolution axes (the broadcast shape)."""
        return tuple(s for i, s in enumerate(self.out_shape) if i not in self.axes)


# ----------------------------------------------------------------------------- shapes


def per_axis(name: str, value, n: int) -> tuple[int, ...]:
    """A normalised per-axis option (an int or a tuple of ints) -> a tuple of length ``n``."""
    if isinstance(value, int):
        return (value,) * n
    if len(value) != n:
        raise ConvkitValueError(
            f"{name}={value!r} has {len(value)} entries; expected an int or one per "
            f"convolution axis ({n})"
        )
    return tuple(value)


def normalize_axes(axes, ndim1: int, ndim2: int):
    """Resolve ``axes`` (S10) -> (ndim, conv axes, where in1 / in2 axes sit in ndim).

    Without ``axes`` both inputs must have the same ndim and every axis is a convolution
    axis. With ``axes`` the inputs have the same ndim, or the smaller one has exactly
    ``len(axes)`` dimensions: a kernel over the convolution axes, broadcast over the rest.
    """
    if axes is None:
        if ndim1 != ndim2:
            raise ConvkitValueError(
                f"in1 and in2 must have the same number of dimensions (got {ndim1} and {ndim2}); "
                "pass axes= to convolve over some axes and broadcast the others"
            )
        return ndim1, tuple(range(ndim1))
    ndim = max(ndim1, ndim2)
    out = []
    for a in axes:
        a = int(a)
        if not -ndim <= a < ndim:
            raise ConvkitValueError(f"axes={tuple(axes)!r} is out of range for arrays with {ndim} dimensions")
        out.append(a % ndim)
    if len(set(out)) != len(out):
        raise ConvkitValueError(f"axes={tuple(axes)!r} repeats an axis; each axis may appear once")
    for name, nd in (("in1", ndim1), ("in2", ndim2)):
        if nd != ndim and nd != len(out):
            raise ConvkitValueError(
                f"{name} has {nd} dimensions; with axes={tuple(axes)!r} expected {ndim} "
                f"(as the other input) or {len(out)} (one per convolution axis)"
            )
    return ndim, tuple(out)


def expand_shape(shape: tuple[int, ...], ndim: int, axes: tuple[int, ...]) -> tuple[int, ...]:
    """Place a kernel given only over the convolution axes into ``ndim`` dims (size 1 elsewhere)."""
    if len(shape) == ndim:
        return tuple(shape)
    full = [1] * ndim
    for a, s in zip(sorted(axes), shape):
        full[a] = s
    return tuple(full)


#: dtype kinds convkit computes with: bool, signed and unsigned integers, float, complex
NUMERIC_KINDS = "biufc"


def _dtype_hint(dt: np.dtype) -> str:
    if dt.name == "bfloat16" or "bfloat16" in str(dt):
        return "; convkit has no bfloat16 arithmetic on host arrays: cast with x.astype('float32')"
    if dt.kind == "V" and dt.fields is None:
        return "; cast the array to a float dtype such as 'float32' first"
    return ""


def result_dtype(dtype1: np.dtype, dtype2: np.dtype, dtype) -> tuple[np.dtype, np.dtype]:
    """S4: output dtype and accumulation dtype (native byte order whatever the inputs' order)."""
    for name, dt in (("in1", dtype1), ("in2", dtype2)):
        if dt.kind not in NUMERIC_KINDS:
            raise ConvkitTypeError(
                f"{name} has dtype {dt}; expected a numeric dtype (bool, integer, float or complex)"
                + _dtype_hint(dt)
            )
    natural = np.result_type(dtype1, dtype2)
    if dtype is None:
        out = natural
    else:
        out = np.dtype(dtype)
        if out.kind not in NUMERIC_KINDS:
            raise ConvkitTypeError(
                f"dtype={out} is not accepted; expected a numeric dtype" + _dtype_hint(out)
            )
        if not np.can_cast(natural, out, casting="same_kind"):
            raise ConvkitTypeError(
                f"dtype={out} cannot hold {natural} inputs without changing their kind; "
                f"expected a {natural.kind!r}-kind dtype or wider"
            )
    if not out.isnative:
        out = out.newbyteorder("=")
    # float16 accumulates in float32 (more accurate than S5 asks; NumPy has no fast float16)
    acc = np.dtype(np.float32) if out == np.float16 else out
    return out, acc


def check_fill(fillvalue, out_dtype: np.dtype, acc_dtype: np.dtype, boundary: str) -> None:
    """A fill value must be representable in the result dtype (no silent truncation or overflow
    to Inf); NaN and Inf fill values are allowed for float and complex results."""
    if boundary != "constant" or fillvalue == 0:
        return
    kind = acc_dtype.kind
    if kind in "biu":
        ok = isinstance(fillvalue, (int, float)) and float(fillvalue).is_integer()
        if ok:
            info = np.iinfo(acc_dtype) if kind != "b" else None
            ok = fillvalue in (0, 1) if info is None else info.min <= fillvalue <= info.max
    elif kind == "f":
        ok = not isinstance(fillvalue, complex) and _fits_float(float(fillvalue), out_dtype)
    else:
        ok = all(_fits_float(v, out_dtype) for v in (complex(fillvalue).real, complex(fillvalue).imag))
    if not ok:
        why = ""
        if kind == "f" and isinstance(fillvalue, complex):
            why = " (a complex fill value needs a complex result)"
        elif kind in "fc":
            why = f" (at most {float(np.finfo(out_dtype).max):.4g} in magnitude)"
        raise ConvkitValueError(
            f"fillvalue={fillvalue!r} cannot be represented in the {out_dtype} result; "
            f"expected a value of the result dtype{why}"
        )


def _fits_float(v: float, dt: np.dtype) -> bool:
    return not math.isfinite(v) or abs(v) <= float(np.finfo(dt).max)


# ----------------------------------------------------------------------------- geometry


def _same_pads(n: int, me: int, s: int, o: int, align: str) -> tuple[int, int]:
    if align == "scipy":
        return me // 2 + o, (me - 1) // 2 - o
    total = max((-(-n // s) - 1) * s + me - n, 0)
    return total // 2 + o, total - total // 2 - o


def broadcast_batch(s1, s2, ndim: int, conv_axes) -> dict[int, int]:
    """S10: output sizes of the non-convolution axes (equal sizes or 1)."""
    batch = {}
    for a in range(ndim):
        if a in conv_axes:
            continue
        n1, n2 = s1[a], s2[a]
        if n1 != n2 and 1 not in (n1, n2):
            raise ConvkitValueError(
                f"in1 and in2 cannot be broadcast on non-convolution axis {a} (sizes {n1} and {n2}); "
                "expected equal sizes or 1"
            )
        batch[a] = max(n1, n2)
    return batch


def swap_needed(mode: object, s1, s2, conv_axes, stride, dilation) -> bool:
    """S3: whether in2 slides over in1 ('valid' with stride = dilation = 1 when in2 dominates),
    as SciPy's ``_inputs_swap_needed``."""
    if mode != "valid" or any(s != 1 for s in stride) or any(d != 1 for d in dilation):
        return False
    n1s = [s1[a] for a in conv_axes]
    n2s = [s2[a] for a in conv_axes]
    if all(a >= b for a, b in zip(n1s, n2s)):
        return False
    if all(b >= a for a, b in zip(n1s, n2s)):
        return True
    raise ConvkitValueError(
        f"mode='valid' needs one input at least as large as the other on every convolution "
        f"axis; got in1 {tuple(n1s)} and in2 {tuple(n2s)}"
    )


def axis_geometry(mode, n: int, m: int, s: int, d: int, o: int, align: str, axis: int,
                  explicit: tuple[int, int] | None) -> tuple[tuple[int, int], int]:
    """S2 on one axis: ``((pad_lo, pad_hi), output length)``."""
    me = (m - 1) * d + 1
    if mode == "full":
        p = (me - 1, me - 1)
    elif mode == "valid":
        p = (0, 0)
    elif mode == "causal":
        p = (me - 1, 0)
    elif mode == "same":
        p = _same_pads(n, me, s, o, align)
    else:
        p = explicit
    padded = n + p[0] + p[1]
    if me > MAX_AXIS_LENGTH or padded > MAX_AXIS_LENGTH:
        what = f"dilation={d}" if me > MAX_AXIS_LENGTH else f"mode={mode!r}"
        raise ConvkitValueError(
            f"{what} is not accepted: it makes axis {axis} {max(me, padded)} samples long; expected "
            f"lengths below 2**53"
        )
    if padded < me:
        raise ConvkitValueError(
            f"the effective kernel (length {me} on axis {axis}, with dilation {d}) is longer than "
            f"the padded in1 (length {padded}) for mode={mode!r}"
        )
    return p, (padded - me) // s + 1


@lru_cache(maxsize=1)
def physical_memory() -> int:
    """Bytes of physical memory of this machine (a large number where the OS does not say)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):  # pragma: no cover - not POSIX
        return 2**50


def check_output_size(out_shape, out_dtype: np.dtype, options: Options) -> None:
    """Refuse, before anything is allocated, an output that this machine cannot hold."""
    nbytes = math.prod(out_shape) * out_dtype.itemsize
    limit = MAX_OUTPUT_FRACTION * physical_memory()
    if nbytes > limit:
        culprit = "dilation" if options.dilation != 1 else "mode"
        raise ConvkitValueError(
            f"{culprit}={getattr(options, culprit)!r} is not accepted here: the output would have shape "
            f"{tuple(out_shape)} ({nbytes / 2**30:.3g} GiB), more than half of this machine's memory "
            f"({physical_memory() / 2**30:.3g} GiB); expected a smaller output"
        )


# ----------------------------------------------------------------------------- the plan


@lru_cache(maxsize=1024)
def make_plan(op: str, shape1: tuple[int, ...], shape2: tuple[int, ...], dtype1: np.dtype,
              dtype2: np.dtype, options: Options, caps) -> Plan:
    """Apply SPEC S2-S10 to static call information; raise for any bad input.

    ``options`` come from :func:`convkit.options.make_options` (validated and hashable), so
    repeated calls with the same shapes and options cost one dictionary lookup.
    """
    if op not in ("convolve", "correlate"):
        raise ConvkitValueError(f"op={op!r} is not accepted; expected 'convolve' or 'correlate'")
    out_dtype, acc_dtype = result_dtype(dtype1, dtype2, options.dtype)
    check_fill(options.fillvalue, out_dtype, acc_dtype, options.boundary)
    for name, shape in (("in1", shape1), ("in2", shape2)):
        if 0 in shape:
            raise ConvkitValueError(
                f"{name} is empty (shape {shape}); convolution needs at least one element"
            )
    # the per-axis rules run for every shape: a 0-d call has 0 convolution axes
    ndim, conv_axes = normalize_axes(options.axes, len(shape1), len(shape2))
    if (len(shape1) == 0) != (len(shape2) == 0):
        raise ConvkitValueError(
            f"in1 and in2 must have the same number of dimensions (got {len(shape1)} and {len(shape2)})"
        )
    n_ax = len(conv_axes)
    stride = per_axis("stride", options.stride, n_ax)
    dilation = per_axis("dilation", options.dilation, n_ax)
    origin = per_axis("origin", options.origin, n_ax)
    explicit = options.mode if isinstance(options.mode, tuple) else None
    if explicit is not None and len(explicit) != n_ax:
        raise ConvkitValueError(
            f"mode={explicit!r} gives {len(explicit)} (lo, hi) pads; expected one per convolution "
            f"axis ({n_ax})"
        )
    if ndim == 0:
        return _scalar_plan(op, out_dtype, acc_dtype, options)

    s1 = expand_shape(shape1, ndim, conv_axes)
    s2 = expand_shape(shape2, ndim, conv_axes)
    batch = broadcast_batch(s1, s2, ndim, conv_axes)
    swap = swap_needed(options.mode, s1, s2, conv_axes, stride, dilation)
    xs, ks = (s2, s1) if swap else (s1, s2)
    pads, out_shape = [], [batch.get(a, 0) for a in range(ndim)]
    for i, a in enumerate(conv_axes):
        p, out_shape[a] = axis_geometry(options.mode, xs[a], ks[a], stride[i], dilation[i], origin[i],
                                        options.align, a, explicit[i] if explicit else None)
        pads.append(p)
    check_output_size(out_shape, out_dtype, options)

    method_r, nan_safe = choose_method(
        options.method,
        out_dtype=acc_dtype,
        out_shape=tuple(out_shape),
        x_shape=xs,
        k_shape=ks,
        axes=conv_axes,
        pads=tuple(pads),
        stride=stride,
        dilation=dilation,
        fill_finite=options.boundary != "constant" or bool(np.isfinite(options.fillvalue)),
        caps=caps,
    )
    return Plan(
        op=op,
        scalar=False,
        swap=swap,
        flip_conj_result=swap and op == "correlate",
        ndim=ndim,
        axes=conv_axes,
        in1_shape=s1,
        in2_shape=s2,
        pads=tuple(pads),
        boundary=options.boundary,
        fillvalue=options.fillvalue,
        stride=stride,
        dilation=dilation,
        out_shape=tuple(out_shape),
        out_dtype=out_dtype,
        acc_dtype=acc_dtype,
        method=method_r,
        requested_method=options.method,
        nan_safe=nan_safe,
        precision=options.precision,
    )


def plan_call(op: str, in1, in2, caps=None, **options) -> Plan:
    """The plan of ``op(in1, in2, **options)`` for host arrays (tests, benchmarks, tools).

    >>> plan_call("convolve", [1, 2, 3], [1, 1], mode="same").out_shape
    (3,)
    """
    a, b = np.asarray(in1), np.asarray(in2)
    if caps is None:
        from .dispatch import get_backend

        caps = get_backend("numpy").capabilities
    return make_plan(op, a.shape, b.shape, a.dtype, b.dtype, make_options(**options), caps)


def _scalar_plan(op, out_dtype, acc_dtype, options: Options) -> Plan:
    return Plan(
        op=op, scalar=True, swap=False, flip_conj_result=False, ndim=0, axes=(), in1_shape=(),
        in2_shape=(), pads=(), boundary=options.boundary, fillvalue=options.fillvalue, stride=(), dilation=(),
        out_shape=(), out_dtype=out_dtype, acc_dtype=acc_dtype, method="direct",
        requested_method=options.method, nan_safe=False, precision=options.precision,
    )
