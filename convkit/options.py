"""One normaliser for the keyword options of :func:`convkit.convolve` / :func:`convkit.correlate`.

:func:`make_options` validates every option whose rule does not depend on the inputs'
shapes and returns a frozen, hashable :class:`Options`. Options validated before are reused
only by a call whose raw values have the same types as well as values (:class:`TypedCache`), so
an option is accepted or refused the same way whatever ran before (``stride=True`` is refused
even after a call with ``stride=1``, although ``True == 1``): the cached plan only ever sees
canonical values (Python ``int`` per-axis
values, lower-case canonical names, a ``numpy.dtype``), and the fill value is keyed by its
type as well as its value. Rules that need the shapes (per-axis lengths, axis ranges,
fill values that must fit the result dtype) live in :mod:`convkit.plan`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._hash_once import hash_once
from .errors import ConvkitTypeError, ConvkitValueError

__all__ = [
    "Options",
    "make_options",
    "MODES",
    "METHODS",
    "BOUNDARIES",
    "ALIGNS",
    "PRECISIONS",
]

MODES = ("full", "valid", "same", "causal")
METHODS = ("auto", "direct", "fft", "oa")
PRECISIONS = ("highest", "high", "default")

#: convkit boundary name (and aliases) -> numpy.pad mode (SPEC S7)
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

#: align name (and aliases) -> canonical align
ALIGNS = {"scipy": "scipy", "tf": "tf", "keras": "tf", "torch": "tf", "lax": "tf"}

@hash_once
@dataclass(frozen=True)
class Options:
    """The normalised options of one call (hashable: it keys the plan cache).

    ``mode`` is a canonical mode name or a tuple of ``(lo, hi)`` int pairs; ``boundary`` is
    the ``numpy.pad`` mode; ``origin``/``stride``/``dilation`` are an ``int`` or a tuple of
    ints (their length is checked against the convolution axes by the plan).
    """

    mode: str | tuple[tuple[int, int], ...] = "full"
    method: str = "auto"
    axes: tuple[int, ...] | None = None
    boundary: str = "constant"
    fillvalue: int | float | complex = 0
    align: str = "scipy"
    origin: int | tuple[int, ...] = 0
    stride: int | tuple[int, ...] = 1
    dilation: int | tuple[int, ...] = 1
    dtype: np.dtype | None = None
    precision: str = "highest"
    #: the fill value's type, so that ``1``, ``1.0``, ``True`` and ``1+0j`` key different plans
    fill_type: type = field(default=int, repr=False)

    def replace(self, **changes: Any) -> Options:
        """A copy with some options changed (validated again)."""
        values = {k: getattr(self, k) for k in _KEYWORDS}
        values.update(changes)
        return make_options(**values)


_KEYWORDS = ("mode", "method", "axes", "boundary", "fillvalue", "align", "origin", "stride", "dilation",
             "dtype", "precision")


def _bad(name: str, value: object, accepted: str) -> ConvkitValueError:
    return ConvkitValueError(f"{name}={value!r} is not accepted; expected {accepted}")


def normalize_choice(name: str, value: object, table) -> str:
    """Map a string option (case-insensitive) through its alias table, or raise naming it."""
    if isinstance(value, str) and value.lower() in table:
        return table[value.lower()] if isinstance(table, dict) else value.lower()
    raise _bad(name, value, "one of " + ", ".join(repr(v) for v in table))


def is_int(v: object) -> bool:
    """A Python or NumPy integer, not a bool (``True`` is not a stride)."""
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _as_sequence(value: object) -> object:
    if isinstance(value, np.ndarray):
        return value.tolist() if value.ndim else value.item()
    return value


def _per_axis(name: str, value: object, minimum: int | None) -> int | tuple[int, ...]:
    value = _as_sequence(value)
    if is_int(value):
        vals: tuple[int, ...] = (int(value),)
        out: int | tuple[int, ...] = int(value)
    elif isinstance(value, (tuple, list)) and all(is_int(v) for v in value):
        vals = tuple(int(v) for v in value)
        out = vals
    else:
        raise ConvkitTypeError(
            f"{name}={value!r} is not accepted; expected an int or a tuple of ints, one per convolution axis"
        )
    if minimum is not None and any(v < minimum for v in vals):
        raise ConvkitValueError(f"{name}={value!r} is not accepted; expected integers >= {minimum}")
    return out


def _axes(value: object) -> tuple[int, ...] | None:
    value = _as_sequence(value)
    if value is None:
        return None
    if is_int(value):
        return (int(value),)
    if isinstance(value, (tuple, list)) and value and all(is_int(a) for a in value):
        return tuple(int(a) for a in value)
    raise ConvkitTypeError(
        f"axes={value!r} is not accepted; expected None, an int or a non-empty tuple of ints"
    )


def _mode(value: object) -> str | tuple[tuple[int, int], ...]:
    if isinstance(value, str):
        return normalize_choice("mode", value, MODES)
    value = _as_sequence(value)
    accepted = ("'full', 'valid', 'same', 'causal' or a sequence of (lo, hi) integer pads, "
                "one per convolution axis")
    if not isinstance(value, (tuple, list)) or not value:
        raise _bad("mode", value, accepted)
    pads = []
    for pair in value:
        pair = _as_sequence(pair)
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and all(is_int(p) for p in pair)):
            raise _bad("mode", value, accepted)
        pads.append((int(pair[0]), int(pair[1])))
    return tuple(pads)


def _fillvalue(value: object) -> int | float | complex:
    if isinstance(value, (np.generic, np.ndarray)) and np.ndim(value) == 0:
        if np.asarray(value).dtype.kind not in "biufc":
            raise ConvkitTypeError(f"fillvalue={value!r} is not accepted; expected a real or complex scalar")
        value = value.item()
    if not isinstance(value, (int, float, complex)):
        raise ConvkitTypeError(f"fillvalue={value!r} is not accepted; expected a real or complex scalar")
    return value


def _dtype(value: object) -> np.dtype | None:
    if value is None:
        return None
    try:
        dt = np.dtype(value)
    except TypeError:
        raise ConvkitTypeError(
            f"dtype={value!r} is not a dtype; expected a numeric dtype such as 'float32'"
        ) from None
    return dt.newbyteorder("=") if not dt.isnative else dt


def _typed(value: object) -> object:
    """A cache key that tells ``1``, ``1.0``, ``True`` and ``np.int64(1)`` apart, also inside tuples."""
    if type(value) in (tuple, list):
        return (type(value), tuple(_typed(v) for v in value))
    return (type(value), value)


class TypedCache:
    """Values built from validated raw keyword arguments, keyed by each argument's type as well
    as its value (``stride=True`` never hits the entry of ``stride=1``, nor ``(1.0,)`` that of
    ``(1,)``), so a call is accepted or refused the same way whatever ran before. Arguments that
    cannot be hashed (an array) are never cached: the caller validates them every time. At most
    ``size`` entries and one; then it starts again."""

    def __init__(self, size: int = 1024) -> None:
        self._entries: dict = {}
        self._size = size

    def lookup(self, args: tuple, extra: tuple = ()) -> tuple[tuple | None, Any]:
        """``(key, value)`` for the raw ``args`` plus ``extra`` (hashable, typed by the caller);
        ``value`` is ``None`` when absent, ``key`` is ``None`` when the args cannot be hashed."""
        types = tuple(map(type, args))
        if tuple in types or list in types:  # nested values: their types too ((1.0,) is not (1,))
            key = tuple(_typed(v) for v in args) + extra
        else:
            key = args + types + extra
        try:
            return key, self._entries.get(key)
        except TypeError:
            return None, None

    def store(self, key: tuple | None, value: Any) -> None:
        """Keep ``value`` under a ``key`` from :meth:`lookup` (``None``: not cacheable)."""
        if key is not None:
            if len(self._entries) > self._size:
                self._entries.clear()
            self._entries[key] = value


#: valid options already built from the raw arguments of :func:`make_options`
_CACHE = TypedCache()


def make_options(
    *,
    mode: Any = "full",
    method: Any = "auto",
    axes: Any = None,
    boundary: Any = "fill",
    fillvalue: Any = 0,
    align: Any = "scipy",
    origin: Any = 0,
    stride: Any = 1,
    dilation: Any = 1,
    dtype: Any = None,
    precision: Any = "highest",
) -> Options:
    """Validate and canonicalise the options of one call; raise a one-line convkit error.

    >>> make_options(mode="SAME", stride=[2, 1], boundary="reflect")
    Options(mode='same', method='auto', axes=None, boundary='symmetric', fillvalue=0, \
align='scipy', origin=0, stride=(2, 1), dilation=1, dtype=None, precision='highest')
    >>> make_options(stride=True)
    Traceback (most recent call last):
    ...
    convkit.errors.ConvkitTypeError: stride=True is not accepted; expected an int or a tuple of ints, \
