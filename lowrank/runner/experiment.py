"""The one experiment type: a named run of a chapter, its settings at two scales.

A chapter module defines a subclass with ``name``, ``description``, ``full_cost`` (a
human estimate), ``quick()`` (JSON-able settings small enough for a 2-core CPU, used by
CI) and ``full()`` (the paper's settings), and ``run(spec, device, show_progress)``
returning tidy rows; one module-level instance is all the registry needs to find it.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from lowrank.config import SCALES


class Experiment:
    """A named experiment (a chapter's run): its spec at both scales and how to run it."""

    name: str = ""
    description: str = ""
    full_cost: str = ""

    def quick(self) -> dict[str, Any]:
        """The settings at quick scale: minutes on a 2-core CPU (CI and the default book)."""
        raise NotImplementedError

    def full(self) -> dict[str, Any]:
        """The paper's settings (a GPU for the large runs)."""
        raise NotImplementedError

    def spec(self, scale: str) -> dict[str, Any]:
        """A copy of the JSON-able settings at ``scale`` (``quick`` or ``full``)."""
        if scale not in SCALES:
            raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
        return copy.deepcopy(self.quick() if scale == "quick" else self.full())

    def run(
        self, spec: dict[str, Any], device: torch.device, show_progress: bool = False
    ) -> list[dict[str, Any]]:
        """Run at ``spec`` on ``device`` and return one dict per row of the tidy table."""
        raise NotImplementedError

    @property
    def module(self) -> str:
        """The module that defines the experiment (what its cache key hashes)."""
        return type(self).__module__
