"""What an HDF5 dataset must not do to whoever reads it (goldens, Keras weights files)."""

from __future__ import annotations

import numpy as np

CHUNK_FLOOR = 1 << 20  # bytes: a chunk up to this size is fine whatever its dataset's size


def oversized_chunks(dataset) -> str | None:
    """Why reading ``dataset`` would cost far more than it holds, or None. HDF5 reads a chunked dataset a whole
    chunk at a time, inflated: a chunk far larger than its dataset (a (60000, 32, 32, 4) chunk for 2 samples)
    makes reading a few KiB take GiBs, past ``--max-memory``."""
    if not dataset.chunks:
        return None
    chunk_bytes = int(np.prod(dataset.chunks, dtype=np.int64)) * dataset.dtype.itemsize
    if chunk_bytes <= max(CHUNK_FLOOR, dataset.size * dataset.dtype.itemsize):
        return None
    return (f"is stored in chunks of {tuple(dataset.chunks)} ({chunk_bytes} bytes each, inflated when read) for a "
            f"dataset of {tuple(dataset.shape)}")
