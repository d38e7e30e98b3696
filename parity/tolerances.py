"""Tolerances: ``fixtures/tolerances.toml``, per tap (name or glob), dtype, device class, mode.

File format::

    schema = 1
    [default]                       # applies when no rule matches
    max_rel_to_peak = 1e-6

    [[rule]]
    taps = ["encoder.*", "decoder.*"]   # names or fnmatch globs
    dtype = "float32"                   # optional: float32 | float64 (default: any)
    device = "cpu"                      # optional: cpu | cuda (default: any)
    mode = "propagated"                 # optional: propagated | isolated (default: any)
    pipeline = "pinn"                   # optional (default: any)
    max_rel_to_peak = 1e-5              # any Criteria fields; all that are set must hold
    note = "how this number was obtained"

Rules are read in order and the last one that matches wins (as in
.gitignore), so general rules come first and specific ones after.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from pathlib import Path
from typing import Any

from backends.common.taps import PIPELINES, matches_a_tap, tap_name_hints

from .errors import ParityInputError, did_you_mean
from .files import read_toml
from .metrics import Criteria

SCHEMA = 1
SELECTORS = ("taps", "dtype", "device", "mode", "pipeline")
DEVICE_CLASSES = ("cpu", "cuda")
MODES = ("propagated", "isolated")


def device_class(device: str) -> str:
    return "cuda" if device.startswith("cuda") else "cpu"


@dataclasses.dataclass(frozen=True)
class Rule:
    taps: tuple[str, ...]
    criteria: Criteria
    dtype: str | None = None
    device: str | None = None
    mode: str | None = None
    pipeline: str | None = None
    note: str = ""
    index: int = -1  # position in the file; -1 for the default

    def matches(self, tap: str, dtype: str, device: str, mode: str, pipeline: str) -> bool:
        return (any(fnmatch.fnmatchcase(tap, pattern) for pattern in self.taps)
                and self.dtype in (None, dtype) and self.device in (None, device_class(device))
                and self.mode in (None, mode) and self.pipeline in (None, pipeline))

    def to_dict(self) -> dict[str, Any]:
        selectors = {key: getattr(self, key) for key in ("dtype", "device", "mode", "pipeline")
                     if getattr(self, key) is not None}
        return {"taps": list(self.taps), **selectors, **self.criteria.set_fields(),
                **({"note": self.note} if self.note else {})}


@dataclasses.dataclass(frozen=True)
class AppliedTolerance:
    """The criteria a tap was judged by, and which rule supplied them."""

    criteria: Criteria
    source: str  # e.g. "fixtures/tolerances.toml [[rule]] 4 (taps encoder.*; counted from 1)" or "... [default]"
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"criteria": self.criteria.to_dict(), "source": self.source, "note": self.note}


@dataclasses.dataclass(frozen=True)
class ToleranceTable:
    default: Criteria
    rules: tuple[Rule, ...]
    path: str = "<built-in>"

    def lookup(self, tap: str, dtype: str, device: str, mode: str, pipeline: str) -> AppliedTolerance:
        for rule in reversed(self.rules):
            if rule.matches(tap, dtype, device, mode, pipeline):
                where = f"{self.path} [[rule]] {rule.index + 1} (taps {', '.join(rule.taps)})"
                return AppliedTolerance(rule.criteria, where, rule.note)
        return AppliedTolerance(self.default, f"{self.path} [default]")


def _criteria(path: str, where: str, table: dict[str, Any]) -> Criteria:
    fields = {key: value for key, value in table.items() if key not in SELECTORS and key != "note"}
    try:
        criteria = Criteria.from_dict(fields)
    except (TypeError, ValueError, OverflowError) as error:
        raise ParityInputError(f"{path}: {where}: {error}") from None
    return criteria


def _judging(path: str, where: str, criteria: Criteria) -> Criteria:
    # a criterion set to a value at which it cannot fail switches it off as surely as leaving it out
    if criteria.tolerance_active and criteria.max_fraction_out >= 1.0:
        raise ParityInputError(f"{path}: {where}: max_fraction_out = {criteria.max_fraction_out:g} lets every element "
                               "out, so atol/rtol can never fail; expected a fraction below 1")
    if criteria.max_phase_error is not None and criteria.phase_floor > 1.0:
        raise ParityInputError(f"{path}: {where}: phase_floor = {criteria.phase_floor:g} leaves no element above it "
                               "(it is a fraction of max |a|), so max_phase_error can never fail; expected at most 1")
    if criteria.min_cosine is not None and criteria.min_cosine <= -1.0:
        raise ParityInputError(f"{path}: {where}: min_cosine = {criteria.min_cosine:g} holds for any two arrays; "
                               "expected a value above -1 (e.g. 0.99999)")
    if not any(getattr(criteria, name) is not None for name in JUDGING) and not criteria.regions:
        raise ParityInputError(f"{path}: {where}: sets no criterion, so every tap it matches would pass; expected at "
                               f"least one of {', '.join(JUDGING)} or regions")
    return criteria


# What judges a tap (the other keys only qualify these: max_fraction_out, phase_floor, allow_nonfinite).
JUDGING = ("max_rel_to_peak", "atol", "rtol", "max_abs", "min_cosine", "max_phase_error", "max_rel_to_sample_peak")


def _selector(path: str, where: str, table: dict[str, Any], key: str, allowed: tuple[str, ...]) -> str | None:
    value = table.get(key)
    if value is None or value == "*":
        return None
    if not isinstance(value, str) or value not in allowed:
        raise ParityInputError(f"{path}: {where}: key {key!r}: expected one of {allowed} or '*', got {value!r}")
    return value


def _known_taps(path: str, where: str, patterns: list[str]) -> None:
    """A pattern that names no tap of the registry is a typo: the taps it meant would be judged by another rule."""
    for pattern in patterns:
        if not matches_a_tap(pattern):
            raise ParityInputError(f"{path}: {where}: key 'taps': {pattern!r} matches no tap of the registry"
                                   f"{did_you_mean(pattern, tap_name_hints())}; expected names or globs of the "
                                   "registry's taps (docs/adapters.md lists them)")


def _note(path: str, where: str, note: Any) -> str:
    if not isinstance(note, str):
        raise ParityInputError(f"{path}: {where}: key 'note': expected a string, got {note!r}")
    return note


def parse_table(document: dict[str, Any], path: str) -> ToleranceTable:
    unknown = sorted(set(document) - {"schema", "default", "rule"})
    if unknown:
        raise ParityInputError(f"{path}: unknown top-level key(s) {unknown}; expected schema, default, rule")
    schema = document.get("schema", SCHEMA)
    if not isinstance(schema, int) or isinstance(schema, bool) or schema != SCHEMA:
        raise ParityInputError(f"{path}: key 'schema': expected {SCHEMA}, got {document['schema']!r}")
    if not document:  # an emptied or truncated file (a table that means it says `schema = 1` at least)
        raise ParityInputError(f"{path}: is empty; expected `schema = 1` and a [default] table or [[rule]]s (an "
                               "empty file would judge every tap by the built-in default, silently)")
    raw_default = document.get("default", {"max_rel_to_peak": 1e-6})
    if not isinstance(raw_default, dict):
        raise ParityInputError(f"{path}: key 'default': expected a table ([default]), got {raw_default!r}")
    selectors = sorted(set(raw_default) & set(SELECTORS))
    if selectors:
        raise ParityInputError(f"{path}: [default]: key(s) {selectors} select taps, but the default applies to every "
                               "tap; expected them in a [[rule]]")
    default = _judging(path, "[default]", _criteria(path, "[default]", raw_default))
    rules = []
    raw_rules = document.get("rule", [])
    if not isinstance(raw_rules, list) or not all(isinstance(table, dict) for table in raw_rules):
        raise ParityInputError(f"{path}: key 'rule': expected an array of tables ([[rule]])")
    for index, table in enumerate(raw_rules):
        where = f"[[rule]] {index + 1}"  # counted from 1, as a reader counts the tables
        taps = table.get("taps")
        if isinstance(taps, str):
            taps = [taps]
        if not (isinstance(taps, list) and taps and all(isinstance(tap, str) and tap for tap in taps)):
            raise ParityInputError(f"{path}: {where}: key 'taps': expected a tap name, glob or non-empty list of "
                                   f"them, got {taps!r}")
        _known_taps(path, where, taps)
        rules.append(Rule(
            taps=tuple(taps), criteria=_criteria(path, where, table),
            dtype=_selector(path, where, table, "dtype", ("float32", "float64")),
            device=_selector(path, where, table, "device", DEVICE_CLASSES),
            mode=_selector(path, where, table, "mode", MODES),
            pipeline=_selector(path, where, table, "pipeline", PIPELINES),
            note=_note(path, where, table.get("note", "")), index=index))
        _judging(path, where, rules[-1].criteria)
    return ToleranceTable(default=default, rules=tuple(rules), path=path)


def load_tolerances(path: str | Path) -> ToleranceTable:
    return parse_table(read_toml(path, "tolerance file"), str(path))


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, dict):  # inline table, e.g. regions = { covered = { max_rel_to_peak = 1e-06 } }
        return "{ " + ", ".join(f"{_toml_key(key)} = {_toml_value(item)}" for key, item in value.items()) + " }"
    return str(value)


def _toml_key(key: str) -> str:
    bare = key.isascii() and key.replace("_", "").replace("-", "").isalnum()
    return key if bare else _toml_value(key)


def dump_table(table: ToleranceTable, header: str = "") -> str:
    """TOML text for a table (what ``parity calibrate --write`` writes)."""
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    lines += ["schema = 1", "", "[default]"]
    lines += [f"{key} = {_toml_value(value)}" for key, value in table.default.set_fields().items()]
    for rule in table.rules:
        lines += ["", "[[rule]]"]
        lines += [f"{key} = {_toml_value(value)}" for key, value in rule.to_dict().items()]
    return "\n".join(lines) + "\n"
