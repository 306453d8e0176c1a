"""The convkit error hierarchy (SPEC S13).

Every error convkit raises derives from :class:`ConvkitError` *and* from the builtin
exception a caller would expect (``ValueError``, ``TypeError``, ``ImportError``), so
``except ValueError`` keeps working in code that does not know convkit.
"""

from __future__ import annotations

__all__ = [
    "ConvkitError",
    "ConvkitValueError",
    "ConvkitTypeError",
    "DeviceMismatchError",
    "BackendUnavailableError",
]


class ConvkitError(Exception):
    """Base class of every error raised by convkit."""


class ConvkitValueError(ConvkitError, ValueError):
    """An argument has a value convkit does not accept (mode, shapes, stride, ...)."""


class ConvkitTypeError(ConvkitError, TypeError):
    """An argument has a type convkit does not accept (dtype, array type, ...)."""


class DeviceMismatchError(ConvkitTypeError):
    """Arrays live on different devices/namespaces, or conflict with ``backend=``."""


class BackendUnavailableError(ConvkitError, ImportError):
    """A backend asked for by name cannot run here; the message says why and how to fix it."""
