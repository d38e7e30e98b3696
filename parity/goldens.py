"""Golden files: the reference backend's taps for a case, in HDF5, self-contained and checksummed.

Layout of ``fixtures/goldens/<case>.h5`` (schema 2)::

    /            attrs: schema_version, case_name, case_hash, definition (JSON), pipeline, config (JSON),
                        description, backend (JSON), provenance (JSON), created, tap_order (JSON),
                        golden_sha256
    /inputs/<name>     the inputs the reference ran on; a check runs the candidate on these
    /taps/<name>       one dataset per tap; attrs sha256, layout, kind, stage, declared_dtype

Every dataset carries the sha256 of its bytes, and ``golden_sha256`` covers
everything else: every attribute of the file and of its datasets (those
checksums included), every object's name, shape and dtype. A flipped bit, a
forged attribute (provenance, backend, config, tap order...) or a removed tap
is refused as corrupt.

``definition`` is the case's definition (``Case.definition``): pipeline,
config, seed, batch, input-builder version, registry shapes, and for ``pinn``
the digest of the seeded weights. Weights are not stored (the default
network's are ~9 MB): their generation is bit-portable (``backends/common/
weights.py``), and a check that regenerates other weights refuses, naming
them. A golden is written in memory and lands on disk in one atomic rename
(``parity.atomic_files``), so a failed or interrupted record leaves the old
golden intact.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from backends.common.config import ForwardConfig, resolve_config
from backends.common.taps import PIPELINES, TapSpec

from .atomic_files import atomic_target, regular_file, write_bytes_atomically
from .cases import Case, registry_table
from .errors import CorruptGoldenError, ParityInputError, StaleGoldenError
from .golden_digest import DIGEST_ATTR, check_chunks, dataset_digest, metadata_digest

SCHEMA_VERSION = 2
GROUPS = ("inputs", "taps")
NUMERIC_KINDS = "biufc"


def golden_path(directory: str | Path, case_name: str) -> Path:
    return Path(directory) / f"{case_name}.h5"


@contextlib.contextmanager
def atomic_h5(path: str | Path) -> Iterator[h5py.File]:
    """An HDF5 file streamed to disk that appears at ``path`` only if the block completes (tap dumps)."""
    with atomic_target(path) as temporary, h5py.File(temporary, "w") as h5:
        yield h5


# ---- writing ----

def _write_dataset(group: h5py.Group, name: str, array: np.ndarray) -> h5py.Dataset:
    array = np.asarray(array)
    options = {"compression": "gzip", "compression_opts": 4, "shuffle": True} if array.size >= 1024 else {}
    dataset = group.create_dataset(name, data=array, **options)
    dataset.attrs["sha256"] = dataset_digest(array)
    return dataset


class GoldenWriter:
    """Streams taps into a golden file; used as the reference run's sink. ``finish()`` seals it."""

    def __init__(self, h5: h5py.File, case: Case, backend: Mapping[str, Any], provenance: Mapping[str, Any],
                 not_provided: Mapping[str, str] | None = None) -> None:
        self.h5 = h5
        self.config = case.config
        self.order: list[str] = []
        h5.attrs.update({
            "schema_version": SCHEMA_VERSION, "case_name": case.name, "case_hash": case.hash(),
            "definition": json.dumps(case.definition(), sort_keys=True), "pipeline": case.pipeline,
            "config": json.dumps(case.config.to_dict(), sort_keys=True), "description": case.description,
            "backend": json.dumps(backend, sort_keys=True), "provenance": json.dumps(provenance, sort_keys=True),
            "created": str(provenance.get("timestamp", "")), "tap_order": "[]",
            # taps the reference does not compute, with its reasons (a plug-in reference may leave some out)
            "not_provided": json.dumps(dict(not_provided or {}), sort_keys=True),
        })
        inputs = h5.create_group("inputs")
        for name, value in case.inputs.items():
            _write_dataset(inputs, name, value)
        self.taps = h5.create_group("taps")

    def __call__(self, spec: TapSpec, value: np.ndarray) -> None:
        dataset = _write_dataset(self.taps, spec.name, value)
        dataset.attrs.update({"layout": spec.layout, "kind": spec.kind, "stage": spec.stage or "",
                              "declared_dtype": spec.dtype(self.config).name})
        self.order.append(spec.name)

    def finish(self) -> None:
        self.h5.attrs["tap_order"] = json.dumps(self.order)
        self.h5.attrs[DIGEST_ATTR] = metadata_digest(self.h5)


