"""One member of a user's ``.npz``, read a slice along axis 0 at a time (batched inputs, chunk by chunk).

``numpy.savez`` stores members uncompressed, so the rows [start, stop) of a C-order member are
one run of bytes at a known offset: ``StoredRows`` reads exactly those. A compressed member
(``numpy.savez_compressed``) can only be inflated forward: ``StreamRows`` keeps its stream open
and skips forward to the slice asked for, so consecutive chunks inflate it once; an earlier
slice starts it again. Headers are re-checked whenever a member is opened, a stored member
whose file changed size or time since is refused, and a stream read to its end has its CRC
verified; every problem is a ``ParityInputError`` naming the file and the key.
"""

from __future__ import annotations

import contextlib
import math
import os
import struct
import zipfile

import numpy as np

from .errors import ParityInputError
from .files import open_regular
from .npz import ARCHIVE_ERRORS, NpzArchive

LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature ... file name length, extra field length
LOCAL_SIGNATURE = b"PK\x03\x04"
SKIP_PIECE = 16 << 20  # bytes inflated at a time when a stream skips forward


class MemberRows:
    """Rows along axis 0 of one archive member, in its stored dtype (see the module docstring)."""

    def __init__(self, archive: NpzArchive, key: str) -> None:
        self.archive, self.key = archive, key
        self.member = archive[key]
        if self.member.fortran_order or not self.member.shape:
            raise ValueError(f"{key}: a Fortran-order or 0-d member has no contiguous rows")
        self.where = f"{archive.path}: key {key!r}"
        self.shape, self.dtype = self.member.shape, self.member.dtype
        self.row_bytes = math.prod(self.shape[1:]) * self.dtype.itemsize

    def rows(self, start: int, stop: int) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:
        """Release what is held open between reads (nothing, for a stored member)."""

    def _empty(self, start: int, stop: int) -> np.ndarray:
        if not 0 <= start <= stop <= self.shape[0]:
            raise IndexError(f"{self.where}: rows [{start}, {stop}) outside (0, {self.shape[0]})")
        return np.empty((stop - start, *self.shape[1:]), self.dtype)

    def _fill(self, stream, array: np.ndarray, done_rows: int = 0) -> None:
        view = memoryview(array.reshape(-1).view(np.uint8))
        done = 0
        while done < len(view):
            got = stream.readinto(view[done:])
            if not got:
                raise ParityInputError(f"{self.where}: data truncated (rows from {done_rows}: {done} of "
                                       f"{len(view)} bytes)")
            done += got


class StoredRows(MemberRows):
    """An uncompressed member: each slice is one read at its offset."""

    def __init__(self, archive: NpzArchive, key: str) -> None:
        super().__init__(archive, key)
        info = archive.info(key)
        if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
            raise ValueError(f"{key}: not stored uncompressed")
        with archive.open_member(key):  # the header, checked again now
            pass
        header_bytes = info.file_size - self.member.nbytes
        with open_regular(archive.path, archive.what) as handle:
            handle.seek(info.header_offset)
            local = handle.read(LOCAL_HEADER.size)
            self.stamp = _stamp(handle)
        if len(local) != LOCAL_HEADER.size or local[:4] != LOCAL_SIGNATURE:
            raise ParityInputError(f"{self.where}: unreadable archive member (no local header at its offset)")
        _, name_bytes, extra_bytes = LOCAL_HEADER.unpack(local)
        self.offset = info.header_offset + LOCAL_HEADER.size + name_bytes + extra_bytes + header_bytes

    def rows(self, start: int, stop: int) -> np.ndarray:
        array = self._empty(start, stop)
        with open_regular(self.archive.path, self.archive.what) as handle:
            if _stamp(handle) != self.stamp:
                raise ParityInputError(f"{self.where}: the file changed while it was being read")
            handle.seek(self.offset + start * self.row_bytes)
            self._fill(handle, array, start)
        return array


class StreamRows(MemberRows):
    """A member read through its zip stream, forward only (compressed members; the CRC is checked)."""

    def __init__(self, archive: NpzArchive, key: str) -> None:
        super().__init__(archive, key)
        self._stack: contextlib.ExitStack | None = None
        self._stream = None
        self._next = 0  # the row the open stream is at

    def _open(self) -> None:
        self.close()
        stack = contextlib.ExitStack()
        _, self._stream, _ = stack.enter_context(self.archive.open_member(self.key))
        self._stack, self._next = stack, 0

    def rows(self, start: int, stop: int) -> np.ndarray:
        array = self._empty(start, stop)
        try:
            if self._stream is None or start < self._next:
                self._open()
            while self._next < start:  # skip forward, a bounded piece at a time
                count = min(start - self._next, max(1, SKIP_PIECE // max(self.row_bytes, 1)))
                self._fill(self._stream, self._empty(self._next, self._next + count), self._next)
                self._next += count
            self._fill(self._stream, array, start)
            self._next = stop
            if stop == self.shape[0]:
                self._stream.read(1)  # reaching the end makes zipfile verify the CRC
                self.close()
        except ARCHIVE_ERRORS as error:
            self.close()
            raise ParityInputError(f"{self.where}: unreadable archive member ({type(error).__name__}: "
                                   f"{error})") from None
        except BaseException:
            self.close()
            raise
        return array

    def close(self) -> None:
        stack, self._stack, self._stream = self._stack, None, None
        if stack is not None:
            with contextlib.suppress(*ARCHIVE_ERRORS):
                stack.close()


def _stamp(handle) -> tuple[int, int]:
    status = os.fstat(handle.fileno())
    return status.st_size, status.st_mtime_ns


def member_rows(archive: NpzArchive, key: str, sequential: bool = False) -> MemberRows:
    """The fastest reader of ``key``'s rows: direct reads where it is stored, else its stream.

    ``sequential``: always the stream (one pass whose CRC is verified, as a validation pass wants).
    """
    if not sequential:
        with contextlib.suppress(ValueError):
            return StoredRows(archive, key)
    return StreamRows(archive, key)
