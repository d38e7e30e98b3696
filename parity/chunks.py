"""Cutting a case into batch chunks that run in lockstep through reference and candidate.

Inputs whose registry layout runs over samples (``B...``, ``M...``) are sliced along axis 0; the
others (probe, object) are shared by every chunk. A pipeline with a batch-global reduction that
later stages read (``TapSpec.reduction == "global"``) runs as one chunk, unless the runner takes
the two passes of ``parity.global_taps``. Taps that are means over
the batch (``reduction == "mean"``) are combined across chunks, weighted by chunk size; with one
chunk the value is passed through untouched, so small runs are bitwise what an unchunked run gives.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from backends.common.config import ForwardConfig
from backends.common.taps import TapSpec, batched, pipeline_inputs

from .engines import to_numpy
from .lazy import is_lazy

# All taps of one chunk, one side: ~25 samples of N=64 physics, ~11 of pinn. The working set of a
# chunk (both frameworks' tensors, the reference's taps, comparison temporaries) is several times
# this, and the allocator's heap grows to its high-water mark: at 64 MiB a physics run peaked at
# 1.7 GiB, at 16 MiB at 1.1 GiB, with the same throughput (2 CPU cores; docs/benchmarks.md).
DEFAULT_CHUNK_BYTES = 16 << 20


def sample_bytes(specs: list[TapSpec], cfg: ForwardConfig) -> int:
    """Bytes one sample adds to the taps of a run (free dimensions count as 1)."""
    total = 0
    for spec in specs:
        if spec.reduction is not None or not batched(spec):
            continue
        shape = spec.shape(cfg, 1)
        total += math.prod(dim or 1 for dim in shape) * spec.dtype(cfg).itemsize
    return max(total, 1)


def plan(pipeline: str, specs: list[TapSpec], cfg: ForwardConfig, batch: int, max_bytes: int | None = None,
         max_samples: int | None = None, split_global: bool = False) -> list[tuple[int, int]]:
    """[(start, stop), ...] covering ``range(batch)``.

    ``max_samples`` (``--batch-chunk``) sets the samples per chunk, above or below the default that keeps
    ``max_bytes`` of taps per chunk. ``split_global``: cut a pipeline with batch-global taps too (the caller runs the two passes of
    ``parity.global_taps``); otherwise such a pipeline is one chunk.
    """
    if batch <= 0:
        return [(0, batch)]
    if not split_global and any(spec.reduction == "global" for spec in specs):
        return [(0, batch)]
    per_chunk = max(1, (max_bytes or DEFAULT_CHUNK_BYTES) // sample_bytes(specs, cfg))
    if max_samples is not None:  # the user's choice, above the memory-bounded default too: a port's code path
        per_chunk = max(1, int(max_samples))  # that changes with the batch size is exercised only at the size it gets
    return [(start, min(start + per_chunk, batch)) for start in range(0, batch, per_chunk)]


def batch_of(pipeline: str, inputs: Mapping[str, np.ndarray]) -> int:
    for spec in pipeline_inputs(pipeline):
        if batched(spec) and spec.name in inputs:
            return int(np.shape(inputs[spec.name])[0])
    return 1


def slice_inputs(pipeline: str, inputs: Mapping[str, Any], start: int, stop: int,
                 whole: bool) -> dict[str, np.ndarray]:
    """The inputs of one chunk (the arrays themselves when the chunk is the whole batch).

    An input still in its file (``parity.lazy.LazyArray``) is read here, only this chunk's rows.
    """
    if whole and not any(is_lazy(value) for value in inputs.values()):
        return dict(inputs)
    chunk = {}
    for spec in pipeline_inputs(pipeline):
        value = inputs[spec.name]
        if is_lazy(value):
            chunk[spec.name] = value.rows(start, stop) if batched(spec) else value.read()
        else:
            chunk[spec.name] = value if whole or not batched(spec) else value[start:stop]
    return chunk


def slice_tap(spec: TapSpec, value: Any, start: int, stop: int, whole: bool) -> Any:
    """One chunk of a reference tap read from a golden (datasets slice lazily)."""
    if whole or not batched(spec) or spec.reduction is not None:
        return value[()] if hasattr(value, "shape") and value.shape == () else value[...]
    return value[start:stop]


class MeanCombiner:
    """A batch-mean scalar tap, combined over chunks (weighted by chunk size)."""

    def __init__(self) -> None:
        self.parts: list[tuple[Any, int]] = []

    def add(self, value: Any, count: int) -> None:
        self.parts.append((value, count))

    def value(self) -> Any:
        if len(self.parts) == 1:
            return self.parts[0][0]
        dtype = np.asarray(_numpy(self.parts[0][0])).dtype
        total = sum(float(np.asarray(_numpy(value))) * count for value, count in self.parts)
        return np.asarray(total / sum(count for _, count in self.parts), dtype=dtype)


def _numpy(value: Any) -> Any:
    return to_numpy(value) if hasattr(value, "detach") else value


def read_only(value: Any) -> Any:
    """A view the adapter cannot write through (the built-in backends then copy what they keep)."""
    if isinstance(value, np.ndarray):
        value = value.view()
        value.flags.writeable = False
    return value


def as_array(value: Any) -> np.ndarray:
    """Canonical numpy view of a candidate value (a torch tensor is brought to the host)."""
    if hasattr(value, "detach"):  # conjugate and negative bits resolved (a port's fft(...).conj() is a view)
        return to_numpy(value)
    if hasattr(value, "numpy") and not isinstance(value, np.ndarray):
        return np.asarray(value.numpy())
    return np.asarray(value)
