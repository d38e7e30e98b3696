"""``parity calibrate``: measure each tap's noise floor and propose tolerances.

Noise sources measured on the reference, per pipeline, tap, dtype and mode:
- precision: the reference in float32 against itself in float64 (propagated:
  whole pipeline; isolated: each float32 stage on float64 inputs rounded to
  float32). The float64 floor is that float32 noise scaled by eps64/eps32.
- repeatability: reference and candidate each run twice (should be 0 with the
  determinism switch on; anything else is reported and added).
A proposal is ``max(factor * noise, floor)`` rounded up to one significant
digit. Writing is automatic where that tightens a tolerance; a looser value is
written only with ``allow_looser``. The candidate is never compared against
the reference here: a tolerance fitted to the candidate would absorb its bugs.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from backends.common.taps import pipeline_taps

from .adapters import Adapter
from .atomic_files import replace_text_keeping_mode, replaceable_file
from .cases import Case
from .errors import ParityInputError
from .report import write_json_atomic
from .tolerances import Rule, ToleranceTable, dump_table, load_tolerances, parse_table
from .workflows import cast_case

EPS_RATIO = float(np.finfo(np.float64).eps / np.finfo(np.float32).eps)
# Floors: float32 eps is 1.2e-7; float64 noise is only estimated (scaled from float32), so
# its floor keeps headroom over the ~4e-15 measured between backends on the CPU.
DEFAULT_FLOORS = {"float32": 1e-7, "float64": 1e-13}
CALIBRATED = "calibrated"


def rel_to_peak(reference: np.ndarray, value: np.ndarray) -> float:
    reference = np.asarray(reference, dtype=np.complex128 if np.iscomplexobj(reference) else np.float64)
    peak = float(np.max(np.abs(reference))) if reference.size else 0.0
    error = float(np.max(np.abs(reference - value))) if reference.size else 0.0
    if peak == 0:
        return 0.0 if error == 0 else math.inf
    return error / peak


def round_up(value: float) -> float:
    """Round up to one significant digit (3.2e-06 -> 4e-06)."""
    if value <= 0 or not math.isfinite(value):
        return value
    exponent = math.floor(math.log10(value))
    mantissa = math.ceil(value / 10**exponent - 1e-9)
    return float(f"{mantissa}e{exponent}")


@dataclasses.dataclass
class Measurement:
    pipeline: str
    tap: str
    dtype: str
    mode: str
    noise: float
    sources: dict[str, float]  # what each measurement gave (max over cases)
    cases: list[str]
    proposed: float = 0.0
    current: float | None = None
    decision: str = ""  # "tighter", "looser (kept)", "looser (written)", "unchanged"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class CalibrationResult:
    measurements: list[Measurement]
    path: Path
    written: bool
    factor: float
    floors: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "written": self.written, "factor": self.factor, "floors": self.floors,
                "measurements": [m.to_dict() for m in self.measurements]}


def _collect(adapter: Adapter, case: Case) -> dict[str, np.ndarray]:
    taps: dict[str, np.ndarray] = {}
    adapter.run_pipeline(case.pipeline, case.config, case.inputs, case.weights,
                         sink=lambda spec, value: taps.__setitem__(spec.name, value))
    return taps


def _measure_case(case: Case, reference: Adapter, candidate: Adapter | None) -> dict[tuple[str, str, str], dict]:
    single = cast_case(case, case.config.replace(dtype="float32"))
    double = cast_case(case, case.config.replace(dtype="float64"))
    taps32, taps64 = _collect(reference, single), _collect(reference, double)
    again32 = _collect(reference, single)
    candidate_runs = (_collect(candidate, single), _collect(candidate, single)) if candidate is not None else None
    found: dict[tuple[str, str, str], dict] = {}
    for spec in pipeline_taps(case.pipeline, single.config):
        stage_inputs = {name: (single.inputs[name] if name in single.inputs
                               else taps64[name].astype(single.config.complex_dtype if taps64[name].dtype.kind == "c"
                                                        else "float32"))
                        for name in spec.inputs}
        isolated = reference.run_stage(spec.name, case.pipeline, single.config, stage_inputs, single.weights)
        repeat = rel_to_peak(taps32[spec.name], again32[spec.name])
        if candidate_runs is not None:
            repeat = max(repeat, rel_to_peak(candidate_runs[0][spec.name], candidate_runs[1][spec.name]))
        for mode, precision in (("propagated", rel_to_peak(taps64[spec.name], taps32[spec.name])),
                                ("isolated", rel_to_peak(taps64[spec.name], isolated))):
            found[(spec.name, "float32", mode)] = {"float32_vs_float64": precision, "run_twice": repeat}
            found[(spec.name, "float64", mode)] = {"float32_vs_float64_scaled_by_eps_ratio": precision * EPS_RATIO,
                                                   "run_twice": repeat * EPS_RATIO}
    return found


def validate_calibration(factor: float, floor: float | None) -> None:
    """A factor below 1 (or NaN, Inf, negative) would write tolerances under the measured noise."""
    if not (isinstance(factor, (int, float)) and math.isfinite(factor) and factor >= 1):
        raise ParityInputError(f"--factor {factor!r}: expected a finite number >= 1 (tolerance = factor x noise; "
                               "below 1 the reference fails against its own noise)")
    if floor is not None and not (isinstance(floor, (int, float)) and math.isfinite(floor) and 0 < floor < 1):
        raise ParityInputError(f"--floor {floor!r}: expected a finite relative error > 0 and < 1")


def calibrate(cases: Sequence[Case], reference: Adapter, candidate: Adapter | None, path: Path, factor: float = 10.0,
              floor: float | None = None, write: bool = False, allow_looser: bool = False,
              out_dir: Path | None = None) -> CalibrationResult:
    validate_calibration(factor, floor)
    floors = {dtype: floor if floor is not None else value for dtype, value in DEFAULT_FLOORS.items()}
    table = load_tolerances(path)
    # before the measuring: a table that cannot be replaced; through a symlink, the file it names
    target = replaceable_file(path, "tolerance table", "--tolerances") if write else path
    merged: dict[tuple[str, str, str, str], Measurement] = {}
    for case in cases:
        for (tap, dtype, mode), sources in _measure_case(case, reference, candidate).items():
            key = (case.pipeline, tap, dtype, mode)
            noise = sum(sources.values())
            entry = merged.setdefault(key, Measurement(case.pipeline, tap, dtype, mode, 0.0, {}, []))
            entry.noise = max(entry.noise, noise)
            for source, value in sources.items():
                entry.sources[source] = max(entry.sources.get(source, 0.0), value)
            entry.cases.append(case.name)
    kept_rules = [rule for rule in table.rules if not rule.note.startswith(CALIBRATED)]
    base = ToleranceTable(table.default, tuple(kept_rules), table.path)
    new_rules: list[Rule] = []
    stamp = datetime.date.today().isoformat()
    for entry in merged.values():
        entry.proposed = round_up(max(factor * entry.noise, floors[entry.dtype]))
        current = table.lookup(entry.tap, entry.dtype, "cpu", entry.mode, entry.pipeline).criteria.max_rel_to_peak
        entry.current = current
        value = entry.proposed
        if current is None or entry.proposed < current:
            entry.decision = "tighter"
        elif entry.proposed == current:
            entry.decision = "unchanged"
        elif allow_looser:
            entry.decision = "looser (written)"
        else:
            entry.decision = "looser (kept)"
            value = current
        standing = base.lookup(entry.tap, entry.dtype, "cpu", entry.mode, entry.pipeline).criteria
        if standing.max_rel_to_peak == value:
            continue  # the hand-written rules already say this
        sources = ", ".join(f"{name} {noise:.2g}" for name, noise in entry.sources.items())
        note = (f"{CALIBRATED} {stamp}: {sources} (max over {', '.join(sorted(set(entry.cases)))}) "
                f"x {factor:g}, floor {floors[entry.dtype]:g}; {entry.decision}")
        # the last matching rule wins, so the new one carries the standing rule's other criteria (its regions,
        # its phase bound): a calibrated tap-wide bound must not drop the covered region's own check
        criteria = dataclasses.replace(standing, max_rel_to_peak=value)
        new_rules.append(Rule(taps=(entry.tap,), criteria=criteria, dtype=entry.dtype,
                              device="cpu", mode=entry.mode, pipeline=entry.pipeline, note=note))
    result = CalibrationResult(sorted(merged.values(), key=lambda m: (m.pipeline, m.dtype, m.mode)), path, False,
                               factor, floors)
    if write:
        header = (f"Parity tolerances. Hand-written rules first; rules noted '{CALIBRATED}' were written by\n"
                  "`parity calibrate --write` and say how each number was obtained. Last matching rule wins.")
        text = dump_table(ToleranceTable(table.default, tuple(kept_rules + new_rules), table.path), header)
        parse_table(tomllib.loads(text), str(target))  # what is written must read back: checked before writing
        replace_text_keeping_mode(target, text)
        result.written = True
    if out_dir is not None:
        write_json_atomic(out_dir / "calibration.json", result.to_dict())
    return result


def print_calibration(result: CalibrationResult) -> None:
    from rich.table import Table

    from .report import make_console

    table = Table(title=f"noise floors and proposals (factor {result.factor:g})", title_justify="left")
    for column in ("pipeline", "tap", "dtype", "mode", "noise", "proposed", "current", "decision"):
        table.add_column(column)
    for m in result.measurements:
        table.add_row(m.pipeline, m.tap, m.dtype, m.mode, f"{m.noise:.2g}", f"{m.proposed:.0e}",
                      "-" if m.current is None else f"{m.current:.0e}", m.decision)
    make_console().print(table)
    print(f"{'wrote' if result.written else 'not written (use --write)'}: {result.path}")
