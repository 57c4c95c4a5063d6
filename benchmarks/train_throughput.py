"""Throughput of the batched GD trainer (lowrank.core.engine.gd) against two baselines and bmm.

(a) one ensemble of E members trained by ``lowrank.core.engine.gd(..., backward=True)``
(hand-written backprop, batched matmuls); (b) E separate ``nn.Sequential`` ReLU MLPs, each
with its own ``torch.optim.SGD(lr=η, weight_decay=λ)``, stepped one after another; (c) the
ensemble a PyTorch user writes with ``torch.func.stack_module_state`` + ``vmap(grad(...))``
(PyTorch's model-ensembling recipe), updated in place; for reference also (d) the same
ensemble with autograd (``lowrank.core.engine.gd``). All do the same math,
W ← (1−ηλ)W − η∇L, for the same number of full-batch steps. (e) times the eight
``torch.bmm`` products of one step at the same shapes: the machine's own batched-matmul
rate, against which the trainers' FLOP/s are reported.

    python benchmarks/train_throughput.py --device cpu --members 8 --steps 20
    python benchmarks/train_throughput.py --device cuda --members 160 --steps 200 \
        --d 100 --hidden 1000 100 --n 1000 --peak-flops 67e12
    python benchmarks/train_throughput.py --device cuda --members 40 --steps 50 \
        --d 100 --hidden 1000 100 --n 1000 --tf32 --peak-flops 495e12
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from lowrank.core import engine
from lowrank.core.losses import empirical_loss
from lowrank.core.models import flops_per_step, init_mlp

BMM = "torch.bmm, the step's 8 products"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def batched(weights, x, y, lam, eta, steps, device) -> float:
    """Seconds for ``steps`` GD steps of the whole ensemble, hand-written backprop."""
    engine.gd(weights, x, y, lam, eta, 2, backward=True)  # warm-up
    _sync(device)
    start = time.perf_counter()
    engine.gd(weights, x, y, lam, eta, steps, backward=True)
    _sync(device)
    return time.perf_counter() - start


def autograd_batched(weights, x, y, lam, eta, steps, device) -> float:
    """Seconds for the same ensemble with lowrank.core.engine.gd (autograd, for reference)."""
    engine.gd(weights, x, y, lam, eta, 2)
    _sync(device)
    start = time.perf_counter()
    engine.gd(weights, x, y, lam, eta, steps)
    _sync(device)
    return time.perf_counter() - start


def naive(weights, x, y, lam, eta, steps, device) -> float:
    """Seconds for ``steps`` GD steps of every member in turn (nn.Module + optim.SGD)."""
    models = _modules(weights, device, x.dtype)
    optims = [torch.optim.SGD(m.parameters(), lr=eta, weight_decay=lam) for m in models]

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


def _modules(weights, device, dtype) -> list[nn.Module]:
    """One ``nn.Sequential`` ReLU MLP per member, initialised from the ensemble's weights."""
    models = []
    for e in range(weights[0].shape[0]):
        layers: list[nn.Module] = []
        for k, w in enumerate(weights):
            lin = nn.Linear(w.shape[2], w.shape[1], bias=False)
            lin.weight.data = w[e].clone()
            layers.append(lin)
            if k < len(weights) - 1:
                layers.append(nn.ReLU())
        models.append(nn.Sequential(*layers).to(device=device, dtype=dtype))
    return models


def vmap_ensemble(weights, x, y, lam, eta, steps, device) -> float:
    """Seconds for the model-ensembling recipe: stack_module_state + vmap(grad), SGD by hand."""
    from torch.func import functional_call, grad, stack_module_state, vmap

    models = _modules(weights, device, x.dtype)
    params, buffers = stack_module_state(models)
    base = models[0].to("meta")

    def member_loss(p, b, xe, ye):
        return empirical_loss(ye * functional_call(base, (p, b), (xe,)).squeeze(-1))

    grads_of = vmap(grad(member_loss))

    def run(n_steps: int) -> None:
        for _ in range(n_steps):
            g = grads_of(params, buffers, x, y)
            with torch.no_grad():
                for k, p in params.items():
                    p.mul_(1 - eta * lam).sub_(eta * g[k])

    run(1)
    _sync(device)
    start = time.perf_counter()
    run(steps)
    _sync(device)
    return time.perf_counter() - start


