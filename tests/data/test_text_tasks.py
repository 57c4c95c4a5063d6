"""The template text tasks of chapter 13: seeded, exact overlap ρ, labels by the rule."""

from __future__ import annotations

import pytest
import torch

from lowrank.data import text_tasks as tt
from lowrank.data.checkpoints import minilm_checkpoint


@pytest.fixture(scope="module")
def vocab():
    return tt.load_vocab(minilm_checkpoint() / "vocab.txt")


def test_pool_words_are_single_whole_tokens(vocab):
    pool = tt.word_pool(vocab)
    assert len(pool) > 1000
    tt.check_single_tokens(pool, vocab)
    assert all(w.isalpha() and w.islower() and not w.startswith("##") for w in pool)
    with pytest.raises(ValueError, match="single tokens"):
        tt.check_single_tokens(["table", "##ing"], vocab)
    with pytest.raises(ValueError, match="single tokens"):
        tt.check_single_tokens(["notawordqq"], vocab)


@pytest.mark.parametrize("rho", [0.0, 0.25, 0.5, 0.75, 1.0])
def test_overlap_is_exact(vocab, rho):
    a, b = tt.task_pair(vocab, 16, rho, seed=3)
    assert len(a.words) == len(b.words) == 16
    assert tt.overlap(a, b) == rho
    assert len(a.pos) == len(a.neg) == 4 and len(a.filler) == 8


def test_task_a_does_not_depend_on_rho_and_draws_are_seeded(vocab):
    a0, b0 = tt.task_pair(vocab, 16, 0.0, seed=1)
    a1, _ = tt.task_pair(vocab, 16, 1.0, seed=1)
    assert a0 == a1
    assert tt.task_pair(vocab, 16, 0.0, seed=1) == (a0, b0)
    assert tt.task_pair(vocab, 16, 0.0, seed=2)[0] != a0
    s1, y1 = a0.sample(10, 3, seed=5)
    s2, y2 = a0.sample(10, 3, seed=5)
    assert s1 == s2 and torch.equal(y1, y2)
    assert a0.sample(10, 3, seed=6)[0] != s1


def test_labels_follow_the_rule(vocab):
    a, _ = tt.task_pair(vocab, 16, 0.5, seed=0)
    sentences, labels = a.sample(40, 4, seed=0)
    assert labels.abs().eq(1).all() and labels.sum() == 0  # balanced ±1
    for s, y in zip(sentences, labels.tolist(), strict=True):
        keys = [w for w in s if w in a.pos or w in a.neg]
        assert len(s) == 4 and len(keys) == 1
        assert y == (1 if keys[0] in a.pos else -1)
        assert set(s) <= a.words
    with pytest.raises(ValueError, match="exactly one key"):
        a.label([a.pos[0], a.neg[0]])


def test_tokenise_is_whole_word_lookup_like_berts_tokenizer(vocab):
    from transformers import AutoTokenizer

    a, _ = tt.task_pair(vocab, 16, 0.0, seed=0)
    sentences, _ = a.sample(5, 3, seed=0)
    ids = tt.tokenise(sentences, vocab)
    assert ids.shape == (5, 5)
    assert (ids[:, 0] == vocab["[CLS]"]).all() and (ids[:, -1] == vocab["[SEP]"]).all()
    tok = AutoTokenizer.from_pretrained(str(minilm_checkpoint()))
    want = tok([" ".join(s) for s in sentences])["input_ids"]
    assert ids.tolist() == want


def test_bad_arguments(vocab):
    with pytest.raises(ValueError, match="multiple of 4"):
        tt.task_pair(vocab, 10, 0.0, seed=0)
    with pytest.raises(ValueError, match="rho"):
        tt.task_pair(vocab, 16, 1.5, seed=0)
