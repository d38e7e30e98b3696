"""Files that appear whole or not at all, the folders they go into, and files that must be regular.

A writer writes ``.<name>.<host>.<pid>.<token>.tmp`` next to the target and
renames it into place only when complete, so the previous file survives any
failure. SIGTERM and SIGHUP are turned into an exception while a write is in
progress, so the temporary is removed as on Ctrl-C, and the process then dies
of the signal as it would have. A writer killed outright (SIGKILL, power
loss) leaves its temporary behind: the next writer into the folder removes
the temporaries whose process is gone. Only those of this host: a PID means
nothing on another machine sharing the folder.

A write the machine refuses (disk full, quota, ``ulimit -f``) raises
``WriteRefusedError`` (exit 3, one line): never a signal (SIGXFSZ is ignored
while writing), never a half-written file in place of the old one.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import signal
import socket
import stat
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

from .errors import ParityInputError, WriteRefusedError

REFUSED_ERRNOS = {errno.EFBIG, errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
_TEMPORARY = re.compile(r"^\.(?P<target>.+)\.(?P<host>[A-Za-z0-9-]+)\.(?P<pid>\d+)\.(?P<token>[0-9a-f]{8})\.tmp$")


def _host_tag() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:64] or "host"


def temporary_path(target: Path) -> Path:
    """Where a writer of ``target`` puts its bytes until they are complete (names host and PID)."""
    return target.parent / f".{target.name}.{_host_tag()}.{os.getpid()}.{secrets.token_hex(4)}.tmp"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, under another user
        return True
    return True


def sweep_stale_temporaries(folder: str | Path) -> list[Path]:
    """Remove the temporaries in ``folder`` left by dead writers of this host; return what was removed."""
    removed: list[Path] = []
    host = _host_tag()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        match = _TEMPORARY.match(entry.name)
        if match is None or match["host"] != host:
            continue
        pid = int(match["pid"])
        if pid == os.getpid() or _alive(pid):
            continue
        with contextlib.suppress(OSError):
            if entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
    return removed


# ---- signals ----

class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived during a write; raised so that cleanup runs as on Ctrl-C."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"terminated by {signal.Signals(signum).name}")
        self.signum = signum


_depth = 0


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Inside: SIGTERM/SIGHUP raise ``Terminated``. Leaving with it: handlers restored, the signal re-raised."""
    global _depth
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    for signum in (signal.SIGTERM, signal.SIGHUP):
        old = signal.getsignal(signum)
        if old is signal.SIG_IGN:  # e.g. under nohup: whoever started us chose to ignore it
            continue
        previous[signum] = old
        signal.signal(signum, _raise_terminated)
    _depth += 1
    try:
        yield
    except Terminated as error:
        if _depth > 1:
            raise
        _restore(previous)
        previous = {}
        print(f"parity: {signal.Signals(error.signum).name} received; temporary files removed, "
              "no file left half-written", file=sys.stderr)
        signal.raise_signal(error.signum)  # die of it as we would have, or run the caller's handler
        raise
    finally:
        _depth -= 1
        _restore(previous)


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated(signum)


def _restore(previous: dict) -> None:
    for signum, old in previous.items():
        signal.signal(signum, old if old is not None else signal.SIG_DFL)


