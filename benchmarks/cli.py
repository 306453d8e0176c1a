"""Command line of the benchmark suite (``python -m benchmarks``, ``convkit bench``).

Everything a run is asked for is checked before anything is timed: an unknown or unavailable
backend, an unknown or unavailable peer family, an unsupported dtype or an ``--only`` that
matches no workload is refused at once (exit status 2, the reason on stderr, nothing written).
Exit status 1: no convkit result could be timed (nothing is written then either), or, with
``--check``, a target was MISSED.

``--suite layers`` (and its seconds-long ``layers-smoke``) time :func:`convkit.conv` layers
instead (:mod:`.layers`): the same checks, isolation, files and ``--check``, one table for
every backend, and the two targets of issue 16 (:mod:`.layers_report`).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from . import allocator
from .contenders import FAMILIES, JAX_CALL_ENV, contenders
from .isolate import kind_of, run_isolated
from .layers import LAYER_FAMILIES, LAYER_SUITES, layer_contenders, layer_suite
from .layers_report import layer_markdown, layer_table, missed_layers, summarize_layers
from .report import environment, markdown, missed, plot, summarize, table, write_json
from .runner import run_workload
from .workloads import SUITES, suite

__all__ = ["main", "UsageError"]

PEER_FAMILIES = tuple(FAMILIES)
DTYPES = ("float32", "float64")
ISOLATION = ("process", "gap", "none")


EPILOG = """\
files in --out: results.json (every timing, the machine, each backend's summary and
  verdicts); for the first backend timed results.md and speedup.png, for each further
  one results-<backend>.md and speedup-<backend>.png. Nothing is written when nothing
  could be timed; a refused run writes nothing.
exit status: 0 done (each target printed MET, MISSED or N/A); 1 nothing could be
  timed, or --check and a target MISSED; 2 refused before anything ran (unknown or
  unavailable backend or peer family, bad --dtype, --only matching nothing).
isolation: by default (but for --suite smoke and layers-smoke) each contender is timed in a
  fresh process of its own, one at a time, so no other library's worker threads spin
  meanwhile (--isolation).
layers: --suite layers times convkit.conv (ResNet 3x3 NCHW/NHWC, depthwise, strided, 1-D,
  float64) on numpy, jax and torch (those available; --backends to choose) against torch's
  conv1d/2d and a jitted lax.conv_general_dilated (--peers torch,jax); results.json and
  results.md only; targets: NumPy backend at least as fast as torch conv2d on the ResNet
  3x3 row, JAX backend within 1.1x of lax on it. --suite layers-smoke: the same, tiny.
