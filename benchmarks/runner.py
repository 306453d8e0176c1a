"""Run the suite: check every contender against a float64 oracle, then time it.

Per workload and dtype the same inputs go to every contender. Each contender is called once
(warm-up, JIT compile) and its result is checked against an independent float64 oracle
(``scipy.signal.fftconvolve``) with the S5 bounds of :mod:`convkit.bounds` (the bound of
``method="auto"``: the larger of the elementwise direct bound and the normwise FFT bound,
plus the oracle's own float64 FFT bound). A contender that is wrong is reported and not
timed. Then each contender is timed: a number of runs, each a batch of calls long enough for
the clock with the device synchronised after every call; the median run is reported. Host
contenders are run once more under ``tracemalloc`` (NumPy and ``scipy.fft`` allocations are
traced) for the peak memory beyond the output.

Where the timing runs is the isolation mode (``--isolation``): ``process`` (see
:mod:`.isolate`) times each contender in a fresh process of its own; ``gap`` times the
contenders of a workload one after another in this process, each after an idle pause;
``none`` times them round-robin in this process (one run of each in turn).
"""

from __future__ import annotations

import math
import os
import statistics
import time
import tracemalloc
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from convkit.bounds import direct_factor, fft_factor, unit_roundoff

from .contenders import JAX_CALL_ENV, Contender
from .workloads import Workload

__all__ = ["Result", "run_workload", "convkit_method", "new_result", "prepare_checked", "time_alone",
           "oracle"]


@dataclass
class Result:
    workload: str
    group: str
    describe: str
    dtype: str
    contender: str
    family: str
    status: str = "ok"  # ok | n/a | unavailable | wrong | error
    detail: str = ""
    seconds: float | None = None
    runs: int = 0
    times: list[float] = field(default_factory=list)
    peak_extra_bytes: int | None = None
    input_bytes: int = 0
    method: str = ""
    device: str = ""
    pid: int = 0  # the process that timed it (``--isolation process``: one per contender)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def oracle(w: Workload, x, k):
    """float64 result from SciPy's FFT and the S5 tolerance of an ``auto`` result in ``x.dtype``."""
    import scipy.signal

    x64, k64 = x.astype(np.float64), w.k_full(k).astype(np.float64)
    ax = w.conv_axes
    direct = x64.size * k64.size <= 5_000_000  # the dilated kernel's length, zeros included
    if direct:
        ref = scipy.signal.convolve(x64, k64, w.mode, method="direct")
        mag = scipy.signal.convolve(np.abs(x64), np.abs(k64), w.mode, method="direct")
        mag_err = 0.0
    else:
        ref = scipy.signal.fftconvolve(x64, k64, w.mode, axes=ax)
        mag = scipy.signal.fftconvolve(np.abs(x64), np.abs(k64), w.mode, axes=ax)
    length = math.prod(x.shape[a] + k64.shape[a] - 1 for a in ax)
    norms = float(np.linalg.norm(x64.ravel())) * float(np.linalg.norm(k64.ravel()))
    if not direct:
        mag_err = fft_factor(length, np.float64) * norms
    taps = math.prod(k64.shape[a] for a in ax)
    tol = (direct_factor(taps, x.dtype) * (np.abs(mag) + mag_err)
           + (fft_factor(length, x.dtype) + 2 * fft_factor(length, np.float64)) * norms
           + unit_roundoff(x.dtype) * np.abs(ref))
    return ref, tol


def _check(out: np.ndarray, ref: np.ndarray, tol: np.ndarray, dtype) -> str:
    if out.shape != ref.shape:
        return f"shape {out.shape} != {ref.shape}"
    if out.dtype != np.dtype(dtype):
        return f"dtype {out.dtype} != {np.dtype(dtype)}"
    err = np.abs(out.astype(np.float64) - ref)
    bad = ~(err <= tol)
    if np.any(bad):
        i = tuple(np.argwhere(bad)[0])
        return f"{int(bad.sum())} outputs outside the S5 bound (first {i}: error {err[i]:.3g} > {tol[i]:.3g})"
    return ""


