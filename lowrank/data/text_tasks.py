"""Seeded binary text tasks from word templates, with a controlled vocabulary overlap ρ.

A task owns ``m`` words split into ``m/4`` positive key words, ``m/4`` negative key words
and ``m/2`` fillers. A sentence is ``[CLS] w_1 … w_k [SEP]``: one key word at a random
position among ``k - 1`` fillers; the label is +1 when the key word is positive and −1 when
it is negative (the rule). Two tasks share exactly ``round(ρ m)`` words: task B takes that
many of task A's words (drawn uniformly over A's roles) and gives them B-roles by a fresh
random split, so ρ = 1 means the same words with an independent labelling (the analogue of
chapter 10's "same task") and ρ = 0 disjoint vocabularies. Every word is a single token of
the checkpoint's ``vocab.txt``, checked here; tokenisation is whole-word lookup.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch

CLS, SEP = "[CLS]", "[SEP]"
#: frequent whole words of BERT's uncased vocabulary occupy ids ~2000-8000
POOL_IDS = (2000, 8000)
_WORD = re.compile(r"[a-z]{4,8}")


def load_vocab(path: str | Path) -> dict[str, int]:
    """``vocab.txt`` as token → id (line number), as BERT's tokenizer reads it."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return {tok: i for i, tok in enumerate(lines)}


def word_pool(vocab: dict[str, int], lo: int = POOL_IDS[0], hi: int = POOL_IDS[1]) -> list[str]:
    """Whole lowercase words of 4-8 letters with ids in [lo, hi): single tokens, by id."""
    words = [w for w, i in vocab.items() if lo <= i < hi and _WORD.fullmatch(w)]
    return sorted(words, key=vocab.__getitem__)


def check_single_tokens(words: list[str], vocab: dict[str, int]) -> None:
    """Refuse any word that is not one whole token of the vocabulary (no ## pieces)."""
    bad = [w for w in words if w not in vocab or w.startswith("##")]
    if bad:
        raise ValueError(f"words not single tokens of the vocabulary: {bad[:10]}")


def tokenise(sentences: list[list[str]], vocab: dict[str, int]) -> torch.Tensor:
    """Whole-word lookup: ``[CLS] w_1 … w_k [SEP]`` → (n, k + 2) token ids."""
    for s in sentences:
        check_single_tokens(s, vocab)
    rows = [[vocab[CLS], *[vocab[w] for w in s], vocab[SEP]] for s in sentences]
    if len({len(r) for r in rows}) > 1:
        raise ValueError("all sentences must have the same number of words")
    return torch.tensor(rows, dtype=torch.long)


@dataclass(frozen=True)
class TextTask:
    """One task's words by role: positive keys, negative keys, fillers."""

    pos: tuple[str, ...]
    neg: tuple[str, ...]
    filler: tuple[str, ...]

    @property
    def words(self) -> set[str]:
        """Every word of the task."""
        return set(self.pos) | set(self.neg) | set(self.filler)

    def label(self, sentence: list[str]) -> int:
        """The rule: +1 if the sentence's key word is positive, −1 if negative."""
        keys = [w for w in sentence if w in self.pos or w in self.neg]
        if len(keys) != 1:
            raise ValueError(f"a sentence must hold exactly one key word, got {keys}")
        return 1 if keys[0] in self.pos else -1

    def sample(self, n: int, k: int, seed: int) -> tuple[list[list[str]], torch.Tensor]:
        """``n`` sentences of ``k`` words (one key, ``k - 1`` fillers) and their ±1 labels."""
        if k < 2 or n < 1:
            raise ValueError(f"need n >= 1 sentences of k >= 2 words, got n={n}, k={k}")
        g = torch.Generator().manual_seed(seed)
        sentences, labels = [], []
        for i in range(n):
            y = 1 if i % 2 == 0 else -1  # balanced classes
            keys = self.pos if y == 1 else self.neg
            key = keys[int(torch.randint(len(keys), (1,), generator=g))]
            fill = torch.randint(len(self.filler), (k - 1,), generator=g).tolist()
            words = [self.filler[j] for j in fill]
            words.insert(int(torch.randint(k, (1,), generator=g)), key)
            sentences.append(words)
            labels.append(self.label(words))
        perm = torch.randperm(n, generator=g).tolist()
        return [sentences[i] for i in perm], torch.tensor([labels[i] for i in perm])


def _split(words: list[str]) -> TextTask:
    q = len(words) // 4
    return TextTask(tuple(words[:q]), tuple(words[q:2 * q]), tuple(words[2 * q:]))


def task_pair(vocab: dict[str, int], m: int, rho: float, seed: int) -> tuple[TextTask, TextTask]:
    """Tasks A and B of ``m`` words each sharing exactly ``round(ρ m)`` words (seeded).

    Task A depends on ``seed`` only (not on ρ), so a ρ sweep pairs one task A with several B.
    """
    if m < 8 or m % 4:
        raise ValueError(f"m must be a multiple of 4 and >= 8, got {m}")
    if not 0 <= rho <= 1:
        raise ValueError(f"rho must be in [0, 1], got {rho}")
    pool = word_pool(vocab)
    check_single_tokens(pool, vocab)
    if len(pool) < 2 * m:
        raise ValueError(f"the vocabulary has only {len(pool)} pool words, need {2 * m}")
    g = torch.Generator().manual_seed(seed)
    order = [pool[i] for i in torch.randperm(len(pool), generator=g).tolist()]
    words_a, fresh = order[:m], order[m:2 * m]
    shared = round(rho * m)
    g_b = torch.Generator().manual_seed(seed + 1 + int(round(rho * 1000)))
    from_a = [words_a[i] for i in torch.randperm(m, generator=g_b)[:shared].tolist()]
    words_b = from_a + fresh[: m - shared]
    words_b = [words_b[i] for i in torch.randperm(m, generator=g_b).tolist()]
    return _split(words_a), _split(words_b)


def overlap(a: TextTask, b: TextTask) -> float:
    """The vocabulary overlap ρ = |V_A ∩ V_B| / |V_A| of two tasks of equal size."""
    if len(a.words) != len(b.words):
        raise ValueError("tasks must have vocabularies of the same size")
    return len(a.words & b.words) / len(a.words)
