"""Summaries, the terminal and Markdown tables, JSON and the PNG plot."""

from __future__ import annotations

import json
import math
import os
import platform
import sys
from typing import Any

from .contenders import SCIPY_PEERS
from .runner import Result

__all__ = ["summarize", "environment", "table", "markdown", "write_json", "plot"]

OVERHEAD_TARGET_S = 20e-6
MEMORY_TARGET = 4.0


def _rows(results: list[Result]):
    """(workload, dtype) -> {contender: Result}, in suite order."""
    rows: dict[tuple[str, str], dict[str, Result]] = {}
    for r in results:
        rows.setdefault((r.workload, r.dtype), {})[r.contender] = r
    return rows


def summarize(results: list[Result], backend: str = "numpy") -> dict[str, Any]:
    """Per-row ratios (peer time / convkit time: > 1 means convkit is faster) and the targets."""
    me = f"convkit[{backend}]"
    out_rows, auto_ratios = [], []
    for (wl, dt), row in _rows(results).items():
        ck = row.get(me)
        if ck is None or ck.seconds is None:
            continue
        scipy_times = {n: row[n].seconds for n in SCIPY_PEERS if n in row and row[n].seconds}
        best_name = min(scipy_times, key=scipy_times.get) if scipy_times else None
        auto = row.get("scipy.signal.convolve")
        native = {n: r.seconds for n, r in row.items()
                  if r.family == backend and r.family != "convkit" and r.seconds}
        best_native = min(native, key=native.get) if native else None
        entry = {
            "workload": wl, "dtype": dt, "group": ck.group, "describe": ck.describe, "method": ck.method,
            "convkit_s": ck.seconds,
            "fastest_scipy": best_name,
            "fastest_scipy_s": scipy_times.get(best_name),
            "ratio_vs_fastest_scipy": (scipy_times[best_name] / ck.seconds) if best_name else None,
            "ratio_vs_scipy_auto": (auto.seconds / ck.seconds) if auto and auto.seconds else None,
            "fastest_native_peer": best_native,
            "ratio_vs_fastest_native_peer": (native[best_native] / ck.seconds) if best_native else None,
            "peak_extra_bytes": ck.peak_extra_bytes,
            "peak_extra_over_input": (ck.peak_extra_bytes / ck.input_bytes)
            if ck.peak_extra_bytes is not None else None,
            "others": {n: r.seconds for n, r in row.items() if n != me},
        }
        if ck.group == "overhead":
            direct = row.get("scipy.signal.convolve(direct)")
            if direct and direct.seconds:
                entry["overhead_vs_scipy_direct_s"] = ck.seconds - direct.seconds
        elif entry["ratio_vs_scipy_auto"]:
            auto_ratios.append(entry["ratio_vs_scipy_auto"])
        out_rows.append(entry)
    geo = math.exp(sum(map(math.log, auto_ratios)) / len(auto_ratios)) if auto_ratios else None
    slower = [f"{e['workload']} {e['dtype']}" for e in out_rows
              if e["ratio_vs_fastest_scipy"] is not None and e["ratio_vs_fastest_scipy"] < 1.0]
    native_rows = [e for e in out_rows if e["ratio_vs_fastest_native_peer"] is not None]
    slower_native = [f"{e['workload']} {e['dtype']}" for e in native_rows
                     if e["ratio_vs_fastest_native_peer"] < 1.0]
    overhead = [e["overhead_vs_scipy_direct_s"] for e in out_rows if "overhead_vs_scipy_direct_s" in e]
    mem = [e for e in out_rows if e["group"] == "2-D" and e["method"] in ("fft", "oa")
           and e["peak_extra_over_input"] is not None]
    return {
        "backend": me,
        "rows": out_rows,
        "geomean_vs_scipy_auto": geo,
        "targets": {
            "faster_than_fastest_scipy_everywhere": not slower,
            "slower_than_fastest_scipy": slower,
            "compared_with_native_peers": bool(native_rows),
            "slower_than_fastest_native_peer": slower_native,
            "geomean_vs_scipy_auto_at_least_2": geo is not None and geo >= 2.0,
            "overhead_s": max(overhead) if overhead else None,
            "overhead_within_20us": bool(overhead) and max(overhead) <= OVERHEAD_TARGET_S,
            "fft_2d_peak_over_input_max": max((e["peak_extra_over_input"] for e in mem), default=None),
            "fft_2d_peak_within_4x": all(e["peak_extra_over_input"] <= MEMORY_TARGET for e in mem),
        },
    }


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": sys.version.split()[0]}
    for name in ("convkit", "numpy", "scipy", "jax", "jaxlib", "cupy-cuda12x", "cupy-cuda13x", "cupy",
                 "matplotlib", "tqdm"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(cons) -> dict[str, Any]:
    """Machine, versions and the device each contender ran on."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        cores = os.cpu_count()
    mem = None
    try:
        with open("/proc/meminfo") as f:
            mem = int(f.readline().split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return {
        "machine": {"platform": platform.platform(), "cpu": _cpu(), "cores": cores, "memory_bytes": mem,
                    "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
                    "env": {k: v for k, v in os.environ.items()
                            if k.startswith(("OMP_", "OPENBLAS_", "MKL_", "CONVKIT_", "JAX_", "XLA_"))}},
        "versions": _versions(),
        "devices": {c.name: (c.device if c.available[0] else f"unavailable: {c.available[1]}") for c in cons},
    }


def _fmt_t(s: float | None) -> str:
    if s is None:
        return "-"
    if s < 1e-3:
        return f"{s * 1e6:.1f} us"
    if s < 1:
        return f"{s * 1e3:.2f} ms"
    return f"{s:.2f} s"


def _fmt_r(r: float | None) -> str:
    return "-" if r is None else f"{r:.2f}x"


def _table_rows(summary: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    head = ["workload", "dtype", "method", "convkit", "fastest SciPy", "vs fastest", "vs scipy auto",
            "peak extra / input"]
    native = any(e["fastest_native_peer"] for e in summary["rows"])
    if native:
        head.insert(7, "vs fastest same-library peer")
    rows = []
    for e in summary["rows"]:
        pk = e["peak_extra_over_input"]
        row = [e["describe"], e["dtype"], e["method"], _fmt_t(e["convkit_s"]),
               f"{_fmt_t(e['fastest_scipy_s'])} ({(e['fastest_scipy'] or '-').replace('scipy.', '')})",
               _fmt_r(e["ratio_vs_fastest_scipy"]), _fmt_r(e["ratio_vs_scipy_auto"]),
               "-" if pk is None else f"{pk:.2f}"]
        if native:
            name = (e["fastest_native_peer"] or "-").rsplit(".", 1)[-1]
            row.insert(7, f"{_fmt_r(e['ratio_vs_fastest_native_peer'])} ({name})")
        rows.append(row)
    return head, rows


def _footer(summary: dict[str, Any]) -> list[str]:
    t = summary["targets"]
    geo = summary["geomean_vs_scipy_auto"]
    lines = []
    if geo is not None:
        lines.append(f"geometric mean speed-up vs scipy.signal.convolve(auto): {_fmt_r(geo)} (target >= 2x)")
    if t["overhead_s"] is not None:
        lines.append(f"tiny-call overhead vs scipy.signal.convolve(direct): {t['overhead_s'] * 1e6:+.1f} us "
                     "(target <= 20 us)")
    if t["fft_2d_peak_over_input_max"] is not None:
        lines.append(f"2-D FFT workloads: peak memory beyond the output <= "
                     f"{t['fft_2d_peak_over_input_max']:.2f}x the input bytes (target <= 4x)")
    if any(e["ratio_vs_fastest_scipy"] is not None for e in summary["rows"]):
        lines.append("slower than the fastest SciPy function: "
                     + (", ".join(t["slower_than_fastest_scipy"]) or "none"))
    if t.get("compared_with_native_peers"):
        lines.append(f"slower than the fastest {summary['backend'][8:-1]} library peer: "
                     + (", ".join(t["slower_than_fastest_native_peer"]) or "none"))
    return lines


def table(summary: dict[str, Any], results: list[Result]) -> str:
    """The terminal table (ratios > 1: convkit is faster), then failures of any contender."""
    head, rows = _table_rows(summary)
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:{'<' if i < 3 else '>'}{w}}}" for i, w in enumerate(widths))
    lines = [fmt.format(*head), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*r) for r in rows]
    lines += [""] + _footer(summary)
    issues = sorted({f"{r.contender}: {r.status} {r.detail}".strip() for r in results
                     if r.status in ("wrong", "error", "unavailable")})
    if issues:
        lines += ["", "not timed:"] + [f"  {i}" for i in issues]
    return "\n".join(lines)


def markdown(summary: dict[str, Any], env: dict[str, Any]) -> str:
    head, rows = _table_rows(summary)
    m = env["machine"]
    load = f" (load average {m['load_average'][0]:.1f})" if m.get("load_average") else ""
    out = [f"Machine: {m['cpu']}, {m['cores']} cores{load}; numpy {env['versions'].get('numpy')}, "
           f"scipy {env['versions'].get('scipy')}. Times are medians; ratios are SciPy time / convkit time "
           "(above 1: convkit is faster).", "",
           "| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(c.replace("|", "/") for c in r) + " |" for r in rows]
    out += [""] + [f"- {line}" for line in _footer(summary)]
    return "\n".join(out) + "\n"


def write_json(path: str, summary: dict[str, Any], env: dict[str, Any], results: list[Result],
               options: dict[str, Any]) -> None:
    doc = {"options": options, **env, "summary": summary, "results": [r.to_json() for r in results]}
    with open(path, "w") as f:
        json.dump(doc, f, indent=1, default=str)


def plot(path: str, summary: dict[str, Any]) -> None:
    """Bar chart of the speed-up per workload (log scale; 1 = as fast as SciPy)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [e for e in summary["rows"] if e["ratio_vs_fastest_scipy"]]
    labels = [f"{e['workload']} {e['dtype'].replace('float', 'f')}" for e in rows]
    fast = [e["ratio_vs_fastest_scipy"] for e in rows]
    auto = [e["ratio_vs_scipy_auto"] or float("nan") for e in rows]
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(rows) + 2), 4.5))
    xs = range(len(rows))
    ax.bar([i - 0.2 for i in xs], auto, 0.4, label="vs scipy.signal.convolve (auto)")
    ax.bar([i + 0.2 for i in xs], fast, 0.4, label="vs fastest SciPy function")
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_yscale("log")
    from matplotlib.ticker import FuncFormatter

    fmt = FuncFormatter(lambda v, _: f"{v:g}x")
    ax.yaxis.set_major_formatter(fmt)
    ax.yaxis.set_minor_formatter(fmt)
    ax.tick_params(axis="y", which="minor", labelsize=7)
    for i, v in zip(xs, fast):
        ax.annotate(f"{v:.2f}", (i + 0.2, v), ha="center", va="bottom", fontsize=6)
    ax.set_xticks(list(xs))
    ax.set_xticklabels(labels, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("speed-up of convkit (x)")
    ax.set_title(f"{summary['backend']} speed-up per workload")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
