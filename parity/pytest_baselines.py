"""Regression baselines of the candidate's own taps, kept with pytest-regressions.

Parity compares the candidate with a reference; a change that moves both
(a shared helper, a spec edit) passes parity. A baseline pins the
candidate's propagated taps: every tap of a small case (``ndarrays_regression``,
``<baselines>/<candidate>/<case>.npz``) or per-tap statistics of a larger one
(``data_regression``, ``<case>.yml``).

Rules that pytest-regressions does not enforce by itself:
- tolerances come from the tolerance table (the tap's propagated rule), never
  from the baseline file or the test, so regenerating cannot loosen one; a
  baseline that carries anything but values (a hand-added ``atol``) is refused;
- a dtype or shape change fails (pytest-regressions lets float32 -> float64 pass);
- ``--force-regen`` / ``--regen-all`` refuse to pin a candidate that fails parity.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from backends.common.config import knob_changes

from .atomic_files import write_bytes_atomically
from .errors import ParityInputError
from .files import open_regular
from .metrics import Criteria, compare
from .pytest_runs import ParityOutcome
from .pytest_settings import BaselineParam, ParitySettings
from .pytest_verdicts import first_divergence

SAMPLES = 8  # fixed positions whose values a statistics baseline also keeps
TOP_KEYS = {"case", "candidate", "taps"}
STAT_KEYS = {"dtype", "shape", "nan", "inf", "peak", "mean_abs", "rms", "min", "max", "mean", "real_mean",
             "imag_mean", "samples"}
ROW_BYTES = 32 << 20


def elementwise_bound(criteria: Criteria, peak: float) -> tuple[float, float]:
    """(atol, rtol) such that |obtained - baseline| <= atol + rtol |baseline| is the table's tap criterion."""
    bounds = []
    if criteria.max_rel_to_peak is not None:
        bounds.append(criteria.max_rel_to_peak * peak)
    if criteria.max_abs is not None:
        bounds.append(criteria.max_abs)
    if bounds:
        return min(bounds), 0.0
    if criteria.tolerance_active:
        return criteria.atol or 0.0, criteria.rtol or 0.0
    return 0.0, 0.0  # only non-elementwise criteria (cosine, phase): values must match, then those are checked


