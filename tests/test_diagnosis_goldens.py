"""Diagnosis against goldens (``parity check``, the GPU machine's path): a golden holds no code, so the
built-in Torch stages rerun a failing stage on transformed inputs instead, but only where they reproduce the
golden's own output of that stage (a golden of another reference is never explained by code not its own)."""

from __future__ import annotations

import numpy as np
import torch

from backends.torch import TorchBackend
from backends.torch import stages as torch_stages
from parity import RunOptions, builtin_case
from parity.diagnose_run import Kept, _reproduces
from parity.workflows import DEFAULT_GOLDENS, check_against_golden, open_golden


def _checked(case_name, candidate, tolerances, tmp_path):
    with open_golden(builtin_case(case_name), DEFAULT_GOLDENS, tolerances) as opened:
        return check_against_golden(opened, candidate, tolerances, RunOptions(), tmp_path)


def _positions_half_pixel_off(ctx, obj, scan_positions):
    return torch_stages.sim_patches(ctx, obj, scan_positions + 0.5)


def test_an_input_hypothesis_is_tested_against_a_golden(tolerances, tmp_path):
    candidate = TorchBackend().with_stage("sim_patches", _positions_half_pixel_off)
    report = _checked("simulate-n32-f64", candidate, tolerances, tmp_path)
    assert report.first_divergence.tap == "sim.patches"
    best = report.diagnoses[0]
    assert best.kind == "offset_half_pixel" and best.residual < 1e-12, best.summary
    assert "not tested here" not in best.summary


def _positions_swapped_in_reassembly(ctx, patches, positions):
    return torch_stages.object_canvas(ctx, patches, positions.flip(-1))  # (x, y) read as (y, x)


def test_a_golden_check_names_an_offset_order_bug(tolerances, tmp_path):
    candidate = TorchBackend().with_stage("object_canvas", _positions_swapped_in_reassembly)
    report = _checked("physics-n32-edge-offsets-f64", candidate, tolerances, tmp_path)
    assert report.first_divergence.tap == "object.canvas"
    assert report.diagnoses[0].kind == "offset_swap_xy", [d.summary for d in report.diagnoses]


def test_a_stand_in_that_does_not_reproduce_the_golden_is_not_used():
    reference = np.arange(12.0).reshape(3, 4)
    kept = Kept(reference, reference + 1, {"x": reference}, [0, 1, 2])
    assert _reproduces(lambda inputs: inputs["x"], kept, 1e-12)
    assert not _reproduces(lambda inputs: inputs["x"] * (1 + 1e-6), kept, 1e-12)
    assert not _reproduces(lambda inputs: inputs["x"][:2], kept, 1e-12)

    def raises(inputs):
        raise RuntimeError("a stage the stand-in lacks")
    assert not _reproduces(raises, kept, 1e-12)


def test_own_goldens_of_another_reference_keep_the_caveat(tolerances, tmp_path):
    """A golden whose stage the built-in code does not reproduce (here: a reference that scales its canvas)
    is diagnosed from the outputs alone, and says what went untested."""
    from parity.workflows import record_golden

    case = builtin_case("physics-n32-edge-offsets-f64")

    def scaled_canvas(ctx, patches, positions):
        return torch_stages.object_canvas(ctx, patches, positions) * 1.5

    other_reference = TorchBackend().with_stage("object_canvas", scaled_canvas)
    folder = tmp_path / "goldens"
    record_golden(case, other_reference, folder)
    candidate = TorchBackend().with_stage("object_canvas", _positions_swapped_in_reassembly)
    with open_golden(case, folder, tolerances) as opened:
        report = check_against_golden(opened, candidate, tolerances, RunOptions(), tmp_path / "out")
    assert report.first_divergence.tap == "object.canvas"
    assert "offset_swap_xy" not in [d.kind for d in report.diagnoses]
    assert any("not tested here" in d.summary for d in report.diagnoses)
    assert torch.is_tensor(torch.zeros(1))  # Torch ran the candidate; the stand-in was simply refused


def test_torch_default_softplus_is_one_function_of_the_value_not_a_masked_region(tolerances, tmp_path, monkeypatch):
    """F.softplus switches to the identity at x > 20, TensorFlow (and the built-in port) at -(log(eps) + 2):
    the decoder's large values move by up to 2e-9 next to its zeros. A band grown around those zeros may
    hold most of the tap and its worst element; the diagnosis must still be the pointwise function."""
    from backends.torch import network

    monkeypatch.setitem(network.ACTIVATIONS, "softplus", torch.nn.functional.softplus)
    report = _checked("pinn-n32-softplus-switch-f64", TorchBackend(), tolerances, tmp_path)
    assert report.first_divergence.tap == "decoder.amp"
    kinds = [diagnosis.kind for diagnosis in report.diagnoses]
    assert kinds[0] == "elementwise" and "masked_region" not in kinds, kinds


def _fft_over_channels_and_rows(ctx, wave):
    """fft2 over (C, H) of a channels-first wave: a layout slip, not a padding difference."""
    return torch_stages.scale_complex(torch.fft.fft2(wave, dim=(1, 2)), torch_stages._scalar(ctx, 1.0 / ctx.cfg.N))


def test_a_transform_over_the_wrong_axes_is_not_called_an_edge_difference(tolerances, tmp_path):
    # an unshifted spectrum holds its largest values at the border, so most of any error is there too
    candidate = TorchBackend().with_stage("farfield", _fft_over_channels_and_rows)
    report = _checked("pinn-n32-single-patch", candidate, tolerances, tmp_path)
    assert report.first_divergence.tap == "farfield"
    assert "border_only" not in [diagnosis.kind for diagnosis in report.diagnoses]
