"""Running a case through a reference and a candidate and judging every tap.

Two modes. ``propagated``: both run the whole pipeline from the same inputs.
``isolated``: each candidate stage runs on the reference's recorded inputs
to that stage, so upstream error cannot accumulate. The reference's taps are
kept in a store (memory, or HDF5 when large, dumped or a golden); candidate
taps are compared chunk by chunk as they arrive and then dropped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import importlib
import math
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from backends.common.taps import TapSpec, pipeline_taps, tap_index
from backends.common.weights import weight_problems

from . import provenance
from .adapters import Adapter
from .cases import Case
from .errors import ParityInputError
from .goldens import Golden, atomic_h5
from .metrics import compare
from .results import MODES, Audit, Divergence, ModeResult, RunReport, TapResult
from .tolerances import ToleranceTable


DIAGNOSIS_SAMPLES = 16  # samples of a failing tap handed to the diagnosis (issue #9 hook)


@dataclasses.dataclass(frozen=True)
class RunOptions:
    modes: tuple[str, ...] = MODES
    taps: tuple[str, ...] | None = None  # globs: which taps to compare (all by default)
    dump_dir: Path | None = None  # write both backends' taps to HDF5 here
    chunk_bytes: int = 64 << 20  # comparison chunk per side
    spill_bytes: int = 1 << 30  # reference taps beyond this total go to an HDF5 file, not memory


def _selected(specs: list[TapSpec], patterns: tuple[str, ...] | None) -> list[TapSpec]:
    if not patterns:
        return specs
    return [spec for spec in specs if any(fnmatch.fnmatchcase(spec.name, pattern) for pattern in patterns)]


def _tap_bytes(specs: list[TapSpec], case: Case) -> int:
    total = 0
    for spec in specs:
        shape = spec.shape(case.config, case.batch)
        total += int(np.prod([dim or 1 for dim in shape], dtype=np.int64)) * spec.dtype(case.config).itemsize
    return total


class TapStore:
    """The reference's taps by name: numpy arrays in memory or datasets in an HDF5 group."""

    def __init__(self, group: h5py.Group | None = None) -> None:
        self.group = group
        self.arrays: dict[str, np.ndarray] = {}

    def put(self, spec: TapSpec, value: np.ndarray) -> None:
        if self.group is None:
            self.arrays[spec.name] = value
        else:
            self.group.create_dataset(spec.name, data=value)

    def get(self, name: str) -> Any:
        return self.arrays[name] if self.group is None else self.group[name]

    def __contains__(self, name: str) -> bool:
        return name in self.arrays if self.group is None else name in self.group

    def load(self, name: str) -> np.ndarray:
        return np.asarray(self.get(name)[()])


class GoldenStore(TapStore):
    def __init__(self, golden: Golden) -> None:
        super().__init__(golden.h5["taps"])


def config_audit(case: Case, adapters: Mapping[str, Adapter]) -> Audit:
    """Every adapter must resolve the case's configuration to exactly the same knobs."""
    messages, details = [], {}
    for role, adapter in adapters.items():
        try:
            resolved = adapter.resolve_config(case.config)
        except Exception as error:  # an adapter that cannot even resolve the config
            messages.append(f"{role} ({adapter.name}) could not resolve the configuration: {error}")
            continue
        diff = case.config.diff(resolved)
        if diff:
            details[role] = {knob: {"harness": mine, role: theirs} for knob, (mine, theirs) in diff.items()}
            messages += [f"{role} ({adapter.name}) resolves {knob}={theirs!r}, the harness resolved {mine!r}"
                         for knob, (mine, theirs) in diff.items()]
    return Audit("config", not messages, messages, details)


def weights_audit(case: Case) -> Audit:
    """Names, shapes, dtypes and finiteness, then the Keras <-> Torch mapping round trip.

    The round trip goes through a real Keras weights file when TensorFlow is
    installed, else through the Torch state_dict alone (GPU machines).
    """
    problems = weight_problems(case.config, case.weights or {})
    details: dict[str, Any] = {}
    if not problems:
        from . import weightmap

        try:
            importlib.import_module("backends.tf.keras_io")  # can Keras files be written here?
        except ImportError:  # no TensorFlow (GPU machines): the Torch half of the round trip alone
            mapping = weightmap.torch_roundtrip_report(case.config, case.weights)
        else:
            with tempfile.TemporaryDirectory(prefix="parity-weights-") as workdir:
                mapping = weightmap.check_weight_mapping(case.config, case.weights, workdir)
        problems += mapping.problems
        problems += [f"parameter {row.canonical!r} ({row.torch_name}, {row.transform}) changes by "
                     f"{row.max_abs_roundtrip_diff:g} through the Keras/Torch round trip"
                     for row in mapping.rows if not row.ok]
        details["mapping"] = mapping.to_dict()
    return Audit("weights", not problems, problems, details)


