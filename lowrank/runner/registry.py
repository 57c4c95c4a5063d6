"""The experiment registry, which finds the chapters' experiments by itself, and the runner.

On first use the registry imports every module of :mod:`lowrank.chapters` and registers each
module-level :class:`~lowrank.runner.experiment.Experiment` instance defined there: a new
chapter's experiment exists as soon as its module does, with no list to keep.
"""

from __future__ import annotations

import importlib
import pkgutil
import time
import warnings
from typing import Any

import torch

from lowrank.config import default_device, precision_is_default
from lowrank.config import precision as resolve_precision
from lowrank.config import scale as resolve_scale
from lowrank.core import precision as matmul_precision
from lowrank.runner import cache
from lowrank.runner.experiment import Experiment

_REGISTRY: dict[str, Experiment] = {}
_DISCOVERED: list[bool] = []


class FullScaleTableMissing(RuntimeError):
    """A full-scale table is asked for on a machine without CUDA and no valid one is stored."""

    def __init__(self, name: str):
        csv_path, _ = cache.paths(name, "full")
        super().__init__(
            f"no valid full-scale table for {name!r} at {csv_path}, and this machine has no "
            f"GPU: computing it here would take hours. Produce it on a GPU with "
            f"`python -m lowrank run {name} --scale full` (or the whole suite with "
            f"`python -m lowrank suite --scale full`) and copy results/{name}-full.csv and "
            f"its .json sidecar here, or build at quick scale (LOWRANK_SCALE=quick)"
        )
        self.name = name


def offered_precision(exp: Experiment, precision: str, strict: bool = True,
                      spec: dict[str, Any] | None = None, announce: bool = True) -> str:
    """``precision`` if ``exp`` offers it (its ``precisions``; never fp64 when
    its ``spec`` pins ``dtype: float32``). Otherwise, asked for explicitly (``strict``), a
    ValueError naming the ones it offers: a check whose tolerance is rounding only cannot be run
    coarser; asked for by ``LOWRANK_PRECISION``, a suite-wide setting or the device's default,
    the coarsest offered precision finer than it (else its first), with a notice if
    ``announce``."""
    offered = tuple(exp.precisions)
    if (spec or {}).get("dtype") == "float32":
        offered = tuple(p for p in offered if p != "fp64")  # it trains in float32 regardless
    if precision in offered:
        return precision
    if strict:
        raise ValueError(
            f"experiment {exp.name!r} does not offer precision {precision!r}; it offers "
            f"{', '.join(offered)} (its checks need that rounding, or its spec pins the dtype)"
        )
    order = matmul_precision.PRECISIONS  # finest first
    finer = [p for p in order[: order.index(precision)] if p in offered]
    chosen = finer[-1] if finer else offered[0]
    if announce:
        warnings.warn(f"{exp.name} does not offer {precision}; running it at {chosen}",
                      cache.Notice, stacklevel=3)
    return chosen


def stored_precision(name: str, scale: str | None = None) -> str:
    """The precision the stored table of ``name`` at ``scale`` was computed at (its sidecar)."""
    meta = cache.load_meta(name, resolve_scale(scale))
    if meta is None or "precision" not in meta:
        raise ValueError(f"no stored table with a recorded precision for {name!r}")
    return meta["precision"]


def register(exp: Experiment) -> Experiment:
    """Add an experiment under its name (for tests and ad-hoc runs; chapters need not call it)."""
    known = _REGISTRY.get(exp.name)
    if known is not None and known is not exp:
        raise ValueError(
            f"two experiments are named {exp.name!r}: {known.module} and {exp.module}"
        )
    _REGISTRY[exp.name] = exp
    return exp


def unregister(name: str) -> None:
    """Remove a registered experiment (what :func:`register` added)."""
    _REGISTRY.pop(name, None)


