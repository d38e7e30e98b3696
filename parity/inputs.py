"""User-supplied inputs and knobs, validated against the tap registry.

Every problem is a ``ParityInputError`` naming the file, the key and what was
expected. NPZ files are opened with ``allow_pickle=False``: never unpickle.
"""

from __future__ import annotations

import tomllib
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from backends.common.config import ConfigError, ForwardConfig, resolve_config
from backends.common.taps import PIPELINE_INPUTS, PIPELINES, TapSpec, pipeline_inputs
from backends.common.weights import weight_problems

from .errors import ParityInputError

# Where a user's key names differ from the registry's input names.
KEY_ALIASES = {"object.patches": "object_patches", "scan.positions": "scan_positions"}


def parse_set(assignments: Sequence[str]) -> dict[str, str]:
    knobs = {}
    for item in assignments:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ParityInputError(f"--set {item!r}: expected knob=value, e.g. --set N=32")
        knobs[key.strip()] = value.strip()
    return knobs


def read_toml(path: str | Path, what: str) -> dict[str, Any]:
    """A TOML document, or a ParityInputError naming the file (``what``: 'config file', ...)."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ParityInputError(f"{path}: {what} not found") from None
    except tomllib.TOMLDecodeError as error:
        raise ParityInputError(f"{path}: not valid TOML: {error}") from None


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Knobs from a TOML file: top-level keys, or a [config] table."""
    document = read_toml(path, "config file")
    knobs = document.get("config", document)
    if not isinstance(knobs, dict):
        raise ParityInputError(f"{path}: key 'config': expected a table of knobs, got {type(knobs).__name__}")
    return knobs


def resolve_knobs(config_file: str | None, assignments: Sequence[str], base: ForwardConfig | None = None,
                  defaults: dict[str, Any] | None = None) -> ForwardConfig:
    """``defaults``, then --config FILE, then --set k=v (later wins), resolved and validated once."""
    knobs: dict[str, Any] = dict(defaults or {})
    source = "--set"
    if config_file:
        knobs.update(load_config_file(config_file))
        source = f"{config_file} / --set"
    knobs.update(parse_set(assignments))
    try:
        return resolve_config(knobs, base=base)
    except ConfigError as error:
        raise ParityInputError(f"{source}: {error}") from None


def _expected_shape(spec: TapSpec, cfg: ForwardConfig, batch: int | None) -> tuple[int | None, ...]:
    return tuple(None if dim == -1 else dim for dim in spec.shape(cfg, -1 if batch is None else batch))


def _shape_text(shape: Sequence[int | None]) -> str:
    return "(" + ", ".join("any" if dim is None else str(dim) for dim in shape) + ")"


def validate_array(path: str, key: str, value: np.ndarray, spec: TapSpec, cfg: ForwardConfig,
                   batch: int | None) -> np.ndarray:
    """Check one input against its registry line; return it in the configuration's dtype."""
    where = f"{path}: key {key!r}"
    if value.dtype == object or value.dtype.kind not in "fciu":
        raise ParityInputError(f"{where}: expected a numeric array, got dtype {value.dtype}")
    expected = _expected_shape(spec, cfg, batch)
    if value.ndim != len(expected) or any(e is not None and e != got for e, got in zip(expected, value.shape)):
        hint = ""
        if spec.layout == "BHWC" and value.ndim == 4 and value.shape[1:] == (expected[3], expected[1], expected[2]):
            hint = " (channels-first data? the canonical layout is channels last: (B, N, N, C))"
        raise ParityInputError(f"{where}: expected shape {_shape_text(expected)} ({spec.layout}: "
                               f"{spec.description}) under N={cfg.N}, gridsize={cfg.gridsize}, "
                               f"object_big={cfg.object_big}; got {value.shape}{hint}")
    if any(dim == 0 for dim in value.shape):
        raise ParityInputError(f"{where}: expected a non-empty array, got shape {value.shape}")
    if spec.kind == "real" and value.dtype.kind == "c":
        raise ParityInputError(f"{where}: expected a real array, got {value.dtype}")
    if spec.kind == "complex" and value.dtype.kind != "c":
        raise ParityInputError(f"{where}: expected a complex array ({spec.dtype(cfg)}), got {value.dtype}")
    finite = np.isfinite(value)
    if not finite.all():
        first = tuple(int(i) for i in np.argwhere(~finite)[0])
        raise ParityInputError(f"{where}: expected finite values, found {int((~finite).sum())} NaN/Inf "
                               f"(first at index {first})")
    return value.astype(spec.dtype(cfg), copy=False)


