"""Chapter 9: the long frames its figures plot."""

from __future__ import annotations

import numpy as np

from lowrank.chapters import ch09_merging_deep_linear as ch09


def test_tidy_stacks_every_series_with_constant_columns():
    t = np.array([0.0, 1.0, 2.0])
    out = ch09.tidy(t, {"a": np.ones(3), "b": np.zeros(3)}, K=2)
    assert list(out.columns) == ["t", "quantity", "value", "K"]
    assert len(out) == 6 and set(out.quantity) == {"a", "b"} and set(out.K) == {2}
    assert out[out.quantity == "b"].value.tolist() == [0.0, 0.0, 0.0]
