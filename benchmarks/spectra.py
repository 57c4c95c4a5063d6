"""Time spectral norms for chapter 6: exact svdvals, block power iteration, numpy/scipy SVD.

Run: ``python benchmarks/spectra.py [--sizes 4096x4096,4096x16384] [--skip-numpy-large]``.
Prints a markdown table of seconds and ratios against torch.linalg.svdvals in the same run,
plus the power method's relative error against the exact spectral norm.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from lowrank.chapters import ch06_transformers as ch06
from lowrank.core import metrics
from lowrank.data import checkpoints


def synthetic(rows: int, cols: int, seed: int = 0) -> torch.Tensor:
    """Noise plus a decaying rank-8 part: stable rank ~5-10 like pretrained weights."""
    gen = torch.Generator().manual_seed(seed)
    g = torch.randn(rows, cols, generator=gen) / np.sqrt(max(rows, cols))
    u = torch.linalg.qr(torch.randn(rows, 8, generator=gen)).Q
    v = torch.linalg.qr(torch.randn(cols, 8, generator=gen)).Q
    s = 4.0 * torch.logspace(0, -0.6, 8)
    return g + u @ torch.diag(s) @ v.T


def timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


def bench_matrix(w: torch.Tensor, numpy_svd: bool) -> list[tuple[str, float, float]]:
    """(method, seconds, relative error of ‖W‖_2) for one float32 matrix."""
    t_exact, s = timed(lambda m: torch.linalg.svdvals(m)[0], w)
    exact = float(s)
    out = [("torch.linalg.svdvals", t_exact, 0.0)]
    t_pow, p = timed(metrics.spectral_norm_power, w)
    out.append(("spectral_norm_power", t_pow, metrics.relative_error(float(p), exact)))
    if numpy_svd:
        a = w.numpy()
        t_np, (_, sv, _) = timed(lambda m: np.linalg.svd(m, full_matrices=False), a)
        out.append(("numpy.linalg.svd (with U, V)", t_np, metrics.relative_error(sv[0], exact)))
        import scipy.linalg

        t_sp, sv2 = timed(lambda m: scipy.linalg.svd(m, compute_uv=False), a)
        out.append(("scipy.linalg.svd(compute_uv=False)", t_sp,
                    metrics.relative_error(sv2[0], exact)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="4096x4096,4096x16384")
    parser.add_argument("--skip-numpy-large", action="store_true",
                        help="no numpy/scipy SVD for matrices with more than 2**25 entries")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1 on a shared 2-core machine: more oversubscribe)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, float32, CPU\n")
    print("| workload | method | seconds | x svdvals | rel. error of ‖W‖_2 |")
    print("| --- | --- | --- | --- | --- |")

    minilm = checkpoints.minilm_checkpoint()
    t_exact, rows = timed(ch06.analyse, minilm, "exact", "cpu", torch.float32)
    t_pow, rows_p = timed(ch06.analyse, minilm, "power", "cpu", torch.float32)
    err = max(metrics.relative_error(p["spectral"], e["spectral"])
              for p, e in zip(rows_p, rows, strict=True))
    print(f"| MiniLM, all {len(rows)} matrices | analyse(exact) | {t_exact:.2f} | 1.00 | 0 |")
    print(f"| MiniLM, all {len(rows)} matrices | analyse(power) | {t_pow:.2f} "
          f"| {t_pow / t_exact:.2f} | {err:.1e} |")

    for size in args.sizes.split(","):
        r, c = (int(x) for x in size.split("x"))
        w = synthetic(r, c)
        big = r * c > 2**25
        results = bench_matrix(w, numpy_svd=not (big and args.skip_numpy_large))
        base = results[0][1]
        for name, sec, e in results:
            print(f"| {r}×{c} | {name} | {sec:.2f} | {sec / base:.2f} | {e:.1e} |")


if __name__ == "__main__":
    main()
