"""Environment variables: scale and device."""

from __future__ import annotations

import pytest
import torch

from lowrank import config


def test_scale_default_and_env(monkeypatch):
    monkeypatch.delenv("LOWRANK_SCALE", raising=False)
    assert config.scale() == "quick"
    monkeypatch.setenv("LOWRANK_SCALE", "full")
    assert config.scale() == "full"
    monkeypatch.setenv("LOWRANK_SCALE", "huge")
    with pytest.raises(ValueError, match="LOWRANK_SCALE"):
        config.scale()


def test_device_override(monkeypatch):
    monkeypatch.setenv("LOWRANK_DEVICE", "cpu")
    assert config.default_device() == torch.device("cpu")
    assert config.default_dtype() == torch.float64
    assert config.default_dtype("cuda") == torch.float32
    monkeypatch.setenv("LOWRANK_DEVICE", "gpu-please")
    with pytest.raises(ValueError, match="LOWRANK_DEVICE must name a torch device"):
        config.default_device()
