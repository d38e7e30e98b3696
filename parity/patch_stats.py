"""Streaming per-batch statistics of a tap's patches, and the array helpers the evidence needs.

A *patch* is one 2-D image of a tap: its ``H`` x ``W`` axes (read from the
canonical layout string) at one index of every other axis, e.g. one
(sample, channel) of a ``BHWC`` tap. Complex taps are summarised by their
modulus. A *batch* is one chunk the runner hands over (the whole tap when a
run has a single chunk).

Chunks may be numpy arrays or torch tensors (on any device): reductions run
in the chunk's own library and only the small per-patch results are
converted, so a candidate on the GPU is never copied whole to the host here.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

FIRST_PATCHES = 4  # patches per batch whose own statistics are recorded


def is_torch(value: Any) -> bool:
    """A torch tensor, recognised without importing torch (``parity check`` may run without it)."""
    return type(value).__module__.startswith("torch")




def spatial_axes(layout: str) -> tuple[int, int] | None:
    """The (rows, columns) axes of a canonical layout, or None when it has no image axes."""
    if "H" in layout and "W" in layout:
        return layout.index("H"), layout.index("W")
    return None


def per_sample_error(reference: np.ndarray, candidate: Any) -> np.ndarray:
    """max |a - b| over each sample (axis 0), in float64, on the candidate's device.

    Positions where both sides hold the same value (NaN with NaN, Inf with the same Inf) count 0;
    any other non-finite disagreement counts +inf, so a sample with a stray NaN ranks worst.
    """
    if is_torch(candidate):
        import torch

        b = candidate
        a = torch.as_tensor(np.ascontiguousarray(reference)).to(b.device)
        work = torch.complex128 if (a.is_complex() or b.is_complex()) else torch.float64
        a, b = a.to(work), b.to(work)
        same = (a == b) | (torch.isnan(a) & torch.isnan(b))
        d = torch.where(same, torch.zeros((), dtype=torch.float64, device=b.device), (a - b).abs())
        d = torch.nan_to_num(d, nan=math.inf)
        if d.ndim == 0 or d[0].numel() == 0:
            return np.zeros(d.shape[:1] if d.ndim else (1,))
        return d.reshape(d.shape[0], -1).amax(dim=1).cpu().numpy()
    a = np.asarray(reference)
    b = np.asarray(candidate)
    work = np.complex128 if "c" in (a.dtype.kind, b.dtype.kind) else np.float64
    a, b = a.astype(work), b.astype(work)
    with np.errstate(invalid="ignore", over="ignore"):
        same = (a == b) | (np.isnan(a) & np.isnan(b))
        d = np.where(same, 0.0, np.abs(a - b))
    d = np.where(np.isnan(d), math.inf, d)
    if d.ndim == 0 or d[0].size == 0:
        return np.zeros(d.shape[:1] if d.ndim else (1,))
    return d.reshape(d.shape[0], -1).max(axis=1)


def modulus_peak_and_nonzero(chunk: Any) -> tuple[float, int]:
    """max |x| over finite elements (NaN when none) and the count of nonzero elements, in x's library."""
    if is_torch(chunk):
        import torch

        value = chunk.abs()
        finite = value[torch.isfinite(value)]
        peak = float(finite.max()) if finite.numel() else math.nan
        return peak, int(torch.count_nonzero(value))
    value = np.abs(np.asarray(chunk))
    finite = value[np.isfinite(value)]
    return (float(finite.max()) if finite.size else math.nan), int(np.count_nonzero(value))


