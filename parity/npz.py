"""Reading a user's ``.npz`` member by member, headers before data, never unpickling.

``numpy.load`` inflates a member before anyone can look at its shape (a
2 MiB zip bomb becomes a 2 GiB array), returns raw bytes for a member that is
not npy data, and trusts a header's shape enough to allocate it. Here each
member's npy header (shape, dtype) is read from the zip stream first, so the
caller can refuse a wrong shape, a wrong dtype or an oversized member before
one data byte is inflated; a header whose shape disagrees with the number of
bytes the archive holds for it is refused without allocating; members the
caller does not ask for are never read.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import math
import struct
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO

import numpy as np

from .errors import ParityInputError
from .files import open_regular

MAGIC = b"\x93NUMPY"
MAX_HEADER = 1 << 16  # numpy writes ~128 bytes; numpy itself refuses more than 10 000 by default
READ_PIECE = 16 << 20
# Whatever a hostile archive makes the zip and npy parsers raise: a problem of the file, not a crash.
_ARCHIVE_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, RuntimeError,
                   NotImplementedError, struct.error, OverflowError, KeyError, IndexError)
ARCHIVE_ERRORS = _ARCHIVE_ERRORS


def human_bytes(count: int | float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(count) < 1024 or unit == "PiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} EiB"  # pragma: no cover


@dataclasses.dataclass(frozen=True)
class Member:
    """One member's npy header: what the array would be, before any data is read."""

    key: str
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool
    nbytes: int  # data bytes the header implies (Python int: no overflow for absurd shapes)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)


def _parse_header(where: str, handle: IO[bytes]) -> tuple[dict, int]:
    """The npy header dict and the total header length in bytes (magic included)."""
    magic = handle.read(len(MAGIC))
    if magic != MAGIC:
        raise ParityInputError(f"{where}: not npy data (starts with {magic[:6]!r}); expected an array written by "
                               "numpy.savez (raw bytes and pickles are never loaded)")
    version = tuple(handle.read(2))
    if version == (1, 0):
        size_format, encoding = "<H", "latin1"
    elif version in ((2, 0), (3, 0)):
        size_format, encoding = "<I", "latin1" if version == (2, 0) else "utf8"
    else:
        raise ParityInputError(f"{where}: npy format version {version} is not one numpy writes (1.0, 2.0, 3.0)")
    raw_length = handle.read(struct.calcsize(size_format))
    if len(raw_length) != struct.calcsize(size_format):
        raise ParityInputError(f"{where}: npy header truncated")
    length = struct.unpack(size_format, raw_length)[0]
    if length > MAX_HEADER:
        raise ParityInputError(f"{where}: npy header of {length} bytes; expected at most {MAX_HEADER}")
    text = handle.read(length)
    if len(text) != length:
        raise ParityInputError(f"{where}: npy header truncated ({len(text)} of {length} bytes)")
    try:
        header = ast.literal_eval(text.decode(encoding))
    except (SyntaxError, ValueError, TypeError, UnicodeDecodeError, MemoryError, RecursionError):
        raise ParityInputError(f"{where}: npy header is not a Python literal dict") from None
    if not isinstance(header, dict) or set(header) != {"descr", "fortran_order", "shape"}:
        raise ParityInputError(f"{where}: npy header must hold exactly 'descr', 'fortran_order' and 'shape'")
    return header, len(MAGIC) + 2 + struct.calcsize(size_format) + length


def _member(where: str, key: str, header: dict, header_bytes: int, stored: int) -> Member:
    shape = header["shape"]
    if not (isinstance(shape, tuple) and all(type(dim) is int and dim >= 0 for dim in shape)):
        raise ParityInputError(f"{where}: npy header shape {shape!r}: expected a tuple of non-negative integers")
    if not isinstance(header["fortran_order"], bool):
        raise ParityInputError(f"{where}: npy header fortran_order {header['fortran_order']!r}: expected a bool")
    try:
        dtype = np.lib.format.descr_to_dtype(header["descr"])
    except Exception:  # numpy raises TypeError, ValueError, ... for a descr it cannot parse
        raise ParityInputError(f"{where}: npy header dtype {header['descr']!r} is not a numpy dtype") from None
    if dtype.hasobject:
        raise ParityInputError(f"{where}: holds Python objects (dtype {dtype}), which need pickle to load; "
                               "expected a plain numeric array (pickles are never loaded)")
    if dtype.names is not None or dtype.subdtype is not None or dtype.kind not in "biufc":
        raise ParityInputError(f"{where}: dtype {dtype}: expected a plain numeric array (bool, int, float, complex)")
    nbytes = math.prod(shape) * dtype.itemsize
    if stored - header_bytes != nbytes:
        raise ParityInputError(f"{where}: the npy header claims shape {shape} {dtype} ({human_bytes(nbytes)}) but the "
                               f"archive holds {stored - header_bytes} data bytes for it: truncated or forged")
    return Member(key, shape, dtype, header["fortran_order"], nbytes)


