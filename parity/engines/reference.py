"""The reference side of a chunk: everything the comparison needs from ``a`` alone.

|a|, sum |a|^2, the peak table, the exact peak and the region masks on the engine's device
do not depend on the candidate, so the propagated and the isolated comparison of the same
reference chunk can share them: pass both comparators one ``ReferenceCache`` (and clear it
when the chunk is done).  Without a cache each comparison builds its own.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from .tables import band_table, locate, sample_max, value_at, wide


@dataclasses.dataclass
class ReferenceSide:
    a: Any  # the reference chunk on the engine's device, contiguous, in the working dtype
    aa: Any  # |a|
    norm_a: float
    peak: np.ndarray  # max |a| per (local sample, channel, band)
    peak_value: float  # max |a| in float64
    masks: dict  # region name -> boolean mask on the device
    region_peak: dict
    region_count: dict


def reference_side(ops, a_np, work, geom, start: int, regions: dict) -> ReferenceSide | None:
    """None when the fast path cannot vouch for the reference (NaN/Inf, squares out of range)."""
    a = ops.prepare_reference(a_np, work)
    n = int(a_np.size)
    _, samples = geom.sample_range(start, n)
    aa = ops.magnitude(a)
    norm_a = ops.block_dot(a, a)
    if not math.isfinite(norm_a):
        return None
    peak = band_table(ops, aa, geom, start // geom.row_size if geom.shape else 0, samples)
    peak_max = float(peak.max()) if n else 0.0
    if ops.squares and 0.0 < peak_max < ops.tiny(a):
        return None
    peak_value = 0.0
    if peak_max > 0:
        peak_value = float(np.abs(wide(value_at(ops, a, locate(ops, aa, peak, peak_max, geom)), ops.is_complex(a))))
    masks = {name: ops.mask(mask, a.shape) for name, mask in regions.items()}
    return ReferenceSide(a=a, aa=aa, norm_a=norm_a, peak=peak, peak_value=peak_value, masks=masks,
                         region_peak={name: sample_max(ops, aa, mask, geom, samples) for name, mask in masks.items()},
                         region_count={name: ops.count(mask) for name, mask in masks.items()})


class ReferenceCache:
    """Reference sides by (reference chunk, start, engine, device, dtype, regions), for comparators to share.

    Entries hold the chunk itself, so an identity match is never a recycled ``id``; ``clear()``
    after each chunk bounds the memory to one chunk's reference taps (plus |a| of each).
    """

    def __init__(self) -> None:
        self._entries: dict[tuple, tuple] = {}
        self.hits = self.misses = 0

    def get(self, ops, a_np, work, geom, start: int, regions: dict) -> ReferenceSide | None:
        key = (id(a_np), start, ops.name, str(getattr(ops, "device", "cpu")), str(np.dtype(work)),
               tuple((name, id(mask)) for name, mask in sorted(regions.items())))
        entry = self._entries.get(key)
        if entry is not None and entry[0] is a_np and all(entry[1][name] is mask for name, mask in regions.items()):
            self.hits += 1
            return entry[2]
        self.misses += 1
        side = reference_side(ops, a_np, work, geom, start, regions)
        self._entries[key] = (a_np, dict(regions), side)
        return side

    def clear(self) -> None:
        self._entries.clear()
