"""Chapter 12 (beyond the paper): data, criterion, each experiment at a tiny size, and checks
that fail on wrong inputs."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from lowrank import beyond, experiments

CPU = torch.device("cpu")


def test_retained_fraction_known_values_and_criterion():
    ln2 = math.log(2)
    assert float(beyond.retained_fraction(0.1, 0.1)) == pytest.approx(1.0)
    assert float(beyond.retained_fraction(0.1, ln2)) == pytest.approx(0.0)
    # gain 0.6 − 0.1 of 0.6: R = (ln2 − 0.2)/(ln2 − 0.1)
    assert float(beyond.retained_fraction(0.1, 0.2)) == pytest.approx((ln2 - 0.2) / (ln2 - 0.1))
    works = beyond.merge_works(np.array([0.05, 0.05, 0.5]), np.array([0.1, 0.4, 0.5]))
    assert works.tolist() == [True, False, False]  # R=.92 ok; R=.45 fails; not learned fails
    with pytest.raises(ValueError, match="keep"):
        beyond.merge_works(0.1, 0.1, keep=1.5)


@pytest.mark.parametrize("eps", [0.0, 0.3, 1.0])
def test_rotated_pair_overlap_is_bounded_and_same_at_one(eps):
    pair = beyond.rotated_task_pair(40, 10, eps, seed=2)
    over = (pair.first.x @ pair.second.x.T).abs()
    assert float(over.max()) <= eps + 1e-12
    assert torch.allclose(pair.first.x.norm(dim=1), torch.ones(40, dtype=torch.float64))
    if eps == 1.0:  # one subspace: projecting task 2 onto task 1's span loses nothing
        q, _ = torch.linalg.qr(pair.first.x.T)
        resid = pair.second.x.T - q @ (q.T @ pair.second.x.T)
        assert float(resid.abs().max()) < 1e-12
    with pytest.raises(ValueError, match="eps"):
        beyond.rotated_task_pair(10, 10, 1.5)


def test_subspace_tasks_are_mutually_orthogonal():
    tasks = beyond.subspace_tasks(20, 3, 4, seed=1)
    assert len(tasks) == 4 and tasks[0].x.shape == (20, 12)
    for i in range(4):
        for j in range(i + 1, 4):
            assert float((tasks[i].x @ tasks[j].x.T).abs().max()) < 1e-12
    with pytest.raises(ValueError, match="k"):
        beyond.subspace_tasks(20, 3, 0)


def test_shallow_ensemble_gd_matches_shallow_module_and_lemma4_exact_at_eps0():
    from lowrank.shallow import shallow_gd

    pair = beyond.rotated_task_pair(30, 8, 0.0, seed=3)
    u = beyond.unit_output_vector(6, seed=0)
    w0 = torch.randn(2, 6, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = torch.stack([pair.first.x, pair.first.x])
    y = torch.stack([pair.first.y, pair.first.y])
    wt = beyond.shallow_ensemble_gd(w0, u, x, y, 0.05, 0.5, 20)
    ref = shallow_gd(w0, u, pair.first.x, pair.first.y, [0.05, 0.05], 0.5, 20)[-1]
    assert torch.allclose(wt, ref, rtol=1e-12, atol=1e-14)
    # ε = 0: on the other task's inputs only the decayed initialisation remains
    leak = pair.second.x @ wt[0].T
    assert torch.allclose(leak, (1 - 0.025) ** 20 * (pair.second.x @ w0[0].T), atol=1e-13)


def test_overlap_tiny_columns_and_criterion_fails_for_same_task():
    exp = experiments.get("beyond-overlap")
    spec = {**exp.spec("quick"), "eps": [0.0, 1.0], "seeds": 1, "n": 24, "d": 8, "m": 8,
            "hidden": [8, 4], "steps": 150, "steps_shallow": 150, "geometries": ["rotated"]}
    rows = pd.DataFrame(exp.run(spec, CPU, False))
    assert {"model", "geometry", "eps", "seed", "task", "loss_individual", "loss_merged",
            "err_merged", "leak_max", "init_term_max", "eps_term"} <= set(rows.columns)
    assert len(rows) == 2 * 2 * 2  # models x eps x tasks
    summary = beyond.summarise_overlap(rows)
    same = summary[summary.eps == 1.0]
    assert not same.works.any()  # the merge of non-orthogonal (identical) tasks fails
    sh = rows[rows.model == "shallow"]
    # at ε = 0 Lemma 4 holds with equality (pure decay), so allow rounding only
    assert (sh.leak_max <= (sh.init_term_max + sh.eps_term) * (1 + 1e-12)).all()
    assert not (sh.leak_max <= 0.5 * (sh.init_term_max + sh.eps_term)).all()  # not vacuous
    # a wrong bound (ε term dropped) is violated as soon as tasks overlap
    assert (sh[sh.eps == 1.0].leak_max > sh[sh.eps == 1.0].init_term_max).all()
    assert beyond.breaking_eps(summary, "mlp", "rotated") <= 1.0


def test_ktasks_tiny_columns_and_merging_many_fails():
    exp = experiments.get("beyond-ktasks")
    spec = {**exp.spec("quick"), "k_max": 4, "ks": [1, 4], "seeds": 1, "n": 16,
            "widths": [8], "steps": 60}
    rows = pd.DataFrame(exp.run(spec, CPU, False))
    assert {"width", "k", "task", "loss_individual", "loss_merged", "srank2_layer1",
            "merged_srank2_layer1"} <= set(rows.columns)
    assert len(rows) == 1 + 4
    one = rows[rows.k == 1]
    assert np.allclose(one.loss_merged, one.loss_individual)  # the sum of one net is the net


def test_rules_identities_and_tiny_columns():
    exp = experiments.get("beyond-rules")
    spec = {**exp.spec("quick"), "seeds": 1, "n": 20, "d": 8, "hidden": [8, 4], "steps": 50,
            "scales": [0.5, 1.0]}
    rows = pd.DataFrame(exp.run(spec, CPU, False))
    assert set(rows.rule) == set(beyond.RULES)
    assert {"setting", "eps", "seed", "rule", "scale", "task", "loss", "err"} <= set(rows.columns)

    def get(rule, scale, col):
        sel = rows[(rows.rule == rule) & (rows.scale == scale)]
        return sel.sort_values(["setting", "task"])[col].to_numpy()

    # homogeneity: the average makes the sum's mistakes; task arithmetic at 1/2 is the average
    assert np.array_equal(get("sum", 1.0, "err"), get("average", 0.5, "err"))
    assert np.allclose(get("average", 0.5, "loss"), get("task_arithmetic", 0.5, "loss"))
    # and a different scale is a different net
    assert not np.allclose(get("task_arithmetic", 1.0, "loss"), get("average", 0.5, "loss"))
    table = beyond.rules_table(rows)
    assert set(table.rule) == set(beyond.RULES)


def test_lambda_tiny_and_threshold_logic():
    exp = experiments.get("beyond-lambda")
    spec = {**exp.spec("quick"), "seeds": 1, "n": 20, "d": 8, "hidden": [8, 4], "steps": 40,
            "record_every": 20, "lams": [0.0, 0.01]}
    rows = pd.DataFrame(exp.run(spec, CPU, False))
    assert {"lam", "seed", "step", "model", "task", "value"} <= set(rows.columns)
    table = beyond.lambda_table(rows, spec["eta"])
    assert set(table.step) == {0, 20, 40}
    assert np.allclose(table.init_factor, (1 - spec["eta"] * table.lam) ** table.step)
    fake = pd.DataFrame({"lam": [0.0, 0.1, 1.0, 0.0, 0.1, 1.0], "step": [1, 1, 1, 2, 2, 2],
                         "works": [False, False, True, False, True, True]})
    assert beyond.smallest_working_lambda(fake) == {1: 1.0, 2: 0.1}
    none = fake.assign(works=False)
    assert beyond.smallest_working_lambda(none) == {1: math.inf, 2: math.inf}


def test_attention_argmax_is_degree_zero_in_query_and_key():
    x, y, query, marked = beyond.marked_token_task(32, 3, 5, seed=0)
    assert x.shape == (32, 3, 5) and set(y.tolist()) <= {-1.0, 1.0}
    params = beyond.init_attention(2, 5, 4, seed=1)
    out, _ = beyond.attention_forward(params, x, query, "argmax")
    scaled = {**params, "W_Q": 3.0 * params["W_Q"], "W_K": 0.5 * params["W_K"]}
    assert torch.allclose(beyond.attention_forward(scaled, x, query, "argmax")[0], out)
    doubled = {**params, "W_V": 2.0 * params["W_V"]}
    assert torch.allclose(beyond.attention_forward(doubled, x, query, "argmax")[0], 2 * out)
    # softmax is not invariant under scaling W_Q: the degree-0 claim fails for it
    soft, _ = beyond.attention_forward(params, x, query, "softmax")
    soft3, _ = beyond.attention_forward(scaled, x, query, "softmax")
    assert not torch.allclose(soft, soft3)
    with pytest.raises(ValueError, match="kind"):
        beyond.attention_forward(params, x, query, "hardmax")


def test_attention_tiny_run_lemma2_and_nonstationary_point_fails():
    exp = experiments.get("beyond-attention")
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
    x, y, query, _ = beyond.marked_token_task(32, 4, 5, seed=0)
    p0 = beyond.init_attention(1, 5, 4, seed=1)
    init_rows = beyond.attention_lemma2(p0, x, y, query, "argmax", torch.tensor([0.1]))
    wv = next(r for r in init_rows if r["param"] == "W_V")
    assert abs(wv["ratio"] - 1) > 0.1 and wv["alignment_residual"] > 0.1


def test_shallow_ensemble_gd_divergence_names_step_and_member():
    from lowrank.train import DivergenceError

    pair = beyond.rotated_task_pair(10, 4, 0.0, seed=0)
    u = beyond.unit_output_vector(3, seed=0)
    w0 = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = torch.stack([pair.first.x, pair.first.x])
    y = torch.stack([pair.first.y, pair.first.y])
    w0[1] *= 1e100  # ηλ = 1000: |1 − ηλ|^t blows up, member 1 reaches overflow first
    with pytest.raises(DivergenceError, match="member 1") as err:
        beyond.shallow_ensemble_gd(w0, u, x, y, 1.0, 1000.0, 200)
    assert 0 < err.value.step < 200 and err.value.member == 1
    with pytest.raises(ValueError, match="lam must be >= 0"):
        beyond.shallow_ensemble_gd(w0[:1], u, x[:1], y[:1], -0.1, 0.5, 5)


def test_attention_gd_divergence_names_step_and_member():
    from lowrank.train import DivergenceError

    x, y, query, _ = beyond.marked_token_task(16, 3, 5, seed=0)
    params = beyond.init_attention(2, 5, 4, seed=1)
    params["w_O"][1] = float("inf")  # member 1's output is non-finite from the start
    with pytest.raises(DivergenceError, match="member 1") as err:
        beyond.attention_gd(params, x, y, query, "softmax", torch.tensor([0.1, 0.1]), 0.1, 3)
    assert err.value.step == 0
    with pytest.raises(ValueError, match="lam must be >= 0"):
        beyond.attention_gd(beyond.init_attention(2, 5, 4), x, y, query, "softmax",
                            torch.tensor([0.1, -0.1]), 0.1, 3)


def _tiny_attention(members: int = 2):
    x, y, query, _ = beyond.marked_token_task(32, 4, 5, seed=2)
    p0 = beyond.init_attention(members, 5, 4, seed=3)
    return x, y, query, p0


def test_argmax_score_gaps_scale_quadratically_and_vanish_at_zero():
    x, _, query, p0 = _tiny_attention()
    gaps = beyond.argmax_score_gaps(p0, x, query)
    assert gaps.shape == (2, 32) and bool((gaps >= 0).all()) and float(gaps.min()) > 0
    half = {**p0, "W_Q": 0.5 * p0["W_Q"], "W_K": 0.5 * p0["W_K"]}
    torch.testing.assert_close(beyond.argmax_score_gaps(half, x, query), gaps / 4)
    zero = {**p0, "W_Q": torch.zeros_like(p0["W_Q"])}
    assert float(beyond.argmax_score_gaps(zero, x, query).abs().max()) == 0.0  # all tie


def test_argmax_decay_trace_is_pure_decay_and_breaks_the_layer_product():
    x, y, query, p0 = _tiny_attention()
    lams = torch.tensor([0.05, 0.2], dtype=torch.float64)
    rows = beyond.argmax_decay_trace(p0, x, y, query, lams, eta=0.1, steps=300, every=100)
    assert [r["t"] for r in rows if r["lam"] == 0.2] == [0, 100, 200, 300]
    for lam in (0.05, 0.2):
        tr = [r for r in rows if r["lam"] == lam]
        for r in tr:
            decay = (1 - 0.1 * lam) ** r["t"]
            assert math.isclose(r["fro_Q"], decay * tr[0]["fro_Q"], rel_tol=1e-9)
            assert math.isclose(r["gap_max"], decay**2 * tr[0]["gap_max"], rel_tol=1e-6)
        assert tr[-1]["f_over_x"] / tr[-1]["layer_product"] > tr[0]["f_over_x"] / tr[0][
            "layer_product"]
    end = beyond.attention_gd(p0, x, y, query, "argmax", lams, 0.1, 300)
    last = [r for r in rows if r["t"] == 300]
    for e, r in enumerate(last):
        assert math.isclose(r["fro_Q"], float(end["W_Q"][e].norm()), rel_tol=1e-12)
    with pytest.raises(ValueError, match="every"):
        beyond.argmax_decay_trace(p0, x, y, query, lams, 0.1, 10, every=0)


def test_argmax_jump_is_discontinuous_only_at_the_tie():
    x, _, query, p0 = _tiny_attention()
    deltas = [1e-3, 1e-9]
    rows = beyond.argmax_jump(p0, x, query, deltas, seed=1)
    arg = {(r["member"], r["delta"]): r["jump"] for r in rows if r["kind"] == "argmax"}
    soft = {(r["member"], r["delta"]): r["jump"] for r in rows if r["kind"] == "softmax"}
    for e in range(2):
        assert arg[(e, 1e-3)] > 0 and arg[(e, 1e-9)] == arg[(e, 1e-3)]  # no shrinking
        assert soft[(e, 1e-9)] < 1e-12 * max(soft[(e, 1e-3)], 1e-300) + 1e-15
    # away from the tie the same check finds no jump: the argmax head is locally constant
    off = beyond.argmax_jump(p0, x, query, [1e-9], seed=1, zero_qk=False)
    assert all(r["jump"] == 0 for r in off if r["kind"] == "argmax")
    with pytest.raises(ValueError, match="delta"):
        beyond.argmax_jump(p0, x, query, [0.0])