def reference_audit(specs: list[TapSpec], case: Case, store: TapStore) -> Audit:
    """The reference's taps must have the registry's shapes and dtypes (a contract, not a tolerance)."""
    messages = []
    for spec in specs:
        if spec.name not in store:
            messages.append(f"reference produced no tap {spec.name!r}")
            continue
        value = store.get(spec.name)
        shape, dtype = tuple(spec.shape(case.config, case.batch)), spec.dtype(case.config)
        if tuple(value.shape) != shape or value.dtype != dtype:
            messages.append(f"reference tap {spec.name!r} is {value.dtype} {tuple(value.shape)}, "
                            f"the registry declares {dtype} {shape}")
    return Audit("reference", not messages, messages)


class _Judge:
    """Looks up tolerances and compares one candidate tap against the reference store."""

    def __init__(self, case: Case, store: TapStore, tolerances: ToleranceTable, device: str, chunk_bytes: int,
                 reference: Adapter | None = None):
        self.case, self.store, self.tolerances = case, store, tolerances
        self.device, self.chunk_bytes = device, chunk_bytes
        self.reference = reference  # a live adapter (not a golden): input hypotheses can rerun its stages

    def tolerance(self, spec: TapSpec, mode: str):
        return self.tolerances.lookup(spec.name, self.case.config.dtype, self.device, mode, self.case.pipeline)

    def judge(self, spec: TapSpec, mode: str, value: np.ndarray) -> ModeResult:
        applied = self.tolerance(spec, mode)
        metrics = compare(spec.name, self.store.get(spec.name), value, applied.criteria, chunk_bytes=self.chunk_bytes)
        result = ModeResult(mode, applied, metrics)
        if not metrics.passed:
            result.diagnoses = self.diagnoses(spec, mode, applied.criteria, value)
        return result

    # ---- diagnosis hook (issue #9): MINIMAL, to be moved into runner v2 by the lead ----
    def diagnoses(self, spec: TapSpec, mode: str, criteria, value: np.ndarray) -> list:
        """``parity.diagnosis.diagnose`` on the first DIAGNOSIS_SAMPLES samples, with the stage's reference inputs."""
        from .diagnosis import Diagnosis, diagnose

        case, index = self.case, tap_index(self.case.pipeline, self.case.config)
        batched = spec.layout[0] in "BM"  # samples along axis 0: hand over the first few only

        def first_samples(name: str) -> np.ndarray:  # sliced before reading: a spilled tap stays on disk
            source = case.inputs[name] if name in case.inputs else self.store.get(name)
            sliced = batched and index[name].layout[0] in "BM"
            return np.asarray(source[:DIAGNOSIS_SAMPLES] if sliced else source[()])

        # isolated: the candidate ran on the reference's recorded inputs; propagated: only the pipeline's own
        # inputs are shared by both sides (a later stage's inputs differ where upstream differs)
        shared = [name for name in spec.inputs if name in case.inputs or (mode == "isolated" and name in self.store)]
        inputs = {name: first_samples(name) for name in shared}
        rerun = None
        if mode == "isolated" and self.reference is not None:  # the candidate saw exactly these inputs
            def rerun(transformed):
                return self.reference.run_stage(spec.name, case.pipeline, case.config, transformed, case.weights)
        tolerance = criteria.max_rel_to_peak or criteria.rtol or 1e-6
        try:
            candidate = np.asarray(value)[:DIAGNOSIS_SAMPLES] if batched else np.asarray(value)
            return diagnose(first_samples(spec.name), candidate, layout=spec.layout, kind=spec.kind,
                            tolerance=tolerance, cfg=case.config, stage_inputs=inputs,
                            input_layouts={name: index[name].layout for name in spec.inputs}, rerun=rerun)
        except Exception as error:  # noqa: BLE001 - a diagnosis bug must never hide the verdict
            return [Diagnosis("diagnosis_failed", f"diagnosis raised {type(error).__name__}: {error}", math.nan)]


