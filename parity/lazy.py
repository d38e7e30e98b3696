"""A batched input that stays where it is (a user's file) and is read one slice along axis 0 at a time.

A run reads its inputs chunk by chunk (``parity.chunks.slice_inputs``), so the batch never has to
be in memory at once: ``LazyArray`` has the ``shape``, ``dtype`` and ``nbytes`` of the array it
stands for, and ``value[start:stop]`` reads those rows from its source, cast to ``dtype`` and
checked (``prepare``). ``np.asarray(value)`` reads the whole array: code that needs every sample
(a repeat check on the whole batch) keeps working, at the memory cost it always had;
``strict_bytes`` (tests) turns such a read of a large array into an error, which is how the test
suite proves a run never does it. Hashes (``parity.cases.array_hash``) are streamed and memoised.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import numpy as np

READ_PIECE = 4 << 20  # bytes read at a time when a whole array is streamed (hashing, validation)


class RowSource(Protocol):
    shape: tuple[int, ...]
    dtype: np.dtype

    def rows(self, start: int, stop: int) -> np.ndarray: ...

    def close(self) -> None: ...


Prepare = Callable[[np.ndarray, int], np.ndarray]  # (stored rows, index of the first) -> rows in the run's dtype


class WholeReadError(RuntimeError):
    """A large lazy array was read whole while ``LazyArray.strict_bytes`` forbids it (a harness bug)."""


class LazyArray:
    """See the module docstring. Rows come from ``source``; ``prepare`` casts and checks them."""

    strict_bytes: int | None = None  # tests: refuse to read an array larger than this whole

    def __init__(self, source: RowSource, dtype: Any, prepare: Prepare | None = None, name: str = "") -> None:
        self.source = source
        self.shape = tuple(int(dim) for dim in source.shape)
        self.dtype = np.dtype(dtype)
        self.prepare = prepare
        self.name = name
        self.memo: dict[str, Any] = {}  # digests computed once (parity.cases.array_hash)
        self.reads: list[tuple[int, int]] | None = None  # set to a list to record every slice read (tests)

    # ---- what numpy code asks of an array ----
    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"LazyArray({self.name or 'input'}, shape={self.shape}, dtype={self.dtype})"

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Rows ``[start, stop)`` (clipped to the array), in ``dtype``."""
        start, stop = max(0, min(start, len(self))), max(0, min(stop, len(self)))
        stop = max(start, stop)
        if self.reads is not None:
            self.reads.append((start, stop))
        values = self.source.rows(start, stop)
        values = self.prepare(values, start) if self.prepare is not None else values
        return values.astype(self.dtype, copy=False)

    def __getitem__(self, key: Any) -> Any:
        rest: tuple = ()
        if isinstance(key, tuple):
            key, rest = (key[0], key[1:]) if key else (Ellipsis, ())
        if key is Ellipsis:
            value, rest = self.read(), (Ellipsis, *rest)
        elif isinstance(key, slice):
            wanted = range(*key.indices(len(self)))
            if wanted.step == 1 or not wanted:
                value = self.rows(wanted.start, max(wanted.start, wanted.stop))
            else:  # strided or reversed: read the span it covers, then pick its rows
                low = min(wanted[0], wanted[-1])
                value = self.rows(low, max(wanted[0], wanted[-1]) + 1)[np.asarray(wanted) - low]
            rest = (slice(None), *rest) if rest else ()
        else:
            index = operator.index(key)
            if not -len(self) <= index < len(self):
                raise IndexError(f"index {index} is out of bounds for axis 0 with size {len(self)}")
            index %= len(self)
            value = self.rows(index, index + 1)[0]
        return value[rest] if rest else value

    def pieces(self, piece_bytes: int = READ_PIECE) -> Iterator[tuple[int, np.ndarray]]:
        """``(start, rows)`` over the whole array, about ``piece_bytes`` at a time."""
        row_bytes = max(1, self.nbytes // max(len(self), 1))
        step = max(1, piece_bytes // row_bytes)
        for start in range(0, len(self), step):
            yield start, self.rows(start, start + step)

    def read(self) -> np.ndarray:
        """The whole array (deliberately: see ``strict_bytes``)."""
        if self.strict_bytes is not None and self.nbytes > self.strict_bytes:
            raise WholeReadError(f"{self!r}: read whole ({self.nbytes} bytes) where a run reads slices")
        out = np.empty(self.shape, self.dtype)
        for start, rows in self.pieces():
            out[start : start + len(rows)] = rows
        return out

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        if copy is False:
            raise ValueError(f"{self!r}: cannot be viewed without a copy (it is read from its file)")
        array = self.read()
        return array if dtype is None else array.astype(dtype, copy=False)

    def astype(self, dtype: Any, copy: bool = True) -> LazyArray:
        """The same rows cast to ``dtype`` on reading (nothing is read now)."""
        if np.dtype(dtype) == self.dtype and not copy:
            return self
        cast = LazyArray(self.source, dtype, self.prepare, self.name)
        cast.reads = self.reads
        return cast

    def close(self) -> None:
        self.source.close()


def is_lazy(value: Any) -> bool:
    return isinstance(value, LazyArray)


def sliced(value: Any, start: int, stop: int) -> Any:
    """Rows ``[start, stop)`` of an array or a lazy array, as numpy (a view of an in-memory array)."""
    return value.rows(start, stop) if isinstance(value, LazyArray) else value[start:stop]
