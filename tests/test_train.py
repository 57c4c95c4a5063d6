"""GD/SGD with weight decay: the update rule, per-member λ, history, divergence."""

import pytest
import torch

from lowrank import metrics, nets, train
from lowrank.data import sin_task


@pytest.fixture
def task():
    return sin_task(30, 4, seed=1)


def test_one_gd_step_is_the_paper_update(task):
    ws = nets.init_mlp([4, 5, 1], seed=2)
    lam, eta = 0.1, 0.3
    out, _ = train.gd(ws, task.x, task.y, lam, eta, 1)
    _, g = metrics.loss_and_gradient(ws, task.x, task.y)
    for w, g_k, o in zip(ws, g, out, strict=True):
        assert torch.allclose(o, (1 - eta * lam) * w - eta * g_k, atol=1e-15)


def test_ensemble_members_train_independently(task):
    ws = nets.init_mlp([4, 5, 1], members=3, seed=2)
    lams = [0.0, 0.01, 0.1]
    out, _ = train.gd(ws, task.x, task.y, lams, 0.5, 20)
    for e, lam in enumerate(lams):
        single, _ = train.gd([w[e] for w in ws], task.x, task.y, lam, 0.5, 20)
        for a, b in zip(single, out, strict=True):
            assert torch.allclose(a, b[e], atol=1e-13)


def test_history_records_every_k_and_final(task):
    ws = nets.init_mlp([4, 5, 1], members=2, seed=0)
    _, hist = train.gd(ws, task.x, task.y, 0.01, 0.5, 10, record_every=4)
    frame = hist.frame()
    assert sorted(frame.step.unique()) == [0, 4, 8, 10]
    assert set(frame.member) == {0, 1}
    assert {"loss", "fro_1", "fro_2"} <= set(frame.columns)
    assert frame.loss.iloc[-1] < frame.loss.iloc[0]


def test_gd_is_reproducible(task):
    ws = nets.init_mlp([4, 5, 1], seed=3)
    a, _ = train.gd(ws, task.x, task.y, 0.01, 0.5, 15)
    b, _ = train.gd(ws, task.x, task.y, 0.01, 0.5, 15)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_divergence_names_step_and_member(task):
    ws = nets.init_mlp([4, 16, 16, 1], members=3, seed=0, init_scale=3.0)
    named = r"member \d+ became (nan|inf) at step \d+"
    with pytest.raises(train.DivergenceError, match=named) as e:
        train.gd(ws, 20.0 * task.x, task.y, 0.0, 50.0, 200, activation="relu2")
    assert e.value.step >= 0 and e.value.member in (0, 1, 2)


def test_divergence_of_one_member_is_attributed(task):
    ws = nets.init_mlp([4, 16, 16, 1], members=2, seed=0, init_scale=3.0)
    x = 20.0 * task.x
    # member 1 diverges alone: it starts with huge weights, member 0 with tiny ones
    ws = [torch.stack([1e-3 * w[0], w[1]]) for w in ws]
    with pytest.raises(train.DivergenceError) as e:
        train.gd(ws, x, task.y, 0.0, 10.0, 200, activation="relu2")
    assert e.value.member == 1


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"lam": -0.1}, "lam must be >= 0"),
        ({"eta": 0.0}, "eta must be > 0"),
        ({"eta": -1.0}, "eta must be > 0"),
        ({"steps": -1}, "steps must be >= 0"),
    ],
)
def test_gd_refuses_bad_hyperparameters(task, kwargs, match):
    ws = nets.init_mlp([4, 5, 1], seed=0)
    args = {"lam": 0.1, "eta": 0.1, "steps": 2} | kwargs
    with pytest.raises(ValueError, match=match):
        train.gd(ws, task.x, task.y, **args)


