"""parity.diagnosis on synthetic arrays: every hypothesis names what it should, and near misses are never
explained (a guess is worse than "unexplained").

The rerun hypotheses use a small NumPy "stage" (each channel of a patch stack moved by its centred
offset), so no framework is needed here; the real stages are exercised by tests/test_selftest.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from backends.common.config import resolve_config
from parity.diagnosis import UNEXPLAINED, diagnose
from parity.diagnosis_shift import translate
from parity.synthetic import generator, smooth_field

CFG = resolve_config({"N": 32, "gridsize": 2, "intensity_scale": 2.5})


def kinds(diagnoses):
    return [d.kind for d in diagnoses]


def field(seed: int, shape=(2, 32, 32, 4), complex_=True) -> np.ndarray:
    """Smooth random images (k, H, W, C): amplitude in [0.5, 1], phase in [-1, 1] (or real)."""
    rng = generator(seed)
    k, h, w, c = shape
    out = np.empty(shape, complex if complex_ else float)
    for b in range(k):
        for ch in range(c):
            amplitude = 0.5 + 0.5 * smooth_field(rng, (h, w), 4.0)
            phase = 2 * smooth_field(rng, (h, w), 4.0) - 1
            out[b, :, :, ch] = amplitude * np.exp(1j * phase) if complex_ else amplitude * phase
    return out


def run(a, b, layout="BHWC", tolerance=1e-6, **kw):
    return diagnose(a, b, layout=layout, kind="complex" if np.iscomplexobj(a) else "real", tolerance=tolerance,
                    cfg=kw.pop("cfg", CFG), **kw)


# ---- nothing to explain, and nothing explains ----

def test_identical_arrays_need_no_diagnosis():
    a = field(0)
    assert run(a, a.copy()) == []


@pytest.mark.parametrize("make", [
    pytest.param(lambda a, rng: a + 0.1 * (rng.normal(size=a.shape) + 1j * rng.normal(size=a.shape)), id="noise"),
    pytest.param(lambda a, rng: field(99), id="unrelated"),
    pytest.param(lambda a, rng: a * (1 + 0.3 * rng.uniform(size=a.shape)) * np.exp(0.2j * rng.normal(size=a.shape)),
                 id="random-gain-and-phase"),
])
def test_an_unrelated_difference_is_unexplained(make):
    a = field(1)
    found = run(a, make(a, generator(5)))
    assert kinds(found) == [UNEXPLAINED]
    assert found[0].summary == "no hypothesis explains it"
    assert found[0].evidence["tested"]  # says what it tried, the level hypotheses included
    assert {"scale", "dtype_narrowing", "numerical_alternative"} <= set(found[0].evidence["tested"])


def test_diagnoses_serialise_to_strict_json():
    a = field(2)
    for diagnosis in run(a, 32 * a) + run(a, a + 0.1):
        json.dumps(diagnosis.to_dict(), allow_nan=False)


# ---- constant factors ----

@pytest.mark.parametrize("factor, name", [(32.0, "N"), (1 / 32, "1/N"), (2.5, "s"), (1 / 2.5, "1/s"), (6.25, "s^2"),
                                          (2.0, "2"), (-1.0, "-1")])
def test_a_named_scale_is_named(factor, name):
    a = field(3)
    found = run(a, factor * a)
    assert kinds(found)[0] == "scale"
    assert found[0].evidence["named"] == name
    assert found[0].residual < 1e-12


def test_an_unnamed_scale_gives_its_value_and_a_phase_factor_its_angle():
    a = field(4)
    found = run(a, 1.37 * a)
    assert kinds(found) == ["scale"] and "1.37" in found[0].summary and found[0].evidence["named"] is None
    found = run(a, np.exp(0.3j) * a)
    assert kinds(found) == ["scale"] and "exp(i 0.3)" in found[0].summary


def test_the_probe_norm_is_named_from_an_illumination_input():
    a, probe = field(5), field(6, (1, 32, 32, 1))[0, :, :, 0]
    norm = np.sqrt(np.sum(np.abs(probe) ** 2))
    found = run(a, a / norm, stage_inputs={"probe": probe}, input_layouts={"probe": "HW"})
    assert found[0].kind == "scale" and found[0].evidence["named"] == "1/||probe||_2"


def test_a_position_dependent_gain_is_not_a_scale():
    a = field(7)
    gain = 1 + 0.2 * smooth_field(generator(8), (32, 32), 4.0)[None, :, :, None]
    found = run(a * 0 + a.real, (a * 0 + a.real) * gain)  # real data, the same gain map everywhere
    assert "scale" not in kinds(found)
    assert kinds(found) == ["normalisation"]


def test_a_per_sample_loss_summed_where_it_is_averaged_is_named_as_such():
    losses = np.abs(generator(11).normal(size=8)) + 0.1
    elements = CFG.C * CFG.N**2  # 4096 here: not N^2, so no FFT norm can be read into it
    found = run(losses, losses * elements, layout="B")
    assert found[0].kind == "scale" and found[0].evidence["named"] == "C N^2", found[0].summary
    assert "a sum over a sample's C x N x N elements where their mean is meant" in found[0].summary


def test_a_small_scale_under_larger_noise_is_not_a_scale():
    a = field(9)
    noise = 0.05 * generator(10).normal(size=a.shape)
    assert "scale" not in kinds(run(a, 1.02 * a * (1 + noise)))


def test_a_dominant_scale_with_noise_left_over_says_so():
    a = field(9)
    noise = 0.002 * generator(10).normal(size=a.shape)
    found = run(a, 32 * a * (1 + noise))
    assert found[0].kind == "scale" and found[0].evidence["named"] == "N"
    assert "something else differs too" in found[0].summary and 1e-3 < found[0].residual < 1e-2


def test_a_huge_error_mostly_removed_is_not_explained_when_much_of_the_peak_is_left():
    a = np.abs(field(9)) * 40
    found = run(a, a**2)  # 99.9% of a x40 error is "a scale", but 1.5x the peak is left: it is a square
    assert "scale" not in kinds(found)
    assert kinds(found)[0] == "power"  # named for what it is (before the power hypothesis: elementwise)


def test_a_scalar_ratio_is_only_a_scale_when_named():
    assert kinds(run(np.array(3.0), np.array(3.0 * 32), layout="scalar"))[0] == "scale"
    assert kinds(run(np.array(3.0), np.array(3.0 * 1.9), layout="scalar")) == [UNEXPLAINED]
    assert kinds(run(np.array([1.0, 2.0]), np.array([1.7, 3.9]), layout="B")) == [UNEXPLAINED]


# ---- complex conjugation ----

def test_conjugation_and_swapped_parts():
    a = field(11)
    assert kinds(run(a, np.conj(a)))[0] == "conjugate"
    swapped = run(a, a.imag + 1j * a.real)
    assert swapped[0].kind == "conjugate" and "swapped" in swapped[0].summary


def test_a_phase_that_changes_by_position_is_not_a_conjugation():
    a = field(12)
    ramp = np.exp(1j * np.linspace(0, 0.5, 32))[None, None, :, None]
    assert "conjugate" not in kinds(run(a, a * ramp))


# ---- rearrangements of the spatial axes ----

def test_transposed_spatial_axes():
    a = field(13)
    assert kinds(run(a, np.swapaxes(a, 1, 2)))[0] == "transpose"


def test_one_transposed_sample_is_not_a_transpose():
    a = field(14)
    b = a.copy()
    b[0] = np.swapaxes(a[0], 0, 1)
    assert "transpose" not in kinds(run(a, b))


def test_mirrored_axes_and_an_inverse_fft():
    a = field(51)
    assert kinds(run(a, a[:, ::-1]))[0] == "mirror"
    spectrum = np.fft.fft2(field(52), axes=(1, 2))
    inverse = np.fft.ifft2(field(52), axes=(1, 2)) * 32 * 32
    found = run(spectrum, inverse)
    assert found[0].kind == "mirror" and found[0].evidence["circular"] and "inverse FFT" in found[0].summary


def test_a_missing_fftshift():
    a = field(15)
    assert kinds(run(a, np.fft.fftshift(a, axes=(1, 2))))[0] == "fftshift"
    one_axis = run(a, np.fft.fftshift(a, axes=(1,)))
    assert one_axis[0].kind == "fftshift" and "row axis only" in one_axis[0].summary


def test_a_roll_by_less_than_half_is_not_an_fftshift():
    a = field(16)
    assert "fftshift" not in kinds(run(a, np.roll(a, (15, 16), axis=(1, 2))))


def _moved(a: np.ndarray, shift_yx) -> np.ndarray:
    out = np.empty_like(a)
    for b in range(a.shape[0]):
        for c in range(a.shape[3]):
            out[b, :, :, c] = translate(a[b, :, :, c], shift_yx)
    return out


@pytest.mark.parametrize("shift_yx", [(2.0, -1.0), (0.3, 0.0), (-1.25, 0.6)])
def test_a_shift_is_measured(shift_yx):
    a = field(17)
    found = run(a, _moved(a, shift_yx))
    assert kinds(found)[0] == "shift"
    measured = np.array(found[0].evidence["shifts_xy"])[:, ::-1]  # back to (y, x)
    assert np.allclose(measured, shift_yx, atol=0.01)


def test_a_smooth_additive_error_is_not_a_shift():
    a = field(18)
    bump = 0.05 * smooth_field(generator(19), (32, 32), 4.0)[None, :, :, None]
    assert "shift" not in kinds(run(a, a + bump))


# ---- channels and the flattened (batch, channel) order ----

def test_channels_in_another_order():
    a = field(20)
    found = run(a, a[..., [0, 2, 1, 3]])
    assert found[0].kind == "channel_permutation" and "column-major" in found[0].summary


def test_channels_first_memory_read_as_channels_last():
    a = field(21)
    k, h, w, c = a.shape
    found = run(a, np.moveaxis(a, 3, 1).reshape(k, h, w, c))
    assert found[0].kind == "channel_permutation" and "channels-first" in found[0].summary


def test_the_flattened_batch_channel_order():
    a = field(22)
    k, h, w, c = a.shape
    images = np.moveaxis(a, 3, 1).reshape(k * c, h, w)
    order = np.arange(k * c).reshape(k, c).T.ravel()
    b = np.moveaxis(images[order].reshape(k, c, h, w), 1, 3)
    found = run(a, b)
    assert found[0].kind == "channel_permutation" and found[0].evidence["batch_crossing"]


def test_a_permutation_with_one_channel_also_rescaled_is_unexplained():
    a = field(23)
    b = a[..., [0, 2, 1, 3]].copy()
    b[..., 1] *= 1.1
    assert "channel_permutation" not in kinds(run(a, b))


# ---- differences confined to a region ----

def _disk(n: int = 32) -> np.ndarray:
    y, x = np.mgrid[0:n, 0:n] - (n / 2 - 0.5)
    return ((x**2 + y**2) < (n // 4) ** 2).astype(float)


def test_a_border_band():
    a = field(24)
    b = a.copy()
    b[:, 0] *= 1.2
    b[:, :, -1] += 0.1
    found = run(a, b)
    assert found[0].kind == "border_only" and found[0].evidence["band_px"] == 1


def test_an_edge_difference_in_many_channels_is_not_called_a_shift():
    """A convolution padded by reflection instead of zeros: every channel differs on its 1-px border only."""
    rng = generator(46)
    a = ndimage.gaussian_filter(rng.normal(size=(2, 16, 16, 64)), (0, 1.5, 1.5, 0))
    b = a.copy()
    b[:, 0], b[:, -1], b[:, :, 0], b[:, :, -1] = a[:, 1], a[:, -2], a[:, :, 1], a[:, :, -2]
    found = kinds(run(a, b, tolerance=1e-5))
    assert "shift" not in found and found[0] == "border_only", found


def test_a_border_band_with_an_interior_pixel_is_not_border_only():
    a = field(25)
    b = a.copy()
    b[:, 0] *= 1.2
    b[1, 16, 16, 2] += 0.3
    assert "border_only" not in kinds(run(a, b))


def test_a_difference_at_the_edge_of_a_mask():
    disk = _disk()
    a = field(26) * disk[None, :, :, None]
    ring = disk - (np.roll(disk, 1, 0) * np.roll(disk, -1, 0) * np.roll(disk, 1, 1) * np.roll(disk, -1, 1))
    b = a * (1 - 0.5 * ring[None, :, :, None])
    found = run(a, b)
    assert "masked_region" in kinds(found)
    assert next(d for d in found if d.kind == "masked_region").evidence["dilation_px"] == 1


def test_a_blob_far_from_any_zero_is_not_a_masked_region():
    disk = _disk()
    a = field(27) * disk[None, :, :, None]
    b = a.copy()
    b[:, 15:17, 15:17] *= 1.3
    assert "masked_region" not in kinds(run(a, b))


def test_a_real_position_dependent_factor_on_complex_data():
    a = field(28)
    gain = 0.5 + smooth_field(generator(29), (32, 32), 3.0)[None, :, :, None]
    found = run(a, a * gain)
    assert kinds(found) == ["normalisation"]


def test_a_gain_that_also_turns_the_phase_is_not_a_normalisation():
    a = field(30)
    gain = 0.5 + smooth_field(generator(31), (32, 32), 3.0)[None, :, :, None]
    assert "normalisation" not in kinds(run(a, a * gain * np.exp(0.05j * generator(32).normal(size=a.shape))))


# ---- elementwise functions and integer wrap-around ----

def test_an_activation_that_differs():
    x = 4 * field(33, complex_=False)
    sigmoid = 1 / (1 + np.exp(-x))
    assert kinds(run(sigmoid, x * sigmoid, tolerance=1e-5))[0] == "elementwise"


def test_the_activations_of_each_side_are_named_where_a_known_pair_fits():
    x = 4 * field(36, complex_=False)
    sigmoid = 1 / (1 + np.exp(-x))
    sigmoid[:, :8], x[:, :8] = 0.0, 0.0  # zero padding around the object, as with pad_object: both sides agree
    swish = x * sigmoid
    found = run(sigmoid, swish, tolerance=1e-5)[0]
    assert found.kind == "elementwise" and found.evidence["activations"] == {"reference": "sigmoid",
                                                                             "candidate": "swish"}
    softplus = np.logaddexp(0, x)
    relu = run(softplus, np.maximum(x, 0), tolerance=1e-5)[0]
    assert relu.evidence["activations"] == {"reference": "softplus", "candidate": "relu"}, relu.summary
    other = run(sigmoid, np.tanh(sigmoid), tolerance=1e-5)[0]  # a function of the value, not a known pair
    assert other.kind == "elementwise" and other.evidence["activations"] is None


def test_an_activation_plus_a_spatial_error_is_not_elementwise():
    x = 4 * field(34, complex_=False)
    sigmoid = 1 / (1 + np.exp(-x))
    bump = 0.1 * smooth_field(generator(35), (32, 32), 3.0)[None, :, :, None]
    assert "elementwise" not in kinds(run(sigmoid, x * sigmoid + bump, tolerance=1e-5))


def test_a_square_wrapping_in_uint16():
    counts = np.round(4e5 * np.abs(field(36, complex_=False)))
    found = run(counts, counts % 65536)
    assert found[0].kind == "overflow" and found[0].evidence["type"] == "uint16"


def test_a_wrap_plus_noise_is_not_an_overflow():
    counts = np.round(4e5 * np.abs(field(37, complex_=False)))
    noisy = (counts % 65536 + 2e4 * generator(38).uniform(size=counts.shape)) % 65536
    assert "overflow" not in kinds(run(counts, noisy))


# ---- facts: NaN/Inf, shapes, dtypes ----

def test_nan_first_appearing_where_the_reference_is_zero():
    a = field(39) * _disk()[None, :, :, None]
    b = np.where(a == 0, np.nan, a)
    found = run(a, b, stage_inputs={"x": np.ones(3)}, input_layouts={"x": "B"})
    assert found[0].kind == "nonfinite"
    assert found[0].evidence["fraction_where_other_is_zero"] == 1.0 and "first appear here" in found[0].summary


def test_a_canvas_of_another_size_names_the_knob():
    cfg = resolve_config({"N": 32, "gridsize": 2, "offset": 4, "buffer": 10})
    a = field(40, (2, cfg.P, cfg.P, 1))
    b = a[:, 5:-5, 5:-5]
    found = run(a, b, cfg=cfg)
    assert kinds(found) == ["shape_mismatch"]
    assert any(knob.startswith("buffer=0") for knob in found[0].evidence["knobs"])
    assert found[0].evidence["common_centre_residual"] == 0.0


def test_a_tensor_delivered_channels_first():
    a = field(41)
    found = run(a, np.transpose(a, (0, 3, 1, 2)))
    assert found[0].kind == "shape_mismatch" and found[0].evidence["axes"] == [0, 2, 3, 1]


def test_a_downcast_in_a_float64_run():
    a = field(42)
    found = run(a, a.astype(np.complex64).astype(np.complex128), tolerance=1e-12)
    assert kinds(found) == ["dtype_narrowing"]
    narrowed = run(a, a.astype(np.complex64), tolerance=1e-12)
    assert narrowed[0].kind == "dtype_narrowing" and narrowed[0].evidence["fact"]


def test_a_smooth_error_at_float32_level_is_not_a_downcast():
    a = field(43)
    bump = 1e-7 * (smooth_field(generator(44), (32, 32), 4.0) - 0.5)[None, :, :, None]
    assert "dtype_narrowing" not in kinds(run(a, a * (1 + bump), tolerance=1e-12))


def test_shot_noise_at_a_rounding_level_is_not_a_downcast():
    """Poisson-like noise grows as sqrt(value), rounding as the value: at 1e9 photons the first can have the
    size of the second (a port that adds noise the reference does not)."""
    rng = generator(45)
    a = np.exp(rng.uniform(np.log(1e3), np.log(1e8), size=(4, 32, 32, 1)))
    scale = 6e-8 / (0.67 * float(np.median(a ** -0.5)))  # median relative error ~ float32's unit roundoff
    noisy = a + np.sqrt(a) * scale * rng.normal(size=a.shape)
    assert "dtype_narrowing" not in kinds(run(a, noisy, tolerance=1e-12))
    assert "dtype_narrowing" in kinds(run(a, a.astype(np.float32).astype(np.float64), tolerance=1e-12))


# ---- input hypotheses through a rerun of the reference stage ----

def placement_stage(inputs) -> np.ndarray:
    """A NumPy stand-in for a translation stage: channel c of each sample moved by its centred offset."""
    images, offsets = inputs["patches"], np.asarray(inputs["positions"], dtype=float)
    centred = offsets - offsets.mean(axis=-1, keepdims=True)
    out = np.empty(images.shape, dtype=images.dtype)
    for b in range(images.shape[0]):
        for c in range(images.shape[3]):
            x, y = centred[b, 0, :, c]
            out[b, :, :, c] = translate(images[b, :, :, c], (y, x))
    return out


@pytest.fixture(scope="module")
def stage_case():
    patches = field(45)
    rng = generator(46)
    positions = np.stack([np.array([[-2.0, 2.0, -2.0, 2.0], [-2.0, -2.0, 2.0, 2.0]]) + rng.uniform(-0.7, 0.7, (2, 4))
                          for _ in range(2)])[:, None]
    return {"patches": patches, "positions": positions}


def run_stage_fault(stage_case, transform, **kw):
    inputs = dict(stage_case)
    reference = placement_stage(inputs)
    candidate = placement_stage(transform(dict(inputs)))
    return run(reference, candidate, stage_inputs=inputs,
               input_layouts={"patches": "BHWC", "positions": "B12C"}, rerun=placement_stage, **kw)


@pytest.mark.parametrize("transform, expected", [
    (lambda i: {**i, "positions": -i["positions"]}, "offset_sign"),
    (lambda i: {**i, "positions": i["positions"] * np.array([-1.0, 1.0])[None, None, :, None]}, "offset_sign"),
    (lambda i: {**i, "positions": i["positions"][:, :, ::-1]}, "offset_swap_xy"),
    (lambda i: {**i, "positions": np.zeros_like(i["positions"])}, "offsets_ignored"),
    (lambda i: {**i, "positions": i["positions"][..., [0, 2, 1, 3]]}, "channel_permutation"),
    (lambda i: {**i, "patches": np.moveaxis(i["patches"], 3, 1).reshape(i["patches"].shape)}, "channel_permutation"),
])
def test_input_hypotheses_reproduce_the_candidate(stage_case, transform, expected):
    found = run_stage_fault(stage_case, transform)
    assert found[0].kind == expected, [d.summary for d in found]
    assert found[0].residual < 1e-12 and found[0].evidence["rerun"]


def test_offsets_off_by_a_tenth_are_no_input_hypothesis(stage_case):
    found = run_stage_fault(stage_case, lambda i: {**i, "positions": 1.1 * i["positions"]})
    assert not {"offset_sign", "offset_swap_xy", "offsets_ignored", "channel_permutation"} & set(kinds(found))


def _float32(inputs):
    return {name: value.astype(np.complex64 if value.dtype.kind == "c" else np.float32)
            for name, value in inputs.items()}


def test_float32_coordinate_noise_is_a_numerical_alternative(stage_case):
    rng = generator(47)

    def jitter(inputs):
        moved = inputs["positions"] + 3e-6 * rng.choice([-1.0, 1.0], inputs["positions"].shape)
        return {**inputs, "positions": moved.astype(np.float32)}

    found = run_stage_fault(_float32(stage_case), jitter, tolerance=1e-7)
    assert kinds(found) == ["numerical_alternative"]
    assert found[0].evidence["equivalent_offset_px"] < 1e-4


def test_float32_coordinates_in_a_float64_run_are_named_a_precision_leak(stage_case):
    rng = generator(49)

    def jitter(inputs):  # float64 everywhere, but the coordinates carry float32-sized noise
        return {**inputs, "positions": inputs["positions"] + 3e-6 * rng.choice([-1.0, 1.0], inputs["positions"].shape)}

    found = run_stage_fault(stage_case, jitter, tolerance=1e-12)
    assert kinds(found) == ["numerical_alternative"]
    assert found[0].evidence["float32_coordinates_in_float64_run"]
    assert "one side computes its sampling coordinates in float32" in found[0].summary


def test_a_small_scale_error_is_not_a_numerical_alternative(stage_case):
    found = run_stage_fault(stage_case, lambda i: i, tolerance=1e-7)  # identical: nothing to explain
    assert found == []
    inputs = dict(stage_case)
    reference = placement_stage(inputs)
    found = run(reference, reference * (1 + 1e-6) + 1e-6 * field(48).real, tolerance=1e-7, stage_inputs=inputs,
                input_layouts={"patches": "BHWC", "positions": "B12C"}, rerun=placement_stage)
    assert "numerical_alternative" not in kinds(found)


def quantising_stage(inputs) -> np.ndarray:
    """A stage whose output barely moves when its input is rounded (a quantiser)."""
    return np.round(inputs["x"] * 64) / 64


def test_a_float32_level_error_needs_the_rerun_to_agree_before_it_is_called_a_dtype():
    x = (0.5 + np.abs(field(49, complex_=False))).astype(np.float32)
    reference = quantising_stage({"x": x})
    noisy = (reference * (1 + 3e-4 * generator(50).normal(size=reference.shape))).astype(np.float32)
    found = run(reference, noisy, tolerance=1e-6, stage_inputs={"x": x}, input_layouts={"x": "BHWC"},
                rerun=quantising_stage)  # white noise at TF32 level, but TF32 inputs would not make it
    assert "dtype_narrowing" not in kinds(found)


def conv_stage(inputs) -> np.ndarray:
    """A NumPy stand-in for a convolution stage with an asymmetric 3x3 kernel."""
    from scipy import ndimage

    kernel = np.array([[0.0, 1.0, 2.0], [0.5, 1.0, -1.0], [0.0, 0.0, 3.0]])
    images = inputs["x"]
    out = np.empty_like(images)
    for b in range(images.shape[0]):
        for c in range(images.shape[3]):
            out[b, :, :, c] = ndimage.correlate(images[b, :, :, c], kernel, mode="constant")
    return out


def test_a_stage_computed_on_transposed_axes_is_found_by_rerun():
    x = field(50, complex_=False)
    reference = conv_stage({"x": x})
    candidate = np.swapaxes(conv_stage({"x": np.swapaxes(x, 1, 2)}), 1, 2)  # the kernel's H and W swapped
    found = run(reference, candidate, stage_inputs={"x": x}, input_layouts={"x": "BHWC"}, rerun=conv_stage)
    assert found[0].kind == "transpose" and found[0].evidence.get("rerun")
    assert kinds(run(reference, candidate)) == [UNEXPLAINED]  # without the rerun nothing says so


def _smooth_images(x, sigma=0.8):
    from scipy import ndimage as nd

    from backends.common.constants import gaussian_kernel_3x3

    kernel = gaussian_kernel_3x3(sigma)
    out = np.empty_like(x)
    for s in range(x.shape[0]):
        for c in range(x.shape[3]):
            image = x[s, :, :, c]
            out[s, :, :, c] = nd.convolve(image.real, kernel, mode="mirror") + 1j * nd.convolve(image.imag, kernel,
                                                                                                mode="mirror")
    return out


@pytest.mark.parametrize("smoothed", ["candidate", "reference"])
def test_a_smoothing_on_one_side_is_named_with_its_kernel(smoothed):
    from scipy import ndimage as nd

    rng = np.random.default_rng(5)
    field = (nd.gaussian_filter(rng.standard_normal((2, 24, 24, 4)), (0, 2, 2, 0))
             + 1j * nd.gaussian_filter(rng.standard_normal((2, 24, 24, 4)), (0, 2, 2, 0))).astype(np.complex64)
    blurred = _smooth_images(field).astype(np.complex64)
    a, b = (field, blurred) if smoothed == "candidate" else (blurred, field)
    found = diagnose(a, b, layout="BHWC", kind="complex", tolerance=1e-6)
    assert found[0].kind == "smoothing", found
    assert found[0].summary.startswith(f"{smoothed} = ")
    kernel = np.array(found[0].evidence["kernel"])
    assert np.allclose(kernel, kernel[::-1, ::-1], atol=1e-4) and kernel.sum() == pytest.approx(1.0, abs=1e-3)


def test_two_smoothing_widths_are_named_with_a_wider_kernel():
    """sigma 0.5 against 0.8 is no 3x3 kernel apart; the wider fits find it (the sharper side blurred further)."""
    from scipy import ndimage as nd

    rng = np.random.default_rng(7)
    field = (nd.gaussian_filter(rng.standard_normal((2, 32, 32, 4)), (0, 2, 2, 0))
             + 1j * nd.gaussian_filter(rng.standard_normal((2, 32, 32, 4)), (0, 2, 2, 0)))

    def smoothed(sigma):
        return (nd.gaussian_filter(field.real, (0, sigma, sigma, 0), mode="mirror", truncate=2.0)
                + 1j * nd.gaussian_filter(field.imag, (0, sigma, sigma, 0), mode="mirror", truncate=2.0))

    found = diagnose(smoothed(0.5).astype(np.complex64), smoothed(0.8).astype(np.complex64), layout="BHWC",
                     kind="complex", tolerance=1e-6)
    assert found[0].kind == "smoothing", found
    assert found[0].summary.startswith("candidate = ") and "3x3" not in found[0].summary, found[0].summary
    kernel = np.array(found[0].evidence["kernel"])
    assert kernel.shape[0] in (5, 7) and np.allclose(kernel, kernel[::-1, ::-1], atol=1e-3)


@pytest.mark.parametrize("change", ["factor", "shift", "shift2", "noise"])
def test_a_factor_a_shift_or_noise_is_not_called_a_smoothing(change):
    rng = np.random.default_rng(6)
    a = rng.standard_normal((2, 24, 24, 4)).astype(np.float32)
    b = {"factor": 1.01 * a, "shift": np.roll(a, 1, axis=2), "shift2": np.roll(a, (2, -1), axis=(1, 2)),
         "noise": a + 1e-3 * rng.standard_normal(a.shape).astype(np.float32)}[change]
    assert "smoothing" not in [d.kind for d in diagnose(a, b, layout="BHWC", kind="real", tolerance=1e-6)]


def test_without_a_rerun_a_generic_answer_says_what_went_untested():
    from parity.diagnosis import Diagnosis, caveat_untested

    generic = [Diagnosis("normalisation", "a divisor differs", 1e-7)]
    [said] = caveat_untested(generic)
    assert said.summary.startswith("a divisor differs; not tested here:") and "parity run" in said.summary
    specific = [Diagnosis("scale", "candidate = reference x 2", 0.0), Diagnosis("normalisation", "a divisor", 0.0)]
    assert caveat_untested(specific) == specific


def test_a_wider_dtype_whose_values_agree_is_that_fact_alone():
    a = field(45).astype(np.complex64)
    found = run(a, a.astype(np.complex128) * (1 + 3e-8), tolerance=1e-6)
    assert [d.kind for d in found] == ["dtype_mismatch"], [d.summary for d in found]


def test_a_plus_minus_one_checkerboard_is_an_fftshift_in_the_other_domain():
    a = field(46)
    rows, cols = np.indices(a.shape[1:3])
    both = run(a, a * ((-1.0) ** (rows + cols))[None, :, :, None])
    assert both[0].kind == "checkerboard" and both[0].evidence["axes"] == [1, 2]
    rows_only = run(a, a * ((-1.0) ** rows)[None, :, :, None])
    assert rows_only[0].kind == "checkerboard" and rows_only[0].evidence["axes"] == [1]
    assert "normalisation" not in kinds(both)  # a factor of -1 and 1 is no divisor or count


def test_an_intensity_where_an_amplitude_is_meant_is_a_power():
    amplitude = np.abs(field(47))
    found = run(amplitude, amplitude**2)
    assert found[0].kind == "power" and found[0].evidence["exponent"] == 2.0, [d.summary for d in found]
    assert run(amplitude**2 + 0.5, np.sqrt(amplitude**2 + 0.5))[0].kind == "power"


def test_a_shape_mismatch_with_a_scalar_names_it():
    found = diagnose(np.float64(0.5), np.array([0.5]), layout="scalar", kind="real", tolerance=1e-6)
    assert found[0].kind == "shape_mismatch" and "candidate is 1 value, the reference a scalar" in found[0].summary


def test_a_factor_is_named_by_the_most_specific_reading_of_it():
    from backends.common.config import ForwardConfig
    from parity.diagnosis_names import CHANNELS, SQRT_SCALE, named_values, name_ratio

    table = named_values(ForwardConfig(N=32, gridsize=2, intensity_scale=3.7))
    assert name_ratio(4.0, table, 1e-6) == ("4 = C", CHANNELS)  # at gridsize 2 a 4 is the channel count first
    assert name_ratio(0.25, table, 1e-6) == ("1/4 = 1/C", CHANNELS)
    assert name_ratio(3.7 ** 0.5, table, 1e-6) == ("sqrt(s)", SQRT_SCALE)
    assert name_ratio(2.0, table, 1e-6)[0] == "2"


def test_an_unnormalised_smoothing_kernel_is_named_by_its_sum():
    from backends.common.config import ForwardConfig
    from parity.diagnosis_names import SMOOTHING, named_values, name_ratio

    sigma = 0.8
    axis = float(np.exp(-(np.arange(-1, 2) ** 2) / (2 * sigma**2)).sum())
    table = named_values(ForwardConfig(N=32, gridsize=2, gaussian_sigma=sigma))
    assert name_ratio(axis**2, table, 1e-9) == ("sum of the Gaussian kernel", SMOOTHING)
    assert all("Gaussian" not in name for name, _, _ in named_values(ForwardConfig(N=32)))  # no smoothing, no name
