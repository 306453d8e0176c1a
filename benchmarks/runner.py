"""Run the suite: check every contender against a float64 oracle, then time it.

Per workload and dtype the same inputs go to every contender. Each contender is called once
(warm-up, JIT compile) and its result is checked against an independent float64 oracle
(``scipy.signal.fftconvolve``) with the S5 bounds of :mod:`convkit.bounds` (the bound of
``method="auto"``: the larger of the elementwise direct bound and the normwise FFT bound,
plus the oracle's own float64 FFT bound). A contender that is wrong is reported and not
timed. Then the contenders run round-robin (one run of each in turn, so all see the same load
on a shared machine), each run a batch of calls long enough for the clock with the device
synchronised after every call; the median run is reported. Host contenders are run
once more under ``tracemalloc`` (NumPy and ``scipy.fft`` allocations are traced) for the
peak memory beyond the output.
"""

from __future__ import annotations

import math
import statistics
import time
import tracemalloc
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from convkit.bounds import direct_factor, fft_factor, unit_roundoff

from .contenders import Contender
from .workloads import Workload

__all__ = ["Result", "run_workload", "convkit_method"]


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

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _oracle(w: Workload, x, k):
    """float64 result from SciPy's FFT and the S5 tolerance of an ``auto`` result in ``x.dtype``."""
    import scipy.signal

    x64, k64 = x.astype(np.float64), w.k_full(k).astype(np.float64)
    ax = w.conv_axes
    if w.macs <= 5_000_000:
        ref = scipy.signal.convolve(x64, k64, w.mode, method="direct")
        mag = scipy.signal.convolve(np.abs(x64), np.abs(k64), w.mode, method="direct")
        mag_err = 0.0
    else:
        ref = scipy.signal.fftconvolve(x64, k64, w.mode, axes=ax)
        mag = scipy.signal.fftconvolve(np.abs(x64), np.abs(k64), w.mode, axes=ax)
    length = math.prod(x.shape[a] + k64.shape[a] - 1 for a in ax)
    norms = float(np.linalg.norm(x64.ravel())) * float(np.linalg.norm(k64.ravel()))
    if w.macs > 5_000_000:
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
    """The method ``backend``'s ``auto`` runs for this call (``separable`` included: the shared
    rank-1 test, which the JAX backend makes inside its jitted function)."""
    import convkit
    from convkit.backends._base import separable_factors, separable_pays
    from convkit.options import make_options
    from convkit.plan import make_plan

    be = convkit.get_backend(backend)
    plan = make_plan("convolve", x.shape, k.shape, x.dtype, k.dtype, make_options(mode=w.mode, axes=w.axes),
                     be.capabilities)
    if separable_pays(plan, be.capabilities):
        wk = np.flip(np.reshape(k, plan.k_shape), axis=plan.axes)
        if separable_factors(wk, plan.axes, plan.acc_dtype) is not None:
            return "separable"
    return plan.method


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


def run_workload(w: Workload, dtype, cons: list[Contender], *, min_time: float = 0.3, max_runs: int = 20,
                 memory: bool = True, progress=None) -> list[Result]:
    """Check and time every contender on one workload in one dtype."""
    x, k = w.make(dtype)
    ref, tol = _oracle(w, x, k)
    results, ready = [], []
    # 1) warm-up and check every contender
    for c in cons:
        r = Result(w.name, w.group, w.describe(), np.dtype(dtype).name, c.name, c.family,
                   input_bytes=int(x.nbytes + k.nbytes))
        results.append(r)
        try:
            if not c.available[0]:
                r.status, r.detail = "unavailable", c.available[1]
                continue
            fn = c.prepare(w, x, k)
            if fn is None:
                r.status = "n/a"
                continue
            if c.name in ("convkit[numpy]", "convkit[jax]", "convkit[cupy]"):
                r.method = convkit_method(w, x, k, c.name[len("convkit["):-1])
            t0 = time.perf_counter()
            out = fn()
            c.sync(out)
            first = time.perf_counter() - t0
            problem = _check(c.to_numpy(out), ref, tol, dtype)
            del out
            if problem:
                r.status, r.detail = "wrong", problem
                continue
            if first < 2.0:  # the first call may include compiling: plan the runs on a warm one
                t0 = time.perf_counter()
                c.sync(fn())
                first = min(first, time.perf_counter() - t0)
            ready.append((c, r, fn, *_plan_runs(first, min_time, max_runs)))
        except Exception as exc:  # a broken contender is reported, never fatal
            r.status, r.detail = "error", f"{type(exc).__name__}: {exc}"[:300]
    # 2) time them round-robin, so every contender sees the same load on a shared machine
    for i in range(max((t[3] for t in ready), default=0)):
        for c, r, fn, runs, inner in ready:
            if i < runs and r.status == "ok":
                try:
                    r.times.append(_one_run(fn, c.sync, inner))
                except Exception as exc:
                    r.status, r.detail = "error", f"{type(exc).__name__}: {exc}"[:300]
    # 3) peak memory of the host contenders
    for c, r, fn, _, _ in ready:
        if r.status != "ok":
            continue
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
    if progress is not None:
        progress.update(len(cons))
    return results
