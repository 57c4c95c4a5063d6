"""Count the operators one full-batch GD step launches (torch.profiler), on the GPU's path.

On a GPU each counted operator is (at least) one kernel launch, so this count bounds the
launch overhead of a step. The step loop is run as on a GPU (``syncs_are_cheap`` is False:
the divergence watch is read at records only); view and metadata operators (transpose,
reshape, detach, ...) launch nothing and are not counted. Host syncs (``aten::item`` /
``_local_scalar_dense``) between records are counted separately and should be 0.

    python benchmarks/step_kernels.py [--members 4] [--hidden 64 16] [--steps 40]
"""

from __future__ import annotations

import argparse
import collections
import sys
from unittest import mock

import torch
from torch.profiler import ProfilerActivity, profile

from lowrank.core import engine, layouts
from lowrank.core.models import init_mlp

VIEWS = {"aten::transpose", "aten::reshape", "aten::detach", "aten::squeeze", "aten::unsqueeze",
         "aten::view", "aten::t", "aten::expand", "aten::as_strided", "aten::alias",
         "aten::_reshape_alias", "aten::empty", "aten::result_type", "aten::resolve_conj",
         "aten::resolve_neg", "aten::lift_fresh", "aten::flatten", "aten::detach_",
         "aten::empty_strided", "aten::_unsafe_view", "aten::scalar_tensor", "aten::empty_like",
         "aten::mT", "aten::permute"}
SYNCS = {"aten::item", "aten::_local_scalar_dense", "aten::is_nonzero"}


def leaf_ops(steps: int, backward: bool, args) -> collections.Counter:
    """Operators with no child operator (what launches work), over one fit of ``steps``."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(args.n, args.d, generator=gen) / args.d**0.5
    y = torch.where(x[:, 0] > 0, 1.0, -1.0)
    w0 = init_mlp([args.d, *args.hidden, 1], seed=0, members=args.members, dtype=torch.float32)
    lam = torch.linspace(0, 1e-2, args.members)
    with (mock.patch.object(engine, "syncs_are_cheap", lambda device: False),
          mock.patch.object(layouts, "cpu_layouts", lambda device: not args.gpu_path),
          profile(activities=[ProfilerActivity.CPU]) as prof):
        engine.gd(w0, x, y, lam, 0.5, steps, backward=backward, record_every=10**9)

    def launches(e) -> bool:  # real work whose children (if any) are views or allocations
        return (e.name.startswith("aten::") and e.name not in VIEWS
                and all(c.name in VIEWS for c in e.cpu_children))

    return collections.Counter(e.name for e in prof.events() if launches(e))


def main(argv: list[str] | None = None) -> int:
    """Print operators per GD step (autograd and hand-written backward) and syncs per step."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--members", type=int, default=4)
    p.add_argument("--d", type=int, default=20)
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--hidden", type=int, nargs="+", default=[64, 16])
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--cpu-layouts", dest="gpu_path", action="store_false",
                   help="count the CPU's own path (contiguous Wᵀ copies, transposed gradients)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    print(f"dims {args.d}-{'-'.join(map(str, args.hidden))}-1, n={args.n}, "
          f"{args.members} members; per GD step (difference of {args.steps} and 2x steps):")
    print("| gradients | operators per step | host syncs per step | operators |")
    print("| --- | --- | --- | --- |")
    for backward in (True, False):
        a, b = leaf_ops(args.steps, backward, args), leaf_ops(2 * args.steps, backward, args)
        per = {k: (b[k] - a[k]) / args.steps for k in b}
        ops = sum(v for k, v in per.items() if k not in SYNCS)
        syncs = sum(v for k, v in per.items() if k in SYNCS)
        top = ", ".join(f"{k[6:]} {v:g}" for k, v in sorted(per.items(), key=lambda kv: -kv[1])
                        if v and k not in SYNCS)
        name = "hand-written backward" if backward else "autograd"
        print(f"| {name} | {ops:g} | {syncs:g} | {top} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
