"""Per-tap comparison metrics (``a`` reference, ``b`` candidate), computed in bounded-memory chunks.

The pieces: ``parity.criteria`` (what must hold), ``parity.comparator`` (the streaming
comparator), ``parity.engines`` (the numpy and Torch engines and the exact float64 path),
``parity.accumulator`` and ``parity.breakdown`` (merging chunks, where the error is),
``parity.tap_metrics`` (the result).  This module is the front door: ``compare`` on numpy
arrays or h5py datasets, plus the names users import.

Maxima, counts and the worst index are exact whatever the chunking (maxima in float64 at the
element that attains them); sums (mean, RMS, cosine) agree up to rounding.  Elementwise
metrics use the pairs where both sides are finite; NaN, or +-Inf of the same sign, at the
same positions do not fail by themselves, any other non-finite disagreement fails.
"""

from __future__ import annotations

import math

import numpy as np

from .comparator import StreamingComparator
from .criteria import Criteria
from .engines import ReferenceCache
from .tap_metrics import TapMetrics

__all__ = ["Criteria", "TapMetrics", "StreamingComparator", "ReferenceCache", "compare", "chunk_plan"]


def chunk_plan(shape: tuple, max_elements: int):
    """Yield ``(index, flat_start, count)`` blocks of <= max(1, max_elements) elements covering ``shape``
    in C order: runs of whole rows along axis 0 when a row fits, else runs along the first axis whose
    trailing sub-block fits, the leading axes being indexed."""
    shape = tuple(int(n) for n in shape)
    if shape == ():
        yield (), 0, 1
        return
    if math.prod(shape) == 0:
        return
    max_elements = max(1, int(max_elements))
    strides = [math.prod(shape[i + 1:]) for i in range(len(shape))]
    k = next(i for i, s in enumerate(strides) if s <= max_elements)
    step = max_elements // strides[k]
    for outer in np.ndindex(*shape[:k]):
        base = sum(i * s for i, s in zip(outer, strides))
        for j in range(0, shape[k], step):
            stop = min(j + step, shape[k])
            yield tuple(outer) + (slice(j, stop),), base + j * strides[k], (stop - j) * strides[k]


def _as_source(x):
    return x if hasattr(x, "shape") and hasattr(x, "dtype") and hasattr(x, "__getitem__") else np.asarray(x)


def compare(name: str, reference, candidate, criteria: Criteria | None = None, *,
            chunk_bytes: int = 64 << 20, layout: str | None = None, regions: dict | None = None,
            border_fraction: float = 0.25, engine: str = "auto") -> TapMetrics:
    """Compare two taps (numpy arrays or h5py Datasets) reading at most ``chunk_bytes`` per side at a time.

    Chunks are sized so that one chunk cast to float64/complex128 fits in
    ``chunk_bytes``; the working memory peaks at about 8x ``chunk_bytes``.
    A read never exceeds ``chunk_bytes`` unless a single element is larger.
    ``layout`` and ``border_fraction`` shape the breakdown (see
    ``StreamingComparator``); ``regions`` maps a region name to a boolean mask
    of the reference's shape (``backends.common.regions.tap_regions``).
    """
    criteria = Criteria() if criteria is None else criteria
    ref, cand = _as_source(reference), _as_source(candidate)
    rd, cd = np.dtype(ref.dtype), np.dtype(cand.dtype)
    work = 16 if "c" in (rd.kind, cd.kind) else 8  # bytes per element once cast to complex128/float64
    max_elems = max(1, int(chunk_bytes) // max(rd.itemsize, cd.itemsize, work))
    comp = StreamingComparator(name, ref.shape, rd, cand.shape, cd, criteria, layout=layout,
                               border_fraction=border_fraction, engine=engine)
    masks = {key: np.asarray(mask) for key, mask in (regions or {}).items()}
    for key, mask in masks.items():
        if mask.shape != tuple(ref.shape) or mask.dtype != bool:
            raise ValueError(f"{name}: region {key!r} must be a boolean mask of shape {tuple(ref.shape)}, "
                             f"got {mask.dtype} {mask.shape}")
    if tuple(ref.shape) == tuple(cand.shape):
        for index, start, _ in chunk_plan(ref.shape, max_elems):
            comp.update(np.asarray(ref[index]), np.asarray(cand[index]), start,
                        {key: mask[index] for key, mask in masks.items()})
    else:
        for index, _, _ in chunk_plan(ref.shape, max_elems):
            comp.count_nonfinite(reference_chunk=np.asarray(ref[index]))
        for index, _, _ in chunk_plan(cand.shape, max_elems):
            comp.count_nonfinite(candidate_chunk=np.asarray(cand[index]))
    return comp.result()