def _retained_bytes(out) -> int:
    a = out
    while isinstance(a, np.ndarray) and a.base is not None and isinstance(a.base, np.ndarray):
        a = a.base
    return int(a.nbytes) if isinstance(a, np.ndarray) else int(getattr(out, "nbytes", 0))


def convkit_method(w: Workload, x, k, backend: str = "numpy") -> str:
    """The method (and engine) ``backend``'s ``auto`` runs for this call.

    A backend that names it itself (``method_label(plan, kernel)``, e.g. ``"direct[opencv]"``)
    is asked; otherwise the plan's method, or ``separable`` when the shared rank-1 test
    applies (which the JAX backend makes inside its jitted function)."""
    import convkit
    from convkit.options import make_options
    from convkit.plan import make_plan

    be = convkit.get_backend(backend)
    plan = make_plan("convolve", x.shape, k.shape, x.dtype, k.dtype,
                     make_options(mode=w.mode, axes=w.axes, dilation=w.dilation), be.capabilities)
    label = getattr(be, "method_label", None)
    if callable(label):
        if backend == "jax":  # timed inside jax.jit unless --jax-call eager (contenders.py)
            return str(label(plan, k, eager=os.environ.get(JAX_CALL_ENV) == "eager"))
        return str(label(plan, k))
    return _planned_method(plan, k, be)


def _planned_method(plan, k, be) -> str:
    """The method of backends without ``method_label``: ``separable`` where the rank-1 test
    pays and passes, else ``plan.method``."""
    from convkit.backends._base import separable_factors, separable_pays

    if separable_pays(plan, be.capabilities):
        wk = np.flip(np.reshape(k, plan.k_shape), axis=plan.axes)
        if separable_factors(wk, plan.axes, plan.acc_dtype) is not None:
            return "separable"
    return plan.method


#: contender families whose first call may compile for seconds (convkit's Numba loops, XLA): they
#: get a second, warm call to plan their runs on, however long the first one took
_COMPILING = ("convkit", "jax")


def _plan_runs(first: float, min_time: float, max_runs: int) -> tuple[int, int]:
    """(runs, calls per run): tiny calls are batched for the clock; slow ones run fewer times."""
    inner = max(1, min(1000, int(2e-3 / max(first, 1e-7))))
    runs = 1 if first > 2.0 else max(3, min(max_runs, int(min_time / max(first * inner, 1e-9))))
    return runs, inner


def _one_run(fn, sync, inner: int) -> float:
    t0 = time.perf_counter()
    for _ in range(inner):
        sync(fn())
    return (time.perf_counter() - t0) / inner


def new_result(w: Workload, dtype, c: Contender, x, k) -> Result:
    """The empty row of contender ``c`` on workload ``w`` in ``dtype``."""
    return Result(w.name, w.group, w.describe(), np.dtype(dtype).name, c.name, c.family,
                  input_bytes=int(x.nbytes + k.nbytes), device=c.device, pid=os.getpid())


def prepare_checked(c: Contender, w: Workload, dtype, x, k, ref, tol, r: Result, *, min_time: float,
                    max_runs: int, method_of=convkit_method):
    """Warm ``c`` up on this workload and check its result against the oracle ``(ref, tol)``.

    Returns ``(fn, runs, calls per run)`` for the timing, or None with ``r.status`` saying why
    not (unavailable, n/a, wrong, error). A wrong contender is never timed. ``method_of(w, x, k,
    backend)`` names the method of a convkit contender (the layer suites pass their own)."""
    try:
        if not c.available[0]:
            r.status, r.detail = "unavailable", c.available[1]
            return None
        fn = c.prepare(w, x, k)
        if fn is None:
            r.status = "n/a"
            return None
        if c.family == "convkit":
            r.method = method_of(w, x, k, c.name[len("convkit["):-1])
        t0 = time.perf_counter()
        out = fn()
        c.sync(out)
        first = time.perf_counter() - t0
        problem = _check(np.asarray(c.to_numpy(out)), ref, tol, dtype)
        del out
        if problem:
            r.status, r.detail = "wrong", problem
            return None
        if first < 2.0 or c.family in _COMPILING:
            # the first call may include compiling: plan the runs on a warm one (a JIT that compiles
            # for seconds, as Numba does without its disk cache, would otherwise be timed by one
            # cold call; docs/benchmarks.md)
            t0 = time.perf_counter()
            c.sync(fn())
            first = min(first, time.perf_counter() - t0)
        return (fn, *_plan_runs(first, min_time, max_runs))
    except Exception as exc:  # a broken contender is reported, never fatal
        r.status, r.detail = "error", f"{type(exc).__name__}: {exc}"[:300]
        return None


