"""The FLOP model of every registered experiment and its predicted wall time on a device.

One GD step of an E-member ensemble of MLPs with widths m_0..m_L on n inputs costs
:func:`lowrank.core.models.flops_per_step`: forward 2n·Σ m_k m_{k−1}, backward twice that
(less the input gradient never formed). An experiment's cost is the sum over its
:class:`Workload` s, read from its spec by the rule registered for its name in ``RULES``.
A prediction divides the FLOPs by a rate: the CPU rate measured by
``benchmarks/train_throughput.py``, or a device's published peak times an assumed efficiency.
Every figure and assumption is a named constant or a parameter.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lowrank.core.models import flops_per_step

#: measured on this 2-core CPU, one thread, paper widths 100-1000-100-1, n = 1000, 4 members,
#: median of 5 interleaved repeats (benchmarks/README.md): the batched trainer's FLOP/s
CPU_RATE = {"fp32": 1.0e11, "fp64": 4.99e10}


@dataclass(frozen=True)
class Device:
    """A device's published dense peak FLOP/s per precision and memory bandwidth (bytes/s)."""

    name: str
    peak: dict[str, float]
    source: str
    bandwidth: float


#: NVIDIA H100 SXM5 datasheet (dense, no sparsity): FP32 67 TFLOP/s, TF32 Tensor Core 495,
#: BF16 Tensor Core 990 (the datasheet's 989/1979 "with sparsity" figures halved); HBM3 3.35 TB/s.
H100 = Device("H100 SXM", {"fp32": 67e12, "tf32": 495e12, "bf16": 990e12},
              "NVIDIA H100 Tensor Core GPU datasheet, SXM5 column, dense", 3.35e12)
#: the H200 has the H100's compute and faster memory (HBM3e, 4.8 TB/s)
H200 = Device("H200 SXM", dict(H100.peak),
              "NVIDIA H200 datasheet: same compute as H100 SXM, 4.8 TB/s", 4.8e12)

#: assumed fraction of peak: large batched matmuls (every hidden width ≥ LARGE_WIDTH) and small;
#: and of the memory bandwidth for the elementwise passes
EFFICIENCY = {"large": 0.5, "small": 0.05, "memory": 0.8}
#: the trainer's elementwise passes per GD step, outside the matmuls (counted with the profiler
#: by tests/runner/test_cost.py): each hidden activation 5 (ReLU in place: read, write; its
#: backward: read g and h, write), each trained weight 7 (decay in place 2, η·∇ 2, the
#: subtraction 3), a weight that only decays 2, and 24 over the (E, n) outputs and losses
ACTIVATION_PASSES, WEIGHT_PASSES, DECAY_PASSES, OUTPUT_PASSES = 5, 7, 2, 24
#: bytes per number: the weights and activations are float32 at every GPU precision
ITEMSIZE = 4
LARGE_WIDTH = 100
#: the paper's figures, whose total the 6-minute target bounds (all experiments: 15 minutes)
PAPER_FIGURES = ("fig2", "fig3", "fig5", "fig6")


@dataclass(frozen=True)
class Workload:
    """E members of one MLP shape trained ``steps`` steps of ``n`` inputs each."""

    dims: tuple[int, ...]
    n: int
    members: int
    steps: int
    #: weight entries per member that only decay (Figure 6's off-task first-layer columns)
    decay_only: int = 0

    @property
    def flops(self) -> float:
        """FLOPs of the whole run: flops_per_step(dims, n, E) × steps."""
        return flops_per_step(self.dims, self.n, self.members) * self.steps

    def elementwise_bytes_per_step(self, itemsize: int = ITEMSIZE) -> float:
        """Bytes one GD step's elementwise passes read and write (ACTIVATION_PASSES, …)."""
        weights = sum(a * b for a, b in zip(self.dims[:-1], self.dims[1:], strict=True))
        numbers = self.members * (ACTIVATION_PASSES * self.n * sum(self.dims[1:-1])
                                  + WEIGHT_PASSES * weights + DECAY_PASSES * self.decay_only
                                  + OUTPUT_PASSES * self.n)
        return float(itemsize * numbers)

    @property
    def elementwise_bytes(self) -> float:
        """Bytes of the whole run's elementwise passes: per step × steps."""
        return self.elementwise_bytes_per_step() * self.steps

    @property
    def large(self) -> bool:
        """Whether every hidden width is at least LARGE_WIDTH (matmuls big enough for a GPU)."""
        hidden = self.dims[1:-1] or self.dims[:1]
        return min(hidden) >= LARGE_WIDTH


