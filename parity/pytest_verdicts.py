"""Judging a run inside pytest: one tap in one mode, or a whole report, with readable failure messages.

Everything is read from the ``report.json`` document (``docs/report-schema.md``),
so a verdict is the same whether this process or another xdist worker ran
the case. The first line of a failure is what pytest's short summary shows:
it names the case, the tap, the mode and the failing criterion, and the
first divergence of a case says ``FIRST DIVERGENCE``.
"""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path
from typing import Any

import pytest

from .metrics import Criteria
from .pytest_runs import ParityOutcome, diagnoses_of, diagnosis_text, read_document
from .pytest_settings import TapParam

PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"
AUDITS = ("config", "weights", "reference")
DECLARED = ("cannot isolate", "not provided", "not_provided", "not isolatable")  # limits an adapter states


def _number(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if isinstance(value, list):  # complex as [re, im]
        return f"{value[0]:.6g}{value[1]:+.6g}j"
    if isinstance(value, bool) or isinstance(value, int):
        return str(value)
    return f"{value:.{digits}e}"


def _criteria(tolerance: dict[str, Any] | None) -> str:
    if not tolerance:
        return "none"
    try:
        fields = Criteria.from_dict(tolerance["criteria"]).set_fields()
    except (KeyError, TypeError, ValueError):
        fields = tolerance.get("criteria", {})
    text = ", ".join(f"{key} <= {value:g}" if isinstance(value, float) else f"{key} = {value}"
                     for key, value in fields.items())
    where = tolerance.get("source", "")
    note = tolerance.get("note", "")
    return f"{text or 'exact'} (from {where}{': ' + note if note else ''})"


def _metrics_lines(metrics: dict[str, Any]) -> list[str]:
    lines = [f"max|a-b|/max|a| = {_number(metrics.get('max_rel_to_peak'))}, max|a-b| = "
             f"{_number(metrics.get('max_abs_error'))}, mean|a-b| = {_number(metrics.get('mean_abs_error'))}, "
             f"rms = {_number(metrics.get('rms_error'))}, cosine = {_number(metrics.get('cosine_similarity'), 9)}"]
    if metrics.get("worst_index") is not None:
        lines.append(f"worst at {tuple(metrics['worst_index'])}: reference {_number(metrics.get('worst_reference'), 6)}, "
                     f"candidate {_number(metrics.get('worst_candidate'), 6)}")
    if metrics.get("complex") and metrics.get("phase_max_abs_error") is not None:
        lines.append(f"magnitude max|a-b|/max|a| = {_number(metrics.get('magnitude_max_rel_to_peak'))}, "
                     f"phase max error = {_number(metrics.get('phase_max_abs_error'))} rad")
    lines.append(f"reference {metrics.get('reference_dtype')} {tuple(metrics.get('reference_shape') or ())}, "
                 f"candidate {metrics.get('candidate_dtype')} {tuple(metrics.get('candidate_shape') or ())}")
    if isinstance(metrics.get("breakdown"), dict):
        lines += _breakdown_lines(metrics["breakdown"])
    return lines


def _breakdown_lines(breakdown: dict[str, Any]) -> list[str]:
    """Where the error is (report schema v2 ``metrics.breakdown``), as words: never JSON cut mid-key."""
    def ranked(key: str, label: str) -> str | None:
        entries = [entry for entry in breakdown.get(key) or [] if isinstance(entry, dict)][:4]
        if not entries:
            return None
        return f"by {label}: " + ", ".join(f"{label} {entry.get(label)} {_number(entry.get('max_rel'))}"
                                           for entry in entries)

    lines = []
    worst = breakdown.get("worst") if isinstance(breakdown.get("worst"), dict) else {}
    place = ", ".join(f"{key} {worst[key]}" for key in ("sample", "channel") if worst.get(key) is not None)
    if place:
        lines.append(f"worst element in {place}")
    lines += [line for line in (ranked("by_sample", "sample"), ranked("by_channel", "channel")) if line]
    regions = breakdown.get("regions") if isinstance(breakdown.get("regions"), dict) else {}
    shown = [f"{name} {_number(value.get('max_rel'))}" for name, value in regions.items() if isinstance(value, dict)]
    if shown:
        width = breakdown.get("border_width")
        lines.append("max|a-b|/peak by region: " + ", ".join(shown)
                     + (f" (border: {width} px)" if isinstance(width, int) else ""))
    return lines


def _reason(result: dict[str, Any]) -> str:
    if result.get("error"):
        return f"the stage raised: {result['error']}"
    failures = (result.get("metrics") or {}).get("failures") or []
    if failures:
        return failures[0]
    return f"not judged: {result.get('skipped') or result.get('reason') or 'no result'}"


def _summary(result: dict[str, Any] | None) -> str:
    if result is None:
        return "not run"
    verdict = {True: "pass", False: "FAIL", None: "not judged"}[result.get("passed")]
    rel = (result.get("metrics") or {}).get("max_rel_to_peak")
    return f"{verdict}" + (f", max|a-b|/max|a| = {_number(rel)}" if rel is not None else "") + (
        f" ({result.get('skipped')})" if result.get("skipped") else "")


def first_divergence(outcome: ParityOutcome) -> str | None:
    """One line: where the case first diverges (None when it passed)."""
    if outcome.skip or outcome.document is None:
        return None
    divergence = outcome.document.get("first_divergence")
    if not divergence:
        return None
    where = f"{divergence['tap']} ({divergence['mode']})" if divergence.get("tap") else f"{divergence['mode']} audit"
    messages = divergence.get("messages") or [""]
    inherited = ""
    if divergence.get("inherited"):
        unseen = divergence.get("unjudged_upstream") or []
        inherited = (f" [inherited; not judged alone before it: {', '.join(unseen)}]" if unseen
                     else " [inherited: every stage passes alone]")
    return f"{where}{inherited}: {messages[0]}"


def _is_first(outcome: ParityOutcome, tap: str, mode: str) -> bool:
    divergence = (outcome.document or {}).get("first_divergence") or {}
    return divergence.get("tap") == tap and divergence.get("mode") in (mode, "unjudged")


def _diagnosis_text(item: Any) -> str:
    return diagnosis_text(item)


def _failure(outcome: ParityOutcome, tap: dict[str, Any], mode: str, result: dict[str, Any]) -> str:
    reason = _reason(result)
    if _is_first(outcome, tap["name"], mode):
        lines = [f"FIRST DIVERGENCE of {outcome.case} at {tap['name']} ({mode}): {reason}"]
    else:
        divergence = (outcome.document or {}).get("first_divergence") or {}
        where = f"{divergence.get('tap')} ({divergence.get('mode')})" if divergence.get("tap") else divergence.get("mode")
        lines = [f"{outcome.case}: {tap['name']} ({mode}) fails [first divergence: {where}]: {reason}"]
    document = outcome.document or {}
    lines.append(f"  case {outcome.case}, stage {tap.get('stage')}, reference {document.get('reference', {}).get('name')}"
                 f", candidate {document.get('candidate', {}).get('name')}, device {document.get('device')}")
    if result.get("metrics"):
        lines += [f"  {line}" for line in _metrics_lines(result["metrics"])]
        lines += [f"  also: {line}" for line in result["metrics"].get("failures", [])[1:]]
    lines.append(f"  tolerance: {_criteria(result.get('tolerance'))}")
    for other in ("propagated", "isolated"):
        if other != mode:
            lines.append(f"  {other} mode: {_summary(tap.get('modes', {}).get(other))}")
    if tap.get("amplification") is not None:
        lines.append(f"  amplification: {_number(tap['amplification'])} (propagated error over its inputs')")
    diagnoses = list(outcome.diagnoses.get(tap["name"], {}).get(mode, []))
    for item in (tap.get("diagnoses") or []) + (result.get("diagnoses") or []):
        text = item if isinstance(item, str) else _diagnosis_text(item)
        if text not in diagnoses:
            diagnoses.append(text)
    lines += [f"  diagnosis: {text}" for text in diagnoses]
    if not _is_first(outcome, tap["name"], mode):
        lines.append(f"  first divergence of the case: {first_divergence(outcome)}")
    lines.append(f"  report: {outcome.report_path}")
    return "\n".join(lines)


def tap_verdict(outcome: ParityOutcome, tap_name: str, mode: str, test: str | None = None) -> tuple[str, str]:
    """(passed | failed | skipped, message) for one tap in one mode (``test``: the asking test's id, so that a
    case that could not run at all is explained whole once, not once per tap)."""
    if outcome.skip:
        return SKIPPED, outcome.skip
    if outcome.error or outcome.document is None:
        if test is not None and outcome.error_said_by not in (None, test):
            headline = str(outcome.error).partition("\n")[0]
            return FAILED, (f"{outcome.label}: {headline[:200]}{' ...' if len(headline) > 200 else ''} (the whole "
                            f"message: {outcome.error_said_by})")
        if test is not None:
            outcome.error_said_by = test
        return FAILED, f"{outcome.label}: {outcome.error}"
    divergence = outcome.document.get("first_divergence") or {}
    if divergence.get("tap") is None and divergence.get("mode") in AUDITS:
        messages = "\n  ".join(divergence.get("messages") or [])
        return FAILED, (f"{outcome.case}: the {divergence['mode']} audit failed, no tensor was compared\n  {messages}"
                        f"\n  report: {outcome.report_path}")
    tap = outcome.tap(tap_name)
    if tap is None:
        return FAILED, f"{outcome.label}: the report has no tap {tap_name!r} (report: {outcome.report_path})"
    result = tap.get("modes", {}).get(mode)
    if result is None:
        reason = tap.get("reason") or f"the {mode} mode was not run"
        return (FAILED, f"{outcome.case}: {tap_name} ({mode}): {reason}") if tap.get("passed") is False else (
            SKIPPED, f"{outcome.case}: {tap_name} ({mode}): {reason}")
    if result.get("passed") is True:
        return PASSED, ""
    if result.get("passed") is None:
        reason = str(result.get("skipped") or result.get("reason") or tap.get("reason") or "")
        if any(marker in reason for marker in DECLARED):
            return SKIPPED, f"{outcome.case}: {tap_name} ({mode}): {reason}"
    return FAILED, _failure(outcome, tap, mode, result)


def _as_outcome(report: Any) -> ParityOutcome:
    if isinstance(report, ParityOutcome):
        return report
    if isinstance(report, (str, Path)):
        document = read_document(Path(report))
        path: Path | None = Path(report)
    elif isinstance(report, dict):
        document, path = report, None
    else:  # a live RunReport
        document, path = json.loads(json.dumps(report.to_dict())), None
    outcome = ParityOutcome(document["case"]["name"], document["reference"].get("name", "?"),
                            document["candidate"].get("name", "?"), document.get("device", "?"),
                            report_path=path, document=document)
    if not isinstance(report, (str, Path, dict)):
        outcome.report, outcome.diagnoses = report, diagnoses_of(report)
    return outcome


def assert_parity(report: Any, taps: list[str] | None = None, modes: tuple[str, ...] = ("propagated", "isolated"),
                  ) -> None:
    """Fail with a readable message unless parity holds (for ``taps`` / ``modes`` when given).

    ``report``: the ``parity_report`` / ``parity_run`` outcome, a ``RunReport``,
    a report.json document or its path. Skips when the run could not happen
    here (e.g. the reference needs TensorFlow and it is not installed).
    """
    __tracebackhide__ = True
    outcome = _as_outcome(report)
    if outcome.skip:
        pytest.skip(outcome.skip)
    present = [tap["name"] for tap in (outcome.document or {}).get("taps", [])]
    failures = []
    names = present if taps is None else []
    for wanted in [taps] if isinstance(taps, str) else (taps or []):  # names or fnmatch globs, as in --taps
        matched = fnmatch.filter(present, wanted) if any(char in wanted for char in "*?[") else [wanted]
        if not matched and outcome.document is not None and not outcome.skip:
            failures.append((True, f"{outcome.label}: no tap of the report matches {wanted!r} (its taps: "
                                   f"{', '.join(present[:12])}{', ...' if len(present) > 12 else ''})"))
        names += [name for name in matched if name not in names]
    for name in names:
        for mode in modes:
            status, message = tap_verdict(outcome, name, mode)
            if status == FAILED:
                failures.append((not _is_first(outcome, name, mode), message))
    if outcome.error:
        failures.append((False, f"{outcome.label}: {outcome.error}"))
    elif taps is None and not failures and not outcome.passed:  # an audit failed, or a tap was never judged
        failures.append((False, f"{outcome.label}: {first_divergence(outcome) or 'the run did not pass'}"
                                f"\n  report: {outcome.report_path}"))
    if not failures:
        return
    failures.sort(key=lambda item: item[0])  # the first divergence first
    first = failures[0][1]
    divergent = ((outcome.document or {}).get("first_divergence") or {}).get("tap")
    headline = first_divergence(outcome) if taps is None or divergent is None or divergent in names else None
    if headline is None:  # the first failure is the headline: said once, without the label twice
        headline, _, first = first.removeprefix(f"{outcome.label}: ").partition("\n")
    elif first.startswith("FIRST DIVERGENCE"):  # its first line repeats the headline
        first = first.partition("\n")[2]
    others = [message.splitlines()[0] for _, message in failures[1:]]
    raise AssertionError(f"parity fails for {outcome.label}: {headline}\n" + (f"{first}\n" if first else "")
                         + "".join(f"  - {line}\n" for line in others[:30])
                         + (f"  ... and {len(others) - 30} more\n" if len(others) > 30 else ""))


class TapCheck:
    """What a generated ``test_parity`` receives: one tap of one case in one mode, judged on ``check()``."""

    def __init__(self, param: TapParam, runs: Any, node: pytest.Item) -> None:
        self.param, self.runs, self.node = param, runs, node

    def check(self) -> None:
        __tracebackhide__ = True
        outcome = self.runs.outcome(self.param.case)
        status, message = tap_verdict(outcome, self.param.tap, self.param.mode, self.node.nodeid)
        self.node.user_properties += [
            ("parity_case", outcome.label), ("parity_report", str(outcome.report_path or "")),
            ("parity_first_divergence", first_divergence(outcome) or ""),
            ("parity_run", "skipped: " + outcome.skip if outcome.skip else
             ("error: " + outcome.error.splitlines()[0] if outcome.error else ("pass" if outcome.passed else "fail")))]
        if status == SKIPPED:
            pytest.skip(message)
        if status == FAILED:
            pytest.fail(message, pytrace=False)
