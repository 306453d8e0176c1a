"""``--isolation process``: every contender timed in a fresh process of its own, one at a time.

OpenCV's and XLA's worker threads keep spinning for a while after a call and take a core from
whatever runs next in the same process (issue 13: convkit[jax] 3x3 took 2.0 ms alone and
7.0 ms right after a ``cv2.filter2D`` call on 2 cores). So here the parent process computes the
float64 oracle of every row once (``ref`` and ``tol`` saved as ``.npy`` files in a temporary
folder), then starts one worker process per contender, in turn: the worker imports only its
own contender's library, rebuilds the same inputs from the workload's seed, checks its result
against the oracle (read memory-mapped) and times every row, then exits, taking its threads
with it, before the next contender's worker starts. Nothing else of the suite runs meanwhile.

A worker prints one ``@@bench-result {json}`` line per row on its stdout (the parent reads
them as they come for the progress bar); a worker that dies (a segfault in a library, say)
costs only its own rows, reported as errors with the tail of its stderr.

The same machinery runs both kinds of suite (``kind``): ``"convolve"`` (:class:`.workloads.Workload`,
:func:`.runner.oracle`, :func:`.contenders.contender`) and ``"layers"`` (the layer suites of
:mod:`.layers`: their workloads, oracle and contenders); the job file names its kind.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from typing import Any

import numpy as np

from .allocator import steady
from .contenders import Contender, contender
from .runner import Result, convkit_method, new_result, oracle, prepare_checked, time_alone
from .workloads import Workload

__all__ = ["kind_of", "run_isolated", "worker"]

PREFIX = "@@bench-result "

#: the worker's entry point: load this very package from its folder under its own name (it may
#: be ``benchmarks`` in a checkout or ``convkit.benchmarks`` installed), then run the job
BOOT = """\
import importlib, importlib.util, os, sys
init, name, job = sys.argv[1:4]
if name not in sys.modules:
    spec = importlib.util.spec_from_file_location(name, init,
                                                  submodule_search_locations=[os.path.dirname(init)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
sys.exit(importlib.import_module(name + ".isolate").worker(job))
"""


@dataclasses.dataclass(frozen=True)
class Kind:
    """What differs between the convolve suites and the layer suites, for a worker."""

    workload: Callable[[dict], Any]  # a workload back from its JSON form
    oracle: Callable  # (w, x, k) -> (ref, tol)
    contender: Callable[[str, str], Contender]  # (name, family) -> the contender
    method_of: Callable  # (w, x, k, backend) -> the method convkit runs


def kind_of(name: str) -> Kind:
    """The :class:`Kind` called ``name`` (the layer suite's module is imported only for it)."""
    if name == "convolve":
        return Kind(_workload, oracle, contender, convkit_method)
    if name == "layers":
        from . import layers

        return Kind(layers.workload_from_json, layers.layer_oracle, layers.layer_contender,
                    layers.layer_method)
    raise ValueError(f"unknown kind of suite {name!r}; expected 'convolve' or 'layers'")


def _save_oracles(rows: list[tuple[Workload, np.dtype]], folder: str, progress=None,
                  oracle_fn=oracle) -> list[dict]:
    """Compute each row's oracle once and save it; the rows of the job file."""
    out = []
    for i, (w, dt) in enumerate(rows):
        if progress is not None:
            progress.set_postfix_str(f"oracle {w.name} {dt.name}")
        x, k = w.make(dt)
        ref, tol = oracle_fn(w, x, k)
        paths = {name: os.path.join(folder, f"{i}-{name}.npy") for name in ("ref", "tol")}
        np.save(paths["ref"], ref)
        np.save(paths["tol"], tol)
        out.append({"workload": dataclasses.asdict(w), "dtype": dt.name, **paths})
    return out


def _workload(d: dict) -> Workload:
    """A workload back from its JSON form (lists become tuples again)."""
    return Workload(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def _enable_x64(c: Contender, x64: bool) -> None:
    """float64 JAX arrays in a worker that times JAX, as the parent asked (``--dtype float64``)."""
    if x64 and (c.family == "jax" or c.name == "convkit[jax]"):
        import jax

        jax.config.update("jax_enable_x64", True)


def worker(job_path: str) -> int:
    """The worker process: time one contender on every row of the job, print each result."""
    with open(job_path) as f:
        job = json.load(f)
    if job.get("steady_allocator", True):
        steady()  # before the contender's library allocates anything
    kind = kind_of(job.get("kind", "convolve"))
    c = kind.contender(job["contender"], job["family"])
    _enable_x64(c, job["x64"])
    for row in job["rows"]:
        w, dt = kind.workload(row["workload"]), np.dtype(row["dtype"])
        x, k = w.make(dt)
        ref, tol = np.load(row["ref"], mmap_mode="r"), np.load(row["tol"], mmap_mode="r")
        r = new_result(w, dt, c, x, k)
        planned = prepare_checked(c, w, dt, x, k, ref, tol, r, min_time=job["min_time"],
                                  max_runs=job["max_runs"], method_of=kind.method_of)
        if planned is not None:
            time_alone(c, r, planned, memory=job["memory"])
        print(PREFIX + json.dumps(r.to_json(), default=str), flush=True)
    return 0


def _package() -> tuple[str, str]:
    """(path of this package's ``__init__.py``, its import name) for the worker's BOOT."""
    pkg = __name__.rpartition(".")[0]
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "__init__.py"), pkg


def _run_worker(c: Contender, job: dict, folder: str, progress=None) -> tuple[list[Result], str]:
    """Start one worker, collect its results as they come; (results, why it failed or "")."""
    path = os.path.join(folder, "job.json")
    with open(path, "w") as f:
        json.dump(job, f)
    init, pkg = _package()
    err_path = os.path.join(folder, "worker.err")
    results = []
    with open(err_path, "w") as err:
        proc = subprocess.Popen([sys.executable, "-c", BOOT, init, pkg, path], stdout=subprocess.PIPE,
                                stderr=err, text=True)
        for line in proc.stdout:
            if line.startswith(PREFIX):
                results.append(_result(json.loads(line[len(PREFIX):])))
                if progress is not None:
                    progress.update(1)
        rc = proc.wait()
    if rc == 0 and len(results) == len(job["rows"]):
        return results, ""
    with open(err_path) as f:
        lines = [ln.strip() for ln in f.read().splitlines() if ln.strip()]
    why = " | ".join(lines[-2:])[-200:] or "no message"  # the exception is the last line of a traceback
    return results, f"worker process of {c.name} ended with exit status {rc}: {why}"


def _faster(old: Result | None, new: Result) -> Result:
    """The round to keep for one row: a timed one over one that failed, else the faster one."""
    if old is None or old.seconds is None:
        return new
    if new.seconds is None or new.seconds >= old.seconds:
        return old
    return new


def _result(d: dict) -> Result:
    """A worker's result back from JSON (fields this process's Result lacks are left out)."""
    known = {f.name for f in dataclasses.fields(Result)}
    return Result(**{k: v for k, v in d.items() if k in known})


def _not_run(c: Contender, row: dict, status: str, detail: str, kind: str = "convolve") -> Result:
    """The result of a row the contender's worker never reported."""
    w, dt = kind_of(kind).workload(row["workload"]), np.dtype(row["dtype"])
    shapes = np.empty(w.x_shape, dt), np.empty(w.k_shape, dt)  # for the byte counts only (never touched)
    r = new_result(w, dt, c, *shapes)
    r.status, r.detail = status, detail[:300]
    return r


def run_isolated(rows: list[tuple[Workload, np.dtype]], cons: list[Contender], *, min_time: float,
                 max_runs: int, memory: bool = True, x64: bool = False, progress=None,
                 kind: str = "convolve", rounds: int = 1, steady_allocator: bool = True) -> list[Result]:
    """Check and time every contender on every row, each contender in its own worker process.

    Results come back in the order of ``run_workload``: row by row, contenders in order.
    ``kind``: ``"convolve"`` or ``"layers"`` (the rows and contenders of a layer suite).
    ``rounds``: run every contender's worker that many times, in turns (contender 1, 2, ...,
    then again), and keep each row's fastest round: one fresh process can be slow as a whole
    (on a 2-core VM the same ``numpy.convolve`` call takes 0.62 ms in one process and 1.1 ms in
    the next), and the best of a few processes compares contenders, not processes.
    ``steady_allocator``: each worker fixes its C allocator's thresholds first
    (:func:`.allocator.steady`)."""
    found: dict[tuple[int, int], Result] = {}
    with tempfile.TemporaryDirectory(prefix="convkit-bench-") as folder:
        job_rows = _save_oracles(rows, folder, progress, kind_of(kind).oracle)
        for ci, c in [(ci, c) for _ in range(max(rounds, 1)) for ci, c in enumerate(cons)]:
            if progress is not None:
                progress.set_postfix_str(c.name)
            if not c.available[0]:
                for ri, row in enumerate(job_rows):
                    found[ri, ci] = _not_run(c, row, "unavailable", c.available[1], kind)
                if progress is not None:
                    progress.update(len(job_rows))
                continue
            job = {"kind": kind, "contender": c.name, "family": c.family, "x64": x64, "rows": job_rows,
                   "min_time": min_time, "max_runs": max_runs, "memory": memory,
                   "steady_allocator": steady_allocator}
            got, failure = _run_worker(c, job, folder, progress)
            by_key = {(r.workload, r.dtype): r for r in got}
            for ri, row in enumerate(job_rows):
                r = by_key.get((row["workload"]["name"], row["dtype"]))
                r = r if r is not None else _not_run(c, row, "error", failure, kind)
                found[ri, ci] = _faster(found.get((ri, ci)), r)
            if progress is not None:
                progress.update(len(job_rows) - len(got))
    return [found[ri, ci] for ri in range(len(rows)) for ci in range(len(cons))]
