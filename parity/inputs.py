"""User-supplied inputs and knobs, validated against the tap registry.

Every problem is a ``ParityInputError`` naming the file, the key and what was
expected. NPZ files are read member by member (``parity.npz``): headers are
checked before data is inflated, ignored keys are never read, nothing is ever
unpickled. Finiteness is judged after the cast to the run's dtype.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from backends.common.config import ConfigError, ForwardConfig, resolve_config
from backends.common.input_checks import input_problems
from backends.common.taps import PIPELINE_INPUTS, PIPELINES, TapSpec, pipeline_inputs, pipeline_taps
from backends.common.weights import weight_problems, weight_specs

from .budget import check, check_read
from .chunks import plan
from .errors import ParityInputError
from .files import read_toml, regular_file
from .input_stream import FiniteScan, stream_input
from .npz import NpzArchive, read_npz

BATCH_LAYOUTS = ("BHWC", "B12C", "M2")  # registry layouts whose first axis is the batch
# A batched member at least this large stays in its file and the run reads it chunk by chunk
# (``parity.input_stream``); smaller ones fit in one chunk and are read whole.
STREAM_MIN_BYTES = 16 << 20
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


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Knobs from a TOML file: top-level keys, or a [config] table."""
    document = read_toml(path, "config file")
    knobs = document.get("config", document)
    if not isinstance(knobs, dict):
        raise ParityInputError(f"{path}: key 'config': expected a table of knobs, got {type(knobs).__name__}")
    return knobs


def resolve_knobs(config_file: str | None, assignments: Sequence[str], base: ForwardConfig | None = None,
                  defaults: dict[str, Any] | None = None, defaults_source: str | None = None) -> ForwardConfig:
    """``defaults``, then --config FILE, then --set k=v (later wins), resolved and validated once.

    ``defaults_source`` names where the defaults came from (a dataset file): a default that is itself
    invalid, and not overridden, is that file's fault, not --set's.
    """
    knobs: dict[str, Any] = dict(defaults or {})
    source = "--set"
    if config_file:
        knobs.update(load_config_file(config_file))
        source = f"{config_file} / --set"
    knobs.update(parse_set(assignments))
    try:
        return resolve_config(knobs, base=base)
    except ConfigError as error:
        if defaults and defaults_source:
            kept = {key: value for key, value in defaults.items() if knobs.get(key) == value}
            try:
                resolve_config(kept, base=base)
            except ConfigError as own:
                raise ParityInputError(f"{defaults_source}: {own} (derived from the file's data)") from None
        raise ParityInputError(f"{source}: {error}") from None


def _expected_shape(spec: TapSpec, cfg: ForwardConfig, batch: int | None) -> tuple[int | None, ...]:
    return tuple(None if dim == -1 else dim for dim in spec.shape(cfg, -1 if batch is None else batch))


def _shape_text(shape: Sequence[int | None]) -> str:
    return "(" + ", ".join("any" if dim is None else str(dim) for dim in shape) + ")"


class _Header(Protocol):
    shape: tuple[int, ...]
    dtype: np.dtype


def check_header(path: str, key: str, value: _Header, spec: TapSpec, cfg: ForwardConfig, batch: int | None) -> None:
    """Shape and dtype kind against the registry line, from a header alone (no data read)."""
    where = f"{path}: key {key!r}"
    dtype, shape = np.dtype(value.dtype), tuple(value.shape)
    if dtype.hasobject or dtype.kind not in "fciu" or dtype.names is not None:
        raise ParityInputError(f"{where}: expected a numeric array, got dtype {dtype}")
    expected = _expected_shape(spec, cfg, batch)
    if not _fits(shape, expected):
        hint = ""
        if spec.layout == "BHWC" and len(shape) == 4 and shape[1:] == (expected[3], expected[1], expected[2]):
            hint = " (channels-first data? the canonical layout is channels last: (B, N, N, C))"
        elif (knobs := _knobs_giving(shape, spec, cfg, batch)) is not None:
            hint = f" (the shape {', '.join(knobs)} would give: --set {' --set '.join(knobs)})"
        raise ParityInputError(f"{where}: expected shape {_shape_text(expected)} ({spec.layout}: "
                               f"{spec.description}) under N={cfg.N}, gridsize={cfg.gridsize}, "
                               f"object_big={cfg.object_big}; got {shape}{hint}")
    if any(dim == 0 for dim in shape):
        raise ParityInputError(f"{where}: expected a non-empty array, got shape {shape}")
    if spec.kind == "real" and dtype.kind == "c":
        raise ParityInputError(f"{where}: expected a real array, got {dtype}")
    if spec.kind == "complex" and dtype.kind != "c":
        raise ParityInputError(f"{where}: expected a complex array ({spec.dtype(cfg)}), got {dtype}")


