"""The suite's preflight: the table comparison, its tolerances and the device/CPU runs."""

from __future__ import annotations

import math

import pytest
import torch

from lowrank.core import precision as matmul_precision
from lowrank.runner import preflight as pf
from lowrank.runner.experiment import Experiment

REF = [{"setting": "same", "seed": 0, "loss": 0.6931, "sr": 12.5, "err": 0.42, "ok": True},
       {"setting": "diff", "seed": 0, "loss": 0.5000, "sr": 3.25, "err": 0.5, "ok": False}]


def _with(row: int, **changes) -> list[dict]:
    rows = [dict(r) for r in REF]
    rows[row].update(changes)
    return rows


def test_equal_tables_pass_and_report_their_worst_column():
    assert pf.compare_rows(REF, [dict(r) for r in REF], "fp32")["ok"]
    near = pf.compare_rows(REF, _with(0, loss=0.6931 * (1 + 1e-4)), "fp32")
    assert near["ok"] and near["column"] == "loss" and 0 < near["error"] < near["tolerance"]


def test_a_float_beyond_the_tolerance_of_its_precision_fails_naming_its_column():
    # loss's scale is 0.6931: 3e-3 is beyond fp32's 1e-3 × scale but within tf32's 1e-2 × scale
    rows = _with(1, loss=0.503)
    bad = pf.compare_rows(REF, rows, "fp32")
    assert not bad["ok"] and bad["column"] == "loss" and bad["row"] == 1
    assert "0.503" in bad["message"] and "fp32" in bad["message"]
    assert pf.compare_rows(REF, rows, "tf32")["ok"]
    assert not pf.compare_rows(REF, _with(0, sr=12.5 * 1.2), "bf16")["ok"]


def test_labels_rows_columns_and_missing_values_must_agree():
    for rows, column in ((_with(0, setting="other"), "setting"), (_with(1, seed=1), "seed"),
                         (_with(0, ok=False), "ok"), (REF[:1], "(rows)"),
                         ([{**REF[0], "extra": 1.0}, REF[1]], "(columns)"),
                         (_with(0, loss=None), "loss"), (_with(0, loss=math.inf), "loss")):
        out = pf.compare_rows(REF, rows, "bf16")
        assert not out["ok"] and out["column"] == column, column
    nan_ref = [{**REF[0], "loss": math.nan}, REF[1]]
    assert pf.compare_rows(nan_ref, [dict(r) for r in nan_ref], "fp32")["ok"]


def test_an_error_rate_may_flip_a_sample_or_two():
    assert pf.quantum([0.42, 0.5]) == pytest.approx(1 / 50)
    assert pf.quantum([0.6931471805599453, 0.5]) == 0.0 and pf.quantum([]) == 0.0
    assert pf.quantum([0.5, 1.0]) == 0.0 and pf.quantum([20 / 7]) == 0.0  # N < 10, > 1
    assert pf.compare_rows(REF, _with(0, err=0.44), "fp32")["ok"]  # one flip in 50
    assert not pf.compare_rows(REF, _with(0, err=0.52), "fp32")["ok"]  # five


def test_reference_spec_makes_every_dtype_float64():
    spec = {"dtype": "float32", "base": {"dtype": "float32", "n": 3}, "runs": {"a": {"n": 1}}}
    assert pf.reference_spec(spec) == {"dtype": "float64", "base": {"dtype": "float64", "n": 3},
                                       "runs": {"a": {"n": 1}}}


class Toy(Experiment):
    """A tiny experiment whose rows show the precision in force; ``fail`` says where it raises."""

    name = "toy"

    def __init__(self, fail: str | None = None, shift: float = 0.0):
        self.fail, self.shift = fail, shift

    def quick(self):
        return {"n": 8, "steps": 100, "seeds": 3}

    def full(self):
        return self.quick()

    def run(self, spec, device, show_progress=False):
        reference = matmul_precision.active() == "fp64"
        if self.fail == ("cpu" if reference else "device"):
            raise RuntimeError("boom")
        x = torch.linspace(0, 1, spec["n"], dtype=torch.float64)
        value = float(x.square().sum()) + (0.0 if reference else self.shift)
        return [{"seed": s, "value": value} for s in range(spec["seeds"])]


def test_preflight_runs_the_smoke_spec_on_both_sides():
    out = pf.preflight(Toy(), Toy().quick(), torch.device("cpu"), "fp32")
    assert out["status"] == "passed" and out["rows"] == 1 and out["worst_column"] == "value"
    bad = pf.preflight(Toy(shift=0.1), Toy().quick(), torch.device("cpu"), "fp32")
    assert bad["status"] == "failed" and bad["worst_column"] == "value" and "0.1" in bad["error"]
    assert pf.preflight(Toy("cpu"), Toy().quick(), torch.device("cpu"), "fp32")["status"] == (
        "reference failed")
    with pytest.raises(pf.PreflightError, match="'toy', column '\\(run\\)'.*boom"):
        pf.preflight(Toy("device"), Toy().quick(), torch.device("cpu"), "fp32")
