"""The results cache and the experiment runner."""

import json
from dataclasses import dataclass

import pytest
import torch

from lowrank import experiments, results


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("LOWRANK_RESULTS", str(tmp_path))
    return tmp_path


@dataclass
class Counting:
    """A tiny experiment that counts its runs."""

    name: str = "toy-test"
    description: str = "a toy"
    full_cost: str = "instant"
    runs: int = 0

    def spec(self, scale):
        return {"n": 3 if scale == "quick" else 5, "seed": 0}

    def run(self, spec, device, show_progress):
        self.runs += 1
        g = torch.Generator().manual_seed(spec["seed"])
        return [{"i": i, "value": torch.rand(1, generator=g).item()} for i in range(spec["n"])]


@pytest.fixture
def toy():
    exp = experiments.register(Counting())
    yield exp
    experiments._REGISTRY.pop(exp.name)


def test_save_and_load_round_trip(store):
    rows = [{"a": 1, "b": 0.5}, {"a": 2, "b": 0.25}]
    path = results.save_result(rows, "rt", "quick", {"x": 1}, 1.5, "cpu")
    assert path.exists() and not list(store.glob("*.tmp"))
    meta = results.load_meta("rt", "quick")
    assert meta["spec"] == {"x": 1} and meta["device"] == "cpu" and meta["rows"] == 2
    assert {"torch", "date", "wall_time_s", "csv_sha256", "tf32_matmul"} <= set(meta)
    frame = results.load_result("rt", "quick", {"x": 1})
    assert frame.b.tolist() == [0.5, 0.25]


def test_mismatched_spec_is_reported_and_ignored(store):
    results.save_result([{"a": 1}], "sp", "quick", {"x": 1}, 0.1, "cpu")
    with pytest.warns(UserWarning, match="spec differs"):
        assert results.load_result("sp", "quick", {"x": 2}) is None


def test_corrupt_csv_is_reported_and_ignored(store):
    csv_path = results.save_result([{"a": 1}], "co", "quick", {"x": 1}, 0.1, "cpu")
    csv_path.write_text("a\n999\n")
    with pytest.warns(UserWarning, match="SHA-256"):
        assert results.load_result("co", "quick", {"x": 1}) is None


def test_unreadable_sidecar_is_reported(store):
    results.save_result([{"a": 1}], "js", "quick", {"x": 1}, 0.1, "cpu")
    (store / "js-quick.json").write_text("{not json")
    with pytest.warns(UserWarning, match="unreadable"):
        assert results.load_result("js", "quick", {"x": 1}) is None


def test_quick_result_from_other_sources_is_recomputed(store):
    results.save_result([{"a": 1}], "src", "quick", {"x": 1}, 0.1, "cpu")
    meta_path = store / "src-quick.json"
    meta = json.loads(meta_path.read_text())
    meta["source_sha256"] = "0" * 64
    meta_path.write_text(json.dumps(meta))
    with pytest.warns(UserWarning, match="other lowrank sources"):
        assert results.load_result("src", "quick", {"x": 1}) is None


def test_full_result_survives_source_changes(store):
    results.save_result([{"a": 1}], "fu", "full", {"x": 1}, 0.1, "cpu")
    meta_path = store / "fu-full.json"
    meta = json.loads(meta_path.read_text())
    meta["source_sha256"] = "0" * 64
    meta_path.write_text(json.dumps(meta))
    assert results.load_result("fu", "full", {"x": 1}) is not None


def test_empty_rows_refused(store):
    with pytest.raises(ValueError, match="rows must be a non-empty"):
        results.save_result([], "e", "quick", {}, 0.0, "cpu")


def test_load_or_run_uses_the_cache(store, toy):
    first = experiments.load_or_run("toy-test", scale="quick", device="cpu")
    second = experiments.load_or_run("toy-test", scale="quick", device="cpu")
    assert toy.runs == 1
    assert first.value.tolist() == second.value.tolist()
    experiments.load_or_run("toy-test", scale="full", device="cpu")
    assert toy.runs == 2
    with pytest.warns(UserWarning, match="spec differs"):
        experiments.load_or_run("toy-test", scale="quick", device="cpu", overrides={"n": 4})
    assert toy.runs == 3


def test_unknown_experiment_names_the_known_ones(toy):
    with pytest.raises(ValueError, match="unknown experiment 'nope'.*toy-test"):
        experiments.get("nope")


def test_results_are_world_readable(store):
    path = results.save_result([{"a": 1}], "perm", "quick", {}, 0.0, "cpu")
    assert path.stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("sidecar", [b"\xff\xfe{garbage", b"[1, 2, 3]", b"null"])
def test_corrupt_sidecar_of_any_kind_is_reported_not_raised(store, sidecar):
    # bad UTF-8 raised UnicodeDecodeError, a JSON list or null raised AttributeError
    results.save_result([{"a": 1}], "bad", "quick", {"x": 1}, 0.1, "cpu")
    (store / "bad-quick.json").write_bytes(sidecar)
    with pytest.warns(UserWarning, match="unreadable"):
        assert results.load_result("bad", "quick", {"x": 1}) is None