def write_golden(path: str | Path, fill: Callable[[h5py.File], None]) -> Path:
    """Build a golden in memory with ``fill(h5)``, then put it at ``path`` in one atomic write.

    Nothing touches the disk until the file is complete, so HDF5 never meets a
    failing write (under a full disk or ``ulimit -f`` it crashes on cleanup).
    """
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as h5:
        fill(h5)
    write_bytes_atomically(path, buffer.getbuffer())
    return Path(path)


# ---- reading ----

def _text(attrs: Mapping[str, Any], key: str) -> str:
    value = attrs[key]
    if not isinstance(value, str):
        raise TypeError(f"attribute {key!r} must be text, got {type(value).__name__}")
    return value


def _json(attrs: Mapping[str, Any], key: str, kind: type) -> Any:
    try:
        value = json.loads(_text(attrs, key))
    except json.JSONDecodeError as error:
        raise ValueError(f"attribute {key!r} is not JSON ({error})") from None
    if not isinstance(value, kind):
        raise TypeError(f"attribute {key!r} must hold a JSON {kind.__name__}, got {type(value).__name__}")
    return value


def _strings(value: Any, key: str, mapping: bool = False) -> Any:
    items = list(value.items()) if mapping else [(item, item) for item in value]
    if not all(isinstance(a, str) and isinstance(b, str) for a, b in items):
        raise TypeError(f"attribute {key!r} must hold only strings")
    return value