"""


class UsageError(Exception):
    """A request the suite refuses before timing anything (exit status 2)."""


def _parser(prog: str) -> argparse.ArgumentParser:
    from . import __doc__ as doc

    p = argparse.ArgumentParser(prog=prog, description=doc, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backends", default=None,
                   help="convkit backends to time, comma separated (numpy, jax, cupy, torch, ...), or "
                        "'available' for every backend that can run here; each also brings its library's "
                        "peers. An unknown or unavailable backend is refused before anything runs "
                        "(default: numpy; for the layer suites numpy,jax,torch, those that can run here)")
    p.add_argument("--peers", default=None,
                   help=f"peer families to time ({', '.join(PEER_FAMILIES)}), comma separated; default: "
                        "scipy, plus opencv and torch where installed, plus the families of --backends; "
                        "'none' for convkit only")
    p.add_argument("--suite", default="standard", choices=sorted(SUITES) + sorted(LAYER_SUITES),
                   help="workload sizes: smoke, quick, mid, or standard (the large rows and the mid rows); "
                        "dilated: dilated kernels against torch and zero-stuffed kernels; "
                        "layers: convkit.conv layers against torch and lax (layers-smoke: tiny) "
                        "(default: standard)")
    p.add_argument("--isolation", default=None, choices=ISOLATION,
                   help="process: each contender timed in a fresh process of its own, one at a time (no "
                        "other library's threads spinning meanwhile); gap: in this process, contenders one "
                        "after another, each after an idle --gap; none: in this process, round-robin "
                        "(default: none for smoke, process otherwise)")
    p.add_argument("--rounds", type=int, default=None,
                   help="under --isolation process, time each contender in this many fresh processes (in "
                        "turns) and keep each row's fastest (default: 3 for --suite mid and layers, else 1)")
    p.add_argument("--allocator", default="steady", choices=("steady", "as-is"),
                   help="steady: glibc malloc's mmap and trim thresholds fixed high in every timing process, "
                        "so a timing does not depend on what that process freed before (page faults); "
                        "as-is: the C library's own adaptive thresholds (default: steady)")
    p.add_argument("--jax-call", default="jit", choices=("jit", "eager"),
                   help="how convkit[jax] is called: jit: inside jax.jit (XLA compiles the whole call); "
                        "eager: as written, outside jit, where an eager call on a CPU may run on the NumPy "
                        "backend's engines (the JAX backend's CPU handoff) (default: jit)")
    p.add_argument("--gap", type=float, default=0.3,
                   help="idle seconds before each contender's timing under --isolation gap (default: 0.3)")
    p.add_argument("--dtype", default="float32,float64",
                   help="comma separated: float32, float64 (default: both)")
    p.add_argument("--only", default=None, help="run only workloads whose name contains one of these "
                                                "(comma separated)")
    p.add_argument("--out", default="bench-results",
                   help="folder for results.json, results.md, speedup.png (default: bench-results)")
    p.add_argument("--check", action="store_true",
                   help="exit with status 1 when a target is MISSED (default: report the verdicts, exit 0)")
    p.add_argument("--min-time", type=float, default=None,
                   help="seconds of repeated runs per measurement (default: 0.05 smoke, 0.3 otherwise)")
    p.add_argument("--max-runs", type=int, default=15,
                   help="most repeated runs per measurement (default: 15)")
    p.add_argument("--no-memory", action="store_true", help="skip the tracemalloc peak-memory run")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _split(spec: str) -> list[str]:
    return list(dict.fromkeys(s.strip().lower() for s in spec.split(",") if s.strip()))


def _backends(spec: str) -> list[str]:
    """``--backends`` -> names, each checked to run here; ``available`` = every backend that can."""
    import convkit

    if spec.strip().lower() == "available":
        names = []
        for row in convkit.list_backends():
            if row.available:
                names.append(row.name)
            else:
                print(f"convkit[{row.name}] not benchmarked: {row.reason}")
        return names
    names = _split(spec)
    if not names:
        raise UsageError("--backends names no backend")
    for name in names:
        try:
            convkit.get_backend(name)
        except Exception as exc:  # unknown (ValueError) or unavailable (ImportError): refused
            raise UsageError(f"--backends {name}: {exc}") from None
    return names


def _peers(spec: str | None, families=PEER_FAMILIES, what: str = "a peer family") -> list[str] | None:
    """``--peers``: ``None`` (the default peers), ``[]`` for ``none``, or families of ``families``."""
    if spec is None:
        return None
    names = _split(spec)
    if names == ["none"]:
        return []
    unknown = [n for n in names if n not in families]
    if unknown:
        raise UsageError(f"--peers {','.join(unknown)}: not {what}; expected some of "
                         f"{', '.join(families)} or 'none'")
    return names


def _dtypes(spec: str) -> list[np.dtype]:
    names = _split(spec)
    bad = [n for n in names if n not in DTYPES]
    if bad or not names:
        raise UsageError(f"--dtype {spec!r}: expected float32, float64 or both (comma separated)")
    return [np.dtype(n) for n in names]


def _refuse_unavailable_peers(cons, peers: list[str] | None) -> None:
    """A peer family asked for by name whose library cannot run here is refused."""
    for family in peers or ():
        fam = [c for c in cons if c.family == family]
        if fam and not any(c.available[0] for c in fam):
            raise UsageError(f"--peers {family}: not available here ({fam[0].available[1]})")


def _check_out(path: str) -> None:
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(f"--out {path}: exists and is not a folder")


def _is_smoke(suite_name: str) -> bool:
    """The seconds-long suites whose job is to check that everything runs."""
    return suite_name in ("smoke", "layers-smoke")


def default_isolation(suite_name: str) -> str:
    """``process`` for the quick, mid, standard and layers suites; ``none`` (round-robin in this
    process) for the smoke suites, whose job is to check that everything runs, in seconds."""
    return "none" if _is_smoke(suite_name) else "process"


def default_rounds(suite_name: str) -> int:
    """Fresh processes per contender under ``--isolation process``: 3 for the mid, layers and
    standard suites (one process can be slow as a whole on a small VM, for seconds or for the
    whole process; the best of three compares the contenders), 1 for the quick suite (the README's
    main job: a first look, in about a minute)."""
    return 3 if suite_name in ("mid", "layers", "standard") else 1


def _enable_jax_x64(backends: list[str], peers: list[str] | None) -> bool:
    """float64 workloads need 64-bit JAX arrays: turned on when JAX is timed (and in its workers)."""
    if "jax" not in backends and not (peers and "jax" in peers):
        return False
    try:
        import jax

        jax.config.update("jax_enable_x64", True)
    except Exception:
        return False
    return True


def _rounds(args, isolation: str) -> int:
    """``--rounds`` (or the suite's default); 1 unless each contender runs in its own process."""
    if isolation != "process":
        return 1
    rounds = args.rounds if args.rounds is not None else default_rounds(args.suite)
    if rounds < 1:
        raise UsageError(f"--rounds {rounds}: expected a positive number of rounds")
    return rounds


def _progress(total: int, off: bool):
    """A tqdm progress bar on stderr, or None (``--no-progress``, or tqdm not installed)."""
    if off:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc="benchmarks", unit="call", file=sys.stderr)


