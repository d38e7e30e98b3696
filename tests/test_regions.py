"""backends.common.regions: the covered region of the canvas taps, from the positions alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from backends.common.config import resolve_config
from backends.common.constants import CANVAS_EPSILON, centre_mask
from backends.common.regions import CANVAS_TAPS, COVERED_THRESHOLD, coverage, tap_regions, translate
from backends.common.taps import tap_index
from backends.torch import TorchBackend
from backends.torch.ops import centred_offsets
from backends.torch.ops import translate as torch_translate
from parity.builtin_cases import builtin_case
from parity.synthetic import pipeline_inputs


def test_translate_matches_the_torch_backend():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(5, 9, 11))
    shifts = np.array([[0.0, 0.0], [1.25, -2.5], [-3.7, 0.4], [12.0, 0.0], [0.5, 20.3]])
    want = torch_translate(torch.from_numpy(images), torch.from_numpy(shifts)).numpy()
    np.testing.assert_allclose(translate(images, shifts), want, rtol=0, atol=1e-14)
    assert np.all(translate(images, shifts)[3][:, :12] == 0)  # moved entirely out of the image


@pytest.mark.parametrize("knobs", [{}, {"offset": 7, "N": 32}, {"gridsize": 1}])
def test_coverage_is_the_canvas_divisor(knobs):
    """The overlap count the Torch backend divides by (minus its 0.001), recomputed here in float64."""
    cfg = resolve_config({**knobs, "dtype": "float64"})
    positions = pipeline_inputs("physics", cfg, 3, 5)["positions"]
    offsets = torch.from_numpy(positions[:, 0].transpose(0, 2, 1).copy())
    shifts = (-centred_offsets(offsets)).reshape(-1, 2)
    mask = F.pad(torch.from_numpy(centre_mask(cfg.N)), (cfg.k,) * 4)[None]
    count = torch_translate(mask, shifts).reshape(3, cfg.C, cfg.P, cfg.P).sum(1).numpy()
    np.testing.assert_allclose(coverage(cfg, positions), count, rtol=0, atol=1e-12)
    # and the canvas of constant patches is large exactly where the count is small
    inputs = pipeline_inputs("physics", cfg, 3, 5)
    inputs["object_patches"] = np.ones_like(inputs["object_patches"])
    canvas = TorchBackend().run_all("physics", cfg, inputs)["object.canvas"][..., 0]
    covered = coverage(cfg, positions) >= COVERED_THRESHOLD
    assert np.abs(canvas[covered]).max() <= cfg.C / (COVERED_THRESHOLD + CANVAS_EPSILON) + 1e-9
    assert np.abs(canvas[~covered]).max() > 100


@pytest.mark.parametrize("case_name", ["physics-default", "pinn-default", "pinn-n32-single-patch",
                                       "physics-n32-edge-offsets-f64"])
def test_tap_regions_shapes_and_partition(case_name):
    case = builtin_case(case_name)
    index = tap_index(case.pipeline, case.config)
    for name, spec in index.items():
        regions = tap_regions(spec, case.config, case.inputs)
        if name not in CANVAS_TAPS:
            assert regions == {}, name
            continue
        shape = spec.shape(case.config, case.batch)
        assert set(regions) == {"covered", "uncovered"}
        assert regions["covered"].shape == shape and regions["covered"].dtype == bool
        assert np.array_equal(regions["uncovered"], ~regions["covered"])
        assert 0.1 < regions["covered"].mean() <= 1.0, (name, regions["covered"].mean())
    if not case.config.object_big:  # one padded patch: its footprint is covered, the zero padding is not
        canvas = tap_regions(index["object.canvas"], case.config, case.inputs)["covered"]
        k, n = case.config.k, case.config.N
        assert canvas[:, k:k + n, k:k + n].all() and canvas.sum() == case.batch * n * n


def test_covered_extracted_pixels_read_only_covered_canvas_pixels():
    """Where extraction interpolates across the coverage edge, the x1000 values leak in: not covered."""
    case = builtin_case("physics-default")
    index = tap_index(case.pipeline, case.config)
    taps = TorchBackend().run_all(case.pipeline, case.config, case.inputs)
    canvas = tap_regions(index["object.canvas"], case.config, case.inputs)["covered"]
    extracted = tap_regions(index["patches.extracted"], case.config, case.inputs)["covered"]
    covered_peak = np.abs(taps["object.canvas"][canvas]).max()
    assert np.abs(taps["patches.extracted"][extracted]).max() <= covered_peak * (1 + 1e-6)
    assert np.abs(taps["object.canvas"][~canvas]).max() > 100 * covered_peak
