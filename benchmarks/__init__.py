"""convkit's side-by-side benchmark suite.

Times convkit (on each requested backend) and its peers (SciPy's ``convolve``,
``fftconvolve``, ``oaconvolve``, ``ndimage.convolve``; ``jax.scipy.signal`` jitted;
``cupyx.scipy.signal`` on GPU) in one process on the same inputs, after checking every
result against a float64 oracle within the S5 bounds. Prints a table and a MET / MISSED /
N/A verdict per target, and writes ``results.json``, ``results.md`` and ``speedup.png`` into
``--out`` (``results-<backend>.md`` and ``speedup-<backend>.png`` for each further backend).

The same package runs as ``python -m benchmarks`` from a checkout and as ``convkit bench``
(or ``python -m convkit.benchmarks``) from an installed convkit, where it is the subpackage
``convkit.benchmarks``; its modules import each other relatively so both names work.
"""

from .cli import main

__all__ = ["main"]
