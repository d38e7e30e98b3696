"""Typed results of a parity run, rendered by the CLI, reports and pytest plugin.

``report.json`` is ``RunReport.to_dict()``; its schema is documented in
``docs/report-schema.md`` and versioned by ``SCHEMA_VERSION``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

from .jsonable import to_jsonable
from .metrics import TapMetrics
from .tolerances import AppliedTolerance

SCHEMA_NAME = "ptycho-parity/report"
SCHEMA_VERSION = 2  # 2: report.html + evidence files; metrics.breakdown, diagnoses, status/reason
MODES = ("propagated", "isolated")


def _finite_or_text(value: float | None) -> float | str | None:
    if value is None or math.isfinite(value):
        return value
    return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")


# Why a mode has no metrics (``ModeResult.status`` besides "passed" / "failed" / "error").
NOT_PROVIDED = "not_provided"  # one side says it does not compute this tap, and why: not compared
NOT_DECLARED = "not_declared"  # the candidate does not compute it and says nothing: not judged (no pass)
NOT_COMPARABLE = "not_comparable"  # a knob it depends on is resolved differently: the run fails
NOT_REACHED = "not_reached"  # an earlier stage failed or the run stopped
NOT_RUN = "not_run"  # this mode cannot run it (isolated: the reference lacks an input it reads)


# what a table cell says for a mode whose error has this kind (anything else: "raised")
ERROR_WORDS = {"in_place": "in place", "timeout": "timeout", "bad_output": "junk", "missing": "missing", "exit": "exit",
               "nondeterministic": "nondet.", "setup": "not set up"}


def error_word(error_kind: str | None) -> str:
    return ERROR_WORDS.get(error_kind or "", "raised")


@dataclasses.dataclass
class ModeResult:
    """One tap judged in one mode: metrics against a tolerance, the error a stage raised, or why neither."""

    mode: str
    tolerance: AppliedTolerance | None
    metrics: TapMetrics | None = None
    error: str | None = None  # the candidate stage raised, hung, returned junk or changed an input
    skipped: str | None = None  # why this mode has no result, in plain words
    skip_kind: str | None = None  # NOT_PROVIDED, NOT_DECLARED, NOT_COMPARABLE, NOT_REACHED, NOT_RUN
    error_kind: str | None = None  # "raised", "exit", "interrupt", "timeout", "in_place", "bad_output", "missing",
    #                                "nondeterministic" (--repeat: not bitwise identical between candidate runs),
    #                                "setup" (the candidate could not be set up: no stage of it ran)
    note: str | None = None  # e.g. "isolated inputs equal the propagated ones: result shared"
    diagnoses: list = dataclasses.field(default_factory=list)

    @property
    def passed(self) -> bool | None:
        if self.error is not None:
            return False
        if self.metrics is None:
            return None
        return self.metrics.passed

    @property
    def status(self) -> str:
        if self.error is not None:
            return "error"
        if self.metrics is not None:
            return "passed" if self.metrics.passed else "failed"
        return self.skip_kind or "skipped"

    @property
    def rel_error(self) -> float | None:
        return None if self.metrics is None else self.metrics.max_rel_to_peak

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "passed": self.passed, "status": self.status,
                "tolerance": None if self.tolerance is None else self.tolerance.to_dict(),
                "metrics": None if self.metrics is None else self.metrics.to_dict(),
                "error": self.error, "error_kind": self.error_kind, "skipped": self.skipped,
                "skip_kind": self.skip_kind, "note": self.note,
                "diagnoses": [to_jsonable(diagnosis) for diagnosis in self.diagnoses]}


@dataclasses.dataclass
class TapResult:
    name: str
    stage: str | None
    inputs: list[str]
    layout: str
    kind: str
    shape: list[int | None]
    dtype: str
    modes: dict[str, ModeResult] = dataclasses.field(default_factory=dict)
    amplification: float | None = None  # propagated error / max propagated error of its inputs

    @property
    def passed(self) -> bool | None:
        """True when judged in at least one mode and passed in all; None when never judged."""
        verdicts = [result.passed for result in self.modes.values() if result.passed is not None]
        return all(verdicts) if verdicts else None

    @property
    def status(self) -> str:
        """passed, failed, not_compared (a side does not provide it), not_comparable, or unjudged."""
        verdict = self.passed
        if verdict is not None:
            return "passed" if verdict else "failed"
        kinds = {result.skip_kind for result in self.modes.values()}
        if NOT_COMPARABLE in kinds:
            return NOT_COMPARABLE
        if NOT_PROVIDED in kinds:
            return "not_compared"
        return "unjudged"

    @property
    def reason(self) -> str | None:
        """Why the tap has no verdict (the first mode's reason), else None."""
        if self.passed is not None:
            return None
        return next((result.skipped for result in self.modes.values() if result.skipped), None)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "stage": self.stage, "inputs": self.inputs, "layout": self.layout,
                "kind": self.kind, "shape": self.shape, "dtype": self.dtype, "passed": self.passed,
                "status": self.status, "reason": self.reason,
                "amplification": _finite_or_text(self.amplification),
                "modes": {mode: result.to_dict() for mode, result in self.modes.items()}}


