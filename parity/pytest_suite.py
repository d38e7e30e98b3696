"""The tests the pytest plugin generates (collected as ``<suite dir>/parity``, never imported by users).

``pytest_generate_tests`` in ``parity.pytest_plugin`` parametrizes them from
the selected cases and the tap registry: one ``test_parity`` per case x tap
(propagated mode), one ``test_parity_isolated`` per case x tap (isolated
mode), one baseline test per case. Each case runs once per session; these
functions only judge its report.
"""

import pytest


def test_parity(parity_tap):
    """The tap, the whole candidate pipeline run from the case's inputs (errors accumulate as in use)."""
    parity_tap.check()


@pytest.mark.parity_mode("isolated")
def test_parity_isolated(parity_tap):
    """The tap's stage alone, run on the reference's recorded inputs to that stage."""
    parity_tap.check()


@pytest.mark.parity_baseline_kind("arrays")
def test_baseline_arrays(parity_baseline, ndarrays_regression):
    """Every propagated tap of a small case against the candidate's stored arrays."""
    parity_baseline.check_arrays(ndarrays_regression)


@pytest.mark.parity_baseline_kind("stats")
def test_baseline_stats(parity_baseline, data_regression):
    """Per-tap statistics of a larger case against the candidate's stored ones."""
    parity_baseline.check_stats(data_regression)
