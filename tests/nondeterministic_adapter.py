"""A deliberately nondeterministic candidate, for the ``--repeat`` tests.

Its far field gets a perturbation that changes from call to call (a counter
seeds numpy's PCG64), as an atomic-add reduction on a GPU would. Loaded as
``--candidate tests.nondeterministic_adapter:Nondeterministic``; imports
PyTorch, never TensorFlow.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch

from backends.torch import TorchBackend
from backends.torch.stages import STAGES

_calls = itertools.count()


def _farfield_jittered(ctx, wave):
    field = STAGES["farfield"](ctx, wave)
    rng = np.random.Generator(np.random.PCG64(next(_calls)))
    flip = torch.from_numpy(rng.uniform(size=tuple(field.shape)) < 1e-3).to(field.device)
    return torch.where(flip, field * (1 + 1e-13), field)  # ~0.1% of the elements move by a few ulp


class Nondeterministic(TorchBackend):
    name = "torch-nondeterministic"

    def __init__(self, device: str = "cpu") -> None:
        super().__init__(device)
        self.stages["farfield"] = _farfield_jittered


class FailsWhenRepeated(TorchBackend):
    """Runs once, then raises in its far field on every later pipeline run (the repeat check's runs)."""

    name = "torch-fails-when-repeated"

    def __init__(self, device: str = "cpu") -> None:
        super().__init__(device)
        self.runs = 0
        self.stages["farfield"] = self._farfield

    def run_pipeline(self, pipeline, cfg, inputs, weights=None, sink=None, taps=None):
        self.runs += 1
        return super().run_pipeline(pipeline, cfg, inputs, weights, sink=sink, taps=taps)

    def _farfield(self, ctx, wave):
        if self.runs > 1:
            raise RuntimeError("a cache the first run left behind")
        return STAGES["farfield"](ctx, wave)
