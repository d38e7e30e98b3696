"""Rendering a ``RunReport``: ``report.json`` (+ evidence, ``report.html``) on disk, terminal tables.

The HTML report, ``parity report`` and ``parity diff`` read the JSON document
(``report_document``), so a saved run renders exactly like a fresh one.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from .atomic_files import write_bytes_atomically
from .errors import ParityInputError
from .files import open_regular
from .jsonable import to_jsonable
from .results import SCHEMA_NAME, SCHEMA_VERSION, ModeResult, RunReport, error_word


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write a text file through a temporary file and a rename: never a half-written report."""
    # surrogateescape: a path the locale could not decode (a non-UTF-8 locale, PYTHONUTF8=0) goes back as its bytes
    write_bytes_atomically(path, text.encode("utf-8", "surrogateescape"))
    return Path(path)


def write_json_atomic(path: str | Path, document: Any) -> Path:
    """Strict JSON (no NaN), indented, written atomically."""
    return write_text_atomic(path, json.dumps(document, indent=2, allow_nan=False) + "\n")


def write_report(report: RunReport, directory: str | Path) -> Path:
    return write_json_atomic(Path(directory) / "report.json", to_jsonable(report.to_dict()))


# what a run writes beside report.json (``--dump-taps``' files are written during the run, and left alone)
RUN_OUTPUTS = ("report.html", "samples.h5", "patch_stats.json", "canvas.json", "offsets.json")


def clear_run_outputs(directory: str | Path) -> None:
    """Remove an earlier run's page and evidence from a case folder about to get a new report: a page or a
    picture of that run beside this run's report.json would say what this run did not."""
    directory = Path(directory)
    stale = [directory / name for name in RUN_OUTPUTS] + sorted(directory.glob("patches-*.png"))
    for path in stale:
        if path.is_symlink() or path.is_file():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def rewrite_report(report: RunReport, directory: str | Path) -> Path:
    """``report.json`` and ``report.html`` again after a later check changed the verdict (``--repeat``); the
    run's evidence files stay."""
    from .html import write_html

    path = write_report(report, directory)
    write_html(json.loads(path.read_text()), Path(directory))
    return path


def write_case_outputs(report: RunReport, directory: str | Path, evidence: Any = None) -> Path:
    """``report.json``, then the evidence files (when collected), then ``report.html``; returns the JSON path."""
    from .html import write_html

    clear_run_outputs(directory)
    path = write_report(report, directory)
    if evidence is not None:
        evidence.write(directory, {(mode, tap.name) for tap in report.taps
                                   for mode, result in tap.modes.items() if result.passed is False})
    write_html(json.loads(path.read_text()), Path(directory))
    return path


REPORT_LIMIT = 256 * 2**20  # a report holds statistics per tap, never tensors: far below this


def _not_strict(word: str) -> None:
    """The harness writes strict JSON (non-finite numbers as strings): a bare NaN or Infinity was put there."""
    raise ValueError(f"a bare {word} (the harness writes strict JSON: non-finite numbers as strings)")


def load_report(path: str | Path) -> dict[str, Any]:
    """A saved ``report.json`` (a file, or the case folder holding it), schema checked."""
    path = Path(path)
    if path.is_dir():
        path = path / "report.json"
    if not path.exists() and not path.is_symlink():
        raise ParityInputError(f"{path}: no such report (expected a report.json or a case folder holding one)")
    try:
        with open_regular(path, "saved report") as handle:  # a FIFO named report.json must not block the read
            size = os.fstat(handle.fileno()).st_size
            if size > REPORT_LIMIT:
                raise ParityInputError(f"{path}: a report of {size} bytes, more than the {REPORT_LIMIT} bytes any "
                                       "report this harness writes holds; expected a report.json of `parity run`")
            document = json.loads(handle.read().decode(), parse_constant=_not_strict)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ParityInputError(f"{path}: not a JSON report ({error})") from None
    except (ValueError, RecursionError) as error:  # a 5000-digit integer, nesting deeper than the parser goes
        raise ParityInputError(f"{path}: not a report this harness wrote ({type(error).__name__}: "
                               f"{str(error)[:120]})") from None
    if not isinstance(document, dict) or document.get("schema") != SCHEMA_NAME:
        raise ParityInputError(f"{path}: key 'schema' must be {SCHEMA_NAME!r}")
    version = document.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool) or version not in range(1, SCHEMA_VERSION + 1):
        raise ParityInputError(f"{path}: key 'schema_version' is {version!r}; this harness reads 1..{SCHEMA_VERSION}")
    for key, kind, words in (("passed", bool, "true or false"), ("taps", list, "a list of taps"),
                             ("case", dict, "an object")):  # a page must never say PASS from a "yes"
        if not isinstance(document.get(key), kind):
            raise ParityInputError(f"{path}: key {key!r} is {str(document.get(key))[:60]!r}, expected {words}")
    bad = next((index for index, tap in enumerate(document["taps"]) if not isinstance(tap, dict)
                or not isinstance(tap.get("name"), str) or not isinstance(tap.get("modes", {}), dict)), None)
    if bad is not None:
        raise ParityInputError(f"{path}: key 'taps' entry {bad} is not a tap this harness writes (an object with a "
                               "'name' string and a 'modes' object)")
    return document


