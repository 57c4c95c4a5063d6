"""Chapter 13: the BERT forward, the anchored GD update, the merges and the leak check."""

from __future__ import annotations

import pytest
import torch

from lowrank.chapters import ch13_task_arithmetic as ch13
from lowrank.chapters.ch13_task_arithmetic_bert import encode, load_minilm
from lowrank.chapters.ch13_task_arithmetic_train import GradientTap, Trainable, anchored_gd
from lowrank.core.merge import merge_ties
from lowrank.data import text_tasks as tt
from lowrank.data.checkpoints import minilm_checkpoint
from lowrank.runner import registry


@pytest.fixture(scope="module")
def model():
    return load_minilm(torch.float64)


@pytest.fixture(scope="module")
def tokens():
    vocab = tt.load_vocab(minilm_checkpoint() / "vocab.txt")
    a, b = tt.task_pair(vocab, 16, 0.0, seed=0)
    (sa, ya), (sb, yb) = a.sample(6, 3, seed=0), b.sample(6, 3, seed=1)
    return tt.tokenise(sa, vocab), ya, tt.tokenise(sb, vocab), yb


def _inputs(model, tokens, first=5):
    xa = encode(tokens[0], model, range(first))
    xb = encode(tokens[2], model, range(first))
    return torch.stack([xa, xb]), torch.stack([tokens[1], tokens[3]]).double()


def test_merge_rules():
    g = torch.Generator().manual_seed(0)
    base = [torch.randn(4, 5, generator=g), torch.randn(1, 4, generator=g)]
    ta, tb = ([torch.randn_like(w) for w in base] for _ in range(2))
    tsum = ch13.merged_taus(ta, tb, base, "task_arithmetic")
    tavg = ch13.merged_taus(ta, tb, base, "linear")
    for s, m, a, b in zip(tsum, tavg, ta, tb, strict=True):
        assert torch.equal(s, a + b) and torch.allclose(m, (a + b) / 2)
    ties = ch13.merged_taus(ta, tb, base, "ties")
    want = merge_ties(base, [[w + t for w, t in zip(base, tau, strict=True)] for tau in (ta, tb)])
    for t, w, b0 in zip(ties, want, base, strict=True):
        assert torch.allclose(b0 + t, w)
    with pytest.raises(ValueError, match="method"):
        ch13.merged_taus(ta, tb, base, "dare")


def test_abs_cos_and_span_residual():
    e = torch.eye(4, dtype=torch.float64)
    assert ch13.abs_cos(e[:2], e[2:]) == (0.0, 0.0)
    assert ch13.abs_cos(e[:1], -3 * e[:1]) == pytest.approx((1.0, 1.0))
    tau = torch.randn(3, 4, dtype=torch.float64)
    assert ch13.span_residual(tau @ e[:2].T @ e[:2], e[:2]) < 1e-12
    assert ch13.span_residual(tau, e[:2]) > 0.1


def test_leak_bound_holds_on_a_run_and_rejects_a_tampered_leak(model, tokens):
    tr = Trainable(model, (5,))
    x, y = _inputs(model, tokens)
    lams, eta, steps = [0.0, 0.2], 0.3, 3
    tap = GradientTap(5)
    roles = {r: tr.names.index((5, r)) for r in ("Q", "K", "V")}
    mon = ch13.LeakMonitor(roles, [1], x[0], x, lams, eta, tap)
    taus = anchored_gd(tr, x, y, lams, eta, steps, mon, tap)
    words = torch.ones(x[0].shape[0] * x[0].shape[1], dtype=torch.bool)
    rows = mon.rows(taus, words)
    assert len(rows) == 3
    assert all(r["viol_recursion"] <= 0 and r["viol_lemma"] <= 0 for r in rows)
    assert max(r["ratio_recursion"] for r in rows) > 0.5
    tampered = [t.clone() for t in taus]
    tampered[roles["Q"]] *= 2.0  # a leak twice the true one must break the bound
    bad = [r for r in mon.rows(tampered, words) if r["role"] == "Q"]
    assert bad[0]["viol_recursion"] > 0
    leak = torch.tensor([1.0, 2.0])
    assert ch13.leak_bound_violation(leak, torch.tensor([1.0, 2.0]), 1e-4) <= 0
    assert ch13.leak_bound_violation(leak * 1.01, torch.tensor([1.0, 2.0]), 1e-4) > 0
    with pytest.raises(ValueError, match="match"):
        ch13.leak_bound_violation(leak, torch.ones(3), 1e-4)


def test_registered_with_both_scales_and_a_smoke_cut():
    exp = registry.get("ta-minilm")
    quick, full = exp.spec("quick"), exp.spec("full")
    assert quick["first_layer"] == 5 and full["first_layer"] == 0
    assert 0.0 in quick["lams"] and 0.0 in quick["adam_lams"]
    smoke = exp.smoke(full)
    assert smoke["steps"] == 2 and smoke["first_layer"] == 0 and smoke["k"] == full["k"]
    assert len(ch13.members(smoke)) == 6
    members = ch13.members(quick)
    assert {m["opt"] for m in members} == {"gd", "adamw"}
    assert len([m for m in members if m["task"] == "A"]) == len(quick["lams"]) + len(
        quick["adam_lams"])


def test_tidy_rows_share_keys():
    rows = ch13.tidy([{"a": 1}, {"b": 2}])
    assert rows == [{"a": 1, "b": None}, {"a": None, "b": 2}]
