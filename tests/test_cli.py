"""The command line: ``python -m lowrank list`` and ``run``."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from lowrank.__main__ import build_parser, main


def test_list_names_experiments_with_full_cost(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "fig3" in out and "fig5" in out and "full scale:" in out


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


def test_bad_arguments(tmp_path, monkeypatch):
    monkeypatch.setenv("LOWRANK_RESULTS", str(tmp_path))
    with pytest.raises(SystemExit, match="unknown experiment"):
        main(["run", "nope"])
    with pytest.raises(SystemExit, match="--seeds"):
        main(["run", "fig5", "--seeds", "0"])
    with pytest.raises(SystemExit):
        main(["run", "fig5", "--scale", "huge"])
    with pytest.raises(SystemExit, match="no setting"):
        main(["run", "fig5", "--set", "stepz=3"])
    with pytest.raises(SystemExit):
        main(["run", "fig5", "--set", "steps"])
    assert not list(tmp_path.iterdir())


def test_subcommands_are_subparsers():
    parser = build_parser()
    args = parser.parse_args(["run", "fig3", "--scale", "full", "--device", "cuda"])
    assert (args.command, args.name, args.scale, args.device) == ("run", "fig3", "full", "cuda")
    args = parser.parse_args(["run", "fig3", "--set", "lams=[0, 0.1]", "--set", "activation=relu"])
    assert args.set == [("lams", [0, 0.1]), ("activation", "relu")]
