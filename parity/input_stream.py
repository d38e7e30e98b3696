"""Validating a batched input piece by piece, and leaving it in its file for the run to read by chunk.

The checks are those of an input read whole (``parity.inputs``), with the same messages: finiteness
judged after the cast to the run's dtype, the count of bad values over the whole array, the index
of the first. ``FiniteScan`` does them over consecutive pieces along axis 0 (one piece is the
whole-array case). ``stream_input`` scans a member of a user's archive once (through its zip
stream: its CRC is verified) and returns a ``LazyArray`` that the run reads chunk by chunk, each
chunk cast and checked again as it is read (a file changed since is refused, not trusted), plus a
one-element stand-in holding the element of largest modulus: the degenerate-input checks of the
chunked pipelines judge a batched input by that alone (``backends.common.input_checks``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import ParityInputError
from .lazy import LazyArray
from .npz import NpzArchive
from .npz_rows import MemberRows, member_rows

SCAN_PIECE = 4 << 20  # bytes validated at a time


def _first_bad(mask: np.ndarray) -> tuple[int, ...]:
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(mask)), mask.shape))


class FiniteScan:
    """Finiteness after the cast, over pieces along axis 0; ``check()`` raises as a whole-array check would."""

    def __init__(self, path: str, key: str, dtype: np.dtype, extremes: bool = False) -> None:
        self.where, self.dtype = f"{path}: key {key!r}", np.dtype(dtype)
        self.count = 0
        self.first: tuple[int, ...] | None = None
        self.original: Any = None
        self.extremes = extremes
        self.extreme: Any = None  # the element of largest modulus seen (when ``extremes``)
        self.extreme_modulus = -1.0

    def add(self, start: int, values: np.ndarray) -> np.ndarray:
        """One piece (``values`` in its stored dtype, its first row at ``start``); returns it cast."""
        with np.errstate(over="ignore", invalid="ignore"):
            cast = values.astype(self.dtype, copy=False)
        finite = np.isfinite(cast)
        if not finite.all():
            bad = ~finite
            self.count += int(bad.sum())
            if self.first is None:
                local = _first_bad(bad)
                self.first = (local[0] + start, *local[1:]) if local else local
                self.original = values[local]
        elif self.extremes and cast.size:
            modulus = np.abs(cast)
            at = int(np.argmax(modulus))
            if float(modulus.flat[at]) > self.extreme_modulus:
                self.extreme, self.extreme_modulus = cast.flat[at], float(modulus.flat[at])
        return cast

    def check(self) -> None:
        if not self.count:
            return
        if np.all(np.isfinite(self.original)):
            raise ParityInputError(f"{self.where}: expected values that fit the run's dtype {self.dtype}; "
                                   f"{self.original} at index {self.first} overflows to Inf ({self.count} such "
                                   "values; --set dtype=float64 keeps them if they fit there)")
        raise ParityInputError(f"{self.where}: expected finite values, found {self.count} NaN/Inf "
                               f"(first at index {self.first})")

    def stand_in(self, ndim: int) -> np.ndarray:
        """The largest-modulus element, shaped (1, ..., 1)."""
        return np.full((1,) * ndim, self.extreme if self.extreme is not None else 0, self.dtype)


def _pieces(rows: MemberRows, piece_bytes: int = SCAN_PIECE):
    step = max(1, piece_bytes // max(rows.row_bytes, 1))
    try:
        for start in range(0, rows.shape[0], step):
            yield start, rows.rows(start, min(start + step, rows.shape[0]))
    finally:
        rows.close()


class _ChunkCheck:
    """``LazyArray.prepare`` of a streamed input: each chunk cast and checked as it is read."""

    def __init__(self, path: str, key: str, dtype: np.dtype) -> None:
        self.path, self.key, self.dtype = path, key, dtype

    def __call__(self, values: np.ndarray, start: int) -> np.ndarray:
        scan = FiniteScan(self.path, self.key, self.dtype)
        cast = scan.add(start, values)
        scan.check()
        return cast


def stream_input(path: str, name: str, archive: NpzArchive, key: str, dtype: np.dtype,
                 ) -> tuple[LazyArray, np.ndarray]:
    """Validate member ``key`` (input ``name``) piece by piece; (the lazy input, its stand-in)."""
    scan = FiniteScan(path, name, dtype, extremes=True)
    for start, values in _pieces(member_rows(archive, key, sequential=True)):
        scan.add(start, values)
    scan.check()
    lazy = LazyArray(member_rows(archive, key), dtype, _ChunkCheck(path, name, np.dtype(dtype)), name)
    return lazy, scan.stand_in(len(archive[key].shape))
