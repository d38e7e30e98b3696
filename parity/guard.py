"""Running adapter code so that whatever it does, the run ends in a report and an honest exit code.

Every call into an adapter (``describe``, ``resolve_config``, ``run_pipeline``, ``run_stage``)
goes through ``Guard.call``: it runs on one long-lived worker thread with the adapter's output
captured into the run's log, any ``BaseException`` (``SystemExit`` and ``KeyboardInterrupt``
raised by adapter code included) comes back as an ``AdapterFault``, and a call that makes no
progress for ``stage_timeout`` seconds is abandoned (the worker is a daemon thread; the CLI exits
without waiting for it). Progress is reported with ``tick()`` each time a stage delivers a tap, so
the timeout is per stage, not per pipeline.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from backends.common.backend import StageError

from . import integrity, process_end
from .capture import OutputLog
from .shown_text import shown

TRACEBACK_LIMIT = 64_000  # characters of one traceback written to the log (head and tail kept)
TRACEBACK_FRAMES = 40  # the innermost frames of each exception (a recursion a million deep would take minutes)
DEFAULT_STAGE_TIMEOUT = 600.0  # seconds without a tap; a sane stage of a sane case takes well under this


class AdapterFault(Exception):
    """Adapter code did not return normally.

    ``kind``: "raised" (an exception), "exit" (``SystemExit``), "interrupt" (``KeyboardInterrupt``
    raised inside adapter code), "timeout" (no progress for the stage timeout) or "stuck" (an
    earlier call never returned, so this adapter cannot be called again).
    """

    def __init__(self, message: str, kind: str, original: BaseException | None = None, detail: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.original = original
        self.tap = getattr(original, "tap", None)
        # what the original said, safe to print (``describe_exception``, read on the worker under the timeout),
        # and where its traceback went
        self.detail = detail if detail is not None else message


def describe_exception(error: BaseException) -> str:
    """One message for what adapter code raised: safe to print (``shown``), whatever its ``__str__`` does
    (raises, returns escape sequences or megabytes)."""
    if isinstance(error, process_end.ProcessEndRefused):
        return f"called {shown(error.what, 200)} (refused: the run goes on to its report)"
    if isinstance(error, SystemExit):
        return f"called sys.exit({shown(_safe_repr(error.code), 200)})"
    if isinstance(error, KeyboardInterrupt):
        return "raised KeyboardInterrupt"
    try:
        text = shown(str(error))
    except Exception as failure:  # noqa: BLE001 - its __str__ is adapter code too
        text = f"<str() of the exception raised {type(failure).__name__}>"
    name = shown(type(error).__name__, 200)
    return f"{name}: {text}" if text else name


def _safe_repr(value: object) -> str:
    try:
        return repr(value)
    except Exception:  # noqa: BLE001
        return f"<{type(value).__name__}>"


class Guard:
    """One worker thread for one adapter's calls; see the module docstring."""

    def __init__(self, label: str, log: OutputLog | None = None,
                 stage_timeout: float | None = DEFAULT_STAGE_TIMEOUT) -> None:
        self.label = label
        self.log = log
        self.stage_timeout = stage_timeout
        self.stuck: str | None = None
        self.stuck_tap: str | None = None  # the tap an earlier, abandoned call was computing, where known
        self.replaced: list[str] = []  # numpy or builtin functions its code replaced (and the harness put back)
        self._progress = time.monotonic()
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        process_end.install()  # an adapter built by the caller, not by load_adapter

    def tick(self) -> None:
        """A stage finished: the per-stage timer starts again (here and in the watcher, ``supervise``)."""
        self._progress = time.monotonic()
        process_end.progress()  # the watcher's clock (supervise) and, without one, the hang timer's
        self._put_back_namespaces()

    def _put_back_namespaces(self) -> None:
        """numpy's and the builtins' own functions back before the harness computes with them (``integrity``)."""
        for name in integrity.restore():
            if name not in self.replaced:
                self.replaced.append(name)

    def _log_traceback(self, what: str, error: BaseException) -> bool:
        """The adapter's traceback into the run's log (a one-line message cannot say which line raised)."""
        if self.log is None or isinstance(error, KeyboardInterrupt) or _a_word_to_the_harness(error):
            return False
        if self.stuck is not None:  # an abandoned call ended at last: nobody waits for it, and formatting a
            return False            # recursion millions deep would hold the interpreter from the run's own work
        try:
            text = "".join(traceback.format_exception(error, limit=-TRACEBACK_FRAMES))
        except BaseException:  # noqa: BLE001 - formatting runs the exception's own __str__
            return False
        if len(text) > TRACEBACK_LIMIT:
            half = TRACEBACK_LIMIT // 2
            text = f"{text[:half]}\n[... {len(text) - TRACEBACK_LIMIT} characters cut ...]\n{text[-half:]}"
        self.log.note(f"[parity: the {self.label}'s {what} raised; its traceback:]\n{text.rstrip()}")
        return True

    def _worker(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            function, args, kwargs, box, done = job
            folder = _working_folder()
            try:
                with (self.log.capture() if self.log is not None else contextlib.nullcontext(),
                      process_end.adapter_code()):
                    box["value"] = function(*args, **kwargs)
            except BaseException as error:  # noqa: BLE001 - adapter code may raise anything, exits included
                box["error"] = error
                # said here, under the stage timeout: an exception's __str__ is adapter code that may hang
                try:
                    box["message"] = describe_exception(error)
                except BaseException:  # noqa: BLE001 - a __str__ that exits or is interrupted
                    box["message"] = f"{type(error).__name__} (its message could not be read)"
                box["traceback"] = self._log_traceback(box.get("what", "a call"), error)
            finally:
                _restore_working_folder(folder)  # an adapter's os.chdir must not move the run's outputs
                done.set()
            # nothing of this call may outlive it: between calls the worker would otherwise keep the
            # last call's arguments (a chunk's inputs, a stage's reference values) alive
            del job, function, args, kwargs, box, done

    def call(self, what: str, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``function(*args, **kwargs)`` on the worker; ``what`` names the call in messages."""
        if self.stuck is not None:
            fault = AdapterFault(f"{self.label}: not called ({what}): {self.stuck}", "stuck")
            fault.tap = self.stuck_tap
            raise fault
        if self._thread is None:
            self._thread = threading.Thread(target=self._worker, name=f"parity-{self.label}", daemon=True)
            self._thread.start()
        box: dict[str, Any] = {"what": what}
        done = threading.Event()
        integrity.expect_umask()  # the host's mask as this call begins (its own, if it set one): what the call leaves
        self.tick()
        # said before the job is queued: a stage that holds the interpreter would leave no chance after
        # past it (and a grace) the watcher ends the process; without one, faulthandler's timer does (process_end)
        process_end.watching(self.label, self.stage_timeout)
        self._jobs.put((function, args, kwargs, box, done))
        try:
            while not done.wait(0.1):
                idle = time.monotonic() - self._progress
                if self.stage_timeout is not None and idle > self.stage_timeout:
                    self.stuck = f"an earlier call ({what}) did not return within {self.stage_timeout:g} s"
                    raise AdapterFault(f"{self.label} {what}: no result within the stage timeout of "
                                       f"{self.stage_timeout:g} s (--stage-timeout)", "timeout")
        except BaseException:  # abandoned (timeout, Ctrl-C): its output capture must not outlive it
            if not done.is_set() and self.stuck is None:
                self.stuck = f"an earlier call ({what}) was interrupted before it returned"
            if self.log is not None:
                self.log.release()
            raise
        finally:
            process_end.unwatched(self.label, self.stage_timeout)
            self._put_back_namespaces()
        if "error" in box:
            error = box["error"]
            kind = ("exit" if isinstance(error, SystemExit) else
                    "interrupt" if isinstance(error, KeyboardInterrupt) else "raised")
            where = f" (traceback in {self.log.path.name})" if box.get("traceback") else ""
            raise AdapterFault(f"{self.label} {what}: {box['message']}{where}", kind, error,
                               detail=box["message"] + where) from (
                error if isinstance(error, Exception) else None)
        return box.get("value")

    def close(self) -> None:
        if self._thread is not None and self.stuck is None:
            self._jobs.put(None)
            self._thread.join(timeout=5)
        self._thread = None


def _a_word_to_the_harness(error: BaseException) -> bool:
    """An exception an adapter raises on purpose to tell the harness something (it cannot run a pipeline,
    cannot isolate a stage), not a failure whose line anyone needs."""
    return isinstance(error, NotImplementedError) or (isinstance(error, StageError) and error.__cause__ is None
                                                      and error.__context__ is None)


def _working_folder() -> str | None:
    try:
        return os.getcwd()
    except OSError:  # the folder was removed under us: nothing to restore to
        return None


def _restore_working_folder(folder: str | None) -> None:
    if folder is not None and _working_folder() != folder:
        with contextlib.suppress(OSError):
            os.chdir(folder)


def any_stuck(guards: list[Guard]) -> bool:
    return any(guard.stuck is not None for guard in guards)
