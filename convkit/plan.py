"""SPEC rules S2-S10 as pure functions of shapes, dtypes and options.

Nothing here touches an array: :func:`make_plan` turns shapes, dtypes and normalised
options into a frozen :class:`Plan` (pads, swap, output shape and dtype, method), and
raises every bad-input error, once, with the same text on every backend. Because it
only sees static information it is safe to call while JAX traces a function.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .choose import choose_method
from .errors import ConvkitTypeError, ConvkitValueError

__all__ = ["Plan", "make_plan", "MODES", "METHODS", "BOUNDARIES", "ALIGNS", "PRECISIONS"]

MODES = ("full", "valid", "same", "causal")
METHODS = ("auto", "direct", "fft", "oa")
PRECISIONS = ("highest", "high", "default")

# convkit boundary name (and aliases) -> numpy.pad mode (SPEC S7)
BOUNDARIES = {
    "fill": "constant",
    "constant": "constant",
    "zeros": "constant",
    "grid-constant": "constant",
    "symm": "symmetric",
    "symmetric": "symmetric",
    "reflect": "symmetric",
    "grid-mirror": "symmetric",
    "mirror": "reflect",
    "nearest": "edge",
    "edge": "edge",
    "replicate": "edge",
    "wrap": "wrap",
    "circular": "wrap",
    "grid-wrap": "wrap",
}

# align name (and aliases) -> canonical align
ALIGNS = {"scipy": "scipy", "tf": "tf", "keras": "tf", "torch": "tf", "lax": "tf"}


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


# ----------------------------------------------------------------------------- options


def _bad(name: str, value: object, accepted: str) -> ConvkitValueError:
    return ConvkitValueError(f"{name}={value!r} is not accepted; expected {accepted}")


def normalize_choice(name: str, value: object, table) -> str:
    """Map a string option (case-insensitive) through its alias table, or raise naming it."""
    if isinstance(value, str) and value.lower() in table:
        return table[value.lower()] if isinstance(table, dict) else value.lower()
    raise _bad(name, value, "one of " + ", ".join(repr(v) for v in table))


def _is_int(v: object) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def per_axis(name: str, value, n: int, *, minimum: int | None = None) -> tuple[int, ...]:
    """An int or a per-axis sequence of ints -> a tuple of length ``n``."""
    if _is_int(value):
        vals = (int(value),) * n
    elif isinstance(value, (tuple, list)) and all(_is_int(v) for v in value):
        if len(value) != n:
            raise ConvkitValueError(
                f"{name}={value!r} has {len(value)} entries; expected an int or one per "
                f"convolution axis ({n})"
            )
        vals = tuple(int(v) for v in value)
    else:
        raise ConvkitTypeError(
            f"{name}={value!r} is not accepted; expected an int or a tuple of {n} ints"
        )
    if minimum is not None and any(v < minimum for v in vals):
        raise ConvkitValueError(f"{name}={value!r} is not accepted; expected integers >= {minimum}")
    return vals


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
    if _is_int(axes):
        axes = (axes,)
    if not isinstance(axes, (tuple, list)) or not all(_is_int(a) for a in axes) or not axes:
        raise ConvkitTypeError(f"axes={axes!r} is not accepted; expected None, an int or a tuple of ints")
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


_NUMERIC_KINDS = "biufc"


def result_dtype(dtype1: np.dtype, dtype2: np.dtype, dtype) -> tuple[np.dtype, np.dtype]:
    """S4: output dtype and accumulation dtype."""
    for name, dt in (("in1", dtype1), ("in2", dtype2)):
        if dt.kind not in _NUMERIC_KINDS:
            raise ConvkitTypeError(
                f"{name} has dtype {dt}; expected a numeric dtype (bool, integer, float or complex)"
            )
    natural = np.result_type(dtype1, dtype2)
    if dtype is None:
        out = natural
    else:
        try:
            out = np.dtype(dtype)
        except TypeError:
            raise ConvkitTypeError(f"dtype={dtype!r} is not a dtype; expected a numeric dtype") from None
        if out.kind not in _NUMERIC_KINDS:
            raise ConvkitTypeError(f"dtype={out} is not accepted; expected a numeric dtype")
        if not np.can_cast(natural, out, casting="same_kind"):
            raise ConvkitTypeError(
                f"dtype={out} cannot hold {natural} inputs without changing their kind; "
                f"expected a {natural.kind!r}-kind dtype or wider"
            )
    # float16 accumulates in float32 (more accurate than S5 asks; NumPy has no fast float16)
    acc = np.dtype(np.float32) if out == np.float16 else out
    return out, acc


# ----------------------------------------------------------------------------- geometry


def _same_pads(n: int, me: int, s: int, o: int, align: str) -> tuple[int, int]:
    if align == "scipy":
        return me // 2 + o, (me - 1) // 2 - o
    total = max((-(-n // s) - 1) * s + me - n, 0)
    return total // 2 + o, total - total // 2 - o


def _explicit_pads(mode, n: int) -> tuple[tuple[int, int], ...]:
    try:
        pads = tuple((int(lo), int(hi)) for lo, hi in mode)
        ok = all(_is_int(lo) and _is_int(hi) for lo, hi in mode)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ConvkitValueError(
            f"mode={mode!r} is not accepted; expected 'full', 'valid', 'same', 'causal' "
            "or a sequence of (lo, hi) integer pads, one per convolution axis"
        )
    if len(pads) != n:
        raise ConvkitValueError(
            f"mode={mode!r} gives {len(pads)} (lo, hi) pads; expected one per convolution axis ({n})"
        )
    return pads


@lru_cache(maxsize=1024)
def make_plan(
    op: str,
    shape1: tuple[int, ...],
    shape2: tuple[int, ...],
    dtype1: np.dtype,
    dtype2: np.dtype,
    mode,
    axes,
    boundary: str,
    fillvalue,
    align: str,
    origin,
    stride,
    dilation,
    dtype,
    method: str,
    precision: str,
    caps,
) -> Plan:
    """Apply SPEC S2-S10 to static call information; raise for any bad input.

    All arguments must be hashable (the api freezes lists into tuples) so plans are
    cached: repeated calls with the same shapes and options cost one dictionary lookup.
    """
    method_c = normalize_choice("method", method, METHODS)
    precision_c = normalize_choice("precision", precision, PRECISIONS)
    boundary_c = normalize_choice("boundary", boundary, BOUNDARIES)
    align_c = normalize_choice("align", align, ALIGNS)
    if isinstance(boundary, str) and boundary.lower() == "zeros" and fillvalue != 0:
        raise ConvkitValueError(
            f"boundary='zeros' conflicts with fillvalue={fillvalue!r}; use boundary='fill'"
        )
    if not isinstance(fillvalue, (int, float, complex)):
        raise ConvkitTypeError(f"fillvalue={fillvalue!r} is not accepted; expected a real or complex scalar")
    out_dtype, acc_dtype = result_dtype(dtype1, dtype2, dtype)
    if isinstance(mode, str):
        mode_c = normalize_choice("mode", mode, MODES)
    elif isinstance(mode, tuple):
        mode_c = "explicit"
    else:
        raise ConvkitValueError(
            f"mode={mode!r} is not accepted; expected 'full', 'valid', 'same', 'causal' "
            "or a sequence of (lo, hi) pads"
        )
    _check_fill(fillvalue, acc_dtype, boundary_c)

    for name, shape in (("in1", shape1), ("in2", shape2)):
        if 0 in shape:
            raise ConvkitValueError(
                f"{name} is empty (shape {shape}); convolution needs at least one element"
            )
    if len(shape1) == 0 and len(shape2) == 0:
        return _scalar_plan(op, out_dtype, acc_dtype, method_c, precision_c, boundary_c, fillvalue)

    ndim, conv_axes = normalize_axes(axes, len(shape1), len(shape2))
    if len(shape1) == 0 or len(shape2) == 0:
        raise ConvkitValueError(
            f"in1 and in2 must have the same number of dimensions (got {len(shape1)} and {len(shape2)})"
        )
    s1 = expand_shape(shape1, ndim, conv_axes)
    s2 = expand_shape(shape2, ndim, conv_axes)
    n_ax = len(conv_axes)
    stride_t = per_axis("stride", stride, n_ax, minimum=1)
    dilation_t = per_axis("dilation", dilation, n_ax, minimum=1)
    origin_t = per_axis("origin", origin, n_ax)
    if mode_c != "same" and any(origin_t):
        raise ConvkitValueError(f"origin={origin!r} is only used with mode='same'; got mode={mode!r}")

    # broadcast the non-convolution axes (S10)
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

    swap = False
    dl_style = any(s != 1 for s in stride_t) or any(d != 1 for d in dilation_t)
    if mode_c == "valid" and not dl_style:
        n1s = [s1[a] for a in conv_axes]
        n2s = [s2[a] for a in conv_axes]
        if all(a >= b for a, b in zip(n1s, n2s)):
            swap = False
        elif all(b >= a for a, b in zip(n1s, n2s)):
            swap = True
        else:
            raise ConvkitValueError(
                f"mode='valid' needs one input at least as large as the other on every convolution "
                f"axis; got in1 {tuple(n1s)} and in2 {tuple(n2s)}"
            )
    xs, ks = (s2, s1) if swap else (s1, s2)

    explicit = _explicit_pads(mode, n_ax) if mode_c == "explicit" else None
    pads, out_shape = [], list(batch.get(a, 0) for a in range(ndim))
    for i, a in enumerate(conv_axes):
        n, m, s, d, o = xs[a], ks[a], stride_t[i], dilation_t[i], origin_t[i]
        me = (m - 1) * d + 1
        if mode_c == "full":
            p = (me - 1, me - 1)
        elif mode_c == "valid":
            p = (0, 0)
        elif mode_c == "causal":
            p = (me - 1, 0)
        elif mode_c == "same":
            p = _same_pads(n, me, s, o, align_c)
        else:
            p = explicit[i]
        padded = n + p[0] + p[1]
        if padded < me:
            raise ConvkitValueError(
                f"the effective kernel (length {me} on axis {a}, with dilation {d}) is longer than "
                f"the padded in1 (length {padded}) for mode={mode!r}"
            )
        pads.append(p)
        out_shape[a] = (padded - me) // s + 1

    method_r, nan_safe = choose_method(
        method_c,
        out_dtype=acc_dtype,
        out_shape=tuple(out_shape),
        x_shape=xs,
        k_shape=ks,
        axes=conv_axes,
        pads=tuple(pads),
        stride=stride_t,
        dilation=dilation_t,
        fill_finite=boundary_c != "constant" or bool(np.isfinite(fillvalue)),
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
        boundary=boundary_c,
        fillvalue=fillvalue,
        stride=stride_t,
        dilation=dilation_t,
        out_shape=tuple(out_shape),
        out_dtype=out_dtype,
        acc_dtype=acc_dtype,
        method=method_r,
        requested_method=method_c,
        nan_safe=nan_safe,
        precision=precision_c,
    )


def _check_fill(fillvalue, acc_dtype: np.dtype, boundary: str) -> None:
    """A fill value must be representable in the accumulation dtype (no silent truncation)."""
    if boundary != "constant" or fillvalue == 0:
        return
    if acc_dtype.kind in "biu":
        ok = isinstance(fillvalue, (int, float)) and float(fillvalue).is_integer()
        if ok:
            info = np.iinfo(acc_dtype) if acc_dtype.kind != "b" else None
            ok = fillvalue in (0, 1) if info is None else info.min <= fillvalue <= info.max
    elif acc_dtype.kind == "f":
        ok = not isinstance(fillvalue, complex)
    else:
        ok = True
    if not ok:
        raise ConvkitValueError(
            f"fillvalue={fillvalue!r} cannot be represented in the {acc_dtype} result; "
            "expected a value of the result dtype"
        )


def _scalar_plan(op, out_dtype, acc_dtype, method, precision, boundary, fillvalue) -> Plan:
    return Plan(
        op=op, scalar=True, swap=False, flip_conj_result=False, ndim=0, axes=(), in1_shape=(),
        in2_shape=(), pads=(), boundary=boundary, fillvalue=fillvalue, stride=(), dilation=(),
        out_shape=(), out_dtype=out_dtype, acc_dtype=acc_dtype, method="direct",
        requested_method=method, nan_safe=False, precision=precision,
    )