def _need(spec: dict[str, Any], name: str, *keys: str) -> list[Any]:
    missing = [k for k in keys if k not in spec]
    if missing:
        raise ValueError(
            f"spec of {name!r} lacks {', '.join(map(repr, missing))}: the FLOP model needs "
            f"{', '.join(keys)}"
        )
    return [spec[k] for k in keys]


def _merging(spec, name):  # fig3, fig5: settings × λ × seeds × 2 tasks
    d, hidden, n, steps, settings, lams, seeds = _need(
        spec, name, "d", "hidden", "n", "steps", "settings", "lams", "seeds")
    return [Workload((d, *hidden, 1), n, len(settings) * len(lams) * seeds * 2, steps)]


def _fig2(spec, name):  # minibatch SGD: epochs × ⌈n/batch⌉ steps of batch_size inputs
    n, d, width, layers, freqs, batch, lams, seeds, epochs = _need(
        spec, name, "n", "d", "width", "hidden_layers", "frequencies", "batch_size",
        "lambdas", "seeds", "epochs")
    dims = (d, *[width] * layers, 1)
    return [Workload(dims, batch, len(freqs) * len(lams) * seeds, epochs * math.ceil(n / batch))]


def _fig2_replicates(spec, name):  # two fig2 runs (one per init seed) per pair
    (pairs, base) = _need(spec, name, "pairs", "base")
    return [w for _ in range(2 * len(pairs)) for w in _fig2(base, name)]


