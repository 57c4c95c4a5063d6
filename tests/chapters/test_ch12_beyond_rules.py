"""Chapter 12: merge rules and weight decay as a knob."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

from lowrank.chapters import ch12_beyond_rules as ch12_rules
from lowrank.runner import registry

CPU = torch.device("cpu")


def test_rules_identities_and_tiny_columns():
    exp = registry.get("beyond-rules")
    spec = {**exp.spec("quick"), "seeds": 1, "n": 20, "d": 8, "hidden": [8, 4], "steps": 50,
            "scales": [0.5, 1.0]}
    rows = pd.DataFrame(exp.run(spec, CPU, False))
    assert set(rows.rule) == set(ch12_rules.RULES)
    assert {"setting", "eps", "seed", "rule", "scale", "task", "loss", "err"} <= set(rows.columns)

    def get(rule, scale, col):
        sel = rows[(rows.rule == rule) & (rows.scale == scale)]
        return sel.sort_values(["setting", "task"])[col].to_numpy()

    # homogeneity: the average makes the sum's mistakes; task arithmetic at 1/2 is the average
    assert np.array_equal(get("sum", 1.0, "err"), get("average", 0.5, "err"))
    assert np.allclose(get("average", 0.5, "loss"), get("task_arithmetic", 0.5, "loss"))
    # and a different scale is a different net
    assert not np.allclose(get("task_arithmetic", 1.0, "loss"), get("average", 0.5, "loss"))
    table = ch12_rules.rules_table(rows)
    assert set(table.rule) == set(ch12_rules.RULES)


def test_lambda_tiny_and_threshold_logic():
    exp = registry.get("beyond-lambda")
    spec = {**exp.spec("quick"), "seeds": 1, "n": 20, "d": 8, "hidden": [8, 4], "steps": 40,
            "record_every": 20, "lams": [0.0, 0.01]}
    rows = pd.DataFrame(exp.run(spec, CPU, False))
    assert {"lam", "seed", "step", "model", "task", "value"} <= set(rows.columns)
    table = ch12_rules.lambda_table(rows, spec["eta"])
    assert set(table.step) == {0, 20, 40}
    assert np.allclose(table.init_factor, (1 - spec["eta"] * table.lam) ** table.step)
    fake = pd.DataFrame({"lam": [0.0, 0.1, 1.0, 0.0, 0.1, 1.0], "step": [1, 1, 1, 2, 2, 2],
                         "works": [False, False, True, False, True, True]})
    assert ch12_rules.smallest_working_lambda(fake) == {1: 1.0, 2: 0.1}
    none = fake.assign(works=False)
    assert ch12_rules.smallest_working_lambda(none) == {1: math.inf, 2: math.inf}


def test_lambda_figure_panels_share_colours_and_the_legend_covers_no_curve():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_rgb

    lams, steps = [0.0, 0.001, 0.01], [0, 10, 20]
    tab = pd.DataFrame([{"lam": lam, "step": t, "retained": 0.5 + lam * t,
                         "init_factor": (1 - lam) ** t} for lam in lams for t in steps])
    fig = ch12_rules.beyond_lambda_figure(tab)
    fig.canvas.draw()
    left, right = fig.axes
    lines = {ln.get_label(): to_rgb(ln.get_color()) for ln in left.get_lines()
             if ln.get_label().startswith("λ")}
    dots = right.collections[0].get_facecolors()[:, :3]  # λ > 0 only, in row order
    assert np.allclose(dots[0], lines["λ = 0.001"]) and np.allclose(dots[-1], lines["λ = 0.01"])
    assert left.get_legend() is None and len(fig.legends) == 1
    assert fig.legends[0].get_window_extent().x0 >= right.get_window_extent().x1
    plt.close(fig)