def accumulated_words(unjudged_upstream: Sequence[str]) -> str:
    """What an inherited divergence says of the stages before it (``Divergence.unjudged_upstream``)."""
    if not unjudged_upstream:
        return "every stage passes in isolation: the error accumulated across stages"
    verb = "was" if len(unjudged_upstream) == 1 else "were"
    return (f"every stage judged in isolation passes, but {', '.join(unjudged_upstream)} before it "
            f"{verb} not (not compared, not provided or not isolable): the fault may be there")


@dataclasses.dataclass
class Divergence:
    """The first tap, in stage order, that fails (isolated mode first, else propagated)."""

    tap: str | None
    mode: str  # "isolated", "propagated", "config", "weights", "reference", "unjudged", "interrupted"
    messages: list[str]
    inherited: bool = False  # fails propagated only: upstream error grew past tolerance here
    kind: str = "stage"  # "stage", "in_place", "inherited", "audit", "unjudged", "stopped"
    unjudged_upstream: list[str] = dataclasses.field(default_factory=list)  # inherited: earlier stages not judged alone

    def accumulated_words(self) -> str:
        return accumulated_words(self.unjudged_upstream)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def headline(self) -> str:
        where = f"{self.tap} ({self.mode})" if self.tap else self.mode
        first = self.messages[0] if self.messages else ""
        return f"first divergence: {where}: {first}"


@dataclasses.dataclass
class Audit:
    """Checks made before any tensor is compared."""

    name: str  # "config" or "weights"
    passed: bool
    messages: list[str] = dataclasses.field(default_factory=list)
    details: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class RunReport:
    case: dict[str, Any]
    pipeline: str
    config: dict[str, Any]
    reference: dict[str, Any]
    candidate: dict[str, Any]
    device: str
    modes: list[str]
    audits: list[Audit]
    taps: list[TapResult]
    first_divergence: Divergence | None
    provenance: dict[str, Any]
    timing: dict[str, float]
    notes: list[str] = dataclasses.field(default_factory=list)
    log: dict[str, Any] = dataclasses.field(default_factory=dict)  # adapter output: path, bytes
    stopped: str | None = None  # why the run ended early (interrupted, an adapter hung), if it did
    stop_kind: str | None = None  # "reference" (it failed: exit 3), "interrupted", "candidate" (it hung)

    @property
    def passed(self) -> bool:
        """Every audit passed, nothing stopped the run, at least one tap was judged and every tap passed
        or is not compared because a side does not provide it (nothing judged is no pass)."""
        statuses = [tap.status for tap in self.taps]
        return (self.stopped is None and all(audit.passed for audit in self.audits) and "passed" in statuses
                and all(status in ("passed", "not_compared") for status in statuses))

    def counts(self) -> dict[str, int]:
        """How many taps have each status."""
        found: dict[str, int] = {}
        for tap in self.taps:
            found[tap.status] = found.get(tap.status, 0) + 1
        return found

    def tap(self, name: str) -> TapResult:
        for result in self.taps:
            if result.name == name:
                return result
        raise KeyError(name)

    @property
    def diagnoses(self) -> list:
        """The diagnoses of the first divergence (its tap in its mode), best first; [] when there is none."""
        first = self.first_divergence
        if first is None or first.tap is None:
            return []
        try:
            result = self.tap(first.tap).modes.get(first.mode)
        except KeyError:
            return []
        return list(result.diagnoses) if result is not None else []

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA_NAME, "schema_version": SCHEMA_VERSION,
            "case": self.case, "pipeline": self.pipeline, "config": self.config,
            "reference": self.reference, "candidate": self.candidate, "device": self.device,
            "modes": self.modes, "passed": self.passed,
            "first_divergence": None if self.first_divergence is None else self.first_divergence.to_dict(),
            "audits": [audit.to_dict() for audit in self.audits],
            "taps": [tap.to_dict() for tap in self.taps],
            "counts": self.counts(), "stopped": self.stopped, "stop_kind": self.stop_kind, "log": self.log,
            "provenance": self.provenance, "timing": self.timing, "notes": self.notes,
        }
