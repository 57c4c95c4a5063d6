"""Chapter 5: Lemma 3's grid and Remark 1's collapse at tiny sizes."""

from __future__ import annotations

import math

import pytest

from lowrank.chapters import ch05_low_rank_bound as ch05


def test_lemma3_grid_rows_hold_the_bound_and_refuse_unknown_settings():
    rows = ch05.lemma3_grid(Ks=[2], Hs=[1], lambdas=[0.05], seeds=1, steps=400)
    assert len(rows) == 1 and rows[0]["K"] == 2 and rows[0]["H"] == 1
    row = rows[0]
    assert row["nonzero"] and row["slack"] >= 1 - 1e-6 and row["alignment_residual"] < 1
    with pytest.raises(ValueError, match="no setting"):
        ch05.lemma3_grid(depth=[2])


def test_remark1_collapse_above_the_threshold():
    rows = ch05.remark1_collapse(Ks=[2], fractions=[2.0], scales=[1.0], steps=300)
    assert len(rows) == 1 and rows[0]["collapsed"]
    assert math.isclose(rows[0]["lam"], 2.0 * rows[0]["threshold"])


def test_both_grids_are_registered_and_the_same_at_both_scales():
    for exp in (ch05.LEMMA3_GRID, ch05.REMARK1_COLLAPSE):
        assert exp.spec("quick") == exp.spec("full")
