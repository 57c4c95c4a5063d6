"""Chapter 2: Eq. (2)'s residual rows along GD and the stationarity recorder."""

from __future__ import annotations

import math

import pytest
import torch

from lowrank.chapters.ch02_alignment import StationarityRecorder, alignment_rows
from lowrank.core.engine import gd
from lowrank.core.metrics import loss_and_gradient
from lowrank.core.models import init_mlp
from lowrank.data.synthetic import sin_task
from lowrank.theory.certificates import (
    goldstein_certificate,
    window_certificate,
)


def test_alignment_residual_large_at_random_point():
    task = sin_task(40, 6, seed=0)
    w = init_mlp([6, 8, 1], seed=0)
    rows = alignment_rows(0, w, task.x, task.y, 1e-2, "linear")
    whole = [r for r in rows if r["layer"] == "all"][0]
    assert whole["residual"] > 0.5
    assert whole["cosine"] < 0.9
    assert [r["layer"] for r in rows] == ["1", "2", "all"]


def test_gd_reaches_alignment_on_linear_net_and_telescopes():
    task = sin_task(40, 6, seed=0)
    lam, eta, steps = 5e-2, 1.0, 800
    rec = StationarityRecorder(task.x, task.y, lam, "linear", steps, every=400, window=20)
    w, hist = gd(init_mlp([6, 8, 1], seed=0), task.x, task.y, lam, eta, steps,
                 activation="linear", record_every=1, record=rec)
    # GD reaches a float64 fixed point inside the window; repeated iterates are kept once
    assert 1 <= len(rec.iterates) <= 20
    assert [r["step"] for r in hist.rows if r["layer"] == "all"] == [0, 400, 800]
    final = [r for r in hist.rows if r["layer"] == "all"][-1]
    assert final["residual"] < 1e-8 and final["cosine"] > 1 - 1e-12
    cert = window_certificate(rec.iterates, task.x, task.y, lam, "linear")
    assert cert.eps_mean < 1e-8 and cert.delta < 1e-8


def test_window_mean_gradient_telescopes_along_gd():
    # Far from stationarity: the window's mean ∇L_λ is (θ_first − θ_last)/(η(T−1)).
    task = sin_task(40, 6, seed=0)
    lam, eta, steps = 5e-2, 0.5, 10
    rec = StationarityRecorder(task.x, task.y, lam, "relu", steps, every=10, window=steps + 1)
    gd(init_mlp([6, 8, 1], seed=0), task.x, task.y, lam, eta, steps,
       activation="relu", record_every=1, record=rec)
    window = rec.iterates[:-1]  # consecutive GD iterates; each one's step leads to the next
    T = len(window)
    assert T >= steps - 1
    grads = [loss_and_gradient(t, task.x, task.y, "relu")[1] for t in window]
    cert = goldstein_certificate(window, grads, lam)
    first, last = rec.iterates[0], rec.iterates[-1]
    bar = [torch.stack([t[k] for t in window]).mean(0) for k in range(2)]
    disp = math.sqrt(sum((a - b).square().sum().item() for a, b in zip(first, last, strict=True)))
    norm_bar = math.sqrt(sum(b.square().sum().item() for b in bar))
    assert cert.eps_mean > 1e-2
    assert cert.eps_mean == pytest.approx(disp / (eta * T) / (lam * norm_bar), rel=1e-10)
    assert cert.eps_min <= cert.eps_mean + 1e-15


def test_recorder_refuses_bad_window():
    x, y = torch.zeros(2, 2).double(), torch.ones(2).double()
    with pytest.raises(ValueError, match="window"):
        StationarityRecorder(x, y, 0.1, "relu", steps=5, window=10)
