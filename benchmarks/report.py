"""Summaries, the terminal and Markdown tables, JSON and the PNG plot."""

from __future__ import annotations

import json
import math
import os
import platform
import sys
from typing import Any

from .contenders import REFERENCE_ONLY, SCIPY_PEERS
from .runner import Result

__all__ = ["summarize", "verdicts", "verdict_lines", "missed", "environment", "table", "markdown",
           "write_json", "plot", "figure"]

# The targets (module constants: a study or a test may change them before a run). Each is a
# verdict, MET / MISSED / N/A, printed under the table and written into results.json and the
# Markdown; ``--check`` makes a MISSED one a non-zero exit.
FASTEST_PEER_MIN_RATIO = 1.0  # numpy: at least as fast as the fastest peer of any library, every row
FASTEST_SCIPY_MIN_RATIO = 1.0  # numpy: at least as fast as the fastest SciPy function, every row
GEOMEAN_TARGET = 2.0  # numpy: geometric mean speed-up over scipy.signal.convolve(auto)
OVERHEAD_TARGET_S = 20e-6  # numpy: the tiny call's time beyond scipy.signal.convolve(direct)
MEMORY_TARGET = 4.0  # numpy: 2-D FFT rows' peak memory beyond the output, in input bytes
NATIVE_MIN_RATIO = 1.0  # other backends: at least as fast as the fastest same-library peer, every row

#: the peer library of each backend's own family (the "same-library peer" of its native target)
NATIVE_PEERS = {"jax": "jax.scipy.signal", "cupy": "cupyx.scipy (signal, ndimage)",
                "torch": "torch.nn.functional"}


def _on_cpu(device: str) -> bool:
    """Whether a contender's device is the host CPU (``cpu``, ``cpu:0``, ``TFRT_CPU_0``)."""
    return not device or "cpu" in device.lower()


def fastest_peer(row: dict[str, Result], me: str) -> tuple[str | None, float | None]:
    """(name, seconds) of the fastest peer timed on this row: any library but convkit (SciPy,
    OpenCV, torch, jax.scipy, cupyx), on the same kind of device as ``me`` (a CPU backend is not
    measured against a GPU peer), leaving out the overhead target's reference call."""
    dev_cpu = _on_cpu(row[me].device)
    times = {n: r.seconds for n, r in row.items()
             if r.family != "convkit" and n not in REFERENCE_ONLY and r.seconds
             and _on_cpu(r.device) == dev_cpu}
    if not times:
        return None, None
    name = min(times, key=times.get)
    return name, times[name]


def _base_method(method: str) -> str:
    """``"fft[pocketfft]"`` -> ``"fft"``: the method without the engine a backend may name."""
    return method.split("[", 1)[0]


def _rows(results: list[Result]):
    """(workload, dtype) -> {contender: Result}, in suite order."""
    rows: dict[tuple[str, str], dict[str, Result]] = {}
    for r in results:
        rows.setdefault((r.workload, r.dtype), {})[r.contender] = r
    return rows


