"""Real Keras 3 weight files (``.weights.h5`` / ``.keras``) <-> canonical weights.

Keras 3 does not address a layer's variables by the layer's name. It walks
``model.layers`` in order and files each layer under the snake-cased class
name plus a per-class counter (``layers/conv2d``, ``layers/conv2d_1``, ...),
with the variables as ``vars/0`` (kernel), ``vars/1`` (bias). Loading is
positional in the same way, so two layers of equal shape (the amp and phase
heads' output convolutions, for instance) would be swapped silently if the
graph were built in another order. Keras >= 3.x writes the layer's own name as
the ``name`` attribute of each ``vars`` group, and a ``.keras`` archive also
holds the layer list in ``config.json``; ``load_keras_weights`` checks both
where present, checks every key and shape with h5py before Keras touches the
file, lets Keras's own ``model.load_weights`` read it, and then verifies that
what Keras loaded is what the file holds under the expected keys.

Nothing here unpickles: HDF5 datasets and a JSON config are all that is read,
and ``keras.models.load_model`` is never called on a file.
"""

from __future__ import annotations

import functools
import io
import json
import os
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from backends.common.config import ForwardConfig
from backends.common.hdf5 import oversized_chunks
from backends.common.weights import weight_problems, weight_specs

from .network import KerasNetwork, keras_layer_name

WEIGHTS_SUFFIX = ".weights.h5"
ARCHIVE_SUFFIX = ".keras"
ARCHIVE_WEIGHTS = "model.weights.h5"  # the weights member of a .keras zip archive
ARCHIVE_CONFIG = "config.json"


class WeightFileError(ValueError):
    """A weights file that cannot be mapped onto the configuration's parameters.

    The message names the file, the parameter or key, and what was expected;
    ``problems`` holds one line per problem found.
    """

    def __init__(self, path: str | os.PathLike, problems: list[str] | str) -> None:
        self.path = str(path)
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        lines = self.problems
        if len(lines) == 1:
            message = f"{self.path}: {lines[0]}"
        else:
            message = f"{self.path}: {len(lines)} problems\n" + "\n".join(f"  - {line}" for line in lines)
        super().__init__(message)


