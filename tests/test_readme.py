"""Every ```python block of README.md runs, and the README's commands are the ones CI runs.

A block whose first lines contain ``# requires: NAME`` (a convkit backend name, or else a module
name) is skipped only when that backend is unavailable here, with the reason. A block with
``>>>`` prompts runs as a doctest (see ``tests/test_docs.py``, which runs the docs pages' blocks
the same way). README is a landing page: its links to ``docs/`` resolve, and every SPEC rule
it cites (S1..S14) links to its anchor in ``docs/specification.md``.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
from test_docs import requires, run_block, skip_reason

import convkit

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def _blocks(lang: str) -> list[tuple[int, str]]:
    text = README.read_text(encoding="utf-8")
    return [(text[: m.start()].count("\n") + 1, m.group(2))
            for m in FENCE.finditer(text) if m.group(1) == lang]


PY_BLOCKS = _blocks("python")


def test_readme_has_python_examples():
    assert len(PY_BLOCKS) >= 2


@pytest.mark.parametrize("line,code", PY_BLOCKS, ids=[f"README.md:{line}" for line, _ in PY_BLOCKS])
def test_readme_python_block(line, code):
    rows = {r.name: r for r in convkit.list_backends()}
    for name in requires(code):
        assert name in rows or importlib.util.find_spec(name), f"README.md:{line} requires unknown {name!r}"
    reason = skip_reason(code)
    if reason:
        pytest.skip(f"README.md:{line} {reason}")
    run_block(code, f"README.md:{line}", line)


def test_readme_is_a_landing_page():
    assert len(README.read_text(encoding="utf-8")) <= 12_000


def test_readme_links_resolve():
    text = README.read_text(encoding="utf-8")
    spec = (ROOT / "docs" / "specification.md").read_text(encoding="utf-8")
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    assert links
    for link in links:
        if "://" in link:
            continue
        path, _, anchor = link.partition("#")
        assert (ROOT / path).is_file(), f"README links to {path}, which does not exist"
        if path == "docs/specification.md" and anchor:
            assert f"({anchor})=" in spec, f"README links to {link}: no ({anchor})= in the spec"


def test_readme_spec_citations_link_to_the_specification():
    """Every S1..S14 in the README's prose is a link ``[SN](docs/specification.md#sN)``."""
    text = README.read_text(encoding="utf-8")
    prose = FENCE.sub("", text)
    cited = re.findall(r"(?<![\w\[])S(\d{1,2})\b", prose)
    linked = re.findall(r"\[S(\d{1,2})\]\(docs/specification\.md#s(\d{1,2})\)", prose)
    assert all(a == b for a, b in linked), f"a citation links to another rule's anchor: {linked}"
    assert not cited, f"SPEC citations without a link: {sorted(set(cited), key=int)}"
    assert linked


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
