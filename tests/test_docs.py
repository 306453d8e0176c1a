"""The documentation site under ``docs/``: its examples run, and it builds with warnings as errors.

* Every ```python block of ``docs/*.md`` and ``docs/**/*.md`` runs. A block with ``>>>`` prompts is a
  doctest and must print exactly what it shows (``ELLIPSIS`` is on); any other block runs as a script.
  Each block is self-contained (its own imports). A block whose first lines contain
  ``# requires: NAME`` (a convkit backend name, or else a module name) is skipped, with the reason,
  only when that backend is unavailable or that module is not installed here.
* The examples in the docstrings that ``docs/api.md`` renders run as doctests too.
* ``python -m sphinx -W --keep-going`` builds the site into ``tmp_path`` (skipped, with a message,
  only when Sphinx, myst-parser or numpydoc is not installed: ``pip install -e ".[docs]"``; a failure
  instead when ``CONVKIT_DOCS_REQUIRED`` is set, as ``.ci/run`` does).
* Every ``pip install`` of convkit in the docs and the README uses the distribution name of
  ``pyproject.toml``.
"""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import convkit
from convkit import dispatch

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
PROMPT = re.compile(r"^\s*>>>", re.M)
FLAGS = doctest.ELLIPSIS

# the modules whose docstrings docs/api.md renders
API_MODULES = ["convkit", "convkit.api", "convkit.dispatch", "convkit.errors", "convkit.options",
               "convkit.testing"]
if importlib.util.find_spec("convkit.explain") is not None:  # issue 14; docs/conf.py adds it to the API page
    API_MODULES.append("convkit.explain")


def pages() -> list[Path]:
    return sorted(p for p in DOCS.rglob("*.md") if "_build" not in p.relative_to(DOCS).parts)


def blocks(path: Path, lang: str = "python") -> list[tuple[int, str]]:
    """``(line of the opening fence, code)`` for every fenced block of ``lang`` in ``path``."""
    text = path.read_text(encoding="utf-8")
    return [(text[: m.start()].count("\n") + 1, m.group(2))
            for m in FENCE.finditer(text) if m.group(1) == lang]


def requires(code: str) -> list[str]:
    head = "\n".join(code.splitlines()[:3])
    found = re.findall(r"#\s*requires:\s*([\w, .-]+)", head)
    return [n.strip() for m in found for n in m.split(",") if n.strip()]


def skip_reason(code: str) -> str | None:
    """Why this block cannot run here (an unavailable backend, a missing module), or None."""
    rows = {r.name: r for r in convkit.list_backends()}
    for name in requires(code):
        if name in rows:
            if not rows[name].available:
                return f"needs backend {name!r}: {rows[name].reason}"
        elif importlib.util.find_spec(name) is None:
            return f"needs {name!r}, which is not installed"
    return None


def run_block(code: str, name: str, lineno: int) -> None:
    """Run one block: as a doctest when it has ``>>>`` prompts, else as a script. Backends it
    registers, a default it sets and ``CONVKIT_BACKEND`` it reads are undone afterwards."""
    registry = dict(dispatch._registry)
    try:
        if PROMPT.search(code):
            test = doctest.DocTestParser().get_doctest(code, {"__name__": name}, name, name, lineno)
            out: list[str] = []
            runner = doctest.DocTestRunner(optionflags=FLAGS)
            runner.run(test, out=out.append)
            if runner.failures:
                report = "".join(out)
                pytest.fail(f"{name}: {runner.failures} doctest example(s) failed\n{report}", pytrace=False)
            assert runner.tries, f"{name}: no doctest examples found"
        else:
            exec(compile(code, name, "exec"), {"__name__": name.replace("/", "_")})
    finally:
        dispatch._registry.clear()
        dispatch._registry.update(registry)
        dispatch.reload_environment()


