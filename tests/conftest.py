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
    """The TensorFlow reference backend (CPU); tests that need it skip where TensorFlow is absent (a GPU machine)."""
    pytest.importorskip("backends.tf", reason="TensorFlow (the reference) is not installed")
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


# Property-based tests (tests/test_properties.py): a fixed seed (derandomize), a bounded example
# count, no deadline (a shared 2-core CI machine makes per-example timings meaningless), and no
# example database written into the work tree. PARITY_HYPOTHESIS_PROFILE=thorough searches wider.
try:
    from hypothesis import HealthCheck, settings
except ImportError:  # hypothesis is a test extra; the property tests skip without it
    pass
else:
    import os

    _COMMON = {"derandomize": True, "deadline": None, "database": None, "print_blob": True,
               "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large]}
    settings.register_profile("parity", max_examples=30, **_COMMON)
    settings.register_profile("thorough", max_examples=400, **{**_COMMON, "derandomize": False})
    settings.load_profile(os.environ.get("PARITY_HYPOTHESIS_PROFILE", "parity"))
