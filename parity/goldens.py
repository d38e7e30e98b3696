"""Golden files: the reference backend's taps for a case, in HDF5, with provenance.

Layout of ``fixtures/goldens/<case>.h5``::

    /            attrs: schema_version, case_name, case_hash, case_hashes (JSON), pipeline,
                        config (JSON), backend (JSON), provenance (JSON), created, tap_order (JSON)
    /inputs/<name>     the case inputs (a check compares them with the regenerated case)
    /taps/<name>       one dataset per tap; attrs sha256, layout, kind, stage, declared_dtype

Weights are not stored: they are regenerated from the case's seed, and the
case hash (which covers their fingerprint) proves they are the same ones.
Writes go to a temporary file in the same folder and are renamed into place
only when complete, so an interrupted record leaves the old golden intact.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from backends.common.config import resolve_config
from backends.common.taps import TapSpec

from .cases import Case
from .errors import CorruptGoldenError, ParityInputError, StaleGoldenError

SCHEMA_VERSION = 1
ROW_BYTES = 32 << 20  # checksum and copy in slices of about this many bytes


def golden_path(directory: str | Path, case_name: str) -> Path:
    return Path(directory) / f"{case_name}.h5"


def _row_slices(shape: tuple[int, ...], itemsize: int) -> Iterator[slice | tuple]:
    if not shape:
        yield ()
        return
    row = max(1, itemsize * int(np.prod(shape[1:], dtype=np.int64)))
    step = max(1, ROW_BYTES // row)
    for start in range(0, shape[0], step):
        yield slice(start, min(start + step, shape[0]))


def dataset_digest(dataset: h5py.Dataset | np.ndarray) -> str:
    digest = hashlib.sha256()
    for part in _row_slices(dataset.shape, dataset.dtype.itemsize):
        digest.update(np.ascontiguousarray(dataset[part]).tobytes())
    return digest.hexdigest()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_h5(path: str | Path) -> Iterator[h5py.File]:
    """An HDF5 file that appears at ``path`` only if the block completes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes it private; a golden is an ordinary file
    try:
        with h5py.File(temporary, "w") as h5:
            yield h5
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def _write_dataset(group: h5py.Group, name: str, array: np.ndarray) -> h5py.Dataset:
    array = np.asarray(array)
    options = {"compression": "gzip", "compression_opts": 4, "shuffle": True} if array.size >= 1024 else {}
    dataset = group.create_dataset(name, data=array, **options)
    dataset.attrs["sha256"] = dataset_digest(array)
    return dataset


