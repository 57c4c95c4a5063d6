"""Spectral norms at a record: torch.linalg.svdvals against batched Lanczos, in the same run.

A record of full-scale ``fig6`` computes the stable rank of 200 first-layer matrices
1000×1568 in float64 (120 nets and 80 merges). On a GPU PyTorch factors matrices larger than
32×32 one after another (cuSOLVER's gesvdj), so ``lowrank.core.metrics.spectral_norm`` uses
``spectral_norm_lanczos`` there. This times both on one batch and reports Lanczos' largest
relative error against svdvals.

    python benchmarks/record_norms.py --members 8 --threads 1
    python benchmarks/record_norms.py --device cuda --members 40
"""

from __future__ import annotations

import argparse
import time

import torch

from lowrank.core.metrics import LANCZOS_STEPS, spectral_norm_lanczos


def _timed(fn, device: torch.device) -> tuple[float, torch.Tensor]:
    fn()  # warm-up (cuSOLVER handles, kernels)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--members", type=int, default=8, help="matrices in the batch")
    p.add_argument("--shape", type=int, nargs=2, default=[1000, 1568])
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads on CPU")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    gen = torch.Generator().manual_seed(0)
    # a Gaussian batch: the smallest top gap of a run (its initialisation), Lanczos' worst case
    w = torch.randn(args.members, *args.shape, generator=gen, dtype=torch.float64).to(device)
    t_svd, exact = _timed(lambda: torch.linalg.svdvals(w)[..., 0], device)
    t_lz, approx = _timed(lambda: spectral_norm_lanczos(w), device)
    err = float(((approx - exact).abs() / exact).max())
    print(f"device={device} members={args.members} shape={tuple(args.shape)} float64 "
          f"threads={torch.get_num_threads()} lanczos_steps={LANCZOS_STEPS}")
    print("| method | seconds | per matrix (ms) | x svdvals | max rel. error |")
    print("| --- | --- | --- | --- | --- |")
    for name, t, e in (("torch.linalg.svdvals", t_svd, 0.0), ("spectral_norm_lanczos", t_lz, err)):
        print(f"| {name} | {t:.3f} | {1e3 * t / args.members:.1f} | {t / t_svd:.2f} | {e:.1e} |")


if __name__ == "__main__":
    main()