def _discover() -> None:
    """Register every Experiment instance defined at module level in lowrank/chapters."""
    if _DISCOVERED:
        return
    import lowrank.chapters

    for info in sorted(pkgutil.iter_modules(lowrank.chapters.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"lowrank.chapters.{info.name}")
        for obj in vars(module).values():
            if isinstance(obj, Experiment) and type(obj).__module__ == module.__name__:
                register(obj)
    _DISCOVERED.append(True)


def registry() -> dict[str, Experiment]:
    """Every experiment, by name: the chapters' (discovered) and any registered by hand."""
    _discover()
    return dict(sorted(_REGISTRY.items()))


def get(name: str) -> Experiment:
    """One experiment by name, with the known names in the error."""
    reg = registry()
    if name not in reg:
        raise ValueError(f"unknown experiment {name!r}; known: {', '.join(reg) or 'none'}")
    return reg[name]


def _resolve(name: str, scale: str | None, overrides: dict[str, Any] | None,
             precision: str | None, device) -> tuple[Experiment, str, dict[str, Any], str]:
    """The experiment, scale, spec (with ``overrides``) and the precision it runs at: an
    explicit ``precision`` strictly, else the configured one as offered (with a notice)."""
    exp = get(name)
    sc = resolve_scale(scale)
    spec = {**exp.spec(sc), **(overrides or {})}
    prec = offered_precision(exp, resolve_precision(precision, device),
                             strict=precision is not None, spec=spec,
                             announce=not precision_is_default())
    return exp, sc, spec, prec


def run_and_save(
    name: str,
    scale: str | None = None,
    device: torch.device | str | None = None,
    overrides: dict[str, Any] | None = None,
    show_progress: bool = True,
    precision: str | None = None,
) -> list[dict[str, Any]]:
    """Run an experiment now at ``precision`` and store its table atomically; returns the rows."""
    dev = torch.device(device) if device is not None else default_device()
    exp, sc, spec, prec = _resolve(name, scale, overrides, precision, dev)
    start = time.perf_counter()
    with matmul_precision.using(prec, dev):
        rows = exp.run(spec, dev, show_progress)
        emulated = matmul_precision.emulated()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    cache.save_result(rows, name, sc, spec, time.perf_counter() - start, str(dev),
                      source_sha256=cache.source_hash(exp.module),
                      precision=prec, emulated=emulated and prec in ("tf32", "bf16"))
    return rows


def load_or_run(
    name: str,
    scale: str | None = None,
    device: torch.device | str | None = None,
    overrides: dict[str, Any] | None = None,
    show_progress: bool = False,
    precision: str | None = None,
):
    """The experiment's table as a DataFrame: from the cache when valid, else computed.

    A stored table counts only at the precision asked for (``LOWRANK_PRECISION`` by default);
    a full-scale table also counts at fp32/tf32/bf16 when fp64 (the CPU's default) is asked
    for, since full scale is a GPU's. At full scale without CUDA a missing table raises
    :class:`FullScaleTableMissing` at once.
    """
    import pandas as pd

    exp, sc, spec, prec = _resolve(name, scale, overrides, precision, device)
    explicit = precision is not None or not precision_is_default()
    accept = (prec,) if sc == "quick" or explicit else matmul_precision.PRECISIONS
    cached = cache.load_result(name, sc, spec, source_sha256=cache.source_hash(exp.module),
                               precisions=accept)
    if cached is not None:
        return cached
    if sc == "full" and not torch.cuda.is_available():
        raise FullScaleTableMissing(name)
    return pd.DataFrame(run_and_save(name, sc, device, overrides, show_progress, prec))


def provenance(scale: str | None = None) -> list[dict[str, Any]]:
    """Where each experiment's stored table at ``scale`` came from, read from its sidecar:
    chapter, device, precision, date, wall time and rows (blank where no table is stored)."""
    sc = resolve_scale(scale)
    rows = []
    for name, exp in registry().items():
        meta = cache.load_meta(name, sc) or {}
        chapter = exp.module.rsplit(".", 1)[-1].split("_", 1)[0]
        rows.append({
            "experiment": name, "chapter": chapter, "scale": sc,
            "stored": bool(meta), "device": meta.get("device_name", ""),
            "precision": meta.get("precision", ""),
            "emulated": meta.get("precision_emulated", ""),
            "date": meta.get("date", ""), "wall time (s)": meta.get("wall_time_s", ""),
            "rows": meta.get("rows", ""),
        })
    return rows
