"""Sphinx configuration of the convkit documentation.

Build (warnings are errors, as in CI; no network needed)::

    python -m sphinx -W --keep-going -b html docs /tmp/docs-html
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # a checkout builds without installing convkit first

import convkit  # noqa: E402

project = "convkit"
author = "convkit developers"
copyright = "convkit developers"
release = convkit.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "numpydoc",
]

source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

# Markdown: ``(s1)=`` targets, ``{eval-rst}`` blocks for autodoc, ``$`` maths is not used.
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3  # [text](page.md#a-heading) links work on GitHub and in Sphinx alike

# No intersphinx: the build needs no network. Cross-references stay inside this site.
autodoc_default_options = {"members": False}
autodoc_typehints = "none"  # the numpydoc Parameters sections document the types
autodoc_member_order = "bysource"
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
numpydoc_validation_checks: set[str] = set()
autosummary_generate = False  # numpydoc loads autosummary; nothing here uses its stub pages

html_theme = "alabaster"
html_title = f"convkit {release}"
html_theme_options = {
    "description": "One convolve()/correlate() with exact semantics on NumPy/SciPy, CuPy and JAX",
    "fixed_sidebar": True,
}
html_static_path: list[str] = []


# ``convkit.explain`` (issue 14) joins the API reference as soon as it exists; until then the page
# builds without it. The hook only appends reST to docs/api.md's source, never edits the file.
def _add_explain(app, docname, source):
    if docname != "api" or not hasattr(convkit, "explain"):
        return
    directive = "autoclass" if isinstance(convkit.explain, type) else "autofunction"
    source[0] += (
        "\n\n## Explaining a call: `convkit.explain`\n\n"
        "```{eval-rst}\n"
        f".. {directive}:: convkit.explain\n"
        "```\n"
    )


def setup(app):
    app.connect("source-read", _add_explain)
