"""Candidate adapters with one stage broken, loaded by the CLI tests as ``--candidate tests.faulty_adapters:NAME``.

Importing this module imports PyTorch but never TensorFlow.
"""

from __future__ import annotations

from backends.torch import TorchBackend
from backends.torch.stages import STAGES

BROKEN_STAGE = "farfield"


def _farfield_one_percent_high(ctx, wave):
    return STAGES["farfield"](ctx, wave) * 1.01


def _farfield_raises(ctx, wave):
    raise FloatingPointError("injected fault")


class FaultyTorch(TorchBackend):
    """The Torch backend with the far field 1% too large (every later tap inherits the error)."""

    name = "torch-faulty"

    def __init__(self, device: str = "cpu") -> None:
        super().__init__(device)
        self.stages[BROKEN_STAGE] = _farfield_one_percent_high


class RaisingTorch(TorchBackend):
    """The Torch backend whose far-field stage raises."""

    name = "torch-raising"

    def __init__(self, device: str = "cpu") -> None:
        super().__init__(device)
        self.stages[BROKEN_STAGE] = _farfield_raises


not_an_adapter = object()
