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


def test_full_scales_the_quick_settings_and_shares_the_small_task():
    quick, full = ch03.LEMMA1.quick(), ch03.LEMMA1.full()
    assert list(full) == list(quick)  # same keys, same order
    changed = {k for k in quick if quick[k] != full[k]}
    assert changed == {"d", "n", "width", "seeds", "steps", "record_every"}
    assert {k: quick[k] for k in ch03.small_task()} == ch03.small_task()


def test_deep_init_and_task_follow_the_spec():
    init = ch03.deep_init(TINY, 4, seed=0)
    assert [tuple(w.shape) for w in init] == [(1, 5, 8), (1, 5, 5), (1, 5, 5), (1, 1, 5)]
    assert torch.equal(ch03.deep_init(TINY, 4, seed=0)[0], init[0])
    assert not torch.equal(ch03.deep_init(TINY, 4, seed=1)[0], init[0])
    task = ch03.deep_task(TINY)
    assert task.x.shape == (TINY["n"], TINY["d"])


def test_stacked_rows_joins_frames_in_order():
    import pandas as pd

    rows = ch03.stacked_rows(pd.DataFrame({"a": [i]}) for i in range(3))
    assert rows == [{"a": 0}, {"a": 1}, {"a": 2}]


def test_spectra_figure_has_at_most_four_panels_a_row_and_fits_the_page():
    import matplotlib.pyplot as plt
    import pandas as pd

    _, _, _, frame = ch03.train_lemma1(3, TINY)
    _, _, _, deeper = ch03.train_lemma1(6, TINY)

    g = ch03.lemma1_layer_spectra(pd.concat([frame, deeper], ignore_index=True))
    columns = {round(ax.get_position().x0, 3) for ax in g.axes.flat}
    assert g.axes.size == 7 and len(columns) == 4  # 2 + 5 layers, wrapped at 4 a row
    g.figure.canvas.draw()  # the page shows the tight box, as the inline backend saves it
    assert g.figure.get_tightbbox(g.figure.canvas.get_renderer()).width <= 7.6
    plt.close(g.figure)
