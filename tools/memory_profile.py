"""Where the memory of a ``parity`` command goes (issue #11): resident set, allocator heap, numpy buffers.

    PYTHONPATH=$PWD python tools/memory_profile.py [--top 12] -- run --pipeline physics --inputs F.npz --out OUT

Runs the command in this process. A thread samples the resident set (``/proc/self/status``) and
glibc's heap (``mallinfo2``: bytes in use and held) every few ms; ``tracemalloc`` traces Python
and numpy allocations from the moment the run starts (adapters loaded, frameworks imported), and
a snapshot is taken whenever the traced total reaches a new high, so the allocation sites listed
are those at the traced peak. Prints one JSON document: peak and phase of each number, the RSS
once the frameworks are in, and the top sites (file:line, MiB, blocks). TensorFlow's and Torch's
own tensors are not traced (they come from their C++ allocators): they show as heap in use
beyond the traced bytes.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import resource
import threading
import time
import tracemalloc
from pathlib import Path

MIB = 1 << 20
SNAPSHOT_STEP = 2 * MIB  # a new snapshot when the traced total passes its high by this much


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]


def _heap() -> tuple[int, int]:
    """(bytes malloc'd and in use, bytes the heap holds), mmapped blocks included; (0, 0) without glibc."""
    try:
        libc = ctypes.CDLL(None)
        libc.mallinfo2.restype = _MallInfo2
        info = libc.mallinfo2()
    except (OSError, AttributeError):
        return 0, 0
    return info.uordblks + info.hblkhd, info.arena + info.hblkhd


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class Sampler:
    def __init__(self, interval: float = 0.003) -> None:
        self.interval, self.phase, self.stopped = interval, "start-up", False
        self.peaks = {"rss": (0, ""), "heap_in_use": (0, ""), "heap_held": (0, ""), "traced": (0, "")}
        self.snapshot: tracemalloc.Snapshot | None = None
        self.marks: list[tuple[str, int]] = []
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _note(self, key: str, value: int) -> None:
        if value > self.peaks[key][0]:
            self.peaks[key] = (value, self.phase)

    def _loop(self) -> None:
        snapped = 0
        while not self.stopped:
            self._note("rss", _rss())
            in_use, held = _heap()
            self._note("heap_in_use", in_use)
            self._note("heap_held", held)
            if tracemalloc.is_tracing():
                traced = tracemalloc.get_traced_memory()[0]
                self._note("traced", traced)
                if traced > snapped + SNAPSHOT_STEP:
                    self.snapshot, snapped = tracemalloc.take_snapshot(), traced
            time.sleep(self.interval)

    def mark(self, phase: str) -> None:
        self.phase = phase
        self.marks.append((phase, _rss()))


def _hook(sampler: Sampler) -> None:
    """Phase names from the runner's own steps: set-up, each chunk, writing the outputs."""
    from parity import tapflow, workflows

    run_case, write, run_chunk = workflows.run_case, workflows.write_case_outputs, tapflow.CaseRun.run_chunk

    def traced_run_case(*args, **kwargs):
        sampler.mark("run set-up (frameworks loaded)")
        tracemalloc.start()
        result = run_case(*args, **kwargs)
        sampler.mark("after the chunks")
        return result

    def traced_write(*args, **kwargs):
        sampler.mark("writing report, evidence, html")
        return write(*args, **kwargs)

    def traced_chunk(self, start, stop, whole):
        sampler.phase = f"chunk [{start}, {stop})"
        return run_chunk(self, start, stop, whole)

    workflows.run_case, workflows.write_case_outputs, tapflow.CaseRun.run_chunk = (
        traced_run_case, traced_write, traced_chunk)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the parity command line, after --")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    sampler = Sampler()
    sampler.thread.start()
    _hook(sampler)
    from parity.cli import main as parity_main

    code = parity_main(command)
    sampler.stopped = True
    sampler.thread.join()
    sites = []
    if sampler.snapshot is not None:
        for stat in sampler.snapshot.statistics("lineno")[: args.top]:
            frame = stat.traceback[0]
            sites.append({"site": f"{frame.filename.split('site-packages/')[-1]}:{frame.lineno}",
                          "mib": round(stat.size / MIB, 2), "blocks": stat.count})
    print(json.dumps({
        "command": command, "exit": code,
        "ru_maxrss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "peaks_mib": {key: [round(value / MIB, 1), phase] for key, (value, phase) in sampler.peaks.items()},
        "rss_at_mib": [[phase, round(value / MIB, 1)] for phase, value in sampler.marks],
        "traced_sites_at_peak": sites,
    }, indent=1))


if __name__ == "__main__":
    main()
