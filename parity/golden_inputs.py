"""A golden's stored inputs versus the same case's inputs regenerated on this machine.

A check always runs on the golden's inputs. Regenerating them here only tells
whether the case's input builder still builds what the golden holds: numpy's
float64 exp/sin/cos may round the last bit differently on another CPU, which
is not a change of the case. So the two are compared with the tolerance table
(the input's name as the tap, mode ``propagated``, the case's dtype and
pipeline, device class cpu, where inputs are built): identical says nothing,
within tolerance is a note in the report, beyond it is refused (exit 2)
naming the input, the difference and the tolerance.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .cases import Case
from .errors import CorruptGoldenError, ParityInputError
from .metrics import compare
from .tolerances import ToleranceTable

IDENTICAL, WITHIN, NOT_REGENERATED = "identical", "within tolerance", "not regenerated"


@dataclasses.dataclass
class InputDrift:
    """How the inputs regenerated here compare with the golden's (``report.reference.inputs``)."""

    status: str  # identical | within tolerance | not regenerated
    differences: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # one per differing input
    reason: str = ""  # why the inputs could not be regenerated

    def note(self) -> str | None:
        """One line for the report's notes; None when the inputs are identical."""
        if self.status == NOT_REGENERATED:
            return f"the case's inputs could not be regenerated here ({self.reason}); the golden's inputs were used"
        if self.status == IDENTICAL:
            return None
        worst, *others = sorted(self.differences, key=lambda row: -row["max_rel_to_peak"])
        also = "".join(f"; also '{row['input']}' {row['max_rel_to_peak']:.2g}" for row in others)
        return (f"inputs regenerated here differ from the golden's by {worst['max_rel_to_peak']:.2g} of peak "
                f"(input '{worst['input']}'{also}); the golden's inputs were used")

    def to_dict(self) -> dict[str, Any]:
        return {"source": "golden", "regenerated": self.status, "differences": self.differences,
                **({"reason": self.reason} if self.reason else {})}


def _regenerate(case: Case) -> dict[str, np.ndarray] | str:
    try:
        return {name: np.asarray(value) for name, value in case.inputs.items()}
    except (ParityInputError, OSError, ImportError) as error:  # e.g. fixtures/data or matplotlib missing here
        return f"{type(error).__name__}: {error}"


def judge_inputs(path: Path, case: Case, stored: Mapping[str, np.ndarray], tolerances: ToleranceTable) -> InputDrift:
    """Compare ``case``'s regenerated inputs with the golden's ``stored`` ones; raise beyond tolerance."""
    regenerated = _regenerate(case)
    if isinstance(regenerated, str):
        return InputDrift(NOT_REGENERATED, reason=regenerated)
    if set(regenerated) != set(stored):
        raise ParityInputError(f"{path}: the golden holds inputs {sorted(stored)}, the case's builder "
                               f"({case.builder_version}) now builds {sorted(regenerated)}; it changed without a "
                               f"version bump: bump it in parity/builtin_cases.py and re-record")
    differences = []
    for name in sorted(stored):
        mine, theirs = stored[name], regenerated[name]
        if mine.shape != theirs.shape or mine.dtype != theirs.dtype:
            raise ParityInputError(f"{path}: input {name!r}: the golden holds {mine.dtype} {mine.shape}, the case's "
                                   f"builder now builds {theirs.dtype} {theirs.shape}; bump the builder's version "
                                   f"in parity/builtin_cases.py and re-record")
        if mine.tobytes() == theirs.tobytes():
            continue
        if mine.dtype.kind in "fc" and not np.isfinite(mine).all():
            raise CorruptGoldenError(f"{path}: input {name!r}: the golden holds {int(np.size(mine) - np.isfinite(mine).sum())} "
                                     "NaN/Inf values, which the case's builder never makes; the file was changed "
                                     "after recording, re-record it")
        applied = tolerances.lookup(name, case.config.dtype, "cpu", "propagated", case.pipeline)
        metrics = compare(name, mine, theirs, applied.criteria)
        row = {"input": name, "max_abs_error": float(metrics.max_abs_error),
               "max_rel_to_peak": float(metrics.max_rel_to_peak), "tolerance": applied.criteria.set_fields(),
               "tolerance_source": applied.source}
        if not metrics.passed:
            raise ParityInputError(
                f"{path}: input {name!r} regenerated here differs from the golden's by max |a-b| = "
                f"{metrics.max_abs_error:.3g} ({metrics.max_rel_to_peak:.3g} of peak), beyond the tolerance "
                f"{applied.criteria.set_fields()} ({applied.source}): the input builder "
                f"{case.builder_version!r} changed without a version bump, or this machine computes it very "
                f"differently; bump its version in parity/builtin_cases.py and re-record")
        differences.append(row)
    return InputDrift(WITHIN if differences else IDENTICAL, differences)
