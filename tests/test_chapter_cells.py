"""The chapters' cells follow the book's rules: imports visible, one way to glue, removed cells
only for figure plumbing (issue 12)."""

from __future__ import annotations

from pathlib import Path

import jupytext
import pytest

CHAPTERS = sorted((Path(__file__).resolve().parent.parent / "book").glob("[0-9][0-9]_*.md"))


def _code_cells(path: Path):
    return [c for c in jupytext.read(path).cells if c.cell_type == "code"]


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_first_cell_is_visible_and_sets_the_chapter_up(path):
    first = _code_cells(path)[0]
    assert "remove-cell" not in first.metadata.get("tags", []), "imports must stay visible"
    assert "setup(" in first.source, "the first cell calls lowrank.book.setup()"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_numbers_are_glued_through_lowrank_book_and_never_from_a_removed_cell(path):
    for cell in _code_cells(path):
        assert "from myst_nb import glue" not in cell.source
        if "remove-cell" in cell.metadata.get("tags", []):
            assert "glue" not in cell.source and "assert" not in cell.source, cell.source[:80]
