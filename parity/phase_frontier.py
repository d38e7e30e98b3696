"""The phase error over |a| >= floor * peak, exactly, when the peak is known only at the end.

The phase error of a complex tap is judged over the elements whose reference magnitude
is at least ``phase_floor`` times the tap's peak.  Streaming in batch chunks, the peak is
known only after the last chunk, so each earlier chunk keeps the pairs (|a|, error) that
can still be the answer for some threshold: its *frontier*, the elements whose error
exceeds that of every element of larger |a|.  The answer at threshold T is the largest
error on the frontier with |a| >= T, and the frontier is cut at floor * (peak so far)
after every chunk, since the threshold only rises.

Its size is the number of error records met walking down in |a|: about ln(n) for errors in
random order, a few dozen in practice; only a tap whose phase error rises strictly as |a|
falls, element after element, keeps more.  To build a chunk's frontier without sorting the
chunk, elements are first pruned by buckets of |a| (8 per octave): an element can be on
the frontier only if its error exceeds the largest error of every higher bucket.
"""

from __future__ import annotations

import numpy as np

EMPTY = (np.empty(0), np.empty(0))
BUCKETS_PER_OCTAVE = 8


def bucket_of(magnitude: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        level = np.floor(np.log2(magnitude) * BUCKETS_PER_OCTAVE)
    return np.nan_to_num(level, neginf=-9000.0).astype(np.int64)


def prune(magnitude: np.ndarray, error: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The pairs that can be on the frontier (a superset of it), from possibly many elements."""
    if magnitude.size <= 1:
        return magnitude, error
    bucket = bucket_of(magnitude)
    low = int(bucket.min())
    best = np.full(int(bucket.max()) - low + 2, -np.inf)
    np.maximum.at(best, bucket - low, error)
    above = np.maximum.accumulate(best[::-1])[::-1]  # above[k]: max error in buckets >= k
    keep = error > above[bucket - low + 1]
    return magnitude[keep], error[keep]


def merge(front: tuple, magnitude: np.ndarray, error: np.ndarray, threshold: float) -> tuple:
    """The frontier of ``front`` plus new pairs, cut below ``threshold``."""
    m = np.concatenate([front[0], magnitude])
    e = np.concatenate([front[1], error])
    keep = m >= threshold
    m, e = m[keep], e[keep]
    if m.size == 0:
        return EMPTY
    order = np.lexsort((-e, -m))  # |a| descending, then error descending
    m, e = m[order], e[order]
    previous = np.concatenate([[-np.inf], np.maximum.accumulate(e)[:-1]])
    record = e > previous
    return m[record], e[record]


def query(front: tuple, threshold: float) -> float:
    selected = front[1][front[0] >= threshold]
    return float(selected.max()) if selected.size else 0.0
