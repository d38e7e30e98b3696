"""The built-in cases (the test bed the shipped goldens record) and their input builders.

Each builder is a pure function of its case's seed (numpy PCG64 only) and carries a version
(``parity.cases.builder``): change what it builds and bump it (see ``parity.cases``).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping

import numpy as np

from backends.common.config import ForwardConfig, resolve_config

from . import data, dataset, synthetic
from .cases import Case, InputBuilder, builder
from .errors import ParityInputError

# ---- input builders (bump a version whenever what it builds changes) ----

@builder("synthetic/1")
def _synthetic(case: Case) -> dict[str, np.ndarray]:
    return synthetic.pipeline_inputs(case.pipeline, case.config, case.batch, case.seed)


def _moon_patches(cfg: ForwardConfig, batch: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Patches of the moon object around random group centres, and their stored offsets."""
    moon = data.moon_object()
    positions = synthetic.group_positions(cfg, batch, rng).astype(float)  # (B, 1, 2, C), o_c = -(pos_c - mean)
    patches = np.empty((batch, cfg.N, cfg.N, cfg.C), complex)
    margin = cfg.N + cfg.gridsize * cfg.offset + 8
    for b in range(batch):
        centre = rng.uniform(margin, np.array(moon.shape[::-1]) - margin)  # (x, y)
        for c in range(cfg.C):
            x0, y0 = np.rint(centre - positions[b, 0, :, c] - cfg.N / 2).astype(int)
            patches[b, :, :, c] = moon[y0 : y0 + cfg.N, x0 : x0 + cfg.N]
    return patches, positions


def _diffraction_from(patches: np.ndarray, probe: np.ndarray, cfg: ForwardConfig,
                      rng: np.random.Generator) -> np.ndarray:
    """Poisson-noisy measured amplitudes (scaled domain) of probe * patch, in numpy."""
    wave = probe[None, :, :, None] * patches
    far = np.fft.fft2(wave, axes=(1, 2)) / cfg.N
    power = np.fft.fftshift(np.abs(far) ** 2, axes=(1, 2))
    counts = rng.poisson(power * (1e6 / power.sum(axis=(1, 2), keepdims=True)))
    return np.sqrt(counts) / cfg.intensity_scale


@builder("moon-physics/1")
def _real_physics(case: Case) -> dict[str, np.ndarray]:
    cfg = case.config
    rng = synthetic.generator(case.seed)
    patches, positions = _moon_patches(cfg, case.batch, rng)
    if not cfg.object_big:
        patches = patches[..., :1]
    return {"object_patches": patches.astype(cfg.complex_dtype), "positions": positions.astype(cfg.dtype),
            "probe": data.probe_for(cfg.N).astype(cfg.complex_dtype)}


@builder("moon-pinn/1")
def _real_pinn(case: Case) -> dict[str, np.ndarray]:
    cfg = case.config
    rng = synthetic.generator(case.seed)
    patches, positions = _moon_patches(cfg, case.batch, rng)
    probe = data.probe_for(cfg.N)
    X = _diffraction_from(patches, probe, cfg, rng)
    return {"X": X.astype(cfg.dtype), "positions": positions.astype(cfg.dtype), "probe": probe.astype(cfg.complex_dtype)}


@builder("moon-simulate/1")
def _real_simulate(case: Case) -> dict[str, np.ndarray]:
    cfg = case.config
    rng = synthetic.generator(case.seed)
    moon = data.moon_object()
    scan = synthetic.raster_scan(moon.shape, cfg.N, case.batch, rng, "float64")
    scan[0] = (2.0, 3.5)  # one position hanging over the object's corner: zero fill must agree
    return {"object": moon.astype(cfg.complex_dtype), "scan_positions": scan.astype(cfg.dtype),
            "probe": data.probe_for(cfg.N).astype(cfg.complex_dtype)}


