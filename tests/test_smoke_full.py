"""Full-shape smoke tests: an experiment's full() settings for 2 steps, members cut to 2."""

from __future__ import annotations

import pytest

from lowrank.runner import cache, registry

CUTS = {
    "fig3": {"settings": ["same"], "lams": [1e-4], "seeds": 1, "steps": 2, "record_every": 1},
    "fig5": {"settings": ["same"], "lams": [1e-4], "seeds": 1, "steps": 2, "record_every": 1},
}


@pytest.mark.parametrize("name", sorted(CUTS))
def test_full_shapes_run_two_steps_and_save_a_table(name, tmp_path, monkeypatch):
    monkeypatch.setenv("LOWRANK_RESULTS", str(tmp_path))
    full = registry.get(name).spec("full")
    rows = registry.run_and_save(name, "full", "cpu", CUTS[name], show_progress=False)
    assert rows and {"step"} <= set(rows[0])
    meta = cache.load_meta(name, "full")
    assert meta["spec"]["hidden"] == full["hidden"] and meta["spec"]["n"] == full["n"]
    assert meta["rows"] == len(rows)
