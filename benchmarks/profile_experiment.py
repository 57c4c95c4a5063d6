"""Profile a few steps of one experiment's smoke spec with torch.profiler.

Writes ``OUT/trace.json`` (a Chrome trace: open it in chrome://tracing or Perfetto),
``OUT/key_averages.txt`` (operators by total device time, or CPU time on a CPU) and
``OUT/profile.json`` (what was profiled, its wall time). ``--experiment auto`` takes the
done experiment with the longest wall time in a suite manifest (``--manifest``), else the
one with the most FLOPs at ``--scale``. A first, unprofiled run warms up (CUDA context,
cuBLAS handles, data loading caches).

    python benchmarks/profile_experiment.py --experiment fig3 --device cpu --out /tmp/prof
    python benchmarks/profile_experiment.py --experiment auto --scale full --device cuda \\
        --precision tf32 --manifest gpu/results/manifest.json --steps 5 --out gpu/profile
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from lowrank.core import precision as matmul_precision
from lowrank.runner import cost, registry


def slowest(manifest: Path | None, scale: str) -> tuple[str, str]:
    """(name, why): the longest done run of ``manifest``, else the most FLOPs at ``scale``."""
    if manifest is not None and manifest.is_file():
        runs = json.loads(manifest.read_text()).get("experiments", {})
        done = {n: e["wall_s"] for n, e in runs.items()
                if e.get("status") == "done" and e.get("wall_s")}
        if done:
            name = max(done, key=done.get)
            return name, f"longest done run in {manifest} ({done[name]:.1f} s)"
    flops = {n: cost.flops(n, e.spec(scale)) for n, e in registry.registry().items()
             if n in cost.RULES}
    name = max(flops, key=flops.get)
    return name, f"most FLOPs at {scale} scale ({flops[name]:.3g})"


def smoke_spec(name: str, scale: str, steps: int | None) -> dict:
    """The experiment's smoke spec at ``scale``, with ``steps`` GD steps when given."""
    exp = registry.get(name)
    spec = exp.smoke(exp.spec(scale))
    if steps is not None and "steps" in spec:
        spec["steps"] = steps
    return spec


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--experiment", default="auto", help="a registered name, or auto")
    p.add_argument("--manifest", type=Path, default=None, help="a suite manifest (for auto)")
    p.add_argument("--scale", choices=("quick", "full"), default="full")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--precision", choices=matmul_precision.PRECISIONS, default=None,
                   help="default fp64 on the CPU, fp32 on a GPU")
    p.add_argument("--steps", type=int, default=None, help="GD steps (default: the smoke's)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--rows", type=int, default=40, help="rows of the key_averages table")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    precision = args.precision or ("fp64" if device.type == "cpu" else "fp32")
    if args.experiment == "auto":
        name, why = slowest(args.manifest, args.scale)
    else:
        name, why = registry.get(args.experiment).name, "asked for"
    exp = registry.get(name)
    precision = registry.offered_precision(exp, precision, strict=False)
    spec = smoke_spec(name, args.scale, args.steps)
    args.out.mkdir(parents=True, exist_ok=True)

    def run() -> float:
        start = time.perf_counter()
        with matmul_precision.using(precision, device):
            exp.run(spec, device, False)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    warm = run()
    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities, record_shapes=True) as prof:
        wall = run()
    prof.export_chrome_trace(str(args.out / "trace.json"))
    sort = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
    table = prof.key_averages().table(sort_by=sort, row_limit=args.rows)
    header = (f"{name} ({why}), smoke spec at {args.scale} scale, {spec.get('steps', '?')} steps, "
              f"device {device}, precision {precision}, torch {torch.__version__}: "
              f"{wall:.3f} s profiled ({warm:.3f} s warm-up)\n")
    (args.out / "key_averages.txt").write_text(header + table + "\n")
    (args.out / "profile.json").write_text(json.dumps(
        {"experiment": name, "why": why, "scale": args.scale, "spec": spec, "device": str(device),
         "precision": precision, "torch": torch.__version__, "wall_s": wall, "warmup_s": warm,
         "sorted_by": sort}, indent=2) + "\n")
    print(header + table)


if __name__ == "__main__":
    main()
