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
in ``builtin_cases.py``) and you must bump its ``version``; the test of the
shipped goldens fails until you do and re-record. The built-in cases and
their builders live in ``parity.builtin_cases``.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from collections.abc import Callable, Mapping

import numpy as np

from backends.common.config import ForwardConfig
from backends.common.taps import pipeline_inputs, pipeline_taps
from backends.common.weights import init_weights, weights_fingerprint

from .chunks import batch_of
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
        if batch_of(self.pipeline, frozen) != self.batch:
            raise ParityInputError(f"case {self.name!r}: the arrays hold {batch_of(self.pipeline, frozen)} samples, the "
                                   f"case {self.batch}; with_inputs keeps the case's definition: for arrays of "
                                   "your own, build a case with parity.case_from_arrays")
        return dataclasses.replace(self, build_inputs=StoredInputs(frozen, self.builder_version))

    def with_config(self, **changes: object) -> Case:
        """The same case under changed knobs (inputs rebuilt in the new dtype)."""
        clone = dataclasses.replace(self, config=self.config.replace(**changes))
        return clone

    def summary(self) -> dict[str, object]:
        return {"name": self.name, "description": self.description, "pipeline": self.pipeline,
                "batch": self.batch, "seed": self.seed, "tags": list(self.tags), "hash": self.hash()}


def user_case(name: str, pipeline: str, config: ForwardConfig, inputs: Mapping[str, np.ndarray],
              weights: Mapping[str, np.ndarray] | None, description: str) -> Case:
    """A case around inputs a user supplied (already validated; a ``LazyArray`` stays in its file)."""
    frozen = {key: value if isinstance(value, LazyArray) else np.asarray(value) for key, value in inputs.items()}
    batch = next(iter(frozen.values())).shape[0] if pipeline != "simulate" else frozen["scan_positions"].shape[0]
    weights_seed = 0 if pipeline == "pinn" and weights is None else None
    return Case(name=name, description=description, pipeline=pipeline, config=config, batch=batch, seed=0,
                build_inputs=lambda case: dict(frozen), weights_seed=weights_seed,
                provided_weights=weights, tags=("user",))
