"""The book's errata and scorecard: one table, rendered by book/errata.md and kept in step
with the chapters' boxes by tests/chapters/test_errata.py.

An *Erratum* is a printed statement that is false, or a proof step that fails, under the
paper's own standing assumptions (Section 2); each has a box in its chapter, named
``erratum-chNN-slug``, quoting the claim and asserting the counterexample. Weaker findings
are *Notes* (``note-chNN-slug``) and quick-scale findings about full-scale claims are
*Observations* (``observation-chNN-slug``); they are not errata and are listed apart.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

SEVERITIES = ("false", "proof gap", "misprint")
STATUSES = (
    "holds",
    "holds with a correction",
    "false",
    "reproduced at quick scale only",
    "awaiting the full-scale run",
)
BOX_KINDS = ("erratum", "note", "observation")


@dataclass(frozen=True)
class Erratum:
    """One erratum: where the paper says it, what it says, what holds instead."""

    label: str
    location: str
    printed: str
    holds: str
    severity: str

    @property
    def chapter(self) -> int:
        """The chapter number, read from the label ``erratum-chNN-…``."""
        return int(self.label.split("-")[1].removeprefix("ch"))


@dataclass(frozen=True)
class Score:
    """One numbered result of the paper, the chapter that checks it, and how it fared."""

    result: str
    status: str
    label: str
    comment: str = ""

    @property
    def chapter(self) -> int:
        """The chapter number, read from the label ``chNN-…`` (or ``…-chNN-…``)."""
        match = re.search(r"ch(\d\d)", self.label)
        if match is None:
            raise ValueError(f"label must contain 'chNN', got {self.label!r}")
        return int(match.group(1))


ERRATA: tuple[Erratum, ...] = (
    Erratum(
        "erratum-ch01-input-degree",
        "Section 2, the paragraph on positive homogeneity",
        "\"for a K-layered ReLU or linear neural network is positive homogeneous and so "
        "f_θ(αx) = α^K f_θ(x)\"",
        "the degree K is in the parameters, f_{αθ}(x) = α^K f_θ(x) (α^Z for H ≥ 2); in the "
        "input f_θ(αx) = α^{H^{K−1}} f_θ(x), degree 1 for ReLU and linear nets",
        "misprint",
    ),
    Erratum(
        "erratum-ch02-footnote-3",
        "Section 3, footnote 3 to Eq. (2)",
        "\"formally λθ = −g for g ∈ ∂L_λ(θ)\"",
        "λθ = −g for some g ∈ ∂L(θ), that is 0 ∈ ∂L_λ(θ); as printed it is the stationarity "
        "condition of L_{2λ}",
        "misprint",
    ),
    Erratum(
        "erratum-ch07-alpha-sign",
        "Section 4, linear warm-up",
        "θ_t = θ_0(1 − ηλ)^t + Σ_i α_i x_i with "
        "α_i = (1/n) Σ_s η(1 − ηλ)^{t−s−1} ℓ′(y_i⟨θ_s, x_i⟩) y_i",
        "α_i carries a minus sign (ℓ′ < 0, so α_i has the sign of y_i); the bound after it uses "
        "only |α_i| and stands",
        "misprint",
    ),
    Erratum(
        "erratum-ch07-step-size",
        "Section 4, linear warm-up bound",
        "|⟨θ_t, x′⟩| ≤ |⟨θ_0, x′⟩|(1 − ηλ)^t + ε(1 − (1 − ηλ)^t)/λ, with only η > 0 assumed",
        "|⟨θ_t, x′⟩| ≤ |⟨θ_0, x′⟩||1 − ηλ|^t + εη Σ_{s<t} |1 − ηλ|^s for every η > 0; equal to "
        "the printed bound when ηλ ≤ 1 (all of the paper's settings)",
        "false",
    ),
    Erratum(
        "erratum-ch08-step-size",
        "Lemma 4 (Section 4; proof in Appendix C.1)",
        "‖W_t x′‖ ≤ ‖W_0 x′‖(1 − ηλ)^t + ε(1 − (1 − ηλ)^t)/λ, with only η > 0 assumed",
        "the same bound with |1 − ηλ| in place of 1 − ηλ, for every η > 0; equal to the printed "
        "one when ηλ ≤ 1",
        "false",
    ),
    Erratum(
        "erratum-ch09-eq4-power",
        "Eq. (4), Appendix C.3.1",
        "(K − 1)‖w(t)‖^{2−2/K}⟨∇L¹(w(t)), w(t)⟩ in the coefficient of w(t)",
        "the power is ‖w‖^{−2/K}; Eq. (5)'s coefficient a(t) inherits it",
        "false",
    ),
    Erratum(
        "erratum-ch09-lemma5-false",
        "Lemma 5 and its proof, Appendix C.3.1",
        "the integral is ≤ √((K − 1)(1 + λK)L¹(w(0))·(t − s))",
        "at a nonzero stationary limit the left side grows like (K − 1)λ‖w_∞‖^{1+1/K}(t − s): "
        "the lemma can hold only if the flow collapses to w → 0",
        "false",
    ),
    Erratum(
        "erratum-ch09-theorem2-rate",
        "Theorem 2, Appendix C.3",
        "|⟨w(t), x′⟩| ≤ |⟨w(0), x′⟩|A_1 e^{−λKt} + A_2 ε",
        "with ε = 0 the decay rate is λ when w(t) converges to a nonzero stationary point, λK "
        "when it collapses to 0 with K ≥ 3, and 2λ − ‖∇L¹(0)‖ for a collapse with K = 2",
        "false",
    ),
    Erratum(
        "erratum-ch09-theorem2-b",
        "proof of Theorem 2 (the constant B), Appendix C.3.1",
        "λ‖w(t)‖² + L¹(w(t)) is non-increasing, so ‖w(t)‖² ≤ B = ‖w(0)‖² + L¹(w(0))/λ",
        "‖w(t)‖ ≤ N = (‖w(0)‖^{2/K} + 2L¹(w(0))/(λK))^{K/2} is what the flow guarantees; "
        "‖w‖² ≤ B fails, while ‖w‖ ≤ B, the bound the proof uses, held in every run but is "
        "unproved",
        "proof gap",
    ),
    Erratum(
        "erratum-ch09-sup-loss",
        "proof of Theorem 2, Appendix C.3.1",
        "\"where we also assumed that sup_t L¹(w(t)) ≤ C\", while the hypothesis is L(θ(0)) ≤ C",
        "weight decay can raise the loss along the flow; C = L_λ(θ(0)) satisfies both the "
        "hypothesis and what the proof uses",
        "proof gap",
    ),
    Erratum(
        "erratum-ch09-a2-depends-on-t",
        "Theorem 1 (Section 4) against Theorem 2",
        "\"terms A_1, A_2, B depend only on initialization, λ, and K\", yet "
        "A_2 = 2B^{2−2/K}CA_1(1 − e^{−λKt/2})/(λK)",
        "A_2(t) increases to A_2(∞) = 2B^{2−2/K}CA_1/(λK), which depends only on the "
        "initialisation, λ and K",
        "misprint",
    ),
    Erratum(
        "erratum-ch09-theorem1-false",
        "Theorem 1, Section 4 (\"a direct corollary\" of Theorem 2, Appendix C.3)",
        "|f_{θ(t)+θ′(t)}(x) − f_{θ(t)}(x)| ≤ |f_{θ(0)}(x)|A_1 e^{−λKt} + A_2 ε",
        "with ε = 0 and balanced starts the merged net gives (1 + R(t))f_θ(x) + O(e^{−λt}): the "
        "gap settles at |R_∞ f_θ(x)| > 0 (cross terms of the layer-wise sum) while the right side "
        "tends to 0",
        "false",
    ),
    Erratum(
        "erratum-ch12-argmax-head",
        "Section 3, closing paragraph (the homogeneous attention head)",
        "\"if we replace softmax with argmax … we will obtain a homogeneous attention head, and "
        "Lemmas 2 and 3 hold for such models\"",
        "no point satisfies Lemma 2's hypotheses: stationarity forces W_Q = W_K = 0, where every "
        "score ties and f is discontinuous, and GD only approaches it; the identity holds for "
        "W_V and w_O, and Lemmas 2–3 say nothing about W_Q, W_K",
        "false",
    ),
)

_QUICK = "reproduced at quick scale only"
SCORECARD: tuple[Score, ...] = (
    Score("Eq. (2)", "holds with a correction", "ch02-eq-2",
          "footnote 3 should read ∂L; reached exactly by linear and squared-ReLU nets, by ReLU "
          "nets to about 10⁻³ as a Clarke subgradient"),
    Score("Eq. (4)", "holds with a correction", "ch09-eq-4", "the power of ‖w‖ is −2/K"),
    Score("Lemma 1", "holds", "ch03-lem-deep-linear", "to machine precision"),
    Score("Lemma 2", "holds", "ch04-lem-norm-preservation", "for every layer, H = 1 and 2"),
    Score("Lemma 3", "holds", "ch05-lem-low-rank",
          "inputs in the unit ball are a standing assumption, and essential"),
    Score("Corollary 1", "holds", "ch05-cor-1"),
    Score("Remark 1", "holds", "ch05-rem-1", "its threshold is loose by a factor 2 to 6"),
    Score("Lemma 4", "holds with a correction", "ch08-lem-lemma4", "needs |1 − ηλ| when ηλ > 1"),
    Score("Lemma 5", "false", "ch09-lem5", "holds only if the flow collapses to w → 0"),
    Score("Theorem 1", "false", "ch09-thm1",
          "the merged gap stays constant while the bound tends to 0 (K = 2, 3, 4)"),
    Score("Theorem 2", "false", "ch09-thm2", "its rate is λ at a nonzero stationary point"),
    Score("Theorem 3", "holds", "ch09-thm-arora",
          "Arora et al.'s end-to-end flow, with Eq. (4) corrected"),
    Score("Figure 1", "awaiting the full-scale run", "ch06-figures",
          "measured on MiniLM; Phi-2 and GPT-J are read from a reader's cache"),
    Score("Figure 2", _QUICK, "ch05-figure-2", "inverse stable rank rises with λ"),
    Score("Figure 3", _QUICK, "ch10-figure-3",
          "merging works on different tasks, fails on the same task"),
    Score("Figure 4", "awaiting the full-scale run", "ch06-figures",
          "measured on MiniLM; BERT, GPT-2 and RoBERTa are read from a reader's cache"),
    Score("Figure 5", _QUICK, "ch10-figure-5", "held-out error of merged nets"),
    Score("Figure 6", _QUICK, "ch11-figure-6",
          "hypotheses (1), (2), (4) reproduce; (3), weight decay, does not show at quick scale"),
    Score("Table 1", "awaiting the full-scale run", "ch06-table1",
          "the MiniLM row is computed; the paper's rows are checked when cached"),
)


_BOX = re.compile(
    r"^```+\{admonition\}\s+(Erratum|Note|Observation)\b:?\s*([^\n]*)\n((?::[^\n]*\n)*)", re.M
)
_NAME = re.compile(r"^:name:\s*(\S+)", re.M)
_TARGET = re.compile(r"^\(([\w-]+)\)=\s*$|^:label:\s*(\S+)|^:name:\s*(\S+)", re.M)


@dataclass(frozen=True)
class Box:
    """An Erratum, Note or Observation box as a chapter writes it."""

    kind: str
    title: str
    page: str


def book_dir() -> Path:
    """The ``book/`` folder of the checkout this package is installed from."""
    return Path(__file__).resolve().parents[2] / "book"


def book_boxes(book: Path) -> dict[str, Box]:
    """Every Erratum, Note and Observation box in ``book/NN_*.md``, by its ``:name:``."""
    boxes: dict[str, Box] = {}
    for page in sorted(Path(book).glob("[0-9][0-9]_*.md")):
        for match in _BOX.finditer(page.read_text(encoding="utf-8")):
            kind = match.group(1).lower()
            name = _NAME.search(match.group(3))
            key = name.group(1) if name else f"<unnamed {kind} in {page.name}>"
            boxes[key] = Box(kind, match.group(2).strip(), page.name)
    return boxes


def book_targets(book: Path) -> dict[str, str]:
    """Every label a reference can point at → its role (``prf:ref`` for proof boxes, or ``ref``)."""
    targets: dict[str, str] = {}
    for page in Path(book).glob("*.md"):
        for match in _TARGET.finditer(page.read_text(encoding="utf-8")):
            target, prf, name = match.groups()
            targets[target or prf or name] = "prf:ref" if prf else "ref"
    return targets


def problems(book: Path) -> list[str]:
    """What keeps the table and the chapters' boxes out of step (empty when in step)."""
    found: list[str] = []
    boxes = book_boxes(book)
    table = {e.label for e in ERRATA}
    for name, box in sorted(boxes.items()):
        prefix = f"{box.kind}-ch{box.page[:2]}-"
        if not name.startswith(prefix):
            found.append(f"{box.page}: the {box.kind} box {name!r} must be named '{prefix}…'")
        if box.kind == "erratum" and name not in table:
            found.append(f"{box.page}: erratum box {name!r} is missing from lowrank.errata.ERRATA")
    for label in sorted(table - {n for n, b in boxes.items() if b.kind == "erratum"}):
        found.append(f"ERRATA names {label!r}, but no chapter has an erratum box of that name")
    targets = book_targets(book)
    for score in SCORECARD:
        if score.label not in targets:
            found.append(f"SCORECARD's {score.result!r} links to {score.label!r}, not in the book")
    for entry in ERRATA:
        if entry.severity not in SEVERITIES:
            found.append(f"{entry.label}: severity must be one of {SEVERITIES}")
    for score in SCORECARD:
        if score.status not in STATUSES:
            found.append(f"{score.result}: status must be one of {STATUSES}")
    return found


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def errata_table() -> str:
    """The errata as one MyST table, a row each, linking to the chapter's box."""
    rows = [
        "| where in the paper | printed | what holds instead | severity | box |",
        "| --- | --- | --- | --- | --- |",
    ]
    for e in sorted(ERRATA, key=lambda e: (e.chapter, e.label)):
        link = f"{{ref}}`chapter {e.chapter} <{e.label}>`"
        rows.append(
            f"| {_cell(e.location)} | {_cell(e.printed)} | {_cell(e.holds)} | {e.severity} "
            f"| {link} |"
        )
    return "\n".join(rows)


def notes_table(book: Path) -> str:
    """The chapters' Notes and Observations, a row each, linking to the box."""
    rows = ["| chapter | kind | box |", "| --- | --- | --- |"]
    boxes = sorted(book_boxes(book).items(), key=lambda kv: (kv[1].page, kv[0]))
    for name, box in boxes:
        if box.kind != "erratum":
            title = _cell(box.title).replace("`", "").replace("<", "‹")
            rows.append(f"| {int(box.page[:2])} | {box.kind} | {{ref}}`{title} <{name}>` |")
    return "\n".join(rows)


def scorecard_table(book: Path) -> str:
    """Every numbered result of the paper → its chapter → its status, as one MyST table."""
    roles = book_targets(book)
    rows = ["| result | chapter | status | comment |", "| --- | --- | --- | --- |"]
    for s in SCORECARD:
        link = f"{{{roles.get(s.label, 'ref')}}}`{s.chapter} <{s.label}>`"
        rows.append(f"| {s.result} | {link} | {s.status} | {_cell(s.comment)} |")
    return "\n".join(rows)
