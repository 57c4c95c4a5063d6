"""Input validation shared by every module."""

from __future__ import annotations

import pytest
import torch

from lowrank.core import checks


def test_check_lambda_per_member():
    like = torch.zeros(1, dtype=torch.float64)
    assert checks.check_lambda_per_member(0.1, None, like).ndim == 0
    assert checks.check_lambda_per_member([0.1, 0.2], 2, like).shape == (2, 1, 1)
    with pytest.raises(ValueError, match="lam must be >= 0"):
        checks.check_lambda_per_member(-0.1, None, like)
    with pytest.raises(ValueError, match="not an ensemble"):
        checks.check_lambda_per_member([0.1, 0.2], None, like)
    with pytest.raises(ValueError, match="NaN"):
        checks.check_lambda_per_member(float("nan"), None, like)


def test_check_positive():
    assert checks.check_positive(0.5, "eta") == 0.5
    for bad in (0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="eta must be > 0"):
            checks.check_positive(bad, "eta")
