"""The experiment registry and the runner that consults the cache."""

from __future__ import annotations

import pytest
import torch

from lowrank.runner import registry
from lowrank.runner.experiment import Experiment


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("LOWRANK_RESULTS", str(tmp_path))
    return tmp_path


class Counting(Experiment):
    """A tiny experiment that counts its runs."""

    name = "toy-test"
    description = "a toy"
    full_cost = "instant"

    def __init__(self):
        self.runs = 0

    def quick(self):
        return {"n": 3, "seed": 0}

    def full(self):
        return {"n": 5, "seed": 0}

    def run(self, spec, device, show_progress=False):
        self.runs += 1
        g = torch.Generator().manual_seed(spec["seed"])
        return [{"i": i, "value": torch.rand(1, generator=g).item()} for i in range(spec["n"])]


@pytest.fixture
def toy():
    exp = registry.register(Counting())
    yield exp
    registry.unregister(exp.name)


def test_load_or_run_uses_the_cache(store, toy):
    first = registry.load_or_run("toy-test", scale="quick", device="cpu")
    second = registry.load_or_run("toy-test", scale="quick", device="cpu")
    assert toy.runs == 1
    assert first.value.tolist() == second.value.tolist()
    registry.run_and_save("toy-test", scale="full", device="cpu")
    assert toy.runs == 2
    with pytest.warns(UserWarning, match="spec differs"):
        registry.load_or_run("toy-test", scale="quick", device="cpu", overrides={"n": 4})
    assert toy.runs == 3


def test_unknown_experiment_names_the_known_ones(toy):
    with pytest.raises(ValueError, match="unknown experiment 'nope'.*toy-test"):
        registry.get("nope")


PAPER_EXPERIMENTS = {"fig2", "fig3", "fig5", "fig6", "fig6-init", "beyond-overlap", "beyond-ktasks",
                     "beyond-rules", "beyond-lambda", "beyond-attention"}


def test_the_registry_finds_every_chapter_experiment_by_itself():
    found = registry.registry()
    assert PAPER_EXPERIMENTS | {"lemma1", "lemma2", "lemma3-grid", "remark1-collapse",
                                "fig2-replicates", "fig6-init-variants"} <= set(found)
    for name, exp in found.items():
        assert exp.name == name and exp.module.startswith("lowrank.chapters."), name
        assert exp.spec("quick") == exp.quick() and exp.spec("full") == exp.full()


def test_two_experiments_with_one_name_are_refused():
    registry.registry()

    class Impostor(Counting):
        name = "fig3"

    with pytest.raises(ValueError, match="two experiments are named 'fig3'"):
        registry.register(Impostor())
    assert registry.get("fig3").module == "lowrank.chapters.ch10_merging_experiments"


def test_spec_copies_and_refuses_an_unknown_scale():
    exp = Counting()
    spec = exp.spec("quick")
    spec["n"] = 99
    assert exp.spec("quick") == {"n": 3, "seed": 0}
    with pytest.raises(ValueError, match="scale must be one of"):
        exp.spec("huge")


def test_a_missing_full_table_without_cuda_names_the_command(store, toy, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(registry.FullScaleTableMissing, match="python -m lowrank run toy-test"):
        registry.load_or_run("toy-test", "full")
    assert toy.runs == 0  # refused at once, nothing computed
    assert len(registry.load_or_run("toy-test", "quick")) == 3  # quick scale still computes
    assert toy.runs == 1
    registry.run_and_save("toy-test", "full")  # a stored full table is then read back
    assert len(registry.load_or_run("toy-test", "full")) == 5
    assert toy.runs == 2


def test_a_missing_full_table_with_cuda_is_computed(store, toy, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert len(registry.load_or_run("toy-test", "full", device="cpu")) == 5
    assert toy.runs == 1


def test_provenance_reads_each_tables_sidecar(store, toy):
    registry.run_and_save("toy-test", scale="quick", device="cpu", precision="tf32")
    rows = {r["experiment"]: r for r in registry.provenance("quick")}
    toy_row = rows["toy-test"]
    assert toy_row["stored"] and toy_row["precision"] == "tf32" and toy_row["emulated"] is True
    assert toy_row["rows"] == 3 and toy_row["date"]
    assert rows["fig3"]["chapter"] == "ch10" and rows["fig3"]["stored"] is False


def test_an_experiment_refuses_a_precision_it_does_not_offer(store, toy, monkeypatch):
    monkeypatch.setattr(type(toy), "precisions", ("fp64", "fp32"))
    with pytest.raises(ValueError, match="does not offer precision 'tf32'.*fp64, fp32"):
        registry.run_and_save("toy-test", scale="quick", device="cpu", precision="tf32")
    registry.run_and_save("toy-test", scale="quick", device="cpu", precision="fp32")
    assert registry.stored_precision("toy-test", "quick") == "fp32"
    assert registry.get("beyond-overlap").precisions == ("fp64", "fp32")


def test_a_suite_wide_precision_falls_back_to_a_finer_offered_one(store, toy, monkeypatch):
    monkeypatch.setattr(type(toy), "precisions", ("fp64", "fp32"))
    monkeypatch.setenv("LOWRANK_PRECISION", "bf16")
    with pytest.warns(UserWarning, match="toy-test does not offer bf16; running it at fp32"):
        registry.run_and_save("toy-test", scale="quick", device="cpu")
    assert registry.stored_precision("toy-test", "quick") == "fp32"


def test_a_spec_pinning_float32_is_recorded_as_fp32_not_the_cpu_default(store, toy, monkeypatch):
    monkeypatch.delenv("LOWRANK_PRECISION", raising=False)
    monkeypatch.setattr(type(toy), "quick", lambda self: {"n": 3, "seed": 0, "dtype": "float32"})
    registry.run_and_save("toy-test", scale="quick", device="cpu")  # default fp64: silent
    assert registry.stored_precision("toy-test", "quick") == "fp32"
    assert registry.load_or_run("toy-test", scale="quick", device="cpu") is not None
    assert toy.runs == 1  # the stored fp32 table is the one a default load asks for
    with pytest.raises(ValueError, match="does not offer precision 'fp64'"):
        registry.run_and_save("toy-test", scale="quick", device="cpu", precision="fp64")
