"""Recorded signatures of every cupy/cupyx function convkit's CuPy backend calls (backends/cupy.py
and the shared code of backends/_base.py run with ``xp = cupy``), read from the cupy/cupy sources
at tags v13.0.0 (the minimum ``pyproject.toml`` allows) and v14.0.0 (checked unchanged at v14.2.0
except ``reshape``'s keyword-only ``copy``, added after 14.0; the 14.0 form is recorded):

* ``cupyx/scipy/ndimage/_filters.py``: ``correlate`` gained ``*, axes=None`` in v14 (13.x has
  none); ``correlate1d`` has no ``axes`` in either;
* ``cupy/fft/_fft.py``, ``cupyx/scipy/fft/_helper.py``, ``cupy/_padding/pad.py`` (mode ->
  allowed keywords), ``cupy/_creation``, ``cupy/_manipulation``, ``cupy/_math``,
  ``cupy/_logic/truth.py``, ``cupy/_statistics/order.py`` (``cupy.max`` is ``amax``),
  ``cupy/__init__.py`` (``asnumpy``).

Ufuncs (``abs``, ``isfinite``, ``conj``, ``logical_and``, ``logical_or``, ``multiply``) are
``cupy._core`` ufuncs with NumPy's calling convention in both; they are listed in ``UFUNCS``.

``tests/cupy_emulated.py`` binds every emulated call against these tables
(:func:`signature`), so a keyword one CuPy version lacks fails the CPU suite.
"""

from __future__ import annotations

import inspect
from functools import cache

_COMMON = {
    # cupy
    "cupy.asnumpy": "(a, stream=None, order='C', out=None, *, blocking=True)",
    "cupy.zeros": "(shape, dtype=float, order='C')",
    "cupy.broadcast_to": "(array, shape)",
    "cupy.flip": "(a, axis=None)",
    "cupy.reshape": "(a, newshape, order='C')",
    "cupy.ravel": "(a, order='C')",
    "cupy.round": "(a, decimals=0, out=None)",
    "cupy.around": "(a, decimals=0, out=None)",
    "cupy.sum": "(a, axis=None, dtype=None, out=None, keepdims=False)",
    "cupy.all": "(a, axis=None, out=None, keepdims=False)",
    "cupy.max": "(a, axis=None, out=None, keepdims=False)",
    "cupy.amax": "(a, axis=None, out=None, keepdims=False)",
    "cupy.stack": "(tup, axis=0, out=None, *, dtype=None, casting='same_kind')",
    "cupy.concatenate": "(tup, axis=0, out=None, *, dtype=None, casting='same_kind')",
    "cupy.where": "(condition, x=None, y=None)",
    "cupy.pad": "(array, pad_width, mode='constant', **kwargs)",
    # cupy.fft (cupy/fft/_fft.py)
    "cupy.fft.rfftn": "(a, s=None, axes=None, norm=None)",
    "cupy.fft.irfftn": "(a, s=None, axes=None, norm=None)",
    "cupy.fft.fftn": "(a, s=None, axes=None, norm=None)",
    "cupy.fft.ifftn": "(a, s=None, axes=None, norm=None)",
    "cupy.fft.rfft": "(a, n=None, axis=-1, norm=None)",
    "cupy.fft.irfft": "(a, n=None, axis=-1, norm=None)",
    # cupyx.scipy.fft (cupyx/scipy/fft/_helper.py)
    "cupyx.scipy.fft.next_fast_len": "(target, real=False)",
    # cupyx.scipy.ndimage (cupyx/scipy/ndimage/_filters.py)
    "cupyx.scipy.ndimage.correlate1d": ("(input, weights, axis=-1, output=None, mode='reflect', cval=0.0, "
                                        "origin=0)"),
}

#: ``{version: {qualified name: signature text}}``
SIGNATURES: dict[str, dict[str, str]] = {
    "13": {
        **_COMMON,
        "cupy.asarray": "(a, dtype=None, order=None, *, blocking=False)",
        "cupyx.scipy.ndimage.correlate": "(input, weights, output=None, mode='reflect', cval=0.0, origin=0)",
    },
    "14": {
        **_COMMON,
        "cupy.asarray": "(a, dtype=None, order=None, *, copy=None, blocking=False)",
        "cupyx.scipy.ndimage.correlate": ("(input, weights, output=None, mode='reflect', cval=0.0, origin=0, "
                                          "*, axes=None)"),
    },
}

#: ``cupy.pad``: mode -> the keywords it accepts (``allowed_kwargs`` in cupy/_padding/pad.py, the
#: same in 13.0 and 14.x); any other mode raises ValueError
PAD_MODE_KWARGS = {
    "empty": (), "edge": (), "wrap": (), "constant": ("constant_values",), "linear_ramp": ("end_values",),
    "maximum": ("stat_length",), "mean": ("stat_length",), "minimum": ("stat_length",),
    "reflect": ("reflect_type",), "symmetric": ("reflect_type",),
}

#: cupyx.scipy.ndimage boundary modes (both versions)
NDIMAGE_MODES = ("reflect", "constant", "nearest", "mirror", "wrap", "grid-mirror", "grid-wrap",
                 "grid-constant")

#: cupy ufuncs convkit calls (NumPy's ufunc calling convention)
UFUNCS = ("abs", "absolute", "isfinite", "conj", "conjugate", "logical_and", "logical_or", "multiply",
          "greater", "less_equal", "not_equal")


@cache
def signature(version: str, name: str) -> inspect.Signature:
    """The :class:`inspect.Signature` of ``name`` (e.g. ``"cupy.fft.rfftn"``) in CuPy ``version``."""
    text = SIGNATURES[version][name]
    scope: dict = {}
    exec(f"def f{text}: pass", scope)  # noqa: S102 - recorded literals above
    return inspect.signature(scope["f"])
