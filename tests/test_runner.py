"""The runner: both comparison modes localise an injected fault, and the plumbing around them.

Faults are injected the way a user would: a copy of one real Torch stage with
one realistic port bug, swapped in through ``Backend.with_stage``.
"""

from __future__ import annotations

import dataclasses
import gc
import weakref

import numpy as np
import pytest
import torch

pytest.importorskip("backends.tf", reason="TensorFlow (the reference) is not installed")
from backends.tf import TensorFlowBackend
from backends.torch import TorchBackend
from backends.common.taps import pipeline_taps
from backends.torch import stages as torch_stages
from parity.adapters import load_adapter
from parity.builtin_cases import builtin_case
from parity.divergence import amplification as _amplification
from parity.runner import RunOptions, run_case
from parity.results import TapResult
from parity.workflows import cast_case


@pytest.fixture(scope="module")
def physics_case():
    case = builtin_case("physics-default")
    return cast_case(dataclasses.replace(case, name="physics-n32", batch=2), case.config.replace(N=32))


@pytest.fixture(scope="module")
def pinn_case():
    case = builtin_case("pinn-n32-single-patch")
    return cast_case(dataclasses.replace(case, name="pinn-n32-g2", batch=1),
                     case.config.replace(gridsize=2, object_big=True, pad_object=True))


def canvas_sign_flip(ctx, patches, offsets):
    """Port bug: the reassembly translation applied with the wrong sign."""
    return torch_stages.object_canvas(ctx, patches, -offsets)


def farfield_not_orthonormal(ctx, wave):
    """Port bug: FFT without the 1/N factor."""
    return torch.fft.fft2(wave)


def encoder_scaled(ctx, x, index):
    out = torch_stages.encoder_block(ctx, x, index)
    return out * 1.001 if index == 1 else out


def exit_wave_raises(ctx, probe, patches):
    raise RuntimeError("boom in exit_wave")


def _statuses(report, mode):
    return {tap.name: tap.modes[mode].passed for tap in report.taps}


@pytest.mark.parametrize("stage, fault, tap", [
    ("object_canvas", canvas_sign_flip, "object.canvas"),
    ("farfield", farfield_not_orthonormal, "farfield"),
])
def test_physics_fault_is_localised_in_both_modes(reference, tolerances, physics_case, stage, fault, tap):
    candidate = TorchBackend().with_stage(stage, fault)
    report = run_case(physics_case, reference, candidate, tolerances)
    assert not report.passed
    assert report.first_divergence.tap == tap and report.first_divergence.mode == "isolated"
    order = [t.name for t in report.taps]
    isolated, propagated = _statuses(report, "isolated"), _statuses(report, "propagated")
    position = order.index(tap)
    # Upstream of the fault both modes pass; the faulty stage fails in both.
    assert all(isolated[name] and propagated[name] for name in order[:position])
    assert isolated[tap] is False and propagated[tap] is False
    # Downstream, isolated mode judges each stage on reference inputs: they pass; propagation carries the error.
    downstream = [name for name in order[position + 1:] if name != "probe.effective"]
    assert all(isolated[name] for name in downstream)
    assert any(propagated[name] is False for name in downstream)
    assert report.first_divergence.messages and tap in report.first_divergence.messages[0]


def test_pinn_network_fault_is_localised(reference, tolerances, pinn_case):
    candidate = TorchBackend().with_stage("encoder_block", encoder_scaled)
    report = run_case(pinn_case, reference, candidate, tolerances)
    assert report.first_divergence.tap == "encoder.block1"
    assert report.tap("encoder.block0").passed
    assert report.tap("decoder.amp").modes["isolated"].passed  # judged on the reference's encoder output


def test_propagated_only_falls_back_to_propagated(reference, tolerances, physics_case):
    candidate = TorchBackend().with_stage("farfield", farfield_not_orthonormal)
    report = run_case(physics_case, reference, candidate, tolerances, RunOptions(modes=("propagated",)))
    assert report.first_divergence.tap == "farfield" and report.first_divergence.mode == "propagated"
    assert all("isolated" not in tap.modes for tap in report.taps)


def test_a_raising_stage_is_reported_not_crashing(reference, tolerances, physics_case):
    candidate = TorchBackend().with_stage("exit_wave", exit_wave_raises)
    report = run_case(physics_case, reference, candidate, tolerances)
    exit_wave = report.tap("exit_wave")
    assert "boom in exit_wave" in exit_wave.modes["propagated"].error
    assert "boom in exit_wave" in exit_wave.modes["isolated"].error
    assert report.tap("farfield").modes["propagated"].skipped.startswith("not reached")
    assert report.tap("farfield").modes["isolated"].passed  # isolated stages still run
    assert report.first_divergence.tap == "exit_wave"