def bmm_products(weights, x) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The eight batched products of one GD step: 3 forward, 3 weight- and 2 input-gradients."""
    E, n = x.shape[0], x.shape[1]
    hs = [x] + [torch.randn(E, n, w.shape[1], dtype=x.dtype, device=x.device)
                for w in weights[:-1]]
    gs = [torch.randn(E, n, w.shape[1], dtype=x.dtype, device=x.device) for w in weights]
    pairs = [(h, w.transpose(-1, -2)) for h, w in zip(hs, weights, strict=True)]  # forward
    pairs += [(g.transpose(-1, -2), h) for g, h in zip(gs, hs, strict=True)]  # ∇W_k
    pairs += [(g, w) for g, w in zip(gs[1:], weights[1:], strict=True)]  # ∇h_k, k ≥ 1
    return pairs


def bmm_rate(weights, x, steps, device) -> tuple[float, float]:
    """Seconds for ``steps`` rounds of the step's eight ``torch.bmm`` products, and their FLOPs."""
    pairs = [(a.contiguous(), b.contiguous()) for a, b in bmm_products(weights, x)]
    flops = sum(2.0 * a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2] for a, b in pairs)
    for a, b in pairs:
        torch.bmm(a, b)
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        for a, b in pairs:
            torch.bmm(a, b)
    _sync(device)
    return time.perf_counter() - start, flops


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--members", type=int, default=8)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3,
                   help="interleaved rounds of every trainer; medians and ranges are reported")
    p.add_argument("--d", type=int, default=100)
    p.add_argument("--hidden", type=int, nargs="+", default=[200, 50])
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--dtype", choices=["float32", "float64"], default=None)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads on CPU")
    p.add_argument("--tf32", action="store_true",
                   help="TF32 matmuls on CUDA (torch.backends.cuda.matmul.allow_tf32)")
    p.add_argument(
        "--peak-flops",
        type=float,
        default=None,
        help="device peak FLOP/s for the %% of peak column (default: none; the machine's "
        "own bmm rate, measured in the same run, is the reference)",
    )
    args = p.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
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
    flops = flops_per_step(dims, n, E)
    peak = args.peak_flops
    trainers = {
        "batched (engine.gd, backward=True)": batched,
        "batched autograd (engine.gd)": autograd_batched,
        "naive loop (nn.Module + SGD)": naive,
        "vmap(grad) ensemble (torch.func)": vmap_ensemble,
    }
    # Interleaved repeats on a shared machine: a burst of load slows one round of every
    # trainer, not one trainer, and each ratio is taken within its round.
    times: dict[str, list[float]] = {k: [] for k in [*trainers, BMM]}
    for _ in range(args.repeats):
        for name, fn in trainers.items():
            times[name].append(fn(weights, x, y, lam, eta, args.steps, device))
        t_m, bmm_flops = bmm_rate(weights, x, args.steps, device)
        times[BMM].append(t_m)
    tf32 = device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32
    print(
        f"device={device} dtype={dtype} tf32={tf32} threads={torch.get_num_threads()} "
        f"dims={dims} n={n} members={E} steps={args.steps} repeats={args.repeats}"
    )
    print(f"FLOPs per ensemble step (analytic): {flops:.3g}")
    print(f"FLOPs of the step's eight bmm products: {bmm_flops:.3g}")
    bmm = bmm_flops * args.steps / statistics.median(times[BMM])
    print("| trainer (median of the repeats) | steps/s | FLOP/s | % of bmm rate | % of peak |")
    print("| --- | --- | --- | --- | --- |")
    for name, ts in times.items():
        rate = args.steps / statistics.median(ts)
        pct = f"{100 * flops * rate / peak:.1f}" if peak else "n/a"
        print(f"| {name} | {rate:.2f} | {flops * rate:.3g} | {100 * flops * rate / bmm:.0f} "
              f"| {pct} |")
    batched_t = times["batched (engine.gd, backward=True)"]
    print("| ratio (median; min-max over the repeats) | value |")
    print("| --- | --- |")
    for label, other in (("batched / naive", "naive loop (nn.Module + SGD)"),
                         ("batched / vmap", "vmap(grad) ensemble (torch.func)"),
                         ("batched rate / bmm rate", BMM)):
        ratios = [o / b for o, b in zip(times[other], batched_t, strict=True)]
        print(f"| {label} | {statistics.median(ratios):.2f} "
              f"({min(ratios):.2f}-{max(ratios):.2f}) |")
    print(f"(peak assumed: {peak or 'unknown'})")


if __name__ == "__main__":
    main()
