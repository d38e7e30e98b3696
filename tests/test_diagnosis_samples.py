"""Which samples a diagnosis sees: the first few of every tap, plus the sample holding the worst element when
that is a later one, and, when some of those agree and others do not, the differing ones alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from backends.torch import TorchBackend
from backends.torch import stages as torch_stages
from parity import RunOptions, builtin_case
from parity.diagnose_run import DIAGNOSIS_SAMPLES, Kept
from parity.workflows import DEFAULT_GOLDENS, check_against_golden, open_golden

CASE = "simulate-fly001-moon"  # 12 scan positions: more than the first samples a diagnosis keeps


def test_only_the_differing_samples_are_diagnosed_and_the_fact_is_said():
    rng = np.random.Generator(np.random.PCG64(4))
    reference = rng.standard_normal((9, 6, 6))
    candidate = reference.copy()
    candidate[8] = candidate[8].T  # the last kept sample (batch index 10) is transposed
    kept = Kept(reference, candidate, {"x": reference.copy(), "probe": np.ones((6, 6))}, [*range(8), 10])
    subset, fact = kept.only_differing(1e-6)
    assert subset.samples == [10] and np.array_equal(subset.reference, reference[8:9])
    assert subset.inputs["x"].shape == (1, 6, 6) and subset.inputs["probe"].shape == (6, 6)  # per-sample only
    assert fact.kind == "samples_differ" and fact.evidence["fact"] is True
    assert "only sample 10 differs (samples 0-7 agree" in fact.summary


def test_when_every_sample_differs_nothing_is_dropped():
    reference = np.ones((4, 3, 3))
    kept = Kept(reference, reference * 2, {}, [0, 1, 2, 3])
    subset, fact = kept.only_differing(1e-6)
    assert subset is kept and fact is None


def _later_positions_swapped(ctx, obj, scan_positions):
    """A port whose second chunk of positions reads (y, x): the first samples are right."""
    late = scan_positions[DIAGNOSIS_SAMPLES:].flip(-1)
    return torch_stages.sim_patches(ctx, obj, torch.cat([scan_positions[:DIAGNOSIS_SAMPLES], late]))


def test_a_fault_in_later_samples_only_is_diagnosed_on_them(tolerances, tmp_path):
    case = builtin_case(CASE)
    assert case.batch > DIAGNOSIS_SAMPLES
    candidate = TorchBackend().with_stage("sim_patches", _later_positions_swapped)
    with open_golden(case, DEFAULT_GOLDENS, tolerances) as opened:
        report = check_against_golden(opened, candidate, tolerances, RunOptions(), tmp_path)
    assert report.first_divergence.tap == "sim.patches"
    diagnoses = report.diagnoses
    assert diagnoses, "a failing stage is always diagnosed"
    fact = diagnoses[0]
    assert fact.kind == "samples_differ"
    assert all(sample >= DIAGNOSIS_SAMPLES for sample in fact.evidence["differing"])
    assert fact.evidence["agreeing"] == list(range(DIAGNOSIS_SAMPLES))


def test_with_a_live_reference_the_hypotheses_fit_the_differing_samples(reference, tolerances):
    pytest.importorskip("backends.tf", reason="TensorFlow (the reference) is not installed")
    from parity import run_case

    candidate = TorchBackend().with_stage("sim_patches", _later_positions_swapped)
    report = run_case(builtin_case(CASE), reference, candidate, tolerances)
    kinds = [diagnosis.kind for diagnosis in report.diagnoses]
    assert kinds[0] == "samples_differ"
    assert "offset_swap_xy" in kinds, [diagnosis.summary for diagnosis in report.diagnoses]


def test_samples_that_all_hold_one_sample_s_values_are_called_a_broadcast():
    rng = np.random.Generator(np.random.PCG64(5))
    reference = rng.standard_normal((5, 4, 4))
    candidate = np.repeat(reference[:1], 5, axis=0)  # every sample is sample 0
    subset, fact = Kept(reference, candidate, {}, list(range(5))).only_differing(1e-6)
    assert subset.samples == [1, 2, 3, 4]
    assert fact.evidence["copied_from"] == 0 and "one sample broadcast to the batch" in fact.summary


def _probe_half_conjugated(ctx, probe):
    """A probe fault in rows 16-47 only: the probe has no batch axis, so its rows are not samples."""
    effective = torch_stages.probe_effective(ctx, probe).clone()
    effective[16:48] = effective[16:48].conj()
    return effective


def test_a_tap_without_a_batch_axis_is_never_split_into_samples(tolerances, tmp_path):
    case = builtin_case("physics-fly001-moon")
    candidate = TorchBackend().with_stage("probe_effective", _probe_half_conjugated)
    with open_golden(case, DEFAULT_GOLDENS, tolerances) as opened:
        report = check_against_golden(opened, candidate, tolerances, RunOptions(), tmp_path)
    assert report.first_divergence.tap == "probe.effective"
    assert "samples_differ" not in [diagnosis.kind for diagnosis in report.diagnoses]