one per convolution axis
    """
    args = (mode, method, axes, boundary, fillvalue, align, origin, stride, dilation, dtype, precision)
    key, hit = _CACHE.lookup(args)
    if hit is not None:
        return hit  # valid options seen before, keyed by type as well as value
    options = _make_options(*args)
    _CACHE.store(key, options)
    return options


def _make_options(mode, method, axes, boundary, fillvalue, align, origin, stride, dilation, dtype,
                  precision) -> Options:
    mode_c = _mode(mode)
    method_c = normalize_choice("method", method, METHODS)
    precision_c = normalize_choice("precision", precision, PRECISIONS)
    boundary_c = normalize_choice("boundary", boundary, BOUNDARIES)
    align_c = normalize_choice("align", align, ALIGNS)
    fill = _fillvalue(fillvalue)
    if boundary.lower() == "zeros" and fill != 0:
        raise ConvkitValueError(
            f"boundary='zeros' conflicts with fillvalue={fillvalue!r}; use boundary='fill'"
        )
    origin_c = _per_axis("origin", origin, None)
    if mode_c != "same" and any(v != 0 for v in (origin_c if isinstance(origin_c, tuple) else (origin_c,))):
        raise ConvkitValueError(f"origin={origin!r} is only used with mode='same'; got mode={mode!r}")
    return Options(
        mode=mode_c,
        method=method_c,
        axes=_axes(axes),
        boundary=boundary_c,
        fillvalue=fill,
        align=align_c,
        origin=origin_c,
        stride=_per_axis("stride", stride, 1),
        dilation=_per_axis("dilation", dilation, 1),
        dtype=_dtype(dtype),
        precision=precision_c,
        fill_type=type(fill),
    )
