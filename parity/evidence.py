"""What a run keeps besides numbers: samples for pictures and diagnosis, patch statistics, assembly dumps.

The runner feeds ``EvidenceCollector.update(mode, spec, reference_chunk,
candidate_chunk, start)`` per compared (mode, tap) with consecutive chunks
along axis 0 in the canonical layout. Memory stays bounded: per (mode, tap)
only the first ``first_samples`` and the ``worst_samples`` worst samples (by
that sample's max |a-b|) of both sides are copied, plus per-batch statistics.
``write(directory)`` then writes ``samples.h5``, ``patch_stats.json``,
``canvas.json``, ``offsets.json`` and ``patches-<tap>.png`` (layouts in
``docs/report-schema.md``). Which taps get patch grids or assembly dumps is
registry metadata (``TapSpec.pictures``, ``TapSpec.role``), never a tap name.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import h5py
import numpy as np

from backends.common.taps import TapSpec, pipeline_inputs, tap_index

from .assembly import Assembly
from .engines import to_numpy
from .patch_stats import PatchStatistics, is_torch, per_sample_error, spatial_axes

SAMPLES_SCHEMA = "ptycho-parity/samples"
SAMPLES_VERSION = 1


@dataclasses.dataclass(frozen=True)
class EvidenceSettings:
    first_samples: int = 2  # the first K samples of each (mode, tap), both sides
    worst_samples: int = 2  # plus the worst samples by max |a-b|
    patch_stats_limit: int = 8  # batches recorded per tap and side in patch_stats.json
    grid_patches: int = 8  # patches per backend in a patch grid


@dataclasses.dataclass
class KeptSamples:
    """The samples kept for one (mode, tap): ``reference[i]`` and ``candidate[i]`` are sample ``index[i]``."""

    mode: str
    tap: str
    layout: str
    kind: str
    pictures: str
    role: str
    batched: bool  # False: the whole tap is one sample (a probe, a scalar)
    n_samples: int  # samples seen along axis 0
    index: np.ndarray
    reference: np.ndarray
    candidate: np.ndarray
    error: np.ndarray  # max |a-b| of each kept sample (inf where non-finite values disagree)
    first: np.ndarray  # indices of the first samples
    worst: np.ndarray  # indices of the worst samples, worst first
    mismatch: str = ""  # why the two sides could not be compared sample by sample

    def sample(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        row = int(np.flatnonzero(self.index == index)[0])
        return self.reference[row], self.candidate[row]


class _Keeper:
    """First and worst samples of one (mode, tap), chunk by chunk."""

    def __init__(self, mode: str, spec: TapSpec, settings: EvidenceSettings) -> None:
        self.mode, self.spec, self.settings = mode, spec, settings
        self.batched = spec.layout[:1] in ("B", "M")
        self.seen = 0
        self.first: dict[int, tuple[np.ndarray, np.ndarray, float]] = {}
        self.worst: list[tuple[float, int, np.ndarray, np.ndarray]] = []
        self.mismatch = ""

    def update(self, reference: np.ndarray, candidate: Any, start: int) -> None:
        if not self.batched:  # no batch axis: the whole value is the one sample
            reference, candidate = reference[None], candidate[None]
            start = 0
        n = int(reference.shape[0])
        per_sample = max(1, int(np.prod(reference.shape[1:], dtype=np.int64)))
        if start == self.seen * per_sample != self.seen:  # a flat element offset, as the comparator takes
            start //= per_sample
        if self.batched and start != self.seen:
            raise ValueError(f"{self.spec.name} ({self.mode}): chunk starts at sample {start}, expected "
                             f"{self.seen} (chunks must be consecutive along axis 0)")
        self.seen = start + n
        if tuple(candidate.shape) != tuple(reference.shape):  # the metrics say so; nothing to compare here
            self.mismatch = (f"shapes differ: reference chunk {tuple(reference.shape)}, "
                             f"candidate {tuple(candidate.shape)}")
            return
        errors = per_sample_error(reference, candidate)
        for i in range(n):
            if start + i < self.settings.first_samples:
                self.first[start + i] = (np.array(reference[i]), to_numpy(candidate[i]).copy(), float(errors[i]))
        if self.settings.worst_samples:
            order = np.argsort(-errors, kind="stable")[: self.settings.worst_samples]
            for i in order:
                entry = (float(errors[i]), start + int(i))
                if len(self.worst) < self.settings.worst_samples or entry[0] > self.worst[-1][0]:
                    self.worst.append((*entry, np.array(reference[i]), to_numpy(candidate[i]).copy()))
                    self.worst.sort(key=lambda item: (-item[0], item[1]))
                    del self.worst[self.settings.worst_samples:]

    def kept(self) -> KeptSamples:
        rows: dict[int, tuple[np.ndarray, np.ndarray, float]] = dict(self.first)
        for error, index, reference, candidate in self.worst:
            rows[index] = (reference, candidate, error)
        order = sorted(rows)
        spec = self.spec
        reference = np.stack([rows[i][0] for i in order]) if order else np.empty((0,))
        candidate = np.stack([rows[i][1] for i in order]) if order else np.empty((0,))
        return KeptSamples(self.mode, spec.name, spec.layout, spec.kind, spec.pictures, spec.role, self.batched,
                           self.seen, np.array(order, dtype=np.int64), reference, candidate,
                           np.array([rows[i][2] for i in order], dtype=np.float64),
                           np.array(sorted(self.first), dtype=np.int64),
                           np.array([index for _, index, _, _ in self.worst], dtype=np.int64), self.mismatch)


class EvidenceCollector:
    """Per-case evidence; see the module docstring. One collector per case run."""

    def __init__(self, specs: Mapping[str, TapSpec], shapes: Mapping[str, tuple],
                 settings: EvidenceSettings = EvidenceSettings()) -> None:
        self.specs, self.settings = dict(specs), settings
        self.keepers: dict[tuple[str, str], _Keeper] = {}
        self.stats: dict[str, PatchStatistics] = {}
        self.assembly = Assembly(self.specs, dict(shapes))

    @classmethod
    def for_case(cls, case: Any, settings: EvidenceSettings | None = EvidenceSettings()) -> EvidenceCollector | None:
        """A collector for ``case`` (None when ``settings`` is None: evidence off); sees its offsets inputs."""
        if settings is None:
            return None
        specs = tap_index(case.pipeline, case.config)
        shapes = {name: tuple(spec.shape(case.config, case.batch)) for name, spec in specs.items()}
        collector = cls(specs, shapes, settings)
        for spec in pipeline_inputs(case.pipeline):
            if spec.role:
                collector.assembly.observe_input(spec, case.inputs[spec.name])
        return collector

    def update(self, mode: str, spec: TapSpec, reference_chunk: Any, candidate_chunk: Any, start: int = 0) -> None:
        """One chunk of one compared (mode, tap). ``start``: index along axis 0 of the chunk's first sample
        (a flat element offset, as the comparator takes, is accepted too). ``reference_chunk`` is numpy;
        ``candidate_chunk`` numpy or a torch tensor (only kept samples and small reductions are copied)."""
        reference = to_numpy(reference_chunk)
        candidate = candidate_chunk if is_torch(candidate_chunk) else np.asarray(candidate_chunk)
        self.specs.setdefault(spec.name, spec)
        keeper = self.keepers.get((mode, spec.name))
        if keeper is None:
            keeper = self.keepers[(mode, spec.name)] = _Keeper(mode, spec, self.settings)
        keeper.update(reference, candidate, start)
        first_sample = keeper.seen - (int(reference.shape[0]) if keeper.batched else 1)
        if spatial_axes(spec.layout) is not None and tuple(candidate.shape) == tuple(reference.shape):
            stats = self.stats.get(spec.name)
            if stats is None:
                stats = self.stats[spec.name] = PatchStatistics(spec.name, spec.layout, spec.kind,
                                                                self.settings.patch_stats_limit)
            stats.update(mode, reference, candidate, first_sample)
        self.assembly.update(mode, spec, reference, candidate)

    def kept(self, mode: str, tap: str) -> KeptSamples | None:
        """The kept samples of one (mode, tap), for pictures and the diagnosis engineer."""
        keeper = self.keepers.get((mode, tap))
        return None if keeper is None else keeper.kept()

    def patch_stats_document(self) -> dict[str, Any]:
        return {"schema": "ptycho-parity/patch-stats", "schema_version": 1,
                "limit": self.settings.patch_stats_limit,
                "taps": {name: stats.to_dict() for name, stats in self.stats.items()}}

    def write(self, directory: str | Path, failing: set[tuple[str, str]] | None = None) -> list[Path]:
        """Write every evidence file into ``directory`` (the case's run folder); returns their paths.

        ``failing``: the (mode, tap) pairs that failed; they keep every kept sample in ``samples.h5``,
        the others only what the report draws (see ``stored_subset``). None: everything kept."""
        from .report import write_json_atomic

        directory = Path(directory)
        kept = [keeper.kept() for keeper in self.keepers.values()]
        if failing is not None:
            kept = [subset for item in kept
                    if (subset := stored_subset(item, (item.mode, item.tap) in failing, self.settings)) is not None]
        paths = [write_samples(directory / "samples.h5", kept, self.settings)]
        paths.append(write_json_atomic(directory / "patch_stats.json", self.patch_stats_document()))
        for name, document in (("canvas.json", self.assembly.canvas_document()),
                               ("offsets.json", self.assembly.offsets_document())):
            if document is not None:
                paths.append(write_json_atomic(directory / name, document))
        from .figures import write_patch_grids

        paths += write_patch_grids(load_samples(directory / "samples.h5"), directory, self.settings.grid_patches)
        return paths


SMALL_SAMPLE_BYTES = 4096  # samples this small are always stored whole


def stored_subset(kept: KeptSamples, failed: bool, settings: EvidenceSettings) -> KeptSamples | None:
    """What ``samples.h5`` keeps of one (mode, tap), so a run of every case stays a few MB.

    A (mode, tap) whose samples are tiny keeps everything. A failing one keeps its worst samples (the
    report's pictures); a passing propagated one its worst sample; patch taps also the first samples
    the patch grid shows. A passing isolated tap keeps nothing (no picture is drawn for it).
    """
    sample_bytes = kept.reference[0].nbytes if kept.index.size else 0
    if sample_bytes <= SMALL_SAMPLE_BYTES:
        return kept
    if kept.mode != "propagated" and not failed:
        return None
    wanted = set(int(i) for i in kept.worst[:1])  # the picture of a tap is its worst sample
    if kept.pictures == "patches" and kept.index.size:
        per_sample = max(1, kept.reference[0].size // _image_pixels(kept))
        wanted |= set(int(i) for i in kept.first[: -(-settings.grid_patches // per_sample)])
    rows = [row for row, index in enumerate(kept.index) if int(index) in wanted]
    return dataclasses.replace(kept, index=kept.index[rows], reference=kept.reference[rows],
                               candidate=kept.candidate[rows], error=kept.error[rows],
                               first=np.array([i for i in kept.first if int(i) in wanted], dtype=np.int64),
                               worst=np.array([i for i in kept.worst if int(i) in wanted], dtype=np.int64))


def _image_pixels(kept: KeptSamples) -> int:
    layout = kept.layout[1:] if kept.batched else kept.layout
    axes = spatial_axes(layout)
    if axes is None:
        return max(1, kept.reference[0].size)
    return int(kept.reference.shape[1 + axes[0]] * kept.reference.shape[1 + axes[1]])


def _key(tap: str) -> str:
    """An HDF5-safe group name for a tap (the real name is in the group's ``name`` attribute)."""
    return quote(tap, safe=".-_+")


def _bits(array: np.ndarray) -> np.ndarray:
    """The array's bytes as unsigned integers (complex128 as pairs of uint64 along the last axis)."""
    array = np.ascontiguousarray(array)
    if array.ndim == 0:
        array = array.reshape(1)
    return array.view(f"u{min(array.dtype.itemsize, 8)}")


def _dataset(group: h5py.Group, name: str, value: np.ndarray) -> None:
    options = {"compression": "gzip", "compression_opts": 9, "shuffle": True} if value.size >= 256 else {}
    group.create_dataset(name, data=value, **options)


def write_samples(path: Path, kept: list[KeptSamples], settings: EvidenceSettings) -> Path:
    """``samples.h5``: per tap the reference samples kept in any mode (the reference does not depend on
    the mode), per mode the candidate's, stored as its bits XOR the reference's bits when the dtypes
    match: lossless, and agreeing values become runs of zero bits that compress to almost nothing."""
    from .goldens import atomic_h5

    by_tap: dict[str, list[KeptSamples]] = {}
    for item in kept:
        by_tap.setdefault(item.tap, []).append(item)
    with atomic_h5(path) as h5:
        h5.attrs.update({"schema": SAMPLES_SCHEMA, "schema_version": SAMPLES_VERSION,
                         "first_samples": settings.first_samples, "worst_samples": settings.worst_samples})
        for tap, items in by_tap.items():
            head = items[0]
            group = h5.create_group(_key(tap))
            group.attrs.update({"name": tap, "layout": head.layout, "kind": head.kind, "pictures": head.pictures,
                                "role": head.role, "batched": head.batched})
            rows: dict[int, np.ndarray] = {}
            for item in items:
                for row, index in enumerate(item.index):
                    rows.setdefault(int(index), item.reference[row])
            order = sorted(rows)
            reference = np.stack([rows[i] for i in order]) if order else np.empty((0,))
            _dataset(group, "index", np.array(order, dtype=np.int64))
            _dataset(group, "reference", reference)
            for item in items:
                mode = group.create_group(item.mode)
                mode.attrs.update({"n_samples": item.n_samples, "mismatch": item.mismatch})
                for field in ("index", "error", "first", "worst"):
                    _dataset(mode, field, getattr(item, field))
                if item.candidate.dtype == item.reference.dtype and item.index.size:
                    _dataset(mode, "candidate_xor", _bits(item.candidate) ^ _bits(item.reference))
                else:
                    _dataset(mode, "candidate", item.candidate)
    return path


def load_samples(path: str | Path) -> dict[tuple[str, str], KeptSamples]:
    """``samples.h5`` back as {(mode, tap): KeptSamples}; empty when the file does not exist."""
    from .errors import ParityInputError

    path = Path(path)
    if not path.exists():
        return {}
    try:
        return _read_samples(path)
    except ParityInputError:
        raise
    except (OSError, KeyError, ValueError, TypeError, IndexError, AttributeError) as error:  # truncated, edited
        raise ParityInputError(f"{path}: not a samples file this harness wrote, or a damaged one "
                               f"({type(error).__name__}: {str(error)[:160]}); rerun the case to write it again"
                               ) from None


def _read_samples(path: Path) -> dict[tuple[str, str], KeptSamples]:
    from .errors import ParityInputError

    result: dict[tuple[str, str], KeptSamples] = {}
    with h5py.File(path, "r") as h5:
        if h5.attrs.get("schema") != SAMPLES_SCHEMA or int(h5.attrs.get("schema_version", 0)) != SAMPLES_VERSION:
            raise ParityInputError(f"{path}: attribute 'schema' must be {SAMPLES_SCHEMA!r} version "
                                   f"{SAMPLES_VERSION}, found {h5.attrs.get('schema')!r} "
                                   f"{h5.attrs.get('schema_version')!r}")
        for group in h5.values():
            attrs = group.attrs
            tap_index_ = group["index"][()]
            tap_reference = group["reference"][()]
            for mode, sub in group.items():
                if not isinstance(sub, h5py.Group):
                    continue
                index = sub["index"][()]
                rows = np.searchsorted(tap_index_, index)
                reference = tap_reference[rows] if index.size else np.empty((0,))
                if "candidate_xor" in sub:
                    candidate = (sub["candidate_xor"][()] ^ _bits(reference)).view(reference.dtype)
                    candidate = candidate.reshape(reference.shape)
                else:
                    candidate = sub["candidate"][()]
                name = str(attrs["name"])
                result[(mode, name)] = KeptSamples(
                    mode=mode, tap=name, layout=str(attrs["layout"]), kind=str(attrs["kind"]),
                    pictures=str(attrs["pictures"]), role=str(attrs["role"]), batched=bool(attrs["batched"]),
                    n_samples=int(sub.attrs["n_samples"]), index=index, reference=reference, candidate=candidate,
                    error=sub["error"][()], first=sub["first"][()], worst=sub["worst"][()],
                    mismatch=str(sub.attrs["mismatch"]))
    return result


def region_split(reference: np.ndarray, candidate: np.ndarray, layout: str, border: int | None = None,
                 ) -> dict[str, Any] | None:
    """max |a-b| in the interior and in a border band of the image axes (default width: a quarter of
    the smaller side), each also relative to the reference's peak there; None without image axes."""
    axes = spatial_axes(layout)
    if axes is None or reference.shape != candidate.shape:
        return None
    rows, cols = reference.shape[axes[0]], reference.shape[axes[1]]
    width = max(1, min(rows, cols) // 4) if border is None else int(border)
    mask = np.zeros((rows, cols), bool)
    mask[width: rows - width, width: cols - width] = True
    shape = [1] * reference.ndim
    shape[axes[0]], shape[axes[1]] = rows, cols
    interior = np.broadcast_to(mask.reshape(shape), reference.shape)
    a, b = reference.astype(np.complex128 if reference.dtype.kind == "c" else np.float64), candidate
    with np.errstate(invalid="ignore"):
        error = np.abs(b - a)
    magnitude = np.abs(a)
    split: dict[str, Any] = {"border_width": width}
    for name, where in (("interior", interior), ("border", ~interior)):
        values, peaks = error[where], magnitude[where]
        peaks = peaks[np.isfinite(peaks)]
        peak = float(peaks.max()) if peaks.size else 0.0
        worst = 0.0
        if values.size:
            worst = float("inf") if np.isnan(values).any() else float(values.max())
        split[name] = {"max_abs_error": worst, "peak": peak,
                       "max_rel": worst / peak if peak else (0.0 if worst == 0 else float("inf"))}
    return split


def read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.exists() else None
