"""The layer suites' summary, verdicts, terminal table and Markdown.

One table for the whole run (every backend side by side, unlike the convolve suites' one
table per backend): each contender's median time per row, the ratio of torch's time to
convkit[numpy]'s (``vs torch``) and of lax's time to convkit[jax]'s (``vs lax``); above 1
convkit is faster. Then the verdicts of issue 16's two targets, judged on the target row(s)
(the ResNet 3x3 NCHW float32 row), and a correctness verdict over every convkit result.
"""

from __future__ import annotations

from typing import Any

from .layers import LAX_NAME, TORCH_NAME
from .report import _fmt_r, _fmt_t, _verdict, machine_line, verdict_lines
from .runner import Result

__all__ = ["summarize_layers", "layer_verdicts", "layer_table", "layer_markdown", "missed_layers",
           "NUMPY_VS_TORCH_MIN_RATIO", "JAX_VS_LAX_MAX_SLOWDOWN", "TORCH", "LAX"]

# The targets (module constants: a test may change them before a run).
NUMPY_VS_TORCH_MIN_RATIO = 1.0  # convkit[numpy]: torch time / convkit time on the target row
JAX_VS_LAX_MAX_SLOWDOWN = 1.1  # convkit[jax]: convkit time / lax time on the target row

TORCH, LAX = TORCH_NAME, LAX_NAME
#: the column heads of the contenders, in table order
SHORT = {"convkit[numpy]": "convkit[numpy]", "convkit[jax]": "convkit[jax]",
         "convkit[torch]": "convkit[torch]", TORCH: "torch", LAX: "lax"}


def _ratio(row: dict[str, Result], peer: str, me: str) -> float | None:
    """peer time / ``me``'s time on this row (None unless both were timed)."""
    a, b = row.get(peer), row.get(me)
    if a is None or b is None or not a.seconds or not b.seconds:
        return None
    return a.seconds / b.seconds


def summarize_layers(results: list[Result], targets: dict[str, bool] | None = None) -> dict[str, Any]:
    """Per-row times and ratios, the failures of convkit contenders, and the verdicts.

    ``targets`` maps a workload name to whether it is a target row (from the suite)."""
    targets = targets or {}
    rows: dict[tuple[str, str], dict[str, Result]] = {}
    for r in results:
        rows.setdefault((r.workload, r.dtype), {})[r.contender] = r
    out_rows = []
    for (wl, dt), row in rows.items():
        first = next(iter(row.values()))
        ck = [r for n, r in row.items() if r.family == "convkit" and r.method]
        out_rows.append({
            "workload": wl, "dtype": dt, "group": first.group, "describe": first.describe,
            "target": bool(targets.get(wl)),
            "method": row["convkit[numpy]"].method if "convkit[numpy]" in row else ck[0].method if ck else "",
            "times": {n: r.seconds for n, r in row.items()},
            "status": {n: r.status for n, r in row.items()},
            "ratio_numpy_vs_torch": _ratio(row, TORCH, "convkit[numpy]"),
            "ratio_jax_vs_lax": _ratio(row, LAX, "convkit[jax]"),
        })
    failed = [f"{r.contender} {r.workload} {r.dtype}: {r.status} {r.detail}".strip() for r in results
              if r.family == "convkit" and r.status in ("wrong", "error")]
    timed = sorted({r.contender for r in results if r.family == "convkit" and r.seconds})
    summary = {"backend": "layers", "contenders": list(dict.fromkeys(r.contender for r in results)),
               "timed_convkit": timed, "rows": out_rows, "failed": failed}
    summary["verdicts"] = layer_verdicts(summary)
    return summary


