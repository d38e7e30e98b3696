"""The child's half of supervision: what a supervised command tells its watcher (``parity.watcher``).

Adapter code runs in the harness's process, so it can end that process outright (``os._exit(0)``, a
segfault, the OOM killer). The command line therefore runs its work in a child that a watcher starts
(``parity.watcher.supervise``); the child says here, on a status pipe, which case it is running, when an
adapter call starts and ends, each time a stage delivers a tap, and last the exit code it chose.

The child knows it is supervised from ``PARITY_SUPERVISED``; the status descriptor is taken out of
the environment and made non-inheritable as soon as the child starts, so processes it starts in turn
(``parity bench`` does) neither write to it nor supervise themselves.

Adapter code may close descriptors it does not own (``os.closerange``): the child checks that the
status descriptor is still the watcher's pipe before each write (a descriptor number may be reused by
a file) and otherwise appends its messages to a status file the watcher reads after the child ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import sys
import threading
import time
from pathlib import Path
from typing import Any

from .capture import same_file

ENV_CHILD = "PARITY_SUPERVISED"
ENV_FD = "PARITY_STATUS_FD"
ENV_FILE = "PARITY_STATUS_FILE"
_status_fd: int | None = None
_status_identity: tuple[int, int] | None = None  # (st_dev, st_ino) of the pipe when it was claimed
_status_file: str | None = None
_watch_lock = threading.Lock()
_last_beat = 0.0
BEAT_EVERY = 1.0  # seconds between progress messages while a call is watched


def wanted() -> bool:
    """Whether to run the command under a watcher: ``PARITY_SUPERVISE`` 1 (default; also true, yes, on, or
    set but empty) or 0 (also false, no, off); anything else is a usage error (exit 2), not silently one or
    the other."""
    text = os.environ.get("PARITY_SUPERVISE", "1").strip().lower()
    if text in ("1", "true", "yes", "on", ""):
        return not is_child()
    if text in ("0", "false", "no", "off"):
        return False
    print(f"parity: error: environment variable PARITY_SUPERVISE={text!r}: expected 1 (watch the command, the "
          "default; true, yes, on) or 0 (run it in one process; false, no, off)", file=sys.stderr)
    raise SystemExit(2)


def printable_anywhere() -> None:
    """A terminal that cannot show a character (``≤`` on an ASCII or cp1252 console) gets a replacement, not a
    UnicodeEncodeError that would turn a finished run into a crash."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="replace")
        except (AttributeError, ValueError):  # not a text file of io's (a test's capture)
            pass


def is_child() -> bool:
    return os.environ.get(ENV_CHILD) == "1"


def claim() -> None:
    """In the child: take the status descriptor out of the environment (see the module docstring)."""
    global _status_fd, _status_identity, _status_file
    text = os.environ.pop(ENV_FD, None)
    path = os.environ.pop(ENV_FILE, None)
    if text is None or not is_child():  # a value left in a user's environment: never write to it
        return
    _status_file = path or None
    try:
        fd = int(text)
        status = os.fstat(fd)
        if not stat.S_ISFIFO(status.st_mode):  # the watcher's pipe, not a terminal or a file
            return
        os.set_inheritable(fd, False)
        _status_fd, _status_identity = fd, (status.st_dev, status.st_ino)
    except (ValueError, OSError):
        _status_fd = None


def _say(message: dict[str, Any]) -> None:
    global _status_fd
    if _status_fd is None and _status_file is None:
        return
    line = (json.dumps(message, default=str) + "\n").encode()
    if _status_fd is not None:
        if same_file(_status_fd, _status_identity):
            try:
                os.write(_status_fd, line)
                return
            except OSError:
                pass
        _status_fd = None  # closed by adapter code, or its number reused: never write there again
    if _status_file is not None:
        with contextlib.suppress(OSError):
            handle = os.open(_status_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
            try:
                os.write(handle, line)
            finally:
                os.close(handle)


def watching(who: str, timeout: float | None) -> None:
    """An adapter call by ``who`` (candidate, reference, construct) starts; the stage timeout it runs under."""
    if timeout is not None:
        _say({"watch": float(timeout), "who": who})


def unwatched(who: str, timeout: float | None) -> None:
    if timeout is not None:
        _say({"unwatch": who})


def progress() -> None:
    """A stage delivered a tap (at most one message a second)."""
    global _last_beat
    if _status_fd is None and _status_file is None:
        return
    now = time.monotonic()
    with _watch_lock:
        if now - _last_beat < BEAT_EVERY:
            return
        _last_beat = now
    _say({"beat": 1})


def grace(timeout: float) -> float:
    """How long past a call's stage timeout the watcher waits before ending the child: the child's own
    timeout fires first whenever the interpreter is free to run it."""
    return max(10.0, 0.25 * timeout)


def case_started(case: Any, case_dir: Path) -> None:
    _say({"case": case.summary(), "pipeline": case.pipeline, "config": case.config.to_dict(), "dir": str(case_dir),
          "at": time.time()})  # a report.json newer than this is this run's: a crash report never replaces it


def stage_reached(role: str, what: str) -> None:
    """The last thing the run did before an abrupt end: which side, which tap or stage (a pipe write, cheap)."""
    if _status_fd is not None:
        _say({"stage": f"{role} {what}"})


def case_done(case_dir: Path) -> None:
    _say({"done": str(case_dir)})


def terminal_lost() -> None:
    """Adapter code closed the child's standard output: the watcher says where the results went."""
    _say({"terminal_lost": True})


def exiting(code: int) -> None:
    _say({"exit": code})