def _rows(dataset: Any):
    if not dataset.shape:
        yield ()
        return
    row = max(1, dataset.dtype.itemsize * int(np.prod(dataset.shape[1:], dtype=np.int64)))
    step = max(1, ROW_BYTES // row)
    for start in range(0, dataset.shape[0], step):
        yield slice(start, min(start + step, dataset.shape[0]))


def tap_statistics(dataset: Any) -> dict[str, Any]:
    """Statistics that move by at most max|change| when every element moves by at most that (streamed)."""
    dtype, complex_ = np.dtype(dataset.dtype), np.dtype(dataset.dtype).kind == "c"
    count = nan = inf = 0
    peak = sum_abs = sum_sq = 0.0
    sum_real = sum_imag = 0.0
    low, high = math.inf, -math.inf
    for part in _rows(dataset):
        chunk = np.asarray(dataset[part]).astype(np.complex128 if complex_ else np.float64).ravel()
        finite = np.isfinite(chunk)
        nan += int(np.isnan(chunk).sum())
        inf += int((~finite).sum()) - int(np.isnan(chunk).sum())
        values = chunk[finite]
        count += values.size
        if values.size:
            magnitude = np.abs(values)
            peak, sum_abs, sum_sq = max(peak, float(magnitude.max())), sum_abs + float(magnitude.sum()), sum_sq + float(
                (magnitude ** 2).sum())
            sum_real += float(values.real.sum())
            sum_imag += float(values.imag.sum()) if complex_ else 0.0
            if not complex_:
                low, high = min(low, float(values.min())), max(high, float(values.max()))
    stats: dict[str, Any] = {"dtype": dtype.name, "shape": [int(dim) for dim in dataset.shape], "nan": nan, "inf": inf,
                             "peak": peak, "mean_abs": sum_abs / count if count else 0.0,
                             "rms": math.sqrt(sum_sq / count) if count else 0.0}
    if complex_:
        stats.update(real_mean=sum_real / count if count else 0.0, imag_mean=sum_imag / count if count else 0.0)
    else:
        stats.update(min=low if count else 0.0, max=high if count else 0.0, mean=sum_real / count if count else 0.0)
    size = int(np.prod(dataset.shape, dtype=np.int64))
    picks = sorted({int(i) for i in np.linspace(0, size - 1, min(SAMPLES, size))}) if size else []
    values = [dataset[np.unravel_index(i, dataset.shape)] if dataset.shape else dataset[()] for i in picks]
    stats["samples"] = [[float(np.real(v)), float(np.imag(v))] if complex_ else float(v) for v in values]
    return stats


def _snap(obtained: Any, expected: Any, bound: float) -> Any:
    """``obtained`` with every float within ``bound`` of the baseline's replaced by the baseline's (no churn)."""
    if isinstance(obtained, float) and isinstance(expected, (int, float)) and not isinstance(expected, bool):
        if math.isfinite(obtained) and math.isfinite(expected) and abs(obtained - expected) <= bound:
            return expected
        return obtained
    if isinstance(obtained, list) and isinstance(expected, list) and len(obtained) == len(expected):
        return [_snap(o, e, bound) for o, e in zip(obtained, expected)]
    return obtained


def _first_lines(text: str, keep: int = 40) -> str:
    lines = text.splitlines()
    if len(lines) <= keep:
        return text
    return "\n".join(lines[:keep] + [f"... {len(lines) - keep} more lines (pytest-regressions lists every differing "
                                      "element)"])


def adapter_folder(name: str) -> str:
    """The folder of an adapter's baselines: its name, made a single safe path part ('..' must not leave)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip(".") or "adapter"


def _case_file(baseline: Path) -> Path:
    """``<case>.case.json`` beside a baseline: the case definition its values were pinned for."""
    return baseline.with_name(f"{baseline.name.rsplit('.', 1)[0]}.case.json")


def _definition_changes(baseline: Path, case: Any) -> str | None:
    """Words for how the case changed since its baseline was pinned (None: unchanged, or not recorded)."""
    try:  # a regular file only: a FIFO or /dev/zero under that name must not hang the session
        with open_regular(_case_file(baseline), "baseline's case file") as handle:
            recorded = json.loads(handle.read(1 << 20).decode())
    except (OSError, ValueError, ParityInputError):
        return None  # a baseline pinned before cases were recorded with it, or no file of ours: nothing to say
    if not isinstance(recorded, dict) or recorded.get("hash") == case.hash():
        return None
    knobs = knob_changes(recorded.get("config") if isinstance(recorded.get("config"), dict) else {},
                         case.config.to_dict())
    return ("the case changed since its baseline was pinned: " + (", ".join(knobs) if knobs else
            "its inputs, weights or definition (not its knobs)") + "; its values are another computation's. "
            "A deliberate change: rerun with --force-regen")


def _pin_case(baseline: Path, case: Any) -> None:
    text = json.dumps({"case": case.name, "hash": case.hash(), "config": case.config.to_dict()}, indent=1,
                      sort_keys=True)
    write_bytes_atomically(_case_file(baseline), (text + "\n").encode())


class BaselineCheck:
    """What a generated ``test_baseline_*`` receives: one case's candidate taps against its baseline."""

    def __init__(self, param: BaselineParam, settings: ParitySettings, runs: Any, request: pytest.FixtureRequest):
        self.param, self.settings, self.runs, self.request = param, settings, runs, request
        self.case = settings.case(param.case)
        self.regenerating = bool(request.config.getoption("force_regen", False)
                                 or request.config.getoption("regen_all", False))

    def _outcome(self) -> ParityOutcome:
        __tracebackhide__ = True
        outcome = self.runs.outcome(self.case)
        if outcome.skip:
            pytest.skip(outcome.skip)
        if outcome.error or outcome.document is None:
            pytest.fail(f"{outcome.label}: {outcome.error}", pytrace=False)
        if self.regenerating and not outcome.passed:
            pytest.fail(f"refusing to regenerate the baseline of {outcome.label}: the candidate fails parity "
                        f"(first divergence: {first_divergence(outcome)}); a baseline pins a candidate that "
                        f"passes. Report: {outcome.report_path}", pytrace=False)
        return outcome

    def _path(self, outcome: ParityOutcome, extension: str) -> Path:
        name = str(outcome.document["candidate"].get("name") or outcome.candidate)
        return self.settings.baselines / adapter_folder(name) / f"{self.case.name}{extension}"

    def _same_case(self, path: Path) -> None:
        __tracebackhide__ = True
        changes = None if self.regenerating or not path.is_file() else _definition_changes(path, self.case)
        if changes:
            pytest.fail(f"{self.case.name}: baseline {path}: {changes}", pytrace=False)

    def _criteria(self, outcome: ParityOutcome, tap: str) -> Criteria:
        return self.settings.tolerances.lookup(tap, self.case.config.dtype, outcome.device, "propagated",
                                               self.case.pipeline).criteria

    def _taps(self, outcome: ParityOutcome) -> tuple[h5py.File, list[str]]:
        __tracebackhide__ = True
        path = outcome.candidate_taps_file()
        if path is None:
            pytest.fail(f"{outcome.label}: the run kept no candidate taps (report: {outcome.report_path})", pytrace=False)
        handle = h5py.File(path, "r")
        order = [tap["name"] for tap in outcome.document["taps"] if tap["name"] in handle["propagated"]]
        return handle, order

    def check_arrays(self, ndarrays_regression: Any) -> None:
        __tracebackhide__ = True
        outcome = self._outcome()
        path = self._path(outcome, ".npz")
        self._same_case(path)
        pinned = path.is_file() and not self.regenerating
        handle, order = self._taps(outcome)
        with handle:
            obtained = {name: handle["propagated"][name][()] for name in order}
        expected = None
        if path.is_file():
            with np.load(path, allow_pickle=False) as stored:
                expected = {key: stored[key] for key in stored.files}
        tolerances = {}
        if expected is not None:
            problems = [f"{key}: baseline {expected[key].dtype} {expected[key].shape} -> now "
                        f"{obtained[key].dtype} {obtained[key].shape}" for key in sorted(set(expected) & set(obtained))
                        if expected[key].dtype != obtained[key].dtype or expected[key].shape != obtained[key].shape]
            problems += [f"{key}: in the baseline, not delivered now" for key in sorted(set(expected) - set(obtained))]
            problems += [f"{key}: delivered now, not in the baseline" for key in sorted(set(obtained) - set(expected))]
            if problems and not self.regenerating:
                pytest.fail(f"{outcome.label}: the candidate's taps changed dtype or shape against the baseline "
                            f"{path}:\n  " + "\n  ".join(problems) + "\nA deliberate change: rerun with --force-regen.",
                            pytrace=False)
            if problems:
                path.unlink()  # pytest-regressions keeps a file whose values compare equal: write it anew
                expected = None
        if expected is not None:
            for name in obtained:
                peak = float(np.abs(expected[name]).max()) if expected[name].size else 0.0
                atol, rtol = elementwise_bound(self._criteria(outcome, name), peak if math.isfinite(peak) else 0.0)
                tolerances[name] = {"atol": atol, "rtol": rtol}
        differs = None
        try:
            ndarrays_regression.check(dict(obtained), fullpath=path, tolerances=tolerances)
        except AssertionError as error:  # pytest-regressions lists every differing element: hundreds of lines
            differs = _first_lines(str(error))
        finally:
            if not pinned and path.is_file():  # pytest-regressions wrote (or rewrote) it: say which case it pins
                _pin_case(path, self.case)
        if differs is not None:  # failed outside the handler: the full message would come along as its context
            pytest.fail(differs, pytrace=False)
        if expected is not None and not self.regenerating:
            from backends.common.regions import tap_regions
            from backends.common.taps import tap_index

            index = tap_index(self.case.pipeline, self.case.config)  # the canvas is judged region by region
            failures = [line for name in obtained for line in compare(
                name, expected[name], obtained[name], self._criteria(outcome, name), layout=index[name].layout,
                regions=tap_regions(index[name], self.case.config, self.case.inputs)).failures]
            if failures:
                pytest.fail(f"{outcome.label}: against the baseline {path}:\n  " + "\n  ".join(failures), pytrace=False)

    def check_stats(self, data_regression: Any) -> None:
        __tracebackhide__ = True
        import yaml

        outcome = self._outcome()
        path = self._path(outcome, ".yml")
        self._same_case(path)
        if not path.is_file() or self.regenerating:
            _pin_case(path, self.case)
        handle, order = self._taps(outcome)
        with handle:
            taps = {name: tap_statistics(handle["propagated"][name]) for name in order}
        document = {"case": self.case.name, "candidate": str(outcome.document["candidate"].get("name")), "taps": taps}
        if path.is_file():
            expected = yaml.safe_load(path.read_text()) or {}
            foreign = sorted(set(expected) - TOP_KEYS) + sorted(
                f"{tap}.{key}" for tap, stats in (expected.get("taps") or {}).items() for key in set(stats) - STAT_KEYS)
            if foreign and not self.regenerating:
                pytest.fail(f"{path}: keys {foreign} are not values this plugin writes; a baseline holds values "
                            f"only and tolerances live in the tolerance table ({self.settings.tolerances_path}). "
                            "Remove them, or regenerate with --force-regen.", pytrace=False)
            for name, stats in taps.items():
                before = (expected.get("taps") or {}).get(name)
                if isinstance(before, dict) and isinstance(before.get("peak"), (int, float)):
                    atol, rtol = elementwise_bound(self._criteria(outcome, name), float(before["peak"]))
                    taps[name] = {key: _snap(value, before.get(key), atol + rtol * float(before["peak"]))
                                  for key, value in stats.items()}
        data_regression.check(document, fullpath=path)