def _propagated(candidate: Adapter, case: Case, specs: list[TapSpec], judge: _Judge,
                dump: h5py.Group | None) -> dict[str, ModeResult]:
    results: dict[str, ModeResult] = {}
    names = [spec.name for spec in specs]

    def sink(spec: TapSpec, value: np.ndarray) -> None:
        if dump is not None:
            dump.create_dataset(spec.name, data=value)
        results[spec.name] = judge.judge(spec, "propagated", value)

    try:
        candidate.run_pipeline(case.pipeline, case.config, case.inputs, case.weights, sink=sink, taps=names)
    except Exception as error:  # the candidate broke: the failing tap is named, later ones not reached
        failing = getattr(error, "tap", None)
        if failing not in names:
            failing = next((name for name in names if name not in results), None)
        for spec in specs:
            if spec.name == failing:
                results[spec.name] = ModeResult("propagated", judge.tolerance(spec, "propagated"),
                                                error=f"{type(error).__name__}: {error}")
            elif spec.name not in results:
                results[spec.name] = ModeResult("propagated", None, skipped="not reached: an earlier stage raised")
        return results
    for spec in specs:  # a tap the candidate never delivered is a failure, not a silent pass
        if spec.name not in results:
            results[spec.name] = ModeResult("propagated", judge.tolerance(spec, "propagated"),
                                            error="the candidate's run_pipeline never delivered this tap")
    return results


def _isolated(candidate: Adapter, case: Case, specs: list[TapSpec], judge: _Judge,
              dump: h5py.Group | None) -> dict[str, ModeResult]:
    results: dict[str, ModeResult] = {}
    for spec in specs:
        try:
            stage_inputs = {name: case.inputs[name] if name in case.inputs else judge.store.load(name)
                            for name in spec.inputs}
        except KeyError as error:
            results[spec.name] = ModeResult("isolated", None, skipped=f"reference lacks input {error}")
            continue
        try:
            value = candidate.run_stage(spec.name, case.pipeline, case.config, stage_inputs, case.weights)
        except NotImplementedError as error:
            results[spec.name] = ModeResult("isolated", None, skipped=f"cannot isolate: {error}")
            continue
        except Exception as error:  # recorded against this stage; the others still run
            results[spec.name] = ModeResult("isolated", judge.tolerance(spec, "isolated"),
                                            error=f"{type(error).__name__}: {error}")
            continue
        if dump is not None:
            dump.create_dataset(spec.name, data=value)
        results[spec.name] = judge.judge(spec, "isolated", value)
        del value, stage_inputs
    return results


def _amplification(tap: TapResult, errors: Mapping[str, float | None]) -> float | None:
    own = errors.get(tap.name)
    upstream = [errors[name] for name in tap.inputs if errors.get(name) is not None]
    if own is None or not upstream or max(upstream) == 0:
        return None
    return own / max(upstream)


def _messages(result: ModeResult) -> list[str]:
    if result.error is not None:
        return [f"{result.mode} stage raised: {result.error}"]
    return list(result.metrics.failures) if result.metrics is not None else []


def first_divergence(taps: list[TapResult]) -> Divergence | None:
    for tap in taps:
        isolated, propagated = tap.modes.get("isolated"), tap.modes.get("propagated")
        if isolated is not None and isolated.passed is False:
            return Divergence(tap.name, "isolated", _messages(isolated))
        if (isolated is None or isolated.passed is None) and propagated is not None and propagated.passed is False:
            return Divergence(tap.name, "propagated", _messages(propagated))
    for tap in taps:  # every stage passes alone: the error accumulated past tolerance downstream
        propagated = tap.modes.get("propagated")
        if propagated is not None and propagated.passed is False:
            return Divergence(tap.name, "propagated", _messages(propagated), inherited=True)
    return None


@contextlib.contextmanager
def _stores(case: Case, specs: list[TapSpec], reference: Adapter | Golden, options: RunOptions,
            ) -> Iterator[tuple[TapStore, h5py.Group | None, h5py.Group | None]]:
    """The reference store plus dump groups for the candidate's propagated and isolated taps."""
    with contextlib.ExitStack() as stack:
        candidate_dump = isolated_dump = None
        if options.dump_dir is not None:
            candidate_file = stack.enter_context(atomic_h5(Path(options.dump_dir) / "taps_candidate.h5"))
            candidate_dump = candidate_file.create_group("propagated")
            isolated_dump = candidate_file.create_group("isolated")
        if isinstance(reference, Golden):
            yield GoldenStore(reference), candidate_dump, isolated_dump
            return
        if options.dump_dir is not None:
            reference_file = stack.enter_context(atomic_h5(Path(options.dump_dir) / "taps_reference.h5"))
            store = TapStore(reference_file.create_group("taps"))
        elif _tap_bytes(specs, case) > options.spill_bytes:
            folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="parity-reference-"))
            store = TapStore(stack.enter_context(h5py.File(Path(folder) / "taps.h5", "w")).create_group("taps"))
        else:
            store = TapStore()
        yield store, candidate_dump, isolated_dump


