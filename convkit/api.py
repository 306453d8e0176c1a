"""The public operations: :func:`convolve` and :func:`correlate`.

Each call: normalise arguments -> pick the backend (S12) -> build the plan (S2-S10,
cached) -> the backend executes it -> the result comes back in the caller's array type
(S11).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, Union

import numpy as np

from . import dispatch
from .errors import ConvkitTypeError
from .options import Options, make_options
from .plan import NUMERIC_KINDS, Plan, make_plan

__all__ = ["convolve", "correlate"]

PerAxis = Union[int, Sequence[int]]  # noqa: UP007 (a runtime alias, Python 3.10)
Mode = Union[str, Sequence[Sequence[int]]]  # noqa: UP007


def _as_host_array(name: str, x: Any) -> np.ndarray:
    """Host data as a NumPy array any backend can read: lists and scalars converted, and
    non-native byte order or unaligned memory copied once to native, aligned memory (FITS
    files are big-endian; JAX and the compiled kernels read native order only)."""
    if not isinstance(x, np.ndarray):
        try:
            x = np.asarray(x)
        except Exception as exc:  # e.g. a torch tensor that requires grad, or on a GPU
            hint = ""
            if getattr(x, "requires_grad", False):
                hint = "; call .detach() on it first, or install the torch backend, which differentiates"
            raise ConvkitTypeError(
                f"{name} ({type(x).__module__}.{type(x).__name__}) cannot be converted to a NumPy array "
                f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}){hint}"
            ) from None
    if x.dtype.kind in NUMERIC_KINDS and (not x.dtype.isnative or not x.flags.aligned):
        x = x.astype(x.dtype.newbyteorder("="), order="K")  # a copy: native and aligned
    return x


def _numpy_dtype(x: Any) -> np.dtype:
    return np.dtype(x.dtype)


def _shape_dtype(name: str, x: Any, host: bool, be: Any) -> tuple[Any, tuple[int, ...], np.dtype]:
    if type(x) is np.ndarray and x.dtype.isnative and x.flags.aligned:  # the common call: nothing to convert
        return x, x.shape, x.dtype  # a NumPy shape is a tuple of Python ints
    # host data (lists, scalars) next to a device array is converted like host data (S11)
    if host or isinstance(x, np.ndarray) or not (hasattr(x, "shape") and hasattr(x, "dtype")):
        x = _as_host_array(name, x)
        dtype_of = _numpy_dtype
    else:  # the backend's own array: the backend says which NumPy dtype stands for its dtype
        dtype_of = getattr(be, "dtype_of", _numpy_dtype)
    try:
        dt = dtype_of(x)
    except TypeError as exc:
        why = f": {exc}" if isinstance(exc, ConvkitTypeError) else "; expected a numeric dtype"
        raise ConvkitTypeError(f"{name} has dtype {x.dtype}{why}") from None
    return x, tuple(int(s) for s in x.shape), dt


def _run(op: str, in1, in2, options: Options, backend):
    if "dask.array" in sys.modules:  # Dask inputs -> a lazy Dask graph (issue #6); never imports dask
        from array_api_compat import is_dask_array

        if is_dask_array(in1) or is_dask_array(in2):
            from ._dask import run

            return run(op, in1, in2, options, backend)
    be, host = dispatch.resolve_backend(in1, in2, backend)
    in1, shape1, dt1 = _shape_dtype("in1", in1, host, be)
    in2, shape2, dt2 = _shape_dtype("in2", in2, host, be)
    plan = _plan(op, shape1, shape2, dt1, dt2, options, be.capabilities)
    out = be.execute(plan, in1, in2)
    return be.to_host(out) if host and be.device else out


#: the plans of recent calls, with the capabilities each was made for (compared by identity:
#: hashing a Capabilities for ``make_plan``'s own cache costs more than the rest of a lookup)
_PLANS: dict = {}


def _plan(op: str, shape1: tuple, shape2: tuple, dt1: np.dtype, dt2: np.dtype, options: Options,
          caps) -> Plan:
    """:func:`make_plan`, kept per call signature for the backend's current capabilities."""
    key = (op, shape1, shape2, dt1, dt2, options)
    hit = _PLANS.get(key)
    if hit is not None and hit[0] is caps:
        return hit[1]
    plan = make_plan(op, shape1, shape2, dt1, dt2, options, caps)
    if len(_PLANS) > 1024:
        _PLANS.clear()
    _PLANS[key] = (caps, plan)
    return plan