def _fits(shape: tuple[int, ...], expected: tuple[int | None, ...]) -> bool:
    return len(shape) == len(expected) and all(e is None or e == got for e, got in zip(expected, shape))


def _knobs_giving(shape: tuple[int, ...], spec: TapSpec, cfg: ForwardConfig, batch: int | None) -> list[str] | None:
    """The fewest changes of N, gridsize and object_big under which ``shape`` is what the registry expects (own
    inputs at N=32 read under the default N=64), or None."""
    found = []
    for n, gridsize, object_big in itertools.product((32, 64, 128, 256, 512), (1, 2, 3), (True, False)):
        changes = {key: value for key, value in (("N", n), ("gridsize", gridsize), ("object_big", object_big))
                   if getattr(cfg, key) != value}
        if not changes:
            continue
        try:
            expected = _expected_shape(spec, cfg.replace(**changes), batch)
        except Exception:  # noqa: BLE001 - a combination the configuration refuses
            continue
        if _fits(shape, expected):
            found.append(changes)
    if not found:
        return None
    best = min(found, key=len)
    return [f"{key}={value}" for key, value in best.items()]


def cast_checked(path: str, key: str, value: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``value`` in the run's dtype; finiteness is judged AFTER the cast (1e39 is finite, float32(1e39) is not)."""
    scan = FiniteScan(path, key, dtype)
    cast = scan.add(0, value)
    scan.check()
    return cast


def validate_array(path: str, key: str, value: np.ndarray, spec: TapSpec, cfg: ForwardConfig,
                   batch: int | None) -> np.ndarray:
    """Check one input against its registry line; return it in the configuration's dtype."""
    check_header(path, key, value, spec, cfg, batch)
    return cast_checked(path, key, value, spec.dtype(cfg))


def _registry_key(pipeline: str, keys: Sequence[str]) -> dict[str, str]:
    """Registry input name -> the user's key for it (aliases allowed; two keys for one input refused)."""
    found: dict[str, str] = {}
    for key in keys:
        name = KEY_ALIASES.get(key, key)
        if name in PIPELINE_INPUTS.get(pipeline, ()):
            if name in found:
                raise ParityInputError(f"keys {found[name]!r} and {key!r} both give input {name!r}; keep one")
            found[name] = key
    return found


def _check_headers(path: str, pipeline: str, cfg: ForwardConfig, headers: Mapping[str, _Header]) -> dict[str, str]:
    """Every input's header checked (keys, shapes, kinds, batch agreement); returns name -> user key."""
    if pipeline not in PIPELINES:
        raise ParityInputError(f"--pipeline {pipeline!r}: expected one of {PIPELINES}")
    try:
        names = _registry_key(pipeline, list(headers))
    except ParityInputError as error:
        raise ParityInputError(f"{path}: {error}") from None
    expected = PIPELINE_INPUTS[pipeline]
    missing = [key for key in expected if key not in names]
    if missing:
        raise ParityInputError(f"{path}: missing key(s) {missing} for pipeline {pipeline!r}; "
                               f"expected keys {list(expected)}, found {sorted(headers)}")
    batch = None
    for spec in pipeline_inputs(pipeline):
        header = headers[names[spec.name]]
        shape = tuple(header.shape)
        if spec.layout in BATCH_LAYOUTS and len(shape) >= 1:
            if batch is None:
                batch = shape[0]
            elif shape[0] != batch:
                raise ParityInputError(f"{path}: key {spec.name!r}: expected batch size {batch} "
                                       f"(as the other inputs), got {shape[0]}")
        check_header(path, spec.name, header, spec, cfg, batch)
    return names


def _check_usable(path: str, pipeline: str, cfg: ForwardConfig, inputs: Mapping[str, np.ndarray],
                  file_keys: Mapping[str, str]) -> None:
    for key, expectation in input_problems(pipeline, cfg, inputs):
        raise ParityInputError(f"{path}: key {file_keys.get(key, key)!r}: expected {expectation}")


def validate_inputs(path: str, pipeline: str, cfg: ForwardConfig, arrays: Mapping[str, np.ndarray],
                    file_keys: Mapping[str, str] | None = None) -> dict[str, np.ndarray]:
    """The pipeline's inputs, checked and cast; ``file_keys`` names the file's keys the inputs were built
    from where they differ (a dataset's ``objectGuess`` for ``object``), so messages name what the user has."""
    arrays = {key: np.asarray(value) for key, value in arrays.items()}
    names = _check_headers(path, pipeline, cfg, arrays)
    validated = {spec.name: cast_checked(path, spec.name, arrays[names[spec.name]], spec.dtype(cfg))
                 for spec in pipeline_inputs(pipeline)}
    _check_usable(path, pipeline, cfg, validated, file_keys or {})
    return validated


def scan_npz(path: str | Path, what: str = "inputs file") -> NpzArchive:
    """An archive's member headers (key -> shape, dtype); no data is read until asked for."""
    return NpzArchive(path, what)


def load_npz(path: str | Path, what: str = "inputs file") -> dict[str, np.ndarray]:
    """Every array of a small archive, read member by member without pickle."""
    return read_npz(path, what)


def infer_dtype(arrays: Mapping[str, _Header]) -> tuple[str, list[str]]:
    """The working dtype the inputs ask for, and the keys a float32 run would round.

    All floating inputs 64-bit (float64 / complex128): float64. Otherwise
    float32, and the 64-bit keys are named so the rounding is never silent.
    """
    floating = {key: np.dtype(value.dtype) for key, value in arrays.items() if np.dtype(value.dtype).kind in "fc"}
    wide = sorted(key for key, dtype in floating.items() if dtype.itemsize == (8 if dtype.kind == "f" else 16))
    if floating and len(wide) == len(floating):
        return "float64", []
    return "float32", wide


def split_keys(pipeline: str, arrays: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The arrays (or headers) that are inputs of ``pipeline``, and the keys it ignores."""
    expected = set(PIPELINE_INPUTS.get(pipeline, ()))
    used = {key: arrays[key] for key in arrays if KEY_ALIASES.get(key, key) in expected}  # ignored keys: never read
    return used, sorted(set(arrays) - set(used))


def load_inputs(path: str | Path, pipeline: str, cfg: ForwardConfig,
                arrays: Mapping[str, Any] | None = None) -> tuple[dict[str, Any], list[str]]:
    """Validated inputs and the keys that were ignored.

    ``arrays``: the file's arrays if already read, or its ``scan_npz`` headers.
    From an archive, headers are checked (and the bytes to read weighed against
    the memory limit) before any data is inflated, and ignored keys are never read.
    Large batched members are validated piece by piece and returned as ``LazyArray``s
    (``parity.lazy``) that the run reads chunk by chunk.
    """
    arrays = scan_npz(path) if arrays is None else arrays
    _, ignored = split_keys(pipeline, arrays)
    if not isinstance(arrays, NpzArchive):
        return validate_inputs(str(path), pipeline, cfg, arrays), ignored
    names = _check_headers(str(path), pipeline, cfg, arrays)
    streamed = {spec.name for spec in pipeline_inputs(pipeline) if _streamed(pipeline, cfg, spec, arrays[names[spec.name]])}
    # what is read whole; a streamed member is inflated a piece at a time
    check_read(str(path), sum(arrays[key].nbytes for name, key in names.items() if name not in streamed))
    shapes = {name: arrays[key].shape for name, key in names.items()}
    batch = next(shapes[spec.name][0] for spec in pipeline_inputs(pipeline) if spec.layout in BATCH_LAYOUTS)
    # the whole run, from the headers alone, in the chunks a run takes by default (--batch-chunk is weighed
    # again with the case, parity.commands._cases)
    chunk = max(stop - start for start, stop in plan(pipeline, pipeline_taps(pipeline, cfg), cfg, batch,
                                                     split_global=True))
    check(cfg, pipeline, batch, str(path), input_shapes=shapes, chunk_batch=chunk, inputs_in_file=streamed)
    validated: dict[str, Any] = {}
    judged: dict[str, np.ndarray] = {}  # what the degenerate-input checks see of each streamed input
    for spec in pipeline_inputs(pipeline):
        key, dtype = names[spec.name], spec.dtype(cfg)
        if _streamed(pipeline, cfg, spec, arrays[key]):
            validated[spec.name], judged[spec.name] = stream_input(str(path), spec.name, arrays, key, dtype)
        else:
            validated[spec.name] = cast_checked(str(path), spec.name, arrays.read(key), dtype)
    _check_usable(str(path), pipeline, cfg, validated | judged, {})
    return validated, ignored


def _streamed(pipeline: str, cfg: ForwardConfig, spec: TapSpec, member: Any) -> bool:
    """Whether input ``spec`` stays in its file: batched, large, C order, and the pipeline runs in chunks."""
    return (spec.layout in BATCH_LAYOUTS and member.nbytes >= STREAM_MIN_BYTES and not member.fortran_order
            and not any(tap.reduction == "global" for tap in pipeline_taps(pipeline, cfg)))


def _fit_problems(found: Mapping[str, Any], cfg: ForwardConfig) -> list[str]:
    """Names, shapes and dtypes of weights (arrays, or a weights archive's member headers) against the config."""
    expected = dict(weight_specs(cfg))
    problems = [f"missing parameter {name!r} with shape {shape}" for name, shape in expected.items()
                if name not in found]
    problems += [f"unexpected parameter {name!r}" for name in found if name not in expected]
    problems += [f"parameter {name!r} has shape {found[name].shape}, expected {shape}"
                 for name, shape in expected.items() if name in found and found[name].shape != shape]
    problems += [f"parameter {name!r} has dtype {found[name].dtype}, expected real floating point"
                 for name in expected if name in found and found[name].dtype.kind not in "f"]
    return problems


def _cast_weight(where: str, name: str, value: np.ndarray, cfg: ForwardConfig) -> np.ndarray:
    if np.isfinite(value).all():  # overflow in the cast is named here; NaN in the file by weight_problems
        return cast_checked(where, name, value, np.dtype(cfg.dtype))
    return value.astype(cfg.dtype)


WEIGHT_LIMIT = 1e10  # |w| beyond this overflows float32 activations within a few layers: junk, not a model


def _discrimination_problems(weights: Mapping[str, np.ndarray]) -> list[str]:
    """Weights that would make the network's taps say nothing about a port: all zero, or overflowing."""
    finite = {name: np.asarray(value) for name, value in weights.items() if np.isfinite(value).all()}
    if len(finite) == len(weights) and weights and not any(np.any(value) for value in finite.values()):
        return ["every parameter is zero, so every network tap is a constant and no port bug in the network could "
                "show; expected trained or initialised weights (omit the weights for seeded ones)"]
    return [f"parameter {name!r} holds values up to {float(np.abs(value).max()):.3g}, beyond {WEIGHT_LIMIT:g}: "
            "activations would overflow float32 within a few layers; expected trained or initialised weights"
            for name, value in finite.items() if value.size and float(np.abs(value).max()) > WEIGHT_LIMIT]


def check_weights(where: str, weights: Mapping[str, np.ndarray], cfg: ForwardConfig) -> dict[str, np.ndarray]:
    """In-memory canonical weights checked as a weights file's are (names, shapes, dtypes), cast to the run's dtype."""
    _refuse_weights(Path(where), _fit_problems(weights, cfg))
    _refuse_weights(Path(where), _discrimination_problems(weights), "weights cannot tell a port")
    return {name: _cast_weight(where, name, weights[name], cfg) for name, _ in weight_specs(cfg)}


def _npz_weights(path: Path, cfg: ForwardConfig) -> dict[str, np.ndarray]:
    """Canonical weights from a .npz: names and shapes checked from the headers before any data is read."""
    archive = scan_npz(path, "weights file")
    expected = dict(weight_specs(cfg))
    _refuse_weights(path, _fit_problems(archive, cfg))
    check_read(str(path), sum(archive[name].nbytes for name in expected))
    weights = {name: _cast_weight(str(path), name, archive.read(name), cfg) for name in expected}
    return weights


def _refuse_weights(path: Path, problems: list[str], what: str = "weights do not fit the configuration") -> None:
    if problems:
        raise ParityInputError(f"{path}: {what}: " + "; ".join(problems[:8])
                               + (f" (and {len(problems) - 8} more)" if len(problems) > 8 else ""))


def load_weights(path: str | Path, cfg: ForwardConfig) -> dict[str, np.ndarray]:
    """Canonical weights from a .npz (canonical names) or a Keras .weights.h5 / .keras file."""
    path = Path(path)
    name = path.name
    if name.endswith(".weights.h5") or name.endswith(".keras"):
        regular_file(path, "weights file")  # a FIFO would block h5py / zipfile forever
        from backends.tf.keras_io import WeightFileError, load_keras_weights

        try:
            weights = load_keras_weights(cfg, path)
        except WeightFileError as error:
            raise ParityInputError(str(error)) from None
    elif name.endswith(".npz"):
        weights = _npz_weights(path, cfg)
    else:
        raise ParityInputError(f"{path}: expected a .npz of canonical weights, a .weights.h5 or a .keras file")
    _refuse_weights(path, weight_problems(cfg, weights))
    _refuse_weights(path, _discrimination_problems(weights), "weights cannot tell a port")
    return weights
