"""Figure 3's nets at the paper's widths for a few thousand GD steps in fp64, fp32 and
emulated TF32 / bf16 (lowrank.core.precision): how far each reduced precision moves the
quantities chapter 10 asserts (merged and individual losses, their gap, stable ranks).

    python benchmarks/precision_compare.py [--steps 2000] [--lam 1e-3] [--threads 1]

Prints one markdown table (benchmarks/README.md records it). The same seed and start for
every precision; only the matmul inputs differ.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from lowrank.core import precision
from lowrank.runner import registry

PRECISIONS = ("fp64", "fp32", "tf32", "bf16")


def final_values(prec: str, spec: dict) -> tuple[dict, float]:
    """Quantity → value at the last step of one fig3 run at ``prec``, and its wall time."""
    start = time.perf_counter()
    with precision.using(prec, "cpu"):
        rows = registry.get("fig3").run(spec, torch.device("cpu"))
    seconds = time.perf_counter() - start
    last = max(r["step"] for r in rows)
    out = {}
    for r in rows:
        if r["step"] == last:
            key = tuple(str(r[k]) for k in ("setting", "metric", "model", "task", "layer")
                        if k in r and r[k] == r[k] and r[k] != "")
            out[key] = float(r["value"])
    for setting in spec["settings"]:  # the merged-minus-individual gap, what chapter 10 asserts
        merged = [v for k, v in out.items() if k[:3] == (setting, "loss", "merged")]
        own = [v for k, v in out.items() if k[:3] == (setting, "loss", "individual")]
        if merged and own:
            out[(setting, "loss gap (merged − individual)")] = (
                sum(merged) / len(merged) - sum(own) / len(own))
    return out, seconds


def main(argv: list[str] | None = None) -> int:
    """Run every precision and print the comparison table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--lam", type=float, default=1e-3)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    spec = {**registry.get("fig3").spec("full"), "lams": [args.lam], "lam_main": args.lam,
            "seeds": 1, "steps": args.steps, "record_every": args.steps}
    results, seconds = {}, {}
    for prec in PRECISIONS:
        results[prec], seconds[prec] = final_values(prec, spec)
        print(f"{prec}: {seconds[prec]:.0f} s", file=sys.stderr, flush=True)
    ref = results["fp64"]
    print(f"fig3 at the paper's widths {spec['d']}-{'-'.join(map(str, spec['hidden']))}-1, "
          f"n={spec['n']}, λ={args.lam:g}, η={spec['eta']:g}, {args.steps} GD steps, one seed")
    print("| quantity | " + " | ".join(PRECISIONS) + " | largest rel. dev. from fp64 |")
    print("| --- |" + " --- |" * (len(PRECISIONS) + 1))
    for key in sorted(ref, key=str):
        vals = [results[p].get(key, float("nan")) for p in PRECISIONS]
        dev = max(abs(v - ref[key]) / max(abs(ref[key]), 1e-12) for v in vals[1:])
        print(f"| {' / '.join(key)} | " + " | ".join(f"{v:.6g}" for v in vals)
              + f" | {dev:.1e} |")
    print("| wall time (s, this CPU) | " + " | ".join(f"{seconds[p]:.0f}" for p in PRECISIONS)
          + " | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
