"""Full-shape smoke tests: every experiment's full() settings cut by its smoke() (a few steps,
one seed, sweeps cut to two entries, the same widths, n and input dimension) run on the CPU,
give a table with the columns of the quick table and write a sidecar.

So a GPU run cannot fail on a shape, dtype or device bug that a CPU could have shown.
"""

from __future__ import annotations

import pytest
import torch

from lowrank.core import precision as matmul_precision
from lowrank.runner import cache, cost, registry
from lowrank.runner.experiment import SMOKE_STEPS, SWEEP_KEYS, Experiment

NAMES = sorted(registry.registry())
# settings smoke() may cut (steps, epochs, records, seeds, sweeps); every other one is a shape
CUT = {"steps", "steps_shallow", "epochs", "record_every", "seeds", "base", "runs"}


def _columns(rows):
    return list(dict.fromkeys(k for r in rows for k in r))


def _shapes_kept(full: dict, smoke: dict, name: str) -> None:
    for key, value in full.items():
        if key in CUT or key in SWEEP_KEYS or key.endswith(("_lams", "_lambdas")):
            continue
        assert smoke[key] == value, (name, key)


@pytest.mark.parametrize("name", NAMES)
def test_full_shapes_run_a_few_steps_and_save_a_table(name, tmp_path, monkeypatch):
    monkeypatch.setenv("LOWRANK_RESULTS", str(tmp_path))
    monkeypatch.delenv("LOWRANK_PRECISION", raising=False)
    exp = registry.get(name)
    full = exp.spec("full")
    smoke = exp.smoke(full)
    assert set(smoke) == set(full), name
    if type(exp).smoke is Experiment.smoke:  # the generic rules keep every shape
        _shapes_kept(full, smoke, name)
    if "steps" in smoke:
        assert smoke["steps"] <= SMOKE_STEPS, name
    rows = registry.run_and_save(name, "full", "cpu", smoke, show_progress=False)
    assert rows
    meta = cache.load_meta(name, "full")
    assert meta["spec"] == smoke and meta["rows"] == len(rows) and meta["device"] == "cpu"
    if name in ("fig3", "fig5"):  # the two original cases' assertions, kept
        assert {"step"} <= set(rows[0])
        assert meta["spec"]["hidden"] == full["hidden"] and meta["spec"]["n"] == full["n"]
    # the schema: the columns the quick table has (its smoke run, in float64)
    with matmul_precision.using("fp64", "cpu"):
        quick_rows = exp.run(exp.smoke(exp.spec("quick")), torch.device("cpu"), False)
    assert _columns(rows) == _columns(quick_rows), name
    if name in cost.RULES:  # the cut is a real cut: far fewer FLOPs than the full run
        assert cost.flops(name, smoke) <= cost.flops(name, full) / 10, name


def test_smoke_cuts_steps_seeds_and_sweeps_but_no_shape():
    from lowrank.runner.experiment import smoke_spec

    spec = {"d": 100, "hidden": [1000, 100], "n": 1000, "steps": 100_000, "record_every": 1000,
            "seeds": 10, "lams": [0.0, 1e-5, 1e-4, 1e-3], "settings": ["a", "b"],
            "adam_lams": [0.0, 0.1, 1.0], "epochs": 50, "steps_shallow": 7,
            "runs": {"x": {"steps": 9, "lam": 1.0}, "y": {"steps": 9}, "z": {"steps": 5}},
            "base": {"steps": 30, "seeds": 4, "widths": [1000, 100, 10]},
            "widths": [64, 256, 1000], "metrics": ["loss", "stable_rank", "error"]}
    out = smoke_spec(spec)
    assert out["steps"] == SMOKE_STEPS and out["steps_shallow"] == SMOKE_STEPS
    assert out["record_every"] == SMOKE_STEPS and out["epochs"] == 1 and out["seeds"] == 1
    assert out["lams"] == [0.0, 1e-3] and out["settings"] == ["a", "b"]
    assert out["adam_lams"] == [0.0, 1.0]
    assert out["runs"] == {"x": {"steps": 2, "lam": 1.0}, "z": {"steps": 2}}
    assert out["base"] == {"steps": 2, "seeds": 1, "widths": [1000, 100, 10]}
    for key in ("d", "hidden", "n", "widths", "metrics"):
        assert out[key] == spec[key]
    assert spec["steps"] == 100_000  # the input is not changed