def test_clean_candidate_passes_and_records_everything(reference, tolerances, physics_case):
    report = run_case(physics_case, reference, TorchBackend(), tolerances)
    assert report.passed and report.first_divergence is None
    document = report.to_dict()
    assert [tap["name"] for tap in document["taps"]][:3] == ["object.canvas", "object.trimmed", "patches.extracted"]
    canvas = document["taps"][0]["modes"]["isolated"]
    assert canvas["tolerance"]["criteria"]["max_rel_to_peak"] == 1e-6
    assert "rule" in canvas["tolerance"]["source"]
    assert document["provenance"]["determinism"]["torch"]["deterministic_algorithms"] is True
    assert document["audits"][0]["name"] == "config" and document["audits"][0]["passed"]


def test_config_mismatch_is_reported_before_any_tensor(reference, tolerances, physics_case):
    class SwishDefault(TorchBackend):
        def resolve_config(self, cfg):
            return cfg.replace(amp_activation="swish", buffer=0)

    report = run_case(physics_case, reference, SwishDefault(), tolerances)
    assert not report.passed and report.first_divergence.mode == "config"
    assert any("amp_activation='swish'" in message for message in report.first_divergence.messages)
    # buffer sizes the canvas, and every physics tap but the probe's reads the canvas: those are not
    # comparable; probe.effective depends on neither knob and is still compared
    statuses = {tap.name: tap.status for tap in report.taps}
    assert statuses.pop("probe.effective") == "passed"
    assert set(statuses.values()) == {"not_comparable"}
    assert "buffer differs" in report.tap("object.canvas").reason
    assert "reads 'patches.extracted'" in report.tap("exit_wave").reason


def test_weights_audit_runs_before_comparison(reference, tolerances, pinn_case):
    broken = dict(pinn_case.weights)
    broken.pop("encoder.block0.conv0.bias")
    case = dataclasses.replace(pinn_case, provided_weights=broken)
    report = run_case(case, reference, TorchBackend(), tolerances)
    assert report.first_divergence.mode == "weights"
    assert any("encoder.block0.conv0.bias" in message for message in report.first_divergence.messages)


def test_pinn_report_has_weight_mapping_rows(reference, tolerances, pinn_case):
    report = run_case(pinn_case, reference, TorchBackend(), tolerances, RunOptions(taps=("input.scaled",)))
    weights = next(audit for audit in report.audits if audit.name == "weights")
    assert weights.passed
    rows = weights.details["mapping"]["parameters"]
    assert any(row["transform"].startswith("transpose") for row in rows)
    assert [tap.name for tap in report.taps] == ["input.scaled"]


def test_spilled_store_and_tiny_chunks_give_the_same_metrics(reference, tolerances, physics_case):
    in_memory = run_case(physics_case, reference, TorchBackend(), tolerances)
    spilled = run_case(physics_case, reference, TorchBackend(), tolerances,
                       RunOptions(spill_bytes=0, chunk_bytes=4096))
    for a, b in zip(in_memory.taps, spilled.taps):
        for mode in ("propagated", "isolated"):
            ma, mb = a.modes[mode].metrics, b.modes[mode].metrics
            assert ma.max_abs_error == mb.max_abs_error and ma.worst_index == mb.worst_index


def test_candidate_taps_are_not_kept_alive(reference, tolerances, physics_case):
    """Propagated comparison drops each candidate tap once judged (statistics only)."""
    alive: list[weakref.ref] = []
    peak = 0

    class Watched(TorchBackend):
        def to_canonical_native(self, spec, cfg, tensor):
            nonlocal peak
            gc.collect()
            peak = max(peak, sum(ref() is not None for ref in alive))
            value = super().to_canonical_native(spec, cfg, tensor)[...]  # a fresh view: the probe's tap is
            alive.append(weakref.ref(value))  # the input tensor itself, which the executor rightly keeps
            return value

    report = run_case(physics_case, reference, Watched(), tolerances, RunOptions(modes=("propagated",)))
    assert report.passed and len(alive) == len(report.taps)
    assert peak == 0  # when a tap arrives, no earlier candidate tap is still referenced


def test_adapter_by_import_path_is_used(reference, tolerances, physics_case):
    adapter = load_adapter("tests.plugin_adapters:SignFlipTorch")
    assert adapter.name == "torch-signflip"
    report = run_case(physics_case, reference, adapter, tolerances)
    assert report.first_divergence.tap == "object.canvas"
    assert report.candidate["name"] == "torch-signflip"
    assert report.candidate["stages_replaced"] == ["object_canvas"]
    instance = load_adapter("tests.plugin_adapters:INSTANCE")
    assert isinstance(instance, TorchBackend)


def test_amplification_is_error_over_worst_input():
    tap = TapResult("b", "s", ["a", "x"], "BHWC", "real", [1], "float32")
    assert _amplification(tap, {"a": 2e-7, "b": 6e-7}) == pytest.approx(3.0)
    assert _amplification(tap, {"a": 0.0, "b": 6e-7}) is None  # introduced here, nothing to amplify
    assert _amplification(tap, {"b": 6e-7}) is None  # fed by pipeline inputs only


