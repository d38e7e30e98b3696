"""A pipeline with a batch-global tap (simulate's intensity scale) still runs in chunks: two passes.

The first pass combines the chunks' values of the global tap into the whole batch's; the second is
the ordinary chunked run, with each side's global tap pinned to that value and the stages that read
it run again. Verdicts and errors must be those of the whole-batch run; a port bug in the global
stage must still be found there; an adapter that does not compute the tap as the registry does
falls back to one chunk.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from backends.common.config import resolve_config
from backends.common.taps import pipeline_taps
from parity.builtin_cases import builtin_case
from parity.chunks import plan
from parity.global_taps import _usable, combine_chunks, global_specs
from parity.runner import RunOptions, run_case

pytest.importorskip("backends.tf", reason="TensorFlow (the reference) is not installed")
torch = pytest.importorskip("torch")

from backends.torch import TorchBackend  # noqa: E402

CASE = "simulate-n32-f64"  # float64, 6 scan positions: chunks of 2 make three


def _scale_spec():
    return next(spec for spec in pipeline_taps("simulate", resolve_config({})) if spec.reduction == "global")


def test_chunk_values_combine_into_the_whole_batch_value():
    rng = np.random.default_rng(np.random.PCG64(3))
    per_pattern = rng.uniform(0.5, 2.0, size=10)
    nphotons = 1e9
    whole = np.sqrt(nphotons / per_pattern.mean())
    parts = [(np.float64(np.sqrt(nphotons / chunk.mean())), chunk.size) for chunk in np.split(per_pattern, [3, 4])]
    combined = combine_chunks(_scale_spec(), parts)
    assert combined.dtype == np.float64 and combined == pytest.approx(whole, rel=1e-14)
    assert combine_chunks(_scale_spec(), [(np.float32(2.0), 1)]).dtype == np.float32
    # as one whole-batch run: a chunk of zero power (infinite scale) adds nothing, an infinite mean gives 0, NaN spreads
    assert combine_chunks(_scale_spec(), [(np.inf, 2), (np.float64(2.0), 2)]) == pytest.approx(2.0 * np.sqrt(2.0))
    assert combine_chunks(_scale_spec(), [(np.float64(0.0), 2), (np.float64(1.0), 2)]) == 0.0
    assert np.isnan(combine_chunks(_scale_spec(), [(np.float64(np.nan), 1), (np.float64(1.0), 2)]))
    assert combine_chunks(dataclasses.replace(_scale_spec(), combine=""), parts) is None
    assert combine_chunks(_scale_spec(), [(np.ones(2), 1)]) is None and combine_chunks(_scale_spec(), [(3, 1)]) is None


def test_plan_cuts_a_global_pipeline_only_when_asked():
    cfg = resolve_config({"N": 32})
    specs = pipeline_taps("simulate", cfg)
    assert plan("simulate", specs, cfg, 6, max_samples=2) == [(0, 6)]
    assert plan("simulate", specs, cfg, 6, max_samples=2, split_global=True) == [(0, 2), (2, 4), (4, 6)]


def test_an_adapter_must_compute_the_global_tap_and_read_it_as_the_registry_does():
    registry = pipeline_taps("simulate", resolve_config({}))
    names = {spec.name for spec in global_specs(registry)}
    assert _usable(registry, registry, names)
    assert not _usable([spec for spec in registry if spec.name not in names], registry, names)
    fused = [dataclasses.replace(spec, inputs=("amplitude", "exit_wave")) if spec.name == "sim.intensity" else spec
             for spec in registry]
    assert not _usable(fused, registry, names)


def test_a_chunked_run_judges_as_the_whole_batch(reference, candidate, tolerances):
    case = builtin_case(CASE)
    whole = run_case(case, reference, candidate, tolerances)
    chunked = run_case(case, reference, candidate, tolerances, RunOptions(batch_chunk=2))
    assert "global_pass_s" in chunked.timing and "global_pass_s" not in whole.timing
    assert whole.passed and chunked.passed
    # more chunks than the joined check sees: the report says what a chunked run cannot judge
    assert any("a statistic that goes wrong only over more than 4 samples at once is not seen" in note
               for note in chunked.notes), chunked.notes
    assert not any("whole-batch statistics" in note for note in whole.notes)
    for a, b in zip(whole.taps, chunked.taps):
        for mode in ("propagated", "isolated"):
            ma, mb = a.modes[mode].metrics, b.modes[mode].metrics
            assert mb.reference_peak == pytest.approx(ma.reference_peak, rel=1e-12), (a.name, mode)
            assert mb.max_rel_to_peak <= max(ma.max_rel_to_peak, 0) + 1e-13, (a.name, mode)


def test_a_chunked_golden_check_pins_the_candidate_only(candidate, tolerances, tmp_path):
    from parity.goldens import Golden
    from parity.workflows import record_golden

    case = builtin_case(CASE)
    golden = Golden(record_golden(case, TorchBackend("cpu"), tmp_path))
    report = run_case(case, golden, candidate, tolerances, RunOptions(batch_chunk=2))
    assert report.passed and "global_pass_s" in report.timing
    scale = next(tap for tap in report.taps if tap.name == "sim.intensity_scale")
    assert scale.modes["propagated"].metrics.max_rel_to_peak <= 1e-14


class _ScaleOff(TorchBackend):
    """A port bug in the global stage itself: the scale 0.1% high."""

    name = "scale-off"

    def __init__(self, device: str = "cpu") -> None:
        super().__init__(device)
        original = self.stages["sim_intensity_scale"]
        self.stages["sim_intensity_scale"] = lambda ctx, wave: original(ctx, wave) * 1.001


class _FusedIntensity(TorchBackend):
    """sim.intensity computes its own scale from the chunk's exit wave (does not read sim.intensity_scale)."""

    name = "fused-intensity"

    def __init__(self, device: str = "cpu") -> None:
        super().__init__(device)
        scale = self.stages["sim_intensity_scale"]
        self.stages["sim_intensity"] = lambda ctx, amp, wave: (scale(ctx, wave) * amp) ** 2

    def graph(self, pipeline, cfg):
        return [dataclasses.replace(spec, inputs=("amplitude", "exit_wave")) if spec.name == "sim.intensity" else spec
                for spec in super().graph(pipeline, cfg)]


