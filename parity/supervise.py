"""The command line runs its work in a child process and watches it.

Adapter code runs in the harness's process, so it can end that process outright: ``os._exit(0)``,
a segfault in an extension, ``os.abort()``, the OOM killer. Without a watcher the command would then
exit with whatever status the adapter chose (0 looks like a pass) and leave no report. The parent
here starts the same command as a child, forwards the signals it receives, and reads a status pipe
on which the child says which case it is running and, last, the exit code it chose. A child that
ends without saying its exit code ended abruptly: the parent writes a report for the case it was
in (``stop_kind = "crashed"``) and exits 3, never 0 or 1.

The child knows it is supervised from ``PARITY_SUPERVISED``; the status descriptor is taken out of
the environment and made non-inheritable as soon as the child starts, so processes it starts in turn
(``parity bench`` does) neither write to it nor supervise themselves.

A child stopped by a signal (adapter code sending itself SIGSTOP or SIGTSTP) would never run again,
and nothing inside it can time out while it is stopped: the watcher resumes it (SIGCONT) once it has
stayed stopped for ``RESUME_AFTER`` seconds and says so, so the run goes on to its report (a stage
that keeps stopping itself is then a hang the stage timeout ends).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

ENV_CHILD = "PARITY_SUPERVISED"
ENV_FD = "PARITY_STATUS_FD"
_PR_SET_PDEATHSIG = 1  # linux/prctl.h: the child dies with its parent (a SIGKILLed parent leaves no orphan)
_status_fd: int | None = None
RESUME_AFTER = 1.0  # seconds a child may stay stopped before the watcher resumes it
_resumed = 0  # how many times it did


def wanted() -> bool:
    """Whether to run the command under a watcher: ``PARITY_SUPERVISE`` 1 (default) or 0; anything else
    is a usage error (exit 2), not silently one or the other."""
    text = os.environ.get("PARITY_SUPERVISE", "1").strip().lower()
    if text in ("1", "true", "yes", "on", ""):
        return not is_child()
    if text in ("0", "false", "no", "off"):
        return False
    print(f"parity: environment variable PARITY_SUPERVISE={text!r}: expected 1 (watch the command, the "
          "default) or 0 (run it in one process)", file=sys.stderr)
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
    global _status_fd
    text = os.environ.pop(ENV_FD, None)
    if text is None or not is_child():  # a value left in a user's environment: never write to it
        return
    try:
        fd = int(text)
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):  # the watcher's pipe, not a terminal or a file
            return
        os.set_inheritable(fd, False)
        _status_fd = fd
    except (ValueError, OSError):
        _status_fd = None


def _say(message: dict[str, Any]) -> None:
    if _status_fd is None:
        return
    try:
        os.write(_status_fd, (json.dumps(message, default=str) + "\n").encode())
    except OSError:
        pass


def case_started(case: Any, case_dir: Path) -> None:
    _say({"case": case.summary(), "pipeline": case.pipeline, "config": case.config.to_dict(), "dir": str(case_dir)})


def stage_reached(role: str, what: str) -> None:
    """The last thing the run did before an abrupt end: which side, which tap or stage (a pipe write, cheap)."""
    if _status_fd is not None:
        _say({"stage": f"{role} {what}"})


def case_done(case_dir: Path) -> None:
    _say({"done": str(case_dir)})


def exiting(code: int) -> None:
    _say({"exit": code})


def _die_with_parent() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # the child handles Ctrl-C itself, whatever the parent ignores
    try:
        import ctypes

        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass  # not Linux: an orphan then finishes its run on its own


def supervise(argv: list[str]) -> int:
    """Run ``parity argv`` as a child; its exit code, or 3 (with a report) if it ended abruptly."""
    printable_anywhere()
    read_fd, write_fd = os.pipe()
    env = dict(os.environ, **{ENV_CHILD: "1", ENV_FD: str(write_fd)})
    root = str(Path(__file__).resolve().parent.parent)  # the parity the parent runs, whatever the cwd
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    # its own process group: a Ctrl-C at the terminal reaches the parent only, which forwards it once
    # -P: no current folder ahead of that root (a parity.py or backends/ of the user's would shadow the harness)
    child = subprocess.Popen([sys.executable, "-P", "-m", "parity", *argv], env=env, pass_fds=(write_fd,),
                             process_group=0, preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
    os.close(write_fd)

    def forward(signum, _frame):
        if child.poll() is None:
            child.send_signal(signum)

    previous = {signum: signal.signal(signum, forward) for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    current: dict[str, Any] | None = None
    said: int | None = None
    for line in _status_lines(read_fd, child):
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if "case" in message:
            current = message
        elif "stage" in message and current is not None:
            current["stage"] = str(message["stage"])
        elif "done" in message:
            current = None
        elif "exit" in message and isinstance(message["exit"], int):
            said = int(message["exit"])
    code = child.wait()
    for signum, handler in previous.items():
        signal.signal(signum, handler)
    if said is not None:  # the verdict stands, whatever status adapter code (a thread, an atexit) ended with
        return said
    if code < 0 and -code in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(-code, signal.SIG_DFL)  # stopped from outside: die of the same signal, as it did
        os.kill(os.getpid(), -code)
    how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with status {code} (os._exit)"
    where = f" in case {current['case'].get('name')!r}" if current else ""
    if current and current.get("stage"):
        where += f" (last seen: {current['stage']})"
    print(f"parity: the run ended abruptly{where}: the process {how} before it could report, most likely "
          "inside adapter code; this is not a parity verdict (exit 3)", file=sys.stderr)
    if current is not None:
        _write_crash_report(current, how)
    return 3


def _status_lines(read_fd: int, child: subprocess.Popen):
    """The child's status lines, until it exits.

    Not until end of file: a process the adapter forked (a worker pool, a DataLoader worker) holds a copy
    of the pipe's write end and may outlive the child; the command must end with the child all the same.
    """
    os.set_blocking(read_fd, False)
    pending = b""
    stopped_since: float | None = None
    try:
        while True:
            exited = child.poll() is not None  # read after this: whatever it wrote before exiting is in the pipe
            if not exited:
                stopped_since = _resume_if_stopped(child, stopped_since)
            select.select([read_fd], [], [], 0.2)
            ended = False
            while True:
                try:
                    data = os.read(read_fd, 65536)
                except BlockingIOError:
                    break
                if not data:
                    ended = True
                    break
                pending += data
            *lines, pending = pending.split(b"\n")
            yield from lines
            if ended or exited:
                return
    finally:
        os.close(read_fd)


def _is_stopped(pid: int) -> bool:
    """The process is stopped by a signal (state T in /proc; False where there is no /proc)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat_file:
            fields = stat_file.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return False
    return bool(fields) and fields[0] == b"T"