def _matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def main(argv: list[str] | None = None, prog: str = "python -m benchmarks") -> int:
    """Run the suite; return the exit status (0, 1: nothing timed or --check missed, 2: refused)."""
    args = _parser(prog).parse_args(argv)
    if args.suite in LAYER_SUITES:
        return _main_layers(args, prog, argv)
    try:
        backends = _backends("numpy" if args.backends is None else args.backends)
        if not backends:
            raise UsageError("--backends available: no backend can run here")
        peers = _peers(args.peers)
        dtypes = _dtypes(args.dtype)
        rows = _select_rows(args, suite)
        _check_out(args.out)
        _rounds(args, args.isolation or default_isolation(args.suite))  # refused here, before any work
        x64 = _enable_jax_x64(backends, peers)
        cons = contenders(backends, peers)
        _refuse_unavailable_peers(cons, peers)
        if args.gap < 0:
            raise UsageError(f"--gap {args.gap}: expected a number of seconds >= 0")
    except UsageError as exc:
        print(f"{prog}: error: {exc}; nothing was run or written", file=sys.stderr)
        return 2
    if not _matplotlib():
        print("matplotlib is not installed: no speedup*.png will be written (pip install 'pyconvkit[bench]')",
              file=sys.stderr)
    min_time = args.min_time if args.min_time is not None else (0.05 if _is_smoke(args.suite) else 0.3)
    isolation = args.isolation or default_isolation(args.suite)
    os.environ[JAX_CALL_ENV] = args.jax_call  # read by convkit[jax]'s contender, in every timing process
    t0 = time.time()
    results = _time_rows(rows, cons, args, isolation, x64, min_time)
    wall = time.time() - t0
    env = environment(cons)
    options = {"suite": args.suite, "backends": backends, "peers": peers, "dtypes": [d.name for d in dtypes],
               "min_time": min_time, "max_runs": args.max_runs, "wall_seconds": round(wall, 1),
               "isolation": isolation, "rounds": _rounds(args, isolation),
               "gap": args.gap if isolation == "gap" else None, "allocator": _allocator_note(args),
               "jax_call": args.jax_call, "check": args.check,
               "argv": sys.argv[1:] if argv is None else list(argv)}
    summaries = {b: summarize(results, b) for b in backends}
    timed = [b for b in backends if summaries[b]["rows"]]
    if not timed:
        for b in backends:
            print(f"\n== convkit[{b}]: nothing timed ==\n{table(summaries[b], results)}")
        print(f"\nno convkit result could be timed: nothing written to {args.out}", file=sys.stderr)
        return 1
    os.makedirs(args.out, exist_ok=True)
    written, misses = [], []
    first = timed[0]
    for b in backends:
        s = summaries[b]
        if not s["rows"]:
            why = "; ".join(s["failed"][:3]) or "no results"
            print(f"\n== convkit[{b}]: not timed ({why}); no files written for it")
            misses += [f"convkit[{b}]: {m}" for m in missed(s)]
            continue
        suffix = "" if b == first else f"-{b}"
        print(f"\n== convkit[{b}] ({args.suite} suite) ==")
        print(table(s, results))
        md = os.path.join(args.out, f"results{suffix}.md")
        with open(md, "w") as f:
            f.write(markdown(s, env, args.suite))
        written.append(md)
        png = os.path.join(args.out, f"speedup{suffix}.png")
        if _matplotlib() and plot(png, s, env, args.suite):
            written.append(png)
        misses += [f"convkit[{b}]: {m}" for m in missed(s)]
    path = os.path.join(args.out, "results.json")
    write_json(path, summaries[first], env, results, options, summaries)
    written.insert(0, path)
    print(f"\nwrote {', '.join(written)} ({wall:.0f} s of benchmarks)")
    if misses:
        print(f"\n{len(misses)} target(s) MISSED:" + "".join(f"\n  {m}" for m in misses))
        if args.check:
            print("--check: exit status 1")
            return 1
        print("(exit status 0: --check makes a MISSED target exit with status 1)")
    else:
        print("\nevery target MET (or N/A)")
    return 0