def _fig6(spec, name):  # three roles per seed and λ; inputs are two pooled 28×28 images
    pool, n, widths, lams, scales, steps, seeds = _need(
        spec, name, "pool", "n_train", "widths", "lams", "init_scales", "steps", "seeds")
    # each member trains on its own task's image columns (gd's support), half of the 2p inputs;
    # the other half of its first layer only decays
    d = (28 // pool) ** 2
    return [Workload((d, *widths, 1), n, 3 * seeds * len(lams) * len(scales), steps,
                     decay_only=d * widths[0])]


def _fig6_variants(spec, name):
    runs, base = _need(spec, name, "runs", "base")
    return [w for run in runs.values() for w in _fig6({**base, **run}, name)]


def _rules(spec, name):  # beyond-rules / beyond-lambda: settings or λ × seeds × 2 tasks
    d, hidden, n, steps, seeds = _need(spec, name, "d", "hidden", "n", "steps", "seeds")
    groups = len(spec.get("settings") or spec.get("lams") or [0])
    return [Workload((d, *hidden, 1), n, groups * seeds * 2, steps)]


def _overlap(spec, name):  # 2 nets per combo: a shallow width-m net, then the deep net
    geo, eps, seeds, n, d, m, steps_s, hidden, steps = _need(
        spec, name, "geometries", "eps", "seeds", "n", "d", "m", "steps_shallow", "hidden",
        "steps")
    nets = 2 * len(geo) * len(eps) * seeds
    return [Workload((d, m, 1), n, nets, steps_s), Workload((d, *hidden, 1), n, nets, steps)]


def _ktasks(spec, name):  # per width, k_max nets per seed on inputs of dimension p·k_max
    p, k_max, n, seeds, widths, steps = _need(
        spec, name, "p", "k_max", "n", "seeds", "widths", "steps")
    return [Workload((p * k_max, w, max(1, w // 4), 1), n, k_max * seeds, steps) for w in widths]


def _attention(spec, name):  # counted as a d→k→1 net per token, one member per λ
    n, tokens, d, k, lams, steps = _need(spec, name, "n", "tokens", "d", "k", "lams", "steps")
    return [Workload((d, 3 * k, 1), n * tokens, len(lams), steps)]


def _deep(spec, name):  # lemma1: one ensemble of seeds per depth
    d, n, width, depths, seeds, steps = _need(spec, name, "d", "n", "width", "depths", "seeds",
                                              "steps")
    return [Workload((d, *[width] * (K - 1), 1), n, seeds, steps) for K in depths]


def _lemma2(spec, name):
    d, n, width, K, seeds, runs = _need(spec, name, "d", "n", "width", "K", "seeds", "runs")
    return [Workload((d, *[width] * (K - 1), 1), n, seeds, r["steps"]) for r in runs.values()]


def _grid(spec, name):  # lemma3-grid / remark1-collapse: one tiny net per grid point
    Ks, n, d, width, steps = _need(spec, name, "Ks", "n", "d", "width", "steps")
    points = math.prod(len(spec[k]) for k in ("Hs", "lambdas", "fractions", "scales")
                       if k in spec) * int(spec.get("seeds", 1))
    return [Workload((d, *[width] * (K - 1), 1), n, points, steps) for K in Ks]


RULES: dict[str, Callable[[dict[str, Any], str], list[Workload]]] = {
    "fig2": _fig2, "fig2-replicates": _fig2_replicates, "fig3": _merging, "fig5": _merging,
    "fig6": _fig6, "fig6-init": _fig6, "fig6-init-variants": _fig6_variants,
    "beyond-rules": _rules, "beyond-lambda": _rules, "beyond-overlap": _overlap,
    "beyond-ktasks": _ktasks, "beyond-attention": _attention, "lemma1": _deep,
    "lemma2": _lemma2, "lemma3-grid": _grid, "remark1-collapse": _grid,
}


def workloads(name: str, spec: dict[str, Any]) -> list[Workload]:
    """The MLP trainings an experiment's spec asks for (its FLOP model's terms): the
    experiment's own ``workloads(spec)`` where it defines one, else its rule in ``RULES``."""
    if not isinstance(spec, dict):
        raise TypeError(f"spec must be a dict of settings, got {type(spec).__name__}")
    if name not in RULES:
        from lowrank.runner import registry

        own = getattr(registry.registry().get(name), "workloads", None)
        if own is None:
            raise ValueError(f"no FLOP model for experiment {name!r}; known: {', '.join(RULES)}"
                             " and experiments defining workloads(spec)")
        return own(spec)
    return RULES[name](spec, name)


def flops(name: str, spec: dict[str, Any]) -> float:
    """Total FLOPs of an experiment: Σ over its workloads of flops_per_step × steps."""
    return sum(w.flops for w in workloads(name, spec))


def device_seconds(name: str, spec: dict[str, Any], device: Device = H100,
                   precision: str = "fp32",
                   efficiency: dict[str, float] | None = None, memory: bool = False) -> float:
    """Predicted seconds: Σ FLOPs / (peak[precision] × efficiency of large or small matmuls);
    with ``memory``, plus the elementwise bytes / (bandwidth × memory efficiency), as those
    passes are separate kernels bound by memory, not by the matmul units."""
    if precision not in device.peak:
        raise ValueError(f"precision must be one of {sorted(device.peak)}, got {precision!r}")
    eff = {**EFFICIENCY, **(efficiency or {})}
    rate = device.peak[precision]
    total = 0.0
    for w in workloads(name, spec):
        total += w.flops / (rate * eff["large" if w.large else "small"])
        if memory:
            total += w.elementwise_bytes / (device.bandwidth * eff["memory"])
    return total


def cpu_seconds(name: str, spec: dict[str, Any], precision: str = "fp32",
                rate: dict[str, float] | None = None) -> float:
    """Predicted seconds on this CPU (one thread) at its measured batched-trainer rate."""
    rates = rate or CPU_RATE
    if precision not in rates:
        raise ValueError(f"precision must be one of {sorted(rates)}, got {precision!r}")
    return flops(name, spec) / rates[precision]


def summary(name: str, spec: dict[str, Any], device: Device = H100) -> str:
    """One line for ``python -m lowrank list``: the FLOP model's total and device minutes."""
    try:
        total = flops(name, spec)
    except ValueError:
        return "FLOP model: none for this experiment"
    fp32, tf32 = (device_seconds(name, spec, device, p) / 60 for p in ("fp32", "tf32"))
    with_memory = device_seconds(name, spec, device, "tf32", memory=True) / 60
    return (f"FLOP model: {total:.2g} FLOP; one {device.name}: {fp32:.2g} min fp32, "
            f"{tf32:.2g} min TF32 (assumed {EFFICIENCY['large']:.0%} of peak, "
            f"{EFFICIENCY['small']:.0%} when a width is below {LARGE_WIDTH}), "
            f"{with_memory:.2g} min TF32 with the elementwise passes' memory traffic")


def predictions(specs: dict[str, dict[str, Any]], device: Device = H100,
                efficiency: dict[str, float] | None = None) -> list[dict[str, Any]]:
    """One row per experiment: FLOPs, predicted device minutes in fp32 and TF32 (FLOPs only,
    and with the elementwise passes' memory traffic), CPU hours."""
    return [
        {
            "experiment": name,
            "flops": flops(name, spec),
            "fp32_min": device_seconds(name, spec, device, "fp32", efficiency) / 60,
            "tf32_min": device_seconds(name, spec, device, "tf32", efficiency) / 60,
            "tf32_with_memory_min": device_seconds(name, spec, device, "tf32", efficiency,
                                                   memory=True) / 60,
            "cpu_fp32_h": cpu_seconds(name, spec) / 3600,
        }
        for name, spec in specs.items()
    ]
