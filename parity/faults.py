"""A catalog of realistic TF-to-Torch port bugs, each injected into ONE stage of the built-in Torch candidate.

Every ``Fault`` replaces one stage-table key through ``TorchBackend().with_stage(key, fn)``, the
same public override a user has, and says where the harness must put it (the registry tap computed
by that stage key), which diagnosis kinds name it (``None``: no hypothesis applies, the harness must
say "unexplained" rather than guess) and the case that exercises it (a built-in case, or one with
knob overrides: C > 1 with object_big off, uncentred offsets, gaussian_sigma > 0 with probe_mask,
float64 where a narrowing would show). ``REFACTORS`` are equivalent rewrites that must pass.
``parity.selftest`` runs them all against the real TensorFlow reference.

The catalog names stage keys, never taps: taps are resolved through the registry
(``backends.common.taps``), which owns the model's names. The bug functions themselves live in
``parity.fault_stages`` (they need PyTorch); this module only imports it when a candidate is built.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from backends.common.taps import pipeline_taps

from .cases import Case
from .builtin_cases import builtin_case
from .workflows import cast_case

# Diagnosis kinds the runner itself produces (not parity.diagnosis): it watches every stage's inputs
# and names the stage that changes one in place, in whichever mode saw it.
RUNNER_KINDS = frozenset({"in_place"})


def uncentred_offsets(case: Case, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Move every group by its own whole number of pixels (summing to zero over the batch).

    Stored offsets are centred by construction; a per-batch vs per-sample recentring bug only shows
    when they are not. Whole pixels keep the bug's effect an exact translation of each sample's canvas
    (a fractional one is a re-interpolation of a canvas with 1000:1 steps, which no output-only
    hypothesis can undo).
    """
    rng = np.random.Generator(np.random.PCG64(case.seed + 101))
    positions = inputs["positions"]
    moves = rng.integers(-3, 4, size=(positions.shape[0], 1, 2, 1)).astype(float)
    moves[-1] = -moves[:-1].sum(axis=0)
    moves[np.all(moves == 0, axis=2)[:, 0, 0]] += 2.0  # every group moves (then re-balance the last)
    moves[-1] = -moves[:-1].sum(axis=0)
    return {**inputs, "positions": (positions + moves).astype(positions.dtype)}


INPUT_TRANSFORMS: dict[str, Callable[[Case, dict[str, np.ndarray]], dict[str, np.ndarray]]] = {
    "uncentred_offsets": uncentred_offsets,
}


@dataclasses.dataclass(frozen=True)
class CaseRecipe:
    """A built-in case, optionally with knob overrides, another batch, bias scale or an input transform."""

    base: str
    knobs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    batch: int | None = None
    bias_scale: float | None = None
    inputs: str | None = None  # a key of INPUT_TRANSFORMS

    def label(self) -> str:
        parts = [self.base] + [f"{key}={value}" for key, value in self.knobs.items()]
        if self.batch is not None:
            parts.append(f"batch={self.batch}")
        if self.bias_scale is not None:
            parts.append(f"bias_scale={self.bias_scale}")
        if self.inputs:
            parts.append(self.inputs)
        return " ".join(parts)

    def build(self, seed: int | None = None) -> Case:
        case = builtin_case(self.base)
        changes: dict[str, Any] = {"name": self.label().replace(" ", ",")}
        if self.batch is not None:
            changes["batch"] = self.batch
        if self.bias_scale is not None:
            changes["bias_scale"] = self.bias_scale
        if seed is not None:
            changes["seed"] = seed
            if case.weights_seed is not None:
                changes["weights_seed"] = seed
        case = dataclasses.replace(case, **changes)
        if self.knobs:
            case = cast_case(case, case.config.replace(**self.knobs))
        if self.inputs:
            build, transform = case.build_inputs, INPUT_TRANSFORMS[self.inputs]
            case = dataclasses.replace(case, build_inputs=lambda c: transform(c, build(c)))
        return case


def _stage_function(name: str) -> Callable[..., Any]:
    return getattr(importlib.import_module("parity.fault_stages"), name)