PY_BLOCKS = [
    pytest.param(page, line, code, id=f"{page.relative_to(ROOT).as_posix()}:{line}")
    for page in pages() for line, code in blocks(page)
]


def test_docs_have_runnable_examples():
    assert len(PY_BLOCKS) >= 10
    assert sum(1 for p in PY_BLOCKS if PROMPT.search(p.values[2])) >= 5


@pytest.mark.parametrize("page,line,code", PY_BLOCKS)
def test_docs_python_block(page, line, code):
    where = f"{page.relative_to(ROOT).as_posix()}:{line}"
    reason = skip_reason(code)
    if reason:
        pytest.skip(f"{where} {reason}")
    run_block(code, where, line)


def _docstring_tests() -> list[doctest.DocTest]:
    finder = doctest.DocTestFinder(exclude_empty=True)
    tests = []
    for modname in API_MODULES:
        module = importlib.import_module(modname)
        tests += [t for t in finder.find(module, modname) if t.examples and
                  (t.name == modname or t.name.startswith(modname + "."))]
    return sorted(tests, key=lambda t: t.name)


DOCSTRING_TESTS = _docstring_tests()


def test_api_docstrings_have_examples():
    assert {"convkit.api.convolve", "convkit.api.correlate"} <= {t.name for t in DOCSTRING_TESTS}


@pytest.mark.parametrize("test", DOCSTRING_TESTS, ids=[t.name for t in DOCSTRING_TESTS])
def test_api_docstring_examples(test):
    registry = dict(dispatch._registry)
    out: list[str] = []
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    try:
        runner.run(test, out=out.append)
    finally:
        dispatch._registry.clear()
        dispatch._registry.update(registry)
        dispatch.reload_environment()
    if runner.failures:
        pytest.fail(f"{test.name}: {runner.failures} example(s) failed\n" + "".join(out), pytrace=False)


def test_sphinx_build_has_no_warnings(tmp_path):
    for module in ("sphinx", "myst_parser", "numpydoc"):
        if importlib.util.find_spec(module) is None:
            why = f'{module} is not installed: building the docs needs pip install -e ".[docs]"'
            if os.environ.get("CONVKIT_DOCS_REQUIRED"):  # set by .ci/run: CI must build the docs
                pytest.fail(why, pytrace=False)
            pytest.skip(why)
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
           "-d", str(tmp_path / "doctrees"), str(DOCS), str(tmp_path / "html")]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"sphinx build failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    assert (tmp_path / "html" / "api.html").is_file()
    api = (tmp_path / "html" / "api.html").read_text(encoding="utf-8")
    for name in ["convkit.convolve", "convkit.correlate", "convkit.use_backend", "convkit.set_backend",
                 "convkit.get_backend", "convkit.list_backends", "convkit.register_backend",
                 "convkit.BackendInfo", "convkit.ConvkitError", "convkit.BackendUnavailableError",
                 "convkit.options.make_options", "convkit.options.Options",
                 "convkit.testing.assert_conv_close", "convkit.testing.direct_bound",
                 "convkit.testing.fft_bound", "convkit.testing.Runner", "convkit.testing.runners",
                 "convkit.testing.register_runner"]:
        assert f'id="{name}"' in api, f"{name} is missing from the API reference"
    if hasattr(convkit, "explain"):
        assert 'id="convkit.explain"' in api, "convkit.explain is missing from the API reference"


def _dist_name() -> str:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["name"]


def test_install_commands_use_the_distribution_name():
    name = _dist_name()
    bad = []
    for path in [ROOT / "README.md", *pages()]:
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for rest in line.split("pip install ")[1:]:
                for token in rest.split():
                    if token.startswith(("#", "&&", ";", "|", "(")):
                        break
                    base = token.strip("\"'`").split("[")[0]
                    if base.lower().startswith("convkit") and base != name:
                        bad.append(f"{path.relative_to(ROOT)}:{n}: {token} (distribution: {name!r})")
    assert not bad, "\n".join(bad)
