"""``python -m lowrank suite``: preflight, priority order, budget, resume and the manifest,
all exercised by its --dry-run on the CPU."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from lowrank.config import using_results_dir
from lowrank.core import precision as matmul_precision
from lowrank.runner import cache, cost, registry, suite
from lowrank.runner.cli import main


def _manifest(folder):
    return json.loads((folder / suite.MANIFEST).read_text())


def _dry(folder, *extra: str) -> int:
    return main(["suite", "--dry-run", "--out", str(folder), "--quiet", *extra])


@pytest.fixture(scope="module")
def dry(tmp_path_factory):
    """One dry run of every registered experiment at emulated TF32: (folder, its output)."""
    folder = tmp_path_factory.mktemp("suite")
    assert _dry(folder, "--minutes", "10", "--precision", "tf32") == 0
    return folder


def test_the_dry_run_runs_everything_and_writes_a_manifest(dry):
    m = _manifest(dry)
    names = list(registry.registry())
    assert m["suite"]["status"] == "finished" and m["suite"]["dry_run"] is True
    assert m["suite"]["precision"] == "tf32" and m["suite"]["device"] == "cpu"
    assert m["suite"]["torch"] and m["suite"]["device_name"] and m["suite"]["scale"] == "quick"
    assert m["suite"]["order"][:4] == ["fig3", "fig5", "fig2", "fig6"]
    assert sorted(m["suite"]["order"]) == sorted(names) and list(m["experiments"]) == m[
        "suite"]["order"]
    for name in names:
        pre, entry = m["preflight"][name], m["experiments"][name]
        assert pre["status"] == "passed", (name, pre)
        assert entry["status"] == "done" and entry["wall_s"] > 0, (name, entry)
        assert entry["predicted_s"] is not None or name not in cost.RULES
        if name in cost.RULES:
            assert entry["flops"] > 0 and entry["flop_per_s"] > 0
        csv_path, json_path = dry / f"{name}-quick.csv", dry / f"{name}-quick.json"
        meta = json.loads(json_path.read_text())
        assert meta["csv_sha256"] == hashlib.sha256(csv_path.read_bytes()).hexdigest()
        assert meta["precision"] == entry["precision"]  # tf32, or the finer one it offers
        assert meta["precision_emulated"] is (entry["precision"] == "tf32")
        spec = registry.get(name)
        assert meta["spec"] == spec.smoke(spec.spec("quick"))
    for name, exp in registry.registry().items():  # tf32, or the finer one it offers
        offered = getattr(exp, "precisions", matmul_precision.PRECISIONS)
        assert m["experiments"][name]["precision"] == ("tf32" if "tf32" in offered else "fp32"
                                                       if "fp32" in offered else "fp64")
    assert not [p.name for p in dry.iterdir() if ".tmp" in p.name]


def test_a_second_run_resumes_and_skips_what_is_done(dry, capsys):
    before = {p.name: p.stat().st_mtime_ns for p in dry.glob("*.csv")}
    assert _dry(dry, "--minutes", "10", "--precision", "tf32") == 0
    m = _manifest(dry)
    assert m["preflight"] == {}
    assert all(e["status"] == "done" and e["resumed"] for e in m["experiments"].values())
    assert {p.name: p.stat().st_mtime_ns for p in dry.glob("*.csv")} == before
    assert f"{len(before)} done" in capsys.readouterr().out


def test_each_table_is_saved_the_moment_its_experiment_finishes(tmp_path):
    seen = []

    def log(message: str) -> None:
        if message.startswith("run lemma1"):
            m = _manifest(tmp_path)
            seen.append((m["experiments"]["fig3"]["status"], m["experiments"]["lemma1"]["status"],
                         (tmp_path / "fig3-quick.csv").exists()))

    suite.run_suite(tmp_path, minutes=5, dry_run=True, only=["lemma1", "fig3"], log=log)
    assert seen == [("done", "running", True)]
    assert _manifest(tmp_path)["suite"]["order"] == ["fig3", "lemma1"]


def test_a_tiny_budget_skips_with_a_reason(tmp_path, capsys):
    assert _dry(tmp_path, "--minutes", "0.0001", "--only", "fig3,lemma1") == 0
    m = _manifest(tmp_path)
    for name in ("fig3", "lemma1"):
        entry = m["experiments"][name]
        assert entry["status"] == "skipped" and "budget" in entry["reason"], entry
        assert entry["predicted_s"] > 0
    assert not list(tmp_path.glob("*.csv"))
    assert "2 skipped" in capsys.readouterr().out


def test_predictions_are_calibrated_by_what_has_run(tmp_path, monkeypatch):
    # fig3 is predicted at a microsecond and takes far longer: lemma1's second is rescaled
    raw = {"fig3": 1e-6, "lemma1": 1.0}
    monkeypatch.setattr(suite, "predicted_seconds", lambda name, *a: raw[name])
    suite.run_suite(tmp_path, minutes=0.5, dry_run=True, only=["fig3", "lemma1"],
                    log=lambda m: None)
    m = _manifest(tmp_path)["experiments"]
    assert m["fig3"]["status"] == "done" and m["fig3"]["measured_over_predicted"] > 1e3
    assert m["lemma1"]["status"] == "skipped" and m["lemma1"]["calibration"] > 1e3
    assert m["lemma1"]["predicted_calibrated_s"] > 30 and "calibrated" in m["lemma1"]["reason"]


def _shift_on_the_device(monkeypatch, name: str, column: str, raise_on: str | None = None):
    exp = registry.get(name)
    original = exp.run

    def run(spec, device, show_progress=False):
        reference = matmul_precision.active() == "fp64"
        if raise_on == ("cpu" if reference else "device"):
            raise RuntimeError("injected failure")
        rows = original(spec, device, show_progress)
        if not reference and raise_on is None:
            rows = [{**r, column: r[column] + 1.0} for r in rows]
        return rows

    monkeypatch.setattr(exp, "run", run)


def test_a_wrong_device_result_stops_the_suite_naming_experiment_and_column(
        tmp_path, monkeypatch, capsys):
    _shift_on_the_device(monkeypatch, "fig5", "value")
    assert _dry(tmp_path, "--minutes", "5", "--precision", "fp32", "--only", "fig3,fig5") == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'fig5'" in err and "column 'value'" in err
    m = _manifest(tmp_path)
    assert m["suite"]["status"] == "preflight failed"
    assert m["preflight"]["fig3"]["status"] == "passed"
    assert m["preflight"]["fig5"]["status"] == "failed"
    assert all(e["status"] == "pending" for e in m["experiments"].values())
    assert not list(tmp_path.glob("*.csv"))  # fig3 passed, but nothing long was run


def test_a_device_error_stops_the_suite_and_a_reference_error_fails_one(
        tmp_path, monkeypatch, capsys):
    _shift_on_the_device(monkeypatch, "fig5", "value", raise_on="device")
    assert _dry(tmp_path / "a", "--minutes", "5", "--only", "fig5", "--precision", "fp32") == 1
    err = capsys.readouterr().err
    assert "'fig5', column '(run)'" in err and "injected failure" in err
    _shift_on_the_device(monkeypatch, "lemma1", "sigma", raise_on="cpu")
    assert _dry(tmp_path / "b", "--minutes", "5", "--only", "lemma1,lemma2",
                "--precision", "fp32") == 0
    m = _manifest(tmp_path / "b")["experiments"]
    assert m["lemma1"]["status"] == "failed" and "injected failure" in m["lemma1"]["reason"]
    assert m["lemma2"]["status"] == "done"


@pytest.mark.parametrize("argv, said", [
    (["--minutes", "-1"], "--minutes"),
    (["--minutes", "nan"], "--minutes"),
    (["--only", "nope"], "--only"),
    (["--exclude", "fig3", "--only", "fig3"], "no experiment left"),
])
def test_bad_input_is_one_line_and_exit_2(argv, said, tmp_path, capsys):
    assert main(["suite", "--dry-run", "--out", str(tmp_path / "o"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert said in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_a_bad_precision_or_an_out_onto_a_file_is_one_line_and_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["suite", "--dry-run", "--precision", "fp16", "--out", str(tmp_path)])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "--precision" in err and len(err.splitlines()) == 1
    target = tmp_path / "file"
    target.write_text("x")
    assert main(["suite", "--dry-run", "--out", str(target)]) == 2
    err = capsys.readouterr().err.strip()
    assert "existing file" in err and len(err.splitlines()) == 1


def test_core_and_suite_import_without_pandas_matplotlib_or_seaborn():
    code = textwrap.dedent("""
        import importlib.abc, sys
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name.split(".")[0] in ("pandas", "matplotlib", "seaborn", "scipy"):
                    raise ImportError("blocked " + name)
        sys.meta_path.insert(0, Block())
        import lowrank.core, lowrank.runner.suite, lowrank.runner.cli
        lowrank.runner.cli.build_parser()
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_suite_order_puts_the_paper_figures_first():
    assert suite.suite_order(["lemma1", "fig6", "beyond-x", "fig3", "fig2"]) == [
        "fig3", "fig2", "fig6", "beyond-x", "lemma1"]


