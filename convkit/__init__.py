"""convkit: one convolve()/correlate() with exact semantics on NumPy/SciPy, CuPy and JAX.

>>> import convkit
>>> convkit.convolve([1, 2, 3], [0, 1, 0.5]).tolist()
[0.0, 1.0, 2.5, 4.0, 1.5]
"""

from .api import convolve, correlate
from .conv import conv
from .dispatch import BackendInfo, get_backend, list_backends, register_backend, set_backend, use_backend
from .errors import (
    BackendUnavailableError,
    ConvkitError,
    ConvkitTypeError,
    ConvkitValueError,
    DeviceMismatchError,
)
from .explain import explain

__version__ = "0.1.0"

__all__ = [
    "convolve",
    "correlate",
    "conv",
    "explain",
    "use_backend",
    "set_backend",
    "get_backend",
    "list_backends",
    "register_backend",
    "BackendInfo",
    "ConvkitError",
    "ConvkitValueError",
    "ConvkitTypeError",
    "DeviceMismatchError",
    "BackendUnavailableError",
    "__version__",
]
