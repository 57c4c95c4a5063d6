"""Throughput of the batched GD trainer (lowrank.fast.gd) against a naive per-member loop.

(a) one ensemble of E members trained by ``lowrank.fast.gd`` (hand-written backprop,
batched matmuls); (b) E separate ``nn.Sequential`` ReLU MLPs, each with its own
``torch.optim.SGD(lr=η, weight_decay=λ)``, stepped one after another; for
reference also (c) the same ensemble with autograd (``lowrank.train.gd``). All do
the same math, W ← (1−ηλ)W − η∇L, for the same number of full-batch steps.

    python benchmarks/train_throughput.py --device cpu --members 8 --steps 20
    python benchmarks/train_throughput.py --device cuda --members 160 --steps 200 \
        --d 100 --hidden 1000 100 --n 1000 --peak-flops 67e12
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from lowrank import fast, train
from lowrank.losses import empirical_loss
from lowrank.nets import init_mlp

# one x86 core with two 256-bit FMA units at ~3 GHz: 16 float64 FLOP/cycle ≈ 5e10 FLOP/s
CPU_PEAK_DEFAULT = 5e10


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def batched(weights, x, y, lam, eta, steps, device) -> float:
    """Seconds for ``steps`` GD steps of the whole ensemble with lowrank.fast.gd."""
    fast.gd(weights, x, y, lam, eta, 2)  # warm-up
    _sync(device)
    start = time.perf_counter()
    fast.gd(weights, x, y, lam, eta, steps)
    _sync(device)
    return time.perf_counter() - start


def autograd_batched(weights, x, y, lam, eta, steps, device) -> float:
    """Seconds for the same ensemble with lowrank.train.gd (autograd, for reference)."""
    train.gd(weights, x, y, lam, eta, 2)
    _sync(device)
    start = time.perf_counter()
    train.gd(weights, x, y, lam, eta, steps)
    _sync(device)
    return time.perf_counter() - start


def naive(weights, x, y, lam, eta, steps, device) -> float:
    """Seconds for ``steps`` GD steps of every member in turn (nn.Module + optim.SGD)."""
    models, optims = [], []
    for e in range(weights[0].shape[0]):
        layers: list[nn.Module] = []
        for k, w in enumerate(weights):
            lin = nn.Linear(w.shape[2], w.shape[1], bias=False)
            lin.weight.data = w[e].clone()
            layers.append(lin)
            if k < len(weights) - 1:
                layers.append(nn.ReLU())
        model = nn.Sequential(*layers).to(device=device, dtype=x.dtype)
        models.append(model)
        optims.append(torch.optim.SGD(model.parameters(), lr=eta, weight_decay=lam))

    def run(n_steps: int) -> None:
        for _ in range(n_steps):
            for e, (model, opt) in enumerate(zip(models, optims, strict=True)):
                opt.zero_grad(set_to_none=True)
                loss = empirical_loss(y[e] * model(x[e]).squeeze(-1))
                loss.backward()
                opt.step()

    run(1)  # warm-up (the extra step is not timed)
    _sync(device)
    start = time.perf_counter()
    run(steps)
    _sync(device)
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--members", type=int, default=8)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--d", type=int, default=100)
    p.add_argument("--hidden", type=int, nargs="+", default=[200, 50])
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--dtype", choices=["float32", "float64"], default=None)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads on CPU")
    p.add_argument(
        "--peak-flops",
        type=float,
        default=None,
        help=f"device peak FLOP/s (default: {CPU_PEAK_DEFAULT:g} on CPU)",
    )
    args = p.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = (
        getattr(torch, args.dtype)
        if args.dtype
        else (torch.float64 if device.type == "cpu" else torch.float32)
    )
    dims = [args.d, *args.hidden, 1]
    E, n = args.members, args.n
    weights = [w.to(device, dtype) for w in init_mlp(dims, members=E, seed=0)]
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(E, n, args.d, generator=gen, dtype=torch.float64)
    x = (x / x.norm(dim=-1, keepdim=True)).to(device, dtype)
    y = torch.where(torch.randn(E, n, generator=gen) >= 0, 1.0, -1.0).to(device, dtype)
    lam, eta = 1e-4, 1.0
    flops = fast.flops_per_step(dims, n, E)
    peak = args.peak_flops or (CPU_PEAK_DEFAULT if device.type == "cpu" else None)
    t_b = batched(weights, x, y, lam, eta, args.steps, device)
    t_a = autograd_batched(weights, x, y, lam, eta, args.steps, device)
    t_n = naive(weights, x, y, lam, eta, args.steps, device)
    tf32 = device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32
    print(
        f"device={device} dtype={dtype} tf32={tf32} threads={torch.get_num_threads()} "
        f"dims={dims} n={n} members={E} steps={args.steps}"
    )
    print(f"FLOPs per ensemble step (analytic): {flops:.3g}")
    print("| trainer | steps/s | FLOP/s | % of peak |")
    print("| --- | --- | --- | --- |")
    timings = (
        ("batched (lowrank.fast.gd)", t_b),
        ("batched autograd (lowrank.train.gd)", t_a),
        ("naive loop (nn.Module + SGD)", t_n),
    )
    for name, t in timings:
        rate = args.steps / t
        pct = f"{100 * flops * rate / peak:.1f}" if peak else "n/a"
        print(f"| {name} | {rate:.2f} | {flops * rate:.3g} | {pct} |")
    print(f"speed-up batched / naive: {t_n / t_b:.1f}x (peak assumed: {peak or 'unknown'})")


if __name__ == "__main__":
    main()
