"""Diagnosis inside a run: the first samples of every tap are kept, failing taps are diagnosed after.

``SampleKeeper`` observes the run (``update`` per compared chunk) and keeps, for each tap, the
first ``samples`` samples of the reference and of the candidate in each mode: a bounded copy
(``samples / batch`` of the run). After the run, ``attach_diagnoses`` hands each stage that fails
on its own (isolated mode, or propagated where isolated could not judge it) to
``parity.diagnosis.diagnose`` with the reference's values of the stage's inputs for the same
samples and, where the reference is a live adapter, a ``rerun`` of its stage on transformed
inputs. Failures downstream of a failing stage are not diagnosed again: they inherit its cause.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from backends.common.taps import TapSpec, batched, tap_index

from .chunks import as_array
from .results import RunReport

DIAGNOSIS_SAMPLES = 8
MAX_DIAGNOSED = 6  # stages diagnosed per run (each may rerun the reference's stage a few dozen times)


class SampleKeeper:
    """Observer: the first ``samples`` samples of each side of each compared tap."""

    def __init__(self, samples: int = DIAGNOSIS_SAMPLES) -> None:
        self.samples = samples
        self.reference: dict[str, np.ndarray] = {}
        self.candidate: dict[tuple[str, str], np.ndarray] = {}

    def update(self, mode: str, spec: TapSpec, reference: Any, candidate: Any, start: int) -> None:
        if spec.reduction == "global":  # in chunks each value so far (parity.global_taps): the last counts
            self.candidate[(mode, spec.name)] = np.array(as_array(candidate), copy=True)
            self.reference[spec.name] = np.array(reference, copy=True)
            return
        if not (batched(spec) and spec.reduction is None):  # the same for every chunk: kept once
            self.candidate.setdefault((mode, spec.name), np.array(as_array(candidate), copy=True))
            self.reference.setdefault(spec.name, np.array(reference, copy=True))
            return
        if start >= self.samples:
            return
        take = self.samples - start
        _keep(self.candidate, (mode, spec.name), as_array(candidate)[:take], start)
        _keep(self.reference, spec.name, np.asarray(reference)[:take], start)


def _keep(store: dict, key: Any, value: np.ndarray, start: int) -> None:
    """Append a chunk's first samples when they continue what is kept (both modes feed the reference)."""
    kept = store.get(key)
    if kept is None:
        if start == 0:
            store[key] = np.array(value, copy=True)
    elif len(kept) == start and kept.shape[1:] == value.shape[1:]:
        store[key] = np.concatenate([kept, value])


def _targets(report: RunReport) -> list[tuple[str, str]]:
    """(tap, mode) of each stage that fails on its own, the first divergence first."""
    found: list[tuple[str, str]] = []
    first = report.first_divergence
    if first is not None and first.tap is not None and first.mode in ("isolated", "propagated"):
        found.append((first.tap, first.mode))
    for tap in report.taps:
        isolated = tap.modes.get("isolated")
        if isolated is not None and isolated.metrics is not None and not isolated.metrics.passed:
            found.append((tap.name, "isolated"))
    seen, ordered = set(), []
    for key in found:
        if key not in seen:
            seen.add(key)
            ordered.append(key)
    return ordered[:MAX_DIAGNOSED]


def attach_diagnoses(report: RunReport, keeper: SampleKeeper, case: Any, graph: Mapping[str, TapSpec],
                     rerun_stage: Callable[[str, Mapping[str, np.ndarray]], Any] | None) -> None:
    """Fill ``ModeResult.diagnoses`` of the stages that fail on their own."""
    from .diagnosis import Diagnosis, caveat_untested, diagnose

    for tap in report.taps:  # the runner's own finding: no array needed to say what happened
        for result in tap.modes.values():
            if result.error_kind == "in_place":
                result.diagnoses = [Diagnosis("in_place", f"{result.error}: the stage's output may be right, but "
                                              "every later reader of that input sees it changed", math.nan)]
    index = tap_index(case.pipeline, case.config)
    n = keeper.samples

    def pipeline_input(name: str) -> np.ndarray:
        value = case.inputs[name]
        return np.asarray(value[:n] if batched(index[name]) else value[...])

    for name, mode in _targets(report):
        result = report.tap(name).modes.get(mode)
        spec = graph.get(name) or index[name]
        reference, candidate = keeper.reference.get(name), keeper.candidate.get((mode, name))
        if (result is None or result.metrics is None or result.metrics.passed or result.error_kind == "in_place"
                or reference is None or candidate is None):
            continue
        # isolated: the candidate ran on the reference's values of its inputs; propagated: only the
        # pipeline's own inputs are shared (a later stage's inputs differ where upstream differs)
        shared = [item for item in spec.inputs if item in case.inputs or (mode == "isolated" and item in keeper.reference)]
        inputs = {item: pipeline_input(item) if item in case.inputs else keeper.reference[item] for item in shared}
        rerun = None
        if mode == "isolated" and rerun_stage is not None:
            def rerun(transformed, tap=name):
                return as_array(rerun_stage(tap, transformed))
        criteria = result.metrics.criteria
        tolerance = criteria.max_rel_to_peak or criteria.max_rel_to_sample_peak or criteria.rtol or 1e-6
        try:
            result.diagnoses = diagnose(reference, candidate, layout=spec.layout, kind=spec.kind, tolerance=tolerance,
                                        cfg=case.config, stage_inputs=inputs,
                                        input_layouts={item: index[item].layout for item in spec.inputs if item in index},
                                        rerun=rerun, reference_dtype=result.metrics.reference_dtype,
                                        candidate_dtype=result.metrics.candidate_dtype)
            if rerun_stage is None and mode == "isolated" and inputs:  # a golden: nothing could be rerun
                result.diagnoses = caveat_untested(result.diagnoses)
        except Exception as error:  # noqa: BLE001 - a diagnosis bug must never hide the verdict
            result.diagnoses = [Diagnosis("diagnosis_failed", f"diagnosis raised {type(error).__name__}: {error}",
                                          math.nan)]