def test_reference_contract_violation_stops_the_run(tolerances, physics_case):
    class WrongDtypeReference(TensorFlowBackend):
        def to_canonical(self, spec, cfg, tensor):
            value = super().to_canonical(spec, cfg, tensor)
            return value.astype(np.complex128) if spec.name == "farfield" else value

    report = run_case(physics_case, WrongDtypeReference(), TorchBackend(), tolerances)
    assert report.first_divergence.mode == "reference"
    assert "farfield" in report.first_divergence.messages[0]


def test_a_tap_the_candidate_never_delivers_fails(reference, tolerances, physics_case):
    class Forgetful(TorchBackend):
        def run_pipeline(self, pipeline, cfg, inputs, weights=None, sink=None, taps=None):
            def forgetful_sink(spec, value):
                if spec.name != "farfield":
                    sink(spec, value)

            super().run_pipeline(pipeline, cfg, inputs, weights, forgetful_sink, taps)

    report = run_case(physics_case, reference, Forgetful(), tolerances, RunOptions(modes=("propagated",)))
    assert not report.passed
    assert "never delivered" in report.tap("farfield").modes["propagated"].error
    assert report.first_divergence.tap == "farfield"


def test_nothing_judged_is_not_a_pass(reference, tolerances, physics_case):
    class CannotIsolate(TorchBackend):
        def run_stage(self, *args, **kwargs):
            raise NotImplementedError("this port has no per-stage entry points")

    report = run_case(physics_case, reference, CannotIsolate(), tolerances, RunOptions(modes=("isolated",)))
    assert not report.passed
    assert all(tap.passed is None for tap in report.taps)
    assert report.first_divergence.mode == "unjudged"
    assert "no per-stage entry points" in " ".join(report.first_divergence.messages)


def test_empty_tap_selection_is_bad_input(reference, tolerances, physics_case):
    from parity.errors import ParityInputError

    with pytest.raises(ParityInputError, match="no tap of the physics pipeline matches"):
        run_case(physics_case, reference, TorchBackend(), tolerances, RunOptions(taps=("nomatch*",)))


def test_nan_shared_by_both_backends_fails(reference, tolerances, physics_case):
    """A bug both sides share that yields NaN (say, the canvas epsilon dropped) must not pass."""
    def nan_wave(ctx, probe, patches):
        return torch_stages.exit_wave(ctx, probe, patches) * float("nan")

    both_broken = TorchBackend().with_stage("exit_wave", nan_wave)
    report = run_case(physics_case, both_broken, both_broken, tolerances)
    assert not report.passed
    assert report.first_divergence.tap == "exit_wave"
    assert "allow_nonfinite" in report.first_divergence.messages[0]


def test_a_knob_at_a_value_that_hides_its_mistakes_is_noted():
    from backends.torch import TorchBackend
    from parity.workflows import tolerance_table

    case = builtin_case("physics-default")
    small = case.config.replace(N=32)
    neutral = run_case(cast_case(case, small), TorchBackend(), TorchBackend(), tolerance_table(None))
    assert any(note.startswith("intensity_scale = 1 here") and "amplitude.scaled" in note for note in neutral.notes)
    scaled = run_case(cast_case(case, small.replace(intensity_scale=2.5)), TorchBackend(), TorchBackend(),
                      tolerance_table(None))
    assert not any("gives the same numbers" in note for note in scaled.notes)
    no_reader = run_case(cast_case(case, small), TorchBackend(), TorchBackend(), tolerance_table(None),
                         RunOptions(taps=("object.*",)))
    assert not any("gives the same numbers" in note for note in no_reader.notes)


def test_against_goldens_the_note_names_a_case_of_the_same_pipeline_that_sets_the_knob():
    from parity.runner import _blind_spots

    case = builtin_case("physics-default")
    notes = _blind_spots(case, pipeline_taps(case.pipeline, case.config), golden=True)
    advice = next(note for note in notes if note.startswith("intensity_scale = 1 here"))
    assert "check a case that sets it otherwise too (physics-n32-intensity-scale" in advice, advice


def test_the_public_api_gives_the_first_divergences_diagnoses_and_writes_the_report_files(reference, tolerances,
                                                                                          physics_case, tmp_path):
    import json

    import parity

    candidate = TorchBackend()
    candidate.stages = {**candidate.stages, "farfield": farfield_not_orthonormal}
    report = parity.run_case(physics_case, reference, candidate, tolerances)
    assert report.first_divergence.tap == "farfield"
    assert report.diagnoses and report.diagnoses[0].kind == "scale", report.diagnoses
    path = parity.write_case_outputs(report, tmp_path / "case")
    assert json.loads(path.read_text())["first_divergence"]["tap"] == "farfield"
    assert (tmp_path / "case" / "report.html").is_file()
    clean = parity.run_case(physics_case, reference, TorchBackend(), tolerances)
    assert clean.passed and clean.diagnoses == []
