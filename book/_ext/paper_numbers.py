"""Fail the build when a rendered page numbers a paper result book-wide.

sphinx-proof counts boxes across the whole book, so without care the paper's Lemma 3 renders
as "Lemma 5". Every box is ``:nonumber:`` and carries the paper's number in its title; this
extension reads the written HTML and warns (an error under ``-W``) about any box header that
still has a counter, and any ``{prf:ref}`` that rendered without text ("Lemma " and nothing).
"""

from __future__ import annotations

import re
from pathlib import Path

from sphinx.util import logging

logger = logging.getLogger(__name__)

_KINDS = (
    "Lemma|Theorem|Corollary|Remark|Definition|Proposition|Conjecture|Example|Property"
    "|Observation|Assumption|Axiom|Criterion|Algorithm|Notation"
)
NUMBERED_BOX = re.compile(rf'class="caption-number">\s*({_KINDS})\s+\d')
EMPTY_REF = re.compile(rf'<span class="[^"]*\bprf\b[^"]*">\s*({_KINDS})\s*</span>|>({_KINDS}) </a>')


def html_problems(html: str) -> list[str]:
    """The book-wide numbers and empty proof references in one page's HTML."""
    found = [f"a {m.group(1)} box numbered book-wide" for m in NUMBERED_BOX.finditer(html)]
    found += [f"a reference to a {m.group(1) or m.group(2)} without text" for m in
              EMPTY_REF.finditer(html)]
    return found


def _check(app, exception) -> None:
    if exception is not None or app.builder.format != "html":
        return
    for page in sorted(Path(app.outdir).rglob("*.html")):
        if "_static" in page.parts or "_sources" in page.parts:
            continue
        for problem in html_problems(page.read_text(encoding="utf-8")):
            logger.warning(f"{page.relative_to(app.outdir)}: {problem}", type="paper_numbers")


def setup(app):
    app.connect("build-finished", _check)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
