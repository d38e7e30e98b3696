"""Fixtures shared by the test modules: one real backend of each kind per test process.

Backends are imported inside the fixtures so that modules that need neither
framework (metrics, tolerances, inputs) never load TensorFlow or PyTorch.
"""

from __future__ import annotations

import pytest

# The parity plugin, for a checkout run without `pip install` (installed, the pytest11 entry point loads it
# and this line is a no-op). pyproject.toml configures it: Torch against the goldens, baselines in fixtures/.
pytest_plugins = ["parity.pytest_plugin"]


@pytest.fixture(scope="session")
def reference():
    """The TensorFlow reference backend (CPU)."""
    from backends.tf import TensorFlowBackend

    return TensorFlowBackend()


@pytest.fixture(scope="session")
def candidate():
    """The PyTorch candidate backend (CPU)."""
    from backends.torch import TorchBackend

    return TorchBackend()
