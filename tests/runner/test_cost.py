"""The FLOP model of the experiments and its device predictions."""

from __future__ import annotations

import math

import pytest

from lowrank.runner import cost
from lowrank.runner.registry import registry

TINY = {"d": 2, "hidden": [3], "n": 5, "steps": 7, "settings": ["same"], "lams": [0.0],
        "seeds": 1}


def test_a_tiny_merging_spec_has_the_hand_counted_flops():
    # 2 members, dims 2-3-1: macs 2·3 + 3·1 = 9; step 2n(3·9 − 2·3) = 10·21 = 210 per member
    assert cost.flops("fig3", TINY) == 2 * 210 * 7
    ws = cost.workloads("fig3", TINY)
    assert ws == [cost.Workload((2, 3, 1), 5, 2, 7)]
    assert not ws[0].large


def test_device_seconds_divide_by_peak_times_efficiency():
    eff = {"small": 0.25}
    s = cost.device_seconds("fig3", TINY, cost.H100, "tf32", eff)
    assert s == pytest.approx(2 * 210 * 7 / (495e12 * 0.25), rel=1e-12)
    assert cost.cpu_seconds("fig3", TINY, rate={"fp32": 10.0}) == pytest.approx(294.0)


def test_a_spec_missing_widths_is_refused_naming_the_key():
    bad = {k: v for k, v in TINY.items() if k != "hidden"}
    with pytest.raises(ValueError, match="'hidden'"):
        cost.flops("fig3", bad)
    with pytest.raises(ValueError, match="no FLOP model"):
        cost.flops("nope", TINY)
    with pytest.raises(ValueError, match="precision"):
        cost.device_seconds("fig3", TINY, precision="fp8")


def test_every_registered_experiment_has_a_model_at_both_scales():
    for name, exp in registry().items():
        if name in cost.RULES:
            for scale in ("quick", "full"):
                assert cost.flops(name, exp.spec(scale)) > 0
    # fig3 at full scale: 160 nets 100-1000-100-1, n = 1000, 1e5 steps (≈ 1.6e16 FLOP)
    assert cost.flops("fig3", registry()["fig3"].spec("full")) == pytest.approx(1.6e16, rel=0.01)


def test_fig6_counts_each_members_own_784_columns_not_the_padded_1568():
    # the trainer multiplies by W1's columns on the member's support (engine.gd's support)
    from lowrank.core.models import flops_per_step

    spec = registry()["fig6"].spec("full")
    assert cost.workloads("fig6", spec) == [
        cost.Workload((784, 1000, 100, 1), 1000, 120, 100_000, decay_only=784_000)]
    assert cost.flops("fig6", spec) == flops_per_step((784, 1000, 100, 1), 1000, 120) * 100_000


def test_the_list_line_is_the_flop_model():
    spec = registry()["fig3"].spec("full")
    line = cost.summary("fig3", spec)
    minutes = cost.device_seconds("fig3", spec, cost.H100, "tf32") / 60
    assert line.startswith("FLOP model: 1.6e+16 FLOP") and f"{minutes:.2g} min TF32" in line
    assert cost.summary("nope", {}) == "FLOP model: none for this experiment"


def test_every_registered_experiment_has_a_flop_model():
    """A chapter's experiment needs a rule in RULES or its own workloads(spec)."""
    from lowrank.runner import registry

    for name, exp in registry.registry().items():
        assert cost.flops(name, exp.spec("full")) > 0, name


def test_an_experiments_own_workloads_are_used():
    from lowrank.runner import registry

    spec = registry.get("ta-minilm").spec("full")
    (w,) = cost.workloads("ta-minilm", spec)
    assert w.dims[0] == 384 and len(w.dims) == 2 * 6 + 2 and w.steps == spec["steps"]


def _elementwise_bytes_per_step(dims, members, n, support=False):
    """Bytes the profiler sees one GD step's elementwise operators read and write, on the GPU's
    path: each top-level non-matmul operator's tensor inputs, plus its output (in place: the
    first input again)."""
    from unittest import mock

    import torch
    from torch.profiler import ProfilerActivity, profile

    from lowrank.core import engine, layouts
    from lowrank.core.models import init_mlp

    skip = {"aten::bmm", "aten::mm", "aten::matmul",  # the matmuls, and views (no traffic):
            "aten::transpose", "aten::squeeze", "aten::unsqueeze", "aten::view", "aten::select",
            "aten::reshape", "aten::expand", "aten::detach", "aten::slice", "aten::mT"}

    def measured(steps):
        gen = torch.Generator().manual_seed(0)
        width = 2 * dims[0] if support else dims[0]
        x = torch.zeros(members, n, width)
        x[..., : dims[0]] = torch.randn(members, n, dims[0], generator=gen)
        y = torch.where(torch.randn(members, n, generator=gen) > 0, 1.0, -1.0)
        w = init_mlp([width, *dims[1:]], members=members, seed=0, dtype=torch.float32)
        kw = {"support": torch.arange(dims[0])} if support else {}
        with (mock.patch.object(engine, "syncs_are_cheap", lambda device: False),
              mock.patch.object(layouts, "cpu_layouts", lambda device: False),
              profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof):
            engine.gd(w, x, y, torch.linspace(0, 1e-2, members), 0.5, steps, backward=True,
                      record_every=10**9, **kw)
        total = 0
        for e in prof.events():
            parent = e.cpu_parent
            if (not e.name.startswith("aten::") or e.name in skip
                    or (parent is not None and parent.name.startswith("aten::"))):
                continue
            sizes = [math.prod(s) for s in e.input_shapes if isinstance(s, list) and s]
            if sizes:
                total += 4 * (sum(sizes) + (sizes[0] if e.name.endswith("_") else max(sizes)))
        return total

    return (measured(12) - measured(2)) / 10  # setup and the last forward pass cancel


@pytest.mark.parametrize(("dims", "members", "n", "support"),
                         [((8, 32, 16, 1), 3, 24, False), ((6, 40, 1), 2, 30, False),
                          ((8, 32, 16, 1), 2, 24, True)])
def test_the_memory_model_counts_the_bytes_the_profiler_sees(dims, members, n, support):
    decay_only = dims[0] * dims[1] if support else 0
    model = cost.Workload(dims, n, members, 1, decay_only).elementwise_bytes_per_step()
    assert _elementwise_bytes_per_step(dims, members, n, support) == pytest.approx(model, rel=0.02)


def test_memory_adds_the_elementwise_bytes_at_the_devices_bandwidth():
    spec = registry()["fig3"].spec("full")
    (w,) = cost.workloads("fig3", spec)
    plain = cost.device_seconds("fig3", spec, cost.H200, "tf32")
    both = cost.device_seconds("fig3", spec, cost.H200, "tf32", memory=True)
    assert both - plain == pytest.approx(w.elementwise_bytes / (4.8e12 * 0.8), rel=1e-12)


def test_one_pass_fewer_per_weight_is_caught(monkeypatch):
    measured = _elementwise_bytes_per_step((8, 32, 16, 1), 3, 24)
    monkeypatch.setattr(cost, "WEIGHT_PASSES", cost.WEIGHT_PASSES - 1)
    wrong = cost.Workload((8, 32, 16, 1), 24, 3, 1).elementwise_bytes_per_step()
    assert measured != pytest.approx(wrong, rel=0.02)
