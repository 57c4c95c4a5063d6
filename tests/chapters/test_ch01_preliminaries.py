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
