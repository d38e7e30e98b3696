"""Assembly dumps: what the offsets and the canvas of a run looked like, per backend.

Which tensors are offsets and which is the canvas comes from the registry
(``TapSpec.role``: ``"offsets"``, ``"canvas"``), never from tap names. Offsets
are read along the layout's ``2`` axis as (dx, dy); *centred* offsets have the
mean over each sample's other axes (its group of patches) removed, which is
what reassembly shifts by. Offsets that are a pipeline input are the same
array for both backends; a computed offsets tap is recorded per backend.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .engines import to_numpy
from .patch_stats import modulus_peak_and_nonzero, number, spatial_axes

FIRST_OFFSETS = 8


def _pairs(array: np.ndarray, layout: str) -> tuple[np.ndarray, np.ndarray]:
    """(raw, centred) offsets as (n, 2) arrays of (dx, dy), C order over the other axes."""
    axis = layout.index("2")
    values = np.moveaxis(np.asarray(array, dtype=np.float64), axis, -1)  # (..., 2)
    if layout[0] in "BM" and values.ndim > 2:  # centre within each sample's group
        flat = values.reshape(values.shape[0], -1, 2)
        centred = flat - flat.mean(axis=1, keepdims=True)
    else:  # no groups: centre over every position
        flat = values.reshape(1, -1, 2)
        centred = flat - flat.mean(axis=1, keepdims=True)
    return flat.reshape(-1, 2), centred.reshape(-1, 2)


class OffsetSummary:
    """Streaming count, first offsets, mean/std of dx and dy, raw and centred, and max |dx|, |dy|."""

    def __init__(self) -> None:
        self.count = 0
        self.first: list[list[float]] = []
        self.sums = np.zeros((2, 2))  # [raw|centred, dx|dy]
        self.squares = np.zeros((2, 2))
        self.max_abs = np.zeros((2, 2))

    def update(self, chunk: Any, layout: str) -> None:
        raw, centred = _pairs(to_numpy(chunk), layout)
        if raw.size == 0:
            return
        self.first += raw[: max(0, FIRST_OFFSETS - len(self.first))].tolist()
        self.count += raw.shape[0]
        for row, values in enumerate((raw, centred)):
            self.sums[row] += values.sum(axis=0)
            self.squares[row] += (values ** 2).sum(axis=0)
            self.max_abs[row] = np.maximum(self.max_abs[row], np.abs(values).max(axis=0))

    def to_dict(self) -> dict[str, Any]:
        n = max(self.count, 1)
        mean = self.sums / n
        std = np.sqrt(np.maximum(self.squares / n - mean ** 2, 0.0))
        return {"count": self.count, "first": [[number(x) for x in pair] for pair in self.first],
                "mean_dx": number(mean[0, 0]), "mean_dy": number(mean[0, 1]),
                "std_dx": number(std[0, 0]), "std_dy": number(std[0, 1]),
                "centred_std_dx": number(std[1, 0]), "centred_std_dy": number(std[1, 1]),
                "max_abs_dx": number(self.max_abs[0, 0]), "max_abs_dy": number(self.max_abs[0, 1]),
                "max_abs_dx_centred": number(self.max_abs[1, 0]), "max_abs_dy_centred": number(self.max_abs[1, 1])}


class CanvasSummary:
    """One backend's canvas: its size, how many there are, peak modulus and the fraction filled."""

    def __init__(self) -> None:
        self.size: list[int] | None = None
        self.count = 0
        self.peak = 0.0
        self.filled = 0
        self.pixels = 0

    def update(self, chunk: Any, layout: str) -> None:
        axes = spatial_axes(layout)
        if axes is None:
            return
        shape = tuple(int(n) for n in chunk.shape)
        self.size = [shape[axes[0]], shape[axes[1]]]
        self.count += shape[0] if layout[0] in "BM" else 1
        peak, filled = modulus_peak_and_nonzero(chunk)
        self.peak = max(self.peak, peak)
        self.filled += filled
        self.pixels += math.prod(shape)

    def to_dict(self) -> dict[str, Any]:
        return {"canvas_size": self.size, "n_canvases": self.count, "peak_modulus": number(self.peak),
                "filled_fraction": number(self.filled / self.pixels) if self.pixels else None}