@builder("edge-offsets/1")
def _edge_offsets(case: Case) -> dict[str, np.ndarray]:
    """Synthetic physics inputs whose offsets push patches past the canvas edge."""
    inputs = synthetic.pipeline_inputs("physics", case.config, case.batch, case.seed)
    rng = synthetic.generator(case.seed + 1)
    cfg = case.config
    spread = rng.uniform(-1.0, 1.0, size=inputs["positions"].shape) * (cfg.k + cfg.offset + 3.3)
    inputs["positions"] = spread.astype(cfg.dtype)
    return inputs


@builder("uncentred/1")
def _uncentred(case: Case) -> dict[str, np.ndarray]:
    """Synthetic inputs whose groups are not centred: each sample's offsets carry their own mean.

    Stored offsets are centred by construction, which hides per-batch vs per-sample recentring and
    a port that ignores offsets altogether; these are moved by a different sub-pixel amount per sample.
    """
    inputs = synthetic.pipeline_inputs(case.pipeline, case.config, case.batch, case.seed)
    rng = synthetic.generator(case.seed + 1)
    positions = inputs["positions"].astype(float)
    moved = positions + rng.uniform(-2.5, 2.5, size=(case.batch, 1, 2, 1))
    inputs["positions"] = moved.astype(case.config.dtype)
    return inputs


def _case(name: str, description: str, pipeline: str, knobs: Mapping[str, object], *, batch: int = 2,
          seed: int = 0, build: InputBuilder = _synthetic, tags: tuple[str, ...] = (), **extra: object) -> Case:
    return Case(name=name, description=description, pipeline=pipeline, config=resolve_config(knobs), batch=batch,
                seed=seed, build_inputs=build, weights_seed=seed if pipeline == "pinn" else None, tags=tags,
                **extra)


