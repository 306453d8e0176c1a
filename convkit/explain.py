"""``convkit.explain``: what one convolve/correlate call computes, and how other libraries spell it.

:func:`explain` takes the arguments of :func:`convkit.convolve` (or, with ``op="correlate"``,
:func:`convkit.correlate`) and runs nothing. Its :class:`Explanation` says, for that call:

* the canonical form (SPEC S1) on every convolution axis: pads, dilation, effective kernel
  length, stride, output length; the kernel flip (convolve) or conjugation (correlate) and the
  input swap of S3;
* the output shape and dtype (S2, S4);
* the backend the call would run on (S12) and the method ``method="auto"`` picks, with the cost
  estimates of :mod:`convkit.choose` behind the choice (S8);
* the same computation in ``scipy.signal``, ``scipy.ndimage``, ``numpy.convolve``, torch
  ``conv1d/2d/3d``, Keras ``Conv1D/2D/3D`` and ``jax.lax.conv_general_dilated``, as runnable code,
  or why that library has no equivalent.

Each equivalent is a small script that reads the inputs from the names ``in1`` and ``in2``
(NumPy arrays) and leaves the result, a NumPy array, in ``out``. The tests execute every one
of them against the real library.

Inputs may be arrays (anything :func:`convkit.convolve` accepts) or :class:`Spec` objects that
give only a shape and a dtype:

>>> import convkit
>>> from convkit.explain import Spec
>>> e = convkit.explain(Spec((100,), "float32"), Spec((4,)), "same", op="correlate")
>>> e.out_shape, str(e.out_dtype), e.axes[0].pads
((100,), 'float64', (2, 1))
>>> print(e.equivalents["numpy.convolve"].code)
import numpy as np
out = np.correlate(in1, in2, mode="same")
>>> e.equivalents["keras"].code is not None  # Keras needs explicit pads for SciPy's centring
True
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import dispatch
from .choose import fused_dft_cost, fused_direct_cost, fused_fft_applies, method_costs, separable_cost
from .conv_explain import explain_conv as _explain_conv
from .errors import ConvkitTypeError, ConvkitValueError
from .options import Options, make_options
from .plan import Plan, make_plan

__all__ = ["explain", "Spec", "Explanation", "AxisForm", "Equivalent", "LIBRARIES", "parse_spec"]

#: the libraries an explanation covers, in the order it prints them: key -> what is called
LIBRARIES = {
    "scipy.signal": "scipy.signal.convolve / correlate / convolve2d / correlate2d",
    "scipy.ndimage": "scipy.ndimage.convolve / correlate",
    "numpy.convolve": "numpy.convolve / numpy.correlate",
    "torch": "torch.nn.functional.conv1d / conv2d / conv3d",
    "keras": "keras.layers.Conv1D / Conv2D / Conv3D",
    "lax": "jax.lax.conv_general_dilated",
}


#: numpy.pad mode (as held by :class:`~convkit.options.Options`) -> convkit's own boundary name
BOUNDARY_NAMES = {"constant": "fill", "symmetric": "symm", "reflect": "mirror", "edge": "nearest",
                  "wrap": "wrap"}


@dataclass(frozen=True)
class Spec:
    """An input given by its shape and dtype only (no data): ``Spec((100, 100), "float32")``.

    Parameters
    ----------
    shape : tuple of int
        The array's shape; ``()`` for a 0-d input.
    dtype : dtype, optional
        Its dtype (default ``float64``).
    """

    shape: tuple[int, ...]
    dtype: Any = np.float64

    def __post_init__(self) -> None:
        shape = (self.shape,) if isinstance(self.shape, (int, np.integer)) else self.shape
        try:
            shape = tuple(int(s) for s in shape)
        except (TypeError, ValueError):
            raise ConvkitTypeError(
                f"Spec shape={self.shape!r} is not accepted; expected a tuple of ints") from None
        if any(s < 0 for s in shape):
            raise ConvkitValueError(f"Spec shape={self.shape!r} has a negative size")
        try:
            dt = np.dtype(self.dtype)
        except TypeError:
            raise ConvkitTypeError(f"Spec dtype={self.dtype!r} is not a dtype") from None
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "dtype", dt)

    def __str__(self) -> str:
        return f"{'x'.join(map(str, self.shape)) or '()'} {self.dtype}"


_SPEC = re.compile(r"^\s*(\(\)|\d+(?:\s*[x,*]\s*\d+)*)\s*(?::\s*(\w+))?\s*$")


def parse_spec(text: str, dtype: Any = "float64") -> Spec:
    """``"100x100"`` or ``"100x100:float32"`` (``"()"``: 0-d) -> :class:`Spec` (``dtype`` unless given).

    >>> parse_spec("100x100:float32")
    Spec(shape=(100, 100), dtype=dtype('float32'))
    """
    m = _SPEC.match(text)
    if not m:
        raise ConvkitValueError(
            f"shape {text!r} is not accepted; expected sizes joined by 'x' such as '100x100', "
            "optionally followed by ':dtype' ('100x100:float32')"
        )
    sizes = () if m.group(1) == "()" else tuple(int(s) for s in re.split(r"\s*[x,*]\s*", m.group(1)))
    return Spec(sizes, m.group(2) or dtype)


@dataclass(frozen=True)
class AxisForm:
    """The canonical form (S1, S2) on one convolution axis.

    ``n`` is the length of the input that is padded and slid over (``in2`` when the inputs
    swap, S3), ``m`` the kernel length, ``effective`` the dilated length ``(m - 1) * dilation + 1``,
    ``pads`` the ``(lo, hi)`` padding (negative: cropping), ``out`` the output length
    ``(n + lo + hi - effective) // stride + 1``.
    """

    axis: int
    n: int
    m: int
    dilation: int
    effective: int
    pads: tuple[int, int]
    stride: int
    out: int


@dataclass(frozen=True)
class Equivalent:
    """One library's spelling of the call: ``code`` (a script reading ``in1``, ``in2`` and
    setting ``out``) or ``None``; ``reason`` says why there is none, ``note`` any caveat."""

    library: str
    code: str | None
    reason: str = ""
    note: str = ""

    @property
    def exists(self) -> bool:
        return self.code is not None


@dataclass(frozen=True)
class Explanation:
    """What one call computes (see :func:`explain`); ``str()`` gives the full text."""

    op: str
    call: str
    in1: Spec
    in2: Spec
    options: Options
    plan: Plan = field(repr=False)
    axes: tuple[AxisForm, ...]
    kernel: str
    swap: bool
    flip_conj_result: bool
    out_shape: tuple[int, ...]
    out_dtype: np.dtype
    acc_dtype: np.dtype
    backend: str
    backend_source: str
    method: str
    auto_method: str
    nan_safe: bool
    method_reason: str
    costs: dict[str, float]
    separable: str
    canonical_call: str | None
    equivalents: dict[str, Equivalent]
    notes: tuple[str, ...]

    def __str__(self) -> str:
        return _render(self)

    def code(self, library: str) -> str | None:
        """The equivalent code for ``library`` (a key of :data:`LIBRARIES`), or ``None``."""
        return self.equivalents[library].code


# ----------------------------------------------------------------------------- explain


def explain(
    in1: Any,
    in2: Any,
    mode: Any = "full",
    *,
    op: str = "convolve",
    method: str = "auto",
    axes: Any = None,
    boundary: str = "fill",
    fillvalue: complex = 0,
    align: str = "scipy",
    origin: Any = 0,
    stride: Any = 1,
    dilation: Any = 1,
    dtype: Any = None,
    precision: str = "highest",
    backend: Any = None,
) -> Explanation:
    """Explain one :func:`convkit.convolve` / :func:`convkit.correlate` call without running it.

    Parameters
    ----------
    in1, in2 : array_like or Spec
        The inputs, or ``convkit.explain.Spec(shape, dtype)`` for a shape and dtype alone.
    mode : {'full', 'valid', 'same', 'causal'} or sequence of (lo, hi)
        As for :func:`convkit.convolve`.
    op : {'convolve', 'correlate'}
        Which operation to explain.
    method, axes, boundary, fillvalue, align, origin, stride, dilation, dtype, precision, backend
        The keywords of :func:`convkit.convolve`, with the same meaning and validation.

    Returns
    -------
    Explanation
        A frozen dataclass: per-axis canonical form (``axes``), ``out_shape``, ``out_dtype``,
        ``backend``, ``method`` and ``costs``, and ``equivalents`` (library -> :class:`Equivalent`).
        ``str()`` of it is the human-readable explanation.

    Raises
    ------
    ConvkitValueError, ConvkitTypeError
        For exactly the calls that :func:`convkit.convolve` refuses, with the same messages.

    Examples
    --------
    >>> import convkit
    >>> e = convkit.explain(convkit.explain.Spec((7,)), convkit.explain.Spec((3,)), "same",
    ...                     op="correlate", align="tf", stride=2)
    >>> e.axes[0].pads, e.out_shape
    ((1, 1), (4,))
    >>> print(e.equivalents["lax"].code.splitlines()[-2].strip())
    y = lax.conv_general_dilated(x, w, window_strides=(2,), padding="SAME", rhs_dilation=(1,), \
precision=lax.Precision.HIGHEST)
    """
    if op not in ("convolve", "correlate"):
        raise ConvkitValueError(f"op={op!r} is not accepted; expected 'convolve' or 'correlate'")
    options = make_options(mode=mode, method=method, axes=axes, boundary=boundary, fillvalue=fillvalue,
                           align=align, origin=origin, stride=stride, dilation=dilation, dtype=dtype,
                           precision=precision)
    be, source, spec1, spec2, arrays = _resolve(in1, in2, backend)
    caps = be.capabilities
    plan = make_plan(op, spec1.shape, spec2.shape, spec1.dtype, spec2.dtype, options, caps)
    auto = plan if options.method == "auto" else make_plan(
        op, spec1.shape, spec2.shape, spec1.dtype, spec2.dtype, options.replace(method="auto"), caps)
    forms = tuple(
        AxisForm(a, plan.x_shape[a], plan.k_shape[a], plan.dilation[i], plan.effective_kernel[i],
                 plan.pads[i], plan.stride[i], plan.out_shape[a])
        for i, a in enumerate(plan.axes)
    )
    costs: dict[str, float] = {}
    if not plan.scalar:
        costs = method_costs(out_shape=plan.out_shape, x_shape=plan.x_shape, k_shape=plan.k_shape,
                             axes=plan.axes, pads=plan.pads, dilation=plan.dilation, caps=caps,
                             dtype=plan.acc_dtype, stride=plan.stride)
    call = _call_text(op, spec1, spec2, options, backend)
    return Explanation(
        op=op,
        call=call,
        in1=spec1,
        in2=spec2,
        options=options,
        plan=plan,
        axes=forms,
        kernel=("flip(in1)" if plan.swap else "flip(in2)") if op == "convolve" else
        ("conj(in1)" if plan.swap else "conj(in2)"),
        swap=plan.swap,
        flip_conj_result=plan.flip_conj_result,
        out_shape=plan.out_shape,
        out_dtype=plan.out_dtype,
        acc_dtype=plan.acc_dtype,
        backend=str(getattr(be, "name", be)),
        backend_source=source,
        method=plan.method,
        auto_method=auto.method,
        nan_safe=auto.nan_safe,
        method_reason=_method_reason(auto, options, caps, be),
        costs=costs,
        separable=_separable(auto, caps, arrays, be),
        canonical_call=_canonical_call(op, plan, options),
        equivalents=_equivalents(op, plan, spec1, spec2),
        notes=_notes(op, plan, options, spec1, spec2) + _backend_notes(be, plan),
    )


explain.Spec = Spec  # type: ignore[attr-defined]  # convkit.explain.Spec(shape, dtype)
explain.parse_spec = parse_spec  # type: ignore[attr-defined]
explain.conv = _explain_conv  # type: ignore[attr-defined]  # convkit.explain.conv(x, w, ...): the layer (S15)


def _resolve(in1, in2, backend):
    """(backend object, how it was chosen, Spec of in1, Spec of in2, (host in1, in2) or None)."""
    from .api import _shape_dtype

    if isinstance(in1, Spec) or isinstance(in2, Spec):
        be = dispatch.get_backend(backend)
        specs = []
        for name, x in (("in1", in1), ("in2", in2)):
            if isinstance(x, Spec):
                specs.append(x)
            else:
                _, shape, dt = _shape_dtype(name, x, True, be)
                specs.append(Spec(shape, dt))
        source = "the backend= argument" if backend is not None else _default_source()
        return be, source, specs[0], specs[1], None
    be, host = dispatch.resolve_backend(in1, in2, backend)
    a, shape1, dt1 = _shape_dtype("in1", in1, host, be)
    b, shape2, dt2 = _shape_dtype("in2", in2, host, be)
    if not host:
        source = "the inputs' array type: device data chooses its backend"
    elif backend is not None:
        source = "the backend= argument"
    else:
        source = _default_source()
    arrays = (a, b) if isinstance(a, np.ndarray) and isinstance(b, np.ndarray) else None
    return be, source, Spec(shape1, dt1), Spec(shape2, dt2), arrays


def _default_source() -> str:
    if dispatch._context.get() is not None:
        return "a convkit.use_backend(...) block"
    if dispatch._process_default is not None:
        return "convkit.set_backend(...)"
    if dispatch._env_backend() is not None:
        return f"the {dispatch.ENV_VAR} environment variable"
    return f"the default: no backend=, use_backend, set_backend or {dispatch.ENV_VAR}"


def _call_text(op: str, s1: Spec, s2: Spec, options: Options, backend) -> str:
    defaults = make_options()
    parts = [f"in1: {s1}", f"in2: {s2}", f"mode={options.mode!r}"]
    names = {"boundary": BOUNDARY_NAMES}
    for k in ("method", "axes", "boundary", "fillvalue", "align", "origin", "stride", "dilation", "dtype",
              "precision"):
        v = getattr(options, k)
        if v != getattr(defaults, k) or (k == "fillvalue" and options.fill_type is not int):
            if k == "align" and options.mode != "same":
                continue
            v = names.get(k, {}).get(v, v)
            parts.append(f"{k}={str(v) if k == 'dtype' else v!r}")
    if backend is not None:
        parts.append(f"backend={getattr(backend, 'name', backend)!r}")
    return f"convkit.{op}({', '.join(parts)})"


def _method_reason(auto: Plan, options: Options, caps, be=None) -> str:
    if auto.scalar:
        return "0-d inputs: one multiplication"
    taps = auto.taps
    work = math.prod(auto.out_shape) * taps
    if auto.acc_dtype.kind in "biu":
        why = f"{auto.acc_dtype} result: auto never uses an FFT, which could not be exact (S5, S8)"
    elif options.boundary == "constant" and not np.isfinite(options.fillvalue):
        why = "non-finite fillvalue: auto keeps direct (S8)"
    elif work <= caps.small_direct:
        why = (f"{work:,} multiply-adds <= small_direct={caps.small_direct:,} of this backend "
               "(call overhead dominates)")
    elif "fft" not in caps.methods:
        why = "this backend has no FFT method"
    else:
        why = f"cheapest estimate ({work:,} multiply-adds direct)"
        if auto.nan_safe:
            why += "; the FFT result is checked: NaN/Inf inputs or an overflow rerun it direct (S9)"
    return why + _engine_note(auto, caps, be)


def _engine_note(auto: Plan, caps, be=None) -> str:
    """Which host engine runs the chosen method (the NumPy backend's OpenCV filters or Numba
    loop), or ''. A backend says which engine runs a direct plan by ``direct_engine(plan)``."""
    note = getattr(be, "direct_note", lambda plan: "")(auto) if auto.method == "direct" else ""
    if note:  # the backend's direct path for this plan's dilation or stride
        return "; " + note
    if not caps.fused_engine or auto.scalar:
        return ""
    if auto.method == "direct" and auto.ndim == 1:
        if getattr(be, "direct_engine", lambda plan: None)(auto) == "numba":
            return ("; direct runs on numba's fused loop, pieces of the output on every core where they pay "
                    "(its kernel taps finite, else numpy.convolve)")
        return ""
    if auto.method == "direct" and len(auto.axes) == 3:
        if getattr(be, "direct_engine", lambda plan: None)(auto) == "numba":
            return ("; direct runs on numba's fused 3-D loop, planes of the output on every core where they "
                    "pay (its kernel taps finite, else the backend's own direct)")
        return ""
    geo = dict(x_shape=auto.x_shape, k_shape=auto.k_shape, axes=auto.axes, pads=auto.pads,
               dilation=auto.dilation, caps=caps, dtype=auto.acc_dtype)
    name = caps.fused_engine
    if auto.method == "direct" and math.isfinite(fused_direct_cost(**geo, stride=auto.stride)):
        name = getattr(be, "direct_engine", lambda plan: name)(auto) or name
        if name == "numba":
            return ("; direct runs on numba's fused 2-D loop, bands of rows on every core (its kernel taps "
                    "finite, else the backend's own direct)")
        return (f"; direct runs on {name}'s fused 2-D filter (its kernel taps finite and non-zero, "
                "else the backend's own direct)")
    if auto.method == "oa" and math.isfinite(fused_dft_cost(**geo)):
        return (f"; overlap-add runs as {name}'s DFT in tiles (overlap-save, tiles the cost model picks) "
                "where the cost model puts it first")
    if auto.method == "fft" and auto.out_dtype.kind == "f" and fused_fft_applies(**geo):
        most = caps.fused_fft_points
        return f"; the FFT runs on {name}'s DFT (one real image, transforms of at most {most:,} points)"
    return ""


def _separable(auto: Plan, caps, arrays, be=None) -> str:
    """A line about the data-dependent separable path (S8 step 2), or ''; with the engine that
    runs the passes where the backend names one (``method_label``: ``separable[opencv]``)."""
    if auto.scalar or len(auto.axes) < 2 or auto.acc_dtype.kind != "f" or caps.c_sep is None:
        return ""
    if auto.boundary == "constant" and auto.fillvalue != 0:
        return ""
    if any(auto.k_shape[a] != 1 for a in range(auto.ndim) if a not in auto.axes):
        return ""
    sep = separable_cost(out_shape=auto.out_shape, x_shape=auto.x_shape, k_shape=auto.k_shape,
                         axes=auto.axes, caps=caps, dtype=auto.acc_dtype)
    costs = method_costs(out_shape=auto.out_shape, x_shape=auto.x_shape, k_shape=auto.k_shape,
                         axes=auto.axes, pads=auto.pads, dilation=auto.dilation, caps=caps,
                         dtype=auto.acc_dtype, stride=auto.stride)
    if not math.isfinite(sep) or sep >= costs[auto.method]:
        return ""
    line = f"separable (one 1-D pass per axis) {sep:.2g} s: used instead when the kernel is rank 1"
    if arrays is not None:
        try:
            from .backends._base import separable_factors

            k = arrays[0] if auto.swap else arrays[1]
            k = np.asarray(k)
            ok = bool(np.all(np.isfinite(k))) and separable_factors(
                k.astype(np.float64) if k.dtype.kind == "f" else k, auto.axes, auto.acc_dtype) is not None
            line += f" (this kernel is{_separable_engine(be, auto, k)})" if ok else " (this kernel is not)"
        except Exception:  # the backends package is optional here: the line stays generic
            pass
    else:
        line += " (decided from its values at run time)"
    return line


#: how the separable line names a backend's engine for the passes
_SEPARABLE_ENGINES = {"opencv": "OpenCV's sepFilter2D", "numba": "numba's separable loop"}


def _separable_engine(be, auto: Plan, kernel) -> str:
    """``"; its passes run on ..."`` where ``be.method_label`` names the separable path's engine, else ''."""
    try:
        label = be.method_label(auto, kernel) if hasattr(be, "method_label") else ""
    except Exception:  # a third-party backend's label must not break explain
        return ""
    if not (label.startswith("separable[") and label.endswith("]")):
        return ""
    engine = label[len("separable["):-1]
    return f"; its passes run on {_SEPARABLE_ENGINES.get(engine, engine)}"


