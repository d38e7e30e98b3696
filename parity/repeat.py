"""``--repeat N``: is the candidate deterministic? Run it N times on the same inputs, compare bit for bit.

With the determinism switch on, two runs of the same candidate on the same
device must agree bit for bit. A tap that does not points at a kernel outside
the switch (an atomic-add reduction, a nondeterministic cuDNN algorithm, a
thread count that moved). Runs after the first are compared tap by tap as
they arrive against the first run's digests (and its arrays, while they fit
in ``keep_bytes``, for the size of the difference), so memory stays bounded.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import numpy as np

from backends.common.taps import TapSpec, pipeline_taps

from .cases import Case
from .engines import to_numpy

KEEP_BYTES = 256 << 20  # keep the first run's arrays below this total, for max |difference|


@dataclasses.dataclass(frozen=True)
class RepeatDifference:
    """Tap ``tap`` of run ``run`` (1-based, > 1) is not bitwise identical to run 1's."""

    tap: str
    run: int
    elements: int | None = None  # elements that differ (None: only digests were kept)
    max_abs_difference: float | None = None
    note: str = ""

    def describe(self) -> str:
        size = ""
        if self.elements is not None:
            size = f": {self.elements} elements differ, max |difference| {self.max_abs_difference:.3g}"
        return f"{self.tap}: run {self.run} is not bitwise identical to run 1{size}{self.note}"


def _digest(array: np.ndarray) -> str:
    array = np.ascontiguousarray(array)
    digest = hashlib.sha256(f"{array.dtype.str}:{array.shape}:".encode())
    digest.update(array.tobytes())
    return digest.hexdigest()


def _difference(first: np.ndarray, again: np.ndarray) -> tuple[int | None, float | None]:
    if first.shape != again.shape or first.dtype != again.dtype:
        return None, None
    def as_bytes(array: np.ndarray) -> np.ndarray:  # one row of bytes per element
        return np.ascontiguousarray(array).reshape(-1).view(np.uint8).reshape(array.size, -1)

    elements = int((as_bytes(first) != as_bytes(again)).any(axis=1).sum())
    with np.errstate(invalid="ignore"):
        gap = np.abs(first.astype(np.complex128) - again.astype(np.complex128))
    return elements, float(np.nanmax(gap)) if gap.size and not np.isnan(gap).all() else float("nan")


def _tap_bytes(case: Case) -> int:
    total = 0
    for spec in pipeline_taps(case.pipeline, case.config):
        shape = [dim or 1 for dim in spec.shape(case.config, case.batch)]
        total += int(np.prod(shape, dtype=np.int64)) * spec.dtype(case.config).itemsize
    return total


def repeat_check(case: Case, candidate: Any, runs: int = 2, keep_bytes: int = KEEP_BYTES,
                 guard: Any = None) -> list[RepeatDifference]:
    """Run ``candidate`` ``runs`` times on ``case`` (propagated); every tap that differs from run 1, per run.

    A tap delivered in one run and not in another is reported too. An empty
    list means every run agreed with the first, bit for bit. ``guard`` (a ``parity.guard.Guard``) runs
    the candidate's calls, timed, so a run that raises or hangs is an ``AdapterFault``, not a crash.
    """
    def run_pipeline(sink):
        def delivered(spec: TapSpec, value: Any) -> None:
            if guard is not None:
                guard.tick()
            sink(spec, to_numpy(value))

        arguments = (case.pipeline, case.config, case.inputs, case.weights)
        if guard is None:
            return candidate.run_pipeline(*arguments, sink=delivered)
        return guard.call("run_pipeline() (repeat check)", candidate.run_pipeline, *arguments, sink=delivered)

    if runs < 2:
        raise ValueError(f"a repeat check needs at least 2 runs, got {runs}")
    keep = _tap_bytes(case) <= keep_bytes
    digests: dict[str, str] = {}
    arrays: dict[str, np.ndarray] = {}

    def first_sink(spec: TapSpec, value: np.ndarray) -> None:
        digests[spec.name] = _digest(value)
        if keep:
            arrays[spec.name] = np.array(value, copy=True)

    run_pipeline(first_sink)
    found: list[RepeatDifference] = []
    for run in range(2, runs + 1):
        seen: set[str] = set()

        def again_sink(spec: TapSpec, value: np.ndarray, run: int = run, seen: set[str] = seen) -> None:
            seen.add(spec.name)
            if spec.name not in digests:
                found.append(RepeatDifference(spec.name, run, note=" (run 1 did not deliver this tap)"))
            elif _digest(value) != digests[spec.name]:
                elements, gap = _difference(arrays[spec.name], value) if keep else (None, None)
                found.append(RepeatDifference(spec.name, run, elements, gap))

        run_pipeline(again_sink)
        found += [RepeatDifference(name, run, note=" (this run did not deliver the tap)")
                  for name in digests if name not in seen]
    return found


def summary_lines(case: Case, found: list[RepeatDifference], runs: int, fault: str | None = None) -> list[str]:
    if fault is not None:
        return [f"repeat check: a repeated candidate run of {case.name} did not finish: {fault}"]
    if not found:
        return [f"repeat check: {runs} candidate runs of {case.name}'s whole pipeline (propagated) are bitwise "
                "identical, tap by tap (stages run alone in isolated mode are not repeated)"]
    return [f"repeat check: NONDETERMINISTIC candidate, {len(found)} tap run(s) of {case.name} differ "
            f"between {runs} runs on the same inputs"] + [f"  {difference.describe()}" for difference in found]


def judge_repeats(report: Any, found: list[RepeatDifference], lines: list[str], fault: str | None = None,
                  registry: list[TapSpec] | None = None) -> None:
    """The repeat check's findings in the report's verdict: every tap that is not bitwise identical between runs
    fails in each mode it was judged in (its stage is not deterministic), a repeated run that did not finish fails
    the ``repeat`` audit; the first divergence is found again."""
    from .divergence import first_divergence
    from .results import Audit

    report.notes.extend(lines)
    differing: dict[str, str] = {}
    for difference in found:
        differing.setdefault(difference.tap, difference.describe())
    marked = set()
    for tap in report.taps:
        for result in tap.modes.values() if tap.name in differing else ():
            if result.error is None and result.metrics is not None:
                result.error = f"not bitwise identical between candidate runs on the same inputs: {differing[tap.name]}"
                result.error_kind = "nondeterministic"
                marked.add(tap.name)
    unmarked = [differing[name] for name in differing if name not in marked]  # not judged here: still no pass
    if fault is not None or unmarked:
        report.audits.append(Audit("repeat", False, [lines[0]] + unmarked if fault is None else [lines[0]]))
    report.first_divergence = first_divergence(report.taps, report.audits, report.stopped, registry)