def _resume_if_stopped(child: subprocess.Popen, stopped_since: float | None) -> float | None:
    """SIGCONT to a child that stayed stopped ``RESUME_AFTER`` seconds; when it was first seen stopped."""
    import time

    if not _is_stopped(child.pid):
        return None
    now = time.monotonic()
    if stopped_since is None:
        return now
    if now - stopped_since < RESUME_AFTER:
        return stopped_since
    global _resumed
    if not _resumed:  # once: a process stopped again and again (SIGTTIN from reading the terminal) says it once
        print(f"parity: the run's process (pid {child.pid}) was stopped by a signal (SIGSTOP, SIGTSTP or SIGTTIN, "
              "most likely from adapter code); the watcher resumed it (SIGCONT)", file=sys.stderr)
    _resumed += 1
    with contextlib.suppress(ProcessLookupError):
        child.send_signal(signal.SIGCONT)
    return None


def _write_crash_report(started: dict[str, Any], how: str) -> None:
    from .report import write_report
    from .results import RunReport

    report = RunReport(case=started["case"], pipeline=started["pipeline"], config=started["config"], reference={},
                       candidate={}, device="", modes=[], audits=[], taps=[], first_divergence=None, provenance={},
                       timing={}, stopped=f"the process {how} during this case, before it could report (adapter "
                                       "code ending the process: os._exit, a fatal signal, the OOM killer)"
                                       + (f"; last seen: {started['stage']}" if started.get("stage") else ""),
                       stop_kind="crashed")
    try:
        path = write_report(report, Path(started["dir"]))
        print(f"parity: report of the interrupted case written to {path}", file=sys.stderr)
    except Exception as error:  # noqa: BLE001 - the exit code says it all; the report is a courtesy
        print(f"parity: could not write the case's report ({error})", file=sys.stderr)