def _canonical_call(op: str, plan: Plan, options: Options) -> str | None:
    """The same call with the mode spelled as explicit pads (S2), when that is the same call."""
    if plan.scalar or plan.swap:
        return None
    kw = [f"{[tuple(p) for p in plan.pads]!r}"]
    kw += [f"{k}={getattr(options, k)!r}" for k in ("axes",) if getattr(options, k) is not None]
    if options.boundary != "constant":
        kw.append(f"boundary={BOUNDARY_NAMES[options.boundary]!r}")
    if options.fillvalue != 0 or options.fill_type is not int:
        kw.append(f"fillvalue={options.fillvalue!r}")
    if any(s != 1 for s in plan.stride):
        kw.append(f"stride={plan.stride!r}")
    if any(d != 1 for d in plan.dilation):
        kw.append(f"dilation={plan.dilation!r}")
    if options.dtype is not None:
        kw.append(f"dtype={str(options.dtype)!r}")
    return f"convkit.{op}(in1, in2, {', '.join(kw)})"


def _backend_notes(be, plan: Plan) -> tuple[str, ...]:
    """What the backend itself says about where this plan runs (``host_handoff(plan)``: the JAX
    backend's CPU handoff to the NumPy backend's engines), or nothing."""
    handoff = getattr(be, "host_handoff", None)
    if plan.scalar or not callable(handoff):
        return ()
    note = handoff(plan)
    return (note,) if note else ()


