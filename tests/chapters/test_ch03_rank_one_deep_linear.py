"""Chapter 3: the Lemma 1 runs, their recorder and the registered settings."""

from __future__ import annotations

import json

import torch

from lowrank.chapters import ch03_rank_one_deep_linear as ch03

TINY = {**ch03.LEMMA1.quick(), "n": 12, "width": 5, "seeds": 1, "steps": 40, "record_every": 20}


def test_lemma1_settings_are_json_and_full_is_wider():
    quick, full = ch03.LEMMA1.spec("quick"), ch03.LEMMA1.spec("full")
    assert json.loads(json.dumps(full)) == full
    assert full["width"] > quick["width"] and full["depths"] == quick["depths"]


def test_train_lemma1_has_lambda_zero_twins_and_records_spectra():
    weights, lams, task, frame = ch03.train_lemma1(3, TINY)
    assert lams == [TINY["lam"], 0.0] and weights[0].shape == (2, 5, TINY["d"])
    assert sorted(frame.step.unique()) == [0, 20, 40] and set(frame.K) == {3}
    first = frame[(frame.step == 0) & (frame.index == 1)]
    assert (first.groupby("layer").sigma.nunique() == 1).all()  # both twins start equal
    assert torch.equal(task.y.abs(), torch.ones_like(task.y))


def test_lemma1_experiment_rows_cover_every_depth():
    rows = ch03.LEMMA1.run({**TINY, "depths": [2, 3]}, torch.device("cpu"))
    assert {r["K"] for r in rows} == {2, 3} and {"sigma", "ratio", "lam"} <= set(rows[0])