def summarize(results: list[Result], backend: str = "numpy") -> dict[str, Any]:
    """Per-row ratios (peer time / convkit time: > 1 means convkit is faster), the targets and
    their verdicts."""
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
        peer, peer_s = fastest_peer(row, me)
        entry = {
            "workload": wl, "dtype": dt, "group": ck.group, "describe": ck.describe, "method": ck.method,
            "convkit_s": ck.seconds,
            "fastest_peer": peer,
            "fastest_peer_s": peer_s,
            "ratio_vs_fastest_peer": (peer_s / ck.seconds) if peer else None,
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
    slower_peer = [f"{e['workload']} {e['dtype']}" for e in out_rows
                   if e["ratio_vs_fastest_peer"] is not None
                   and e["ratio_vs_fastest_peer"] < FASTEST_PEER_MIN_RATIO]
    slower = [f"{e['workload']} {e['dtype']}" for e in out_rows
              if e["ratio_vs_fastest_scipy"] is not None
              and e["ratio_vs_fastest_scipy"] < FASTEST_SCIPY_MIN_RATIO]
    native_rows = [e for e in out_rows if e["ratio_vs_fastest_native_peer"] is not None]
    slower_native = [f"{e['workload']} {e['dtype']}" for e in native_rows
                     if e["ratio_vs_fastest_native_peer"] < NATIVE_MIN_RATIO]
    overhead = [e["overhead_vs_scipy_direct_s"] for e in out_rows if "overhead_vs_scipy_direct_s" in e]
    mem = [e for e in out_rows if e["group"] == "2-D" and _base_method(e["method"]) in ("fft", "oa")
           and e["peak_extra_over_input"] is not None]
    failed = [f"{r.workload} {r.dtype}: {r.status} {r.detail}".strip() for r in results
              if r.contender == me and r.status in ("wrong", "error")]
    summary = {
        "backend": me,
        "rows": out_rows,
        "geomean_vs_scipy_auto": geo,
        "failed": failed,
        "targets": {
            "faster_than_fastest_peer_everywhere": not slower_peer,
            "slower_than_fastest_peer": slower_peer,
            "faster_than_fastest_scipy_everywhere": not slower,
            "slower_than_fastest_scipy": slower,
            "compared_with_native_peers": bool(native_rows),
            "slower_than_fastest_native_peer": slower_native,
            "geomean_vs_scipy_auto_at_least_2": geo is not None and geo >= GEOMEAN_TARGET,
            "overhead_s": max(overhead) if overhead else None,
            "overhead_within_20us": bool(overhead) and max(overhead) <= OVERHEAD_TARGET_S,
            "fft_2d_peak_over_input_max": max((e["peak_extra_over_input"] for e in mem), default=None),
            "fft_2d_peak_within_4x": all(e["peak_extra_over_input"] <= MEMORY_TARGET for e in mem)
            if mem else None,
        },
    }
    summary["verdicts"] = verdicts(summary)
    return summary


def _verdict(key: str, description: str, ok: bool | None, measured: str, detail=()) -> dict[str, Any]:
    return {"target": key, "description": description, "measured": measured,
            "verdict": "N/A" if ok is None else "MET" if ok else "MISSED", "detail": list(detail)}


def _worst(rows, key: str) -> str:
    e = min(rows, key=lambda e: e[key])
    return f"{e[key]:.2f}x ({e['workload']} {e['dtype']})"


def _every_row(key: str, what: str, rows, ratio: str, threshold: float, none: str) -> dict[str, Any]:
    """The verdict "``ratio`` >= ``threshold`` on every row that has it" (N/A: no row has it)."""
    timed = [e for e in rows if e[ratio] is not None]
    slow = [e for e in timed if e[ratio] < threshold]
    measured = (none if not timed else
                f"slower on {len(slow)} of {len(timed)} rows, worst {_worst(timed, ratio)}" if slow
                else f"every row, slowest {_worst(timed, ratio)}")
    return _verdict(key, f"{what} (ratio >= {threshold:g})", (not slow) if timed else None, measured,
                    [f"{e['workload']} {e['dtype']}: {e[ratio]:.2f}x ({_peer_of(e, ratio)})" for e in slow])


def _peer_of(e: dict[str, Any], ratio: str) -> str:
    """The short name of the peer a ratio compares with (``cv2.filter2D``, ``fftconvolve``)."""
    name = {"ratio_vs_fastest_peer": e.get("fastest_peer"), "ratio_vs_fastest_scipy": e.get("fastest_scipy"),
            "ratio_vs_fastest_native_peer": e.get("fastest_native_peer")}.get(ratio) or "-"
    return name.replace("scipy.signal.", "").replace("scipy.", "")


def verdicts(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """MET / MISSED / N/A for each target of this backend (N/A: the run measured nothing for it).

    Every backend: every convkit result checked within the S5 bound of a float64 oracle.
    NumPy: at least as fast as the fastest peer of any library, and the four targets of the
    suite against SciPy. JAX, CuPy, torch: at least as fast as the fastest peer of the same
    library (``jax.scipy.signal``, ``cupyx.scipy``, ``torch.nn.functional``) on every row.
    """
    rows, t = summary["rows"], summary["targets"]
    name = summary["backend"][len("convkit["):-1]
    n_ok, failed = len(rows), summary.get("failed", [])
    out = [_verdict("correct", "correct: every result within the S5 bound of a float64 oracle",
                    None if not n_ok and not failed else not failed,
                    f"{n_ok} of {n_ok + len(failed)} rows", failed)]
    if name == "numpy":
        out.append(_every_row("fastest_peer", "as fast as the fastest peer (SciPy, OpenCV, torch, ...) on "
                              "every row", rows, "ratio_vs_fastest_peer", FASTEST_PEER_MIN_RATIO,
                              "no peer timed"))
        out.append(_every_row("fastest_scipy", "as fast as the fastest SciPy function on every row", rows,
                              "ratio_vs_fastest_scipy", FASTEST_SCIPY_MIN_RATIO, "no SciPy peer timed"))
        geo = summary["geomean_vs_scipy_auto"]
        out.append(_verdict(
            "geomean", f"geometric mean speed-up vs scipy.signal.convolve(auto) >= {GEOMEAN_TARGET:g}x",
            None if geo is None else geo >= GEOMEAN_TARGET,
            "no row timed against scipy.signal.convolve" if geo is None else f"{geo:.2f}x"))
        ov = t["overhead_s"]
        out.append(_verdict(
            "overhead",
            f"tiny-call overhead vs scipy.signal.convolve(direct) <= {OVERHEAD_TARGET_S * 1e6:g} us",
            None if ov is None else ov <= OVERHEAD_TARGET_S,
            "no tiny-call row in this run" if ov is None else f"{ov * 1e6:+.1f} us"))
        pk = t["fft_2d_peak_over_input_max"]
        out.append(_verdict(
            "memory", f"2-D FFT rows: peak memory beyond the output <= {MEMORY_TARGET:g}x the input bytes",
            None if pk is None else pk <= MEMORY_TARGET,
            "no 2-D FFT row measured" if pk is None else f"max {pk:.2f}x"))
    else:
        lib = NATIVE_PEERS.get(name, f"{name} library")
        out.append(_every_row("fastest_native_peer", f"as fast as the fastest {lib} peer on every row", rows,
                              "ratio_vs_fastest_native_peer", NATIVE_MIN_RATIO, "no same-library peer timed"))
    return out


def verdict_lines(summary: dict[str, Any]) -> list[str]:
    """One line per target: ``MET``/``MISSED``/``N/A``, the target, what was measured."""
    lines = []
    for v in summary["verdicts"]:
        lines.append(f"{v['verdict']:6s}  {v['description']}: {v['measured']}")
        lines += [f"          {d}" for d in v["detail"]]
    return lines


def missed(summary: dict[str, Any]) -> list[str]:
    """The descriptions of the MISSED targets."""
    return [v["description"] for v in summary["verdicts"] if v["verdict"] == "MISSED"]


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": sys.version.split()[0]}
    for name in ("convkit", "numpy", "scipy", "jax", "jaxlib", "cupy-cuda12x", "cupy-cuda13x", "cupy",
                 "opencv-python-headless", "opencv-python", "opencv-contrib-python", "torch", "matplotlib",
                 "tqdm"):
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
    return "-" if r is None else f"{r:.2f}x" if r >= 0.1 else f"{r:.2g}x"


def _short(name: str | None) -> str:
    """A peer's name for the table: ``scipy.signal.fftconvolve`` -> ``fftconvolve``."""
    short = (name or "-").replace("scipy.signal.", "").replace("scipy.", "")
    return short.replace("torch.nn.functional.", "torch.")


def _table_rows(summary: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and cells: the method convkit ran, its time, the fastest peer of any library and
    the ratios to it, to the fastest SciPy function and to ``scipy.signal.convolve`` (auto)."""
    head = ["workload", "dtype", "method", "convkit", "fastest peer", "vs fastest", "vs fastest SciPy",
            "vs scipy auto", "peak extra / input"]
    native = any(e["fastest_native_peer"] for e in summary["rows"])
    if native:
        head.insert(8, "vs fastest same-library peer")
    rows = []
    for e in summary["rows"]:
        pk = e["peak_extra_over_input"]
        row = [e["describe"], e["dtype"], e["method"], _fmt_t(e["convkit_s"]),
               f"{_fmt_t(e['fastest_peer_s'])} ({_short(e['fastest_peer'])})",
               _fmt_r(e["ratio_vs_fastest_peer"]),
               f"{_fmt_r(e['ratio_vs_fastest_scipy'])} ({_short(e['fastest_scipy'])})",
               _fmt_r(e["ratio_vs_scipy_auto"]), "-" if pk is None else f"{pk:.2f}"]
        if native:
            name = (e["fastest_native_peer"] or "-").rsplit(".", 1)[-1]
            row.insert(8, f"{_fmt_r(e['ratio_vs_fastest_native_peer'])} ({name})")
        rows.append(row)
    return head, rows


def _footer(summary: dict[str, Any]) -> list[str]:
    return [f"targets of {summary['backend']}:"] + [f"  {line}" for line in verdict_lines(summary)]


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


def machine_line(env: dict[str, Any], backend: str | None = None) -> str:
    """``"Intel(R) Xeon(R), 2 cores (load average 4.2); numpy 2.4.6, scipy 1.17.1"`` (plus the
    device and library version of a GPU or JAX backend)."""
    m, v = env["machine"], env["versions"]
    load = f" (load average {m['load_average'][0]:.1f})" if m.get("load_average") else ""
    libs = [f"numpy {v.get('numpy')}", f"scipy {v.get('scipy')}"]
    name = backend[len("convkit["):-1] if backend else ""
    if name == "jax" and v.get("jax"):
        libs.append(f"jax {v['jax']}")
    if name == "cupy":
        libs += [f"cupy {v[k]}" for k in ("cupy-cuda12x", "cupy-cuda13x", "cupy") if v.get(k)][:1]
    devices = env.get("devices", {})
    if any(n.startswith("cv2.") for n in devices):  # the OpenCV and torch peers' versions, when timed
        dists = ("opencv-python-headless", "opencv-python", "opencv-contrib-python")
        libs += [f"opencv {v[k]}" for k in dists if v.get(k)][:1]
    if (name == "torch" or "torch.nn.functional.conv" in devices) and v.get("torch"):
        libs.append(f"torch {v['torch']}")
    line = f"{m['cpu']}, {m['cores']} cores{load}; " + ", ".join(libs)
    device = env.get("devices", {}).get(backend) if backend else None
    if device and device != "cpu":
        line += f"; device {device}"
    return line


def markdown(summary: dict[str, Any], env: dict[str, Any], suite: str | None = None) -> str:
    head, rows = _table_rows(summary)
    of = f"{summary['backend']}, {suite} suite. " if suite else ""
    out = [f"{of}Machine: {machine_line(env, summary['backend'])}. Times are medians; ratios are peer time / "
           "convkit time (above 1: convkit is faster).", "",
           "| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(c.replace("|", "/") for c in r) + " |" for r in rows]
    out += ["", f"Targets of {summary['backend']}:", ""]
    for v in summary["verdicts"]:
        out.append(f"- **{v['verdict']}** {v['description']}: {v['measured']}")
        out += [f"  - {d}" for d in v["detail"]]
    return "\n".join(out) + "\n"


def write_json(path: str, summary: dict[str, Any], env: dict[str, Any], results: list[Result],
               options: dict[str, Any], summaries: dict[str, dict[str, Any]] | None = None) -> None:
    """``summary``: the first timed backend's; ``summaries``: every backend's, by name."""
    doc = {"options": options, **env, "summary": summary, "summaries": summaries or {},
           "results": [r.to_json() for r in results]}
    with open(path, "w") as f:
        json.dump(doc, f, indent=1, default=str)


def _series(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """(legend label, row key) of the ratios that some row of this run has."""
    name = summary["backend"][len("convkit["):-1]
    cand = [("vs scipy.signal.convolve (auto)", "ratio_vs_scipy_auto"),
            ("vs fastest peer (any library)", "ratio_vs_fastest_peer"),
            (f"vs fastest {NATIVE_PEERS.get(name, name)} peer", "ratio_vs_fastest_native_peer")]
    return [(label, key) for label, key in cand if any(e[key] for e in summary["rows"])]


def _ratio_label(v: float) -> str:
    if v >= 99.5:
        return f"{v:.0f}x"
    return f"{v:.1f}x" if v >= 9.95 else _fmt_r(v)


def _log_ticks(lo: float, hi: float) -> tuple[list[float], list[float]]:
    """(labelled, unlabelled) ticks within [lo, hi]: 1-2-5 all labelled on a narrow range; on a
    wide one (more than 9) the decades labelled and 2, 5 unlabelled, so no two labels touch."""
    ticks = []
    for exp in range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1):
        for m in (1, 2, 5):
            v = m * 10.0 ** exp
            if lo <= v <= hi:
                ticks.append(v)
    if len(ticks) <= 9:
        return ticks, []
    decades = [v for v in ticks if math.isclose(math.log10(v) % 1, 0, abs_tol=1e-9)
               or math.isclose(math.log10(v) % 1, 1, abs_tol=1e-9)]
    return decades, [v for v in ticks if v not in decades]


def plot(path: str, summary: dict[str, Any], env: dict[str, Any] | None = None,
         suite: str | None = None) -> bool:
    """Write the speed-up figure (:func:`figure`) to ``path`` (PNG, 200 dpi). Returns False,
    writing nothing, when the run has no timed row."""
    fig = figure(summary, env, suite)
    if fig is None:
        return False
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=200)
    plt.close(fig)
    return True


def figure(summary: dict[str, Any], env: dict[str, Any] | None = None, suite: str | None = None):
    """Speed-up of convkit per workload: one panel per dtype, one horizontal bar per peer
    growing from 1x (log scale, every bar labelled with its ratio), titled with the backend,
    the suite and the machine. None when the run has no timed row."""
    series = _series(summary)
    rows = [e for e in summary["rows"] if any(e[k] for _, k in series)]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter, NullLocator

    dtypes = list(dict.fromkeys(e["dtype"] for e in rows))
    workloads = list(dict.fromkeys((e["workload"], e["describe"]) for e in rows))
    by = {(e["workload"], e["dtype"]): e for e in rows}
    values = [e[k] for e in rows for _, k in series if e[k]]
    lo = min(0.5, min(values) / 2.0)  # room for the value labels beyond the bars' ends
    hi = max(2.0, max(values) * 2.0)

    colors = ["#0072B2", "#E69F00", "#009E73"]  # Okabe-Ito: colour-blind safe
    n_s = len(series)
    bar_h = 0.8 / n_s
    height = 1.9 + len(workloads) * (0.16 + 0.17 * n_s)
    fig, axes = plt.subplots(1, len(dtypes), figsize=(3.2 + 4.3 * len(dtypes), height), sharey=True,
                             squeeze=False)
    for ax, dt in zip(axes[0], dtypes):
        for j, (label, key) in enumerate(series):
            ys, vs = [], []
            for i, wl in enumerate(workloads):
                e = by.get((wl[0], dt))
                if e is not None and e[key]:
                    ys.append(i - 0.4 + bar_h * (j + 0.5))
                    vs.append(e[key])
            # bars grow from 1x: right when convkit is faster, left when the peer is
            ax.barh(ys, [v - 1 for v in vs], height=bar_h * 0.92, left=1, color=colors[j % 3], label=label,
                    zorder=2)
            for y, v in zip(ys, vs):
                ax.text(v * 1.04 if v >= 1 else v / 1.04, y, _ratio_label(v), va="center",
                        ha="left" if v >= 1 else "right", fontsize=6.5, zorder=3)
        ax.set_xscale("log")
        ax.set_xlim(lo, hi)
        major, minor = _log_ticks(lo, hi)
        ax.xaxis.set_major_locator(FixedLocator(major))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
        ax.xaxis.set_minor_locator(FixedLocator(minor) if minor else NullLocator())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.tick_params(axis="x", labelsize=8)
        ax.grid(axis="x", which="major", color="0.85", lw=0.6, zorder=0)
        ax.grid(axis="x", which="minor", color="0.93", lw=0.5, zorder=0)
        ax.axvline(1.0, color="0.15", lw=1.0, zorder=2.5)
        ax.set_title(dt, fontsize=10)
        ax.set_xlabel("speed-up (peer time / convkit time)", fontsize=8.5)
        ax.tick_params(axis="y", length=0)
        for side in ("top", "right", "left"):
            ax.spines[side].set_visible(False)
    ax0 = axes[0][0]
    ax0.set_yticks(range(len(workloads)))
    ax0.set_yticklabels([d for _, d in workloads], fontsize=8)
    ax0.set_ylim(len(workloads) - 0.5, -0.5)  # suite order, top to bottom
    title = f"{summary['backend']}: speed-up per workload" + (f" ({suite} suite)" if suite else "")
    # fig.text, not suptitle: tight_layout would reserve the suptitle's room a second time
    fig.text(0.01, 1 - 0.12 / height, title, fontsize=12, fontweight="bold", ha="left", va="top")
    notes = []
    if env is not None:
        notes.append(machine_line(env, summary["backend"]))
    notes.append("median times, same inputs; right of 1x: convkit is faster, left: the peer")
    geo = summary.get("geomean_vs_scipy_auto")
    if geo is not None:
        notes[-1] += f"; geometric mean vs scipy.signal.convolve (auto): {geo:.2f}x"
    fig.text(0.01, 1 - 0.4 / height, "\n".join(notes), fontsize=8, color="0.3", ha="left", va="top")
    handles, labels = ax0.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=n_s, fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, 0.0))
    fig.tight_layout(rect=(0, 0.4 / height, 1, 1 - 0.72 / height))
    return fig
