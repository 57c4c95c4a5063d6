"""Chapter 13's fine-tuning: the engine's anchored GD is the paper's τ update by hand."""

from __future__ import annotations

import torch

from lowrank.chapters.ch13_task_arithmetic_bert import encode, load_minilm
from lowrank.chapters.ch13_task_arithmetic_train import Trainable, adamw, anchored_gd
from lowrank.data import text_tasks as tt
from lowrank.data.checkpoints import minilm_checkpoint


def _setup():
    model = load_minilm(torch.float64)
    vocab = tt.load_vocab(minilm_checkpoint() / "vocab.txt")
    a, b = tt.task_pair(vocab, 16, 0.0, seed=0)
    (sa, ya), (sb, yb) = a.sample(6, 3, seed=0), b.sample(6, 3, seed=1)
    xa, xb = (encode(tt.tokenise(s, vocab), model, range(5)) for s in (sa, sb))
    return model, torch.stack([xa, xb]), torch.stack([ya, yb]).double()


def test_anchored_gd_is_the_papers_tau_update_by_hand():
    model, x, y = _setup()
    tr = Trainable(model, (5,))
    lams, eta = [0.0, 0.5], 0.3
    base = tr.theta0()

    def grads(taus):
        ts = [t.clone().requires_grad_(True) for t in taus]
        thetas = [b0 + t for b0, t in zip(base, ts, strict=True)]
        loss = torch.nn.functional.softplus(-y * tr.logits(thetas, x)).mean(dim=1)
        return torch.autograd.grad(loss.sum(), ts)

    tau = [torch.zeros(2, *b.shape, dtype=b.dtype) for b in base]
    for _ in range(2):  # τ ← (1 − ηλ)τ − η∇L(θ₀ + τ), per member
        g = grads(tau)
        decay = torch.tensor([1 - eta * lam for lam in lams], dtype=torch.float64)
        tau = [decay.reshape(-1, *[1] * (t.ndim - 1)) * t - eta * gi
               for t, gi in zip(tau, g, strict=True)]
    got = anchored_gd(tr, x, y, lams, eta, 2)
    for a, b in zip(got, tau, strict=True):
        assert torch.allclose(a, b, atol=1e-12, rtol=1e-10)
    assert got[-2].abs().sum() > 0  # the head moved
    assert got[0].abs().sum() > 0   # and so did the top layer's Q


def test_adamw_decays_towards_zero_not_theta0():
    model, x, y = _setup()
    tr = Trainable(model, (5,))
    base = tr.theta0()
    lr, lam = 1e-3, 10.0
    tau0, tau1 = (adamw(tr, x, y, [0.0, lam], lr, 1)[0][k] for k in (0, 1))
    # one AdamW step: θ ← θ(1 − lr·λ) − lr·adam; the decay shows as −lr·λ·θ₀ in τ
    assert torch.allclose(tau1 - tau0, -lr * lam * base[0], atol=1e-12)
