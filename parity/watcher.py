"""The watcher: the command line runs its work in a child process and watches it (the child's half: ``parity.supervise``).

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

A stage that never gives the interpreter back (a C extension or a regular expression that holds the
GIL) stops the child's own stage timeout from firing. The child therefore tells the watcher when an
adapter call starts and ends, and each time a stage delivers a tap; a call that shows no progress for
its stage timeout plus a grace (``grace()``) is ended from outside (SIGKILL) and reported like a hang:
the candidate's (exit 1, report), the reference's (exit 3, report), or building an adapter (exit 2).

Adapter code may close descriptors it does not own (``os.closerange``): the child checks that the
status descriptor is still the watcher's pipe before each write (a descriptor number may be reused by
a file) and otherwise appends its messages to a status file the watcher reads after the child ends.
A case whose complete report was written is never overwritten by a crash report.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .supervise import ENV_CHILD, ENV_FD, ENV_FILE, grace, printable_anywhere

_PR_SET_PDEATHSIG = 1  # linux/prctl.h: the child dies with its parent (a SIGKILLed parent leaves no orphan)
RESUME_AFTER = 1.0  # seconds a child may stay stopped before the watcher resumes it
_resumed = 0  # how many times it did


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
    try:
        status_dir = tempfile.mkdtemp(prefix="parity-status-")
    except OSError:  # no writable temporary folder: the pipe alone, as before the fallback existed
        status_dir = None
    status_file = os.path.join(status_dir, "status.jsonl") if status_dir else ""
    env = dict(os.environ, **{ENV_CHILD: "1", ENV_FD: str(write_fd), ENV_FILE: status_file})
    root = str(Path(__file__).resolve().parent.parent)  # the parity the parent runs, whatever the cwd
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    # its own process group: a Ctrl-C at the terminal reaches the parent only, which forwards it once
    # -P: no current folder ahead of that root (a parity.py or backends/ of the user's would shadow the harness)
    child = subprocess.Popen([sys.executable, *_interpreter_flags(), "-P", "-m", "parity", *argv], env=env,
                             pass_fds=(write_fd,),
                             process_group=0, preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
    os.close(write_fd)

    received: list[int] = []

    def forward(signum, _frame):
        received.append(signum)
        if child.poll() is None:
            child.send_signal(signum)

    previous = {signum: signal.signal(signum, forward) for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    state = _ChildState()
    tail = _FileTail(status_file)  # what it says after adapter code closed the pipe
    try:
        for line in _status_lines(read_fd, child, state, tail):
            state.read(line)
        code = child.wait()
        for line in tail.lines():
            state.read(line)
    finally:
        if status_dir:
            with contextlib.suppress(OSError):
                os.remove(status_file)
            with contextlib.suppress(OSError):
                os.rmdir(status_dir)
    for signum, handler in previous.items():
        signal.signal(signum, handler)
    if state.terminal_lost and state.said is not None:
        where = f" under {state.last_dir}" if state.last_dir else ""
        print("parity: adapter code closed the run's standard output, so its results were not shown here; "
              f"they are in the reports{where} (exit {state.said})", file=sys.stderr)
    if state.killed is not None:
        return _ended_hang(state)
    if state.said == 130 and not received:  # an interrupt nobody sent: adapter code raised it, no verdict
        print("parity: the run was interrupted by a KeyboardInterrupt that no Ctrl-C or signal to the command sent "
              "(adapter code: a signal handler it installed, _thread.interrupt_main()); this is not a parity verdict "
              "(exit 3)", file=sys.stderr)
        state.said = 3
    if state.said == 3 and state.current is not None:  # it crashed mid-case (said why above): the case gets a report
        _write_crash_report(state.current, "the run stopped during this case before it could report (exit 3: a "
                                           "crash of the harness, or adapter code ending it; its standard error "
                                           "says which)", "crashed")
    terminated = [signum for signum in received if signum in (signal.SIGTERM, signal.SIGHUP)]
    if terminated and state.said == 130:  # the child reported its interrupted case: die of the signal, as the
        signal.signal(terminated[0], signal.SIG_DFL)  # sender expects (143 / 129 in a shell), not as a Ctrl-C
        os.kill(os.getpid(), terminated[0])
    if state.said is not None:  # the verdict stands, whatever status adapter code (a thread, an atexit) ended with
        return state.said
    if code < 0 and -code in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(-code, signal.SIG_DFL)  # stopped from outside: die of the same signal, as it did
        os.kill(os.getpid(), -code)
    if code > 0 and not state.adapter_code_ran and state.current is None:
        print(f"parity: the command's process exited with status {code} before any adapter code ran (what it "
              "printed above says why: an import of the harness or a library failed, or the environment); this is "
              "not a parity verdict (exit 3)", file=sys.stderr)
        return 3
    how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with status {code} (os._exit)"
    current = state.current
    where = f" in case {current['case'].get('name')!r}" if current else ""
    if current and current.get("stage"):
        where += f" (last seen: {current['stage']})"
    print(f"parity: the run ended abruptly{where}: the process {how} before it could report, most likely "
          "inside adapter code; this is not a parity verdict (exit 3)", file=sys.stderr)
    if current is not None:
        _write_crash_report(current, f"the process {how} during this case, before it could report (adapter code "
                                     "ending the process: os._exit, a fatal signal, the OOM killer)", "crashed")
    return 3


def _interpreter_flags() -> list[str]:
    """The parent's own -W, -X and -O options, so that ``python -X dev -m parity`` means the same for the child."""
    flags = [f"-W{option}" for option in sys.warnoptions]
    for name, value in getattr(sys, "_xoptions", {}).items():
        flags.append(f"-X{name}" if value is True else f"-X{name}={value}")
    return flags + ["-O"] * min(sys.flags.optimize, 2)


