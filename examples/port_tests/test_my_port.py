"""Hand-written parity tests next to the generated ones (tests named parity::test_parity[...])."""

import pytest

from parity.pytest_plugin import assert_parity


@pytest.mark.parametrize("parity_case", ["physics-n32-edge-offsets-f64"], indirect=True)
def test_the_whole_case_holds(parity_report):
    """The configured reference and candidate on one case (the run is shared with the generated tests)."""
    assert_parity(parity_report)


def test_far_field_alone_holds(parity_run, parity_load_case):
    """One stage, isolated, on a case loaded by name."""
    outcome = parity_run(parity_load_case("simulate-n32-f64"))
    assert_parity(outcome, taps=["farfield"], modes=("isolated",))
