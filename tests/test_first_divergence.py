"""The first-divergence rules of parity.runner, on real TF and Torch runs.

- A true accumulation: two consecutive stages each off by a relative 6e-7 (float32, tolerance 1e-6)
  pass alone; together they fail downstream, and only there. The first divergence is the first tap
  that fails propagated, marked inherited. (Reversing or deleting the inherited-divergence loop of
  ``first_divergence`` makes this test fail.)
- Two independent faults at two stages: both fail in isolation, the earlier one is the first
  divergence, and each carries its own diagnosis.
- A stage that changes its input in place (runner v2's input-integrity check; expected to fail
  until it lands).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from backends.torch import TorchBackend
from backends.torch import stages as torch_stages
from parity.builtin_cases import builtin_case
from parity.report import summary_lines
from parity.runner import RunOptions, run_case
from parity.workflows import cast_case

NUDGE = 1.0 + 6e-7  # alone below the float32 tolerance of 1e-6, twice above it


@pytest.fixture(scope="module")
def physics_case():
    case = builtin_case("physics-default")
    return cast_case(dataclasses.replace(case, name="physics-n32"), case.config.replace(N=32))


def _farfield_nudged(ctx, wave):
    return torch_stages.farfield(ctx, wave) * NUDGE


def _amplitude_nudged(ctx, field):
    return torch_stages.amplitude(ctx, field) * NUDGE


def _failing(report, mode):
    return [tap.name for tap in report.taps if tap.modes[mode].passed is False]


def test_small_errors_of_consecutive_stages_accumulate_into_an_inherited_divergence(reference, tolerances,
                                                                                     physics_case):
    candidate = TorchBackend().with_stage("farfield", _farfield_nudged).with_stage("amplitude", _amplitude_nudged)
    report = run_case(physics_case, reference, candidate, tolerances)
    assert not report.passed
    assert _failing(report, "isolated") == []  # each stage alone is within tolerance
    assert report.tap("farfield").modes["propagated"].passed  # one nudge alone passes propagated too
    failing = _failing(report, "propagated")
    assert failing == ["amplitude", "amplitude.scaled", "intensity"]  # from the second nudge on, downstream
    divergence = report.first_divergence
    assert (divergence.tap, divergence.mode, divergence.inherited) == ("amplitude", "propagated", True)
    lines = [line.strip() for line in summary_lines(report)]
    assert "(every stage passes in isolation: the error accumulated across stages)" in lines
    diagnosis = report.tap("amplitude").modes["propagated"].diagnoses[0]  # the two nudges, multiplied
    assert diagnosis.kind == "scale" and abs(diagnosis.evidence["factor"] - NUDGE**2) < 1e-7
    assert "x (1 + 1.2e-06)" in diagnosis.summary
    assert 1e-6 < report.tap("amplitude").modes["propagated"].metrics.max_rel_to_peak < 2e-6


def test_an_inherited_divergence_behind_stages_not_compared_does_not_claim_an_accumulation(reference, tolerances,
                                                                                            physics_case):
    candidate = TorchBackend().with_stage("farfield", lambda ctx, wave: torch_stages.farfield(ctx, wave) * 1.5)
    report = run_case(physics_case, reference, candidate, tolerances, RunOptions(taps=("amplitude",)))
    divergence = report.first_divergence
    assert (divergence.tap, divergence.inherited) == ("amplitude", True)
    assert "farfield" in divergence.unjudged_upstream and "exit_wave" in divergence.unjudged_upstream
    lines = " ".join(summary_lines(report))
    assert "the error accumulated" not in lines and "the fault may be there" in lines, lines


def _canvas_sign_flipped(ctx, patches, offsets):
    return torch_stages.object_canvas(ctx, patches, -offsets)


def _farfield_unnormalised(ctx, wave):
    return torch.fft.fft2(wave)


def test_two_independent_faults_are_both_reported_the_earlier_first(reference, tolerances, physics_case):
    candidate = (TorchBackend().with_stage("object_canvas", _canvas_sign_flipped)
                 .with_stage("farfield", _farfield_unnormalised))
    report = run_case(physics_case, reference, candidate, tolerances)
    assert _failing(report, "isolated") == ["object.canvas", "farfield"]
    divergence = report.first_divergence
    assert (divergence.tap, divergence.mode, divergence.inherited) == ("object.canvas", "isolated", False)
    canvas = report.tap("object.canvas").modes["isolated"].diagnoses
    farfield = report.tap("farfield").modes["isolated"].diagnoses
    assert canvas[0].kind == "offset_sign"
    assert farfield[0].kind == "scale" and farfield[0].evidence["named"] == "N"
    lines = summary_lines(report)
    assert lines[0].startswith("first divergence: object.canvas (isolated)")
    assert any(line.startswith("  diagnosis: offset_sign:") for line in lines)
    json_taps = report.to_dict()["taps"]
    assert [d["kind"] for d in json_taps[[t["name"] for t in json_taps].index("farfield")]["modes"]["isolated"]
            ["diagnoses"]][0] == "scale"


def _farfield_halves_its_input(ctx, wave):
    out = torch_stages.farfield(ctx, wave)
    wave.mul_(0.5)
    return out


def test_a_stage_that_changes_its_input_in_place_is_blamed(reference, tolerances):
    case = builtin_case("simulate-n32-f64")
    report = run_case(case, reference, TorchBackend().with_stage("farfield", _farfield_halves_its_input), tolerances)
    assert not report.passed
    assert report.first_divergence.tap == "farfield"
    assert not report.first_divergence.inherited
    assert report.first_divergence.kind == "in_place"
    assert [d.kind for d in report.tap("farfield").modes[report.first_divergence.mode].diagnoses] == ["in_place"]
    # the victim downstream is not blamed as a stage of its own: it passes alone
    assert report.tap("sim.intensity_scale").modes["isolated"].passed
