"""Chapter 10: the merging runner of Figures 3 and 5, its rows and its registered specs."""

from __future__ import annotations

import pandas as pd
import pytest

from lowrank.chapters import ch10_merging_experiments as ch10
from lowrank.core.engine import gd
from lowrank.core.losses import empirical_loss
from lowrank.core.models import forward, init_mlp
from lowrank.data import synthetic
from lowrank.runner import registry

TINY = {
    "d": 8, "hidden": [16, 4], "n": 40, "n_test": 30, "a": 1.0, "eta": 1.0, "steps": 4,
    "record_every": 2, "seeds": 1, "settings": ["different", "same"], "lams": [0.0, 0.1],
    "metrics": list(ch10.METRICS),
}  # fmt: skip


def test_runner_rows_and_merged_loss_by_hand():
    draws = ch10.synthetic_draws(TINY)
    rows = pd.DataFrame(ch10.run_merging(draws, TINY))
    assert set(rows.columns) == {
        "setting", "lam", "seed", "step", "model", "task", "layer", "metric", "value"
    }  # fmt: skip
    assert sorted(rows.step.unique()) == [0, 2, 4]
    # step 0, λ irrelevant: merged loss on task 1 is the loss of the sum of the two inits
    dr = draws[0]
    w1, w2 = (init_mlp([8, 16, 4, 1], seed=10_000 + t) for t in range(2))
    merged = [a + b for a, b in zip(w1, w2, strict=True)]
    want = empirical_loss(dr.train[0].y * forward(merged, dr.train[0].x)).item()
    got = rows.query(
        "step == 0 and setting == 'different' and lam == 0 and model == 'merged' "
        "and task == 1 and metric == 'loss'"
    ).value
    assert got.item() == pytest.approx(want, abs=1e-14)
    srank = rows[rows.metric == "stable_rank"]
    assert set(srank.layer) == {1, 2} and srank.value.ge(1 - 1e-12).all()
    errors = rows[rows.metric.str.endswith("error")].value
    assert errors.between(0, 1).all()


def test_individual_rows_match_a_separate_training_run():
    spec = {**TINY, "settings": ["same"], "lams": [0.1], "metrics": ["loss"], "steps": 6}
    draws = ch10.synthetic_draws(spec)
    rows = pd.DataFrame(ch10.run_merging(draws, spec))
    w = init_mlp([8, 16, 4, 1], seed=10_001)
    task2 = draws[0].train[1]
    _, hist = gd(w, task2.x, task2.y, 0.1, 1.0, 6, record_every=2, backward=True)
    want = [r["loss"] for r in hist.rows]
    got = rows.query("model == 'individual' and task == 2").sort_values("step").value
    assert got.tolist() == pytest.approx(want, abs=1e-13)


def test_weight_decay_closes_the_merging_gap_and_same_task_does_not():
    spec = {**TINY, "seeds": 2, "steps": 250, "record_every": 250, "lams": [0.0, 0.05],
            "metrics": ["loss"]}  # fmt: skip
    gaps = ch10.final_gaps(pd.DataFrame(ch10.FIG3.run(spec, "cpu", False)))
    mean = gaps.groupby(["setting", "lam"]).gap.mean()
    assert mean[("different", 0.05)] < 0.05 < 0.2 < mean[("different", 0.0)]
    assert mean[("same", 0.05)] > 0.3


def test_first_layer_leak_is_zero_only_for_orthogonal_inputs():
    for setting, zero in (("different", True), ("same", False)):
        t1, t2 = synthetic.synthetic_draw(setting, 30, 0, 8, 1.0, seed=0).train
        w0 = init_mlp([8, 16, 4, 1], seed=1)
        wt, _ = gd(w0, t2.x, t2.y, 0.05, 1.0, 50, backward=True)
        leak = ch10.first_layer_leak(w0[0], wt[0], t1.x, 1.0, 0.05, 50)
        assert (leak < 1e-13) is zero
    # the wrong decay factor breaks the identity
    t1, t2 = synthetic.synthetic_draw("different", 30, 0, 8, 1.0, seed=0).train
    wt, _ = gd(w0, t2.x, t2.y, 0.05, 1.0, 50, backward=True)
    assert ch10.first_layer_leak(w0[0], wt[0], t1.x, 1.0, 0.04, 50) > 1e-3
    with pytest.raises(ValueError, match="w0 and wt"):
        ch10.first_layer_leak(w0[0], wt[0][:, :4], t1.x, 1.0, 0.05, 50)


