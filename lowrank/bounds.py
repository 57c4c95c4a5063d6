"""Right-hand sides of the paper's bounds, each function citing its statement.

Sections: Lemma 3 / Corollary 1 / Remark 1 (chapter 5); the linear warm-up and
Lemma 4 (chapters 7-8); Theorem 2 and Lemma 5 (chapter 9).
"""

from __future__ import annotations

# --- Section 3: Lemma 3, Corollary 1, Remark 1 (chapter 5) -------------------------

# --- Section 4: the linear warm-up and Lemma 4 (chapters 7-8) ----------------------

# --- Appendix C.3: Theorem 2 and Lemma 5 (chapter 9) -------------------------------