def _tap_result(spec: TapSpec, case: Case) -> TapResult:
    return TapResult(name=spec.name, stage=spec.stage, inputs=list(spec.inputs), layout=spec.layout,
                     kind=spec.kind, shape=list(spec.shape(case.config, case.batch)),
                     dtype=spec.dtype(case.config).name)


def run_case(case: Case, reference: Adapter | Golden, candidate: Adapter, tolerances: ToleranceTable,
             options: RunOptions = RunOptions()) -> RunReport:
    """Judge ``candidate`` against ``reference`` (an adapter, or a golden file) on ``case``."""
    specs = pipeline_taps(case.pipeline, case.config)
    selected = _selected(specs, options.taps)
    if not selected:
        raise ParityInputError(f"--taps {list(options.taps or ())}: no tap of the {case.pipeline} pipeline matches; "
                               f"its taps are {[spec.name for spec in specs]}")
    device = getattr(candidate, "device", "cpu")
    results = [_tap_result(spec, case) for spec in selected]
    if isinstance(reference, Golden):
        reference.check_case(case)
        reference_info = {**reference.backend, "name": "golden", "path": str(reference.path),
                          "recorded_by": reference.backend.get("name")}
        audits = [config_audit(case, {"candidate": candidate})]
    else:
        reference_info = reference.describe()
        audits = [config_audit(case, {"reference": reference, "candidate": candidate})]
    if case.pipeline == "pinn":
        audits.append(weights_audit(case))
    timing: dict[str, float] = {}
    report = RunReport(case=case.summary() | {"hashes": case.hashes()}, pipeline=case.pipeline,
                       config=case.config.to_dict(), reference=reference_info, candidate=candidate.describe(),
                       device=device, modes=list(options.modes), audits=audits, taps=results,
                       first_divergence=None, provenance=provenance.collect(device), timing=timing)
    failed = next((audit for audit in audits if not audit.passed), None)
    if failed is not None:  # no tensor is compared under a mismatched configuration or broken weights
        report.first_divergence = Divergence(None, failed.name, failed.messages)
        return report
    with _stores(case, specs, reference, options) as (store, candidate_dump, isolated_dump):
        if not isinstance(reference, Golden):
            started = time.perf_counter()
            reference.run_pipeline(case.pipeline, case.config, case.inputs, case.weights, sink=store.put)
            timing["reference_s"] = time.perf_counter() - started
        contract = reference_audit(selected, case, store)
        audits.append(contract)
        if not contract.passed:
            report.first_divergence = Divergence(None, "reference", contract.messages)
            return report
        judge = _Judge(case, store, tolerances, device, options.chunk_bytes,
                       reference=None if isinstance(reference, Golden) else reference)
        by_mode = {}
        for mode, run in (("propagated", _propagated), ("isolated", _isolated)):
            if mode in options.modes:
                started = time.perf_counter()
                by_mode[mode] = run(candidate, case, selected, judge,
                                    candidate_dump if mode == "propagated" else isolated_dump)
                timing[f"{mode}_s"] = time.perf_counter() - started
    errors = {name: result.rel_error for name, result in by_mode.get("propagated", {}).items()}
    for tap in results:
        for mode, mode_results in by_mode.items():
            tap.modes[mode] = mode_results.get(tap.name) or ModeResult(mode, None, skipped="no result")
        tap.amplification = _amplification(tap, errors)
    report.first_divergence = first_divergence(results)
    unjudged = next((tap for tap in results if tap.passed is None), None)
    if report.first_divergence is None and unjudged is not None:  # no verdict is not a pass
        reasons = [f"{mode}: {result.skipped}" for mode, result in unjudged.modes.items() if result.skipped]
        report.first_divergence = Divergence(unjudged.name, "unjudged",
                                             [f"{unjudged.name}: not judged in any mode"] + reasons)
    return report
