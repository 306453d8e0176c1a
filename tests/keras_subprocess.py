"""Run Keras 3 (its JAX backend, float64) in a subprocess of its own, for the tests that compare
convkit with Keras layers: Keras reads ``KERAS_BACKEND`` once at import, and the test process has
already imported JAX its own way. ``body`` reads the pickled jobs from ``sys.argv[1]`` and pickles
its results to ``sys.argv[2]``; ``keras``, ``np``, ``pickle``, ``sys`` and ``traceback`` are imported."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap

import pytest

PRELUDE = textwrap.dedent("""
    import pickle, sys, traceback, warnings
    import numpy as np
    warnings.simplefilter("ignore")
    try:
        import keras
    except Exception as exc:
        print("NO-KERAS", type(exc).__name__, exc)
        sys.exit(3)
""")


def run_keras(tmp_path, body: str, jobs, timeout: int = 600):
    """Run ``body`` on ``jobs`` under Keras; return what it pickled. Skips the test when Keras
    cannot be imported with ``KERAS_BACKEND=jax`` (the reason is printed)."""
    src, dst, script = tmp_path / "jobs.pkl", tmp_path / "out.pkl", tmp_path / "keras_job.py"
    src.write_bytes(pickle.dumps(jobs))
    script.write_text(PRELUDE + textwrap.dedent(body))
    env = {k: v for k, v in os.environ.items() if k != "CONVKIT_BACKEND"}
    env.update(KERAS_BACKEND="jax", JAX_ENABLE_X64="1", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, str(script), str(src), str(dst)], capture_output=True, text=True,
                          env=env, timeout=timeout)
    if proc.returncode == 3 and "NO-KERAS" in proc.stdout:
        pytest.skip(f"keras cannot be imported with KERAS_BACKEND=jax: {proc.stdout.strip()}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return pickle.loads(dst.read_bytes())
