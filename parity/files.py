"""Opening a user's file without trusting it: regular files only, never blocking, honest errors.

A FIFO, a socket or a device given as ``--inputs`` / ``--config`` would block
``open()`` forever or stream without end, so every user file is resolved
(symlinks followed), checked to be a regular file and opened with
``O_NONBLOCK``; the check is repeated on the open descriptor (``fstat``), so a
file swapped for a FIFO between the two is still refused. Every failure is a
``ParityInputError`` that says what is wrong with the file: not found,
permission denied, a folder, not a regular file, not UTF-8.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from .errors import ParityInputError

_KINDS = {stat.S_IFIFO: "a FIFO (named pipe)", stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a character device",
          stat.S_IFBLK: "a block device", stat.S_IFDIR: "a folder"}


def _kind(mode: int) -> str:
    return _KINDS.get(stat.S_IFMT(mode), "not a regular file")


def _os_problem(path: Path, what: str, error: OSError) -> ParityInputError:
    reasons = {errno.ENOENT: "not found", errno.EACCES: "permission denied", errno.EPERM: "permission denied",
               errno.EISDIR: "is a folder, expected a file", errno.ENOTDIR: "a parent of it is not a folder",
               errno.ELOOP: "too many levels of symbolic links", errno.ENAMETOOLONG: "file name too long"}
    if error.errno == errno.ENOENT:
        return ParityInputError(f"{path}: {what} not found")
    reason = reasons.get(error.errno, error.strerror or type(error).__name__)
    return ParityInputError(f"{path}: {what}: {reason}")


def regular_file(path: str | Path, what: str) -> Path:
    """``path`` resolved through symlinks, if it names an existing regular file; else ParityInputError."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode  # follows symlinks
    except OSError as error:
        raise _os_problem(path, what, error) from None
    except ValueError as error:  # e.g. an embedded NUL byte
        raise ParityInputError(f"{path!r}: {what}: not a usable file name ({error})") from None
    if not stat.S_ISREG(mode):
        raise ParityInputError(f"{path}: {what}: is {_kind(mode)}, expected a regular file")
    return path


@contextlib.contextmanager
def open_regular(path: str | Path, what: str) -> Iterator[IO[bytes]]:
    """A binary handle on a regular file, opened without ever blocking on a FIFO or device."""
    path = regular_file(path, what)
    try:
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as error:
        raise _os_problem(path, what, error) from None
    try:
        mode = os.fstat(descriptor).st_mode
        if not stat.S_ISREG(mode):  # swapped between the check and the open
            raise ParityInputError(f"{path}: {what}: is {_kind(mode)}, expected a regular file")
        if hasattr(os, "set_blocking"):
            os.set_blocking(descriptor, True)  # a regular file: reads may block on the disk only
        handle = os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise
    with handle:
        try:
            yield handle
        except OSError as error:  # e.g. EIO, or EISDIR on exotic file systems
            raise _os_problem(path, what, error) from None


def read_bytes(path: str | Path, what: str, limit: int | None = None) -> bytes:
    """The whole file; ``limit`` bytes at most (a text file larger than that is refused, not read)."""
    with open_regular(path, what) as handle:
        data = handle.read(limit + 1 if limit is not None else -1)
    if limit is not None and len(data) > limit:
        raise ParityInputError(f"{path}: {what}: larger than {limit} bytes; expected a small text file")
    return data


TEXT_LIMIT = 16 << 20  # config and tolerance files are a few kB; a 16 MiB one is a mistake


def read_text(path: str | Path, what: str) -> str:
    data = read_bytes(path, what, TEXT_LIMIT)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise ParityInputError(f"{path}: {what}: not UTF-8 text (byte {error.start}, line {line}: "
                               f"{data[error.start:error.start + 1]!r}); expected a UTF-8 TOML file") from None


def read_toml(path: str | Path, what: str) -> dict[str, Any]:
    """A TOML document, or a ParityInputError naming the file (``what``: 'config file', ...)."""
    text = read_text(path, what)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ParityInputError(f"{path}: not valid TOML: {error}") from None
    except RecursionError:  # deeply nested arrays
        raise ParityInputError(f"{path}: not valid TOML: nested too deeply") from None
