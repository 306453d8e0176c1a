"""`import convkit` stays light: no backend library is imported until a call needs it (DESIGN)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import convkit

HEAVY = ("jax", "jaxlib", "cupy", "cupyx", "dask", "distributed", "torch", "matplotlib")


def _modules_after(code: str) -> list[str]:
    probe = textwrap.dedent(code) + textwrap.dedent(f"""
        import json, sys
        print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))
    """)
    env_free = {"CONVKIT_BACKEND": ""}  # the default backend, whatever the caller's environment says
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                         env={**os.environ, **env_free})
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.splitlines()[-1])


def test_import_imports_no_backend_library():
    assert _modules_after("import convkit") == []


def test_numpy_calls_import_no_backend_library():
    loaded = _modules_after("""
        import numpy as np
        import convkit
        assert convkit.convolve([1, 2, 3], [1, 1]).tolist() == [1, 3, 5, 3]
        assert convkit.correlate(np.ones((4, 5)), np.ones((2, 2)), "same", boundary="wrap").shape == (4, 5)
        convkit.convolve(np.ones(3000), np.ones(300), method="fft")
        from convkit.testing import assert_conv_close
        assert_conv_close(convkit.convolve([1.0, 2.0], [3.0]), [3.0, 6.0], [1.0, 2.0], [3.0])
    """)
    assert loaded == []


def test_list_backends_imports_no_array_library_it_does_not_need():
    # listing availability may probe jax/cupy, but must not import dask or torch
    loaded = _modules_after("import convkit; convkit.list_backends()")
    assert not {"dask", "distributed", "torch", "matplotlib"} & set(loaded)


def test_public_names_exist():
    assert len(convkit.__all__) == len(set(convkit.__all__))
    for name in convkit.__all__:
        assert hasattr(convkit, name), name
    assert {"convolve", "correlate", "use_backend", "set_backend", "list_backends", "register_backend",
            "BackendUnavailableError", "DeviceMismatchError"} <= set(convkit.__all__)
    assert isinstance(convkit.__version__, str) and convkit.__version__.count(".") >= 1


def test_error_hierarchy():
    # S13: every error is a ConvkitError and the matching builtin
    assert issubclass(convkit.ConvkitValueError, (convkit.ConvkitError, ValueError))
    assert issubclass(convkit.ConvkitTypeError, TypeError)
    assert issubclass(convkit.DeviceMismatchError, convkit.ConvkitTypeError)
    assert issubclass(convkit.BackendUnavailableError, ImportError)
    for cls in (convkit.ConvkitValueError, convkit.ConvkitTypeError, convkit.DeviceMismatchError,
                convkit.BackendUnavailableError):
        assert issubclass(cls, convkit.ConvkitError)