def _number(value: Any) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def margin(result: dict[str, Any] | None) -> float | None:
    """How far a mode result is from its tolerance: the largest error / limit over the criteria set
    (below 1 passes); inf when the stage raised or the shapes differ; None when not judged."""
    if not result:
        return None
    if result.get("error"):
        return math.inf
    metrics, tolerance = result.get("metrics"), result.get("tolerance")
    if not metrics or not tolerance:
        return None
    if not metrics.get("shape_match", True):
        return math.inf
    criteria = tolerance["criteria"]
    ratios = []
    for measured, limit in (("max_rel_to_peak", "max_rel_to_peak"), ("max_abs_error", "max_abs"),
                            ("phase_max_abs_error", "max_phase_error")):
        value, bound = _number(metrics.get(measured)), _number(criteria.get(limit))
        if value is not None and bound is not None:
            ratios.append(math.inf if math.isnan(value) else (value / bound if bound else
                                                              (0.0 if value == 0 else math.inf)))
    cosine, bound = _number(metrics.get("cosine_similarity")), _number(criteria.get("min_cosine"))
    if cosine is not None and bound is not None and bound < 1:
        ratios.append((1 - cosine) / (1 - bound) if not math.isnan(cosine) else math.inf)
    if not ratios:
        return 0.0 if metrics.get("passed") else math.inf
    worst = max(ratios)
    return math.inf if not metrics.get("passed") and worst < 1 else worst


def worst_margin(document: dict[str, Any]) -> tuple[float | None, str | None]:
    """The largest margin over every tap and mode of a report, and where it is."""
    best: tuple[float | None, str | None] = (None, None)
    for tap in document.get("taps", []):
        for mode, result in tap.get("modes", {}).items():
            value = margin(result)
            if value is not None and (best[0] is None or value > best[0]):
                best = (value, f"{tap['name']} ({mode})")
    return best


def format_margin(value: float | None) -> str:
    if value is None:
        return "-"
    if value == 0:
        return "0"
    return "inf" if math.isinf(value) else f"{value:.2g}x"


def _error_cell(result: ModeResult | None) -> Text:
    if result is None:
        return Text("-", style="dim")
    if result.error is not None:
        return Text(error_word(result.error_kind), style="bold red")
    if result.metrics is None:
        label = {"not_provided": "n/p", "not_comparable": "n/c", "not_reached": "-", "not_run": "n/a"}
        return Text(label.get(result.skip_kind or "", "n/a"), style="dim")
    metrics = result.metrics
    if not metrics.shape_match:
        return Text("shape", style="bold red")
    value = metrics.max_rel_to_peak
    text = f"{value:.1e}" if value == value else "nan"
    if not metrics.dtype_match:
        text += " dtype"
    if not metrics.passed and _failing_region(result):
        text += "*"  # the number shown is within its limit: a region fails (named under the table)
    return Text(text, style="green" if metrics.passed else "bold red")


def _failing_region(result: ModeResult) -> str:
    """"covered 3.6e-06 exceeds 1.0e-06" where a region fails and the tap-wide number alone is within its limit."""
    if result.metrics is None or result.tolerance is None:
        return ""
    limit = result.tolerance.criteria.max_rel_to_peak
    if limit is not None and not result.metrics.max_rel_to_peak <= limit:
        return ""  # the number shown fails by itself
    summaries = (result.metrics.breakdown or {}).get("regions", {})
    for region, criteria in result.tolerance.criteria.regions:
        value = (summaries.get(region) or {}).get("max_rel")
        if criteria.max_rel_to_peak is not None and value is not None and not value <= criteria.max_rel_to_peak:
            return f"region {region}: max |a-b| / max |a| = {value:.1e} over a limit of {criteria.max_rel_to_peak:.0e}"
    return ""


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
        status = {"passed": Text("ok", style="green"), "failed": Text("FAIL", style="bold red"),
                  "not_compared": Text("n/p", style="dim"), "not_comparable": Text("n/c", style="yellow"),
                  }.get(tap.status, Text("-", style="dim"))
        name = Text(tap.name, style="bold red" if tap.name == divergent else "")
        shape = "x".join(str(dim) for dim in tap.shape) or "()"
        table.add_row(str(index), name, shape, _error_cell(propagated), _error_cell(isolated), amplification,
                      _tolerance_text(propagated, isolated), status)
    return table


def _diagnosis_lines(report: RunReport) -> list[str]:
    """One line per diagnosis of the first divergence (issue #9), in the mode it diverged in."""
    lines = []
    for diagnosis in report.diagnoses:
        residual = diagnosis.residual
        left = f" [residual {residual:.1e}]" if residual == residual else ""
        lines.append(f"{diagnosis.kind}: {diagnosis.summary}{left}")
    return lines