def _notes(op: str, plan: Plan, options: Options, s1: Spec, s2: Spec) -> tuple[str, ...]:
    """Why this call's 'same' / flip / conj may differ from another library's."""
    notes = []
    if plan.scalar:
        return ()
    if options.mode == "same":
        other = "tf" if options.align == "scipy" else "scipy"
        alt = make_plan(plan.op, s1.shape, s2.shape, s1.dtype, s2.dtype, options.replace(align=other),
                        dispatch.get_backend("numpy").capabilities)
        if alt.pads != plan.pads:
            diff = ", ".join(f"axis {a}: {q} instead of {p}"
                             for a, p, q in zip(plan.axes, plan.pads, alt.pads) if p != q)
            if options.align == "scipy":
                notes.append(
                    "'same' is centred as scipy.signal's (align='scipy': pads (Me//2, (Me-1)//2) whatever "
                    "the stride). torch/Keras/lax 'same' (align='tf') would pad " + diff + ": their extra "
                    "pad goes last for an even kernel, and with stride their pads depend on N.")
            else:
                notes.append(
                    "'same' is centred as TF/Keras/lax/torch's (align='tf': the extra pad goes last, and "
                    "with stride the pads depend on the input length). scipy.signal's 'same' "
                    "(align='scipy') would pad " + diff + ".")
        if s1.shape and len(s1.shape) == 1 and s2.shape and s2.shape[0] > s1.shape[0]:
            notes.append("numpy.convolve's 'same' would have length max(N, M) here (numpy#6316); convkit's "
                         "keeps the length of in1, as SciPy's.")
    if op == "convolve":
        notes.append("convolve flips the kernel (as scipy/numpy); torch/Keras/lax 'conv' layers do not "
                     "(they are correlations), so their equivalents pass the flipped kernel.")
    elif np.result_type(s1.dtype, s2.dtype).kind == "c":
        notes.append("correlate conjugates the kernel (as scipy/numpy); torch/lax do not, so their "
                     "equivalents pass its conjugate.")
    if plan.swap:
        notes.append("'valid' with in2 larger on every axis swaps the inputs (S3, as SciPy): in2 slides "
                     "over in1" + (", and the result is flip(conj(.)) of that correlation."
                                   if plan.flip_conj_result else "."))
    return tuple(notes)


