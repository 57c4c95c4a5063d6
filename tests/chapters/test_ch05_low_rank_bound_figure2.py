"""Chapter 5, Figure 2: the fig2 experiment, its rows and the trend test."""

from __future__ import annotations

import math

import pytest
import torch

from lowrank.chapters.ch05_low_rank_bound_figure2 import (
    FIGURE2,
    figure2_rows,
    member_grid,
    trend_test,
)
from lowrank.runner import registry

TINY = {
    "n": 40, "d": 5, "width": 4, "hidden_layers": 2, "frequencies": [10, 100],
    "eta": 0.5, "batch_size": 20, "init_scale": 1.0, "data_seed": 0, "init_seed": 1,
    "lambdas": [1e-4, 1e-2], "seeds": 2, "epochs": 3,
}


def test_registered_and_specs():
    assert registry.get("fig2") is FIGURE2
    full = FIGURE2.spec("full")
    assert (full["n"], full["d"], full["width"], full["hidden_layers"]) == (1000, 100, 10, 2)
    assert full["epochs"] == 5000 and full["frequencies"] == [10, 100]
    quick = FIGURE2.spec("quick")
    assert quick["epochs"] < full["epochs"] and quick["n"] == 1000
    with pytest.raises(ValueError, match="scale"):
        FIGURE2.spec("huge")


def test_member_grid_order():
    grid = member_grid(TINY)
    assert len(grid) == 2 * 2 * 2
    assert grid[0] == (10.0, 1e-4, 0) and grid[1] == (10.0, 1e-4, 1) and grid[2] == (10.0, 1e-2, 0)
    assert grid[4][0] == 100.0


def test_run_is_one_row_per_member_and_reproducible():
    rows = FIGURE2.run(TINY, torch.device("cpu"), False)
    again = FIGURE2.run(TINY, torch.device("cpu"), False)
    assert rows == again
    assert len(rows) == 8
    for row in rows:
        assert 1 / math.sqrt(3) - 1e-12 <= row["inv_stable_rank"] <= 1 + 1e-12
        assert row["inv_sr_3"] == pytest.approx(1.0)  # the output layer is a vector
        assert 0 <= row["class_error"] <= row["margin_error"] <= 1
        assert row["loss"] > 0 and row["sq_norm"] > 0


def test_rows_flag_collapsed_members_and_survive_zero_layers():
    x = torch.eye(3, dtype=torch.float64)
    y = torch.tensor([[1.0, -1.0, 1.0]] * 2, dtype=torch.float64)
    w = [torch.ones(2, 2, 3, dtype=torch.float64), torch.ones(2, 1, 2, dtype=torch.float64)]
    w[0][1] = 0.0
    rows = figure2_rows(w, x, y, [(10.0, 0.1, 0), (10.0, 0.1, 1)])
    assert not rows[0]["collapsed"] and rows[1]["collapsed"]
    assert rows[0]["inv_sr_1"] == pytest.approx(1.0)  # a rank-one matrix of ones
    assert math.isnan(rows[1]["inv_sr_1"])
    assert rows[0]["class_error"] == pytest.approx(1 / 3)  # f = 2 > 0 on every input
    assert rows[1]["loss"] == pytest.approx(math.log(2))


def test_trend_test_detects_growth_and_fails_without_it():
    pd = pytest.importorskip("pandas")
    lams = [1e-4, 1e-3, 1e-2, 1e-1] * 3
    up = pd.DataFrame({"frequency": 10.0, "lam": lams, "collapsed": False,
                       "inv_stable_rank": [0.6, 0.7, 0.8, 0.9] * 3})
    res = trend_test(up)[10.0]
    assert res["rho"] == pytest.approx(1.0) and res["p_value"] < 1e-3 and res["members"] == 12
    down = up.assign(inv_stable_rank=[0.9, 0.8, 0.7, 0.6] * 3)
    assert trend_test(down)[10.0]["p_value"] > 0.5
    collapsed = up.assign(collapsed=[False, False, False, True] * 3)
    assert trend_test(collapsed)[10.0]["largest_lam"] == 1e-2


def test_figure2_loss_is_the_package_logistic_loss():
    from lowrank.core.losses import empirical_loss
    from lowrank.core.models import forward, init_mlp

    ws = [w * 8 for w in init_mlp([3, 4, 4, 1], members=2, seed=0)]
    x = torch.eye(3, dtype=torch.float64)
    y = torch.tensor([[1.0, -1.0, 1.0], [-1.0, 1.0, -1.0]], dtype=torch.float64)
    rows = figure2_rows(ws, x, y, [(10.0, 1e-3, 0), (10.0, 1e-3, 1)])
    want = empirical_loss(y * forward(ws, x, "relu"))
    assert [r["loss"] for r in rows] == want.tolist()


def test_seed_replicates_are_the_trend_test_of_reseeded_runs():
    pd = pytest.importorskip("pandas")
    from lowrank.chapters.ch05_low_rank_bound_figure2 import seed_replicates

    rows = seed_replicates(((0, 1), (3, 4)), spec=TINY)
    assert [(r["data_seed"], r["init_seed"], r["frequency"]) for r in rows] == [
        (0, 1, 10.0), (0, 1, 100.0), (3, 4, 10.0), (3, 4, 100.0)]
    own = trend_test(pd.DataFrame(FIGURE2.run(TINY, torch.device("cpu"), False)))
    for r in rows[:2]:
        assert {k: r[k] for k in own[r["frequency"]]} == own[r["frequency"]]
        assert r["members"] == 4  # 2 λ × 2 seeds per frequency
    reseeded = {**TINY, "data_seed": 3, "init_seed": 4}
    other = trend_test(pd.DataFrame(FIGURE2.run(reseeded, torch.device("cpu"), False)))
    for r in rows[2:]:
        assert {k: r[k] for k in other[r["frequency"]]} == other[r["frequency"]]
    # ... and the reseeded run is another draw, not the spec's seeds again
    assert FIGURE2.run(reseeded, torch.device("cpu"), False) != FIGURE2.run(
        TINY, torch.device("cpu"), False)
    with pytest.raises(ValueError, match="pair"):
        seed_replicates((), spec=TINY)


def test_figure2_figure_is_one_plot_of_the_paper_per_task():
    pd = pytest.importorskip("pandas")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lowrank.chapters.ch05_low_rank_bound_figure2 import FIGURE2_PANELS, figure2_figure

    df = pd.DataFrame(FIGURE2.run(TINY, torch.device("cpu"), False))
    df.loc[(df.frequency == 100.0) & (df.lam == 1e-2), "collapsed"] = True
    for a in (10.0, 100.0):
        fig = figure2_figure(df, a)
        assert len(fig.axes) == 4 and fig.get_size_inches()[0] <= 7.5  # 2 × 2, page width
        assert [ax.get_ylabel() for ax in fig.axes] == [label for _, label in FIGURE2_PANELS]
        assert rf"\sin({a:g}" in fig.get_suptitle()
        assert len(fig.legends) == (1 if a == 100.0 else 0)  # the collapse shading, if any
        plt.close(fig)
    with pytest.raises(ValueError, match="frequency"):
        figure2_figure(df, 3.0)
