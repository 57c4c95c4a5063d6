"""Tiny checkpoints that transformers writes from a config, one per family, shared by the
tests of the checkpoint reader, the command line and chapter 6."""

from __future__ import annotations

import json

import pytest
import torch

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


def write_checkpoints(tmp_path_factory) -> dict:
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