@contextlib.contextmanager
def _no_sigxfsz() -> Iterator[None]:
    """Past RLIMIT_FSIZE, write() must fail with EFBIG instead of the process being killed by SIGXFSZ."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGXFSZ"):
        yield
        return
    old = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGXFSZ, old if old is not None else signal.SIG_DFL)


def refused(path: Path, error: OSError) -> WriteRefusedError:
    return WriteRefusedError(f"{path}: not written, disk full or file too large ({error.strerror or error}); "
                             "any previous file there is intact")


@contextlib.contextmanager
def atomic_target(path: str | Path) -> Iterator[Path]:
    """A temporary path to write ``path``'s content into; renamed into place when the block completes."""
    path = Path(path)
    if path.is_dir():  # os.replace would fail only after the whole file was written
        raise ParityInputError(f"{path}: is a folder, so the file cannot be written there; expected no folder of "
                               "that name (move it away)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:  # e.g. the folder was removed and a file put in its place while the run went on
        raise WriteRefusedError(f"{path}: not written, its folder {path.parent} cannot be made "
                                f"({error.strerror or error}); expected a folder there (was it removed or replaced "
                                "during the run?)") from None
    sweep_stale_temporaries(path.parent)
    temporary = temporary_path(path)
    limit = _name_limit(path.parent)
    if len(temporary.name.encode()) > limit:
        raise ParityInputError(f"{path}: the file name is too long to write safely ({len(path.name.encode())} bytes; "
                               f"this file system takes {limit}, less the temporary's suffix); expected a shorter "
                               "name (rename the inputs file or the case)")
    with terminate_as_interrupt(), _no_sigxfsz():
        try:
            yield temporary
            os.replace(temporary, path)
        except BaseException as error:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            if isinstance(error, OSError) and error.errno in REFUSED_ERRNOS:
                raise refused(path, error) from None
            raise


def _name_limit(folder: Path) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        return 255


def write_bytes_atomically(path: str | Path, data: bytes | memoryview) -> None:
    """``path`` holds exactly ``data``, or keeps what it held before."""
    path = Path(path)
    with atomic_target(path) as temporary:
        # 0o666 minus the umask: an ordinary shared file, not mkstemp's private 0600
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        try:
            view = memoryview(data).cast("B")
            while view:
                view = view[os.write(descriptor, view):]
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


# ---- folders and files ----

def replaceable_file(path: str | Path, what: str, option: str) -> Path:
    """The file a command will replace, checked before the work that leads to it: through a symlink its target
    (the file the user means; replacing the link would leave that one as it was), a file that is not read-only
    (mode bits: even where root could write it), in a folder that takes a new file. Exit 2 naming it, else."""
    path = Path(path)
    target = path.resolve() if path.is_symlink() else path
    if target.exists():
        if not target.is_file():
            raise ParityInputError(f"{option} {path}: the {what} is not a regular file; expected a file to replace")
        mode = target.stat().st_mode
        if not mode & 0o222:
            raise ParityInputError(f"{option} {path}: the {what} is read-only (mode {mode & 0o777:o}); make it "
                                   "writable, or name another file")
    writable_folder(target.parent, f"folder of the {what}", option)
    return target


def replace_text_keeping_mode(path: Path, text: str) -> None:
    """``path`` holds ``text`` (written atomically), with the permission bits it had: a shared table stays
    readable by those who could read it."""
    mode = path.stat().st_mode & 0o7777 if path.exists() else None
    try:
        write_bytes_atomically(path, text.encode("utf-8"))
        if mode is not None:
            os.chmod(path, mode)
    except PermissionError as error:  # an immutable file, a folder that turned read-only: nothing was changed
        raise WriteRefusedError(f"{path}: not written ({error.strerror}); the file there is unchanged") from None


def writable_folder(directory: str | Path, what: str, option: str) -> Path:
    """``directory``, created if needed, proven writable by writing into it; else exit 2 naming it."""
    folder = Path(directory)
    if folder.exists() and not folder.is_dir():
        raise ParityInputError(f"{option} {folder}: the {what} exists and is not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ParityInputError(f"{option} {folder}: cannot create the {what} ({error.strerror or error})") from None
    probe = temporary_path(folder / "write-probe")
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
        os.unlink(probe)
    except OSError as error:
        raise ParityInputError(f"{option} {folder}: cannot write into the {what} "
                               f"({error.strerror or error})") from None
    sweep_stale_temporaries(folder)
    return folder


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file"


def regular_file(path: str | Path, what: str, missing_hint: str = "") -> Path:
    """``path`` if it is (or links to) a readable regular file; exit 2 otherwise, never blocking on a FIFO."""
    path = Path(path)
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        raise ParityInputError(f"{path}: {what} not found{missing_hint}") from None
    except OSError as error:
        raise ParityInputError(f"{path}: cannot open the {what} ({error.strerror or error})") from None
    try:
        mode = os.fstat(descriptor).st_mode
    finally:
        os.close(descriptor)
    if not stat.S_ISREG(mode):
        raise ParityInputError(f"{path}: the {what} is {_kind(mode)}; expected a regular file")
    return path
