"""The suite's preflight: an experiment's smoke run on a device against the CPU in float64.

The smoke spec (:meth:`~lowrank.runner.experiment.Experiment.smoke`: a few steps at the full
shapes) runs on the device at the chosen precision and on the CPU at precision fp64, with
any ``dtype`` setting made float64. The two tables must have the same rows and columns,
equal labels (integers, booleans, text) and floats within ``TOLERANCE[precision]`` × the
column's scale (:func:`compare_rows`). An error on the device, or a mismatch, is a
:class:`PreflightError` naming the experiment, the column and the error.
"""

from __future__ import annotations

import math
import numbers
import time
from fractions import Fraction
from typing import Any

import torch

from lowrank.core import precision as matmul_precision

#: preflight: |device − CPU float64| ≤ TOLERANCE × max(column scale, SCALE_FLOOR), the
#: scale being the column's largest magnitude in the CPU float64 table; the floor keeps a
#: column of roundoff-level values (a residual that is 0 in exact arithmetic) from failing
TOLERANCE = {"fp64": 1e-9, "fp32": 1e-3, "tf32": 1e-2, "bf16": 5e-2}
SCALE_FLOOR = 1e-3
#: a float column whose reference values are all fractions k/N in [0, 1], N in this range
#: (error rates), has a scale of at least 1 and may differ by FLIPS more samples: at decision
#: boundaries a change of precision flips samples, more of them the fewer there are
QUANTUM_DENOMINATORS = (10, 100_000)
FLIPS = 2


class PreflightError(RuntimeError):
    """The device's smoke run disagrees with the CPU float64 one, or fails."""

    def __init__(self, experiment: str, column: str, error: str):
        super().__init__(f"preflight failed for {experiment!r}, column {column!r}: {error}")
        self.experiment, self.column, self.error = experiment, column, error


def reference_spec(spec: Any) -> Any:
    """``spec`` with every ``dtype`` setting (nested ones too) made float64."""
    if isinstance(spec, dict):
        return {k: "float64" if k == "dtype" else reference_spec(v) for k, v in spec.items()}
    return spec


def _is_float(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, numbers.Integral | bool)


def _float(v: Any) -> float | None:
    return None if v is None else float(v)


def quantum(values: list[float]) -> float:
    """1/N when every value lies in [0, 1] and is a fraction k/N with QUANTUM_DENOMINATORS[0]
    ≤ N ≤ QUANTUM_DENOMINATORS[1] (N the least common denominator): an error rate over N
    samples. Else 0."""
    lo, hi = QUANTUM_DENOMINATORS
    lcm = 1
    for v in values:
        if not 0.0 <= v <= 1.0:
            return 0.0
        frac = Fraction(v).limit_denominator(hi)
        if abs(float(frac) - v) > 1e-12:
            return 0.0
        lcm = math.lcm(lcm, frac.denominator)
        if lcm > hi:
            return 0.0
    return 1.0 / lcm if lcm >= lo else 0.0


