"""The experiment registry and the runner that consults the results cache.

An experiment is an object with ``name``, ``description``, ``full_cost`` (a human
estimate), ``spec(scale) -> dict`` (JSON-able hyperparameters; ``quick`` for CI,
``full`` for the paper's settings) and ``run(spec, device, show_progress) ->
list[dict]`` (tidy rows). Modules that define experiments are listed in
``EXPERIMENT_MODULES`` and register themselves on import.
"""

from __future__ import annotations

import importlib
import time
from typing import Any, Protocol

import torch

from lowrank import results
from lowrank.config import default_device
from lowrank.config import scale as resolve_scale

EXPERIMENT_MODULES: list[str] = [
    "lowrank.merging",
    "lowrank.fashion",
    "lowrank.figure2",
    "lowrank.beyond",
]

_REGISTRY: dict[str, Experiment] = {}


class Experiment(Protocol):
    """What the runner and the command line need of an experiment."""

    name: str
    description: str
    full_cost: str

    def spec(self, scale: str) -> dict[str, Any]: ...

    def run(
        self, spec: dict[str, Any], device: torch.device, show_progress: bool
    ) -> list[dict[str, Any]]: ...


class ScaledExperiment:
    """An experiment given by a quick and a full spec table; subclasses define ``run``."""

    def __init__(
        self,
        name: str,
        description: str,
        full_cost: str,
        quick: dict[str, Any],
        full: dict[str, Any],
    ):
        self.name, self.description, self.full_cost = name, description, full_cost
        self._specs = {"quick": quick, "full": full}

    def spec(self, scale: str) -> dict[str, Any]:
        """The JSON-able hyperparameters at ``scale`` (``quick`` or ``full``)."""
        if scale not in self._specs:
            raise ValueError(f"scale must be one of {tuple(self._specs)}, got {scale!r}")
        return dict(self._specs[scale])


def register(exp: Experiment) -> Experiment:
    """Add an experiment to the registry under its name."""
    _REGISTRY[exp.name] = exp
    return exp


def registry() -> dict[str, Experiment]:
    """Every registered experiment, importing the modules that define them."""
    for mod in EXPERIMENT_MODULES:
        importlib.import_module(mod)
    return dict(sorted(_REGISTRY.items()))


def get(name: str) -> Experiment:
    """One experiment by name, with the known names in the error."""
    reg = registry()
    if name not in reg:
        raise ValueError(f"unknown experiment {name!r}; known: {', '.join(reg) or 'none'}")
    return reg[name]


def run_and_save(
    name: str,
    scale: str | None = None,
    device: torch.device | str | None = None,
    overrides: dict[str, Any] | None = None,
    show_progress: bool = True,
) -> list[dict[str, Any]]:
    """Run an experiment now and store its table atomically; returns the rows."""
    exp = get(name)
    sc = resolve_scale(scale)
    spec = {**exp.spec(sc), **(overrides or {})}
    dev = torch.device(device) if device is not None else default_device()
    start = time.perf_counter()
    rows = exp.run(spec, dev, show_progress)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    results.save_result(rows, name, sc, spec, time.perf_counter() - start, str(dev))
    return rows


def load_or_run(
    name: str,
    scale: str | None = None,
    device: torch.device | str | None = None,
    overrides: dict[str, Any] | None = None,
    show_progress: bool = False,
):
    """The experiment's table as a DataFrame: from the cache when valid, else computed."""
    import pandas as pd

    exp = get(name)
    sc = resolve_scale(scale)
    spec = {**exp.spec(sc), **(overrides or {})}
    cached = results.load_result(name, sc, spec)
    if cached is not None:
        return cached
    return pd.DataFrame(run_and_save(name, sc, device, overrides, show_progress))