BUILTIN_CASES: dict[str, Case] = {case.name: case for case in [
    _case("pinn-default", "PtychoPINN defaults (N=64, gridsize 2, f=2), synthetic diffraction, seeded weights",
          "pinn", {}, seed=1, tags=("default",)),
    _case("pinn-fly001-moon", "real fly001 probe, diffraction simulated from moon.png patches, N=64",
          "pinn", {"intensity_scale": 2.5}, seed=2, build=_real_pinn, tags=("real-data",)),
    _case("pinn-n32-probe-big-f64", "N=32 float64, probe_big + probe_mask + gaussian 0.8, softplus, s=3.7, f=1",
          "pinn", {"N": 32, "probe_big": True, "probe_mask": True, "gaussian_sigma": 0.8,
                   "amp_activation": "softplus", "intensity_scale": 3.7, "dtype": "float64",
                   "n_filters_scale": 1}, seed=3),
    _case("pinn-n32-single-patch", "N=32, gridsize 1, object_big off, pad_object off, swish, f=1",
          "pinn", {"N": 32, "gridsize": 1, "object_big": False, "pad_object": False, "amp_activation": "swish",
                   "n_filters_scale": 1}, seed=4),
    _case("physics-default", "object/probe/offset forward, defaults, smooth synthetic patches",
          "physics", {}, seed=5, tags=("default",)),
    _case("physics-fly001-moon", "real fly001 probe and moon.png object patches, N=64, probe_mask",
          "physics", {"probe_mask": True}, seed=6, build=_real_physics, tags=("real-data",)),
    _case("physics-n32-edge-offsets-f64", "N=32 float64, odd offset 7, offsets beyond the canvas edge, sigma 0.8",
          "physics", {"N": 32, "offset": 7, "gaussian_sigma": 0.8, "dtype": "float64"}, seed=7,
          build=_edge_offsets),
    _case("simulate-fly001-moon", "simulate diffraction from the moon object with the fly001 probe, 12 scans",
          "simulate", {"nphotons": 1e9}, batch=12, seed=8, build=_real_simulate, tags=("real-data",)),
    _case("simulate-n32-f64", "simulate, N=32 float64, synthetic object, probe_mask", "simulate",
          {"N": 32, "probe_mask": True, "dtype": "float64"}, batch=6, seed=9),
    # Paths the cases above leave unexercised (issue #9): C > 1 with object_big off, uncentred offsets,
    # relu, softplus past its switch to the identity (big biases), smoothing with the disk mask in physics.
    _case("pinn-n32-g2-single-object", "N=32, gridsize 2, object_big off, probe_big, relu, uncentred offsets, f=1",
          "pinn", {"N": 32, "object_big": False, "probe_big": True, "amp_activation": "relu",
                   "n_filters_scale": 1}, seed=12, build=_uncentred),
    _case("pinn-n32-softplus-switch-f64", "N=32 float64, softplus pre-activations past its switch (biases 30), f=1",
          "pinn", {"N": 32, "amp_activation": "softplus", "dtype": "float64", "n_filters_scale": 1},
          seed=13, bias_scale=30.0),
    _case("physics-n32-single-object-mask-sigma", "N=32, gridsize 2, object_big off, probe_mask and sigma 0.5, "
          "uncentred offsets", "physics", {"N": 32, "object_big": False, "probe_mask": True, "gaussian_sigma": 0.5},
          seed=14, build=_uncentred),
    # intensity_scale is 1 in every other physics case, where a scale applied twice, inverted or forgotten
    # gives the same numbers: a physics-only port checked against the goldens needs one case that sets it.
    # Batch 16 (64 patches): a port that takes another path for large batches (one shared canvas, chunks)
    # is not seen with the 2 samples of the other cases
    _case("physics-n32-intensity-scale", "N=32, intensity_scale 2.5, batch 16 (64 patches): a scale applied twice, "
          "inverted or not at all; a path taken for large batches only", "physics",
          {"N": 32, "intensity_scale": 2.5}, batch=16, seed=15),
    # buffer is 10 and gridsize at most 2 in every other case: a port that hard-codes the default canvas margin
    # or a 2x2 group passes them all. buffer 6 with offset 5 at gridsize 3 makes P - N = 16.
    _case("physics-n32-g3-buffer", "N=32, gridsize 3 (9 patches a sample), offset 5, buffer 6: a margin or a "
          "group size taken as a constant", "physics", {"N": 32, "gridsize": 3, "offset": 5, "buffer": 6},
          batch=2, seed=16),
    _case("pinn-dataset-moon", "fixtures/datasets/moon.npz (PtychoPINN contract), K-NN groups", "pinn", dataset.MOON_KNOBS, batch=dataset.MOON_GROUPS, seed=10, build=dataset.build_moon_inputs, tags=("real-data", "dataset")),
    _case("simulate-dataset-moon", "fixtures/datasets/moon.npz objectGuess at its scan positions", "simulate", dataset.MOON_KNOBS, batch=dataset.MOON_POSITIONS, seed=11, build=dataset.build_moon_inputs, tags=("real-data", "dataset")),
]}


def builtin_case(name: str) -> Case:
    try:
        return BUILTIN_CASES[name]
    except KeyError:
        raise ParityInputError(f"unknown case {name!r}; built-in cases: {sorted(BUILTIN_CASES)}") from None


def select_cases(names: list[str] | None) -> list[Case]:
    """The named cases, in the order named; a name with ``*``, ``?`` or ``[`` is an fnmatch glob (as the
    pytest plugin's ``--parity-case``), which must match at least one case. None: every case."""
    if not names:
        return list(BUILTIN_CASES.values())
    chosen: dict[str, Case] = {}
    for name in names:
        if any(character in name for character in "*?["):
            matched = fnmatch.filter(BUILTIN_CASES, name)
            if not matched:
                raise ParityInputError(f"--case {name!r} matches no built-in case; built-in cases: "
                                       f"{sorted(BUILTIN_CASES)}")
            chosen.update((match, BUILTIN_CASES[match]) for match in matched)
        else:
            chosen[name] = builtin_case(name)
    return list(chosen.values())