# ----------------------------------------------------------------------------- text


def _fmt_cost(v: float) -> str:
    return f"{v:.2g} s"


def _render(e: Explanation) -> str:
    lines = [e.call, ""]
    if e.plan.scalar:
        lines.append("canonical form (S1): 0-d inputs, out = in1 * " + ("in2" if e.op == "convolve" else
                                                                       "conj(in2)"))
    else:
        x = "in2" if e.swap else "in1"
        b = BOUNDARY_NAMES[e.options.boundary]
        bnd = f"boundary={b!r}" + (f", fillvalue={e.options.fillvalue!r}" if b == "fill" else "")
        lines.append(f"canonical form (S1): out = VALIDCORR(pad({x}, pads, {bnd}), dilate({e.kernel}, "
                     "dilation))[::stride]" + ("  then flip(conj(.))" if e.flip_conj_result else ""))
        lines.append("  kernel: " + ("flipped (convolve)" if e.op == "convolve" else
                                     "conjugated, not flipped (correlate)")
                     + ("; inputs swapped (S3: 'valid' with in2 larger)" if e.swap else "; no swap (S3)"))
        rows = [("axis", "N", "M", "dilation", "Me", "pads (lo, hi)", "stride", "out")]
        for f in e.axes:
            rows.append((str(f.axis), str(f.n), str(f.m), str(f.dilation), str(f.effective),
                         f"({f.pads[0]}, {f.pads[1]})", str(f.stride), str(f.out)))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for r in rows:
            lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        lines.append("  N: length of the input that is padded, M: kernel length, "
                     "Me = (M - 1) * dilation + 1, out = (N + lo + hi - Me) // stride + 1")
    lines.append(f"output: shape {e.out_shape}, dtype {e.out_dtype}"
                 + (f" (accumulates in {e.acc_dtype})" if e.acc_dtype != e.out_dtype else ""))
    lines.append(f"backend: {e.backend} ({e.backend_source}; S12)")
    if e.method == e.auto_method or e.options.method == "auto":
        lines.append(f"method: auto -> {e.auto_method}: {e.method_reason}")
    else:
        lines.append(f"method: {e.options.method} as requested" + (f" (runs as {e.method})"
                     if e.method != e.options.method else "")
                     + f"; auto would pick {e.auto_method}: {e.method_reason}")
    if e.costs:
        lines.append("  estimated run time: " + ", ".join(
            f"{m} {_fmt_cost(c)}" + (" (picked)" if m == e.method else "") for m, c in e.costs.items()))
    if e.separable:
        lines.append("  " + e.separable)
    if e.canonical_call:
        lines.append(f"same call, pads spelled out: {e.canonical_call}")
    for n in e.notes:
        lines.append(f"note: {n}")
    lines.append("")
    lines.append("equivalents (each reads in1, in2 and sets out):")
    for key, eq in e.equivalents.items():
        if eq.code is None:
            lines.append(f"  {key}: none: {eq.reason}")
            continue
        lines.append(f"  {key}:" + (f"  ({eq.note})" if eq.note else ""))
        lines.extend("      " + ln for ln in eq.code.splitlines())
    return "\n".join(lines)