def to_snake_case(name: str) -> str:
    """Keras's own rule (keras.src.utils.naming.to_snake_case): 'MaxPooling2D' -> 'max_pooling2d'."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _layer_keys(model) -> dict[str, str]:
    """Keras layer name -> its group in a weights file, as Keras's saver names it.

    A Functional model's layers are saved first, as the container ``layers``;
    inside a container each saveable is named by its snake-cased class name,
    with ``_1``, ``_2``, ... for later ones of the same class.
    """
    used: dict[str, int] = {}
    keys = {}
    for layer in model.layers:
        base = to_snake_case(type(layer).__name__)
        if base in used:
            used[base] += 1
            key = f"{base}_{used[base]}"
        else:
            used[base] = 0
            key = base
        keys[layer.name] = f"layers/{key}"
    return keys


def _weight_paths(cfg: ForwardConfig, network: KerasNetwork, model) -> dict[str, str]:
    groups = _layer_keys(model)
    paths = {}
    for name, _ in weight_specs(cfg):
        prefix, kind = name.rsplit(".", 1)
        layer = network.layers[prefix]
        # Layer.save_own_variables numbers trainable then non-trainable variables.
        variables = list(layer.trainable_weights) + list(layer.non_trainable_weights)
        index = next(i for i, variable in enumerate(variables) if variable.name == kind)
        paths[name] = f"{groups[layer.name]}/vars/{index}"
    return paths


@functools.lru_cache(maxsize=16)
def _cached_weight_paths(cfg: ForwardConfig) -> tuple[tuple[str, str], ...]:
    network = KerasNetwork(cfg)
    return tuple(_weight_paths(cfg, network, network.keras_model()).items())


def keras_weight_paths(cfg: ForwardConfig) -> dict[str, str]:
    """Canonical parameter name -> HDF5 dataset path inside the weights file Keras writes.

    E.g. ``'encoder.block0.conv0.kernel' -> 'layers/conv2d/vars/0'``. Inside a
    ``.keras`` archive the same paths are in its ``model.weights.h5`` member.
    """
    return dict(_cached_weight_paths(cfg))


def _file_kind(path: Path) -> str:
    name = path.name
    if name.endswith(WEIGHTS_SUFFIX):
        return "h5"
    if name.endswith(ARCHIVE_SUFFIX):
        return "keras"
    raise WeightFileError(path, f"unsupported file name: Keras 3 reads weights from '*{WEIGHTS_SUFFIX}' "
                                f"or '*{ARCHIVE_SUFFIX}' files (legacy Keras 2 '.h5' files are not supported)")


def save_keras_weights(cfg: ForwardConfig, weights: Mapping[str, np.ndarray], path: str | os.PathLike) -> Path:
    """Write canonical weights as a real Keras file through the TF backend's functional model.

    ``*.weights.h5``: ``model.save_weights``; ``*.keras``: ``model.save`` (the
    whole functional model: config, metadata and weights, a zip archive that
    ``keras.models.load_model`` and ``model.load_weights`` both read).
    """
    path = Path(path)
    kind = _file_kind(path)
    problems = weight_problems(cfg, weights)
    if problems:
        raise ValueError(f"cannot save weights to {path}: they do not fit the configuration: " + "; ".join(problems))
    if not path.parent.is_dir():
        raise WeightFileError(path, f"directory {str(path.parent)!r} does not exist")
    model = KerasNetwork(cfg, weights).keras_model()
    if kind == "h5":
        model.save_weights(str(path))
    else:
        model.save(str(path))
    return path


_READ_MEMBERS = (ARCHIVE_WEIGHTS, ARCHIVE_CONFIG)
CONFIG_LIMIT = 16 * 2**20  # bytes of config.json read at most (a model's config is a few kB)


def _member(archive: zipfile.ZipFile, path: Path, name: str, limit: int) -> bytes:
    """One archive member, refused before decompression when it declares more than ``limit`` bytes (a zip bomb)."""
    size = archive.getinfo(name).file_size
    if size > limit:
        raise WeightFileError(path, f"member {name!r} unpacks to {size} bytes, more than the {limit} bytes this "
                                    "configuration's weights can take (a zip bomb, or weights of another model?)")
    return archive.read(name)


def _open_weights(path: Path, kind: str, limit: int) -> tuple[h5py.File, list[str] | None]:
    """The file's weights as an open h5py.File, plus the .keras config's Conv2D layer names."""
    if not path.exists():
        raise WeightFileError(path, "file does not exist")
    if not path.is_file():
        raise WeightFileError(path, "is not a regular file")
    if kind == "h5":
        if not h5py.is_hdf5(path):
            raise WeightFileError(path, "is not an HDF5 file (no HDF5 signature; truncated, corrupt, or not a "
                                        f"Keras '{WEIGHTS_SUFFIX}' file)")
        try:
            return h5py.File(path, "r"), None
        except OSError as error:
            raise WeightFileError(path, f"is not a readable HDF5 file (truncated or corrupt?): {error}") from None
    if not zipfile.is_zipfile(path):
        raise WeightFileError(path, "is not a readable zip archive (truncated, corrupt, or not a Keras '.keras' "
                                    "archive)")
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            members = set(names)
            repeated = [(name, names.count(name)) for name in _READ_MEMBERS if names.count(name) > 1]
            if repeated:  # zipfile reads the last of them, another reader may read the first
                raise WeightFileError(path, f"archive holds member {repeated[0][0]!r} {repeated[0][1]} times "
                                            "(expected once; which copy a reader takes is undefined)")
            if ARCHIVE_WEIGHTS not in members:
                raise WeightFileError(path, f"archive has no member {ARCHIVE_WEIGHTS!r} "
                                            f"(members: {sorted(members)})")
            blob = _member(archive, path, ARCHIVE_WEIGHTS, limit)
            config = (json.loads(_member(archive, path, ARCHIVE_CONFIG, CONFIG_LIMIT)) if ARCHIVE_CONFIG in members
                      else None)
    except WeightFileError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as error:
        raise WeightFileError(path, f"is not a readable zip archive (truncated or corrupt?): {error}") from None
    except (ValueError, UnicodeDecodeError, RecursionError) as error:  # JSONDecodeError, a 10,000-digit integer
        raise WeightFileError(path, f"member {ARCHIVE_CONFIG!r} is not valid JSON: "
                                    f"{str(error)[:200] or type(error).__name__}") from None
    try:
        handle = h5py.File(io.BytesIO(blob), "r")
    except OSError as error:
        raise WeightFileError(path, f"member {ARCHIVE_WEIGHTS!r} is not a readable HDF5 file: {error}") from None
    return handle, _config_conv_names(config)


def _config_conv_names(config: object) -> list[str] | None:
    """Names of the Conv2D layers a .keras config.json lists, in order (None if it lists none)."""
    model_config = config.get("config") if isinstance(config, dict) else None
    layers = model_config.get("layers") if isinstance(model_config, dict) else None
    if not isinstance(layers, list):
        return None
    return [entry.get("name") for entry in layers if isinstance(entry, dict) and entry.get("class_name") == "Conv2D"]


def _holds_data(group: h5py.Group) -> bool:
    found = []
    group.visititems(lambda _, item: found.append(True) if isinstance(item, h5py.Dataset) else None)
    return bool(found)


class _Elsewhere:
    """What a soft or external link stands for: never followed (it could name any file, a FIFO among them)."""

    def __init__(self, kind: str) -> None:
        self.kind = {"ExternalLink": "an external link", "SoftLink": "a soft link"}.get(kind, f"a {kind}")


def _hard_get(handle: h5py.Group, key: str) -> Any:
    """``handle[key]`` through hard links only: None where a part is missing, ``_Elsewhere`` where a part is a
    soft or external link (h5py's own ``get`` would open the file an external link names, and block on a FIFO)."""
    node: Any = handle
    for part in [piece for piece in key.split("/") if piece]:
        if not isinstance(node, h5py.Group):
            return None
        link = node.get(part, getlink=True)
        if link is None:
            return None
        if not isinstance(link, h5py.HardLink):
            return _Elsewhere(type(link).__name__)
        node = node[part]
    return node


def _read(item: h5py.Dataset) -> np.ndarray | str:
    """The dataset's values, or why they cannot be read (a chunk far larger than the dataset would be inflated
    whole, past --max-memory; a filter this machine lacks; a damaged chunk)."""
    oversized = oversized_chunks(item)
    if oversized is not None:
        return f"{oversized}; expected chunks at most the dataset's size"
    try:
        return item[()]
    except (OSError, ValueError) as error:
        return f"cannot be read ({str(error)[:160] or type(error).__name__})"


def _check_file(cfg: ForwardConfig, path: Path, handle: h5py.File, conv_names: list[str] | None,
                paths: Mapping[str, str], layer_keys: Mapping[str, str]) -> dict[str, np.ndarray]:
    """Every expected key present with the expected shape, layer names as expected; returns the raw arrays."""
    problems = []
    arrays = {}
    for name, shape in weight_specs(cfg):
        key = paths[name]
        item = _hard_get(handle, key)
        if isinstance(item, _Elsewhere):
            problems.append(f"parameter {name!r}: key {key!r} is reached through {item.kind}, which could name "
                            "any file; expected the values in the file itself")
            continue
        if not isinstance(item, h5py.Dataset):
            what = "no such key" if item is None else "not a dataset"
            problems.append(f"parameter {name!r}: key {key!r} missing ({what}); expected a "
                            f"{shape} array (the file lacks Keras layer {key.rsplit('/vars', 1)[0]!r})")
            continue
        if item.shape != shape:
            problems.append(f"parameter {name!r}: key {key!r} has shape {item.shape}, expected {shape} "
                            "(a file saved for another configuration?)")
            continue
        if item.dtype.kind != "f":
            problems.append(f"parameter {name!r}: key {key!r} has dtype {item.dtype}, expected floating point")
            continue
        if item.external or item.is_virtual:  # read from another file (a FIFO there would hang the read)
            problems.append(f"parameter {name!r}: key {key!r} stores its data outside the file "
                            f"({'virtual dataset' if item.is_virtual else 'external storage'}); expected the values "
                            "in the file itself")
            continue
        values = _read(item)
        if isinstance(values, str):
            problems.append(f"parameter {name!r}: key {key!r} {values}")
            continue
        arrays[name] = values
        if not np.isfinite(arrays[name]).all():
            problems.append(f"parameter {name!r}: key {key!r} holds NaN or Inf; expected finite weights")
    # Our own named layers, in the order Keras saves them. Only these are checked by
    # name: pooling/upsampling layers are auto-named with a per-process counter.
    own = {keras_layer_name(prefix) for prefix in network_prefixes(cfg)}
    conv_order = [layer_name for layer_name in layer_keys if layer_name in own]
    for layer_name in conv_order:
        group = layer_keys[layer_name]
        vars_group = _hard_get(handle, f"{group}/vars")
        stored = vars_group.attrs.get("name") if isinstance(vars_group, h5py.Group) else None
        if isinstance(stored, bytes):
            stored = stored.decode()
        if stored is not None and stored != layer_name:
            problems.append(f"key {group!r} holds Keras layer {stored!r}, expected {layer_name!r}: Keras loads "
                            "positionally, so the file's layers are in a different order than this model's")
    known_groups = set(layer_keys.values())
    layers = _hard_get(handle, "layers")
    if isinstance(layers, h5py.Group):
        for key in sorted(layers):
            group = f"layers/{key}"
            member = _hard_get(handle, group)
            if isinstance(member, _Elsewhere):
                problems.append(f"key {group!r} is {member.kind}, which could name any file; expected the "
                                "layers in the file itself")
            elif group not in known_groups and isinstance(member, h5py.Group) and _holds_data(member):
                problems.append(f"key {group!r} holds variables for a layer this configuration does not have")
    if conv_names is not None and conv_names != conv_order:
        problems.append(f"{ARCHIVE_CONFIG} lists Conv2D layers {conv_names}, expected {conv_order} in this "
                        "order (Keras loads positionally)")
    if problems:
        raise WeightFileError(path, problems)
    return arrays


def network_prefixes(cfg: ForwardConfig) -> list[str]:
    """Canonical layer prefixes ('encoder.block0.conv0', ...) in weight_specs order."""
    return list(dict.fromkeys(name.rsplit(".", 1)[0] for name, _ in weight_specs(cfg)))


def load_keras_weights(cfg: ForwardConfig, path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a real Keras weights file into canonical weights (``cfg.dtype``), with Keras's own loader.

    Raises ``WeightFileError`` for a missing, non-HDF5/non-zip, truncated or
    corrupt file, a missing layer, a wrong shape, a layer-order mismatch, or
    if what Keras loaded differs from what the file holds under the keys
    ``keras_weight_paths`` predicts.
    """
    path = Path(path)
    kind = _file_kind(path)
    network = KerasNetwork(cfg)
    model = network.keras_model()
    layer_keys = _layer_keys(model)
    paths = _weight_paths(cfg, network, model)
    # the weights as float64, twice over, plus room for HDF5's own structures
    limit = 16 * sum(int(np.prod(shape)) for _, shape in weight_specs(cfg)) + 64 * 2**20
    handle, conv_names = _open_weights(path, kind, limit)
    with handle:
        raw = _check_file(cfg, path, handle, conv_names, paths, layer_keys)
    try:
        model.load_weights(str(path))
    except Exception as error:  # Keras's own complaint, with the file named
        raise WeightFileError(path, f"Keras could not load the file: {error}") from error
    loaded = network.get_weights()
    mismatched = [f"parameter {name!r}: Keras loaded values that differ from key {paths[name]!r}"
                  for name in paths if not np.array_equal(loaded[name], raw[name].astype(cfg.dtype))]
    if mismatched:
        raise WeightFileError(path, mismatched)
    return {name: np.asarray(loaded[name], dtype=cfg.dtype) for name, _ in weight_specs(cfg)}
