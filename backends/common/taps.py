"""The one tap registry both backends (and the harness) read.

Every named tensor of the spec, pipeline inputs included, is a ``TapSpec``:
its name, the stage-table key that computes it, the named inputs that stage
consumes, canonical shape, dtype kind, layout and the knobs that shape it.
``pipeline_taps(pipeline, cfg)`` returns a pipeline's taps in stage order;
adding a stage means adding one line here and one function per backend.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import functools
from collections.abc import Callable, Mapping

import numpy as np

from .config import ForwardConfig

PIPELINES = ("pinn", "physics", "simulate")

# Canonical layouts (channels last). Backends may hold other layouts inside
# and convert at the tap; the names below are what a tap looks like outside.
LAYOUTS = {
    "BHWC": "batch, rows, columns, channels",
    "B12C": "batch, 1, (x, y), channels",
    "HW": "rows, columns",
    "M2": "scan position, (x, y)",
    "B": "one value per sample",
    "scalar": "a single value",
}
SPATIAL_LAYOUTS = ("BHWC", "HW")

Shape = tuple[int | None, ...]


@dataclasses.dataclass(frozen=True)
class TapSpec:
    name: str
    stage: str | None  # key into a backend's stage table; None for pipeline inputs
    inputs: tuple[str, ...]
    layout: str
    kind: str  # "real" or "complex"
    shape_of: Callable[[ForwardConfig, int], Shape] = dataclasses.field(repr=False, compare=False)
    knobs: tuple[str, ...] = ()
    args: Mapping[str, object] = dataclasses.field(default_factory=dict)
    description: str = ""
    # How the tap depends on the batch: None, per sample (the batch can be cut into chunks);
    # "mean", a mean over the whole batch (chunk values combine, weighted by chunk size);
    # "global", a statistic of the whole batch that later stages read (the batch runs as one chunk).
    reduction: str | None = None
    # For a "global" tap: how chunk values make the whole batch's (parity/global_taps.py), so the
    # batch can still run in chunks; "" = it cannot, the batch runs as one chunk.
    combine: str = ""
    # Report metadata (read by the harness, never by the backends): the harness names no tap,
    # it asks the registry. ``pictures``: "patches" marks a stack of patches worth a patch grid.
    # ``role``: what the tap is to the assembly dumps: "offsets" (per-patch shifts, the layout's
    # "2" axis is (x, y)) or "canvas" (patches assembled onto one image).
    pictures: str = ""
    role: str = ""

    @property
    def is_input(self) -> bool:
        return self.stage is None

    @property
    def spatial(self) -> bool:
        return self.layout in SPATIAL_LAYOUTS

    def shape(self, cfg: ForwardConfig, batch: int) -> Shape:
        """Canonical shape; None marks a free dimension (an input's own size)."""
        return self.shape_of(cfg, batch)

    def dtype(self, cfg: ForwardConfig) -> np.dtype:
        return np.dtype(cfg.complex_dtype if self.kind == "complex" else cfg.dtype)

    def describe(self, cfg: ForwardConfig, batch: int) -> dict[str, object]:
        return {
            "name": self.name,
            "stage": self.stage,
            "inputs": list(self.inputs),
            "layout": self.layout,
            "kind": self.kind,
            "shape": list(self.shape(cfg, batch)),
            "dtype": self.dtype(cfg).name,
            "knobs": list(self.knobs),
            "description": self.description,
            "pictures": self.pictures,
            "role": self.role,
        }


def _bhwc(channels: Callable[[ForwardConfig], int], size: str = "N"):
    def shape(cfg: ForwardConfig, batch: int) -> Shape:
        side = getattr(cfg, size)
        return (batch, side, side, channels(cfg))

    return shape


def _one(cfg: ForwardConfig) -> int:
    return 1


def _C(cfg: ForwardConfig) -> int:
    return cfg.C


def _Co(cfg: ForwardConfig) -> int:
    return cfg.Co


def _probe_shape(cfg: ForwardConfig, batch: int) -> Shape:
    return (cfg.N, cfg.N)


def _per_sample(cfg: ForwardConfig, batch: int) -> Shape:
    return (batch,)


def _scalar(cfg: ForwardConfig, batch: int) -> Shape:
    return ()


def _encoder_shape(index: int):
    def shape(cfg: ForwardConfig, batch: int) -> Shape:
        side = cfg.N // 2 ** (index + 1)
        return (batch, side, side, cfg.encoder_filters[index])

    return shape


T = TapSpec
NET_KNOBS = ("N", "gridsize", "n_filters_scale", "dtype")
CANVAS_KNOBS = ("N", "gridsize", "offset", "buffer", "object_big")

# ---- pipeline inputs ----
INPUTS = {
    "X": T("X", None, (), "BHWC", "real", _bhwc(_C), ("N", "gridsize"),
           description="measured diffraction amplitude, sqrt of counts, scaled domain"),
    "positions": T("positions", None, (), "B12C", "real", lambda c, b: (b, 1, 2, c.C), ("gridsize",),
                   description="per-patch offsets in pixels; axis 2 is (x, y)", role="offsets"),
    "probe": T("probe", None, (), "HW", "complex", _probe_shape, ("N",), description="illumination"),
    "object_patches": T("object_patches", None, (), "BHWC", "complex", _bhwc(_Co), ("N", "gridsize", "object_big"),
                        description="object patches fed to the physics pipeline"),
    "object": T("object", None, (), "HW", "complex", lambda c, b: (None, None), (),
                description="a large complex object for the simulate pipeline"),
    "scan_positions": T("scan_positions", None, (), "M2", "real", lambda c, b: (b, 2), (),
                        description="scan positions (x, y) in object pixels"),
}
PIPELINE_INPUTS = {
    "pinn": ("X", "positions", "probe"),
    "physics": ("object_patches", "positions", "probe"),
    "simulate": ("object", "scan_positions", "probe"),
}


def _network_taps(cfg: ForwardConfig) -> list[TapSpec]:
    taps = [T("input.scaled", "input_scaled", ("X",), "BHWC", "real", _bhwc(_C), ("intensity_scale",),
              description="X / intensity_scale")]
    previous = "input.scaled"
    for index in range(cfg.depth):
        name = f"encoder.block{index}"
        taps.append(T(name, "encoder_block", (previous,), "BHWC", "real", _encoder_shape(index), NET_KNOBS,
                      {"index": index}, f"conv-conv-maxpool block {index}"))
        previous = name
    head_knobs = NET_KNOBS + ("object_big", "pad_object", "probe_big")
    taps += [
        T("decoder.amp", "decoder_head", (previous,), "BHWC", "real", _bhwc(_Co), head_knobs + ("amp_activation",),
          {"head": "amp"}, "amplitude head"),
        T("decoder.phase", "decoder_head", (previous,), "BHWC", "real", _bhwc(_Co), head_knobs,
          {"head": "phase"}, "phase head (pi tanh)"),
        T("object.patches", "object_patches", ("decoder.amp", "decoder.phase"), "BHWC", "complex", _bhwc(_Co),
          (), description="amp exp(i phase)", pictures="patches"),
    ]
    return taps


def _object_taps(patches: str) -> list[TapSpec]:
    return [
        T("object.canvas", "object_canvas", (patches, "positions"), "BHWC", "complex", _bhwc(_one, "P"), CANVAS_KNOBS,
          description="patches placed on the P x P canvas, overlap-normalised", role="canvas"),
        T("object.trimmed", "object_trimmed", ("object.canvas",), "BHWC", "complex", _bhwc(_one), CANVAS_KNOBS,
          description="central N x N window of the canvas"),
        T("patches.extracted", "patches_extracted", ("object.canvas", "positions"), "BHWC", "complex", _bhwc(_C),
          CANVAS_KNOBS, description="patches cut back out of the canvas at their offsets", pictures="patches"),
    ]


def _illumination_taps(patches: str, channels: Callable[[ForwardConfig], int]) -> list[TapSpec]:
    return [
        T("probe.effective", "probe_effective", ("probe",), "HW", "complex", _probe_shape, ("probe_mask",),
          description="probe times the disk mask when probe_mask"),
        # exit_wave reads the input probe, not probe.effective: the disk mask is applied once,
        # after smoothing (spec 5, "smooth, then mask"), as PtychoPINN's ProbeIllumination does.
        T("exit_wave", "exit_wave", ("probe", patches), "BHWC", "complex", _bhwc(channels),
          ("probe_mask", "gaussian_sigma"), description="mask * smooth(probe * patch)"),
        T("farfield", "farfield", ("exit_wave",), "BHWC", "complex", _bhwc(channels), (),
          description="orthonormal FFT2, unshifted"),
        T("amplitude", "amplitude", ("farfield",), "BHWC", "real", _bhwc(channels), (),
          description="sqrt(fftshift(|farfield|^2))", pictures="patches"),
    ]


def _scaled_taps() -> list[TapSpec]:
    return [
        T("amplitude.scaled", "amplitude_scaled", ("amplitude",), "BHWC", "real", _bhwc(_C), ("intensity_scale",),
          description="intensity_scale * amplitude"),
        T("intensity", "intensity", ("amplitude.scaled",), "BHWC", "real", _bhwc(_C), ("intensity_scale",),
          description="amplitude.scaled ** 2"),
    ]


def _loss_taps() -> list[TapSpec]:
    knobs = ("intensity_scale",)
    return [
        T("loss.poisson", "loss_poisson", ("intensity", "X"), "scalar", "real", _scalar, knobs,
          description="mean(lambda - k log(lambda + 1e-12))", reduction="mean"),
        T("loss.poisson.per_sample", "loss_poisson_per_sample", ("intensity", "X"), "B", "real", _per_sample, knobs,
          description="Poisson loss per sample"),
        T("loss.mae", "loss_mae", ("amplitude.scaled", "X"), "scalar", "real", _scalar, knobs,
          description="mean |amplitude.scaled - s X|", reduction="mean"),
        T("loss.mae.per_sample", "loss_mae_per_sample", ("amplitude.scaled", "X"), "B", "real", _per_sample, knobs,
          description="MAE per sample"),
    ]


def _simulate_taps() -> list[TapSpec]:
    return [
        T("sim.patches", "sim_patches", ("object", "scan_positions"), "BHWC", "complex", _bhwc(_one), ("N",),
          description="object sampled around each scan position", pictures="patches"),
        *_illumination_taps("sim.patches", _one),
        T("sim.intensity_scale", "sim_intensity_scale", ("exit_wave",), "scalar", "real", _scalar, ("nphotons",),
          description="sqrt(nphotons / mean sum |exit_wave|^2)", reduction="global", combine="inverse_square_mean"),
        T("sim.intensity", "sim_intensity", ("sim.intensity_scale", "amplitude"), "BHWC", "real", _bhwc(_one),
          ("nphotons",), description="expected counts"),
    ]


def pipeline_taps(pipeline: str, cfg: ForwardConfig) -> list[TapSpec]:
    """The computed taps of ``pipeline`` under ``cfg``, in stage order."""
    if pipeline == "pinn":
        return [*_network_taps(cfg), *_object_taps("object.patches"), *_illumination_taps("patches.extracted", _C),
                *_scaled_taps(), *_loss_taps()]
    if pipeline == "physics":
        return [*_object_taps("object_patches"), *_illumination_taps("patches.extracted", _C), *_scaled_taps()]
    if pipeline == "simulate":
        return _simulate_taps()
    raise KeyError(f"unknown pipeline {pipeline!r}; pipelines are {PIPELINES}")


def batched(spec: TapSpec) -> bool:
    """Whether axis 0 of this tensor runs over samples (scan positions), so a batch chunk slices it."""
    return spec.layout[:1] in ("B", "M")


def pipeline_inputs(pipeline: str) -> list[TapSpec]:
    if pipeline not in PIPELINE_INPUTS:
        raise KeyError(f"unknown pipeline {pipeline!r}; pipelines are {PIPELINES}")
    return [INPUTS[name] for name in PIPELINE_INPUTS[pipeline]]


def tap_index(pipeline: str, cfg: ForwardConfig) -> dict[str, TapSpec]:
    """Every named tensor of a pipeline (inputs first, then taps) by name."""
    return {spec.name: spec for spec in [*pipeline_inputs(pipeline), *pipeline_taps(pipeline, cfg)]}


def stage_keys() -> set[str]:
    """Every stage-table key a complete backend must provide."""
    cfg = ForwardConfig()
    return {spec.stage for pipeline in PIPELINES for spec in pipeline_taps(pipeline, cfg)}


@functools.cache
def _default_tap_names() -> frozenset[str]:
    return frozenset(spec.name for pipeline in PIPELINES for spec in pipeline_taps(pipeline, ForwardConfig()))


@functools.cache
def registry_tap_names() -> frozenset[str]:
    """Every computed tap name any configuration can have (encoder blocks up to a depth no N reaches)."""
    return _default_tap_names() | {f"encoder.block{index}" for index in range(32)}


def matches_a_tap(pattern: str) -> bool:
    """Whether a tap name or glob names at least one tap of the registry (else it is a typo)."""
    return any(fnmatch.fnmatchcase(name, pattern) for name in registry_tap_names())


@functools.cache
def tap_name_hints() -> tuple[str, ...]:
    """What to suggest for a misspelt tap name: the default configuration's taps and each family's glob."""
    names = _default_tap_names()
    return tuple(sorted(names | {name.split(".")[0] + ".*" for name in names if "." in name}))


def tensor_names() -> frozenset[str]:
    """Every name an adapter may declare something for: the registry's taps and the pipelines' inputs."""
    return registry_tap_names() | frozenset(INPUTS)


@functools.cache
def canonical_layouts() -> frozenset[str]:
    """The layouts the registry uses (keys of an adapter's per-layout declarations)."""
    cfg = ForwardConfig()
    return frozenset({spec.layout for pipeline in PIPELINES for spec in pipeline_taps(pipeline, cfg)}
                     | {spec.layout for spec in INPUTS.values()})