def summary_lines(report: RunReport) -> list[str]:
    lines = [f"{audit.name} audit: {message}" for audit in report.audits if not audit.passed
             for message in audit.messages]
    if report.stopped:
        lines.append(f"stopped: {report.stopped}")
    divergence = report.first_divergence
    if divergence is not None and divergence.kind != "audit" and not (
            divergence.tap is None and report.stopped and report.stopped in divergence.messages):
        lines.append(divergence.headline())
        lines += [f"  {message}" for message in divergence.messages[1:4]]
        if divergence.inherited:
            lines.append(f"  ({divergence.accumulated_words()})")
        lines += [f"  diagnosis: {line}" for line in _diagnosis_lines(report)]
    for tap in report.taps:
        for mode, result in tap.modes.items():
            region = _failing_region(result) if result is not None and result.metrics is not None \
                and not result.metrics.passed else ""
            if region:
                lines.append(f"* {tap.name} ({mode}) fails on {region}")
    for tap in report.taps:
        if tap.status in ("not_compared", "not_comparable") or (tap.status == "unjudged" and tap.reason):
            lines.append(f"{tap.name}: {tap.reason}")
    if report.log.get("bytes"):
        lines.append(f"adapter output ({report.log['bytes']} bytes) captured in {report.log['path']}"
                     + (f"; output past {report.log['truncated_at']} bytes was dropped (PARITY_LOG_LIMIT)"
                        if report.log.get("truncated_at") else ""))
    counts = report.counts()
    judged = counts.get("passed", 0) + counts.get("failed", 0)
    verdict = "PASS" if report.passed else "FAIL"
    if report.stop_kind in NO_VERDICT:  # exit 3 or 130: no verdict on the candidate
        verdict = f"NO VERDICT (stopped: {report.stop_kind})"
    elif not report.passed and not counts.get("failed"):  # every judged tap passed: say what failed instead
        why = [f"the {audit.name} audit failed" for audit in report.audits if not audit.passed]
        why += ["the candidate stopped"] if report.stopped else []
        if counts.get("unjudged") and not why:
            why.append(f"{counts['unjudged']} not judged, and no verdict is no pass")
        why += ["no tap was judged"] if not judged and not why else []
        verdict += f" ({', '.join(why)})" if why else ""
    extra = [f"{counts[key]} {label}" for key, label in (
        ("not_compared", "not compared (not provided)"), ("not_comparable", "not comparable (configuration)"),
        ("unjudged", "not judged")) if counts.get(key)]
    lines.append(f"{verdict}: {counts.get('passed', 0)}/{judged} taps within tolerance"
                 + (f"; {', '.join(extra)}" if extra else "") + " (max |a-b| / max |a| shown)")
    return lines


NO_VERDICT = ("reference", "crashed", "interrupted")  # stop kinds that say nothing of the candidate (exit 3, 130)


def cases_table(reports: list[RunReport]) -> Table:
    """One row per case: verdict, first divergence, worst margin to tolerance (error / limit)."""
    table = Table(title="all cases", box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False)
    table.add_column("case", no_wrap=True)
    table.add_column("pipeline", style="dim")
    table.add_column("verdict", justify="center")
    table.add_column("first divergence", overflow="fold")
    table.add_column("worst margin (error / tolerance)", no_wrap=True)
    for report in reports:
        document = report.to_dict()
        value, where = worst_margin(document)
        divergence = report.first_divergence
        first = "-" if divergence is None else (f"{divergence.tap} ({divergence.mode})" if divergence.tap
                                                 else divergence.mode)
        style = "green" if value is not None and value < 1 else "bold red"
        verdict = (Text("PASS", style="green") if report.passed else
                   Text("NO VERDICT", style="bold yellow") if report.stop_kind in NO_VERDICT else
                   Text("FAIL", style="bold red"))
        table.add_row(report.case["name"], report.pipeline, verdict,
                      Text(first, style="red" if divergence else "dim"),
                      Text(f"{format_margin(value)}  {where or ''}", style=style if value is not None else "dim"))
    return table


def make_console() -> Console:
    """A console at least 120 columns wide, so tap names are never cut in logs.

    Markup off: tap names, case names, reasons and messages come from users and adapters, and a
    ``[...]`` in them is text (rich would drop it, or raise on ``[/...]``); styles are set explicitly.
    """
    width = Console().width
    return _Console(width=max(width, 120), markup=False)


class _Console(Console):
    def on_broken_pipe(self) -> None:
        """The reader left (``parity run ... | head``): the rest goes nowhere and the verdict's exit code stands
        (rich's own handler exits with 1, which would read as "parity fails")."""
        self.quiet = True
        try:
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, self.file.fileno())
            os.close(null)
        except (OSError, ValueError, AttributeError):
            pass


def print_report(report: RunReport, console: Console | None = None) -> None:
    console = console or make_console()
    console.print(render_table(report))
    for line in summary_lines(report):
        style = "green" if line.startswith("PASS") else ("red" if line.startswith(("FAIL", "first")) else "")
        console.print(line, style=style, highlight=False)
