"""The command line: list, run and spectra."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest
from tiny_checkpoints import LAYERS, write_checkpoints

from lowrank.data import checkpoints as ckpts
from lowrank.runner import cli, registry
from lowrank.runner.cli import build_parser, main


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """family -> (folder, expected role matrices), each from its transformers config."""
    return write_checkpoints(tmp_path_factory)


def test_list_names_experiments_with_full_cost(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "fig3" in out and "fig5" in out and "full scale:" in out
    assert out.count("FLOP model:") == len(registry.registry())


def test_module_entry_point():
    proc = subprocess.run(
        [sys.executable, "-m", "lowrank", "list"], capture_output=True, text=True, check=True
    )
    assert "fig3" in proc.stdout


def test_run_writes_table_and_sidecar(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LOWRANK_RESULTS", str(tmp_path))
    assert main(["run", "fig5", "--scale", "quick", "--seeds", "1", "--device", "cpu",
                 "--set", "steps=20", "--set", "n_test=50", "--quiet"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    csv_path, json_path = tmp_path / "fig5-quick.csv", tmp_path / "fig5-quick.json"
    assert str(csv_path) in out and csv_path.exists()
    meta = json.loads(json_path.read_text())
    assert meta["spec"]["seeds"] == 1 and meta["device"] == "cpu"
    assert meta["spec"]["steps"] == 20 and meta["spec"]["n_test"] == 50
    header = csv_path.read_text().splitlines()[0]
    assert header == "setting,lam,seed,step,model,task,layer,metric,value"


def test_scale_defaults_to_the_environment(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LOWRANK_RESULTS", str(tmp_path))
    monkeypatch.setenv("LOWRANK_SCALE", "quick")
    main(["run", "fig5", "--seeds", "1", "--set", "steps=2", "--set", "n_test=10", "--quiet"])
    assert str(tmp_path / "fig5-quick.csv") in capsys.readouterr().out


def test_bad_arguments(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LOWRANK_RESULTS", str(tmp_path))
    for argv, said in ((["run", "nope"], "unknown experiment"),
                       (["run", "fig5", "--seeds", "0"], "--seeds"),
                       (["run", "fig5", "--set", "stepz=3"], "no setting"),
                       (["run", "fig5", "--set", "steps=2.5"], "--set steps")):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert said in err and len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit):
        main(["run", "fig5", "--scale", "huge"])
    with pytest.raises(SystemExit):
        main(["run", "fig5", "--set", "steps"])
    assert not list(tmp_path.iterdir())


def test_help_has_examples_on_their_own_lines_and_no_developer_notes(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "cmd_<name>" not in out and "add_<name>" not in out
    assert "\n  python -m lowrank list\n  python -m lowrank run fig3" in out


def test_subcommands_are_subparsers():
    parser = build_parser()
    args = parser.parse_args(["run", "fig3", "--scale", "full", "--device", "cuda"])
    assert (args.command, args.name, args.scale, args.device) == ("run", "fig3", "full", "cuda")
    args = parser.parse_args(["run", "fig3", "--set", "lams=[0, 0.1]", "--set", "activation=relu"])
    assert args.set == [("lams", [0, 0.1]), ("activation", "relu")]


def test_cli_writes_csv_and_figure(checkpoints, tmp_path):
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    folder, _ = checkpoints["bert"]
    parser = argparse.ArgumentParser()
    cli.add_spectra(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["spectra", str(folder), "--out", str(tmp_path), "--method", "power"])
    assert args.func(args) == 0
    csvs = list(tmp_path.glob("*-spectra.csv"))
    assert len(csvs) == 1
    lines = csvs[0].read_text().splitlines()
    assert len(lines) == 1 + LAYERS * len(ckpts.ROLES) and lines[0].startswith("model,family")
    assert len(list(tmp_path.glob("*-spectra.png"))) == 1


def test_run_takes_a_precision(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LOWRANK_RESULTS", str(tmp_path))
    assert main(["run", "fig5", "--scale", "quick", "--seeds", "1", "--device", "cpu",
                 "--set", "steps=2", "--set", "n_test=10", "--quiet",
                 "--precision", "tf32"]) == 0  # fmt: skip
    meta = json.loads((tmp_path / "fig5-quick.json").read_text())
    assert meta["precision"] == "tf32" and meta["precision_emulated"] is True
    with pytest.raises(SystemExit):
        main(["run", "fig5", "--precision", "fp16"])
    assert "--precision" in capsys.readouterr().err
