"""convkit's side-by-side benchmark suite: ``python -m benchmarks --help``.

Times convkit (on each requested backend) and its peers (SciPy's ``convolve``,
``fftconvolve``, ``oaconvolve``, ``ndimage.convolve``; ``jax.scipy.signal`` jitted;
``cupyx.scipy.signal`` on GPU) in one process on the same inputs, after checking every
result against a float64 oracle within the S5 bounds. Writes a terminal table,
``results.json``, ``results.md`` and ``speedup.png`` into ``--out``.
"""

from .cli import main

__all__ = ["main"]
