"""Command line of the benchmark suite."""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from .contenders import contenders
from .report import environment, markdown, plot, summarize, table, write_json
from .runner import run_workload
from .workloads import SUITES, suite

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    from . import __doc__ as doc

    p = argparse.ArgumentParser(prog="python -m benchmarks", description=doc,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--backends", default="numpy",
                   help="convkit backends to time, comma separated (numpy, jax, cupy), or 'available' "
                        "for every built-in backend that can run here; each also brings its library's peers")
    p.add_argument("--peers", default=None,
                   help="peer families to time (scipy, jax, cupy), comma separated; default: scipy plus "
                        "the families of --backends; 'none' for convkit only")
    p.add_argument("--suite", default="standard", choices=sorted(SUITES))
    p.add_argument("--dtype", default="float32,float64", help="comma separated: float32, float64")
    p.add_argument("--only", default=None, help="run only workloads whose name contains one of these "
                                                "(comma separated)")
    p.add_argument("--out", default="bench-results", help="folder for results.json, results.md, speedup.png")
    p.add_argument("--min-time", type=float, default=None,
                   help="seconds of repeated runs per measurement (default: 0.05 smoke, 0.3 otherwise)")
    p.add_argument("--max-runs", type=int, default=15, help="most repeated runs per measurement")
    p.add_argument("--no-memory", action="store_true", help="skip the tracemalloc peak-memory run")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _backends(spec: str) -> list[str]:
    """``--backends`` -> names; ``available`` = the built-in backends that can run here."""
    if spec.strip() == "available":
        import convkit

        rows = {b.name: b for b in convkit.list_backends()}
        names = [n for n in ("numpy", "jax", "cupy") if n in rows and rows[n].available]
        for n in ("jax", "cupy"):
            if n in rows and not rows[n].available:
                print(f"convkit[{n}] not benchmarked: {rows[n].reason}")
        return names
    return [b.strip() for b in spec.split(",") if b.strip()]


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    backends = _backends(args.backends)
    peers = None
    if args.peers is not None:
        names = [p.strip() for p in args.peers.split(",") if p.strip()]
        peers = [] if names == ["none"] else names
    dtypes = [np.dtype(d.strip()) for d in args.dtype.split(",") if d.strip()]
    if "jax" in backends or (peers and "jax" in peers):
        try:  # float64 workloads need 64-bit JAX arrays; recorded in the JSON options
            import jax

            jax.config.update("jax_enable_x64", True)
        except Exception:
            pass
    workloads = suite(args.suite)
    if args.only:
        keys = [k.strip() for k in args.only.split(",") if k.strip()]
        workloads = [w for w in workloads if any(k in w.name for k in keys)]
    cons = contenders(backends, peers)
    min_time = args.min_time if args.min_time is not None else (0.05 if args.suite == "smoke" else 0.3)
    total = len(workloads) * len(dtypes) * len(cons)
    bar = None
    if not args.no_progress:
        try:
            from tqdm import tqdm

            bar = tqdm(total=total, desc="benchmarks", unit="call", file=sys.stderr)
        except ImportError:
            bar = None
    results = []
    t0 = time.time()
    for w in workloads:
        for dt in dtypes:
            if bar is not None:
                bar.set_postfix_str(f"{w.name} {dt.name}")
            results += run_workload(w, dt, cons, min_time=min_time, max_runs=args.max_runs,
                                    memory=not args.no_memory, progress=bar)
    if bar is not None:
        bar.close()
    env = environment(cons)
    os.makedirs(args.out, exist_ok=True)
    options = {"suite": args.suite, "backends": backends, "peers": peers, "dtypes": [d.name for d in dtypes],
               "min_time": min_time, "max_runs": args.max_runs, "wall_seconds": round(time.time() - t0, 1),
               "argv": sys.argv[1:] if argv is None else argv}
    for b in backends:
        s = summarize(results, b)
        if not s["rows"] and b != backends[0]:
            why = next((r.detail for r in results if r.contender == f"convkit[{b}]" and r.detail),
                       "no results")
            print(f"\n== convkit[{b}]: not timed ({why})")
            continue
        suffix = "" if b == backends[0] else f"-{b}"
        print(f"\n== convkit[{b}] ({args.suite} suite) ==")
        print(table(s, results))
        with open(os.path.join(args.out, f"results{suffix}.md"), "w") as f:
            f.write(markdown(s, env))
        plot(os.path.join(args.out, f"speedup{suffix}.png"), s)
        if b == backends[0]:
            write_json(os.path.join(args.out, "results.json"), s, env, results, options)
    print(f"\nwrote {os.path.join(args.out, 'results.json')}, results.md, speedup.png")
    return 0
