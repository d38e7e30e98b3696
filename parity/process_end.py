"""Adapter code that ends the process (``os._exit``) where no watcher stands outside it.

Under the command line a watcher process turns an abrupt end into exit 3 and a report
(``parity.watcher``). The pytest plugin, the library API and ``PARITY_SUPERVISE=0`` run adapter
code in the very process whose exit status the user reads: a port's ``os._exit(0)`` in a stage, in
a thread of its own or in an ``atexit`` handler would end a failing session with 0. So the first
time an adapter is loaded in such a process, ``os._exit`` is replaced by a function that

- on a thread running adapter code for the harness (a guard's call, importing or building an
  adapter), raises ``ProcessEndRefused``, a ``SystemExit``: the guard reports it as that adapter's
  fault, like ``sys.exit``, and the run goes on to its report;
- elsewhere in this process ends it, but never with a status the shell reads as 0 (256 is 0 too) when
  the harness knows of a worse verdict (the pytest session's status, said by ``said``), nor before any
  verdict is known where one is expected (a pytest session, a command: ``expect_verdict``) or on a
  thread other than the main one: exit 3 then, "not a parity verdict";
- in a forked child (another process id: a DataLoader's worker, a pool) is the original.

``posix._exit`` (the same function under its own module's name) is replaced too, and the ``exec``
functions, which replace the process (its exit status then is the new program's), are refused in
adapter code and, before a verdict, elsewhere. A non-zero status always goes through (pytest-timeout
and execnet end a process with 1 on purpose).

The same processes have no watcher to end a stage that never gives the interpreter back (a C
extension or a regular expression that holds the GIL): no Python timer can fire. There the stage
timeout is backed by ``faulthandler``'s timer, a C thread that needs no interpreter: once no adapter
call has made progress for its stage timeout plus the watcher's grace, it prints every thread's
traceback to standard error and ends the process with status 1 (a hang, never a pass). A pytest
session that set ``faulthandler_timeout`` owns that timer, and it is left to pytest.
"""

from __future__ import annotations

import contextlib
import faulthandler
import os
import sys
import threading
import time
from collections.abc import Iterator

from . import supervise
from .capture import file_identity, same_file

EXIT_ABRUPT = 3
_original = os._exit
_EXEC_NAMES = ("execv", "execve")  # os.execl, execlp, execvp, ... call these through os's globals
_original_exec = {name: getattr(os, name) for name in _EXEC_NAMES if hasattr(os, name)}
_expecting = False
_running = 0  # runs under way
_failed_run = False  # some run of this process did not pass
_harness_pid = os.getpid()
_local = threading.local()
_verdict: int | None = None
_installed = False
_timer_file: int | None = None  # a copy of standard error's descriptor at install (not a stage's captured output)
_timer_identity: tuple[int, int] | None = None
_terminal: int | None = None  # standard error before a test runner captured descriptor 2 (remember_terminal)
_terminal_identity: tuple[int, int] | None = None
_timer_owned_elsewhere = False
_watched: list[tuple[str, float]] = []  # (who, stage timeout) of each adapter call in progress
_watch_lock = threading.Lock()
_armed_at = 0.0
REARM_EVERY = 1.0  # seconds: progress re-arms the timer at most this often