@dataclasses.dataclass(frozen=True)
class Fault:
    id: str
    description: str
    stage: str  # the stage-table key replaced
    function: str  # the replacement, a name in parity.fault_stages
    case: CaseRecipe
    expect: tuple[str, ...] | None  # diagnosis kinds that name it; None: no hypothesis applies
    covers: str  # the divergence class (spec section 8) or hypothesis it exercises
    stage_args: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # which tap of a shared stage key

    @property
    def pending(self) -> bool:
        """Nothing is pending any more: the runner reports every kind the catalog expects."""
        return False

    @property
    def found_by_runner(self) -> bool:
        """Expected kinds only the runner produces (see RUNNER_KINDS): any mode may localise them."""
        return self.expect is not None and set(self.expect) <= RUNNER_KINDS

    def candidate(self, device: str = "cpu"):
        from backends.torch import TorchBackend

        backend = TorchBackend(device).with_stage(self.stage, _stage_function(self.function))
        backend.name = f"torch+{self.id}"
        return backend

    def tap(self, case: Case) -> str:
        """The registry tap this stage key (and stage args) computes first in ``case``'s pipeline."""
        for spec in pipeline_taps(case.pipeline, case.config):
            if spec.stage == self.stage and all(spec.args.get(key) == value for key, value in self.stage_args.items()):
                return spec.name
        raise KeyError(f"fault {self.id}: the {case.pipeline} pipeline has no stage {self.stage!r}")


@dataclasses.dataclass(frozen=True)
class Refactor:
    """An equivalent rewrite of one stage: it must pass."""

    id: str
    description: str
    stage: str
    function: str
    case: CaseRecipe

    def candidate(self, device: str = "cpu"):
        from backends.torch import TorchBackend

        backend = TorchBackend(device).with_stage(self.stage, _stage_function(self.function))
        backend.name = f"torch+{self.id}"
        return backend


# ---- cases: cheap N=32 configurations that exercise each path ----
PHYSICS = CaseRecipe("physics-default", {"N": 32})
PHYSICS_S = CaseRecipe("physics-default", {"N": 32, "intensity_scale": 2.5})
PHYSICS_SMOOTH_MASK = CaseRecipe("physics-default", {"N": 32, "gaussian_sigma": 0.8, "probe_mask": True})
PHYSICS_SMOOTH = CaseRecipe("physics-default", {"N": 32, "gaussian_sigma": 0.8})
PHYSICS_SMOOTH_NARROW = CaseRecipe("physics-default", {"N": 32, "gaussian_sigma": 0.5})
PHYSICS_UNCENTRED = CaseRecipe("physics-default", {"N": 32}, inputs="uncentred_offsets")
PHYSICS_SINGLE_CANVAS = CaseRecipe("physics-default", {"N": 32, "object_big": False})  # C = 4, Co = 1
PHYSICS_F64 = CaseRecipe("physics-n32-edge-offsets-f64")
PINN = CaseRecipe("pinn-n32-single-patch", {"gridsize": 2, "object_big": True, "pad_object": True,
                                            "amp_activation": "sigmoid", "intensity_scale": 2.5}, batch=2)
PINN_SOFTPLUS_F64 = CaseRecipe("pinn-n32-single-patch", {"gridsize": 2, "object_big": True, "pad_object": True,
                                                         "amp_activation": "softplus", "dtype": "float64"},
                               batch=2, bias_scale=30.0)  # pre-activations past softplus's switch points
SIMULATE = CaseRecipe("simulate-fly001-moon")  # float32, 1e9 photons: counts far above 2**16
SIMULATE_F64 = CaseRecipe("simulate-n32-f64")

