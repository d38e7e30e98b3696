"""The fast subset of `parity selftest`: every fault of the catalog against the real TF reference, every
equivalent refactor, and the clean candidate on one seed of every built-in case (the full command
runs 20 seeds)."""

from __future__ import annotations

import pytest

from backends.common.taps import PIPELINES, pipeline_taps
from parity.builtin_cases import BUILTIN_CASES
from parity.cli import main
from parity.diagnosis import PRIORITY
from parity.faults import FAULTS, REFACTORS
from parity.selftest import SelftestResult, check_clean, check_fault, check_refactor

# Spec section 8 and the hypotheses of issue #9: the catalog must keep covering each.
SECTION_8 = ["translation sign flipped in reassembly", "x/y order of offsets swapped",
             "channels-first data read as channels-last", "wrong offsets per flattened patch",
             "canvas normalised by the wrong count", "canvas normalised without the epsilon",
             "probe divided by its norm twice", "inverted intensity scale", "dead intensity scale",
             "different canvas size (buffer 0 vs 10)", "FFT without the orthonormal factor (ratio N)",
             "missing fftshift", "sigmoid vs swish activation default", "encoder attention block on one side only",
             "coherent vs incoherent sum of probe modes", "uint16 squares overflowing before a cast",
             "TF32 or reduced-precision matmul", "kernel layout transposed wrongly"]


def test_the_catalog_covers_section_8_and_every_hypothesis():
    covered = {fault.covers for fault in FAULTS}
    assert [name for name in SECTION_8 if name not in covered] == []
    expected = {kind for fault in FAULTS for kind in fault.expect or ()}
    assert [kind for kind in PRIORITY if kind not in expected | {"dtype_mismatch"}] == []
    assert any(fault.expect is None for fault in FAULTS)  # and faults no hypothesis may claim
    assert len({fault.id for fault in FAULTS}) == len(FAULTS)


def test_every_fault_names_a_tap_of_its_case():
    for fault in FAULTS:
        case = fault.case.build()
        assert fault.tap(case) in {spec.name for spec in pipeline_taps(case.pipeline, case.config)}
        assert case.pipeline in PIPELINES


@pytest.mark.parametrize("fault", FAULTS, ids=lambda fault: fault.id)
def test_fault_is_detected_localized_and_diagnosed(reference, tolerances, fault):
    row = check_fault(fault, reference, tolerances)
    assert row.detected, row.note
    if fault.pending:  # runner v2 will localize these; today they must at least fail somewhere
        assert row.found_tap is not None
        return
    assert row.localized, row.note
    assert row.diagnosed, row.note
    assert row.passed
    if fault.expect and "shift" not in fault.expect:  # a shift is never the lead claim of another fault
        assert "shift" not in row.diagnoses[:1], row.diagnoses


@pytest.mark.parametrize("refactor", REFACTORS, ids=lambda refactor: refactor.id)
def test_equivalent_refactor_passes(reference, tolerances, refactor):
    row = check_refactor(refactor, reference, tolerances)
    assert row.passed, row.note


@pytest.mark.parametrize("name", list(BUILTIN_CASES))
def test_clean_candidate_passes(reference, candidate, tolerances, name):
    case = BUILTIN_CASES[name]
    row = check_clean(case, case.seed + 1, reference, candidate, tolerances)  # a seed the suite runs nowhere else
    assert row.passed, row.note


def test_selftest_result_renders_and_fails_on_a_miss():
    from parity.selftest import SelftestRow  # synthetic rows: rendering and the exit rule only

    rows = [SelftestRow("fault", "f", "c", tap="t", detected=True, localized=True, diagnosed=True, passed=True,
                        expected=("scale",), diagnoses=["scale"]),
            SelftestRow("fault", "g", "c", tap="t", detected=True, localized=False, diagnosed=False, note="missed")]
    result = SelftestResult(rows, seeds=1)
    assert not result.passed and result.failures() == [rows[1]]
    assert result.summary_lines()[-1] == "SELFTEST FAIL"
    assert result.to_dict()["rows"][1]["status"] == "FAIL"
    assert result.table().row_count == 2


def test_cli_selftest_subset(capsys):
    pytest.importorskip("backends.tf", reason="TensorFlow (the reference) is not installed")
    code = main(["selftest", "--only", "fft-not-orthonormal", "--only", "fft-ortho"])  # --only: no clean sweep
    out = capsys.readouterr().out
    assert code == 0
    assert "fft-not-orthonormal" in out and "SELFTEST PASS" in out and "clean candidate: not run" in out


def test_cli_selftest_refuses_a_pattern_that_matches_nothing(capsys):
    assert main(["selftest", "--only", "no-such-fault", "--no-clean"]) == 2
    assert "no fault or refactor id matches" in capsys.readouterr().err
