"""Diagnoses for port bugs a catalog of realistic TF -> PyTorch mistakes found unexplained or misnamed: a network
computed in float32 inside a float64 run, an exact one-pixel shift of feature maps with faint channels, a scale
summed over the batch's positions, dropout left in training mode, and a real map that differs by region (not a
divisor). Synthetic arrays, no framework."""

from __future__ import annotations

import numpy as np

from backends.common.config import resolve_config
from parity.diagnosis import diagnose
from parity.synthetic import generator, smooth_field

CFG = resolve_config({"N": 32, "gridsize": 2, "dtype": "float64"})


def _features(seed: int, shape=(2, 16, 16, 8)) -> np.ndarray:
    """ReLU-like feature maps: smooth, non-negative, many exact zeros."""
    rng = generator(seed)
    k, h, w, c = shape
    out = np.empty(shape)
    for b in range(k):
        for ch in range(c):
            out[b, :, :, ch] = np.maximum(smooth_field(rng, (h, w), 3.0) - 0.4, 0.0)
    return out


def _kinds(diagnoses):
    return [d.kind for d in diagnoses]


def test_a_stage_computed_in_float32_in_a_float64_run_is_named_from_its_values():
    """Its values are float32 numbers: the rerun on rounded inputs (which cannot round weights) is not needed."""
    rng = generator(1)
    a = rng.normal(size=(2, 16, 16, 8))
    b = a.astype(np.float32).astype(np.float64)
    b = (a * (1 + rng.normal(scale=6e-8, size=a.shape))).astype(np.float32).astype(np.float64)  # float32 math

    def rerun(inputs):  # the reference on rounded inputs errs far less than the candidate
        return a * (1 + 1e-9)

    found = diagnose(a, b, layout="BHWC", kind="real", tolerance=1e-12, cfg=CFG, stage_inputs={"x": a},
                     input_layouts={"x": "BHWC"}, rerun=rerun, reference_dtype="float64", candidate_dtype="float64")
    assert found and found[0].kind == "dtype_narrowing", [d.summary for d in found]
    assert "the candidate's values are float32 numbers" in found[0].summary


def test_a_one_pixel_shift_is_found_though_some_channels_are_nearly_empty():
    a = _features(2)
    a[..., 5] *= 1e-4  # a near-empty feature map: its phase correlation is noise
    a[..., 6] = 0.0
    b = np.zeros_like(a)
    b[:, :-1, :-1] = a[:, 1:, 1:]  # 'same' padding all put at the bottom/right: the map moves by one pixel
    found = diagnose(a, b, layout="BHWC", kind="real", tolerance=1e-5, cfg=CFG)
    assert found[0].kind == "shift", [d.summary for d in found]
    assert "(x -1, y -1) px" in found[0].summary and "per channel" not in found[0].summary, found[0].summary


def test_a_scale_summed_over_the_batch_where_the_mean_is_meant_is_named_by_the_batch_size():
    positions = 6
    a = np.array(0.75)
    b = a / np.sqrt(positions)  # c / sqrt(sum) where c / sqrt(mean) is meant
    found = diagnose(a, b, layout="scalar", kind="real", tolerance=1e-12, cfg=CFG, batch=positions)
    assert found[0].kind == "scale" and "1/sqrt(M)" in found[0].summary, [d.summary for d in found]
    assert f"the batch's {positions} samples" in found[0].summary
    per_sample = np.array([0.5, 0.7])  # a per-sample loss doubled: a factor 2, not "a sum over 2 samples"
    found = diagnose(per_sample, 2 * per_sample, layout="B", kind="real", tolerance=1e-12, cfg=CFG)
    assert "batch" not in " ".join(d.summary for d in found), [d.summary for d in found]


def test_dropout_left_in_training_mode_is_named():
    rng = generator(3)
    a = _features(4, (2, 16, 16, 32))
    keep = rng.uniform(size=a.shape) >= 0.1
    b = np.where(keep, a / 0.9, 0.0) * (1 + rng.normal(scale=1e-7, size=a.shape))  # and a port's own rounding
    found = diagnose(a, b, layout="BHWC", kind="real", tolerance=1e-5, cfg=CFG)
    assert found[0].kind == "dropout" and "1/(1-0.1)" in found[0].summary, [d.summary for d in found]


def test_a_real_map_that_differs_by_region_is_not_called_a_divisor():
    """relu where swish belongs on a border branch: a per-position gain fits part of it, and is no explanation."""
    a = _features(5) + 0.05
    b = a.copy()
    b[:, :3] = a[:, :3] / (1 + np.exp(-a[:, :3]))  # another activation on the border rows
    found = diagnose(a, b, layout="BHWC", kind="real", tolerance=1e-5, cfg=CFG)
    assert "normalisation" not in _kinds(found), [d.summary for d in found]


def test_each_sample_scaled_on_its_own_is_a_factor_per_sample():
    """Each pattern normalised to its own total where one batch-wide scale is meant."""
    a = _features(6, (4, 16, 16, 1)) + 0.1
    factors = np.array([1.25, 0.87, 1.12, 1.01])
    found = diagnose(a, a * factors[:, None, None, None], layout="BHWC", kind="real", tolerance=1e-6, cfg=CFG)
    assert found[0].kind == "scale" and "a factor per sample (1.25, 0.87, 1.12, 1.01)" in found[0].summary, [
        d.summary for d in found]
