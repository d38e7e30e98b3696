"""``--dump-taps``: both sides' taps of a run, written chunk by chunk into HDF5 beside the report.

``taps_reference.h5`` holds ``/taps/<name>``; ``taps_candidate.h5`` holds ``/propagated/<name>`` and
``/isolated/<name>``. Each file appears only when the run completes (written through a temporary
file and renamed), so an interrupted run leaves no half-written dump.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from backends.common.taps import TapSpec, batched

from .chunks import as_array
from .goldens import atomic_h5


class TapDump:
    """An observer of a run (``update`` per compared chunk, ``finish`` at the end)."""

    def __init__(self, directory: str | Path, batch: int, modes: tuple[str, ...]) -> None:
        self.batch = batch
        self._stack = contextlib.ExitStack()
        self.reference = self._stack.enter_context(atomic_h5(Path(directory) / "taps_reference.h5"))
        self.candidate = self._stack.enter_context(atomic_h5(Path(directory) / "taps_candidate.h5"))
        self.reference_taps = self.reference.create_group("taps")
        self.groups = {mode: self.candidate.create_group(mode) for mode in modes}
        self.reference_written: set[tuple[str, int]] = set()

    def _write(self, group: h5py.Group, spec: TapSpec, value: np.ndarray, start: int) -> None:
        per_sample = batched(spec) and spec.reduction is None and value.ndim >= 1
        if spec.name not in group:
            shape = (self.batch, *value.shape[1:]) if per_sample and start == 0 else value.shape
            if per_sample and start == 0 and value.shape[0] == self.batch:
                group.create_dataset(spec.name, data=value)
                return
            group.create_dataset(spec.name, shape=shape, dtype=value.dtype)
        dataset = group[spec.name]
        if per_sample and dataset.shape[1:] == value.shape[1:] and start + value.shape[0] <= dataset.shape[0]:
            dataset[start : start + value.shape[0]] = value
        elif (start == 0 or spec.reduction == "global") and dataset.shape == value.shape:  # global: the last
            dataset[...] = value

    def update(self, mode: str, spec: TapSpec, reference: Any, candidate: Any, start: int) -> None:
        if (spec.name, start) not in self.reference_written:
            self.reference_written.add((spec.name, start))
            self._write(self.reference_taps, spec, np.asarray(reference), start)
        if mode in self.groups:
            self._write(self.groups[mode], spec, as_array(candidate), start)

    def finish(self, report: Any) -> None:
        self._stack.close()

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self._stack.__exit__(RuntimeError, RuntimeError("aborted"), None)
