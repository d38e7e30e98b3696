"""Rendering a ``RunReport``: ``report.json`` on disk and a stage-ordered terminal table."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from .results import ModeResult, RunReport


def write_json_atomic(path: str | Path, document: Any) -> Path:
    """Write JSON through a temporary file and a rename: never a half-written report."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.chmod(temporary, 0o644)
    try:
        with os.fdopen(handle, "w") as stream:
            json.dump(document, stream, indent=2, allow_nan=False)
            stream.write("\n")
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    return path


def write_report(report: RunReport, directory: str | Path) -> Path:
    return write_json_atomic(Path(directory) / "report.json", report.to_dict())


def _error_cell(result: ModeResult | None) -> Text:
    if result is None:
        return Text("-", style="dim")
    if result.error is not None:
        return Text("raised", style="bold red")
    if result.metrics is None:
        return Text("n/a", style="dim")
    metrics = result.metrics
    if not metrics.shape_match:
        return Text("shape", style="bold red")
    value = metrics.max_rel_to_peak
    text = f"{value:.1e}" if value == value else "nan"
    if not metrics.dtype_match:
        text += " dtype"
    return Text(text, style="green" if metrics.passed else "bold red")


def _criteria_text(result: ModeResult | None) -> str:
    if result is None or result.tolerance is None:
        return "-"
    criteria = result.tolerance.criteria.to_dict()
    parts = []
    for key, label in (("max_rel_to_peak", "rel"), ("atol", "atol"), ("rtol", "rtol"), ("max_abs", "abs"),
                       ("min_cosine", "cos"), ("max_phase_error", "phase")):
        if criteria.get(key) is not None:
            parts.append(f"{label}≤{criteria[key]:.0e}" if key != "min_cosine" else f"cos≥{criteria[key]}")
    return " ".join(parts) or "-"


def _tolerance_text(propagated: ModeResult | None, isolated: ModeResult | None) -> str:
    texts = [_criteria_text(propagated), _criteria_text(isolated)]
    if texts[0] == texts[1] or "-" in texts:
        return next((text for text in texts if text != "-"), "-")
    return f"{texts[0]} | {texts[1]}"


def render_table(report: RunReport) -> Table:
    title = (f"{report.case['name']}  [{report.pipeline}, {report.config['dtype']}, "
             f"{report.reference.get('name')} vs {report.candidate.get('name')} on {report.device}]")
    table = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False)
    table.add_column("#", justify="right", style="dim")
    table.add_column("tap", no_wrap=True)
    table.add_column("shape", style="dim", no_wrap=True)
    table.add_column("propagated", justify="right")
    table.add_column("isolated", justify="right")
    table.add_column("amplif.", justify="right", style="dim")
    table.add_column("tolerance (prop. | isol.)", style="dim", no_wrap=True)
    table.add_column("", justify="center")
    divergent = report.first_divergence.tap if report.first_divergence else None
    for index, tap in enumerate(report.taps):
        propagated, isolated = tap.modes.get("propagated"), tap.modes.get("isolated")
        amplification = "" if tap.amplification is None else f"{tap.amplification:.2g}x"
        status = {True: Text("ok", style="green"), False: Text("FAIL", style="bold red"),
                  None: Text("-", style="dim")}[tap.passed]
        name = Text(tap.name, style="bold red" if tap.name == divergent else "")
        shape = "x".join(str(dim) for dim in tap.shape) or "()"
        table.add_row(str(index), name, shape, _error_cell(propagated), _error_cell(isolated), amplification,
                      _tolerance_text(propagated, isolated), status)
    return table


def _diagnosis_lines(report: RunReport) -> list[str]:
    """One line per diagnosis of the first divergence (issue #9), in the mode it diverged in."""
    divergence = report.first_divergence
    if divergence is None or divergence.tap is None:
        return []
    try:
        result = report.tap(divergence.tap).modes.get(divergence.mode)
    except KeyError:
        return []
    lines = []
    for diagnosis in getattr(result, "diagnoses", None) or []:
        residual = diagnosis.residual
        left = f" [residual {residual:.1e}]" if residual == residual else ""
        lines.append(f"{diagnosis.kind}: {diagnosis.summary}{left}")
    return lines


def summary_lines(report: RunReport) -> list[str]:
    lines = [f"{audit.name} audit: {message}" for audit in report.audits if not audit.passed
             for message in audit.messages]
    if report.first_divergence is not None:
        lines.append(report.first_divergence.headline())
        lines += [f"  {message}" for message in report.first_divergence.messages[1:4]]
        if report.first_divergence.inherited:
            lines.append("  (every stage passes in isolation: the error accumulated across stages)")
        lines += [f"  diagnosis: {line}" for line in _diagnosis_lines(report)]
    verdict = "PASS" if report.passed else "FAIL"
    unjudged = sum(tap.passed is None for tap in report.taps)
    judged = f", {unjudged} not judged" if unjudged else ""
    lines.append(f"{verdict}: {sum(tap.passed is True for tap in report.taps)}/{len(report.taps)} taps within "
                 f"tolerance{judged} (max |a-b| / max |a| shown)")
    return lines


def make_console() -> Console:
    """A console at least 120 columns wide, so tap names are never cut in logs."""
    width = Console().width
    return Console(width=max(width, 120))


def print_report(report: RunReport, console: Console | None = None) -> None:
    console = console or make_console()
    console.print(render_table(report))
    for line in summary_lines(report):
        style = "green" if line.startswith("PASS") else ("red" if line.startswith(("FAIL", "first")) else "")
        console.print(line, style=style, highlight=False)