class _RefusesAlone(TorchBackend):
    """Computes everything in its pipeline, but running ``tap`` alone raises ``error``."""

    name = "refuses-alone"

    def __init__(self, tap: str, error: BaseException, device: str = "cpu") -> None:
        super().__init__(device)
        self.refused, self.error = tap, error

    def run_stage(self, tap, pipeline, cfg, stage_inputs, weights=None):
        if tap == self.refused:
            raise self.error
        return super().run_stage(tap, pipeline, cfg, stage_inputs, weights)


def test_an_adapter_that_cannot_run_the_readers_alone_runs_as_one_chunk(reference, tolerances):
    """Cannot run sim.intensity alone (what the second pass needs)."""
    adapter = _RefusesAlone("sim.intensity", NotImplementedError("sim.intensity runs only inside the pipeline"))
    report = run_case(builtin_case(CASE), reference, adapter, tolerances, RunOptions(batch_chunk=2))
    intensity = next(tap for tap in report.taps if tap.name == "sim.intensity")
    assert intensity.modes["propagated"].status == "passed", intensity.modes["propagated"]
    assert intensity.modes["isolated"].skip_kind is not None  # cannot isolate: said, not failed
    assert report.passed


class _SumScale(TorchBackend):
    """A batch-size-dependent bug in the global stage: a sum where the spec has a mean."""

    name = "sum-scale"

    def __init__(self, device: str = "cpu") -> None:
        super().__init__(device)

        def scale(ctx, wave):
            power = torch.sum(wave.real**2 + wave.imag**2)
            return torch.sqrt(torch.as_tensor(ctx.cfg.nphotons, dtype=power.dtype) / power)

        self.stages["sim_intensity_scale"] = scale


@pytest.mark.parametrize("chunk", [1, 2])
def test_a_batch_dependent_global_stage_is_judged_on_the_whole_batch(reference, tolerances, chunk):
    """Its chunk values do not combine to its whole-batch value: the first pass sees that (joined chunks)
    and the run goes as one chunk, with the whole-batch verdict and error, and says why."""
    case = builtin_case(CASE)
    whole = run_case(case, reference, _SumScale(), tolerances)
    chunked = run_case(case, reference, _SumScale(), tolerances, RunOptions(batch_chunk=chunk))
    assert not whole.passed and not chunked.passed
    errors = [next(t for t in report.taps if t.name == "sim.intensity_scale").modes["propagated"].metrics.max_abs_error
              for report in (whole, chunked)]
    assert errors[0] == errors[1]
    assert any("not in chunks" in note and "sim.intensity_scale" in note for note in chunked.notes), chunked.notes


class _RaisingIsolatedScale(_RefusesAlone):
    """Right in its pipeline (its exit wave 1e-13 off, so isolated mode runs the next stage again); its global
    stage run alone raises."""

    def __init__(self, device: str = "cpu") -> None:
        super().__init__("sim.intensity_scale", ValueError("no scale on its own"), device)
        wave = self.stages["exit_wave"]
        self.stages["exit_wave"] = lambda ctx, *args: wave(ctx, *args) * (1 + 1e-13)


