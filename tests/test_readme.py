"""Every ```python block of README.md runs, and the README's commands are the ones CI runs.

A block whose first lines contain ``# requires: NAME`` (a convkit backend name) is skipped
only when that backend is unavailable here, with the backend's reason.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import convkit
from convkit import dispatch

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def _blocks(lang: str) -> list[tuple[int, str]]:
    text = README.read_text(encoding="utf-8")
    return [(text[: m.start()].count("\n") + 1, m.group(2))
            for m in FENCE.finditer(text) if m.group(1) == lang]


def _requires(code: str) -> list[str]:
    head = "\n".join(code.splitlines()[:3])
    found = re.findall(r"#\s*requires:\s*([\w, ]+)", head)
    return [n.strip() for m in found for n in m.split(",") if n.strip()]


PY_BLOCKS = _blocks("python")


def test_readme_has_python_examples():
    assert len(PY_BLOCKS) >= 5


@pytest.mark.parametrize("line,code", PY_BLOCKS, ids=[f"README.md:{line}" for line, _ in PY_BLOCKS])
def test_readme_python_block(line, code):
    rows = {r.name: r for r in convkit.list_backends()}
    for name in _requires(code):
        assert name in rows, f"README.md:{line} requires unknown backend {name!r}"
        if not rows[name].available:
            pytest.skip(f"README.md:{line} needs backend {name!r}: {rows[name].reason}")
    registry = dict(dispatch._registry)  # blocks may register backends or set a default
    try:
        exec(compile(code, f"README.md:{line}", "exec"), {"__name__": f"readme_line_{line}"})
    finally:
        dispatch._registry.clear()
        dispatch._registry.update(registry)
        dispatch.reload_environment()


def _first_commands() -> list[str]:
    return [code.strip() for _, code in _blocks("bash")[:2]]


def test_readme_starts_with_the_two_commands():
    text = README.read_text(encoding="utf-8")
    first_fence = text.index("```")
    assert text.index("```bash") == first_fence  # nothing but prose before the commands
    main_cmd, test_cmd = _first_commands()
    assert main_cmd.startswith("python -m venv .venv && . .venv/bin/activate && pip install -e")
    for step in ("python -m convkit", "convkit check", "python -m benchmarks"):
        assert f"&& {step}" in main_cmd, f"the main job does not run {step!r}"
    assert test_cmd.startswith("python -m venv .venv && . .venv/bin/activate && pip install -e")
    assert "pytest" in test_cmd


def test_ci_runs_the_readme_test_command():
    """`.ci/run` installs the same extras and runs exactly the README's test command."""
    test_cmd = _first_commands()[1]
    install, run = [part.strip() for part in test_cmd.split("&&")[2:]]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    ci_lines = [ln.strip() for ln in ci.splitlines()]
    assert install in ci_lines, f"{install!r} is not a line of .ci/run"
    assert run in ci_lines, f"{run!r} is not a line of .ci/run"
    assert "set -euo pipefail" in ci
