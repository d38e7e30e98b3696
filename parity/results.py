"""Typed results of a parity run, rendered by the CLI, reports and pytest plugin.

``report.json`` is ``RunReport.to_dict()``; its schema is documented in
``docs/report-schema.md`` and versioned by ``SCHEMA_VERSION``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from .metrics import TapMetrics
from .tolerances import AppliedTolerance

SCHEMA_NAME = "ptycho-parity/report"
SCHEMA_VERSION = 1
MODES = ("propagated", "isolated")


def _finite_or_text(value: float | None) -> float | str | None:
    if value is None or math.isfinite(value):
        return value
    return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")


@dataclasses.dataclass
class ModeResult:
    """One tap judged in one mode: metrics against a tolerance, or the error a stage raised."""

    mode: str
    tolerance: AppliedTolerance | None
    metrics: TapMetrics | None = None
    error: str | None = None  # the candidate (or reference) stage raised
    skipped: str | None = None  # why this mode has no result (not reached, cannot isolate)
    diagnoses: list = dataclasses.field(default_factory=list)  # parity.diagnosis.Diagnosis, best first (issue #9)

    @property
    def passed(self) -> bool | None:
        if self.error is not None:
            return False
        if self.metrics is None:
            return None
        return self.metrics.passed

    @property
    def rel_error(self) -> float | None:
        return None if self.metrics is None else self.metrics.max_rel_to_peak

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "passed": self.passed,
                "tolerance": None if self.tolerance is None else self.tolerance.to_dict(),
                "metrics": None if self.metrics is None else self.metrics.to_dict(),
                "error": self.error, "skipped": self.skipped,
                "diagnoses": [diagnosis.to_dict() for diagnosis in self.diagnoses]}


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

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "stage": self.stage, "inputs": self.inputs, "layout": self.layout,
                "kind": self.kind, "shape": self.shape, "dtype": self.dtype, "passed": self.passed,
                "amplification": _finite_or_text(self.amplification),
                "modes": {mode: result.to_dict() for mode, result in self.modes.items()}}


@dataclasses.dataclass
class Divergence:
    """The first tap, in stage order, that fails (isolated mode first, else propagated)."""

    tap: str | None
    mode: str  # "isolated", "propagated", "config", "weights"
    messages: list[str]
    inherited: bool = False  # fails propagated only: upstream error grew past tolerance here

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

    @property
    def passed(self) -> bool:
        """Every audit passed and every tap was judged and passed (nothing judged is no pass)."""
        return (all(audit.passed for audit in self.audits) and bool(self.taps)
                and all(tap.passed is True for tap in self.taps))

    def tap(self, name: str) -> TapResult:
        for result in self.taps:
            if result.name == name:
                return result
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA_NAME, "schema_version": SCHEMA_VERSION,
            "case": self.case, "pipeline": self.pipeline, "config": self.config,
            "reference": self.reference, "candidate": self.candidate, "device": self.device,
            "modes": self.modes, "passed": self.passed,
            "first_divergence": None if self.first_divergence is None else self.first_divergence.to_dict(),
            "audits": [audit.to_dict() for audit in self.audits],
            "taps": [tap.to_dict() for tap in self.taps],
            "provenance": self.provenance, "timing": self.timing, "notes": self.notes,
        }