class ProcessEndRefused(SystemExit):
    """Adapter code called ``os._exit(status)`` (or an ``exec`` function) while the harness was running it."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


def install() -> None:
    """Replace ``os._exit`` (once per process; see the module docstring), unless a watcher runs this process."""
    global _installed, _harness_pid
    if _installed or supervise.is_child():
        return
    _installed, _harness_pid = True, os.getpid()
    os._exit = _guarded_exit
    for name, original in _original_exec.items():
        setattr(os, name, _guarded_exec(name, original))
    posix = sys.modules.get("posix")  # the functions' own module: `import posix; posix._exit(0)`
    if posix is not None:
        posix._exit = _guarded_exit
        for name in _original_exec:
            if hasattr(posix, name):
                setattr(posix, name, getattr(os, name))
    global _timer_file, _timer_identity
    terminal = _terminal if same_file(_terminal, _terminal_identity) else 2
    try:  # a bare descriptor (faulthandler takes one), not a file object the interpreter would call unclosed
        _timer_file = os.dup(terminal)
        os.set_inheritable(_timer_file, False)
        _timer_identity = file_identity(_timer_file)
    except OSError:  # no standard error: the hang timer has nowhere to say what hung, and is not armed
        _timer_file = None


def remember_terminal() -> None:
    """Keep a copy of standard error as it is now, before pytest captures descriptor 2 into a file of its own: a
    process ended by ``os._exit`` never prints that file, so the line saying why it ended, and the hang timer's
    tracebacks, go to the copy."""
    global _terminal, _terminal_identity
    if _terminal is not None:
        return
    try:
        _terminal = os.dup(2)
        os.set_inheritable(_terminal, False)
        _terminal_identity = file_identity(_terminal)
    except OSError:  # no standard error at all
        _terminal = None


def _tell(line: str) -> None:
    """One line about how the process ends, where a person sees it (see ``remember_terminal``)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - a closed stream: the line and the status still go out
            pass
    if same_file(_timer_file, _timer_identity):
        try:
            os.write(_timer_file, (line + "\n").encode("utf-8", "replace"))
            return
        except OSError:
            pass
    try:
        print(line, file=sys.__stderr__ or sys.stderr, flush=True)
    except Exception:  # noqa: BLE001 - nowhere to say it: the status still goes out
        pass


def expect_verdict() -> None:
    """This process will say a verdict (a pytest session, a command): until it does, nothing ends it with 0."""
    global _expecting
    _expecting = True


def run_began() -> None:
    """A run is under way (the library API included): nothing ends the process with 0 until it ends."""
    global _running
    _running += 1


def run_ended(passed: bool) -> None:
    """A run ended; one that did not pass makes a later os._exit(0) from adapter code (its atexit handler) exit 1
    where nobody says a verdict (a script of the library API's)."""
    global _running, _failed_run
    _running = max(0, _running - 1)
    _failed_run = _failed_run or not passed


def said(code: int) -> None:
    """The harness's verdict for this process (a pytest session's exit status, a command's exit code)."""
    global _verdict
    _verdict = int(code)


THREAD_GRACE = 10.0  # seconds the threads left running at the end of a session get to finish


def end_despite_threads() -> None:
    """At the very end of a session whose verdict is said: the interpreter would wait for every non-daemon
    thread still running (one adapter code started and never stopped hangs it forever). They get
    ``THREAD_GRACE`` seconds together; then the process ends with the verdict."""
    if not _installed or _verdict is None or os.getpid() != _harness_pid:
        return
    deadline = time.monotonic() + THREAD_GRACE
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join(max(0.0, deadline - time.monotonic()))
    left = [thread.name for thread in threading.enumerate()
            if thread is not threading.current_thread() and not thread.daemon and thread.is_alive()]
    if not left:
        return
    try:
        _tell(f"parity: {len(left)} thread(s) still running after the session ({', '.join(left[:4])}), started by "
              f"adapter or test code, would keep the process from ending; it ends now with the session's status "
              f"{_verdict}")
    finally:
        _original(_verdict)


def leave_the_timer() -> None:
    """Someone else (pytest's ``faulthandler_timeout``) uses faulthandler's one timer: never arm it here."""
    global _timer_owned_elsewhere
    _timer_owned_elsewhere = True


def watching(who: str, timeout: float | None) -> None:
    """An adapter call by ``who`` (candidate, reference, construct) starts under ``timeout``: the watcher hears
    of it (``supervise``) and, where there is none, the hang timer is armed."""
    supervise.watching(who, timeout)
    if timeout is None or not _installed or _timer_owned_elsewhere:
        return
    with _watch_lock:
        _watched.append((who, float(timeout)))
        _arm()