def test_gd_refuses_mismatched_data(task):
    ws = nets.init_mlp([4, 5, 1], seed=0)
    with pytest.raises(ValueError, match="y must hold one label per input"):
        train.gd(ws, task.x, task.y[:-1], 0.1, 0.1, 1)
    with pytest.raises(ValueError, match="x must have shape"):
        train.gd(ws, task.x[:, :3], task.y, 0.1, 0.1, 1)
    y = task.y.clone()
    y[0] = float("nan")
    with pytest.raises(ValueError, match="y contains NaN"):
        train.gd(ws, task.x, y, 0.1, 0.1, 1)


def test_sgd_full_batch_equals_gd(task):
    ws = nets.init_mlp([4, 5, 1], members=2, seed=4)
    a, _ = train.gd(ws, task.x, task.y, [0.01, 0.1], 0.2, 5)
    b, hist = train.sgd(ws, task.x, task.y, [0.01, 0.1], 0.2, epochs=5, batch_size=30,
                        record_every=5)
    for x, y in zip(a, b, strict=True):
        assert torch.allclose(x, y, atol=1e-14)
    assert sorted(hist.frame().step.unique()) == [0, 5]


def test_sgd_minibatches_are_seeded(task):
    ws = nets.init_mlp([4, 5, 1], seed=4)
    a, _ = train.sgd(ws, task.x, task.y, 0.01, 0.2, epochs=3, batch_size=7, seed=1)
    b, _ = train.sgd(ws, task.x, task.y, 0.01, 0.2, epochs=3, batch_size=7, seed=1)
    c, _ = train.sgd(ws, task.x, task.y, 0.01, 0.2, epochs=3, batch_size=7, seed=2)
    assert torch.equal(a[0], b[0]) and not torch.equal(a[0], c[0])


def test_recorded_weights_and_loss_belong_to_the_same_iterate(task):
    ws = nets.init_mlp([4, 5, 1], seed=6)
    seen = {}

    def rec(step, weights, loss):
        seen[step] = ([w.clone() for w in weights], loss.clone())
        return []

    out, _ = train.gd(ws, task.x, task.y, 0.1, 0.3, 3, record_every=1, record=rec)
    assert torch.equal(seen[0][0][0], ws[0])
    assert torch.equal(seen[3][0][0], out[0])
    for step, (weights, loss) in seen.items():
        expected, _ = metrics.loss_and_gradient(weights, task.x, task.y)
        assert torch.allclose(loss, expected), step


# --- review fixes ------------------------------------------------------------------------


def test_gd_refuses_a_last_layer_with_several_outputs():
    t = sin_task(2, 4, seed=0)  # n = 2 outputs would broadcast silently against y
    ws = [nets.init_mlp([4, 3, 1], seed=0)[0], torch.ones(2, 3, dtype=torch.float64)]
    with pytest.raises(ValueError, match=r"weights\[-1\] must have one output row"):
        train.gd(ws, t.x, t.y, 0.1, 0.1, 2)


def test_gd_refuses_label_or_input_sets_that_do_not_match_the_members(task):
    ws = nets.init_mlp([4, 3, 1], seed=0)
    with pytest.raises(ValueError, match="y must have shape"):
        train.gd(ws, task.x, torch.stack([task.y, -task.y]), 0.1, 0.1, 2)
    with pytest.raises(ValueError, match="x must have shape"):
        train.gd(ws, task.x.expand(2, *task.x.shape), task.y, 0.1, 0.1, 2)
    ens = nets.init_mlp([4, 3, 1], members=3, seed=0)
    with pytest.raises(ValueError, match="y must have shape"):
        train.sgd(ens, task.x, torch.stack([task.y, -task.y]), 0.1, 0.1, 1, 10)


def test_sgd_catches_a_divergence_in_the_last_batch(task):
    ws = nets.init_mlp([4, 3, 1], seed=0)
    # one batch: its loss is finite, the update it makes is not
    with pytest.raises(train.DivergenceError, match="at step 1"):
        train.sgd(ws, task.x, task.y, 0.0, 1e308, epochs=1, batch_size=30)