def _time_run(c: Contender, r: Result, fn, inner: int) -> None:
    """One timed run (``inner`` calls) appended to ``r.times``; an exception marks ``r`` an error."""
    if r.status != "ok":
        return
    try:
        r.times.append(_one_run(fn, c.sync, inner))
    except Exception as exc:
        r.status, r.detail = "error", f"{type(exc).__name__}: {exc}"[:300]


def finish(c: Contender, r: Result, fn, memory: bool) -> None:
    """The median of the runs, then (host contenders under 2 s) the peak memory beyond the output,
    from one more call under ``tracemalloc``."""
    if r.status != "ok":
        return
    r.seconds = statistics.median(r.times)
    r.runs = len(r.times)
    if memory and c.host and r.seconds < 2.0:
        try:
            tracemalloc.start()
            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
            out = fn()
            peak = tracemalloc.get_traced_memory()[1] - base
            r.peak_extra_bytes = max(0, int(peak - _retained_bytes(out)))
            del out
        finally:
            tracemalloc.stop()


def time_alone(c: Contender, r: Result, planned, *, memory: bool, gap: float = 0.0) -> None:
    """Time one contender by itself: an idle ``gap`` first (other libraries' worker threads stop
    spinning), then all its runs in a row, then its memory."""
    fn, runs, inner = planned
    if gap > 0:
        time.sleep(gap)
    for _ in range(runs):
        _time_run(c, r, fn, inner)
    finish(c, r, fn, memory)


def run_workload(w: Workload, dtype, cons: list[Contender], *, min_time: float = 0.3, max_runs: int = 20,
                 memory: bool = True, progress=None, schedule: str = "round-robin",
                 gap: float = 0.0, oracle_fn=oracle, method_of=convkit_method) -> list[Result]:
    """Check and time every contender on one workload in one dtype, in this process.

    ``schedule="round-robin"``: one run of each contender in turn, so all see the same load on a
    shared machine (but a library whose worker threads keep spinning after a call slows the next
    one down). ``"sequential"``: each contender's runs together, after an idle ``gap`` seconds.
    ``oracle_fn`` and ``method_of`` are the convolve suites' unless a layer suite passes its own."""
    x, k = w.make(dtype)
    ref, tol = oracle_fn(w, x, k)
    results, ready = [], []
    # 1) warm-up and check every contender
    for c in cons:
        r = new_result(w, dtype, c, x, k)
        results.append(r)
        planned = prepare_checked(c, w, dtype, x, k, ref, tol, r, min_time=min_time, max_runs=max_runs,
                                  method_of=method_of)
        if planned is not None:
            ready.append((c, r, planned))
    # 2) time them
    if schedule == "sequential":
        for c, r, planned in ready:
            time_alone(c, r, planned, memory=memory, gap=gap)
    else:
        for i in range(max((p[1] for _, _, p in ready), default=0)):
            for c, r, (fn, runs, inner) in ready:
                if i < runs:
                    _time_run(c, r, fn, inner)
        for c, r, (fn, _, _) in ready:
            finish(c, r, fn, memory)
    if progress is not None:
        progress.update(len(cons))
    return results