def test_invalid_reason_says_why_a_stored_table_does_not_count(tmp_path):
    with using_results_dir(tmp_path):
        assert cache.invalid_reason("t", "quick", {}, source_sha256="x").startswith("no table")
        cache.save_result([{"a": 1}], "t", "quick", {"n": 1}, 0.1, "cpu", source_sha256="x")
        assert cache.invalid_reason("t", "quick", {"n": 1}, source_sha256="x") is None
        assert "spec differs" in cache.invalid_reason("t", "quick", {"n": 2}, source_sha256="x")
        assert "precision" in cache.invalid_reason("t", "quick", {"n": 1}, source_sha256="x",
                                                   precisions=("tf32",))
        assert "other lowrank sources" in cache.invalid_reason("t", "quick", {"n": 1},
                                                               source_sha256="y")
    assert cache.paths("t", "quick")[0].parent != tmp_path  # the override ends with the block


def test_a_killed_suite_leaves_a_manifest_saying_so(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(textwrap.dedent("""
        import time
        from lowrank.runner import registry
        exp = registry.get("lemma1")
        original, calls = exp.run, []

        def run(spec, device, show_progress=False):
            calls.append(1)
            if len(calls) > 2:  # after the two preflight runs: the long run hangs
                time.sleep(120)
            return original(spec, device, show_progress)

        exp.run = run
    """))
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(site)}
    proc = subprocess.Popen([sys.executable, "-m", "lowrank", "suite", "--dry-run", "--quiet",
                             "--minutes", "5", "--only", "lemma1", "--out", str(out)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if _manifest(out)["experiments"]["lemma1"]["status"] == "running":
                break
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out_text, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "terminated" in err, (err, out_text)
    m = _manifest(out)
    assert m["suite"]["status"] == "interrupted (Terminated)" and m["suite"]["finished"]
    assert m["experiments"]["lemma1"]["status"] == "interrupted"