def compare_rows(reference: list[dict], rows: list[dict], precision: str) -> dict[str, Any]:
    """Compare a device table to its CPU float64 reference, column by column.

    Integer, boolean and text columns (labels) must be equal; a float column may differ by
    ``TOLERANCE[precision]`` × its scale, the largest magnitude of the reference in it (at
    least SCALE_FLOOR); for fractions k/N (:func:`quantum`) the scale is at least 1, plus
    FLIPS × 1/N. Returns ``ok`` and the worst column's ``column``,
    ``row``, ``error`` and ``tolerance`` (with a ``message`` when not ok).
    """
    rtol = TOLERANCE[precision]
    if len(rows) != len(reference):
        return {"ok": False, "column": "(rows)",
                "message": f"{len(rows)} rows, the CPU reference has {len(reference)}"}
    for i, (a, b) in enumerate(zip(rows, reference, strict=True)):
        if list(a) != list(b):
            return {"ok": False, "column": "(columns)",
                    "message": f"row {i} has columns {list(a)}, the CPU reference {list(b)}"}
    cols = list(dict.fromkeys(k for r in reference for k in r))
    floats = [c for c in cols if any(_is_float(r.get(c)) for r in reference + rows)
              and all(isinstance(r[c], numbers.Real) or r[c] is None
                      for r in reference + rows if c in r)]
    labels = [c for c in cols if c not in floats]
    for c in labels:
        for i, (a, b) in enumerate(zip(rows, reference, strict=True)):
            if a.get(c) != b.get(c):
                return {"ok": False, "column": c, "message":
                        f"row {i}: {a.get(c)!r} on the device, {b.get(c)!r} on the CPU"}
    worst: dict[str, Any] = {"ok": True, "column": None, "ratio": -1.0}  # any float beats it
    for c in floats:
        pairs = [(i, _float(a[c]), _float(b[c]))
                 for i, (a, b) in enumerate(zip(rows, reference, strict=True)) if c in b]
        ref = [y for _, _, y in pairs if y is not None]
        q = quantum(ref)
        scale = max([abs(y) for y in ref if math.isfinite(y)], default=0.0)
        tol = rtol * max(scale, 1.0 if q else SCALE_FLOOR) + FLIPS * q
        for i, x, y in pairs:
            if x is None or y is None:  # a missing value (None) must be missing on both
                err = 0.0 if x is y else math.inf
            elif math.isfinite(x) and math.isfinite(y):
                err = abs(x - y)
            else:
                err = 0.0 if (x != x and y != y) or x == y else math.inf
            if err / tol > worst["ratio"]:
                worst = {"ok": err <= tol, "column": c, "row": i, "device": x, "reference": y,
                         "error": err, "tolerance": tol, "ratio": err / tol}
    if not worst["ok"]:
        worst["message"] = (f"row {worst['row']}: {worst['device']!r} on the device, "
                            f"{worst['reference']!r} on the CPU (float64): error "
                            f"{worst['error']:.3g} > tolerance {worst['tolerance']:.3g} "
                            f"({precision}: {rtol:g} × the column's scale)")
    return worst


def one_line(exc: BaseException) -> str:
    """An exception as one line: its type and message, at most 400 characters."""
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= 400 else text[:397] + "..."


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_rows(exp, spec: dict, device: torch.device, precision: str) -> tuple[list, float, bool]:
    """Run ``exp`` at ``spec`` on ``device`` at ``precision``: (rows, seconds, whether it
    allocated device memory, i.e. ran on a GPU rather than on the CPU whatever asked)."""
    before = 0
    if device.type == "cuda":
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    start = time.perf_counter()
    with matmul_precision.using(precision, device):
        rows = exp.run(spec, device, False)
    _sync(device)
    used = device.type == "cuda" and torch.cuda.max_memory_allocated(device) > before
    return rows, time.perf_counter() - start, used


def preflight(exp, spec: dict, device: torch.device, precision: str) -> dict[str, Any]:
    """The smoke run of ``spec`` on ``device`` against the CPU float64 one (module docs)."""
    smoke = exp.smoke(spec)
    try:
        ref, ref_s, _ = run_rows(exp, reference_spec(smoke), torch.device("cpu"), "fp64")
    except Exception as exc:  # the experiment cannot run here at all: not the device's fault
        return {"status": "reference failed", "error": one_line(exc)}
    try:
        rows, dev_s, used = run_rows(exp, smoke, device, precision)
    except Exception as exc:
        raise PreflightError(exp.name, "(run)", f"the device run raised {one_line(exc)}") from exc
    result = compare_rows(ref, rows, precision)
    out = {"status": "passed" if result["ok"] else "failed", "device_s": round(dev_s, 3),
           "reference_s": round(ref_s, 3), "rows": len(rows), "on_device": used,
           "worst_column": result.get("column"), "worst_error": result.get("error"),
           "tolerance": result.get("tolerance")}
    if not result["ok"]:
        out["error"] = result["message"]
    return out