class GoldenWriter:
    """Streams taps into a golden file; used as the reference run's sink."""

    def __init__(self, h5: h5py.File, case: Case, backend: Mapping[str, Any], provenance: Mapping[str, Any]) -> None:
        self.h5 = h5
        self.config = case.config
        self.order: list[str] = []
        h5.attrs.update({
            "schema_version": SCHEMA_VERSION, "case_name": case.name, "case_hash": case.hash(),
            "case_hashes": json.dumps(case.hashes(), sort_keys=True), "pipeline": case.pipeline,
            "config": json.dumps(case.config.to_dict(), sort_keys=True), "description": case.description,
            "backend": json.dumps(backend, sort_keys=True), "provenance": json.dumps(provenance, sort_keys=True),
            "created": provenance.get("timestamp", ""),
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
        self.h5.attrs["tap_order"] = json.dumps(self.order)


class Golden:
    """A golden file opened for reading; taps come back as lazy h5py datasets."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise ParityInputError(f"{self.path}: golden file not found; record it with `parity record`")
        try:
            self.h5 = h5py.File(self.path, "r")
        except OSError as error:
            raise CorruptGoldenError(f"{self.path}: not a readable HDF5 golden ({error})") from None
        try:
            self.attrs = {key: self.h5.attrs[key] for key in self.h5.attrs}
            version = int(self.attrs["schema_version"])
            self.case_name = str(self.attrs["case_name"])
            self.case_hash = str(self.attrs["case_hash"])
            self.case_hashes = json.loads(self.attrs["case_hashes"])
            self.pipeline = str(self.attrs["pipeline"])
            self.config = resolve_config(json.loads(self.attrs["config"]))
            self.backend = json.loads(self.attrs["backend"])
            self.provenance = json.loads(self.attrs["provenance"])
            self.tap_order = json.loads(self.attrs.get("tap_order", "[]"))
            for group in ("inputs", "taps"):
                if group not in self.h5:
                    raise KeyError(group)
        except (KeyError, ValueError, TypeError) as error:
            self.close()
            raise CorruptGoldenError(f"{self.path}: missing or malformed golden metadata ({error!r}); "
                                     "re-record it with `parity record`") from None
        if version != SCHEMA_VERSION:
            self.close()
            raise CorruptGoldenError(f"{self.path}: golden schema {version}, this harness reads {SCHEMA_VERSION}")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.h5.close()

    def __enter__(self) -> Golden:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def check_case(self, case: Case) -> None:
        """Refuse a golden recorded for another definition of the case."""
        current = case.hashes()
        if self.case_hash == case.hash() and self.case_hashes == current:
            return
        changed = sorted(key for key in set(current) | set(self.case_hashes)
                         if current.get(key) != self.case_hashes.get(key))
        details = []
        if "config" in changed:
            diff = self.config.diff(case.config)
            details.append("config " + ", ".join(f"{k}: golden {a!r} -> now {b!r}" for k, (a, b) in diff.items()))
        details += [part for part in changed if part != "config"]
        raise StaleGoldenError(f"{self.path}: stale golden for case {case.name!r}: recorded case hash "
                               f"{self.case_hash}, current {case.hash()}; changed: {'; '.join(details)}. "
                               f"Re-record with `parity record --case {case.name}` (knob overrides change the "
                               f"case: record and check with the same overrides, into a folder of your own "
                               f"with --goldens)")

    def graph(self):
        """The taps this golden holds, as a reference's graph (taps it lacks: not provided, with the reason)."""
        from backends.common.taps import pipeline_taps

        from .adapters import Graph

        registry = pipeline_taps(self.pipeline, self.config)
        recorded = set(self.h5["taps"])
        reasons = json.loads(self.attrs.get("not_provided", "{}") or "{}")
        return Graph([spec for spec in registry if spec.name in recorded],
                     {spec.name: str(reasons.get(spec.name, "not recorded in the golden"))
                      for spec in registry if spec.name not in recorded})

    def tap_names(self) -> list[str]:
        return list(self.tap_order) or list(self.h5["taps"])

    def tap(self, name: str) -> h5py.Dataset:
        try:
            return self.h5["taps"][name]
        except KeyError:
            raise CorruptGoldenError(f"{self.path}: tap {name!r} not recorded; taps: {self.tap_names()}") from None

    def _arrays(self, group: str) -> dict[str, np.ndarray]:
        if group not in self.h5:
            return {}
        return {name: self._verified(self.h5[group][name], f"{group}/{name}") for name in self.h5[group]}

    def inputs(self) -> dict[str, np.ndarray]:
        return self._arrays("inputs")

    def _verified(self, dataset: h5py.Dataset, where: str) -> np.ndarray:
        array = dataset[()]
        if dataset_digest(array) != dataset.attrs.get("sha256"):
            raise CorruptGoldenError(f"{self.path}: dataset {where!r} fails its sha256 checksum")
        return array

    def verify(self) -> None:
        """Every dataset against its recorded checksum (streamed)."""
        for group in ("inputs", "taps"):
            if group not in self.h5:
                continue
            for name, dataset in self.h5[group].items():
                if dataset_digest(dataset) != dataset.attrs.get("sha256"):
                    raise CorruptGoldenError(f"{self.path}: dataset '{group}/{name}' fails its sha256 checksum")