class Golden:
    """A golden file opened for reading and checked against its digest; taps come back as lazy datasets."""

    def __init__(self, path: str | Path) -> None:
        self.path = regular_file(path, "golden file", "; record it with `parity record`")
        try:
            self.h5 = h5py.File(self.path, "r")
        except Exception as error:  # h5py raises OSError, but a damaged superblock can surface otherwise
            raise CorruptGoldenError(f"{self.path}: not a readable HDF5 golden ({error})") from None
        self._inputs: dict[str, np.ndarray] | None = None
        try:
            self._read_metadata()
        except BaseException:
            self.close()
            raise

    def _corrupt(self, what: str) -> CorruptGoldenError:
        return CorruptGoldenError(f"{self.path}: {what}; re-record it with `parity record`")

    def _read_metadata(self) -> None:
        try:
            attrs = {str(key): self.h5.attrs[key] for key in self.h5.attrs}
            version = attrs.get("schema_version")
            if isinstance(version, np.generic):
                version = version.item()
            if not isinstance(version, int) or isinstance(version, bool):
                raise self._corrupt(f"attribute 'schema_version' missing or not an integer ({version!r})")
            if version != SCHEMA_VERSION:
                raise self._corrupt(f"golden schema {version}, this harness reads {SCHEMA_VERSION}")
            recorded = attrs.get(DIGEST_ATTR)
            if not isinstance(recorded, str) or recorded != metadata_digest(self.h5):
                raise self._corrupt("its metadata does not match its digest (an attribute, a dataset's "
                                    "checksum or the set of datasets was changed after recording)")
            self.attrs = attrs
            self.case_name = _text(attrs, "case_name")
            self.case_hash = _text(attrs, "case_hash")
            self.definition = _strings(_json(attrs, "definition", dict), "definition", mapping=True)
            self.pipeline = _text(attrs, "pipeline")
            if self.pipeline not in PIPELINES:
                raise ValueError(f"attribute 'pipeline' is {self.pipeline!r}, expected one of {PIPELINES}")
            self.config: ForwardConfig = resolve_config(_json(attrs, "config", dict))
            self.description = _text(attrs, "description")
            self.backend = _json(attrs, "backend", dict)
            self.provenance = _json(attrs, "provenance", dict)
            self.created = _text(attrs, "created")
            self.tap_order = _strings(_json(attrs, "tap_order", list), "tap_order")
            self.not_provided = (_strings(_json(attrs, "not_provided", dict), "not_provided", mapping=True)
                                 if "not_provided" in attrs else {})
            for group in GROUPS:
                if not isinstance(self.h5.get(group), h5py.Group):
                    raise KeyError(f"group {group!r}")
                for name, dataset in self.h5[group].items():
                    if not isinstance(dataset, h5py.Dataset) or dataset.dtype.kind not in NUMERIC_KINDS:
                        raise TypeError(f"'{group}/{name}' is not a numeric dataset")
        except CorruptGoldenError:
            raise
        except Exception as error:  # any malformed attribute or object: corrupt, never a traceback
            raise self._corrupt(f"missing or malformed golden metadata ({error})") from None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.h5.close()

    def __enter__(self) -> Golden:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- staleness ----

    def check_definition(self, case: Case) -> None:
        """Refuse a golden recorded for another definition of the case (see ``Case.definition``)."""
        current = case.definition()
        if current == self.definition:
            return
        changed = sorted(key for key in set(current) | set(self.definition)
                         if current.get(key) != self.definition.get(key))
        details = []
        for key in changed:
            mine, theirs = self.definition.get(key), current.get(key)
            if key == "config":
                diff = self.config.diff(case.config)
                details.append("config " + ", ".join(f"{k}: golden {a!r} -> now {b!r}" for k, (a, b) in diff.items()))
            elif key == "registry":
                details.append("registry (tap names, shapes or dtypes): " + self._registry_changes(case))
            elif key == "weights":
                details.append(f"weights (digest golden {mine}, regenerated here {theirs}: the seeded weights "
                               "differ; init_weights changed, or it is not bit-portable to this machine)")
            elif key.startswith("input:"):
                details.append(key)
            else:
                details.append(f"{key}: golden {mine!r} -> now {theirs!r}")
        if "user" in case.tags:  # a case around the user's own files has no name to record it by
            advice = (f"Re-record with `parity record --pipeline {case.pipeline}` and the same --inputs/--dataset, "
                      "--weights, --name and knobs (--set, --config) as this check, with --goldens")
        else:
            advice = (f"Re-record with `parity record --case {case.name}` (knob overrides change the case: record "
                      "and check with the same overrides, into a folder of your own with --goldens)")
        raise StaleGoldenError(f"{self.path}: stale golden for case {case.name!r}: recorded case hash "
                               f"{self.case_hash}, current {case.hash()}; changed: {'; '.join(details)}. {advice}")

    def graph(self):
        """The taps this golden holds, as a reference's graph (taps it lacks: not provided, with the reason)."""
        from backends.common.taps import pipeline_taps

        from .adapters import Graph

        registry = pipeline_taps(self.pipeline, self.config)
        recorded = set(self.h5["taps"])
        reasons = self.not_provided
        return Graph([spec for spec in registry if spec.name in recorded],
                     {spec.name: str(reasons.get(spec.name, "not recorded in the golden"))
                      for spec in registry if spec.name not in recorded})

    def _registry_changes(self, case: Case) -> str:
        now = {row[0]: row[1:] for row in registry_table(case.pipeline, case.config, case.batch)}
        then = {name: [str(d.attrs.get("layout", "")), list(d.shape), d.dtype.name]
                for name, d in self.h5["taps"].items()}
        parts = [f"{name} golden {then[name]} -> now {now[name]}" for name in then
                 if name in now and then[name] != now[name]]
        parts += [f"new tap {name}" for name in now if name not in then and name not in self.h5["inputs"]]
        parts += [f"tap {name} gone" for name in then if name not in now]
        return ", ".join(parts) or "the registry's table changed"

    def check_contents(self, case: Case) -> None:
        """What the file holds must be what its metadata says, before any data is read: the case's name and
        pipeline, every dataset at the registry's shape and dtype for the case (a resealed file whose digest is
        consistent but whose content was changed is corrupt, never a candidate's divergence), a tap order of
        recorded taps."""
        if self.case_name != case.name or self.pipeline != self.definition.get("pipeline"):
            raise CorruptGoldenError(f"{self.path}: holds case {self.case_name!r} ({self.pipeline}, recorded as "
                                     f"{self.definition.get('pipeline')}), not {case.name!r}; re-record it with "
                                     "`parity record`")
        try:  # against the golden's own definition: a case changed since is stale (check_definition), not corrupt
            batch = int(self.definition.get("batch", ""))
        except ValueError:
            raise CorruptGoldenError(f"{self.path}: its definition has no batch size; re-record it") from None
        expected = {row[0]: (tuple(row[2]), row[3]) for row in registry_table(self.pipeline, self.config, batch)}
        largest = max((dataset.size for group in GROUPS for name, dataset in self.h5[group].items()
                       if name in expected), default=0)
        for group in GROUPS:
            for name, dataset in self.h5[group].items():
                check_chunks(self.path, f"{group}/{name}", dataset)
                if name not in expected:
                    if dataset.size > largest:  # checksumming it would read (or fill in) all of it first
                        raise CorruptGoldenError(f"{self.path}: holds '{group}/{name}', which the registry does not "
                                                 f"know, declared as {tuple(dataset.shape)}: larger than any "
                                                 "dataset of the case; the file was changed after recording")
                    continue  # an unknown tap or input is named by the caller's set comparison
                shape, dtype = expected[name]
                fits = len(shape) == dataset.ndim and all(want in (None, -1) or want == got
                                                          for want, got in zip(shape, dataset.shape))
                if not fits or dataset.dtype.name != dtype or not dataset.dtype.isnative:
                    order = "" if dataset.dtype.isnative else f" ({dataset.dtype.str}: another byte order)"
                    raise CorruptGoldenError(f"{self.path}: '{group}/{name}' is stored as {dataset.dtype.name}{order} "
                                             f"{tuple(dataset.shape)}, the registry says {dtype} {shape} for this "
                                             "case: the file was changed after recording; re-record it")
        strays = [name for name in self.tap_order if name not in self.h5["taps"]]
        if strays:
            raise CorruptGoldenError(f"{self.path}: its tap order names {strays}, which it does not hold")

    def check_case(self, case: Case) -> None:
        """The golden must be of ``case``'s definition, and ``case`` must run on the golden's inputs.

        The runner calls this: a candidate judged against a golden runs on the
        inputs stored in it, never on inputs regenerated here
        (``parity.workflows.open_golden`` builds such a case).
        """
        self.check_definition(case)
        stored = self.inputs()
        same = set(stored) == set(case.inputs) and all(
            stored[name].dtype == value.dtype and stored[name].shape == value.shape
            and stored[name].tobytes() == np.ascontiguousarray(value).tobytes() for name, value in case.inputs.items())
        if not same:
            raise ParityInputError(f"{self.path}: the case's inputs are not the golden's; a check runs on the "
                                   "inputs stored in the golden (use parity.workflows.open_golden)")

    # ---- data ----

    def tap_names(self) -> list[str]:
        return list(self.tap_order) or list(self.h5["taps"])

    def tap(self, name: str) -> h5py.Dataset:
        try:
            return self.h5["taps"][name]
        except KeyError:
            raise CorruptGoldenError(f"{self.path}: tap {name!r} not recorded; taps: {self.tap_names()}") from None

    def inputs(self) -> dict[str, np.ndarray]:
        """The stored inputs, each verified against its checksum (read once)."""
        if self._inputs is None:
            self._inputs = {name: self._read_verified(dataset, f"inputs/{name}")
                            for name, dataset in self.h5["inputs"].items()}
        return dict(self._inputs)

    def _read_verified(self, dataset: h5py.Dataset, where: str) -> np.ndarray:
        try:
            array = dataset[()]
        except Exception as error:  # a damaged compressed chunk: "filter returned failure during read"
            raise CorruptGoldenError(f"{self.path}: dataset '{where}' cannot be read ({error}); the file is "
                                     "damaged, re-record it with `parity record`") from None
        if dataset_digest(array) != dataset.attrs.get("sha256"):
            raise CorruptGoldenError(f"{self.path}: dataset '{where}' fails its sha256 checksum")
        return array

    def verify(self) -> None:
        """Every dataset against its recorded checksum (streamed); unreadable data is corruption too."""
        for group in GROUPS:
            for name, dataset in self.h5[group].items():
                try:
                    digest = dataset_digest(dataset)
                except Exception as error:
                    raise CorruptGoldenError(f"{self.path}: dataset '{group}/{name}' cannot be read ({error}); "
                                             "the file is damaged, re-record it with `parity record`") from None
                if digest != dataset.attrs.get("sha256"):
                    raise CorruptGoldenError(f"{self.path}: dataset '{group}/{name}' fails its sha256 checksum")