class _ChildState:
    """What the child said: the case it is in, the adapter calls under way, its exit code."""

    def __init__(self) -> None:
        self.current: dict[str, Any] | None = None
        self.said: int | None = None
        self.terminal_lost = False
        self.last_dir: str | None = None  # the folder the last case's report folder is in
        self.calls: list[tuple[str, float]] = []  # (who, stage timeout) of the adapter calls under way
        self.last_progress = time.monotonic()
        self.killed: dict[str, Any] | None = None
        self.adapter_code_ran = False  # an adapter was being built or called at some point

    def read(self, line: bytes) -> None:
        try:
            message = json.loads(line)
        except ValueError:
            return
        if not isinstance(message, dict):
            return
        self.last_progress = time.monotonic()
        if "case" in message:
            self.current = message
            self.last_dir = str(Path(str(message.get("dir"))).parent)
        elif "stage" in message and self.current is not None:
            self.current["stage"] = str(message["stage"])
        elif "done" in message:
            self.current = None
        elif "watch" in message and isinstance(message["watch"], (int, float)):
            self.calls.append((str(message.get("who")), float(message["watch"])))
            self.adapter_code_ran = True
        elif "unwatch" in message:
            who = str(message["unwatch"])
            for index in range(len(self.calls) - 1, -1, -1):
                if self.calls[index][0] == who:
                    del self.calls[index]
                    break
        elif "terminal_lost" in message:
            self.terminal_lost = True
        elif "exit" in message and isinstance(message["exit"], int):
            self.said = int(message["exit"])

    def overdue(self) -> dict[str, Any] | None:
        """The call to end from outside: no progress for its stage timeout plus the grace."""
        if not self.calls or self.killed is not None:
            return None
        timeout = max(call_timeout for _, call_timeout in self.calls)
        idle = time.monotonic() - self.last_progress
        if idle <= timeout + grace(timeout):
            return None
        return {"who": self.calls[-1][0], "timeout": timeout, "idle": idle}


