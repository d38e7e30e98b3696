"""Cases: a pipeline, a resolved configuration and its inputs (and weights).

Built-in cases are pure functions of their seed (numpy PCG64 only). A case's
hash covers its *definition*: pipeline, resolved configuration, seed, batch,
the version of its input builder, the registry's shapes and dtypes under the
configuration, and the weights' digest. A golden recorded for another
definition is stale. The input bytes are not part of the definition: numpy's
float64 exp/sin/cos round the last bit differently on different CPUs, so a
golden stores its inputs and a check compares regenerated inputs with them
by tolerance (``parity.goldens``). An input builder without a version (a
user's file, an ad-hoc function) has no identity but its bytes: then the
input hashes are part of the definition.

Change what a builder produces (``synthetic.py``, ``data.py`` or a builder
here) and you must bump its ``version``; the test of the shipped goldens
fails until you do and re-record.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from collections.abc import Callable, Mapping

import numpy as np

from backends.common.config import ForwardConfig, resolve_config
from backends.common.taps import pipeline_inputs, pipeline_taps
from backends.common.weights import init_weights, weights_fingerprint

from . import data, dataset, synthetic
from .errors import ParityInputError
from .lazy import LazyArray

InputBuilder = Callable[["Case"], dict[str, np.ndarray]]


@dataclasses.dataclass(frozen=True)
class VersionedBuilder:
    """An input builder with an explicit version: bump it whenever what it builds changes."""

    function: InputBuilder
    version: str

    def __call__(self, case: Case) -> dict[str, np.ndarray]:
        return self.function(case)


def builder(version: str) -> Callable[[InputBuilder], VersionedBuilder]:
    return lambda function: VersionedBuilder(function, version)


@dataclasses.dataclass(frozen=True)
class StoredInputs:
    """Inputs that were built elsewhere (a golden's), standing in for a builder of ``version``."""

    arrays: Mapping[str, np.ndarray]
    version: str | None

    def __call__(self, case: Case) -> dict[str, np.ndarray]:
        return dict(self.arrays)


HASH_PIECE = 4 << 20  # bytes hashed at a time: a large input is never copied whole to be hashed


def array_hash(array: np.ndarray | LazyArray) -> str:
    """sha256 of dtype, shape and the C-order bytes, fed piece by piece along axis 0 (the same digest
    as of the whole array's bytes); an input still in its file is read piece by piece, hashed once."""
    memo = array.memo if isinstance(array, LazyArray) else None
    if memo is not None and "array_hash" in memo:
        return memo["array_hash"]
    if not isinstance(array, LazyArray):
        array = np.asarray(array)
        if array.ndim == 0:
            array = np.ascontiguousarray(array)  # numpy makes it 1-d: the digest always had shape (1,)
    digest = hashlib.sha256(f"{array.dtype.str}:{array.shape}:".encode())
    if not array.shape or not array.size:
        digest.update(np.ascontiguousarray(array).tobytes())
    else:
        rows = max(1, HASH_PIECE // max(1, array.size // array.shape[0] * array.dtype.itemsize))
        for start in range(0, array.shape[0], rows):
            digest.update(np.ascontiguousarray(array[start : start + rows]).data)
    if memo is not None:
        memo["array_hash"] = digest.hexdigest()[:16]
    return digest.hexdigest()[:16]


def registry_table(pipeline: str, cfg: ForwardConfig, batch: int) -> list[list[object]]:
    """[name, layout, shape, dtype] of every input and tap of ``pipeline`` under ``cfg``."""
    specs = [*pipeline_inputs(pipeline), *pipeline_taps(pipeline, cfg)]
    return [[spec.name, spec.layout, list(spec.shape(cfg, batch)), spec.dtype(cfg).name] for spec in specs]


def _digest(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


@dataclasses.dataclass(frozen=True, eq=False)
class Case:
    name: str
    description: str
    pipeline: str
    config: ForwardConfig
    batch: int
    seed: int
    build_inputs: InputBuilder = dataclasses.field(repr=False)
    weights_seed: int | None = None
    bias_scale: float = 0.05
    tags: tuple[str, ...] = ()
    provided_weights: Mapping[str, np.ndarray] | None = dataclasses.field(default=None, repr=False)

    @functools.cached_property
    def inputs(self) -> dict[str, np.ndarray]:
        return self.build_inputs(self)

    @functools.cached_property
    def weights(self) -> dict[str, np.ndarray] | None:
        if self.pipeline != "pinn":
            return None
        if self.provided_weights is not None:
            return dict(self.provided_weights)
        return init_weights(self.config, seed=self.weights_seed or 0, bias_scale=self.bias_scale)

    @property
    def builder_version(self) -> str | None:
        return getattr(self.build_inputs, "version", None)

    def input_hashes(self) -> dict[str, str]:
        return {f"input:{name}": array_hash(value) for name, value in sorted(self.inputs.items())}

    def definition(self) -> dict[str, str]:
        """What makes this case this case (a golden of another definition is stale); see the module doc."""
        parts = {"pipeline": self.pipeline, "config": self.config.hash(), "seed": str(self.seed),
                 "batch": str(self.batch),
                 "registry": _digest(registry_table(self.pipeline, self.config, self.batch))}
        version = self.builder_version
        if version is None:
            parts.update(self.input_hashes())
        else:
            parts["inputs"] = version
        if self.weights is not None:
            parts["weights"] = weights_fingerprint(self.weights)
        return parts

    def hashes(self) -> dict[str, str]:
        """The definition plus a hash of each input array actually used (what reports record)."""
        return self.definition() | self.input_hashes()

    def hash(self) -> str:
        """The case hash: a digest of the definition."""
        return _digest(self.definition())

    def with_inputs(self, arrays: Mapping[str, np.ndarray]) -> Case:
        """The same case (same definition) run on ``arrays`` instead of its builder's output."""
        frozen = {name: np.asarray(value) for name, value in arrays.items()}
        return dataclasses.replace(self, build_inputs=StoredInputs(frozen, self.builder_version))

    def with_config(self, **changes: object) -> Case:
        """The same case under changed knobs (inputs rebuilt in the new dtype)."""
        clone = dataclasses.replace(self, config=self.config.replace(**changes))
        return clone

    def summary(self) -> dict[str, object]:
        return {"name": self.name, "description": self.description, "pipeline": self.pipeline,
                "batch": self.batch, "seed": self.seed, "tags": list(self.tags), "hash": self.hash()}


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
    _case("pinn-dataset-moon", "fixtures/datasets/moon.npz (PtychoPINN contract), K-NN groups", "pinn", dataset.MOON_KNOBS, batch=dataset.MOON_GROUPS, seed=10, build=dataset.build_moon_inputs, tags=("real-data", "dataset")),
    _case("simulate-dataset-moon", "fixtures/datasets/moon.npz objectGuess at its scan positions", "simulate", dataset.MOON_KNOBS, batch=dataset.MOON_POSITIONS, seed=11, build=dataset.build_moon_inputs, tags=("real-data", "dataset")),
]}


def builtin_case(name: str) -> Case:
    try:
        return BUILTIN_CASES[name]
    except KeyError:
        raise ParityInputError(f"unknown case {name!r}; built-in cases: {sorted(BUILTIN_CASES)}") from None


def select_cases(names: list[str] | None) -> list[Case]:
    return [builtin_case(name) for name in names] if names else list(BUILTIN_CASES.values())


def user_case(name: str, pipeline: str, config: ForwardConfig, inputs: Mapping[str, np.ndarray],
              weights: Mapping[str, np.ndarray] | None, description: str) -> Case:
    """A case around inputs a user supplied (already validated; a ``LazyArray`` stays in its file)."""
    frozen = {key: value if isinstance(value, LazyArray) else np.asarray(value) for key, value in inputs.items()}
    batch = next(iter(frozen.values())).shape[0] if pipeline != "simulate" else frozen["scan_positions"].shape[0]
    weights_seed = 0 if pipeline == "pinn" and weights is None else None
    return Case(name=name, description=description, pipeline=pipeline, config=config, batch=batch, seed=0,
                build_inputs=lambda case: dict(frozen), weights_seed=weights_seed,
                provided_weights=weights, tags=("user",))
