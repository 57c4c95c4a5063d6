"""Chapter 4: the recorder of Lemma 2's sides along GD."""

from __future__ import annotations

import torch

from lowrank.chapters import ch04_norm_preservation as ch04
from lowrank.core.models import init_mlp
from lowrank.data.synthetic import sin_task


def test_recorder_rows():
    task = sin_task(10, 4, seed=0)
    weights = init_mlp([4, 5, 1], members=2, seed=0)
    rows = ch04.lemma2_recorder(task.x, task.y, 0.1, "relu")(0, weights, torch.zeros(2))
    assert len(rows) == 4 and {"lhs", "rhs", "gap", "residual"} <= set(rows[0])
    assert all(r["gap"] <= r["residual"] + 1e-13 for r in rows)


def test_full_keeps_the_quick_nets_with_more_seeds_and_steps():
    quick, full = ch04.LEMMA2.quick(), ch04.LEMMA2.full()
    assert list(full) == list(quick)
    assert {k for k in quick if quick[k] != full[k]} == {"seeds", "record_every", "runs"}
    for act, run in quick["runs"].items():
        assert {k: v for k, v in full["runs"][act].items() if k != "steps"} == {
            k: v for k, v in run.items() if k != "steps"}
        assert full["runs"][act]["steps"] >= run["steps"]