F = Fault
FAULTS: tuple[Fault, ...] = (
    # -- reassembly and offsets --
    F("canvas-offset-sign", "reassembly translates patches by +o instead of -o (sign flipped)",
      "object_canvas", "canvas_offset_sign", PHYSICS, ("offset_sign",), "translation sign flipped in reassembly"),
    F("canvas-offset-sign-x", "reassembly mirrors x only (x offsets negated, y kept)", "object_canvas",
      "canvas_offset_sign_x", PHYSICS, ("offset_sign",), "translation sign flipped in one axis"),
    F("canvas-offset-swap-xy", "offsets read as (y, x) instead of (x, y) in reassembly",
      "object_canvas", "canvas_offset_swap_xy", PHYSICS, ("offset_swap_xy",), "x/y order of offsets swapped"),
    F("canvas-channels-first-as-last", "patches (B, C, H, W) reshaped as if channels-last (checkerboard)",
      "object_canvas", "canvas_channels_first_as_last", PHYSICS, ("channel_permutation",),
      "channels-first data read as channels-last"),
    F("canvas-flattened-offsets", "offsets flattened (C, B) while patches are flattened (B, C): each patch gets "
      "another patch's offset", "object_canvas", "canvas_flattened_offsets", PHYSICS, ("channel_permutation",),
      "wrong offsets per flattened patch"),
    F("canvas-wrong-count", "canvas divided by the number of patches C instead of the overlap count",
      "object_canvas", "canvas_wrong_count", PHYSICS, ("normalisation",), "canvas normalised by the wrong count"),
    F("canvas-no-epsilon", "canvas divided by the overlap count without the 0.001 epsilon",
      "object_canvas", "canvas_no_epsilon", PHYSICS, ("nonfinite",), "canvas normalised without the epsilon"),
    F("canvas-buffer-0", "canvas sized with buffer 0 instead of the configured 10",
      "object_canvas", "canvas_buffer_0", PHYSICS, ("shape_mismatch",), "different canvas size (buffer 0 vs 10)"),
    F("canvas-buffer-default", "canvas margin hard-coded at the default buffer 10, whatever the configuration",
      "object_canvas", "canvas_buffer_default", CaseRecipe("physics-n32-g3-buffer"), ("shape_mismatch",),
      "a default taken as a constant"),
    F("canvas-overlap-mask", "centre (overlap) mask one pixel too wide on every side",
      "object_canvas", "canvas_wide_mask", PHYSICS, ("normalisation",), "overlap masks"),
    F("canvas-pad-off-by-one", "patches padded (k+1, k-1) instead of (k, k)",
      "object_canvas", "canvas_pad_off_by_one", PHYSICS, ("shift",), "padding"),
    F("canvas-recentred-per-batch", "offsets centred on the batch mean instead of each sample's mean",
      "object_canvas", "canvas_batch_centred", PHYSICS_UNCENTRED, ("shift",), "recentring per batch vs per sample"),
    F("canvas-shared-large-batch", "from 64 patches on, every sample's patches reassembled onto one canvas "
      "shared by the batch", "object_canvas", "canvas_shared_large_batch", CaseRecipe("physics-n32-intensity-scale"),
      None, "a path for large batches only"),
    F("canvas-grid-sample", "translation with grid_sample (float32 coordinate normalisation): a valid alternative",
      "object_canvas", "canvas_grid_sample", PHYSICS, ("numerical_alternative",), "explained equivalence"),
    F("trim-off-by-one", "central window cut one pixel off: canvas[k+1 : k+1+N]",
      "object_trimmed", "trimmed_off_by_one", PHYSICS, ("shift",), "crops"),
    F("trim-transposed", "central window returned with rows and columns swapped",
      "object_trimmed", "trimmed_transposed", PHYSICS, ("transpose",), "x/y transposition of spatial axes"),
    F("extract-offset-sign", "patches cut at -o instead of +o", "patches_extracted", "extracted_offset_sign",
      PHYSICS, ("offset_sign",), "translation sign flipped in extraction"),
    F("extract-channel-order", "channel c cut at grid cell (c % g, c // g): column-major instead of row-major",
      "patches_extracted", "extracted_column_major", PHYSICS, ("channel_permutation",), "permutation of channels"),
    F("extract-ignores-offsets", "offsets ignored when object_big is off (every channel is the central crop)",
      "patches_extracted", "extracted_ignores_offsets_single", PHYSICS_SINGLE_CANVAS, ("offsets_ignored", "shift"),
      "C > 1 with object_big off"),
    F("sim-patches-swap-xy", "scan positions read as (y, x)", "sim_patches", "sim_patches_swap_xy", SIMULATE_F64,
      ("offset_swap_xy",), "x/y order of scan positions swapped"),
    F("sim-patches-rounded", "scan positions rounded to whole pixels before the patches are cut", "sim_patches",
      "sim_patches_rounded", SIMULATE_F64, ("offsets_rounded",), "integer placement of sub-pixel positions"),
    F("sim-patches-half-pixel", "scan positions moved by half a pixel (a pixel's centre taken for its corner)",
      "sim_patches", "sim_patches_half_pixel", SIMULATE_F64, ("offset_half_pixel",), "half-pixel convention"),
    F("sim-patches-corner", "each scan position taken as its patch's top-left corner, not its centre",
      "sim_patches", "sim_patches_corner", SIMULATE_F64, ("positions_origin",), "position origin (corner vs centre)"),
    # -- illumination and far field --
    F("probe-normalised-twice", "probe divided by its L2 norm although the input is already normalised",
      "probe_effective", "probe_normalised_twice", PHYSICS, ("scale",), "probe divided by its norm twice"),
    F("probe-mask-doubled", "disk mask applied before smoothing as well as after",
      "exit_wave", "exit_wave_mask_doubled", PHYSICS_SMOOTH_MASK, ("masked_region",), "probe masks (doubled)"),
    F("probe-mask-always", "disk mask applied although probe_mask is off", "exit_wave", "exit_wave_mask_always",
      PHYSICS, ("masked_region",), "probe masks (flag ignored)"),
    F("smoothing-padding", "Gaussian smoothing pads by replicating the edge instead of mirroring it",
      "exit_wave", "exit_wave_replicate_padding", PHYSICS_SMOOTH, ("border_only",), "padding"),
    F("smoothing-default-differs", "the exit wave smoothed with the port's default sigma 0.8 where the "
      "configuration says 0", "exit_wave", "exit_wave_smoothing_default", PHYSICS, ("smoothing",),
      "smoothing on one side only (a default that differs)"),
    F("smoothing-width-differs", "the exit wave smoothed with the port's own sigma 0.8 where the configuration "
      "says 0.5", "exit_wave", "exit_wave_smoothing_default", PHYSICS_SMOOTH_NARROW, ("smoothing",),
      "smoothing of another width (a default that differs)"),
    F("exit-wave-downcast", "exit wave computed in complex64 inside a float64 run, cast back",
      "exit_wave", "exit_wave_downcast", PHYSICS_F64, ("dtype_narrowing",), "dtype leak (float64 downcast)"),
    F("exit-wave-complex64", "exit wave returned as complex64 in a float64 run", "exit_wave",
      "exit_wave_complex64", PHYSICS_F64, ("dtype_narrowing",), "dtype leak (dtype differs)"),
    F("fft-not-orthonormal", "FFT without the 1/N factor", "farfield", "farfield_unnormalised", PHYSICS,
      ("scale",), "FFT without the orthonormal factor (ratio N)"),
    F("fft-norm-forward", "torch.fft.fft2(norm='forward'): 1/N^2 instead of 1/N", "farfield",
      "farfield_norm_forward", PHYSICS, ("scale",), "FFT normalisation convention"),
    F("fft-inverse", "torch.fft.ifft2 (times N) where the forward FFT is meant", "farfield", "farfield_inverse",
      PHYSICS, ("mirror",), "inverse vs forward FFT"),
    F("fft-shift-before", "fftshift applied to the exit wave before the FFT instead of to the result after it",
      "farfield", "farfield_shifted_wave", PHYSICS, ("checkerboard",), "fftshift in the wrong domain"),
    F("exit-wave-conjugated-object", "the object patches conjugated before the probe multiplies them", "exit_wave",
      "exit_wave_conjugate_patches", PHYSICS, ("conjugate",), "phase sign of an input"),
    F("amplitude-missing-fftshift", "amplitude not fftshifted", "amplitude", "amplitude_no_fftshift", PHYSICS,
      ("fftshift",), "missing fftshift"),
    F("amplitude-missing-sqrt", "amplitude returned as |farfield|^2 (the intensity): the sqrt forgotten",
      "amplitude", "amplitude_missing_sqrt", PHYSICS, ("power",), "intensity where amplitude is meant"),
    F("amplitude-incoherent-modes", "real and imaginary parts of the exit wave summed as incoherent modes",
      "amplitude", "amplitude_incoherent", PHYSICS, None, "coherent vs incoherent sum of probe modes"),
    F("intensity-scale-dead", "amplitude.scaled forgets intensity_scale", "amplitude_scaled",
      "amplitude_scaled_dead", PHYSICS_S, ("scale",), "dead intensity scale"),
    F("sim-uint16-square", "counts squared in uint16 before the cast to float (wraps at 65536)",
      "sim_intensity", "sim_intensity_uint16", SIMULATE, ("overflow",), "uint16 squares overflowing before a cast"),
    # -- network --
    F("input-scale-inverted", "X * s instead of X / s", "input_scaled", "input_scaled_inverted", PINN, ("scale",),
      "inverted intensity scale"),
    F("encoder-kernel-transposed", "Keras kernels (H, W, in, out) mapped to (out, in, W, H): H and W swapped",
      "encoder_block", "encoder_kernel_transposed", PINN, ("transpose",), "kernel layout transposed wrongly",
      {"index": 0}),
    F("encoder-kernel-flipped", "Keras kernels rotated by 180 degrees when mapped (convolution vs cross-correlation)",
      "encoder_block", "encoder_kernel_flipped", PINN, ("kernel_flip",), "kernel rotated 180 degrees", {"index": 0}),
    F("encoder-reflect-padding", "convolutions padded by reflection ('reflect' padding_mode) instead of zeros "
      "('same')", "encoder_block", "encoder_reflect_padding", CaseRecipe("pinn-n32-single-patch"), ("border_only",),
      "padding at the edges",
      {"index": 0}),
    F("encoder-dropout-train", "a Dropout(0.1) after the block left in training mode (model.eval() not called)",
      "encoder_block", "encoder_dropout_train", CaseRecipe("pinn-n32-single-patch"), ("dropout",),
      "train/eval mode (dropout)", {"index": 0}),
    F("encoder-tf32", "convolutions with TF32 inputs (10-bit mantissa), as on a GPU with TF32 on",
      "encoder_block", "encoder_tf32", PINN, ("dtype_narrowing",), "TF32 or reduced-precision matmul", {"index": 0}),
    F("encoder-attention", "a squeeze-excitation attention gate present on the Torch side only",
      "encoder_block", "encoder_attention", PINN, None, "encoder attention block on one side only", {"index": 0}),
    F("decoder-swish", "amplitude activation swish where the configuration says sigmoid", "decoder_head",
      "decoder_swish", PINN, ("elementwise",), "sigmoid vs swish activation default", {"head": "amp"}),
    F("decoder-softplus-threshold", "softplus with PyTorch's default switch to identity (x > 20)",
      "decoder_head", "decoder_softplus_default", PINN_SOFTPLUS_F64, ("elementwise",),
      "activation switch points", {"head": "amp"}),
    F("decoder-bilinear-upsampling", "decoder upsamples bilinearly instead of nearest-neighbour",
      "decoder_head", "decoder_bilinear", PINN, None, "upsampling", {"head": "amp"}),
    F("object-phase-sign", "object built as amp * exp(-i phase)", "object_patches", "object_patches_conjugate",
      PINN, ("conjugate",), "complex conjugation / phase sign"),
    F("loss-mae-squared", "MAE computed on squared differences", "loss_mae", "loss_mae_squared", PINN, None,
      "losses (squared vs unsquared)"),
    # -- a stage that changes its input under the harness's feet --
    F("farfield-scales-input-in-place", "the FFT stage halves exit_wave in place (its own output is right)",
      "farfield", "farfield_scales_input_in_place", SIMULATE_F64, ("in_place",), "in-place mutation of an input"),
    F("input-scaled-negates-input-in-place", "input.scaled negates X in place (its own output is right)",
      "input_scaled", "input_scaled_negates_in_place", PINN, ("in_place",), "in-place mutation of an input"),
)

