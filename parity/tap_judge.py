"""One tap in one mode, judged across batch chunks: streaming statistics, a mean or a whole-batch value."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from backends.common.taps import TapSpec, batched

from .chunks import MeanCombiner, as_array
from .metrics import ReferenceCache, StreamingComparator
from .results import NOT_REACHED, ModeResult


class TapJudge:
    """Streaming comparison of one tap in one mode across chunks."""

    def __init__(self, spec: TapSpec, mode: str, tolerance, batch: int, cache: ReferenceCache | None = None) -> None:
        self.spec, self.mode, self.tolerance, self.batch = spec, mode, tolerance, batch
        self.cache = cache  # the reference side of a chunk, shared with the other mode's judge
        self.comparator: StreamingComparator | None = None
        self.seen = 0  # samples (or elements for unbatched taps) fed
        self.exact = True  # every chunk so far bitwise equal to the reference
        self.mean = (MeanCombiner(), MeanCombiner()) if spec.reduction == "mean" else None
        self.last: tuple | None = None  # a global tap in chunks: each chunk's value so far, judged at the end
        self.shared = False  # fed from the propagated run (its inputs were the reference's, bitwise)

    def _full_shape(self, chunk_shape: tuple[int, ...], chunk_len: int) -> tuple[int, ...]:
        if batched(self.spec) and self.spec.reduction is None and chunk_shape and chunk_shape[0] == chunk_len:
            return (self.batch, *chunk_shape[1:])
        return tuple(chunk_shape)

    def update(self, reference: Any, candidate: Any, start: int, stop: int, whole: bool,
               regions: Mapping[str, np.ndarray] | None = None) -> None:
        """Feed one chunk; ``candidate`` may be a torch tensor (compared where it lives, no host copy)."""
        per_sample = batched(self.spec) and self.spec.reduction is None
        if not whole and not per_sample and self.mean is None and self.comparator is not None:
            return  # a tap shared by every chunk (the probe's) is compared once
        if self.mean is not None and not whole:
            self.mean[0].add(reference, stop - start)
            self.mean[1].add(candidate, stop - start)
            return
        if self.spec.reduction == "global" and not whole:  # parity.global_taps: the last is the whole batch's
            self.last = (np.array(as_array(reference), copy=True), np.array(as_array(candidate), copy=True))
            self.exact = False  # judged at the end: its readers cannot take it as the reference's meanwhile
            return
        reference = np.asarray(reference)
        if not hasattr(candidate, "shape") or not hasattr(candidate, "dtype"):
            candidate = np.asarray(candidate)
        shape = tuple(candidate.shape)
        if self.comparator is None:
            chunk_len = stop - start
            self.comparator = StreamingComparator(
                self.spec.name, self._full_shape(reference.shape, chunk_len), reference.dtype,
                self._full_shape(shape, chunk_len), candidate.dtype, self.tolerance.criteria,
                layout=self.spec.layout, reference_cache=self.cache)
        comparator = self.comparator
        if comparator.shape_match and reference.shape == shape:
            per_row = int(np.prod(reference.shape[1:], dtype=np.int64)) if reference.ndim else 1
            offset = start * per_row if per_sample and not whole else 0
            comparator.update(reference, candidate, offset, regions=dict(regions or {}))
            accumulated = comparator._acc
            self.exact = (self.exact and accumulated is not None and accumulated.n_mismatch == 0
                          and (accumulated.worst is None or accumulated.worst[3] == 0)
                          and comparator.reference_dtype == comparator.candidate_dtype)
        else:
            self.exact = False
            if comparator.shape_match:  # the candidate's chunk shape changed under a matching total
                comparator.shape_match = False
            comparator.count_nonfinite(reference_chunk=reference, candidate_chunk=candidate)
        self.seen = stop

    def worst(self) -> tuple[int, float] | None:
        """(flat index, |a - b|) of the worst element so far, or None."""
        accumulated = self.comparator._acc if self.comparator is not None else None
        worst = accumulated.worst if accumulated is not None else None
        return None if worst is None else (int(worst[0]), float(worst[3]))

    def worst_sample(self, before: tuple[int, float] | None) -> int | None:
        """The sample that now holds the worst element, when the last chunk moved it there (per-sample taps)."""
        after = self.worst()
        if after is None or after == before or not (batched(self.spec) and self.spec.reduction is None):
            return None
        shape = self.comparator.reference_shape if self.comparator is not None else ()
        per_row = int(np.prod(shape[1:], dtype=np.int64)) if len(shape) > 1 else 1
        return after[0] // per_row if per_row else None

    def finish_means(self) -> None:
        if self.last is not None:
            (reference, candidate), self.last = self.last, None
            self.update(reference, candidate, 0, self.batch, whole=True)
        if self.mean is not None and self.mean[0].parts:
            reference, candidate = self.mean[0].value(), self.mean[1].value()
            self.mean = None
            self.update(reference, candidate, 0, self.batch, whole=True)

    def result(self) -> ModeResult | None:
        self.finish_means()
        if self.comparator is None:
            return None
        try:
            metrics = self.comparator.result()
        except ValueError as error:  # fewer elements than the shape: the run stopped part way
            return ModeResult(self.mode, None, skipped=f"compared only in part: {error}", skip_kind=NOT_REACHED)
        return ModeResult(self.mode, self.tolerance, metrics)