# ----------------------------------------------------------------------------- the layer suites


def _layer_backends(spec: str | None) -> list[str]:
    """``--backends`` of a layer suite; by default numpy, jax and torch, those that can run here
    (each left out is listed with its reason)."""
    if spec is not None:
        return _backends(spec)
    import convkit

    names = []
    for name in ("numpy", "jax", "torch"):
        try:
            convkit.get_backend(name)
            names.append(name)
        except Exception as exc:
            print(f"convkit[{name}] not benchmarked: {exc}")
    return names


def _layer_peers(spec: str | None) -> list[str] | None:
    """``--peers`` of a layer suite: ``torch``, ``jax`` or ``none`` (the convolve suites' SciPy,
    OpenCV and CuPy peers compute no layers)."""
    return _peers(spec, LAYER_FAMILIES, "a peer family of the layer suites")


def _select_rows(args, workloads_of) -> list[tuple]:
    """The (workload, dtype) rows asked for: the suite's workloads (``workloads_of(name)``),
    ``--only`` and ``--dtype`` applied; refused when none is left."""
    workloads = workloads_of(args.suite)
    if args.only:
        keys = _split(args.only)
        workloads = [w for w in workloads if any(k in w.name.lower() for k in keys)]
        if not workloads:
            raise UsageError(f"--only {args.only}: matches no workload of the {args.suite} suite "
                             f"({', '.join(w.name for w in workloads_of(args.suite))})")
    rows = [(w, dt) for w in workloads for dt in _dtypes(args.dtype) if w.runs_in(dt)]
    if not rows:
        raise UsageError(f"--dtype {args.dtype}: no workload selected runs in it "
                         f"({', '.join(w.name for w in workloads)})")
    return rows


def _allocator_note(args) -> str:
    """What the timing processes' C allocator ran with (results.json ``options.allocator``)."""
    if args.allocator != "steady":
        return "as-is"
    return allocator.steady() or "as-is (not glibc)"


