"""The downloadable notebook shows glued values and readable references, not MyST roles."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import jupytext
import pytest

BOOK = Path(__file__).resolve().parents[1] / "book"


@pytest.fixture(scope="module")
def ext():
    spec = importlib.util.spec_from_file_location("ipynb_download", BOOK / "_ext/ipynb_download.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_roles_are_resolved(ext):
    glue = {"gap": "0.015", "lam": 0.01}
    cites = ext.cite_texts(BOOK / "references.bib")
    text = (
        "gap {glue:text}`gap` at {glue:text}`lam:.0e`, {prf:ref}`Lemma 3 <ch05-lem-low-rank>`, "
        "{cite}`kuzborskij2025lowrank`, {eq}`ch05-eq-amgm`, {ref}`the note <note-ch05-x>`, "
        "{doc}`errata`"
    )
    out = ext.resolve_roles(text, glue, cites, {"ch05-eq-amgm": "5.2"})
    assert out == (
        "gap 0.015 at 1e-02, Lemma 3, Kuzborskij and Abbasi Yadkori (2025), (5.2), the note, "
        "errata"
    )


def test_boxes_become_quotes(ext):
    text = "```{prf:lemma} 3 (Low-rank structure)\n:label: x\n:nonumber:\n\nBody $a$.\n```\nafter"
    out = ext.resolve_directives(text)
    assert out == "> **Lemma 3 (Low-rank structure).**\n>\n> Body $a$.\n\nafter"


def test_unknown_glue_is_left_visible(ext):
    assert ext.resolve_roles("{glue:text}`missing`", {}, {}, {}) == "missing"


@pytest.mark.parametrize("page", sorted(BOOK.glob("[0-9][0-9]_*.md")), ids=lambda p: p.name)
def test_no_chapter_keeps_a_role_or_directive(ext, page):
    nb = jupytext.read(page)
    names = re.findall(r"\{glue:text\}`([^`:]+)", page.read_text(encoding="utf-8"))
    readable = ext.readable_notebook(nb, {n: "1.0" for n in names}, {}, {})
    for cell in readable["cells"]:
        if cell["cell_type"] == "markdown":
            assert not re.search(r"\{[a-z:]+\}`", cell["source"]), cell["source"][:200]
            assert not re.search(r"^```+\{", cell["source"], re.M), cell["source"][:200]
