"""Chapter 12: the argmax attention head trained with weight decay."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from lowrank.chapters import ch12_beyond_attention as ch12_attention
from lowrank.core import attention
from lowrank.data import synthetic
from lowrank.runner import registry

CPU = torch.device("cpu")


def _tiny_attention(members: int = 2):
    x, y, query, _ = synthetic.marked_token_task(32, 4, 5, seed=2)
    p0 = attention.init_attention(members, 5, 4, seed=3)
    return x, y, query, p0


def test_attention_tiny_run_lemma2_and_nonstationary_point_fails():
    exp = registry.get("beyond-attention")
    spec = {**exp.spec("quick"), "n": 32, "d": 5, "k": 4, "lams": [0.1], "eta": 0.1,
            "steps": 2000}
    rows = pd.DataFrame(exp.run(spec, CPU, False))
    assert {"kind", "lam", "param", "lam_norm2", "B2", "ratio", "alignment_residual", "fro",
            "fro_init", "attention_change"} <= set(rows.columns)
    arg = rows[rows.kind == "argmax"].set_index("param")
    assert arg.loc["W_Q", "fro"] == pytest.approx(0.99**2000 * arg.loc["W_Q", "fro_init"],
                                                   rel=1e-9)
    assert arg.loc["W_Q", "attention_change"] == 0
    assert abs(arg.loc["W_V", "ratio"] - 1) < 1e-6
    # at the initialisation (not stationary) Lemma 2's identity fails for W_V
    x, y, query, _ = synthetic.marked_token_task(32, 4, 5, seed=0)
    p0 = attention.init_attention(1, 5, 4, seed=1)
    init_rows = ch12_attention.attention_lemma2(p0, x, y, query, "argmax", torch.tensor([0.1]))
    wv = next(r for r in init_rows if r["param"] == "W_V")
    assert abs(wv["ratio"] - 1) > 0.1 and wv["alignment_residual"] > 0.1


def test_attention_gd_divergence_names_step_and_member():
    from lowrank.core.engine import DivergenceError

    x, y, query, _ = synthetic.marked_token_task(16, 3, 5, seed=0)
    params = attention.init_attention(2, 5, 4, seed=1)
    params["w_O"][1] = float("inf")  # member 1's output is non-finite from the start
    with pytest.raises(DivergenceError, match="member 1") as err:
        ch12_attention.attention_gd(params, x, y, query, "softmax", torch.tensor([0.1, 0.1]),
                                    0.1, 3)
    assert err.value.step == 0
    with pytest.raises(ValueError, match="lam must be >= 0"):
        ch12_attention.attention_gd(attention.init_attention(2, 5, 4), x, y, query, "softmax",
                            torch.tensor([0.1, -0.1]), 0.1, 3)


def test_argmax_score_gaps_scale_quadratically_and_vanish_at_zero():
    x, _, query, p0 = _tiny_attention()
    gaps = ch12_attention.argmax_score_gaps(p0, x, query)
    assert gaps.shape == (2, 32) and bool((gaps >= 0).all()) and float(gaps.min()) > 0
    half = {**p0, "W_Q": 0.5 * p0["W_Q"], "W_K": 0.5 * p0["W_K"]}
    torch.testing.assert_close(ch12_attention.argmax_score_gaps(half, x, query), gaps / 4)
    zero = {**p0, "W_Q": torch.zeros_like(p0["W_Q"])}
    assert float(ch12_attention.argmax_score_gaps(zero, x, query).abs().max()) == 0.0  # all tie


def test_argmax_decay_trace_is_pure_decay_and_breaks_the_layer_product():
    x, y, query, p0 = _tiny_attention()
    lams = torch.tensor([0.05, 0.2], dtype=torch.float64)
    rows = ch12_attention.argmax_decay_trace(p0, x, y, query, lams, eta=0.1, steps=300, every=100)
    assert [r["t"] for r in rows if r["lam"] == 0.2] == [0, 100, 200, 300]
    for lam in (0.05, 0.2):
        tr = [r for r in rows if r["lam"] == lam]
        for r in tr:
            decay = (1 - 0.1 * lam) ** r["t"]
            assert math.isclose(r["fro_Q"], decay * tr[0]["fro_Q"], rel_tol=1e-9)
            assert math.isclose(r["gap_max"], decay**2 * tr[0]["gap_max"], rel_tol=1e-6)
        assert tr[-1]["f_over_x"] / tr[-1]["layer_product"] > tr[0]["f_over_x"] / tr[0][
            "layer_product"]
    end = ch12_attention.attention_gd(p0, x, y, query, "argmax", lams, 0.1, 300)
    last = [r for r in rows if r["t"] == 300]
    for e, r in enumerate(last):
        assert math.isclose(r["fro_Q"], float(end["W_Q"][e].norm()), rel_tol=1e-12)
    with pytest.raises(ValueError, match="every"):
        ch12_attention.argmax_decay_trace(p0, x, y, query, lams, 0.1, 10, every=0)


def test_argmax_jump_is_discontinuous_only_at_the_tie():
    x, _, query, p0 = _tiny_attention()
    deltas = [1e-3, 1e-9]
    rows = ch12_attention.argmax_jump(p0, x, query, deltas, seed=1)
    arg = {(r["member"], r["delta"]): r["jump"] for r in rows if r["kind"] == "argmax"}
    soft = {(r["member"], r["delta"]): r["jump"] for r in rows if r["kind"] == "softmax"}
    for e in range(2):
        assert arg[(e, 1e-3)] > 0 and arg[(e, 1e-9)] == arg[(e, 1e-3)]  # no shrinking
        assert soft[(e, 1e-9)] < 1e-12 * max(soft[(e, 1e-3)], 1e-300) + 1e-15
    # away from the tie the same check finds no jump: the argmax head is locally constant
    off = ch12_attention.argmax_jump(p0, x, query, [1e-9], seed=1, zero_qk=False)
    assert all(r["jump"] == 0 for r in off if r["kind"] == "argmax")
    with pytest.raises(ValueError, match="delta"):
        ch12_attention.argmax_jump(p0, x, query, [0.0])


def test_lemma2_and_head_tables_are_the_rows_they_show():
    rows = []
    for kind in ("argmax", "softmax"):
        for lam in (0.01, 0.1):
            for i, param in enumerate(("W_Q", "W_K", "W_V", "w_O")):
                rows.append({"kind": kind, "lam": lam, "param": param, "ratio": i + lam,
                             "alignment_residual": lam / (i + 1), "err": 0.5 - lam,
                             "attention_change": 0.0 if kind == "argmax" else lam})
    df = pd.DataFrame(rows)
    lemma2 = ch12_attention.lemma2_table(df)
    assert lemma2.shape == (8, 4)
    assert list(lemma2.index[:4]) == [("argmax", p) for p in ("W_Q", "W_K", "W_V", "w_O")]
    assert lemma2.loc[("softmax", "W_V"), ("λ‖W‖²/B²", "λ = 0.1")] == 2.1
    assert lemma2.loc[("argmax", "w_O"), ("alignment residual", "λ = 0.01")] == 0.01 / 4
    heads = ch12_attention.head_table(df)
    assert list(heads.index) == ["argmax", "softmax"] and heads.shape == (2, 4)
    assert heads.loc["softmax", ("attention change", "λ = 0.1")] == 0.1
    assert heads.loc["argmax", ("training error", "λ = 0.01")] == 0.49
