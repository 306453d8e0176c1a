"""Which backend runs a call (SPEC S12).

First match wins:

1. device inputs (CuPy arrays, JAX arrays or tracers) pick their own backend;
2. the ``backend=`` argument (a name or a backend object);
3. ``with convkit.use_backend(name):`` (a ContextVar: per thread and per asyncio task);
4. ``convkit.set_backend(name)`` (process default);
5. the ``CONVKIT_BACKEND`` environment variable (a name or a comma list tried in order),
   read at first use, not at import;
6. ``"numpy"``.

Every backend, built-in or third-party, is an entry point of the group ``convkit.backends``
(convkit's own are declared in its ``pyproject.toml``) or an object given to
:func:`register_backend`; this module holds no per-backend table. A backend describes
itself (:class:`convkit.backends._base.Backend`: name, ``array_module``, ``owns``,
``install_hint``, ``dtype_of``, ``test_runners``) and is loaded at first use. Importing this
module imports no backend library, and recognising an array never imports one: a backend
is asked whether it ``owns`` an array only when its ``array_module`` is already imported.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import os
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import BackendUnavailableError, ConvkitTypeError, ConvkitValueError, DeviceMismatchError

__all__ = [
    "BackendInfo",
    "ENTRY_POINT_GROUP",
    "ENV_VAR",
    "get_backend",
    "list_backends",
    "register_backend",
    "resolve_backend",
    "set_backend",
    "use_backend",
]

ENTRY_POINT_GROUP = "convkit.backends"
#: the distribution (package-index) name; the import name is ``convkit``
DISTRIBUTION = "pyconvkit"
ENV_VAR = "CONVKIT_BACKEND"

_lock = threading.RLock()
_registry: dict[str, Any] = {}  # name -> entry point | "pkg.mod" path | backend object | factory
_loaded: dict[str, Any] = {}
#: array type -> the name of the backend that owned one (:func:`array_owner` asks it first, which
#: saves looking every backend up: 3-4 us of a call on a JAX array); cleared by a registration
_owner_of_type: dict[type, str] = {}
_load_errors: dict[str, str] = {}
_entry_points_scanned = False

_context: contextvars.ContextVar[Any] = contextvars.ContextVar("convkit_backend", default=None)
_process_default: Any = None
_UNREAD = object()
_env_choice: Any = _UNREAD


@dataclass(frozen=True)
class BackendInfo:
    """One row of :func:`list_backends`."""

    name: str
    available: bool
    reason: str
    source: str

    def __str__(self) -> str:
        state = "available" if self.available else f"unavailable: {self.reason}"
        return f"{self.name:8s} {state}"


# ----------------------------------------------------------------------------- registry


def register_backend(name: str, backend: Any) -> None:
    """Register a backend object, a factory, or a module path (``"pkg.mod"`` with ``backend``)."""
    if not isinstance(name, str) or not name:
        raise ConvkitTypeError(f"name={name!r} is not accepted; expected a non-empty string")
    name = name.strip().lower()  # looked up case-insensitively by get_backend and CONVKIT_BACKEND
    with _lock:
        _registry[name] = backend
        _loaded.pop(name, None)
        _load_errors.pop(name, None)
        _owner_of_type.clear()


def _scan_entry_points() -> None:
    global _entry_points_scanned
    if _entry_points_scanned:
        return
    with _lock:
        if _entry_points_scanned:
            return
        from importlib.metadata import entry_points

        try:
            eps = entry_points(group=ENTRY_POINT_GROUP)
        except Exception:  # pragma: no cover - broken metadata must not break convkit
            eps = ()
        for ep in eps:
            if ep.name.strip().lower() not in _registry:
                _registry[ep.name.strip().lower()] = ep
        _entry_points_scanned = True


def _known_names() -> list[str]:
    """Registered names, ``numpy`` first (then in registration / entry-point order)."""
    _scan_entry_points()
    return sorted(_registry, key=lambda n: n != "numpy")


def _source(spec: Any) -> str:
    if isinstance(spec, str):
        return spec
    if hasattr(spec, "value") and hasattr(spec, "group"):
        return f"entry point {spec.value}"
    return "registered object"


def _load(name: str) -> Any:
    """The backend object for ``name``, or None with the reason kept in ``_load_errors``."""
    _scan_entry_points()
    if name in _loaded:
        return _loaded[name]
    if name in _load_errors:
        return None
    with _lock:
        spec = _registry[name]
        try:
            if isinstance(spec, str):
                obj = importlib.import_module(spec).backend
            elif hasattr(spec, "load") and hasattr(spec, "group"):
                obj = spec.load()
            else:
                obj = spec
            if isinstance(obj, type) or (callable(obj) and not hasattr(obj, "execute")):
                obj = obj()
            if not hasattr(obj, "execute"):
                raise TypeError(f"{obj!r} does not implement the convkit backend contract")
        except Exception as exc:  # a broken backend is reported, never fatal
            _load_errors[name] = f"failed to load ({type(exc).__name__}: {exc})"
            return None
        if not isinstance(getattr(obj, "name", None), str):
            try:
                obj.name = name
            except AttributeError:  # pragma: no cover - a frozen third-party object
                pass
        _loaded[name] = obj
        return obj


def _availability(name: str) -> tuple[Any, bool, str]:
    obj = _load(name)
    if obj is None:
        return None, False, _load_errors[name]
    try:
        ok, reason = obj.available()
    except Exception as exc:  # available() must not raise, but a third-party one might
        ok, reason = False, f"availability check raised {type(exc).__name__}: {exc}"
    return obj, bool(ok), str(reason)


def list_backends() -> list[BackendInfo]:
    """Every known backend (built-in and entry points) with availability and the reason.

    Never raises: a backend that fails to import is listed as unavailable.

    >>> [b.name for b in list_backends()][:1]
    ['numpy']
    """
    rows = []
    for name in _known_names():
        _, ok, reason = _availability(name)
        rows.append(BackendInfo(name, ok, reason, _source(_registry[name])))
    return rows


def get_backend(name_or_backend: Any = None) -> Any:
    """The backend object for a name (or the object itself); raise if it cannot run here.

    With no argument: the backend a call with host inputs would use now (``use_backend``,
    then ``set_backend``, then ``CONVKIT_BACKEND`` with its fallback list, then NumPy).

    >>> get_backend().name
    'numpy'
    """
    if name_or_backend is None:
        return _host_default()
    if not isinstance(name_or_backend, str):
        if hasattr(name_or_backend, "execute"):
            return name_or_backend
        raise ConvkitTypeError(
            f"backend={name_or_backend!r} is not accepted; expected a backend name "
            f"({', '.join(map(repr, _known_names()))}) or a backend object"
        )
    name = name_or_backend.strip().lower()
    obj = _loaded.get(name)
    if obj is not None and name in _ready:
        return obj
    if name not in _registry and name not in _known_names():
        if not _known_names():  # not even numpy: this Python does not see convkit's package metadata
            raise ConvkitValueError(
                f"backend={name_or_backend!r} is not a known backend: no backend is registered, because "
                f"this Python ({sys.executable}) has no installed {DISTRIBUTION} (its backends are entry "
                "points); install it, e.g. `pip install -e .` in a checkout, or activate its environment"
            )
        raise ConvkitValueError(
            f"backend={name_or_backend!r} is not a known backend; expected one of "
            f"{', '.join(map(repr, _known_names()))}"
        )
    obj, ok, reason = _availability(name)
    if not ok:
        hint = getattr(obj, "install_hint", "") if obj is not None else _extra_hint(name)
        raise BackendUnavailableError(
            f"backend {name!r} is not available: {reason}" + (f". {hint}" if hint else "")
        )
    _ready.add(name)
    return obj


_ready: set[str] = set()


def _extra_hint(name: str) -> str:
    """How to install a backend whose module cannot even load: the convkit extra of that name."""
    from importlib.metadata import PackageNotFoundError, metadata

    try:
        extras = metadata(DISTRIBUTION).get_all("Provides-Extra") or []
    except PackageNotFoundError:  # pragma: no cover - running from an uninstalled tree
        extras = []
    return f'install it with `pip install "{DISTRIBUTION}[{name}]"`' if name in extras else ""


# ----------------------------------------------------------------------------- selection


def set_backend(name: Any) -> None:
    """Set the process-wide default backend (``None`` clears it)."""
    global _process_default
    if name is not None:
        get_backend(name)
    _process_default = name


@contextlib.contextmanager
def use_backend(name: Any) -> Iterator[Any]:
    """Run the calls in this block on ``name`` (per thread / asyncio task).

    >>> import convkit
    >>> with convkit.use_backend("numpy"):
    ...     convkit.convolve([1, 2, 3], [1, 1]).tolist()
    [1, 3, 5, 3]
    """
    backend = get_backend(name)
    token = _context.set(backend)
    try:
        yield backend
    finally:
        _context.reset(token)


def _parse_env(value: str | None) -> list[str] | None:
    if value is None or not value.strip():
        return None
    names = [v.strip().lower() for v in value.split(",") if v.strip()]
    if not names:  # only commas and blanks: as empty
        return None
    known = _known_names()
    for n in names:
        if n not in known:
            raise ConvkitValueError(
                f"{ENV_VAR}={value!r} names unknown backend {n!r}; expected a name or a comma "
                f"list of {', '.join(map(repr, known))}"
            )
    return names


def _env_backend() -> Any:
    """The backend chosen by CONVKIT_BACKEND (read once, at first use), or None."""
    global _env_choice
    if _env_choice is _UNREAD:
        with _lock:
            names = _parse_env(os.environ.get(ENV_VAR))
            if names is None:
                _env_choice = None
            else:
                reasons = []
                for n in names:
                    obj, ok, reason = _availability(n)
                    if ok:
                        _env_choice = obj
                        break
                    reasons.append(f"{n}: {reason}")
                else:
                    raise BackendUnavailableError(
                        f"none of the backends in {ENV_VAR}={os.environ.get(ENV_VAR)!r} is available ("
                        + "; ".join(reasons) + ")"
                    )
    return _env_choice


def reload_environment() -> None:
    """Forget the cached ``CONVKIT_BACKEND`` and process default (for tests and notebooks)."""
    global _env_choice, _process_default
    with _lock:
        _env_choice = _UNREAD
        _process_default = None
        _ready.clear()
        _loaded.clear()
        _load_errors.clear()
        _owner_of_type.clear()


def portable_name(backend: Any) -> str | None:
    """The name under which another process rebuilds ``backend`` (a built-in or an entry point
    that resolves to this very object here), or ``None``: the object itself must travel."""
    name = getattr(backend, "name", None)
    if not isinstance(name, str):
        return None
    spec = _registry.get(name.strip().lower())
    portable = isinstance(spec, str) or (hasattr(spec, "load") and hasattr(spec, "group"))
    if portable and _loaded.get(name.strip().lower()) is backend:
        return name.strip().lower()
    return None


def array_owner(x: Any) -> str | None:
    """Backend name that owns a device array, ``None`` for host data (NumPy, lists, scalars).

    Only backends whose ``array_module`` is already imported are asked (``owns``), so a
    check never imports a framework; backends without ``array_module`` are always asked.
    """
    if isinstance(x, (np.ndarray, np.generic, int, float, complex, list, tuple)):
        return None
    name = _owner_of_type.get(type(x))
    if name is not None:  # the owner of the last array of this type, asked first (one owns() call)
        obj = _loaded.get(name)
        try:
            if obj is not None and obj.owns(x):
                return name
        except Exception:
            pass
    for name in _known_names():
        obj = _load(name)
        if obj is None:
            continue
        module = getattr(obj, "array_module", None)
        if module is not None and module not in sys.modules:
            continue
        try:
            if getattr(obj, "owns", None) and obj.owns(x):
                if len(_owner_of_type) < 64:
                    _owner_of_type[type(x)] = name
                return name
        except Exception:  # a third-party owns() must not break host calls
            continue
    return None



def resolve_backend(in1: Any, in2: Any, backend: Any = None) -> tuple[Any, bool]:
    """Pick the backend for one call; return ``(backend, inputs_are_host)``."""
    o1, o2 = array_owner(in1), array_owner(in2)
    if o1 and o2 and o1 != o2:
        raise DeviceMismatchError(
            f"in1 is a {o1} array and in2 a {o2} array; convert one of them explicitly "
            f"(e.g. with numpy.asarray, cupy.asarray or jax.numpy.asarray)"
        )
    owner = o1 or o2
    if owner is not None:
        chosen = get_backend(owner)
        if backend is not None:
            asked = get_backend(backend)
            if asked is chosen or getattr(asked, "name", None) == owner:
                return asked, False  # the owner by name, or an instance of the same backend
            raise DeviceMismatchError(
                f"backend={getattr(asked, 'name', backend)!r} conflicts with {owner} array inputs; "
                f"drop backend= or move the data first (e.g. numpy.asarray(x) for host data)"
            )
        return chosen, False
    if backend is not None:
        return get_backend(backend), True
    return _host_default(), True


def _host_default() -> Any:
    """S12 steps 3-6: the backend for host inputs with no ``backend=``."""
    ctx = _context.get()
    if ctx is not None:
        return ctx
    if _process_default is not None:
        return get_backend(_process_default)
    env = _env_backend()
    if env is not None:
        return env
    return get_backend("numpy")
