"""Every environment variable the package reads, each read here only, with one behaviour.

An empty value means unset for every ``LOWRANK_`` variable. ``ENVIRONMENT`` lists them.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator
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
    "LOWRANK_PRECISION": "fp64, fp32, tf32 or bf16 matmul inputs; default fp64 on the CPU, "
    "fp32 on a GPU (tf32/bf16 are emulated on the CPU)",
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
    """The experiments' dtype: float64 at precision fp64, float32 at the others; with no
    precision in force, float64 on the CPU (theory checks) and float32 on a GPU."""
    from lowrank.core.precision import training_dtype

    return training_dtype(torch.device(device) if device is not None else default_device())


def precision(value: str | None = None, device: torch.device | str | None = None) -> str:
    """The matmul precision: ``value``, else ``LOWRANK_PRECISION``, else fp64 on the CPU and
    fp32 on a GPU (see :mod:`lowrank.core.precision`)."""
    from lowrank.core.precision import PRECISIONS

    chosen = value if value is not None else _env("LOWRANK_PRECISION")
    if chosen is None:
        dev = torch.device(device) if device is not None else default_device()
        return "fp64" if dev.type == "cpu" else "fp32"
    if chosen not in PRECISIONS:
        raise ValueError(
            f"precision must be one of {PRECISIONS}, got {chosen!r} (check LOWRANK_PRECISION)"
        )
    return chosen


def scale(value: str | None = None) -> str:
    """The experiment scale: ``value``, else ``LOWRANK_SCALE``, else ``quick``."""
    chosen = value if value is not None else (_env("LOWRANK_SCALE") or "quick")
    if chosen not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {chosen!r} (check LOWRANK_SCALE)")
    return chosen


def precision_is_default() -> bool:
    """True when ``LOWRANK_PRECISION`` is unset, so :func:`precision` chose by device."""
    return _env("LOWRANK_PRECISION") is None


_RESULTS_OVERRIDE: contextvars.ContextVar[Path | None] = contextvars.ContextVar(
    "lowrank_results_dir", default=None
)


def results_dir() -> Path:
    """The folder set by :func:`using_results_dir`, else ``LOWRANK_RESULTS`` if set, else
    ``results/`` in the checkout."""
    override = _RESULTS_OVERRIDE.get()
    if override is not None:
        return override
    env = _env("LOWRANK_RESULTS")
    return Path(env) if env else DEFAULT_RESULTS_DIR


@contextlib.contextmanager
def using_results_dir(folder: Path | str) -> Iterator[Path]:
    """Store and look up result tables in ``folder`` inside the block (the suite's --out)."""
    token = _RESULTS_OVERRIDE.set(Path(folder))
    try:
        yield Path(folder)
    finally:
        _RESULTS_OVERRIDE.reset(token)


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