def validate_inputs(path: str, pipeline: str, cfg: ForwardConfig, arrays: Mapping[str, np.ndarray],
                    ) -> dict[str, np.ndarray]:
    if pipeline not in PIPELINES:
        raise ParityInputError(f"--pipeline {pipeline!r}: expected one of {PIPELINES}")
    arrays = {KEY_ALIASES.get(key, key): value for key, value in arrays.items()}
    expected = PIPELINE_INPUTS[pipeline]
    missing = [key for key in expected if key not in arrays]
    if missing:
        raise ParityInputError(f"{path}: missing key(s) {missing} for pipeline {pipeline!r}; "
                               f"expected keys {list(expected)}, found {sorted(arrays)}")
    batch = None
    validated = {}
    for spec in pipeline_inputs(pipeline):
        value = np.asarray(arrays[spec.name])
        if spec.layout in ("BHWC", "B12C", "M2") and value.ndim >= 1:
            if batch is None:
                batch = value.shape[0]
            elif value.shape[0] != batch:
                raise ParityInputError(f"{path}: key {spec.name!r}: expected batch size {batch} "
                                       f"(as the other inputs), got {value.shape[0]}")
        validated[spec.name] = validate_array(path, spec.name, value, spec, cfg, batch)
    return validated


def load_npz(path: str | Path) -> dict[str, np.ndarray]:
    path = Path(path)
    if path.is_file() and not zipfile.is_zipfile(path):
        raise ParityInputError(f"{path}: not an .npz archive (expected a file written by numpy.savez)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except FileNotFoundError:
        raise ParityInputError(f"{path}: inputs file not found") from None
    except ValueError as error:  # object arrays refuse to load without pickle
        raise ParityInputError(f"{path}: holds data that needs pickle to load ({error}); "
                               "expected plain numeric arrays") from None
    except (OSError, zipfile.BadZipFile, EOFError) as error:
        raise ParityInputError(f"{path}: not a readable .npz archive ({error})") from None


def infer_dtype(arrays: Mapping[str, np.ndarray]) -> tuple[str, list[str]]:
    """The working dtype the inputs ask for, and the keys a float32 run would round.

    All floating inputs 64-bit (float64 / complex128): float64. Otherwise
    float32, and the 64-bit keys are named so the rounding is never silent.
    """
    floating = {key: value.dtype for key, value in arrays.items() if value.dtype.kind in "fc"}
    wide = sorted(key for key, dtype in floating.items() if dtype.itemsize == (8 if dtype.kind == "f" else 16))
    if floating and len(wide) == len(floating):
        return "float64", []
    return "float32", wide


def split_keys(pipeline: str, arrays: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], list[str]]:
    """The arrays that are inputs of ``pipeline``, and the keys it ignores."""
    expected = set(PIPELINE_INPUTS.get(pipeline, ()))
    used = {key: value for key, value in arrays.items() if KEY_ALIASES.get(key, key) in expected}
    return used, sorted(set(arrays) - set(used))


def load_inputs(path: str | Path, pipeline: str, cfg: ForwardConfig,
                arrays: Mapping[str, np.ndarray] | None = None) -> tuple[dict[str, np.ndarray], list[str]]:
    """Validated inputs and the keys that were ignored (``arrays``: the file, if already read)."""
    arrays = load_npz(path) if arrays is None else arrays
    _, ignored = split_keys(pipeline, arrays)
    return validate_inputs(str(path), pipeline, cfg, arrays), ignored


def load_weights(path: str | Path, cfg: ForwardConfig) -> dict[str, np.ndarray]:
    """Canonical weights from a .npz (canonical names) or a Keras .weights.h5 / .keras file."""
    path = Path(path)
    name = path.name
    if name.endswith(".weights.h5") or name.endswith(".keras"):
        from backends.tf.keras_io import WeightFileError, load_keras_weights

        try:
            weights = load_keras_weights(cfg, path)
        except WeightFileError as error:
            raise ParityInputError(str(error)) from None
    elif name.endswith(".npz"):
        weights = {key: value.astype(cfg.dtype) if value.dtype.kind == "f" else value
                   for key, value in load_npz(path).items()}
    else:
        raise ParityInputError(f"{path}: expected a .npz of canonical weights, a .weights.h5 or a .keras file")
    problems = weight_problems(cfg, weights)
    if problems:
        raise ParityInputError(f"{path}: weights do not fit the configuration: " + "; ".join(problems[:8])
                               + (f" (and {len(problems) - 8} more)" if len(problems) > 8 else ""))
    return weights
