"""The errata table and the book's boxes stay in step."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from lowrank.chapters import errata

BOOK = Path(__file__).resolve().parents[2] / "book"


PAPER_RESULTS = (
    ["Eq. (2)", "Eq. (4)"]
    + [f"Lemma {i}" for i in range(1, 6)]
    + [f"Theorem {i}" for i in range(1, 4)]
    + ["Corollary 1", "Remark 1"]
    + [f"Figure {i}" for i in range(1, 7)]
    + ["Table 1"]
)


ERRATUM = """
```{{admonition}} Erratum: something
:class: warning erratum
:name: {name}

**Printed.** "x"
```
"""


def _fake_book(tmp_path: Path, body: str) -> Path:
    (tmp_path / "09_chapter.md").write_text(body, encoding="utf-8")
    return tmp_path


PRF_DIRECTIVE = re.compile(r"^```+\{prf:(?!proof)(\w+)\}[^\n]*\n((?::[^\n]*\n)*)", re.M)


PRF_REF = re.compile(r"\{prf:ref\}`([^`]*)`")


def _paper_numbers():
    spec = importlib.util.spec_from_file_location("paper_numbers", BOOK / "_ext/paper_numbers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_table_and_boxes_in_step():
    assert errata.problems(BOOK) == []


def test_every_erratum_row_is_filled_and_unique():
    labels = [e.label for e in errata.ERRATA]
    assert len(labels) == len(set(labels))
    for entry in errata.ERRATA:
        assert entry.location and entry.printed and entry.holds
        assert entry.severity in errata.SEVERITIES


def test_scorecard_covers_every_numbered_result():
    named = [s.result for s in errata.SCORECARD]
    assert sorted(named) == sorted(PAPER_RESULTS)


def test_a_box_missing_from_the_table_is_reported(tmp_path):
    book = _fake_book(tmp_path, ERRATUM.format(name="erratum-ch09-not-in-the-table"))
    assert any("missing from lowrank.errata.ERRATA" in p for p in errata.problems(book))


def test_a_table_row_without_a_box_is_reported(tmp_path):
    if not errata.ERRATA:
        pytest.skip("no errata")
    book = _fake_book(tmp_path, "no boxes here\n")
    assert any("no chapter has an erratum box" in p for p in errata.problems(book))


def test_a_misnamed_box_is_reported(tmp_path):
    book = _fake_book(tmp_path, ERRATUM.format(name="erratum-ch05-wrong-chapter"))
    assert any("must be named 'erratum-ch09-" in p for p in errata.problems(book))


def test_tables_render_links():
    assert errata.errata_table().count("{ref}`chapter") == len(errata.ERRATA)
    card = errata.scorecard_table(BOOK)
    assert card.count("\n") == len(errata.SCORECARD) + 1
    assert "{prf:ref}`" in card or not errata.SCORECARD


@pytest.mark.parametrize("page", sorted(BOOK.glob("*.md")), ids=lambda p: p.name)
def test_every_box_carries_the_papers_number_only(page):
    text = page.read_text(encoding="utf-8")
    for match in PRF_DIRECTIVE.finditer(text):
        assert ":nonumber:" in match.group(2), f"{page.name}: a {match.group(1)} box is numbered"
    for target in PRF_REF.findall(text):
        assert "<" in target, f"{page.name}: {{prf:ref}}`{target}` needs explicit text"


def test_the_html_check_finds_book_wide_numbers():
    check = _paper_numbers().html_problems
    assert check('<span class="caption-number">Lemma </span>Lemma 3 (Low rank)') == []
    assert check('<span class="caption-number">Lemma 5 </span>') != []
    assert check('<a class="reference internal" href="#x">Lemma </a>') != []
    assert check('<a class="reference internal" href="#x">Lemma 3</a>') == []