def _numpy_target(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """"NumPy backend: ResNet 3x3 row at least as fast as torch CPU conv2d" on the target rows."""
    desc = (f"NumPy backend: ResNet 3x3 row at least as fast as torch CPU conv2d "
            f"(torch time / convkit[numpy] time >= {NUMPY_VS_TORCH_MIN_RATIO:g})")
    judged = [e for e in rows if e["target"] and e["ratio_numpy_vs_torch"] is not None]
    if not judged:
        return _verdict("numpy_vs_torch", desc, None,
                        "convkit[numpy] and torch not both timed on a target row")
    parts = [f"convkit[numpy] {_fmt_t(e['times']['convkit[numpy]'])}, torch {_fmt_t(e['times'][TORCH])}: "
             f"{_fmt_r(e['ratio_numpy_vs_torch'])} ({e['workload']} {e['dtype']})" for e in judged]
    ok = all(e["ratio_numpy_vs_torch"] >= NUMPY_VS_TORCH_MIN_RATIO for e in judged)
    return _verdict("numpy_vs_torch", desc, ok, "; ".join(parts))


def _jax_target(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """"JAX backend: within 1.1x of a jitted lax.conv_general_dilated on the same call"."""
    desc = (f"JAX backend: within {JAX_VS_LAX_MAX_SLOWDOWN:g}x of a jitted lax.conv_general_dilated on the "
            "same call (convkit[jax] time / lax time <= " f"{JAX_VS_LAX_MAX_SLOWDOWN:g})")
    judged = [e for e in rows if e["target"] and e["ratio_jax_vs_lax"] is not None]
    if not judged:
        return _verdict("jax_vs_lax", desc, None, "convkit[jax] and lax not both timed on a target row")
    parts = [f"convkit[jax] {_fmt_t(e['times']['convkit[jax]'])}, lax {_fmt_t(e['times'][LAX])}: "
             f"{1 / e['ratio_jax_vs_lax']:.2f}x lax's time ({e['workload']} {e['dtype']})" for e in judged]
    ok = all(1 / e["ratio_jax_vs_lax"] <= JAX_VS_LAX_MAX_SLOWDOWN for e in judged)
    return _verdict("jax_vs_lax", desc, ok, "; ".join(parts))


def layer_verdicts(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """MET / MISSED / N/A: every convkit result correct; the NumPy target; the JAX target."""
    rows, failed = summary["rows"], summary["failed"]
    n_ok = sum(1 for e in rows for n, t in e["times"].items() if n.startswith("convkit[") and t)
    correct = _verdict("correct", "correct: every convkit result within (K+1)*eps*sum|x||w| of a float64 "
                       "reference", None if not n_ok and not failed else not failed,
                       f"{n_ok} of {n_ok + len(failed)} convkit results", failed)
    return [correct, _numpy_target(rows), _jax_target(rows)]


def missed_layers(summary: dict[str, Any]) -> list[str]:
    """The MISSED targets, each with what was measured."""
    return [f"{v['description']}: {v['measured']}" for v in summary["verdicts"] if v["verdict"] == "MISSED"]


def _cell(e: dict[str, Any], name: str) -> str:
    """A contender's time, or why it has none (wrong, error, n/a, unavailable)."""
    t = e["times"].get(name)
    if t:
        return _fmt_t(t)
    return e["status"].get(name, "-")


def _table_rows(summary: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and cells: the row, its call, the method, every contender's time, the two ratios."""
    present = summary["contenders"]
    names = [n for n in SHORT if n in present] + [n for n in present if n not in SHORT]
    head = ["workload", "call", "dtype", "method"] + [SHORT.get(n, n) for n in names] + ["vs torch", "vs lax"]
    rows = []
    for e in summary["rows"]:
        name = e["workload"] + (" *" if e["target"] else "")
        rows.append([name, e["describe"], e["dtype"], e["method"] or "-"] + [_cell(e, n) for n in names]
                    + [_fmt_r(e["ratio_numpy_vs_torch"]), _fmt_r(e["ratio_jax_vs_lax"])])
    return head, rows


def layer_table(summary: dict[str, Any], results: list[Result]) -> str:
    """The terminal table (``*``: a target row; ratios above 1: convkit is faster), the
    verdicts, then every contender that was not timed and why."""
    head, rows = _table_rows(summary)
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:{'<' if i < 4 else '>'}{w}}}" for i, w in enumerate(widths))
    lines = [fmt.format(*head), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*r) for r in rows]
    lines += ["", "* target row; vs torch = torch time / convkit[numpy] time, vs lax = lax time / "
              "convkit[jax] time (above 1: convkit is faster)", "", "targets:"]
    lines += [f"  {ln}" for ln in verdict_lines(summary)]
    issues = sorted({f"{r.contender} {r.workload} {r.dtype}: {r.status} {r.detail}".strip() for r in results
                     if r.status in ("wrong", "error", "unavailable")})
    if issues:
        lines += ["", "not timed:"] + [f"  {i}" for i in issues]
    return "\n".join(lines)


def layer_markdown(summary: dict[str, Any], env: dict[str, Any], suite: str) -> str:
    """``results.md`` of a layer run: the machine, the table, the verdicts."""
    head, rows = _table_rows(summary)
    jax = "convkit[jax]" if "convkit[jax]" in env.get("devices", {}) else None  # names jax's version too
    out = [f"convkit.conv, {suite} suite. Machine: {machine_line(env, jax)}. Times are medians; `*` marks a "
           "target row; vs torch = torch time / convkit[numpy] time, vs lax = lax time / convkit[jax] time "
           "(above 1: convkit is faster).", "",
           "| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(c.replace("|", "/").replace("*", "\\*") for c in r) + " |" for r in rows]
    out += ["", "Targets:", ""]
    for v in summary["verdicts"]:
        out.append(f"- **{v['verdict']}** {v['description']}: {v['measured']}")
        out += [f"  - {d}" for d in v["detail"]]
    return "\n".join(out) + "\n"
