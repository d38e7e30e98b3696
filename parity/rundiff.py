"""``parity diff RUN_A RUN_B``: two saved runs of the same case, tap by tap (e.g. before and after a fix).

A run is a case folder holding ``report.json`` (or the file itself); an
``--out`` folder holding several case folders compares every case present in
both. A tap *got worse* in a mode when it passed in A and does not pass in B
(fails, raised, or is no longer judged), or failed in both and its margin to
tolerance (error / limit) grew by more than ``factor`` (default 2). A tap whose
dtype differs between the runs (``--set dtype=float64`` in one) is *retyped*:
its margins are of different precisions, so only a pass/fail change counts. The exit
code is 0 when no tap of any case got worse, 1 when one did, 2 when the runs
are not comparable (different case or pipeline, unreadable report).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

from rich import box
from rich.table import Table
from rich.text import Text

from backends.common.config import knob_changes

from .errors import ParityInputError
from .report import format_margin, load_report, margin


@dataclasses.dataclass
class TapChange:
    case: str
    tap: str
    mode: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    verdict: str  # "worse", "better", "fixed", "same", "new", "gone", "retyped"

    @property
    def worse(self) -> bool:
        return self.verdict in ("worse", "gone")


def _rel(result: dict[str, Any] | None) -> str:
    if not result:
        return "-"
    if result.get("error"):
        return "raised"
    value = (result.get("metrics") or {}).get("max_rel_to_peak")
    if value is None:
        return "not judged"
    try:
        return f"{float(value):.1e}"
    except (TypeError, ValueError):
        return str(value)


def _classify(before: dict[str, Any] | None, after: dict[str, Any] | None, factor: float,
              retyped: bool = False) -> str:
    """``retyped``: the tap's dtype differs between the runs, so its margins are not comparable (a float64 run's
    errors are ~1e-9 of a float32 run's without any fix); pass/fail changes still count."""
    if before is None:
        return "new"
    if after is None:
        return "gone" if before.get("passed") is True else "same"
    was, now = before.get("passed"), after.get("passed")
    if was is True and now is not True:
        return "worse"
    if was is not True and now is True:
        return "fixed"
    old, new = margin(before), margin(after)
    if old is None or new is None or old == new:
        return "same"
    if retyped:
        return "retyped"
    if new > old * factor and not (math.isinf(old) and math.isinf(new)):
        return "worse" if was is False else "same"
    if new * factor < old:
        return "better"
    return "same"


def _single(path: Path) -> Path | None:
    """The report.json of a run of one case (a case folder or the file itself), else None."""
    if path.is_file():
        return path
    return path / "report.json" if (path / "report.json").exists() else None


def _runs(path: Path) -> dict[str, Path]:
    """{case name: report.json} for a case folder, a report.json, or a folder of case folders."""
    path = Path(path)
    single = _single(path)
    if single is not None:
        return {load_report(single)["case"]["name"]: single}
    found = {child.name: child / "report.json" for child in sorted(path.glob("*")) if (child / "report.json").exists()}
    if not found:
        raise ParityInputError(f"{path}: no report.json here nor in any subfolder (expected a run folder)")
    runs: dict[str, Path] = {}
    for file in found.values():
        name = load_report(file)["case"]["name"]
        if name in runs:  # a copy (physics-default.bak/) would otherwise hide one of the two, whichever sorts last
            raise ParityInputError(f"{path}: case {name!r} has two reports here, {runs[name]} and {file}; expected "
                                   "one per case (compare the case folders themselves)")
        runs[name] = file
    return runs


def diff_reports(before: dict[str, Any], after: dict[str, Any], factor: float = 2.0) -> list[TapChange]:
    name = before["case"]["name"]
    if after["case"]["name"] != name or after.get("pipeline") != before.get("pipeline"):
        raise ParityInputError(f"cannot diff case {name!r} ({before.get('pipeline')}) against "
                               f"{after['case']['name']!r} ({after.get('pipeline')}): not the same case")
    changes = []
    earlier = {tap["name"]: tap for tap in before.get("taps", [])}
    later = {tap["name"]: tap for tap in after.get("taps", [])}
    order = [tap["name"] for tap in after.get("taps", [])]
    order += [tap for tap in earlier if tap not in later]
    for tap in order:
        old_modes = (earlier.get(tap) or {}).get("modes") or {}
        new_modes = (later.get(tap) or {}).get("modes") or {}
        for mode in dict.fromkeys([*old_modes, *new_modes]):
            a, b = old_modes.get(mode), new_modes.get(mode)
            retyped = tap in earlier and tap in later and earlier[tap].get("dtype") != later[tap].get("dtype")
            changes.append(TapChange(name, tap, mode, a, b, _classify(a, b, factor, retyped)))
    return changes


def diff_runs(run_a: str | Path, run_b: str | Path, factor: float = 2.0) -> tuple[list[TapChange], list[str]]:
    """Every tap change of every case in both runs, and notes (cases in one run only, different hashes)."""
    if _single(Path(run_a)) and _single(Path(run_b)):  # two runs of one case each: they must be the same case
        before, after = load_report(_single(Path(run_a))), load_report(_single(Path(run_b)))
        return diff_reports(before, after, factor), _hash_notes(before, after)
    first, second = _runs(Path(run_a)), _runs(Path(run_b))
    common = [case for case in first if case in second]
    if not common:
        raise ParityInputError(f"{run_a} has cases {sorted(first)}, {run_b} has {sorted(second)}: none in common")
    notes = [f"case {case} is only in {where}" for case, where in
             [*((c, run_a) for c in first if c not in second), *((c, run_b) for c in second if c not in first)]]
    changes: list[TapChange] = []
    for case in common:
        before, after = load_report(first[case]), load_report(second[case])
        notes += _hash_notes(before, after)
        changes += diff_reports(before, after, factor)
    return changes, notes


def _hash_notes(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    old, new = before["case"].get("hash"), after["case"].get("hash")
    if old == new:
        return []
    knobs_a, knobs_b = before.get("config"), after.get("config")
    changed = knob_changes(knobs_a, knobs_b) if isinstance(knobs_a, dict) and isinstance(knobs_b, dict) else []
    what = (f"the knobs changed: {', '.join(changed)}" if changed
            else "its inputs, weights or definition changed, not its knobs")
    return [f"{before['case']['name']}: the case hash differs ({old} -> {new}): {what}; the runs judge different "
            "computations, so a tap's change need not come from the port"]


STYLES = {"worse": "bold red", "gone": "bold red", "fixed": "green", "better": "green", "same": "dim", "new": "yellow",
          "retyped": "yellow"}


def diff_table(changes: list[TapChange], show_all: bool = False) -> Table:
    table = Table(title="tap by tap: A -> B", box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False)
    for column, justify in (("case", "left"), ("tap", "left"), ("mode", "left"), ("A error", "right"),
                            ("B error", "right"), ("A margin", "right"), ("B margin", "right"), ("", "left")):
        table.add_column(column, justify=justify, no_wrap=True)
    for change in changes:
        if not show_all and change.verdict == "same":
            continue
        table.add_row(change.case, change.tap, change.mode, _rel(change.before), _rel(change.after),
                      format_margin(margin(change.before)), format_margin(margin(change.after)),
                      Text(change.verdict, style=STYLES[change.verdict]))
    return table