def test_final_gaps_and_bad_specs():
    df = pd.DataFrame(
        [
            {"setting": "different", "lam": 0.1, "seed": 0, "step": s, "model": m, "task": 1,
             "layer": 0, "metric": "loss", "value": v}
            for s, m, v in ((0, "individual", 9.0), (5, "individual", 0.25), (5, "merged", 0.5))
        ]
    )  # fmt: skip
    assert ch10.final_gaps(df).gap.tolist() == [0.25]
    with pytest.raises(ValueError, match="metric"):
        ch10.final_gaps(df, "stable_rank")
    draws = ch10.synthetic_draws(TINY)
    with pytest.raises(ValueError, match="spec lacks"):
        ch10.run_merging(draws, {k: v for k, v in TINY.items() if k != "eta"})
    with pytest.raises(ValueError, match="unknown"):
        ch10.run_merging(draws, {**TINY, "metrics": ["accuracy"]})
    short = synthetic.synthetic_draw("different", 20, 30, 8, 1.0, seed=0)
    with pytest.raises(ValueError, match="same n and d"):
        ch10.run_merging([draws[0], short], TINY)
    with pytest.raises(ValueError, match="setting"):
        synthetic.synthetic_draw("other", 20, 0, 8, 1.0, seed=0)


def test_registered_with_the_papers_full_settings():
    reg = registry.registry()
    assert {"fig3", "fig5"} <= set(reg)
    full = reg["fig3"].spec("full")
    assert (full["d"], full["hidden"], full["eta"], full["steps"]) == (100, [1000, 100], 1.0, 1e5)
    assert full["lam_main"] == 1e-4 and full["seeds"] == 10 and 0.0 in full["lams"]
    assert reg["fig5"].spec("full")["lams"] == [1e-4]
    with pytest.raises(ValueError, match="scale"):
        reg["fig3"].spec("medium")


def test_quick_and_full_specs_share_the_papers_fixed_settings():
    for exp in (ch10.FIG3, ch10.FIG5):
        quick, full = exp.quick(), exp.full()
        for spec in (quick, full):
            assert (spec["a"], spec["eta"], spec["init_scale"], spec["activation"]) == (
                1.0, 1.0, 1.0, "relu")
            assert spec["settings"] == ["different", "same"]
        assert (quick["d"], quick["hidden"], quick["n"], quick["steps"], quick["seeds"]) == (
            20, [64, 16], 100, 1200, 3)
        assert (full["n"], full["record_every"], full["seeds"]) == (1000, 1000, 10)
        assert quick["settings"] is not full["settings"]  # no list shared between specs


def _figure_rows():
    spec = {**TINY, "steps": 4, "lams": [0.0, 0.1], "lam_main": 0.1}
    return pd.DataFrame(ch10.FIG3.run(spec, "cpu", False))


def test_figures_in_the_papers_layout_fit_the_column_with_legends_below():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = _figure_rows()
    fig3 = ch10.merging_figure3(rows, 0.1)
    fig5 = ch10.merging_figure5(rows)
    for fig in (fig3, fig5):
        assert fig.get_figwidth() <= 7.5  # inches at 100 dpi: the text column
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        legends = [(ax, ax.get_legend()) for ax in fig.axes if ax.get_legend()]
        for ax, leg in legends:  # under its own axes
            assert leg.get_window_extent(renderer).y1 <= ax.get_window_extent(renderer).y0 + 1
        texts = {t.get_text() for _, leg in legends for t in leg.get_texts()}
        for sub in [fig] + list(getattr(fig, "subfigs", [])):
            texts |= {t.get_text() for leg in sub.legends for t in leg.get_texts()}
        assert {"individual", "merged", "task 1", "task 2"} <= texts
        assert not texts & {"model", "task", "λ", "matrix"}  # no seaborn titles as entries
    # the paper's order: first row different | same task, second row λ sweep | stable rank
    titles = [ax.get_title() for ax in fig3.axes]
    assert titles[0].startswith("different") and titles[1].startswith("same")
    assert "λ sweep" in titles[2] and "stable rank" in titles[3]
    assert [ax.get_title() for ax in fig5.axes] == ["different tasks", "same task"]
    plt.close("all")