# ----------------------------------------------------------------------------- equivalents


@dataclass(frozen=True)
class _Geo:
    """The call as the equivalents see it: per array axis (all axes are convolution axes)."""

    op: str
    x: str  # "in1" or "in2": the input that is padded and slid over
    k: str
    post: bool  # flip(conj(.)) of the result (correlate with swapped inputs)
    n: tuple[int, ...]
    m: tuple[int, ...]
    me: tuple[int, ...]
    d: tuple[int, ...]
    s: tuple[int, ...]
    pads: tuple[tuple[int, int], ...]
    out: tuple[int, ...]
    boundary: str  # numpy.pad mode, or "zeros" (constant 0, or nothing is padded)
    fill: Any
    dx: np.dtype  # dtype of x
    dk: np.dtype
    out_dtype: np.dtype
    acc_dtype: np.dtype
    cplx: bool

    @property
    def ndim(self) -> int:
        return len(self.n)


def _geo(op: str, plan: Plan, s1: Spec, s2: Spec) -> _Geo:
    order = [plan.axes.index(a) for a in range(plan.ndim)]
    boundary = plan.boundary
    padded = any(p > 0 for lo_hi in plan.pads for p in lo_hi)
    if not padded or (boundary == "constant" and plan.fillvalue == 0):
        boundary = "zeros"
    x, k = ("in2", "in1") if plan.swap else ("in1", "in2")
    dx, dk = (s2.dtype, s1.dtype) if plan.swap else (s1.dtype, s2.dtype)
    return _Geo(
        op=op, x=x, k=k, post=plan.flip_conj_result,
        n=tuple(plan.x_shape), m=tuple(plan.k_shape),
        me=tuple(plan.effective_kernel[i] for i in order), d=tuple(plan.dilation[i] for i in order),
        s=tuple(plan.stride[i] for i in order), pads=tuple(plan.pads[i] for i in order),
        out=tuple(plan.out_shape), boundary=boundary, fill=plan.fillvalue, dx=dx, dk=dk,
        out_dtype=plan.out_dtype, acc_dtype=plan.acc_dtype, cplx=plan.acc_dtype.kind == "c",
    )


def _equivalents(op: str, plan: Plan, s1: Spec, s2: Spec) -> dict[str, Equivalent]:
    if plan.scalar:
        fn = "np.multiply(in1, in2)" if op == "convolve" else "np.multiply(in1, np.conj(in2))"
        why = "0-d inputs: the result is a product"
        eqs = {key: Equivalent(key, None, why) for key in LIBRARIES}
        code = f"import numpy as np\nimport scipy.signal\nout = np.asarray(scipy.signal.{op}(in1, in2))"
        eqs["scipy.signal"] = Equivalent("scipy.signal", code, note=f"a NumPy scalar; the same as {fn}")
        return eqs
    if len(plan.axes) != plan.ndim:
        why = (f"axes={plan.axes} leaves batch axes: these equivalents cover calls that convolve over every "
               "axis (a loop over the batch axes, or each library's channel/batch layout, gives the rest)")
        return {key: Equivalent(key, None, why) for key in LIBRARIES}
    g = _geo(op, plan, s1, s2)
    builders = {"scipy.signal": _scipy_signal, "scipy.ndimage": _ndimage, "numpy.convolve": _numpy,
                "torch": _torch, "keras": _keras, "lax": _lax}
    out = {}
    for key, build in builders.items():
        res = build(g)
        out[key] = res if isinstance(res, Equivalent) else Equivalent(key, res[0], note=res[1])
    return out


def _none(key: str, reason: str) -> Equivalent:
    return Equivalent(key, None, reason)


def _slice_text(items: Sequence[tuple[int | None, int | None, int | None]]) -> str:
    """``[a:b:c, ...]`` (``""`` when every axis is whole)."""
    parts = []
    for start, stop, step in items:
        t = ("" if not start else str(start)) + ":" + ("" if stop is None else str(stop))
        if step not in (None, 1):
            t += f":{step}"
        parts.append(t)
    if all(p == ":" for p in parts):
        return ""
    while parts and parts[-1] == ":" and len(parts) > 1:
        parts.pop()
    return "[" + ", ".join(parts) + "]"


def _casts(g: _Geo) -> tuple[str, str]:
    """``in1``, ``in2`` as scipy.signal / numpy take them: cast only when ``dtype=`` changes the
    result dtype from ``numpy.result_type(in1, in2)``, or to float32 for a float16 result (which
    accumulates in float32, S4; scipy.signal has no float16)."""
    want = g.acc_dtype
    if np.result_type(g.dx, g.dk) == want:
        return "in1", "in2"
    return tuple(f'np.asarray({n}, dtype="{want}")' for n in ("in1", "in2"))  # type: ignore[return-value]


def _nd_cast(name: str, have: np.dtype) -> str:
    """scipy.ndimage has no float16 kernels: such inputs go in as float32."""
    return f'np.asarray({name}, dtype="float32")' if have == np.float16 else name


def _post(g: _Geo, expr: str) -> str:
    return f"np.flip(np.conj({expr}))" if g.post else expr


