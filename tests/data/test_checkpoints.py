"""Reading safetensors checkpoints: naming detection and refusals."""

from __future__ import annotations

import json

import pytest
import torch

from lowrank.data import checkpoints as ckpts

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


def test_unknown_architecture_lists_the_names(tmp_path):
    from safetensors.torch import save_file

    save_file({"blocks.0.attn.W_Q": torch.ones(2, 2), "blocks.0.mlp.W_in": torch.ones(2, 2)},
              str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match=r"unknown architecture.*blocks\.0\.attn\.W_Q"):
        ckpts.Checkpoint(tmp_path)


def test_incomplete_layer_is_not_recognised(checkpoints, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    folder, _ = checkpoints["bert"]
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        sd = {k: f.get_tensor(k) for k in f.keys() if "layer.1.attention.self.key" not in k}
    save_file(sd, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match="unknown architecture"):
        ckpts.Checkpoint(tmp_path)


def test_unknown_architecture_closes_the_memory_maps(tmp_path, monkeypatch):
    import safetensors
    from safetensors.torch import save_file

    save_file({"blocks.0.attn.W_Q": torch.ones(2, 2)}, str(tmp_path / "model.safetensors"))
    real, exits = safetensors.safe_open, []

    class Spy:
        def __init__(self, *args, **kwargs):
            self.inner = real(*args, **kwargs)

        def __enter__(self):
            return self.inner.__enter__()

        def __exit__(self, *exc):
            exits.append(True)
            return self.inner.__exit__(*exc)

    monkeypatch.setattr(safetensors, "safe_open", Spy)
    with pytest.raises(ValueError, match="unknown architecture"):
        ckpts.Checkpoint(tmp_path)
    assert exits == [True]


GATED = ("llama", "mistral", "qwen2")


@pytest.fixture(scope="module")
def gated(tmp_path_factory):
    """Tiny Llama, Mistral and Qwen2 checkpoints (grouped-query attention), one sharded."""
    t = pytest.importorskip("transformers")
    common = dict(vocab_size=50, hidden_size=D, intermediate_size=FF, num_hidden_layers=LAYERS,
                  num_attention_heads=HEADS, num_key_value_heads=2)
    configs = {"llama": (t.LlamaConfig, t.LlamaForCausalLM),
               "mistral": (t.MistralConfig, t.MistralForCausalLM),
               "qwen2": (t.Qwen2Config, t.Qwen2ForCausalLM)}
    made = {}
    for i, (family, (cfg, cls)) in enumerate(configs.items()):
        torch.manual_seed(10 + i)
        model = cls(cfg(**common)).eval()
        folder = tmp_path_factory.mktemp(family)
        shard = "20KB" if family == "mistral" else "50MB"
        model.save_pretrained(folder, safe_serialization=True, max_shard_size=shard)
        made[family] = (folder, model)
    return made


@pytest.mark.parametrize("family", GATED)
def test_gated_families_map_roles(gated, family):
    folder, model = gated[family]
    with ckpts.Checkpoint(folder) as ck:
        assert ck.naming.family == "llama" and ck.roles == ckpts.ALL_ROLES
        assert ck.layers == list(range(LAYERS))
        if family == "mistral":
            assert len(ck.files) > 1  # sharded through model.safetensors.index.json
        for layer in ck.layers:
            mats = ck.layer_matrices(layer)
            a, m = model.model.layers[layer].self_attn, model.model.layers[layer].mlp
            want = {"Q": a.q_proj, "K": a.k_proj, "V": a.v_proj, "O": a.o_proj,
                    "G": m.gate_proj, "M1": m.up_proj, "M2": m.down_proj}
            for role, lin in want.items():
                assert torch.equal(mats[role], lin.weight.detach().to(torch.float64)), role
            assert mats["K"].shape == (D // 2, D) and mats["Q"].shape == (D, D)  # GQA
            assert mats["QKV"].shape == (D + 2 * (D // 2), D)
            assert ck.role_shapes(layer)["G"] == (FF, D)


def test_corrupt_safetensors_is_named(tmp_path):
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
    with pytest.raises(ValueError, match="model.safetensors: not a readable"):
        ckpts.Checkpoint(tmp_path)
