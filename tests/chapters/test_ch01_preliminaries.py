"""Chapter 1: the figure of Section 2's logistic-loss facts."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from lowrank.chapters import ch01_preliminaries as ch01
from lowrank.theory.identities import logistic_fact_gaps


def test_logistic_facts_figure_has_both_panels():
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    grid = torch.linspace(-5.0, 5.0, 21, dtype=torch.float64)
    gaps = pd.concat(
        pd.DataFrame({"x": grid.numpy(), "fact": k, "gap": v.clamp_min(1e-300).numpy()})
        for k, v in logistic_fact_gaps(grid).items()
    )
    curves = pd.DataFrame({"x": grid.numpy(), "curve": "ℓ", "value": grid.exp().numpy()})
    fig = ch01.logistic_facts_figure(gaps, curves, crossing=1.5)
    assert len(fig.axes) == 2 and fig.axes[0].get_yscale() == "log"
    plt.close(fig)


def test_resolved_range_stops_where_the_gap_meets_its_allowance():
    x = torch.linspace(-4.0, 4.0, 9, dtype=torch.float64)
    gap = torch.tensor([0.0, 1e-3, 1.0, 1.0, 1.0, 1.0, 1.0, 1e-9, 1.0], dtype=torch.float64)
    allowance = torch.full_like(x, 1e-6)
    # x = -4 and x = 3 are unresolved; the run around 0 is [-3, 2], whatever lies past 3
    assert ch01.resolved_range(x, gap, allowance) == (-3.0, 2.0)
    assert ch01.resolved_range(x, gap.abs() + 1, allowance) == (-4.0, 4.0)
    assert ch01.resolved_range(x, -gap, allowance) == (-3.0, 2.0)  # noise of either sign


def test_resolved_range_refuses_an_unresolved_anchor_and_bad_shapes():
    x = torch.linspace(-1.0, 1.0, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="not resolved"):
        ch01.resolved_range(x, torch.zeros(3, dtype=torch.float64), torch.ones(3))
    with pytest.raises(ValueError, match="1-D"):
        ch01.resolved_range(x, torch.ones(4, dtype=torch.float64), torch.ones(3))
