"""The results cache: round trips, corruption, source keys, atomic writes."""

from __future__ import annotations

import importlib
import json

import pytest

from lowrank.runner import cache


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("LOWRANK_RESULTS", str(tmp_path))
    return tmp_path


def test_save_and_load_round_trip(store):
    rows = [{"a": 1, "b": 0.5}, {"a": 2, "b": 0.25}]
    path = cache.save_result(rows, "rt", "quick", {"x": 1}, 1.5, "cpu", source_sha256="s")
    assert path.exists() and not list(store.glob("*.tmp"))
    meta = cache.load_meta("rt", "quick")
    assert meta["spec"] == {"x": 1} and meta["device"] == "cpu" and meta["rows"] == 2
    assert {"torch", "date", "wall_time_s", "csv_sha256", "precision"} <= set(meta)
    frame = cache.load_result("rt", "quick", {"x": 1}, source_sha256="s")
    assert frame.b.tolist() == [0.5, 0.25]


def test_mismatched_spec_is_reported_and_ignored(store):
    cache.save_result([{"a": 1}], "sp", "quick", {"x": 1}, 0.1, "cpu", source_sha256="s")
    with pytest.warns(UserWarning, match="spec differs"):
        assert cache.load_result("sp", "quick", {"x": 2}, source_sha256="s") is None


def test_corrupt_csv_is_reported_and_ignored(store):
    csv_path = cache.save_result([{"a": 1}], "co", "quick", {"x": 1}, 0.1, "cpu", source_sha256="s")
    csv_path.write_text("a\n999\n")
    with pytest.warns(UserWarning, match="SHA-256"):
        assert cache.load_result("co", "quick", {"x": 1}, source_sha256="s") is None


def test_unreadable_sidecar_is_reported(store):
    cache.save_result([{"a": 1}], "js", "quick", {"x": 1}, 0.1, "cpu", source_sha256="s")
    (store / "js-quick.json").write_text("{not json")
    with pytest.warns(UserWarning, match="unreadable"):
        assert cache.load_result("js", "quick", {"x": 1}, source_sha256="s") is None


def test_quick_result_from_other_sources_is_recomputed(store):
    cache.save_result([{"a": 1}], "src", "quick", {"x": 1}, 0.1, "cpu", source_sha256="s")
    meta_path = store / "src-quick.json"
    meta = json.loads(meta_path.read_text())
    meta["source_sha256"] = "0" * 64
    meta_path.write_text(json.dumps(meta))
    with pytest.warns(UserWarning, match="other lowrank sources"):
        assert cache.load_result("src", "quick", {"x": 1}, source_sha256="s") is None


def test_full_result_survives_source_changes(store):
    cache.save_result([{"a": 1}], "fu", "full", {"x": 1}, 0.1, "cpu", source_sha256="s")
    meta_path = store / "fu-full.json"
    meta = json.loads(meta_path.read_text())
    meta["source_sha256"] = "0" * 64
    meta_path.write_text(json.dumps(meta))
    assert cache.load_result("fu", "full", {"x": 1}, source_sha256="s") is not None


def test_empty_rows_refused(store):
    with pytest.raises(ValueError, match="rows must be a non-empty"):
        cache.save_result([], "e", "quick", {}, 0.0, "cpu", source_sha256="s")


def test_results_are_world_readable(store):
    path = cache.save_result([{"a": 1}], "perm", "quick", {}, 0.0, "cpu", source_sha256="s")
    assert path.stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("sidecar", [b"\xff\xfe{garbage", b"[1, 2, 3]", b"null"])
def test_corrupt_sidecar_of_any_kind_is_reported_not_raised(store, sidecar):
    # bad UTF-8 raised UnicodeDecodeError, a JSON list or null raised AttributeError
    cache.save_result([{"a": 1}], "bad", "quick", {"x": 1}, 0.1, "cpu", source_sha256="s")
    (store / "bad-quick.json").write_bytes(sidecar)
    with pytest.warns(UserWarning, match="unreadable"):
        assert cache.load_result("bad", "quick", {"x": 1}, source_sha256="s") is None


def test_write_csv_is_atomic_and_refuses_empty_rows(tmp_path):
    path = tmp_path / "out" / "m-spectra.csv"
    cache.write_csv([{"a": 1, "b": 2.5}], path)
    assert path.read_text().splitlines() == ["a,b", "1,2.5"]
    # a row the header cannot hold fails the write: the old table stays, no temp file is left
    with pytest.raises(ValueError):
        cache.write_csv([{"a": 1}, {"a": 2, "extra": 3}], path)
    assert path.read_text().splitlines() == ["a,b", "1,2.5"]
    assert sorted(p.name for p in path.parent.iterdir()) == ["m-spectra.csv"]
    with pytest.raises(ValueError, match="rows must be a non-empty"):
        cache.write_csv([], path)


def _names(module):
    return {str(p.relative_to(cache.PACKAGE)) for p in cache.source_files(module)}


def test_the_cache_key_covers_core_the_module_and_what_it_imports():
    importlib.import_module("lowrank.chapters.ch12_beyond_rules")
    rules = _names("lowrank.chapters.ch12_beyond_rules")
    assert {"core/engine.py", "core/models.py", "chapters/ch12_beyond_rules.py",
            "chapters/ch10_merging_experiments.py", "chapters/ch12_beyond.py",
            "data/synthetic.py", "config.py"} <= rules
    fig3 = _names("lowrank.chapters.ch10_merging_experiments")
    assert "chapters/ch10_merging_experiments.py" in fig3
    assert not {"chapters/ch11_fashion_mnist.py", "chapters/ch12_beyond_rules.py"} & fig3
    assert cache.source_hash("lowrank.chapters.ch10_merging_experiments") != cache.source_hash(
        "lowrank.chapters.ch11_fashion_mnist"
    )


def test_table_counts_only_at_its_precision(store):
    cache.save_result([{"a": 1}], "pr", "quick", {"x": 1}, 0.1, "cpu", source_sha256="s",
                      precision="tf32", emulated=True)
    assert cache.load_meta("pr", "quick")["precision_emulated"] is True
    with pytest.warns(UserWarning, match="precision 'tf32'"):
        assert cache.load_result("pr", "quick", {"x": 1}, source_sha256="s") is None
    assert cache.load_result("pr", "quick", {"x": 1}, source_sha256="s",
                             precisions=("tf32",)) is not None
