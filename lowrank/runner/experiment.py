"""The one experiment type: a named run of a chapter, its settings at two scales.

A chapter module defines a subclass with ``name``, ``description``, ``full_cost`` (a
human estimate), ``quick()`` (JSON-able settings small enough for a 2-core CPU, used by
CI) and ``full()`` (the paper's settings), and ``run(spec, device, show_progress)``
returning tidy rows; one module-level instance is all the registry needs to find it.

``smoke(spec)`` cuts a spec to a few steps at the same widths, n and input dimension, with
one seed and each sweep cut to its first and last entries, by generic rules on the spec's
keys (:data:`SMOKE_STEPS`, :data:`SWEEP_KEYS`, ...): a GPU run's shape, dtype and device
bugs show in seconds on the CPU. An experiment whose spec these rules cannot cut overrides
:meth:`Experiment.smoke`.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from lowrank.config import SCALES
from lowrank.core.precision import PRECISIONS

#: steps (and ``steps_*``) of a smoke spec; epochs become SMOKE_EPOCHS, record_every at most
#: SMOKE_STEPS (so every run records its first and last step)
SMOKE_STEPS = 2
SMOKE_EPOCHS = 1
#: counts of independent repetitions (members of the ensemble): cut to SMOKE_SEEDS
SEED_KEYS = ("seeds",)
SMOKE_SEEDS = 1
#: sweeps, lists or dicts whose entries are separate settings: cut to their first and last
#: entries, as is any ``*_lams`` key. Not here, so kept whole: shapes (d, n, hidden, width(s),
#: k_max, tokens, pool), lists of what is recorded (metrics), and lists indexed by another
#: setting (lemma3-grid's init_scale, one per H).
SWEEP_KEYS = ("lams", "lambdas", "eps", "ks", "Ks", "Hs", "depths", "fractions", "scales",
              "init_scales", "frequencies", "settings", "geometries", "pairs", "runs", "rhos")
#: settings that hold a whole spec (fig2-replicates' and fig6-init-variants' base), and
#: sweeps whose entries are partial specs (runs): cut by the same rules
NESTED_KEYS = ("base", "runs")


def _first_and_last(value: Any) -> Any:
    if isinstance(value, dict) and len(value) > 2:
        keys = list(value)
        return {k: value[k] for k in (keys[0], keys[-1])}
    if isinstance(value, list) and len(value) > 2:
        return [value[0], value[-1]]
    return value


def smoke_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """``spec`` cut to SMOKE_STEPS steps (or SMOKE_EPOCHS epochs), SMOKE_SEEDS seeds and each
    sweep of SWEEP_KEYS to its first and last entries; every other setting kept as it is."""
    out: dict[str, Any] = {}
    for key, value in spec.items():
        if key in SWEEP_KEYS or key.endswith(("_lams", "_lambdas")):
            value = _first_and_last(value)
        if key in NESTED_KEYS and isinstance(value, dict):
            if all(isinstance(v, dict) for v in value.values()):  # a sweep of partial specs
                value = {k: smoke_spec(v) for k, v in value.items()}
            else:
                value = smoke_spec(value)
        elif _counts_steps(key) and isinstance(value, int):
            value = min(value, SMOKE_STEPS)
        elif key == "epochs" and isinstance(value, int):
            value = min(value, SMOKE_EPOCHS)
        elif key in SEED_KEYS and isinstance(value, int):
            value = min(value, SMOKE_SEEDS)
        out[key] = value
    if isinstance(out.get("record_every"), int):
        out["record_every"] = max(1, min(out["record_every"], SMOKE_STEPS))
    return out


def _counts_steps(key: str) -> bool:
    return key == "steps" or key.startswith("steps_")


class Experiment:
    """A named experiment (a chapter's run): its spec at both scales and how to run it."""

    name: str = ""
    description: str = ""
    full_cost: str = ""
    #: the matmul precisions its checks allow (a subclass narrows it where rounding matters)
    precisions: tuple[str, ...] = PRECISIONS

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

    def smoke(self, spec: dict[str, Any]) -> dict[str, Any]:
        """``spec`` cut to its first steps at the same shapes (see :func:`smoke_spec`): what
        the full-shape smoke tests and the suite's preflight run. Override where the generic
        rules do not fit the experiment's spec."""
        return smoke_spec(copy.deepcopy(spec))

    def run(
        self, spec: dict[str, Any], device: torch.device, show_progress: bool = False
    ) -> list[dict[str, Any]]:
        """Run at ``spec`` on ``device`` and return one dict per row of the tidy table."""
        raise NotImplementedError

    @property
    def module(self) -> str:
        """The module that defines the experiment (what its cache key hashes)."""
        return type(self).__module__