def convolve(
    in1: Any,
    in2: Any,
    mode: Mode = "full",
    *,
    method: str = "auto",
    axes: int | Sequence[int] | None = None,
    boundary: str = "fill",
    fillvalue: complex = 0,
    align: str = "scipy",
    origin: PerAxis = 0,
    stride: PerAxis = 1,
    dilation: PerAxis = 1,
    dtype: Any = None,
    precision: str = "highest",
    backend: Any = None,
):
    """Convolve ``in1`` with ``in2`` (the kernel is flipped), with exactly defined semantics.

    Defaults reproduce ``scipy.signal.convolve``. Every call computes, per convolution axis::

        out = VALIDCORR(pad(in1, pads, boundary, fillvalue), dilate(flip(in2), dilation))[::stride]

    Parameters
    ----------
    in1, in2 : array_like
        NumPy, CuPy or JAX arrays, lists or scalars; same ndim unless ``axes`` is given.
    mode : {'full', 'valid', 'same', 'causal'} or sequence of (lo, hi)
        Output size (SPEC S2). ``'same'`` has the length of ``in1``; explicit pads are lax-style.
    method : {'auto', 'direct', 'fft', 'oa'}
        ``'auto'`` picks the fastest method that is exact for integers and NaN-safe (a NaN
        only affects outputs whose window contains it). ``'fft'`` and ``'oa'`` keep FFT
        behaviour: one NaN or Inf spreads to every output.
    axes : int or tuple of int, optional
        Convolution axes; the other axes broadcast (sizes equal or 1).
    boundary : {'fill', 'symm', 'mirror', 'nearest', 'wrap'} (and aliases)
        How ``in1`` is extended for the padding; ``fillvalue`` is used by ``'fill'``.
    align : {'scipy', 'tf'}
        Centring of ``'same'`` for even kernels: SciPy's, or TF/Keras/torch's (extra pad at the end).
    origin, stride, dilation : int or per-axis tuple
        Shift of ``'same'``; output step; gaps between kernel taps.
    dtype : dtype, optional
        Output and accumulation dtype; default ``numpy.result_type(in1, in2)``.
    precision : {'highest', 'high', 'default'}
        ``'highest'`` forbids reduced-precision arithmetic (TF32/bf16) on accelerators.
    backend : str or backend object, optional
        ``'numpy'``, ``'jax'``, ``'cupy'`` or a registered name; see :func:`convkit.use_backend`.

    Returns
    -------
    array of the inputs' type (NumPy for host inputs).

    Examples
    --------
    >>> import convkit
    >>> convkit.convolve([1, 2, 3, 4, 5], [1, 10, 100], "valid").tolist()  # kernel flipped
    [123, 234, 345]
    >>> convkit.convolve([1, 2, 3, 4], [1, 1, 1, 1], "same").tolist()  # scipy.signal centring
    [3, 6, 10, 9]
    """
    options = make_options(mode=mode, method=method, axes=axes, boundary=boundary, fillvalue=fillvalue,
                           align=align, origin=origin, stride=stride, dilation=dilation, dtype=dtype,
                           precision=precision)
    return _run("convolve", in1, in2, options, backend)


def correlate(
    in1: Any,
    in2: Any,
    mode: Mode = "full",
    *,
    method: str = "auto",
    axes: int | Sequence[int] | None = None,
    boundary: str = "fill",
    fillvalue: complex = 0,
    align: str = "scipy",
    origin: PerAxis = 0,
    stride: PerAxis = 1,
    dilation: PerAxis = 1,
    dtype: Any = None,
    precision: str = "highest",
    backend: Any = None,
):
    """Cross-correlate ``in1`` with ``in2`` (no flip; ``in2`` is conjugated), as ``scipy.signal.correlate``.

    Computes ``VALIDCORR(pad(in1), dilate(conj(in2)))[::stride]``; the keywords are those
    of :func:`convolve`. Deep-learning "conv" layers (torch ``conv2d``, Keras ``Conv2D``,
    ``lax.conv_general_dilated``) are ``correlate(x, k, align="tf")`` for real kernels.

    Examples
    --------
    >>> import convkit
    >>> convkit.correlate([1, 2, 3, 4, 5], [1, 10, 100], "valid").tolist()
    [321, 432, 543]
    >>> convkit.correlate([1, 2, 3, 4, 5], [1, 1, 1], "same", align="tf", stride=2).tolist()
    [3, 9, 9]
    """
    options = make_options(mode=mode, method=method, axes=axes, boundary=boundary, fillvalue=fillvalue,
                           align=align, origin=origin, stride=stride, dilation=dilation, dtype=dtype,
                           precision=precision)
    return _run("correlate", in1, in2, options, backend)