def _ended_hang(state: _ChildState) -> int:
    killed = state.killed
    who, timeout, idle = killed["who"], killed["timeout"], killed["idle"]
    if who == "construct":
        print(f"parity: error: importing or building an adapter made no progress for {idle:.0f} s, past the stage "
              f"timeout of {timeout:g} s (--stage-timeout, which applies to it too); the watcher ended it (exit 2)",
              file=sys.stderr)
        return 2
    why = (f"no progress for {idle:.0f} s, past the stage timeout of {timeout:g} s (--stage-timeout), and the process "
           "could not end the call itself (adapter code that holds the interpreter: a C extension or a regular "
           "expression that never releases the GIL); the watcher ended it (SIGKILL)")
    current = state.current
    seen = f" (last seen: {current['stage']})" if current and current.get("stage") else ""
    code = 1 if who == "candidate" else 3
    print(f"parity: the {who} hung{seen}: {why} (exit {code})", file=sys.stderr)
    if current is not None:
        _write_crash_report(current, f"the {who} hung: {why}", "candidate" if who == "candidate" else "crashed")
    return code


class _FileTail:
    """Complete lines appended to the status file since the last call."""

    def __init__(self, path: str) -> None:
        self.path, self.offset, self.pending = path, 0, b""

    def lines(self) -> list[bytes]:
        if not self.path:
            return []
        try:
            with open(self.path, "rb") as status:
                status.seek(self.offset)
                data = status.read()
        except OSError:
            return []
        self.offset += len(data)
        *lines, self.pending = (self.pending + data).split(b"\n")
        return lines


def _status_lines(read_fd: int, child: subprocess.Popen, state: _ChildState, tail: _FileTail):
    """The child's status lines, until it exits.

    Not until end of file: a process the adapter forked (a worker pool, a DataLoader worker) holds a copy
    of the pipe's write end and may outlive the child; the command must end with the child all the same.
    Nor does end of file end the wait: adapter code may close the pipe in the child (it then goes on in
    the status file).
    """
    os.set_blocking(read_fd, False)
    pending = b""
    stopped_since: float | None = None
    open_pipe = True
    try:
        while True:
            exited = child.poll() is not None  # read after this: whatever it wrote before exiting is in the pipe
            if not exited:
                stopped_since = _resume_if_stopped(child, stopped_since)
                overdue = state.overdue()
                if overdue is not None:
                    state.killed = overdue
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(child.pid, signal.SIGKILL)  # its group: what the stage started goes too
                    child.wait()
                    exited = True
            if open_pipe:
                select.select([read_fd], [], [], 0.2)
            else:
                time.sleep(0.2)
            while open_pipe:
                try:
                    data = os.read(read_fd, 65536)
                except BlockingIOError:
                    break
                if not data:
                    open_pipe = False
                    break
                pending += data
            *lines, pending = pending.split(b"\n")
            yield from lines
            if not open_pipe and not exited:
                yield from tail.lines()
            if exited:
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


def _write_crash_report(started: dict[str, Any], stopped: str, stop_kind: str) -> None:
    """A report for the case the child was in, in place of an earlier run's; one this run wrote is kept."""
    from .report import write_case_outputs
    from .results import RunReport

    written = Path(str(started.get("dir"))) / "report.json"
    with contextlib.suppress(OSError, TypeError, ValueError):
        if written.stat().st_mtime >= float(started.get("at", float("inf"))):
            print(f"parity: the case's report was written before the end; kept: {written}", file=sys.stderr)
            return

    report = RunReport(case=started["case"], pipeline=started["pipeline"], config=started["config"], reference={},
                       candidate={}, device="", modes=[], audits=[], taps=[], first_divergence=None, provenance={},
                       timing={}, stopped=stopped + (f"; last seen: {started['stage']}" if started.get("stage") else ""),
                       stop_kind=stop_kind)
    try:
        path = write_case_outputs(report, Path(started["dir"]))  # its page too: an earlier run's is removed
        print(f"parity: report of the interrupted case written to {path}", file=sys.stderr)
    except Exception as error:  # noqa: BLE001 - the exit code says it all; the report is a courtesy
        print(f"parity: could not write the case's report ({error})", file=sys.stderr)
