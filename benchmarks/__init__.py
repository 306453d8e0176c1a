"""convkit's side-by-side benchmark suite.

Times convkit (on each requested backend) and its peers (SciPy's ``convolve``,
``fftconvolve``, ``oaconvolve``, ``ndimage.convolve``; OpenCV's ``filter2D`` and
``sepFilter2D`` and torch's CPU ``conv1d/2d/3d`` where installed; ``jax.scipy.signal`` jitted;
``cupyx.scipy`` on GPU) on the same inputs, after checking every result against a float64
oracle within the S5 bounds. Each contender is timed in a fresh process of its own (but for
the smoke suite; ``--isolation``), so no other library's worker threads spin meanwhile.
Prints a table (the method convkit ran; ratios to the fastest peer of any library, to the
fastest SciPy function and to ``scipy.signal.convolve``) and a MET / MISSED / N/A verdict per
target, and writes ``results.json``, ``results.md`` and ``speedup.png`` into
``--out`` (``results-<backend>.md`` and ``speedup-<backend>.png`` for each further backend).

The same package runs as ``python -m benchmarks`` from a checkout and as ``convkit bench``
(or ``python -m convkit.benchmarks``) from an installed convkit, where it is the subpackage
``convkit.benchmarks``; its modules import each other relatively so both names work.
"""

from .cli import main

__all__ = ["main"]