def _time_rows(rows, cons, args, isolation: str, x64: bool, min_time: float, kind: str = "convolve"):
    """Every row checked and timed: in one worker process per contender (``isolation`` process,
    ``--rounds`` times), else in this process (round-robin, or after an idle gap). ``kind``:
    ``"convolve"`` or ``"layers"`` (its oracle and method labels)."""
    rounds = _rounds(args, isolation)
    bar = _progress(len(rows) * len(cons) * rounds, args.no_progress)
    steady = args.allocator == "steady"
    if isolation == "process":
        results = run_isolated(rows, cons, min_time=min_time, max_runs=args.max_runs,
                               memory=not args.no_memory, x64=x64, progress=bar, kind=kind, rounds=rounds,
                               steady_allocator=steady)
    else:
        if steady:
            allocator.steady()
        k = kind_of(kind)
        results = []
        for w, dt in rows:
            if bar is not None:
                bar.set_postfix_str(f"{w.name} {dt.name}")
            results += run_workload(w, dt, cons, min_time=min_time, max_runs=args.max_runs,
                                    memory=not args.no_memory, progress=bar,
                                    schedule="sequential" if isolation == "gap" else "round-robin",
                                    gap=args.gap if isolation == "gap" else 0.0,
                                    oracle_fn=k.oracle, method_of=k.method_of)
    if bar is not None:
        bar.close()
    return results


def _main_layers(args, prog: str, argv: list[str] | None) -> int:
    """``--suite layers`` / ``layers-smoke``: check, time and report ``convkit.conv`` layers."""
    try:
        backends = _layer_backends(args.backends)
        if not backends:
            raise UsageError("no convkit backend can run here")
        peers = _layer_peers(args.peers)
        rows = _select_rows(args, layer_suite)
        _check_out(args.out)
        _rounds(args, args.isolation or default_isolation(args.suite))  # refused here, before any work
        if args.gap < 0:
            raise UsageError(f"--gap {args.gap}: expected a number of seconds >= 0")
        x64 = _enable_jax_x64(backends, peers)
        cons = layer_contenders(backends, peers)
        _refuse_unavailable_peers(cons, peers)
    except UsageError as exc:
        print(f"{prog}: error: {exc}; nothing was run or written", file=sys.stderr)
        return 2
    min_time = args.min_time if args.min_time is not None else (0.05 if _is_smoke(args.suite) else 0.3)
    isolation = args.isolation or default_isolation(args.suite)
    t0 = time.time()
    results = _time_rows(rows, cons, args, isolation, x64, min_time, kind="layers")
    wall = time.time() - t0
    env = environment(cons)
    summary = summarize_layers(results, {w.name: w.target for w, _ in rows})
    print(f"\n== convkit.conv ({args.suite} suite) ==")
    print(layer_table(summary, results))
    if not summary["timed_convkit"]:
        print(f"\nno convkit result could be timed: nothing written to {args.out}", file=sys.stderr)
        return 1
    options = {"suite": args.suite, "backends": backends, "peers": peers, "dtypes": _split(args.dtype),
               "min_time": min_time, "max_runs": args.max_runs, "wall_seconds": round(wall, 1),
               "isolation": isolation, "rounds": _rounds(args, isolation),
               "gap": args.gap if isolation == "gap" else None, "allocator": _allocator_note(args),
               "check": args.check, "argv": sys.argv[1:] if argv is None else list(argv)}
    os.makedirs(args.out, exist_ok=True)
    md = os.path.join(args.out, "results.md")
    with open(md, "w") as f:
        f.write(layer_markdown(summary, env, args.suite))
    path = os.path.join(args.out, "results.json")
    write_json(path, summary, env, results, options, {"layers": summary})
    print(f"\nwrote {path}, {md} ({wall:.0f} s of benchmarks)")
    return _layer_exit(missed_layers(summary), args.check)


def _layer_exit(misses: list[str], check: bool) -> int:
    """Print the MISSED targets (with their numbers); 1 under ``--check`` when there are any."""
    if not misses:
        print("\nevery target MET (or N/A)")
        return 0
    print(f"\n{len(misses)} target(s) MISSED:" + "".join(f"\n  {m}" for m in misses))
    if check:
        print("--check: exit status 1")
        return 1
    print("(exit status 0: --check makes a MISSED target exit with status 1)")
    return 0
