"""The one trainer: the update rule, per-member λ, history, divergence, every model."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from sphere_data import sphere_data

from lowrank.core import engine, metrics, models
from lowrank.core.attention import (
    ATTENTION_PARAMS,
    BLOCK_ROLES,
    attention_block,
    attention_head,
    init_attention,
    init_block,
    readout_vector,
)
from lowrank.core.engine import DivergenceError, linear_gd, shallow_gd
from lowrank.core.models import (
    init_mlp,
    shallow_forward,
    shallow_gradient,
    unit_output_vector,
)
from lowrank.data.synthetic import eps_task_pair, marked_token_task, signed_pair_task, sin_task

_data = sphere_data


def _init(m, d, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(m, d, generator=g, dtype=torch.float64) / d**0.5


@pytest.fixture
def task():
    return sin_task(30, 4, seed=1)


@pytest.mark.parametrize("activation", ["relu", "linear", "relu2"])
def test_gd_matches_train_gd_to_1e12(activation):
    x, y = _data()
    w = init_mlp([6, 9, 4, 1], members=3, seed=2)
    lam = torch.tensor([0.0, 1e-3, 1e-1], dtype=torch.float64)
    wa, ha = engine.gd(w, x, y, lam, 0.5, 60, activation=activation, record_every=20)
    wb, hb = engine.gd(w, x, y, lam, 0.5, 60, activation=activation, record_every=20, backward=True)
    for a, b in zip(wa, wb, strict=True):
        assert (a - b).abs().max() / a.abs().max() < 1e-12
    assert [r["step"] for r in ha.rows] == [r["step"] for r in hb.rows]
    for ra, rb in zip(ha.rows, hb.rows, strict=True):
        assert ra["loss"] == pytest.approx(rb["loss"], abs=1e-12)


def test_shared_inputs_and_single_net():
    x, y = _data(E=1)
    w = init_mlp([6, 5, 1], members=2, seed=3)
    wa, _ = engine.gd(w, x[0], y[0], 1e-2, 1.0, 10)
    wb, _ = engine.gd(w, x[0], y[0], 1e-2, 1.0, 10, backward=True)
    assert all((a - b).abs().max() < 1e-13 for a, b in zip(wa, wb, strict=True))
    single = init_mlp([6, 5, 1], seed=3)
    wc, _ = engine.gd(single, x[0], y[0], 1e-2, 1.0, 10, backward=True)
    wd, _ = engine.gd(single, x[0], y[0], 1e-2, 1.0, 10)
    assert all((a - b).abs().max() < 1e-13 for a, b in zip(wc, wd, strict=True))


def test_records_weights_and_loss_of_the_same_step():
    x, y = _data()
    w = init_mlp([6, 5, 1], members=3, seed=4)
    seen = []

    def rec(step, ws, loss):
        seen.append(float((loss - models.mlp_loss_and_grads(ws, x, y)[0]).abs().max()))
        return []

    engine.gd(w, x, y, 1e-2, 1.0, 10, record_every=3, record=rec, backward=True)
    assert len(seen) == 5 and max(seen) == 0.0


def test_divergence_names_step_and_member_with_backward():
    x, y = _data()
    x[1] *= 1e3  # only member 1 sees huge inputs and blows up
    w = init_mlp([6, 5, 1], members=3, seed=5)
    with pytest.raises(engine.DivergenceError) as info:
        engine.gd(w, x, y, 0.0, 50.0, 200, activation="linear", backward=True)
    assert info.value.member == 1
    assert "member 1" in str(info.value) and info.value.step > 0


def test_bad_inputs_are_refused():
    x, y = _data()
    w = init_mlp([6, 5, 1], members=3, seed=6)
    with pytest.raises(ValueError, match="activation"):
        engine.gd(w, x, y, 0.0, 1.0, 1, activation="tanh", backward=True)
    with pytest.raises(ValueError, match="lam"):
        engine.gd(w, x, y, [0.1, 0.2], 1.0, 1, backward=True)
    with pytest.raises(ValueError, match="eta"):
        engine.gd(w, x, y, 0.0, -1.0, 1, backward=True)
    with pytest.raises(ValueError, match="x must have shape"):
        engine.gd(w, x[..., :5], y, 0.0, 1.0, 1, backward=True)
    with pytest.raises(ValueError, match="record_every"):
        engine.gd(w, x, y, 0.0, 1.0, 1, record_every=0, backward=True)


def test_ensemble_gd_equals_member_by_member():
    pair = eps_task_pair(12, 9, 0.1, seed=0)
    u = unit_output_vector(6, seed=2)
    w0 = _init(6, 9, 1)
    both = shallow_gd(torch.stack([w0, w0]), u, pair.first.x, pair.first.y, [0.0, 0.1], 0.5, 20)
    alone = shallow_gd(w0, u, pair.first.x, pair.first.y, 0.1, 0.5, 20)
    assert both.shape == (21, 2, 6, 9)
    assert torch.allclose(both[:, 1], alone, atol=1e-15)
    assert not torch.allclose(both[-1, 0], both[-1, 1])


def test_shape_errors_are_named():
    w, u, x = _init(4, 5, 0), unit_output_vector(4), torch.zeros(3, 5, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"u must have shape \(4,\)"):
        shallow_forward(w, u[:3], x)
    with pytest.raises(ValueError, match=r"x must have shape \(n, 5\)"):
        shallow_forward(w, u, x[:, :4])
    with pytest.raises(ValueError, match=r"y must have shape \(3,\)"):
        shallow_gradient(w, u, x, torch.ones(2, dtype=torch.float64))
    with pytest.raises(ValueError, match="steps must be a non-negative integer"):
        shallow_gd(w, u, x, torch.ones(3, dtype=torch.float64), 0.1, 0.5, -1)


def test_trainers_stop_with_the_step_and_member_when_weights_overflow():
    x = torch.eye(3, dtype=torch.float64)
    y = torch.ones(3, dtype=torch.float64)
    with pytest.raises(DivergenceError, match="the network became nan at step") as e:
        linear_gd(torch.ones(3, dtype=torch.float64), x, y, 1e3, 10.0, 400)
    assert e.value.member is None and e.value.step > 0
    w0 = torch.ones(2, 4, 3, dtype=torch.float64)
    u = torch.full((4,), 0.5, dtype=torch.float64)
    with pytest.raises(DivergenceError) as e:
        shallow_gd(w0, u, x, y, [0.1, 1e3], 10.0, 400)
    assert e.value.member == 1


def test_one_gd_step_is_the_paper_update(task):
    ws = models.init_mlp([4, 5, 1], seed=2)
    lam, eta = 0.1, 0.3
    out, _ = engine.gd(ws, task.x, task.y, lam, eta, 1)
    _, g = metrics.loss_and_gradient(ws, task.x, task.y)
    for w, g_k, o in zip(ws, g, out, strict=True):
        assert torch.allclose(o, (1 - eta * lam) * w - eta * g_k, atol=1e-15)


def test_ensemble_members_train_independently(task):
    ws = models.init_mlp([4, 5, 1], members=3, seed=2)
    lams = [0.0, 0.01, 0.1]
    out, _ = engine.gd(ws, task.x, task.y, lams, 0.5, 20)
    for e, lam in enumerate(lams):
        single, _ = engine.gd([w[e] for w in ws], task.x, task.y, lam, 0.5, 20)
        for a, b in zip(single, out, strict=True):
            assert torch.allclose(a, b[e], atol=1e-13)


def test_history_records_every_k_and_final(task):
    ws = models.init_mlp([4, 5, 1], members=2, seed=0)
    _, hist = engine.gd(ws, task.x, task.y, 0.01, 0.5, 10, record_every=4)
    frame = hist.frame()
    assert sorted(frame.step.unique()) == [0, 4, 8, 10]
    assert set(frame.member) == {0, 1}
    assert {"loss", "fro_1", "fro_2"} <= set(frame.columns)
    assert frame.loss.iloc[-1] < frame.loss.iloc[0]


def test_gd_is_reproducible(task):
    ws = models.init_mlp([4, 5, 1], seed=3)
    a, _ = engine.gd(ws, task.x, task.y, 0.01, 0.5, 15)
    b, _ = engine.gd(ws, task.x, task.y, 0.01, 0.5, 15)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_divergence_names_step_and_member(task):
    ws = models.init_mlp([4, 16, 16, 1], members=3, seed=0, init_scale=3.0)
    named = r"member \d+ became (nan|inf) at step \d+"
    with pytest.raises(engine.DivergenceError, match=named) as e:
        engine.gd(ws, 20.0 * task.x, task.y, 0.0, 50.0, 200, activation="relu2")
    assert e.value.step >= 0 and e.value.member in (0, 1, 2)


def test_divergence_of_one_member_is_attributed(task):
    ws = models.init_mlp([4, 16, 16, 1], members=2, seed=0, init_scale=3.0)
    x = 20.0 * task.x
    # member 1 diverges alone: it starts with huge weights, member 0 with tiny ones
    ws = [torch.stack([1e-3 * w[0], w[1]]) for w in ws]
    with pytest.raises(engine.DivergenceError) as e:
        engine.gd(ws, x, task.y, 0.0, 10.0, 200, activation="relu2")
    assert e.value.member == 1


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"lam": -0.1}, "lam must be >= 0"),
        ({"eta": 0.0}, "eta must be > 0"),
        ({"eta": -1.0}, "eta must be > 0"),
        ({"steps": -1}, "steps must be a non-negative integer"),
    ],
)
def test_gd_refuses_bad_hyperparameters(task, kwargs, match):
    ws = models.init_mlp([4, 5, 1], seed=0)
    args = {"lam": 0.1, "eta": 0.1, "steps": 2} | kwargs
    with pytest.raises(ValueError, match=match):
        engine.gd(ws, task.x, task.y, **args)


def test_gd_refuses_mismatched_data(task):
    ws = models.init_mlp([4, 5, 1], seed=0)
    with pytest.raises(ValueError, match="y must hold one label per input"):
        engine.gd(ws, task.x, task.y[:-1], 0.1, 0.1, 1)
    with pytest.raises(ValueError, match="x must have shape"):
        engine.gd(ws, task.x[:, :3], task.y, 0.1, 0.1, 1)
    y = task.y.clone()
    y[0] = float("nan")
    with pytest.raises(ValueError, match="y contains NaN"):
        engine.gd(ws, task.x, y, 0.1, 0.1, 1)


def test_sgd_full_batch_equals_gd(task):
    ws = models.init_mlp([4, 5, 1], members=2, seed=4)
    a, _ = engine.gd(ws, task.x, task.y, [0.01, 0.1], 0.2, 5)
    b, hist = engine.sgd(ws, task.x, task.y, [0.01, 0.1], 0.2, epochs=5, batch_size=30,
                        record_every=5)
    for x, y in zip(a, b, strict=True):
        assert torch.allclose(x, y, atol=1e-14)
    assert sorted(hist.frame().step.unique()) == [0, 5]


def test_sgd_minibatches_are_seeded(task):
    ws = models.init_mlp([4, 5, 1], seed=4)
    a, _ = engine.sgd(ws, task.x, task.y, 0.01, 0.2, epochs=3, batch_size=7, seed=1)
    b, _ = engine.sgd(ws, task.x, task.y, 0.01, 0.2, epochs=3, batch_size=7, seed=1)
    c, _ = engine.sgd(ws, task.x, task.y, 0.01, 0.2, epochs=3, batch_size=7, seed=2)
    assert torch.equal(a[0], b[0]) and not torch.equal(a[0], c[0])


def test_recorded_weights_and_loss_belong_to_the_same_iterate(task):
    ws = models.init_mlp([4, 5, 1], seed=6)
    seen = {}

    def rec(step, weights, loss):
        seen[step] = ([w.clone() for w in weights], loss.clone())
        return []

    out, _ = engine.gd(ws, task.x, task.y, 0.1, 0.3, 3, record_every=1, record=rec)
    assert torch.equal(seen[0][0][0], ws[0])
    assert torch.equal(seen[3][0][0], out[0])
    for step, (weights, loss) in seen.items():
        expected, _ = metrics.loss_and_gradient(weights, task.x, task.y)
        assert torch.allclose(loss, expected), step


def test_gd_refuses_a_last_layer_with_several_outputs():
    t = sin_task(2, 4, seed=0)  # n = 2 outputs would broadcast silently against y
    ws = [models.init_mlp([4, 3, 1], seed=0)[0], torch.ones(2, 3, dtype=torch.float64)]
    with pytest.raises(ValueError, match=r"weights\[-1\] must have one output row"):
        engine.gd(ws, t.x, t.y, 0.1, 0.1, 2)


def test_gd_refuses_label_or_input_sets_that_do_not_match_the_members(task):
    ws = models.init_mlp([4, 3, 1], seed=0)
    with pytest.raises(ValueError, match="y must have shape"):
        engine.gd(ws, task.x, torch.stack([task.y, -task.y]), 0.1, 0.1, 2)
    with pytest.raises(ValueError, match="x must have shape"):
        engine.gd(ws, task.x.expand(2, *task.x.shape), task.y, 0.1, 0.1, 2)
    ens = models.init_mlp([4, 3, 1], members=3, seed=0)
    with pytest.raises(ValueError, match="y must have shape"):
        engine.sgd(ens, task.x, torch.stack([task.y, -task.y]), 0.1, 0.1, 1, 10)


def test_sgd_catches_a_divergence_in_the_last_batch(task):
    ws = models.init_mlp([4, 3, 1], seed=0)
    # one batch: its loss is finite, the update it makes is not
    with pytest.raises(engine.DivergenceError, match="at step 1"):
        engine.sgd(ws, task.x, task.y, 0.0, 1e308, epochs=1, batch_size=30)


# --- every model: the ensemble is a loop over single nets, the backward is autograd ----------


def _mlp_case(activation, backward):
    x, y = _data(E=3, n=10, d=5, seed=7)
    w = init_mlp([5, 6, 4, 1], members=3, seed=8)
    return models.mlp(activation, backward), w, x, y


def _shallow_case():
    x, y = _data(E=3, n=10, d=5, seed=9)
    w = torch.randn(3, 6, 5, generator=torch.Generator().manual_seed(10), dtype=torch.float64)
    return models.shallow_net(unit_output_vector(6, seed=1)), [w / 5**0.5], x, y


def _head_case(kind):
    x, y, query, _ = marked_token_task(12, 3, 5, seed=0)
    p = init_attention(3, 5, 4, seed=1)
    return attention_head(query, kind), [p[k] for k in ATTENTION_PARAMS], x, y


ENSEMBLES = {
    **{f"mlp-{a}-{'backward' if b else 'autograd'}": (lambda a=a, b=b: _mlp_case(a, b))
       for a in models.ACTIVATIONS for b in (False, True)},
    "shallow": _shallow_case,
    "argmax-head": lambda: _head_case("argmax"),
    "softmax-head": lambda: _head_case("softmax"),
}


def _member(model_name, params, x, y, e):
    """Member e alone: the attention head keeps a member axis of length 1."""
    if model_name.endswith("head"):
        return [p[e : e + 1] for p in params], x, y, lambda out: out[0]
    return [p[e] for p in params], x[e], y[e], lambda out: out


@pytest.mark.parametrize("name", list(ENSEMBLES))
def test_every_ensemble_model_trains_like_a_loop_over_single_nets(name):
    model, params, x, y = ENSEMBLES[name]()
    lams = [0.0, 0.01, 0.1]
    together, _ = engine.fit(model, params, x, y, lams, 0.3, 25)
    for e, lam in enumerate(lams):
        ps, xe, ye, pick = _member(name, params, x, y, e)
        alone, _ = engine.fit(model, ps, xe, ye, lam, 0.3, 25)
        for a, b in zip(together, alone, strict=True):
            torch.testing.assert_close(a[e], pick(b), rtol=1e-12, atol=1e-14)


def _block_case():
    x, y = signed_pair_task(10, tokens=4, d=6, seed=3)
    p = init_block(heads=2, d_head=2, d=6, seed=4)
    return attention_block(readout_vector(6)), [p[r] for r in BLOCK_ROLES], x, y


def _linear_case():
    pair = eps_task_pair(10, 7, 0.1, seed=0)
    theta = torch.randn(7, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    return models.linear_predictor(), [theta], pair.first.x, pair.first.y


BACKWARDS = {
    **{f"mlp-{a}": (lambda a=a: _mlp_case(a, True)) for a in models.ACTIVATIONS},
    "shallow": _shallow_case,
    "linear": _linear_case,
    "block": _block_case,
}


@pytest.mark.parametrize("name", list(BACKWARDS))
def test_every_hand_written_backward_is_autograd(name):
    model, params, x, y = BACKWARDS[name]()
    assert model.backward is not None
    loss, grads = model.backward(params, x, y)
    ps = [p.detach().clone().requires_grad_(True) for p in params]
    auto_loss = model.loss(ps, x, y)
    auto = torch.autograd.grad(auto_loss.sum(), ps)
    n = x.shape[-2] if model.grad_is_sum else 1
    torch.testing.assert_close(loss, auto_loss.detach(), rtol=1e-13, atol=1e-15)
    for g, a in zip(grads, auto, strict=True):
        torch.testing.assert_close(g / n, a, rtol=1e-11, atol=1e-14)


def test_a_wrong_backward_is_caught_by_the_autograd_comparison():
    model, params, x, y = _shallow_case()

    def doubled(ps, xx, yy):
        return model.loss(ps, xx, yy), [2 * g for g in model.backward(ps, xx, yy)[1]]

    wrong = dataclasses.replace(model, backward=doubled)
    _, grads = wrong.backward(params, x, y)
    ps = [p.detach().clone().requires_grad_(True) for p in params]
    (auto,) = torch.autograd.grad(model.loss(ps, x, y).sum(), ps)
    assert not torch.allclose(grads[0], auto)


def test_the_step_is_two_roundings_and_decay_only_without_a_gradient(task):
    ws = init_mlp([4, 5, 1], seed=2)
    lam, eta = 0.1, 0.3
    out, _ = engine.gd(ws, task.x, task.y, lam, eta, 1)
    _, g = metrics.loss_and_gradient(ws, task.x, task.y)
    for w, g_k, o in zip(ws, g, out, strict=True):  # fl(fl(d·W) − fl(η·g)), to the last bit
        assert torch.equal(o, (1 - eta * lam) * w - eta * g_k)
    x, y, query, _ = marked_token_task(12, 3, 5, seed=0)
    p = init_attention(2, 5, 4, seed=1)
    moved, _ = engine.fit(attention_head(query, "argmax"), [p[k] for k in ATTENTION_PARAMS], x, y,
                          [0.1, 0.2], eta, 1)
    for e, lam_e in enumerate([0.1, 0.2]):  # W_Q, W_K get no gradient: they only decay
        for k in (0, 1):
            assert torch.equal(moved[k][e], (1 - eta * lam_e) * p[ATTENTION_PARAMS[k]][e])


def _syncs(steps: int, lam, eta: float = 0.5) -> tuple[int, Exception | None]:
    """Host syncs of a GD run on the GPU's path (watch read at records only), and its error."""
    from unittest import mock

    from torch.profiler import ProfilerActivity, profile

    from lowrank.core import engine

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(32, 6, generator=gen)
    y = torch.where(x[:, 0] > 0, 1.0, -1.0)
    w0 = init_mlp([6, 8, 1], seed=0, members=2, dtype=torch.float32)
    err = None
    with mock.patch.object(engine, "syncs_are_cheap", lambda device: False):
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            try:
                engine.gd(w0, x, y, lam, eta, steps, backward=True)
            except engine.DivergenceError as exc:
                err = exc
    names = ("aten::item", "aten::_local_scalar_dense", "aten::is_nonzero")
    return sum(e.name in names for e in prof.events()), err


def test_step_loop_never_syncs_with_the_device_between_records():
    """As on a GPU: as many host syncs for 40 steps as for 10 (none inside the loop)."""
    few, _ = _syncs(10, [0.0, 0.01])
    many, _ = _syncs(40, [0.0, 0.01])
    assert few == many


def test_divergence_on_the_gpu_path_still_names_the_first_step_and_member():
    _, err = _syncs(60, [0.0, 1e6], eta=1.0)  # member 1's decay factor 1 − ηλ explodes
    assert err is not None and err.member == 1 and 0 < err.step < 60
