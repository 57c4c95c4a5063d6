"""Chapter 9: the long frames its figures plot."""

from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from lowrank.chapters import ch09_merging_deep_linear as ch09


def test_tidy_stacks_every_series_with_constant_columns():
    t = np.array([0.0, 1.0, 2.0])
    out = ch09.tidy(t, {"a": np.ones(3), "b": np.zeros(3)}, K=2)
    assert list(out.columns) == ["t", "quantity", "value", "K"]
    assert len(out) == 6 and set(out.quantity) == {"a", "b"} and set(out.K) == {2}
    assert out[out.quantity == "b"].value.tolist() == [0.0, 0.0, 0.0]


def test_decay_rate_recovers_an_exponential_rate_and_refuses_bad_windows():
    t = np.linspace(0.0, 50.0, 201)
    assert ch09.decay_rate(t, -3.0 * np.exp(-0.25 * t)) == pytest.approx(0.25, rel=1e-12)
    # only the last samples count: an early transient at another rate is ignored
    v = np.where(t < 20, np.exp(-2.0 * t), np.exp(-40.0 + 20 * 0.1) * np.exp(-0.1 * (t - 20)))
    assert ch09.decay_rate(t, v, last=50) == pytest.approx(0.1, rel=1e-9)
    assert ch09.decay_rate(t, v, last=201) != pytest.approx(0.1, rel=1e-2)  # wrong window
    with pytest.raises(ValueError, match="last"):
        ch09.decay_rate(t, v, last=1)
    with pytest.raises(ValueError, match="last"):
        ch09.decay_rate(t, v[:-1])


def _legends_below_axes(fig):
    """Every legend of ``fig`` lies under the axes it belongs to (it covers no curve)."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    axes_bottom = min(ax.get_window_extent(renderer).y0 for ax in fig.axes)
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend()] + list(fig.legends)
    return bool(legends) and all(
        leg.get_window_extent(renderer).y1 <= axes_bottom + 1 for leg in legends
    )


def test_figures_fit_the_column_with_legends_outside_the_axes():
    matplotlib.use("Agg")
    t = np.linspace(0.0, 10.0, 11)
    two = {"a": np.exp(-t), "b": np.exp(-2 * t)}
    per_k = pd.concat([ch09.tidy(t, two, K=f"K={K}") for K in (2, 3)])
    figs = [
        ch09.deep_linear_flow_figure(per_k, per_k),
        ch09.merged_gap_figure(ch09.tidy(t, two)),
        ch09.theorem1_gap_figure(pd.concat([ch09.tidy(t, two, K=K) for K in (2, 3, 4)])),
    ]
    for fig in figs:
        assert fig.get_figwidth() <= 7.5  # inches at 100 dpi: the text column
        assert _legends_below_axes(fig)
        labels = [t.get_text() for ax in fig.axes if ax.get_legend()
                  for t in ax.get_legend().get_texts()]
        labels += [t.get_text() for leg in fig.legends for t in leg.get_texts()]
        assert "quantity" not in labels and "K" not in labels and {"a", "b"} <= set(labels)
    plt.close("all")
