"""The FLOP model of the experiments and its device predictions."""

from __future__ import annotations

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
    assert cost.workloads("fig6", spec) == [cost.Workload((784, 1000, 100, 1), 1000, 120, 100_000)]
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
