"""Reading safetensors checkpoints: naming detection and refusals."""

from __future__ import annotations

import pytest
import torch
from tiny_checkpoints import FF, HEADS, LAYERS, D, write_checkpoints

from lowrank.data import checkpoints as ckpts


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """family -> (folder, expected role matrices), each from its transformers config."""
    return write_checkpoints(tmp_path_factory)


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
