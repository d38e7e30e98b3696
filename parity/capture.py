"""Output of adapter code (print, warnings, logging, C-level writes) captured into a log file.

The harness's own terminal output must stay readable: adapter code runs with file descriptors 1
and 2 (and ``sys.stdout`` / ``sys.stderr``, ``warnings``) pointed at the run's log, and the CLI
writes through ``terminal()``, a stream on a duplicate of the original stdout that the
redirection does not touch.

The log is bounded (``PARITY_LOG_LIMIT`` bytes, default 64 MiB): a port that prints in a loop must not
fill the disk.  Output past the limit is dropped, the head is kept (the first error is what a reader
needs) and a line says so; a watcher thread enforces it while a capture is open, and every capture's
end and ``close()`` once more.  The file is in append mode, so writes after a truncation land at its
new end.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_terminal: io.TextIOBase | None = None
_terminal_identity: tuple[int, int] | None = None
_terminal_lost = False
# streams whose descriptor adapter code closed and the number of which may now be another file's: kept
# referenced so that they are never closed (closing would close that other file)
_abandoned: list = []
_lock = threading.Lock()
DEFAULT_LIMIT = 64 << 20
_WATCH_INTERVAL = 0.2  # seconds between size checks while output is captured


def log_limit() -> int:
    """Bytes an adapter log may hold (``PARITY_LOG_LIMIT``; a bad value falls back to the default)."""
    try:
        return max(4096, int(os.environ.get("PARITY_LOG_LIMIT", DEFAULT_LIMIT)))
    except ValueError:
        return DEFAULT_LIMIT


def terminal() -> io.TextIOBase:
    """A text stream to where stdout pointed when first asked, unaffected by later capture."""
    global _terminal, _terminal_identity
    with _lock:
        if _terminal is None:
            try:
                sys.stdout.flush()
                _terminal = io.TextIOWrapper(os.fdopen(os.dup(sys.stdout.fileno()), "wb", buffering=0),
                                             encoding=getattr(sys.stdout, "encoding", None) or "utf-8",
                                             errors="replace", line_buffering=True, write_through=True)
                _terminal_identity = file_identity(_terminal.fileno())
            except (AttributeError, OSError, io.UnsupportedOperation, ValueError):
                _terminal = sys.stdout  # no real descriptor (pytest capture, notebooks): write where Python does
        return _terminal


def file_identity(fd: int) -> tuple[int, int]:
    status = os.fstat(fd)
    return status.st_dev, status.st_ino


def same_file(fd: int | None, identity: tuple[int, int] | None) -> bool:
    """Whether descriptor ``fd`` is still the file it was when ``identity`` was taken: adapter code may have
    closed it (``os.closerange``) and the number gone to another file."""
    try:
        return fd is not None and identity is not None and file_identity(fd) == identity
    except OSError:
        return False


def _still(stream: Any, identity: tuple[int, int] | None) -> bool:
    try:
        return same_file(stream.fileno(), identity)
    except (AttributeError, OSError, ValueError):
        return False


def check_terminal() -> None:
    """After adapter code ran: if it closed the terminal's descriptor (``os.closerange``), whatever now has
    that number must not receive the harness's output; the output is dropped and the watcher told."""
    global _terminal, _terminal_identity, _terminal_lost
    with _lock:
        if _terminal is None or _terminal_identity is None or _still(_terminal, _terminal_identity):
            return
        _abandoned.append(_terminal)
        _terminal = io.TextIOWrapper(open(os.devnull, "wb", buffering=0), encoding="utf-8",  # noqa: SIM115
                                     errors="replace", write_through=True)
        _terminal_identity, _terminal_lost = None, True


def _lose_standard_descriptor(fd: int) -> None:
    global _terminal_lost
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, fd)
    finally:
        os.close(null)
    if fd == 1:
        _terminal_lost = True


def terminal_was_lost() -> bool:
    return _terminal_lost


def _usable_std_streams() -> None:
    """``sys.stdout``/``sys.stderr`` (and ``sys.__stdout__``/``__stderr__``) that adapter code closed are
    replaced by new ones on descriptors 1 and 2: the harness prints its messages there."""
    for name, fd in (("stdout", 1), ("stderr", 2)):
        for attribute in (name, f"__{name}__"):
            stream = getattr(sys, attribute, None)
            if stream is None or not getattr(stream, "closed", False):
                continue
            with contextlib.suppress(OSError, ValueError):
                setattr(sys, attribute, open(fd, "w", buffering=1, closefd=False, encoding="utf-8",  # noqa: SIM115
                                             errors="replace"))


