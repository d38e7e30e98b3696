"""Measuring whole ``parity`` commands: wall time, peak memory and import cost of a child process.

Each command runs in its own child, waited for with ``os.wait4`` so that the
peak resident set size (``ru_maxrss``) is that child's alone, not the largest
of every child so far, and spawned from a small launcher interpreter (Linux
carries a process's peak RSS across fork and exec). ``-X importtime`` adds each module's import time to
the child's stderr; the cumulative time of ``tensorflow`` and ``torch`` is
read from it (0 when the command never imported them).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FRAMEWORKS = ("tensorflow", "torch")


def _rss_mib(maxrss: int) -> float:
    # Linux reports KiB, macOS bytes.
    return maxrss / (1 << 20) if sys.platform == "darwin" else maxrss / 1024


def import_seconds(importtime_log: str) -> dict[str, float]:
    """Cumulative import time in seconds of each framework's top-level package, from ``-X importtime``."""
    found = dict.fromkeys(FRAMEWORKS, 0.0)
    for line in importtime_log.splitlines():
        if not line.startswith("import time:"):
            continue
        parts = line.split("|")
        if len(parts) != 3:
            continue
        name = parts[2].strip()
        if name in found:
            try:
                found[name] = max(found[name], int(parts[1]) / 1e6)
            except ValueError:
                continue
    return found


def parity_command(args: Sequence[str], importtime: bool = False) -> list[str]:
    """``python [-X importtime] -m parity ARGS`` with this interpreter."""
    return [sys.executable, *(["-X", "importtime"] if importtime else []), "-m", "parity", *map(str, args)]


# Runs in a small interpreter of its own: Linux keeps a process's peak RSS across fork and exec, so
# a child forked straight from the bench (TensorFlow and torch loaded) would inherit its peak.
LAUNCHER = """
import json, os, signal, subprocess, sys, time
command, timeout, result = json.loads(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
started = time.perf_counter()
child = subprocess.Popen(command)
timed_out = False
while True:
    pid, status, usage = os.wait4(child.pid, os.WNOHANG)
    if pid:
        break
    if time.perf_counter() - started > timeout:
        child.send_signal(signal.SIGKILL)
        _, status, usage = os.wait4(child.pid, 0)
        timed_out = True
        break
    time.sleep(0.02)
wall = time.perf_counter() - started
child.returncode = os.waitstatus_to_exitcode(status)
with open(result, "w") as stream:
    json.dump({"wall_s": wall, "maxrss": usage.ru_maxrss, "returncode": child.returncode,
               "timed_out": timed_out}, stream)
"""


def measure_process(command: Sequence[str], timeout: float = 1800.0, env: Mapping[str, str] | None = None,
                    cwd: str | Path | None = None) -> dict[str, Any]:
    """Run ``command``; its wall time, peak RSS, exit code, framework import times and output tails.

    The peak RSS is the command's own (``os.wait4`` on it, from a small launcher process).
    """
    environment = dict(os.environ if env is None else env)
    # The child runs the same code as this process, installed or not.
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), environment.get("PYTHONPATH")]))
    environment["PARITY_SUPERVISE"] = "0"  # the command itself, not a watcher around it (its RSS, its start-up)
    with tempfile.TemporaryDirectory(prefix="parity-measure-") as folder:
        out_path, err_path, result_path = (Path(folder) / name for name in ("stdout", "stderr", "result.json"))
        with open(out_path, "w") as out, open(err_path, "w") as err:
            subprocess.run([sys.executable, "-c", LAUNCHER, json.dumps(list(map(str, command))), str(timeout),
                            str(result_path)], stdout=out, stderr=err, env=environment, cwd=cwd or ROOT,
                           check=False)
        stdout, stderr = out_path.read_text(), err_path.read_text()
        if not result_path.exists():
            raise RuntimeError(f"measuring {list(command)} failed: {stderr.strip()[-2000:]}")
        result = json.loads(result_path.read_text())
    log_lines = [line for line in stderr.splitlines() if not line.startswith("import time:")]
    return {
        "command": [Path(command[0]).name, *command[1:]],
        "returncode": result["returncode"],
        "timed_out": result["timed_out"],
        "wall_s": result["wall_s"],
        "max_rss_mib": _rss_mib(result["maxrss"]),
        "import_s": import_seconds(stderr),
        "stdout_tail": stdout.strip().splitlines()[-3:],
        "stderr_tail": log_lines[-5:],
    }
