"""A BERT encoder (all-MiniLM-L6-v2) written in torch from its safetensors weights.

Embeddings (word + position + token type 0, LayerNorm), post-LayerNorm layers of
multi-head self-attention and an exact-GELU FFN, mean pooling over the tokens; no
attention mask (every sentence of a task has the same length). The weights of the
fine-tuned layers may carry a leading ensemble dimension E, so one call runs E
fine-tuned copies (tasks × λ × optimisers) on their own inputs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import torch

from lowrank.data.checkpoints import minilm_checkpoint

#: the six linear maps of a layer by chapter 6's role names, and their tensor names
ROLE_NAMES = {
    "Q": "attention.self.query", "K": "attention.self.key", "V": "attention.self.value",
    "O": "attention.output.dense", "M1": "intermediate.dense", "M2": "output.dense",
}  # fmt: skip
LAYER_ROLES = tuple(ROLE_NAMES)


def load_minilm(dtype: torch.dtype = torch.float32, folder: Path | None = None) -> dict:
    """Every tensor of the checkpoint (name → tensor in ``dtype``) and its config."""
    from safetensors.torch import load_file

    folder = folder or minilm_checkpoint()
    tensors = load_file(str(folder / "model.safetensors"))
    weights = {k: v.to(dtype) for k, v in tensors.items() if k != "embeddings.position_ids"}
    config = json.loads((folder / "config.json").read_text())
    return {"weights": weights, "config": config}


def layer_params(weights: dict, layer: int) -> dict[str, torch.Tensor]:
    """One layer's tensors: role weights ``Q…M2``, biases ``bQ…bM2``, LayerNorms ``ln1, ln2``."""
    pre = f"encoder.layer.{layer}."
    out = {}
    for role, name in ROLE_NAMES.items():
        out[role] = weights[pre + name + ".weight"]
        out["b" + role] = weights[pre + name + ".bias"]
    for key, name in (("ln1", "attention.output.LayerNorm"), ("ln2", "output.LayerNorm")):
        out[key + "w"] = weights[pre + name + ".weight"]
        out[key + "b"] = weights[pre + name + ".bias"]
    return out


def _ln(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, eps: float) -> torch.Tensor:
    return torch.nn.functional.layer_norm(x, x.shape[-1:], w, b, eps)


def embed(tokens: torch.Tensor, weights: dict, eps: float = 1e-12) -> torch.Tensor:
    """BERT's embeddings: LN(word + position + token type 0), (n, L) → (n, L, d)."""
    n_tok = tokens.shape[-1]
    x = (weights["embeddings.word_embeddings.weight"][tokens]
         + weights["embeddings.position_embeddings.weight"][:n_tok]
         + weights["embeddings.token_type_embeddings.weight"][0])
    return _ln(x, weights["embeddings.LayerNorm.weight"], weights["embeddings.LayerNorm.bias"], eps)


def _linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """x W^T + b; W of shape (out, in) or (E, out, in) with x of shape (E, …, in)."""
    if w.ndim == 2:
        return x @ w.T + b
    lead = x.shape[1:-1]
    flat = x.reshape(x.shape[0], -1, x.shape[-1])
    return (flat @ w.transpose(-1, -2)).reshape(x.shape[0], *lead, w.shape[-2]) + b


Hook = Callable[[str, torch.Tensor], None]


def bert_layer(
    x: torch.Tensor, p: dict, heads: int, eps: float = 1e-12, hook: Hook | None = None
) -> torch.Tensor:
    """One post-LN BERT layer: h = LN(x + O·attn(x)), out = LN(h + M2·gelu(M1·h)).

    ``hook(name, tensor)`` sees the inputs ('in', 'ffn_in') and the Q, K, V
    pre-activations ('Q', 'K', 'V') as they are computed.
    """
    if hook is not None:
        hook("in", x)
    q, k, v = (_linear(x, p[r], p["b" + r]) for r in ("Q", "K", "V"))
    if hook is not None:
        for name, t in (("Q", q), ("K", k), ("V", v)):
            hook(name, t)
    *lead, n_tok, d = q.shape
    dh = d // heads

    def split(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(*lead, n_tok, heads, dh).transpose(-2, -3)

    scores = split(q) @ split(k).transpose(-1, -2) / math.sqrt(dh)
    ctx = (scores.softmax(dim=-1) @ split(v)).transpose(-2, -3).reshape(*lead, n_tok, d)
    h = _ln(x + _linear(ctx, p["O"], p["bO"]), p["ln1w"], p["ln1b"], eps)
    if hook is not None:
        hook("ffn_in", h)
    ff = _linear(torch.nn.functional.gelu(_linear(h, p["M1"], p["bM1"])), p["M2"], p["bM2"])
    return _ln(h + ff, p["ln2w"], p["ln2b"], eps)


def encode(
    tokens: torch.Tensor | None, model: dict, layers: range | None = None,
    x: torch.Tensor | None = None, overrides: dict[int, dict] | None = None,
    hook: Callable[[int, str, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """Hidden states after ``layers`` (default all), from the embeddings or from ``x``.

    ``overrides[layer]`` replaces some of that layer's tensors (fine-tuned weights).
    """
    cfg, weights = model["config"], model["weights"]
    eps, heads = cfg["layer_norm_eps"], cfg["num_attention_heads"]
    layers = range(cfg["num_hidden_layers"]) if layers is None else layers
    h = embed(tokens, weights, eps) if x is None else x
    for layer in layers:
        p = {**layer_params(weights, layer), **(overrides or {}).get(layer, {})}
        lh = None if hook is None else (lambda name, t, _l=layer: hook(_l, name, t))
        h = bert_layer(h, p, heads, eps, lh)
    return h


def mean_pool(h: torch.Tensor) -> torch.Tensor:
    """Sentence-transformers' mean pooling over the tokens (no padding here)."""
    return h.mean(dim=-2)