def _full_slice(g: _Geo, lengths: Sequence[int] | None = None):
    """Per axis ``(start, stop, step)`` that cut this call's output out of the stride-1 'full'
    output (pads ``Me - 1`` each side), or ``None`` when the pads reach beyond it."""
    items = []
    for n, me, s, (lo, _hi), L in zip(g.n, g.me, g.s, g.pads, g.out):
        full = n + me - 1
        start = me - 1 - lo
        stop = start + (L - 1) * s + 1
        if start < 0 or stop > full:
            return None
        count = -(-(full - start) // s)
        items.append((start, None if count == L else stop, s))
    return items


# -- scipy.signal


def _scipy_signal(g: _Geo):
    key = "scipy.signal"
    if any(d != 1 for d in g.d):
        return _none(key, "scipy.signal has no dilation (a zero-stuffed kernel gives the same finite values "
                          "but multiplies the gaps, S1, S9, and costs dilation times more)")
    if g.acc_dtype.kind == "b":
        return _none(key, "bool data")
    fn_nd = g.op
    zero = g.boundary == "zeros"
    if not zero:
        two_d = {"constant": "fill", "symmetric": "symm", "wrap": "wrap"}
        if g.boundary not in two_d:
            lib = {"reflect": "mirror", "edge": "nearest"}[g.boundary]
            return _none(key, f"scipy.signal has no {lib!r} boundary (convolve2d/correlate2d: fill, wrap, "
                              "symm); scipy.ndimage has it")
        if g.ndim > 2:
            return _none(key, "scipy.signal pads with zeros except in convolve2d/correlate2d, which are 2-D "
                              "only")
    a, b = _casts(g)
    lines = ["import numpy as np", "import scipy.signal"] if "np." in a + b else ["import scipy.signal"]
    if zero:
        native = {"full": [(me - 1, me - 1) for me in g.me], "valid": [(0, 0)] * g.ndim,
                  "same": [(me // 2, (me - 1) // 2) for me in g.me]}
        return _native_or_full(g, lines, f"scipy.signal.{fn_nd}({a}, {b}, mode=\"{{mode}}\")", native, key)
    # 2-D with a boundary: convolve2d / correlate2d (1-D inputs as one row)
    fn = "convolve2d" if g.op == "convolve" else "correlate2d"
    one_d = g.ndim == 1
    if one_d:
        a, b = f"{a}[None]", f"{b}[None]"
    bkw = {"constant": "fill", "symmetric": "symm", "wrap": "wrap"}[g.boundary]
    extra = f', boundary="{bkw}"' + (f", fillvalue={g.fill!r}" if bkw == "fill" else "")
    if g.op == "convolve":
        same = [(me // 2, (me - 1) // 2) for me in g.me]
    else:  # correlate2d centres 'same' as align='tf' for even kernels (scipy#1968)
        same = [((me - 1) // 2, me // 2) for me in g.me]
    native = {"full": [(me - 1, me - 1) for me in g.me], "same": same}
    note = "1-D as one row of convolve2d" if one_d else ""
    text = f"scipy.signal.{fn}({a}, {b}, mode=\"{{mode}}\"{extra})"
    res = _native_or_full(g, lines, text, native, key, row=one_d)
    if isinstance(res, tuple) and note:
        res = (res[0], note + ("; " + res[1] if res[1] else ""))
    return res


def _dt_of(g: _Geo, name: str) -> np.dtype:
    return g.dx if name == g.x else g.dk


def _native_or_full(g: _Geo, lines, template: str, native: dict, key: str, row: bool = False):
    """``out = f(..., mode)`` when a native mode has this call's pads and stride 1, else a slice
    of ``mode='full'`` (stride by slicing)."""
    pads = list(g.pads)
    prefix = "[0]" if row else ""
    for mode, p in native.items():
        if p == pads and all(s == 1 for s in g.s):
            return ("\n".join(lines + [f"out = {template.format(mode=mode)}{prefix}{_astype(g)}"]), "")
    items = _full_slice(g)
    if items is None:
        return _none(key, "the pads reach beyond the kernel (more than Me - 1 on an axis): no mode of "
                          f"{key} pads that far")
    sl = _slice_text(items)
    if row:  # a 1-D call run as the one row of a 2-D one
        sl = "[0" + (", " + sl[1:-1] if sl else "") + "]"
    why = _why_sliced(g, native)
    return ("\n".join(lines + [f"out = {template.format(mode='full')}{sl}{_astype(g)}"]), why)


def _astype(g: _Geo) -> str:
    return f'.astype("{g.out_dtype}")' if g.acc_dtype != g.out_dtype else ""


def _why_sliced(g: _Geo, native: dict) -> str:
    if any(s != 1 for s in g.s):
        return "no stride argument: every stride-th sample of 'full'"
    return "no mode with these pads: cut from 'full'"


# -- scipy.ndimage


def _ndimage(g: _Geo):
    key = "scipy.ndimage"
    if any(d != 1 for d in g.d):
        return _none(key, "scipy.ndimage has no dilation")
    if g.acc_dtype.kind == "b":
        return _none(key, "bool data")
    mode = {"zeros": "constant", "constant": "constant", "symmetric": "reflect", "reflect": "mirror",
            "edge": "nearest", "wrap": "wrap"}[g.boundary]
    origins, items = [], []
    for n, m, s, (lo, _hi), L in zip(g.n, g.m, g.s, g.pads, g.out):
        lo2 = min(max(lo, 0), m - 1)  # ndimage's window starts lo2 before each output (0 <= lo2 < M)
        off = lo2 - lo  # this call's output j is ndimage's output off + j * s
        if off < 0 or off + (L - 1) * s > n - 1:
            return _none(key, "scipy.ndimage only gives outputs of the input's size (one per input "
                              f"sample); this call has {L} outputs on an axis of {n}"
                              + (" with its windows outside those" if L <= n else ""))
        origins.append(lo2 - m // 2 if g.op == "correlate" else (m - 1) // 2 - lo2)
        count = -(-(n - off) // s)
        items.append((off, None if count == L else off + (L - 1) * s + 1, s))
    fn = g.op
    xa = _nd_cast(g.x, _dt_of(g, g.x))
    ka = _nd_cast(g.k, _dt_of(g, g.k))
    kw = f'mode="{mode}"'
    if mode == "constant" and g.boundary != "zeros":
        kw += f", cval={g.fill!r}"
    if any(origins):
        kw += f", origin={tuple(origins) if len(origins) > 1 else origins[0]!r}"
    kw += f', output=np.dtype("{g.acc_dtype}")'
    expr = f"scipy.ndimage.{fn}({xa}, {ka}, {kw}){_slice_text(items)}"
    expr = _post(g, expr)
    if g.acc_dtype != g.out_dtype:
        expr += f'.astype("{g.out_dtype}")'
    note = []
    if any(items[i][0] or items[i][2] != 1 or items[i][1] is not None for i in range(len(items))):
        note.append("same-size output, then sliced")
    if g.acc_dtype.kind in "fc":
        note.append("accumulates in float64")
    return ("import numpy as np\nimport scipy.ndimage\nout = " + expr, "; ".join(note))


# -- numpy


def _numpy(g: _Geo):
    key = "numpy.convolve"
    if g.ndim != 1:
        return _none(key, f"numpy.convolve is 1-D only (this call has {g.ndim} convolution axes)")
    if any(d != 1 for d in g.d):
        return _none(key, "numpy.convolve has no dilation")
    if g.boundary != "zeros":
        return _none(key, "numpy.convolve pads with zeros only")
    fn = "np.convolve" if g.op == "convolve" else "np.correlate"
    a, b = _casts(g)
    n, me = g.n[0], g.me[0]
    native = {"full": [(me - 1, me - 1)], "valid": [(0, 0)]}
    if g.x == "in1" and n >= g.m[0]:
        native["same"] = [(me // 2, (me - 1) // 2)]
    res = _native_or_full(g, ["import numpy as np"], f"{fn}({a}, {b}, mode=\"{{mode}}\")", native, key)
    if isinstance(res, tuple) and g.pads[0] == (me // 2, (me - 1) // 2) and "same" not in native:
        res = (res[0], "'same' of numpy has length max(N, M) (numpy#6316): cut from 'full'")
    return res


# -- deep-learning layers: shared pieces

_NCX = "(batch, channels, *spatial)"
_OIK = "(out, in, *kernel)"
_NXC = "(batch, *spatial, channels)"


def _dl_dtype(g: _Geo, ints: str) -> str | None:
    """The dtype the layer computes in: the accumulation dtype, ``ints`` for integer results."""
    if g.acc_dtype.kind == "b":
        return None
    if g.acc_dtype.kind in "iu":
        return ints
    return str(g.acc_dtype)


def _crop(g: _Geo, lead: int = 0, trail: int = 0) -> tuple[str, list[tuple[int, int]]]:
    """The slice that removes negative pads, and the remaining (non-negative) pads.

    The slice (``lead`` whole axes before the spatial ones, ``trail`` after) is the same before
    and after the padding: a negative pad never has padding on its side. With a boundary rule
    it must come after (S2: the boundary extends the whole of in1, then the negative pad crops)."""
    items, rest = [], []
    for lo, hi in g.pads:
        items.append((max(-lo, 0), hi if hi < 0 else None, 1))
        rest.append((max(lo, 0), max(hi, 0)))
    text = _slice_text(items)
    if text and (lead or trail):
        text = "[" + ", ".join([":"] * lead + [text[1:-1]] + [":"] * trail) + "]"
    return text, rest


def _kernel_expr(g: _Geo) -> str:
    if g.op == "convolve":
        return f"np.flip({g.k})"
    return f"np.conj({g.k})" if g.cplx else g.k


def _tf_same(n: int, me: int, s: int) -> tuple[int, int]:
    t = max((-(-n // s) - 1) * s + me - n, 0)
    return t // 2, t - t // 2


def _finish(g: _Geo, expr: str, cd: str) -> str:
    expr = _post(g, expr)
    if np.dtype(cd) != g.out_dtype:
        if g.out_dtype.kind in "iu" and np.dtype(cd).kind == "f":
            expr = f"np.rint({expr})"
        expr += f'.astype("{g.out_dtype}")'
    return expr


# -- torch


def _torch(g: _Geo):
    key = "torch"
    if not 1 <= g.ndim <= 3:
        return _none(key, f"torch.nn.functional has conv1d/conv2d/conv3d only (this call has {g.ndim} axes)")
    cd = _dl_dtype(g, "int64")
    if cd is None:
        return _none(key, "bool data")
    tmode = {"zeros": "constant", "constant": "constant", "reflect": "reflect", "edge": "replicate",
             "wrap": "circular"}.get(g.boundary)
    if tmode is None:
        return _none(key, "torch has no symmetric (half-sample) padding: F.pad modes are constant, reflect "
                          "(= boundary='mirror'), replicate ('nearest') and circular ('wrap')")
    if g.boundary == "constant" and isinstance(g.fill, complex) and g.fill.imag != 0:
        return _none(key, "F.pad takes a real fill value only")
    zeros = g.boundary == "zeros"
    crop, pads = _crop(g) if zeros else _crop(g, lead=2)
    for n, (lo, hi) in zip(g.n, pads):
        if tmode == "reflect" and max(lo, hi) >= n:
            return _none(key, f"F.pad(mode='reflect') needs pads shorter than the input "
                              f"({max(lo, hi)} >= {n})")
        if tmode == "circular" and max(lo, hi) > n:
            return _none(key, f"F.pad(mode='circular') wraps at most once (pad {max(lo, hi)} > {n})")
    nd = g.ndim
    pre = crop if zeros else ""
    lines = ["import numpy as np", "import torch", "import torch.nn.functional as F",
             f'x = torch.from_numpy(np.array({g.x}, dtype="{cd}"){pre}[None, None])  # {_NCX}',
             f'w = torch.from_numpy(np.array({_kernel_expr(g)}, dtype="{cd}")[None, None])  # {_OIK}']
    padding = None
    same = [(d * (m - 1) // 2, d * (m - 1) - d * (m - 1) // 2) for m, d in zip(g.m, g.d)]
    note = ""
    if tmode == "constant" and g.boundary == "zeros":
        if all(p == (0, 0) for p in pads):
            padding = '"valid"'
        elif pads == same and all(s == 1 for s in g.s):
            padding = '"same"'
        elif all(lo == hi for lo, hi in pads):
            padding = repr(tuple(lo for lo, _ in pads))
        elif list(pads) == [_tf_same(n, me, s) for n, me, s in zip(g.n, g.me, g.s)]:
            note = "padding='same' is refused with stride > 1: its pads spelled out with F.pad"
    if padding is None:
        flat = [p for lo_hi in reversed(pads) for p in lo_hi]  # F.pad: last axis first
        kw = f', value={g.fill!r}' if g.boundary == "constant" else ""
        lines.append(f'x = F.pad(x, {tuple(flat)!r}, mode="{tmode}"{kw})')
        if crop and not zeros:
            lines.append(f"x = x{crop}  # negative pads crop after the boundary rule")
        padding = '"valid"'
        if not note and g.boundary == "zeros" and any(lo != hi for lo, hi in pads):
            note = "asymmetric pads: F.pad, then padding='valid'"
    lines.append(f"y = F.conv{nd}d(x, w, stride={g.s!r}, padding={padding}, dilation={g.d!r})")
    lines.append(f"out = {_finish(g, 'y.numpy()[0, 0]', cd)}")
    return "\n".join(lines), note


# -- keras


def _keras(g: _Geo):
    key = "keras"
    if not 1 <= g.ndim <= 3:
        return _none(key, f"Keras has Conv1D/Conv2D/Conv3D only (this call has {g.ndim} axes)")
    if g.cplx:
        return _none(key, "Keras layers do not take complex dtypes")
    if any(s > 1 for s in g.s) and any(d > 1 for d in g.d):
        return _none(key, "Keras refuses strides > 1 together with dilation_rate > 1")
    cd = _dl_dtype(g, "float64")
    if cd is None:
        return _none(key, "bool data")
    nd = g.ndim
    zeros = g.boundary == "zeros"
    crop, pads = _crop(g) if zeros else _crop(g, lead=1, trail=1)
    lines = ["import numpy as np",
             "import keras  # KERAS_BACKEND=jax (any backend); float64 on JAX needs JAX_ENABLE_X64=1",
             f'x = np.array({g.x}, dtype="{cd}"){crop if zeros else ""}[None, ..., None]  # {_NXC}',
             f'w = np.array({_kernel_expr(g)}, dtype="{cd}")[..., None, None]  # (*kernel, in, filters)']
    padding, note = None, ""
    tf = [_tf_same(n, me, s) for n, me, s in zip(g.n, g.me, g.s)]
    if g.boundary == "zeros":
        if all(p == (0, 0) for p in pads):
            padding = "valid"
        elif list(pads) == tf:
            padding = "same"
        elif nd == 1 and pads[0] == (g.me[0] - 1, 0):
            padding = "causal"
        if padding is None:
            spelled = pads[0] if nd == 1 else tuple(pads)
            lines.append(f'x = keras.layers.ZeroPadding{nd}D({spelled!r}, dtype="{cd}")(x)')
            padding = "valid"
            sc = [(me // 2, (me - 1) // 2) for me in g.me]
            if list(pads) == sc and sc != tf:
                note = "padding='same' would put the extra pad last (align='tf'): SciPy's centring is " \
                       "spelled with ZeroPadding"
    else:
        widths = [(0, 0)] + list(pads) + [(0, 0)]
        kmode = {"constant": "constant", "symmetric": "symmetric", "reflect": "reflect", "edge": "edge",
                 "wrap": "wrap"}[g.boundary]
        kw = f", constant_values={g.fill!r}" if kmode == "constant" else ""
        lines.append(f'x = keras.ops.pad(x, {widths!r}, mode="{kmode}"{kw})')
        if crop:
            lines.append(f"x = x{crop}  # negative pads crop after the boundary rule")
        padding = "valid"
        note = "Keras layers pad with zeros only: keras.ops.pad first"
    if g.acc_dtype.kind in "iu":
        note = ((note + "; " if note else "")
                + "Keras layers compute in floating point: exact while |out| < 2**53")
    lines.append(f'layer = keras.layers.Conv{nd}D(1, w.shape[:-2], strides={g.s!r}, padding="{padding}", '
                 f'dilation_rate={g.d!r}, use_bias=False, dtype="{cd}")')
    lines.append("layer.build(x.shape)")
    lines.append("layer.set_weights([w])")
    lines.append(f"out = {_finish(g, 'keras.ops.convert_to_numpy(layer(x))[0, ..., 0]', cd)}")
    return "\n".join(lines), note


# -- lax


def _lax(g: _Geo):
    key = "lax"
    cd = _dl_dtype(g, "int64")
    if cd is None:
        return _none(key, "bool data")
    x64 = np.dtype(cd).itemsize // (2 if np.dtype(cd).kind == "c" else 1) >= 8
    tf = [_tf_same(n, me, s) for n, me, s in zip(g.n, g.me, g.s)]
    lower = [(t[1], t[0]) for t in tf]
    body = []
    if g.boundary == "zeros":
        crop = ""
        if all(p == (0, 0) for p in g.pads):
            padding = '"VALID"'
        elif list(g.pads) == tf:
            padding = '"SAME"'
        elif list(g.pads) == lower:
            padding = '"SAME_LOWER"'
        else:
            padding = repr([tuple(p) for p in g.pads])
    else:
        crop, pads = _crop(g, lead=2)
        padding = '"VALID"'
    body.append(f'x = jnp.asarray(np.array({g.x}, dtype="{cd}")[None, None])  # {_NCX}')
    body.append(f'w = jnp.asarray(np.array({_kernel_expr(g)}, dtype="{cd}")[None, None])  # {_OIK}')
    if g.boundary != "zeros":
        widths = [(0, 0), (0, 0)] + list(pads)
        kw = f", constant_values={g.fill!r}" if g.boundary == "constant" else ""
        body.append(f'x = jnp.pad(x, {widths!r}, mode="{g.boundary}"{kw})')
        if crop:
            body.append(f"x = x{crop}  # negative pads crop after the boundary rule")
    prec = ", precision=lax.Precision.HIGHEST" if g.acc_dtype.kind in "fc" else ""
    body.append(f"y = lax.conv_general_dilated(x, w, window_strides={g.s!r}, padding={padding}, "
                f"rhs_dilation={g.d!r}{prec})")
    body.append(f"out = {_finish(g, 'np.asarray(y)[0, 0]', cd)}")
    lines = ["import numpy as np", "import jax", "import jax.numpy as jnp", "from jax import lax"]
    contexts = ['jax.enable_x64(True)'] if x64 else []
    notes = ["64-bit dtypes"] if x64 else []
    if np.dtype(cd).kind in "iu":  # cuDNN has no integer convolution: GPUs refuse it
        contexts.append('jax.default_device(jax.devices("cpu")[0])')
        notes.append("integer convolutions run on the CPU")
    if contexts:
        lines.append(f"with {', '.join(contexts)}:  # {'; '.join(notes)}")
        lines.extend("    " + b for b in body)
    else:
        lines.extend(body)
    note = "lax pads with zeros only: jnp.pad first" if g.boundary != "zeros" else ""
    return "\n".join(lines), note