def test_a_global_stage_failing_alone_fails_in_chunks_too(reference, tolerances):
    for options in (RunOptions(), RunOptions(batch_chunk=2)):
        report = run_case(builtin_case(CASE), reference, _RaisingIsolatedScale(), tolerances, options)
        isolated = next(t for t in report.taps if t.name == "sim.intensity_scale").modes["isolated"]
        assert not report.passed and isolated.error_kind == "raised" and "no scale on its own" in isolated.error
    # propagated mode alone never runs it alone: chunked, it passes as the whole batch does
    options = RunOptions(batch_chunk=2, modes=("propagated",))
    assert run_case(builtin_case(CASE), reference, _RaisingIsolatedScale(), tolerances, options).passed


class _WritesPositions(TorchBackend):
    """Adds 0.5 to the scan positions it is given (read-only: it raises)."""

    name = "writes-positions"

    def run_pipeline(self, pipeline, cfg, inputs, weights=None, sink=None, taps=None):
        inputs["scan_positions"] += 0.5
        return super().run_pipeline(pipeline, cfg, inputs, weights, sink, taps)


def test_the_first_pass_hands_out_read_only_inputs(reference, tolerances):
    case = builtin_case(CASE)
    before = np.array(case.inputs["scan_positions"], copy=True)
    report = run_case(case, reference, _WritesPositions(), tolerances, RunOptions(batch_chunk=2))
    assert not report.passed and np.array_equal(case.inputs["scan_positions"], before)


def test_on_exact_inputs_the_global_stage_is_not_run_again_in_chunks(reference, tolerances):
    """As in a whole-batch run, a stage fed bitwise its own pipeline's inputs is not run alone again."""
    refused = AssertionError("run alone although its inputs were exactly its own pipeline's")
    for options in (RunOptions(), RunOptions(batch_chunk=2)):
        adapter = _RefusesAlone("sim.intensity_scale", refused)
        assert run_case(builtin_case(CASE), reference, adapter, tolerances, options).passed


def test_a_run_comparing_neither_the_global_tap_nor_its_readers_takes_one_pass(reference, candidate, tolerances):
    report = run_case(builtin_case(CASE), reference, candidate, tolerances,
                      RunOptions(batch_chunk=2, taps=("amplitude",)))
    assert report.passed and "global_pass_s" not in report.timing


def test_a_wrong_global_stage_is_found_there_in_chunks(reference, tolerances):
    report = run_case(builtin_case(CASE), reference, _ScaleOff(), tolerances, RunOptions(batch_chunk=2))
    assert not report.passed and "global_pass_s" in report.timing
    assert report.first_divergence.tap == "sim.intensity_scale"
    scale = next(tap for tap in report.taps if tap.name == "sim.intensity_scale")
    assert scale.modes["isolated"].metrics.max_rel_to_peak == pytest.approx(1e-3, rel=1e-6)


def test_an_adapter_that_fuses_the_global_tap_runs_as_one_chunk(reference, tolerances):
    report = run_case(builtin_case(CASE), reference, _FusedIntensity(), tolerances, RunOptions(batch_chunk=2))
    # in chunks its sim.intensity would use each chunk's scale and fail; as one chunk it is right
    assert report.passed, [(tap.name, tap.modes["propagated"].metrics) for tap in report.taps]
    assert "global_pass_s" in report.timing and any("not in chunks" in note for note in report.notes)


class _PipelineOnlyIntensityBug(TorchBackend):
    """sim.intensity wrong only on the pipeline path (a fused forward): run alone it is right."""

    name = "pipeline-only-intensity-bug"

    def run_pipeline(self, pipeline, cfg, inputs, weights=None, sink=None, taps=None):
        def skewed(spec, value):
            if spec.name == "sim.intensity":
                value = np.asarray(value) ** 1.001
            sink(spec, value)

        return super().run_pipeline(pipeline, cfg, inputs, weights, skewed if sink is not None else None, taps)


def test_a_bug_on_the_pipeline_path_of_a_reader_is_not_hidden_by_chunks(reference, tolerances):
    """Pass 2 runs the readers of the global tap alone; pass 1 checks that they give what the pipeline gives."""
    for options in (RunOptions(), RunOptions(batch_chunk=2)):
        report = run_case(builtin_case(CASE), reference, _PipelineOnlyIntensityBug(), tolerances, options)
        intensity = next(t for t in report.taps if t.name == "sim.intensity")
        assert not report.passed and intensity.modes["propagated"].status == "failed", options
    assert any("run alone differs" in note for note in report.notes), report.notes


def test_a_wrong_scale_stays_on_the_scale_in_chunks_with_exact_readers(tolerances):
    """With a Torch reference the amplitude is bitwise the reference's: isolated sim.intensity must still run
    on the reference's scale (not reuse the propagated value built on the candidate's wrong one)."""
    for options in (RunOptions(), RunOptions(batch_chunk=2)):
        report = run_case(builtin_case(CASE), TorchBackend("cpu"), _ScaleOff(), tolerances, options)
        intensity = next(t for t in report.taps if t.name == "sim.intensity").modes["isolated"]
        assert intensity.status == "passed", (options, intensity)
        assert report.first_divergence.tap == "sim.intensity_scale"
