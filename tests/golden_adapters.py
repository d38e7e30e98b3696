"""Reference adapters for the golden tests that run ``parity record`` as a real process.

Importing this module imports PyTorch but never TensorFlow.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from backends.torch import TorchBackend

MARKER = "PARITY_TEST_MARKER"  # a file the slow reference creates once it is mid-record


class SlowReference(TorchBackend):
    """Delivers three taps, announces it through ``$PARITY_TEST_MARKER``, then hangs (to be killed)."""

    name = "slow-reference"

    def run_pipeline(self, pipeline, cfg, inputs, weights=None, sink=None, taps=None):
        delivered = []

        def slow(spec, value):
            sink(spec, value)
            delivered.append(spec.name)
            if len(delivered) == 3:
                Path(os.environ[MARKER]).write_text(str(os.getpid()))
                time.sleep(120)

        super().run_pipeline(pipeline, cfg, inputs, weights, sink=slow, taps=taps)


def never_loaded(device: str = "cpu"):
    """A reference factory that must never be called: a refusal has to come before it."""
    raise RuntimeError("the reference was loaded although the golden folder is unusable")
