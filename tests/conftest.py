"""Fixtures shared by the test modules: one real backend of each kind per test process.

Backends are imported inside the fixtures so that modules that need neither
framework (metrics, tolerances, inputs) never load TensorFlow or PyTorch.
"""

from __future__ import annotations

import pytest


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


@pytest.fixture(scope="session")
def tolerances():
    """The shipped tolerance table."""
    from parity.workflows import tolerance_table

    return tolerance_table(None)
