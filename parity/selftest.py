"""``parity selftest``: prove on every run that real port bugs are caught, put in the right place and named.

For each fault of ``parity.faults`` the case runs through the REAL reference (TensorFlow by default)
and the faulted Torch candidate with ``parity.runner.run_case``, and three things must hold:
detected (the report fails), localized (the first divergence is the injected stage's tap, in
isolated mode) and diagnosed (an expected kind is among that tap's diagnoses; a fault no hypothesis
applies to must get "unexplained", never a guess). Every equivalent refactor must pass, and so must
the unmodified candidate on every built-in case over ``seeds`` seeds (a failure is a false positive).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import time
from collections.abc import Callable, Sequence
from typing import Any

from .cases import Case
from .builtin_cases import BUILTIN_CASES, builtin_case
from .diagnosis import UNEXPLAINED
from .errors import ParityInputError
from .faults import FAULTS, REFACTORS, Fault, Refactor
from .results import RunReport
from .runner import run_case
from .tolerances import ToleranceTable


@dataclasses.dataclass
class SelftestRow:
    """One fault, refactor or clean run, and what the harness made of it."""

    kind: str  # "fault", "refactor" or "clean"
    id: str
    case: str
    covers: str = ""
    tap: str | None = None  # where the fault must be localized
    found_tap: str | None = None  # the report's first divergence
    found_mode: str | None = None
    detected: bool | None = None
    localized: bool | None = None
    expected: tuple[str, ...] | None = None  # diagnosis kinds that name the fault; None: "unexplained"
    diagnoses: list[str] = dataclasses.field(default_factory=list)  # kinds at the fault's tap
    diagnosed: bool | None = None
    passed: bool = False
    pending: bool = False  # a fault whose check the runner cannot make yet (see faults.RUNNER_KINDS)
    note: str = ""
    seconds: float = 0.0

    @property
    def status(self) -> str:
        if self.passed:
            return "ok"
        return "pending" if self.pending else "FAIL"

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "expected": None if self.expected is None else list(self.expected),
                "status": self.status}


@dataclasses.dataclass
class SelftestResult:
    rows: list[SelftestRow]
    seeds: int

    @property
    def passed(self) -> bool:
        return all(row.passed or row.pending for row in self.rows)

    def failures(self) -> list[SelftestRow]:
        return [row for row in self.rows if not (row.passed or row.pending)]

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "seeds": self.seeds, "rows": [row.to_dict() for row in self.rows]}

    def summary_lines(self) -> list[str]:
        counts = {kind: [row for row in self.rows if row.kind == kind] for kind in ("fault", "refactor", "clean")}
        faults = counts["fault"]
        lines = [f"faults: {sum(r.detected is True for r in faults)}/{len(faults)} detected, "
                 f"{sum(r.localized is True for r in faults)}/{len(faults)} localized, "
                 f"{sum(r.diagnosed is True for r in faults)}/{len(faults)} diagnosed"
                 + (f" ({sum(r.pending for r in faults)} pending runner support)" if any(r.pending for r in faults)
                    else ""),
                 f"refactors: {sum(r.passed for r in counts['refactor'])}/{len(counts['refactor'])} pass",
                 f"clean candidate: {sum(not r.passed for r in counts['clean'])} false positives in "
                 f"{len(counts['clean'])} runs ({self.seeds} seed(s) per built-in case)" if counts["clean"]
                 else "clean candidate: not run"]
        lines += [f"{row.status}: {row.kind} {row.id} on {row.case}: {row.note}" for row in self.rows
                  if not row.passed]
        lines.append("SELFTEST PASS" if self.passed else "SELFTEST FAIL")
        return lines

    def table(self):
        from rich import box
        from rich.table import Table

        table = Table(title="parity selftest", box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False)
        for column in ("fault", "tap", "detected", "localized", "expected", "diagnoses", ""):
            table.add_column(column, no_wrap=column != "diagnoses")

        def mark(value: bool | None) -> str:
            return {True: "yes", False: "NO", None: "-"}[value]

        for row in self.rows:
            if row.kind == "fault":
                expected = "unexplained" if row.expected is None else "|".join(row.expected)
                table.add_row(row.id, row.tap or "-", mark(row.detected), mark(row.localized), expected,
                              ", ".join(row.diagnoses) or "-", row.status)
            elif row.kind == "refactor" or not row.passed:
                what = f"{row.kind}: {row.id}"
                table.add_row(what, row.found_tap or "-", "-", "-", "pass", row.note or "passes", row.status)
        return table


def _diagnosis_kinds(report: RunReport, tap: str, modes: Sequence[str]) -> list[str]:
    try:
        result = report.tap(tap)
    except KeyError:
        return []
    kinds = []
    for mode in modes:
        mode_result = result.modes.get(mode)
        kinds += [d.kind for d in getattr(mode_result, "diagnoses", None) or [] if d.kind not in kinds]
    return kinds


def check_fault(fault: Fault, reference, tolerances: ToleranceTable) -> SelftestRow:
    case = fault.case.build()
    tap = fault.tap(case)
    row = SelftestRow("fault", fault.id, fault.case.label(), fault.covers, tap=tap, expected=fault.expect,
                      pending=fault.pending)
    started = time.perf_counter()
    report = run_case(case, reference, fault.candidate(), tolerances)
    row.seconds = time.perf_counter() - started
    divergence = report.first_divergence
    row.found_tap, row.found_mode = (divergence.tap, divergence.mode) if divergence else (None, None)
    row.detected = not report.passed
    row.localized = row.found_tap == tap and (row.found_mode == "isolated" or fault.found_by_runner)
    row.diagnoses = _diagnosis_kinds(report, tap, ("isolated", "propagated") if fault.found_by_runner else ("isolated",))
    if fault.expect is None:
        row.diagnosed = row.diagnoses == [UNEXPLAINED]
    else:
        row.diagnosed = bool(set(fault.expect) & set(row.diagnoses))
    row.passed = bool(row.detected and row.localized and row.diagnosed)
    if not row.passed:
        where = f"{row.found_tap} ({row.found_mode})" if divergence else "nothing"
        row.note = (f"first divergence {where}, expected {tap} (isolated); diagnoses at {tap}: "
                    f"{row.diagnoses or 'none'}, expected {fault.expect or UNEXPLAINED}")
    return row


def check_refactor(refactor: Refactor, reference, tolerances: ToleranceTable) -> SelftestRow:
    case = refactor.case.build()
    row = SelftestRow("refactor", refactor.id, refactor.case.label(), refactor.description)
    started = time.perf_counter()
    report = run_case(case, reference, refactor.candidate(), tolerances)
    row.seconds = time.perf_counter() - started
    row.passed = report.passed
    if report.first_divergence is not None:
        row.found_tap = report.first_divergence.tap
        row.note = report.first_divergence.headline()
    return row


def check_clean(case: Case, seed: int, reference, candidate, tolerances: ToleranceTable) -> SelftestRow:
    changes: dict[str, Any] = {"seed": seed}
    if case.weights_seed is not None:
        changes["weights_seed"] = seed
    seeded = dataclasses.replace(case, **changes)
    row = SelftestRow("clean", f"seed {seed}", case.name)
    started = time.perf_counter()
    report = run_case(seeded, reference, candidate, tolerances)
    row.seconds = time.perf_counter() - started
    row.passed = report.passed
    if report.first_divergence is not None:
        row.found_tap = report.first_divergence.tap
        row.note = "false positive: " + report.first_divergence.headline()
    return row


def _chosen(items, patterns: Sequence[str] | None):
    if not patterns:
        return list(items)
    return [item for item in items if any(fnmatch.fnmatchcase(item.id, pattern) for pattern in patterns)]


def run_selftest(*, seeds: int = 20, only: Sequence[str] | None = None, cases: Sequence[str] | None = None,
                 reference=None, tolerances: ToleranceTable | None = None, clean: bool = True,
                 progress: Callable[[SelftestRow], None] | None = None) -> SelftestResult:
    """Run the fault catalog, the refactors and the clean candidate over ``seeds`` seeds per built-in case.

    ``only`` (globs) restricts faults and refactors by id; ``cases`` the built-in cases of the clean
    runs; ``clean=False`` skips them.
    """
    faults, refactors = _chosen(FAULTS, only), _chosen(REFACTORS, only)
    if only and not (faults or refactors):  # a bad pattern is refused before any framework loads
        raise ParityInputError(f"--only {list(only)}: no fault or refactor id matches; ids: "
                               f"{[item.id for item in (*FAULTS, *REFACTORS)]}")
    if reference is None:  # the TF reference, loaded as --reference tf is: without TensorFlow, exit 2 saying so
        from .adapters import load_adapter

        reference = load_adapter("tf", "cpu")
    if tolerances is None:
        from .workflows import tolerance_table

        tolerances = tolerance_table(None)
    rows: list[SelftestRow] = []

    def record(row: SelftestRow) -> None:
        rows.append(row)
        if progress is not None:
            progress(row)

    for fault in faults:
        record(check_fault(fault, reference, tolerances))
    for refactor in refactors:
        record(check_refactor(refactor, reference, tolerances))
    if clean:
        from backends.torch import TorchBackend

        candidate = TorchBackend()
        for name in cases or list(BUILTIN_CASES):
            case = builtin_case(name)
            for offset in range(seeds):
                record(check_clean(case, case.seed + offset, reference, candidate, tolerances))
    return SelftestResult(rows, seeds)
