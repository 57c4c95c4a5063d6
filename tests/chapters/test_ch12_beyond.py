"""Chapter 12: the criterion, the overlap and the many-task experiments."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from lowrank.chapters import ch12_beyond as ch12
from lowrank.core import models
from lowrank.data import synthetic
from lowrank.runner import registry

CPU = torch.device("cpu")


def _two_members(n: int, d: int, m: int, seed: int):
    """An orthogonal task pair, a unit u of size m and two seeded W_0 (2, m, d), both members
    on task 1 of the pair."""
    pair = synthetic.rotated_task_pair(n, d, 0.0, seed=seed)
    u = models.unit_output_vector(m, seed=0)
    w0 = torch.randn(2, m, d, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = torch.stack([pair.first.x, pair.first.x])
    y = torch.stack([pair.first.y, pair.first.y])
    return pair, u, w0, x, y


def test_retained_fraction_known_values_and_criterion():
    ln2 = math.log(2)
    assert float(ch12.retained_fraction(0.1, 0.1)) == pytest.approx(1.0)
    assert float(ch12.retained_fraction(0.1, ln2)) == pytest.approx(0.0)
    # gain 0.6 − 0.1 of 0.6: R = (ln2 − 0.2)/(ln2 − 0.1)
    assert float(ch12.retained_fraction(0.1, 0.2)) == pytest.approx((ln2 - 0.2) / (ln2 - 0.1))
    works = ch12.merge_works(np.array([0.05, 0.05, 0.5]), np.array([0.1, 0.4, 0.5]))
    assert works.tolist() == [True, False, False]  # R=.92 ok; R=.45 fails; not learned fails
    with pytest.raises(ValueError, match="keep"):
        ch12.merge_works(0.1, 0.1, keep=1.5)


def test_shallow_ensemble_gd_matches_shallow_module_and_lemma4_exact_at_eps0():
    from lowrank.core.engine import shallow_gd

    pair, u, w0, x, y = _two_members(30, 8, 6, seed=3)
    wt = ch12.shallow_ensemble_gd(w0, u, x, y, 0.05, 0.5, 20)
    ref = shallow_gd(w0, u, pair.first.x, pair.first.y, [0.05, 0.05], 0.5, 20)[-1]
    assert torch.allclose(wt, ref, rtol=1e-12, atol=1e-14)
    # ε = 0: on the other task's inputs only the decayed initialisation remains
    leak = pair.second.x @ wt[0].T
    assert torch.allclose(leak, (1 - 0.025) ** 20 * (pair.second.x @ w0[0].T), atol=1e-13)


def test_overlap_tiny_columns_and_criterion_fails_for_same_task():
    exp = registry.get("beyond-overlap")
    spec = {**exp.spec("quick"), "eps": [0.0, 1.0], "seeds": 1, "n": 24, "d": 8, "m": 8,
            "hidden": [8, 4], "steps": 150, "steps_shallow": 150, "geometries": ["rotated"]}
    rows = pd.DataFrame(exp.run(spec, CPU, False))
    assert {"model", "geometry", "eps", "seed", "task", "loss_individual", "loss_merged",
            "err_merged", "leak_max", "init_term_max", "eps_term"} <= set(rows.columns)
    assert len(rows) == 2 * 2 * 2  # models x eps x tasks
    summary = ch12.summarise_overlap(rows)
    same = summary[summary.eps == 1.0]
    assert not same.works.any()  # the merge of non-orthogonal (identical) tasks fails
    sh = rows[rows.model == "shallow"]
    # at ε = 0 Lemma 4 holds with equality (pure decay), so allow rounding only
    assert (sh.leak_max <= (sh.init_term_max + sh.eps_term) * (1 + 1e-12)).all()
    assert not (sh.leak_max <= 0.5 * (sh.init_term_max + sh.eps_term)).all()  # not vacuous
    # a wrong bound (ε term dropped) is violated as soon as tasks overlap
    assert (sh[sh.eps == 1.0].leak_max > sh[sh.eps == 1.0].init_term_max).all()
    assert ch12.breaking_eps(summary, "mlp", "rotated") <= 1.0


def test_ktasks_tiny_columns_and_merging_many_fails():
    exp = registry.get("beyond-ktasks")
    spec = {**exp.spec("quick"), "k_max": 4, "ks": [1, 4], "seeds": 1, "n": 16,
            "widths": [8], "steps": 60}
    rows = pd.DataFrame(exp.run(spec, CPU, False))
    assert {"width", "k", "task", "loss_individual", "loss_merged", "srank2_layer1",
            "merged_srank2_layer1"} <= set(rows.columns)
    assert len(rows) == 1 + 4
    one = rows[rows.k == 1]
    assert np.allclose(one.loss_merged, one.loss_individual)  # the sum of one net is the net


def test_shallow_ensemble_gd_divergence_names_step_and_member():
    from lowrank.core.engine import DivergenceError

    _, u, w0, x, y = _two_members(10, 4, 3, seed=0)
    w0[1] *= 1e100  # ηλ = 1000: |1 − ηλ|^t blows up, member 1 reaches overflow first
    with pytest.raises(DivergenceError, match="member 1") as err:
        ch12.shallow_ensemble_gd(w0, u, x, y, 1.0, 1000.0, 200)
    assert 0 < err.value.step < 200 and err.value.member == 1
    with pytest.raises(ValueError, match="lam must be >= 0"):
        ch12.shallow_ensemble_gd(w0[:1], u, x[:1], y[:1], -0.1, 0.5, 5)


def test_works_table_marks_the_criterion_and_pivots():
    summary = pd.DataFrame({"eps": [0.0, 0.0, 0.5, 0.5], "model": ["a", "b", "a", "b"],
                            "retained": [0.95, 0.9, 0.5, -1.234],
                            "works": [True, True, False, False]})
    tab = ch12.works_table(summary, "eps", "model")
    assert tab.loc[0.0, "a"] == "0.95 ✓" and tab.loc[0.5, "b"] == "-1.23 ✗"
    assert list(tab.columns) == ["a", "b"] and list(tab.index) == [0.0, 0.5]
    # the mark follows `works`, not R: R ≥ 0.8 with a net that did not learn is still ✗
    bad = summary.assign(works=[False, True, False, False])
    assert ch12.works_table(bad, "eps", "model").loc[0.0, "a"] == "0.95 ✗"


def test_train_mlps_is_gd_on_mlp_inits_and_stack_pairs_interleaves_tasks():
    from lowrank.core.engine import gd

    pairs = [synthetic.rotated_task_pair(12, 6, e, seed=s) for e, s in ((0.0, 0), (0.5, 1))]
    x, y = ch12.stack_pairs(pairs, torch.float64, CPU)
    assert x.shape == (4, 12, 6) and torch.equal(x[2], pairs[1].first.x)
    assert torch.equal(y[3], pairs[1].second.y.to(y.dtype))
    spec = {"init_scale": 1.0, "lam": 0.01, "eta": 0.5, "steps": 5}
    seeds_tasks = [(0, 0), (0, 1), (1, 0), (1, 1)]
    ws0, ws = ch12.train_mlps([6, 4, 1], seeds_tasks, x, y, spec)
    want0 = ch12.mlp_inits([6, 4, 1], seeds_tasks, 1.0, torch.float64, CPU)
    want, _ = gd(want0, x, y, 0.01, 0.5, 5, backward=True)
    for a, b in zip(ws0 + ws, want0 + want, strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(ws[0], ws0[0])  # it trained


def test_beyond_figures_keep_legends_outside_the_axes():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kt = pd.DataFrame({"width": [8, 8, 16, 16] * 2, "k": [1, 2, 1, 2] * 2,
                       "seed": [0] * 4 + [1] * 4,
                       "loss_individual": [0.1, 0.2, 0.1, 0.15] * 2,
                       "loss_merged": [0.1, 0.5, 0.1, 0.3] * 2})
    fig = ch12.beyond_ktasks_figure(kt)
    fig.canvas.draw()
    ax = fig.axes[0]
    legend = ax.get_legend().get_window_extent()
    assert legend.x0 >= ax.get_window_extent().x1  # right of the axes: it covers no curve
    bands = [c.get_paths()[0].vertices.copy() for c in ax.collections]
    again = ch12.beyond_ktasks_figure(kt)
    # the bootstrap bands are seeded: a second build draws the very same bands
    for a, b in zip(bands, [c.get_paths()[0].vertices for c in again.axes[0].collections],
                    strict=True):
        np.testing.assert_array_equal(a, b)
    plt.close("all")