class Assembly:
    """Collects ``offsets.json`` and ``canvas.json`` from the taps whose registry role says so."""

    def __init__(self, specs: dict[str, Any], shapes: dict[str, tuple]) -> None:
        self.specs, self.shapes = specs, shapes
        self.offsets: dict[str, dict[str, OffsetSummary]] = {}  # offsets name -> side -> summary
        self.canvases: dict[str, dict[str, CanvasSummary]] = {}
        self.reference_mode: dict[str, str] = {}

    def observe_input(self, spec: Any, array: Any) -> None:
        """A pipeline input: the same array for both backends."""
        if spec.role == "offsets":
            summary = OffsetSummary()
            summary.update(array, spec.layout)
            self.offsets[spec.name] = {"reference": summary, "candidate": summary}

    def update(self, mode: str, spec: Any, reference_chunk: Any, candidate_chunk: Any) -> None:
        if spec.role not in ("offsets", "canvas"):
            return
        store = self.offsets if spec.role == "offsets" else self.canvases
        factory = OffsetSummary if spec.role == "offsets" else CanvasSummary
        sides = store.setdefault(spec.name, {})
        first_mode = self.reference_mode.setdefault(spec.name, mode)
        if mode == first_mode:
            sides.setdefault("reference", factory()).update(reference_chunk, spec.layout)
        sides.setdefault(mode, factory()).update(candidate_chunk, spec.layout)

    def offsets_document(self) -> dict[str, Any] | None:
        if not self.offsets:
            return None
        name, sides = next(iter(self.offsets.items()))
        shared = sides.get("reference") is sides.get("candidate")
        return {"schema": "ptycho-parity/offsets", "schema_version": 1, "tap": name,
                "source": "pipeline input (the same array for both backends)" if shared else "tap",
                "layout": self.specs[name].layout,
                **{side: summary.to_dict() for side, summary in sides.items()}}

    def canvas_document(self) -> dict[str, Any] | None:
        if not self.canvases:
            return None
        name, sides = next(iter(self.canvases.items()))
        spec = self.specs[name]
        patches = next((self.specs[i] for i in spec.inputs if i in self.specs and spatial_axes(self.specs[i].layout)),
                       None)
        offsets = next((i for i in spec.inputs if i in self.specs and self.specs[i].role == "offsets"), None)
        document: dict[str, Any] = {"schema": "ptycho-parity/canvas", "schema_version": 1, "tap": name,
                                    "patches_from": None if patches is None else patches.name,
                                    "offsets_from": offsets}
        if patches is not None:
            shape = self.shapes[patches.name]
            rows, cols = spatial_axes(patches.layout)
            document["patch_size"] = [shape[rows], shape[cols]]
            channel = patches.layout.find("C")
            document["n_slots"] = shape[channel] if channel >= 0 else 1  # patches placed on each canvas
        offset_sides = self.offsets.get(offsets, {}) if offsets else {}
        for side, summary in sides.items():
            entry = summary.to_dict()
            moved = offset_sides.get(side) or offset_sides.get("candidate" if side != "reference" else "reference")
            if moved is not None:
                shifts = moved.to_dict()
                for key in ("max_abs_dx", "max_abs_dy", "max_abs_dx_centred", "max_abs_dy_centred"):
                    entry[key] = shifts[key]
                if entry["canvas_size"] and "patch_size" in document:
                    # room left between a patch shifted by the largest centred offset and the canvas edge
                    (rows, cols), (patch_rows, patch_cols) = entry["canvas_size"], document["patch_size"]
                    room = ((cols - patch_cols) / 2 - float(shifts["max_abs_dx_centred"]),
                            (rows - patch_rows) / 2 - float(shifts["max_abs_dy_centred"]))
                    entry["edge_margin"] = number(min(room))
            document[side] = entry
        return document