def unwatched(who: str, timeout: float | None) -> None:
    supervise.unwatched(who, timeout)
    with _watch_lock:
        index = next((i for i in range(len(_watched) - 1, -1, -1) if _watched[i][0] == who), None)
        if index is None:
            return
        del _watched[index]
        if _watched:
            _arm()
        else:
            faulthandler.cancel_dump_traceback_later()


def progress() -> None:
    """A stage delivered a tap: the watcher's and the hang timer's clocks start again (at most once a second)."""
    supervise.progress()
    if not _watched or time.monotonic() - _armed_at < REARM_EVERY:
        return
    with _watch_lock:
        if _watched:
            _arm()


@contextlib.contextmanager
def running_adapter_code(who: str, timeout: float | None) -> Iterator[None]:
    """Adapter code run on this thread (importing or building an adapter): its exits refused, its hangs timed."""
    install()
    watching(who, timeout)
    try:
        with adapter_code():
            yield
    finally:
        unwatched(who, timeout)


def _arm() -> None:
    global _armed_at
    longest = max(timeout for _, timeout in _watched)
    # adapter code may have closed the copy and its number gone to another file: never write tracebacks there
    if _timer_file is None or not same_file(_timer_file, _timer_identity):
        faulthandler.cancel_dump_traceback_later()
        return
    try:
        faulthandler.dump_traceback_later(longest + supervise.grace(longest), exit=True, file=_timer_file)
    except (ValueError, OSError, RuntimeError):
        return
    _armed_at = time.monotonic()


class adapter_code:  # noqa: N801 - used as a context manager, named for what runs inside it
    """Marks the current thread as running adapter code for the harness (nestable)."""

    def __enter__(self) -> None:
        _local.depth = getattr(_local, "depth", 0) + 1

    def __exit__(self, *exc_info: object) -> None:
        _local.depth -= 1


def _verdict_pending() -> bool:
    """A verdict is expected (a session, a command), a run is under way, or this is not the main thread (whose
    end the script that started the thread would see): no adapter code may end the process as a success now."""
    return _expecting or _running > 0 or threading.current_thread() is not threading.main_thread()


def _guarded_exit(status: int) -> None:
    if os.getpid() != _harness_pid:
        _original(status)
    if getattr(_local, "depth", 0) > 0:
        raise ProcessEndRefused(f"os._exit({status!r})")
    if isinstance(status, int) and status % 256 == 0:  # what the shell reads as success (256 wraps to 0)
        if _verdict:
            _original(_verdict)
        if _verdict is None and _verdict_pending():
            _abrupt(f"os._exit({status})")
        if _verdict is None and _failed_run:
            _abrupt(f"os._exit({status})", code=1, when="after a run of this process failed")
    _original(status)


def _guarded_exec(name: str, original):
    def guarded(*args, **kwargs):
        if os.getpid() != _harness_pid:  # a forked child about to run a program: what fork + exec is for
            return original(*args, **kwargs)
        if getattr(_local, "depth", 0) > 0:
            raise ProcessEndRefused(f"os.{name}")  # a new program in place of the harness
        if _verdict is None and _verdict_pending():
            _abrupt(f"os.{name} (a new program in place of this process)")
        return original(*args, **kwargs)

    guarded.__name__ = guarded.__qualname__ = name
    return guarded


def _abrupt(what: str, code: int = EXIT_ABRUPT, when: str = "before the harness had a verdict") -> None:
    """Adapter code (a thread of its own, a signal handler, an atexit handler) ends the process before the
    harness has a verdict (exit 3), or after a failed run where nobody said one (exit 1): never with 0."""
    try:
        _tell(f"parity: adapter code called {what} from thread {threading.current_thread().name!r} {when}; exit "
              f"{code}" + (" (not a parity verdict)" if code == EXIT_ABRUPT else ""))
    finally:
        _original(code)