R = Refactor
REFACTORS: tuple[Refactor, ...] = (
    R("amplitude-abs", "amplitude as |fftshift(farfield)|", "amplitude", "amplitude_abs", PHYSICS),
    R("fft-ortho", "torch.fft.fft2(norm='ortho')", "farfield", "farfield_ortho", PHYSICS),
    R("fftn-then-divide", "torch.fft.fftn over the spatial axes, divided by N", "farfield", "farfield_fftn", PHYSICS),
    R("intensity-square", "torch.square(amplitude.scaled)", "intensity", "intensity_square", PHYSICS_S),
    R("object-polar", "torch.polar(amp, phase)", "object_patches", "object_patches_polar", PINN),
    R("exit-wave-commuted", "patches * probe (operands swapped)", "exit_wave", "exit_wave_commuted",
      PHYSICS_SMOOTH_MASK),
    R("probe-where", "torch.where(mask > 0, probe, 0)", "probe_effective", "probe_where",
      CaseRecipe("physics-default", {"N": 32, "probe_mask": True})),
    R("input-reciprocal", "X * (1 / s)", "input_scaled", "input_scaled_reciprocal", PINN),
    R("loss-mae-l1", "torch.nn.functional.l1_loss", "loss_mae", "loss_mae_l1", PINN),
    R("trim-narrow", "Tensor.narrow on both spatial axes", "object_trimmed", "trimmed_narrow", PHYSICS),
)


def fault(fault_id: str) -> Fault:
    for entry in FAULTS:
        if entry.id == fault_id:
            return entry
    raise KeyError(f"no fault {fault_id!r}; faults: {[entry.id for entry in FAULTS]}")
