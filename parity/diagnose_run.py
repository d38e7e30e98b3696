"""Diagnosis inside a run: the first samples of every tap are kept, failing taps are diagnosed after.

``SampleKeeper`` observes the run (``update`` per compared chunk) and keeps, for each tap, the
first ``samples`` samples of the reference and of the candidate in each mode, plus the sample that
holds the worst element when it is a later one: a bounded copy (``samples + 1`` samples of each tap). After the run, ``attach_diagnoses`` hands each stage that fails
on its own (isolated mode, or propagated where isolated could not judge it) to
``parity.diagnosis.diagnose`` with the reference's values of the stage's inputs for the same
samples and, where the reference is a live adapter, a ``rerun`` of its stage on transformed
inputs. Failures downstream of a failing stage are not diagnosed again: they inherit its cause.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from backends.common.taps import TapSpec, batched, tap_index

from .chunks import as_array
from .results import RunReport

if TYPE_CHECKING:
    from .diagnosis import Diagnosis

DIAGNOSIS_SAMPLES = 8
MAX_DIAGNOSED = 6  # stages diagnosed per run (each may rerun the reference's stage a few dozen times)


class SampleKeeper:
    """Observer: the first ``samples`` samples of each side of each compared tap, and, per tap and mode, the
    sample holding the worst element where that lies beyond them (with the stage's inputs for it): a fault
    confined to later samples (a later chunk, one sample) is still diagnosed on samples that show it."""

    def __init__(self, samples: int = DIAGNOSIS_SAMPLES) -> None:
        self.samples = samples
        self.reference: dict[str, np.ndarray] = {}
        self.candidate: dict[tuple[str, str], np.ndarray] = {}
        self.unbatched: set[str] = set()
        # (mode, tap) -> (sample, reference, candidate, {input: value}), each one sample long
        self.worst: dict[tuple[str, str], tuple[int, np.ndarray, np.ndarray, dict[str, np.ndarray]]] = {}

    def worst_moved(self, mode: str, spec: TapSpec, reference: Any, candidate: Any, sample: int, start: int,
                    inputs: Mapping[str, np.ndarray]) -> None:
        if sample < self.samples:
            self.worst.pop((mode, spec.name), None)
            return
        row = sample - start
        try:
            self.worst[(mode, spec.name)] = (sample, np.array(np.asarray(reference)[row:row + 1], copy=True),
                                             np.array(as_array(candidate)[row:row + 1], copy=True), dict(inputs))
        except (IndexError, ValueError, TypeError):
            pass

    def arrays(self, mode: str, name: str, inputs: Mapping[str, np.ndarray]) -> Kept | None:
        """The kept samples of a tap in a mode, the worst one appended when it is not among the first (an
        input without that sample, e.g. the probe, is the same for every sample); None when nothing is kept."""
        reference, candidate = self.reference.get(name), self.candidate.get((mode, name))
        if reference is None or candidate is None:
            return None
        samples = list(range(len(reference))) if reference.ndim and name not in self.unbatched else []
        extra = self.worst.get((mode, name))
        if extra is None or reference.shape[1:] != extra[1].shape[1:] or candidate.shape[1:] != extra[2].shape[1:]:
            return Kept(reference, candidate, dict(inputs), samples)
        sample, worst_reference, worst_candidate, worst_inputs = extra
        joined = {key: np.concatenate([np.asarray(value), worst_inputs[key]])
                  if key in worst_inputs and np.asarray(value).shape[1:] == worst_inputs[key].shape[1:]
                  and len(value) == len(reference) else value for key, value in inputs.items()}
        return Kept(np.concatenate([reference, worst_reference]), np.concatenate([candidate, worst_candidate]),
                    joined, samples + [sample])


    def update(self, mode: str, spec: TapSpec, reference: Any, candidate: Any, start: int) -> None:
        try:
            self._update(mode, spec, reference, candidate, start)
        except (IndexError, ValueError, TypeError):  # a value of the wrong rank: the comparison reports it
            pass

    def _update(self, mode: str, spec: TapSpec, reference: Any, candidate: Any, start: int) -> None:
        if spec.reduction == "global":  # in chunks each value so far (parity.global_taps): the last counts
            self.candidate[(mode, spec.name)] = np.array(as_array(candidate), copy=True)
            self.reference[spec.name] = np.array(reference, copy=True)
            return
        if not batched(spec):  # axis 0 is not the batch (the probe): its rows are not samples
            self.unbatched.add(spec.name)
        if not (batched(spec) and spec.reduction is None):  # the same for every chunk: kept once
            self.candidate.setdefault((mode, spec.name), np.array(as_array(candidate), copy=True))
            self.reference.setdefault(spec.name, np.array(reference, copy=True))
            return
        if start >= self.samples:
            return
        take = self.samples - start
        _keep(self.candidate, (mode, spec.name), as_array(candidate)[:take], start)
        _keep(self.reference, spec.name, np.asarray(reference)[:take], start)


@dataclasses.dataclass
class Kept:
    """What a diagnosis sees of one tap: reference, candidate and stage inputs of the same samples."""

    reference: np.ndarray
    candidate: np.ndarray
    inputs: dict[str, np.ndarray]
    samples: list[int]  # the batch index of each (empty for a tap without samples)

    def only_differing(self, tolerance: float) -> tuple[Kept, Diagnosis | None]:
        """Where some kept samples agree and others do not, the differing ones alone (each hypothesis then
        fits the fault, not the fault and the agreement around it) and a fact saying so."""
        from .diagnosis import Diagnosis

        if len(self.samples) < 2 or self.reference.shape != self.candidate.shape:
            return self, None
        with np.errstate(all="ignore"):
            a, b = np.asarray(self.reference), np.asarray(self.candidate)
            peak = _finite_max(np.abs(a))
            if not peak or not math.isfinite(peak):
                return self, None
            rows = np.abs(a.astype(np.complex128 if np.iscomplexobj(a) or np.iscomplexobj(b) else np.float64)
                          - b).reshape(len(a), -1)
            errors = np.where(np.isfinite(rows), rows, np.inf).max(axis=1) / peak
        differing = [position for position, error in enumerate(errors) if not error <= tolerance]
        if not differing or len(differing) == len(self.samples):
            return self, None
        agreeing = [self.samples[position] for position in range(len(self.samples)) if position not in differing]
        shown = [self.samples[position] for position in differing]
        which = f"sample {shown[0]} differs" if len(shown) == 1 else f"samples {_ranges(shown)} differ"
        copied = _copied_from(a, b, differing, tolerance * peak)
        cause = (f"each of them holds sample {self.samples[copied]}'s values: one sample broadcast to the batch (a "
                 "batch dimension lost or indexed with 0)" if copied is not None else
                 "the fault depends on the sample (its place in the batch or chunk, or its values)")
        first = [sample for sample in self.samples if sample < len(self.samples)]
        kept = (f"the first {len(first)} and the worst, {self.samples[-1]}" if len(first) < len(self.samples)
                else f"the first {len(first)}")
        fact = Diagnosis("samples_differ", f"of the {len(self.samples)} samples kept for the diagnosis ({kept}) only "
                         f"{which} (samples {_ranges(agreeing)} agree within tolerance; the others were not kept): "
                         f"{cause}; diagnosed on those samples",
                         math.nan, {"fact": True, "differing": shown, "agreeing": agreeing,
                                    "copied_from": None if copied is None else self.samples[copied]})
        length = len(self.samples)
        subset = Kept(a[differing], b[differing],
                      {key: np.asarray(value)[differing] if np.ndim(value) and len(value) == length else value
                       for key, value in self.inputs.items()}, shown)
        return subset, fact


def _copied_from(a: np.ndarray, b: np.ndarray, differing: list[int], limit: float) -> int | None:
    """The position of an agreeing sample whose reference every differing candidate sample equals, if any."""
    for source in range(len(a)):
        if source in differing:
            continue
        with np.errstate(all="ignore"):
            if all(_finite_max(np.abs(b[index] - a[source])) <= limit for index in differing):
                return source
    return None


def _finite_max(values: np.ndarray) -> float:
    """The largest finite value (0 when there is none), without numpy's all-NaN warning."""
    finite = values[np.isfinite(values)]
    return float(finite.max()) if finite.size else 0.0


def _ranges(samples: list[int]) -> str:
    """[0, 1, 2, 5, 9, 10] -> '0-2, 5, 9-10'."""
    parts, run = [], []
    for sample in samples:
        if run and sample == run[-1] + 1:
            run.append(sample)
            continue
        if run:
            parts.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [sample]
    if run:
        parts.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ", ".join(parts)

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


def _reproduces(rerun: Callable, kept: Kept, tolerance: float) -> bool:
    """Whether a stand-in's stage gives the golden's own output of that stage on the golden's inputs."""
    try:
        again = np.asarray(rerun(kept.inputs))
        reference = np.asarray(kept.reference)
        if again.shape != reference.shape:
            return False
        with np.errstate(all="ignore"):
            peak = _finite_max(np.abs(reference))
            error = float(np.abs(reference - again).max(initial=0.0))  # NaN where either is NaN: no match
        return bool(peak) and math.isfinite(error) and error <= tolerance * peak
    except Exception:  # noqa: BLE001 - no stand-in (no Torch here, a stage it lacks): nothing is rerun
        return False


def attach_diagnoses(report: RunReport, keeper: SampleKeeper, case: Any, graph: Mapping[str, TapSpec],
                     rerun_stage: Callable[[str, Mapping[str, np.ndarray]], Any] | None,
                     stand_in: bool = False) -> None:
    """Fill ``ModeResult.diagnoses`` of the stages that fail on their own."""
    from .diagnosis import LEVELS, Diagnosis, caveat_untested, diagnose

    for tap in report.taps:  # the runner's own finding: no array needed to say what happened
        for result in tap.modes.values():
            if result.error_kind == "in_place":
                result.diagnoses = [Diagnosis("in_place", f"{result.error}: the stage's output may be right, but "
                                              "it wrote into a tensor it was handed (torch's version counter of the "
                                              "input moved: an in-place op such as relu_ or x += ...), so every "
                                              "later reader of that input may see it changed; even a write that "
                                              "leaves these values as they were changes other inputs", math.nan)]
    index = tap_index(case.pipeline, case.config)
    n = keeper.samples

    def pipeline_input(name: str) -> np.ndarray:
        value = case.inputs[name]
        return np.asarray(value[:n] if batched(index[name]) else value[...])

    for name, mode in _targets(report):
        result = report.tap(name).modes.get(mode)
        spec = graph.get(name) or index[name]
        if (result is None or result.metrics is None or result.metrics.passed or result.error_kind == "in_place"
                or name not in keeper.reference or (mode, name) not in keeper.candidate):
            continue
        # isolated: the candidate ran on the reference's values of its inputs; propagated: only the
        # pipeline's own inputs are shared (a later stage's inputs differ where upstream differs)
        shared = [item for item in spec.inputs if item in case.inputs or (mode == "isolated" and item in keeper.reference)]
        inputs = {item: pipeline_input(item) if item in case.inputs else keeper.reference[item] for item in shared}
        criteria = result.metrics.criteria
        tolerance = criteria.max_rel_to_peak or criteria.max_rel_to_sample_peak or criteria.rtol or 1e-6
        kept, subset_fact = keeper.arrays(mode, name, inputs).only_differing(tolerance)
        rerun = None
        # the reference's stage reads the registry's inputs: a candidate that declares others in their place (a
        # fused or whole forward) gives nothing the reference's stage could be rerun on
        stage_reads = set(index[name].inputs)
        fused = not stage_reads <= set(spec.inputs)
        if mode == "isolated" and rerun_stage is not None and not fused:
            def rerun(transformed, tap=name, reads=stage_reads):
                return as_array(rerun_stage(tap, {item: value for item, value in transformed.items() if item in reads}))
            if stand_in and not _reproduces(rerun, kept, tolerance):
                rerun = None
        try:
            result.diagnoses = diagnose(kept.reference, kept.candidate, layout=spec.layout, kind=spec.kind,
                                        tolerance=tolerance, cfg=case.config, stage_inputs=kept.inputs,
                                        input_layouts={item: index[item].layout for item in spec.inputs if item in index},
                                        rerun=rerun, reference_dtype=result.metrics.reference_dtype,
                                        candidate_dtype=result.metrics.candidate_dtype,
                                        batch=case.batch if index[name].reduction in ("global", "mean") else None)
            if subset_fact is not None:  # after a rounding-level reading: which samples cross a bound by rounding
                levels = bool(result.diagnoses) and result.diagnoses[0].kind in LEVELS
                result.diagnoses = (list(result.diagnoses) + [subset_fact] if levels
                                    else [subset_fact] + list(result.diagnoses))
            if rerun is None and mode == "isolated" and inputs and fused:
                declared = ", ".join(spec.inputs)
                result.diagnoses = caveat_untested(
                    result.diagnoses, why=f"the candidate computes {name} from {declared}, where the reference's "
                    f"stage reads {', '.join(index[name].inputs)}", how="; a tap method per stage lets it be tested")
            elif rerun is None and mode == "isolated" and inputs:  # a golden: nothing could be rerun
                result.diagnoses = caveat_untested(result.diagnoses)
        except Exception as error:  # noqa: BLE001 - a diagnosis bug must never hide the verdict
            result.diagnoses = [Diagnosis("diagnosis_failed", f"diagnosis raised {type(error).__name__}: {error}",
                                          math.nan)]
