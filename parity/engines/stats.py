"""What an engine returns for one chunk: sums, maxima tables and the worst elements, all on the host."""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass
class ChunkStats:
    """Statistics of one chunk of a tap (``a`` reference, ``b`` candidate, ``d = b - a``).

    Sums run over the pairs where both sides are finite.  ``err``/``peak`` hold
    max |d| and max |a| per (local sample, channel, row band, column band),
    local sample 0 being sample ``sample0`` of the tap.  Flat indices are
    relative to the chunk's first element.
    """

    n: int
    n_pairs: int
    sample0: int
    err: np.ndarray
    peak: np.ndarray
    sum_abs: float = 0.0  # sum |d|
    sum_sq: float = 0.0  # sum |d|^2
    norm_a: float = 0.0  # sum |a|^2
    cross: float = 0.0  # Re sum conj(a) d, so that sum |b|^2 = norm_a + 2 cross + sum_sq
    dot: float | None = None  # Re sum conj(a) b and sum |b|^2 when measured directly (cancellation)
    norm_b: float | None = None
    nan: tuple = (0, 0)
    inf: tuple = (0, 0)
    n_mismatch: int = 0
    first_mismatch: tuple | None = None  # (flat index, reference value, candidate value)
    n_out: int | None = None
    worst: tuple | None = None  # (flat index, reference value, candidate value, |b - a| in float64)
    peak_value: float = 0.0  # max |a| over finite reference elements, in float64
    region_err: dict = dataclasses.field(default_factory=dict)  # name -> (local samples,) max |d|
    region_peak: dict = dataclasses.field(default_factory=dict)  # name -> (local samples,) max |a|
    region_count: dict = dataclasses.field(default_factory=dict)  # name -> elements in the region
    mag_max: float | None = None  # complex: max ||b| - |a||
    phase_max: float | None = None  # complex, threshold known: max phase error over |a| >= threshold
    phase_front: tuple | None = None  # complex, threshold not yet known: (|a|, phase error) candidates


@dataclasses.dataclass(frozen=True)
class PhasePlan:
    """How a complex chunk's phase error is thresholded at |a| >= floor * (global peak).

    ``known``: the threshold is final for this chunk (a peak hint was given, or this is the
    last chunk); otherwise the chunk returns a (|a|, error) frontier to be cut at the end.
    """

    floor: float
    hint: float | None
    peak_before: float
    known: bool
