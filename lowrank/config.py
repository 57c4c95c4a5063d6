"""Device, precision and scale choices, each overridable from the environment."""

from __future__ import annotations

import os

import torch

SCALES = ("quick", "full")


def default_device() -> torch.device:
    """The device experiments run on: ``LOWRANK_DEVICE`` if set, else cuda when available."""
    name = os.environ.get("LOWRANK_DEVICE")
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
    chosen = value if value is not None else os.environ.get("LOWRANK_SCALE", "quick")
    if chosen not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {chosen!r} (check LOWRANK_SCALE)")
    return chosen
