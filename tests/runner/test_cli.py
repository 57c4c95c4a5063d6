"""The command line: list, run and spectra."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest
import torch

from lowrank.data import checkpoints as ckpts
from lowrank.runner import cli
from lowrank.runner.cli import build_parser, main

D, FF, LAYERS, HEADS = 32, 64, 2, 4


def _expected(family: str, model) -> dict[tuple[int, str], torch.Tensor]:
    """Role matrices (out, in) taken straight from the model's modules."""
    out = {}
    for l in range(LAYERS):
        if family in ("bert", "roberta"):
            enc = model.encoder if family == "bert" else model.roberta.encoder
            lay = enc.layer[l]
            att = lay.attention.self
            m = {"Q": att.query.weight, "K": att.key.weight, "V": att.value.weight,
                 "O": lay.attention.output.dense.weight, "M1": lay.intermediate.dense.weight,
                 "M2": lay.output.dense.weight}
        elif family == "gpt2":
            blk = model.transformer.h[l]
            qkv = blk.attn.c_attn.weight  # Conv1D: (in, 3d)
            m = {"Q": qkv[:, :D].T, "K": qkv[:, D:2 * D].T, "V": qkv[:, 2 * D:].T,
                 "O": blk.attn.c_proj.weight.T, "M1": blk.mlp.c_fc.weight.T,
                 "M2": blk.mlp.c_proj.weight.T}
        elif family in ("phi", "phi-mixer"):
            lay = model.model.layers[l]
            a = lay.self_attn
            m = {"Q": a.q_proj.weight, "K": a.k_proj.weight, "V": a.v_proj.weight,
                 "O": a.dense.weight, "M1": lay.mlp.fc1.weight, "M2": lay.mlp.fc2.weight}
        else:  # gptj
            blk = model.transformer.h[l]
            a = blk.attn
            m = {"Q": a.q_proj.weight, "K": a.k_proj.weight, "V": a.v_proj.weight,
                 "O": a.out_proj.weight, "M1": blk.mlp.fc_in.weight, "M2": blk.mlp.fc_out.weight}
        m = {r: w.detach().clone() for r, w in m.items()}
        m["QKV"] = torch.cat([m["Q"], m["K"], m["V"]])
        out.update({(l, r): w for r, w in m.items()})
    return out


def _old_phi_names(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The original microsoft/phi-2 naming: fused mixer.Wqkv, mixer.out_proj, mlp.fc1/fc2."""
    out = {}
    for l in range(LAYERS):
        p = f"model.layers.{l}."
        out[f"transformer.h.{l}.mixer.Wqkv.weight"] = torch.cat(
            [sd[p + f"self_attn.{x}_proj.weight"] for x in "qkv"])
        out[f"transformer.h.{l}.mixer.out_proj.weight"] = sd[p + "self_attn.dense.weight"]
        out[f"transformer.h.{l}.mlp.fc1.weight"] = sd[p + "mlp.fc1.weight"]
        out[f"transformer.h.{l}.mlp.fc2.weight"] = sd[p + "mlp.fc2.weight"]
    out["transformer.embd.wte.weight"] = sd["model.embed_tokens.weight"]
    return out


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """family -> (folder, expected role matrices), each from its transformers config."""
    transformers = pytest.importorskip("transformers")
    from safetensors.torch import save_file

    t = transformers
    small = dict(vocab_size=50)
    builds = {
        "bert": (t.BertConfig(hidden_size=D, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                              intermediate_size=FF, **small), t.BertModel),
        "roberta": (t.RobertaConfig(hidden_size=D, num_hidden_layers=LAYERS,
                                    num_attention_heads=HEADS, intermediate_size=FF, **small),
                    t.RobertaForMaskedLM),
        "gpt2": (t.GPT2Config(n_embd=D, n_layer=LAYERS, n_head=HEADS, n_positions=16,
                              bos_token_id=0, eos_token_id=0, **small), t.GPT2LMHeadModel),
        "phi": (t.PhiConfig(hidden_size=D, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                            intermediate_size=FF, **small), t.PhiForCausalLM),
        "gptj": (t.GPTJConfig(n_embd=D, n_layer=LAYERS, n_head=HEADS, n_positions=16,
                              rotary_dim=4, bos_token_id=0, eos_token_id=0, **small),
                 t.GPTJForCausalLM),
    }
    made = {}
    for i, (family, (config, cls)) in enumerate(builds.items()):
        torch.manual_seed(i)
        model = cls(config).eval()
        sd = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
        folder = tmp_path_factory.mktemp(family)
        save_file(sd, str(folder / "model.safetensors"))
        (folder / "config.json").write_text(json.dumps(config.to_dict()))
        made[family] = (folder, _expected(family, model))
        if family == "phi":
            old = tmp_path_factory.mktemp("phi-mixer")
            save_file(_old_phi_names(sd), str(old / "model.safetensors"))
            made["phi-mixer"] = (old, _expected(family, model))
    return made


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