class NpzArchive(Mapping[str, Member]):
    """A ``.npz``'s members: key -> Member (header only); ``read(key)`` loads one array.

    The file is opened for each operation and closed again, so an archive
    object never holds a descriptor; a member that changes between its header
    check and its read is refused.
    """

    def __init__(self, path: str | Path, what: str = "inputs file") -> None:
        self.path = Path(path)
        self.what = what
        with self._zip() as archive:
            infos = archive.infolist()
        self._infos: dict[str, zipfile.ZipInfo] = {}
        for info in infos:
            key = info.filename.removesuffix(".npy")
            if key in self._infos:
                raise ParityInputError(f"{self.path}: key {key!r} appears twice in the archive")
            self._infos[key] = info
        self._headers: dict[str, Member] = {}

    @contextlib.contextmanager
    def _zip(self) -> Iterator[zipfile.ZipFile]:
        with open_regular(self.path, self.what) as handle:
            try:
                archive = zipfile.ZipFile(handle)
            except _ARCHIVE_ERRORS as error:
                raise ParityInputError(f"{self.path}: not an .npz archive (expected a file written by "
                                       f"numpy.savez): {error}") from None
            with archive:
                yield archive

    @contextlib.contextmanager
    def _stream(self, key: str) -> Iterator[tuple[str, IO[bytes], Member]]:
        """The member's data stream, positioned after its (re-checked) header."""
        where = f"{self.path}: key {key!r}"
        expected = self._infos[key]
        try:
            with self._zip() as archive:
                info = archive.getinfo(expected.filename)
                with archive.open(info) as stream:
                    header, header_bytes = _parse_header(where, stream)
                    member = _member(where, key, header, header_bytes, info.file_size)
                    if key in self._headers and member != self._headers[key]:
                        raise ParityInputError(f"{where}: the member changed while it was being read")
                    yield where, stream, member
        except _ARCHIVE_ERRORS as error:
            raise ParityInputError(f"{where}: unreadable archive member ({type(error).__name__}: {error})") from None

    def open_member(self, key: str) -> contextlib.AbstractContextManager[tuple[str, IO[bytes], Member]]:
        """``(where, stream, member)``: the member's data stream after its re-checked header (``parity.npz_rows``)."""
        self[key]
        return self._stream(key)

    def info(self, key: str) -> zipfile.ZipInfo:
        """The member's zip directory entry (where its bytes lie, how they are stored)."""
        return self._infos[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._infos)

    def __len__(self) -> int:
        return len(self._infos)

    def __getitem__(self, key: str) -> Member:
        """The member's header (read from the stream on first use; no data is inflated)."""
        if key not in self._infos:
            raise KeyError(key)
        if key not in self._headers:
            with self._stream(key) as (_, _, member):
                self._headers[key] = member
        return self._headers[key]

    def read(self, key: str) -> np.ndarray:
        """The array of ``key``: its header checked (see ``__getitem__``), then exactly its data bytes."""
        self[key]
        with self._stream(key) as (where, stream, member):
            array = np.empty(member.size, member.dtype)
            view = memoryview(array.view(np.uint8))
            done = 0
            while done < member.nbytes:
                got = stream.readinto(view[done : done + READ_PIECE])
                if not got:
                    raise ParityInputError(f"{where}: data truncated ({done} of {member.nbytes} bytes)")
                done += got
            stream.read(1)  # reaching the end makes zipfile verify the CRC
        if member.fortran_order:
            return array.reshape(member.shape[::-1]).transpose()
        return array.reshape(member.shape)


def read_npz(path: str | Path, what: str = "inputs file") -> dict[str, np.ndarray]:
    """Every array of an archive (small trusted-shape files: weights); use NpzArchive to check headers first."""
    archive = NpzArchive(path, what)
    return {key: archive.read(key) for key in archive}