class OutputLog:
    """A log file that adapter output goes to; ``capture()`` redirects into it for a block."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "ab")  # noqa: SIM115 - kept open for the run, closed by close()
        self._file_identity = file_identity(self._file.fileno())
        self._restore: list = []  # how to undo the capture in progress (any thread may: see release())
        self._restore_lock = threading.Lock()
        self.limit = log_limit()
        self.dropped = False  # output past the limit was dropped
        self._bound_lock = threading.Lock()
        self._watching: threading.Event | None = None

    def _own_file(self) -> None:
        """Adapter code may close the log's descriptor (``os.closerange``) and the number go to another file:
        that file must never be written or truncated as the log; the log is opened again by its path."""
        if self._file.closed or _still(self._file, self._file_identity):
            return
        _abandoned.append(self._file)
        with contextlib.suppress(OSError):
            self._file = open(self.path, "ab")  # noqa: SIM115
            self._file_identity = file_identity(self._file.fileno())

    def bound(self) -> None:
        """Cut the log back to its limit (plus the line saying so) when it has grown past it."""
        self._own_file()
        marker = (f"\n[parity: adapter output past {self.limit} bytes was dropped (PARITY_LOG_LIMIT); "
                  "the head is kept]\n").encode()
        with self._bound_lock, contextlib.suppress(OSError, ValueError):
            size = os.fstat(self._file.fileno()).st_size
            if size <= self.limit + (len(marker) if self.dropped else 0):
                return
            self._file.flush()
            os.ftruncate(self._file.fileno(), self.limit)
            if not self.dropped:
                self.dropped = True
                self._file.write(marker)
                self._file.flush()
            else:
                os.ftruncate(self._file.fileno(), self.limit + len(marker))

    def _watch(self, stop: threading.Event) -> None:
        while not stop.wait(_WATCH_INTERVAL):
            self.bound()

    def close(self) -> None:
        """Close the log; an empty one is removed (nothing was printed)."""
        self.bound()
        with contextlib.suppress(OSError):
            if _still(self._file, self._file_identity):
                self._file.close()
        if self.size() == 0:
            with contextlib.suppress(OSError):
                self.path.unlink()

    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except OSError:
            return 0

    def note(self, text: str) -> None:
        self._own_file()
        with contextlib.suppress(OSError, ValueError):
            self._file.write(text.encode("utf-8", "replace") + b"\n")
            self._file.flush()

    @contextlib.contextmanager
    def capture(self) -> Iterator[None]:
        """Redirect fds 1 and 2, ``sys.stdout``/``sys.stderr`` and warnings into the log."""
        self._own_file()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        saved: list[tuple[int, int, tuple[int, int]]] = []
        for fd in (1, 2):
            try:
                duplicate = os.dup(fd)
                saved.append((fd, duplicate, file_identity(duplicate)))
                os.dup2(self._file.fileno(), fd)
            except OSError:
                continue
        text = io.TextIOWrapper(_Unclosable(self._file), encoding="utf-8", errors="replace", write_through=True)
        previous = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = text
        # the warnings state too: a call abandoned inside its catch_warnings block never restores it, and its
        # showwarning would go on writing to a log that is closed (a later warning then crashes the run)
        warning_state = (list(warnings.filters), warnings.showwarning)
        token = (text, previous, saved, warning_state)
        with self._restore_lock:
            self._restore.append(token)
            if self._watching is None:  # one watcher while any capture is open
                self._watching = threading.Event()
                threading.Thread(target=self._watch, args=(self._watching,), name="parity-log-bound",
                                 daemon=True).start()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("default")
                warnings.showwarning = _to(text)
                yield
        finally:
            self._undo(token)

    def release(self) -> None:
        """Give the process its stdout/stderr back now, from any thread.

        A call the guard abandons (it hung past the stage timeout, or Ctrl-C came) never leaves its
        ``capture()`` block: without this, everything the harness prints afterwards, its verdict
        included, would go on into the log.
        """
        while True:
            with self._restore_lock:
                if not self._restore:
                    return
                token = self._restore[-1]
            self._undo(token)

    def _undo(self, token) -> None:
        with self._restore_lock:
            if token not in self._restore:
                return  # already given back (release() from another thread)
            self._restore.remove(token)
            if not self._restore and self._watching is not None:
                self._watching.set()
                self._watching = None
        text, previous, saved, (filters, showwarning) = token
        with contextlib.suppress(Exception):
            text.flush()
        sys.stdout, sys.stderr = previous
        warnings.filters[:] = filters
        warnings.showwarning = showwarning
        mutated = getattr(warnings, "_filters_mutated", None)  # the module's cache of filter decisions
        if mutated is not None:
            mutated()
        for fd, duplicate, identity in saved:
            with contextlib.suppress(OSError):
                if same_file(duplicate, identity):  # not closed by adapter code, its number not reused
                    os.dup2(duplicate, fd)
                    os.close(duplicate)
                else:  # where 1 or 2 pointed is gone from this process: not the log, nowhere
                    _lose_standard_descriptor(fd)
        _usable_std_streams()
        check_terminal()
        self.bound()


class _Unclosable(io.RawIOBase):
    """The log's binary file seen as a raw stream that closing the wrapper does not close."""

    def __init__(self, target) -> None:
        self.target = target

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.target.write(data)
        self.target.flush()
        return len(data)


def _to(stream):
    def show(message, category, filename, lineno, file=None, line=None):
        stream.write(warnings.formatwarning(message, category, filename, lineno, line))

    return show
