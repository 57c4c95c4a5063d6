"""Every environment variable the package reads, each read here only, with one behaviour.

An empty value means unset for every ``LOWRANK_`` variable. ``ENVIRONMENT`` lists them.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

SCALES = ("quick", "full")
CHECKOUT = Path(__file__).resolve().parent.parent
DEFAULT_RESULTS_DIR = CHECKOUT / "results"
DEFAULT_DATA_DIR = CHECKOUT.parent / "shared" / "data" / "fashion-mnist"
ENVIRONMENT = {
    "LOWRANK_SCALE": "quick (default) or full",
    "LOWRANK_DEVICE": "a torch device; default cuda when available, else cpu",
    "LOWRANK_RESULTS": "folder of result tables; default <checkout>/results",
    "LOWRANK_DATA": "folder of the Fashion-MNIST IDX files; "
    "default ../shared/data/fashion-mnist beside the checkout",
    "HF_HUB_CACHE / HF_HOME / XDG_CACHE_HOME": "where cached Hugging Face checkpoints are found",
}


def _env(name: str) -> str | None:
    """The variable's value, None when it is unset or empty."""
    return os.environ.get(name) or None


def default_device() -> torch.device:
    """The device experiments run on: ``LOWRANK_DEVICE`` if set, else cuda when available."""
    name = _env("LOWRANK_DEVICE")
    if name:
        try:
            return torch.device(name)
        except RuntimeError as exc:
            raise ValueError(
                f"LOWRANK_DEVICE must name a torch device such as 'cpu' or 'cuda:0', got {name!r}"
            ) from exc
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(device: torch.device | str | None = None) -> torch.dtype:
    """float64 on the CPU (theory checks), float32 on a GPU (experiments)."""
    dev = torch.device(device) if device is not None else default_device()
    return torch.float64 if dev.type == "cpu" else torch.float32


def scale(value: str | None = None) -> str:
    """The experiment scale: ``value``, else ``LOWRANK_SCALE``, else ``quick``."""
    chosen = value if value is not None else (_env("LOWRANK_SCALE") or "quick")
    if chosen not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {chosen!r} (check LOWRANK_SCALE)")
    return chosen


def results_dir() -> Path:
    """``LOWRANK_RESULTS`` if set, else ``results/`` in the checkout."""
    env = _env("LOWRANK_RESULTS")
    return Path(env) if env else DEFAULT_RESULTS_DIR


def data_dir() -> Path:
    """``LOWRANK_DATA`` if set, else ``../shared/data/fashion-mnist`` beside the checkout."""
    env = _env("LOWRANK_DATA")
    return Path(env) if env else DEFAULT_DATA_DIR


def data_dir_is_default() -> bool:
    """True when ``LOWRANK_DATA`` is unset, so :func:`data_dir` fell back to the default."""
    return _env("LOWRANK_DATA") is None


def hf_cache_roots() -> list[Path]:
    """Where cached Hugging Face checkpoints live: HF_HUB_CACHE, HF_HOME/hub, XDG cache."""
    roots = []
    if _env("HF_HUB_CACHE"):
        roots.append(Path(os.environ["HF_HUB_CACHE"]))
    if _env("HF_HOME"):
        roots.append(Path(os.environ["HF_HOME"]) / "hub")
    xdg = _env("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    roots.append(Path(xdg) / "huggingface" / "hub")
    return roots