def _patch_rows(chunk: Any, axes: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, tuple]:
    """Per patch (C order over the non-image axes): mean, variance about its own mean, min, max."""
    rows, cols = axes
    if is_torch(chunk):
        import torch

        x = chunk.abs() if chunk.is_complex() else chunk
        x = torch.movedim(x.to(torch.float64), (rows, cols), (-2, -1))
        outer = tuple(x.shape[:-2])
        x = x.reshape(-1, x.shape[-2] * x.shape[-1])
        mean = x.mean(dim=1)
        var = ((x - mean[:, None]) ** 2).mean(dim=1)
        return (mean.cpu().numpy(), var.cpu().numpy(), x.amin(dim=1).cpu().numpy(),
                x.amax(dim=1).cpu().numpy(), outer)
    x = np.asarray(chunk)
    x = np.abs(x) if x.dtype.kind == "c" else x
    x = np.moveaxis(x.astype(np.float64), (rows, cols), (-2, -1))
    outer = tuple(x.shape[:-2])
    x = x.reshape(-1, x.shape[-2] * x.shape[-1])
    mean = x.mean(axis=1)
    var = ((x - mean[:, None]) ** 2).mean(axis=1)
    return mean, var, x.min(axis=1), x.max(axis=1), outer


def number(value: float) -> float | str:
    """A float for strict JSON: non-finite values become "nan", "inf", "-inf"."""
    value = float(value)
    if math.isfinite(value):
        return value
    return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")


def batch_statistics(chunk: Any, layout: str, start: int, batch: int) -> dict[str, Any] | None:
    """One batch's entry of ``patch_stats.json`` (None for a layout without image axes or no patch)."""
    axes = spatial_axes(layout)
    if axes is None:
        return None
    with np.errstate(all="ignore"):  # NaN/Inf patches are reported as such ("nan", "inf"), not warned about
        return _batch_entry(chunk, axes, layout, start, batch)


def _batch_entry(chunk: Any, axes: tuple[int, int], layout: str, start: int, batch: int) -> dict[str, Any] | None:
    mean, var, low, high, outer = _patch_rows(chunk, axes)
    if mean.size == 0:
        return None
    centre = float(mean.mean())
    # equal-sized patches: the global variance is the mean within-patch variance plus the spread of the means
    total_var = float(var.mean() + ((mean - centre) ** 2).mean())
    batched = layout[0] in "BM" and 0 not in axes
    patches = []
    for flat in range(min(FIRST_PATCHES, mean.size)):
        index = [int(i) for i in np.unravel_index(flat, outer)] if outer else []
        if batched and index:
            index[0] += start
        patches.append({"index": index, "mean": number(mean[flat]), "std": number(math.sqrt(max(var[flat], 0.0))),
                        "min": number(low[flat]), "max": number(high[flat])})
    return {"batch": batch, "start": start, "patches_in_batch": int(mean.size), "mean": number(centre),
            "std": number(math.sqrt(max(total_var, 0.0))), "var_zero_mean": number(var.mean()),
            "first_patches": patches}


class PatchStatistics:
    """``patch_stats.json`` for one tap: the reference once, the candidate per mode, per batch."""

    def __init__(self, name: str, layout: str, kind: str, limit: int) -> None:
        self.name, self.layout, self.kind, self.limit = name, layout, kind, limit
        self.sides: dict[str, list[dict[str, Any]]] = {}
        self.seen: dict[str, int] = {}
        self.reference_mode: str | None = None  # the reference is recorded from the first mode that feeds it

    def update(self, mode: str, reference_chunk: Any, candidate_chunk: Any, start: int) -> None:
        if self.reference_mode is None:
            self.reference_mode = mode
        sides = [(mode, candidate_chunk)]
        if mode == self.reference_mode:
            sides.insert(0, ("reference", reference_chunk))
        for side, chunk in sides:
            batch = self.seen.get(side, 0)
            self.seen[side] = batch + 1
            if batch < self.limit:
                entry = batch_statistics(chunk, self.layout, start, batch)
                if entry is not None:
                    self.sides.setdefault(side, []).append(entry)

    def to_dict(self) -> dict[str, Any]:
        return {"layout": self.layout, "kind": self.kind, "value": "modulus" if self.kind == "complex" else "value",
                "batches_seen": dict(self.seen), **self.sides}
