"""Running a case through a reference and a candidate and judging every tap.

Two modes. ``propagated``: both run the whole pipeline from the same inputs. ``isolated``: each
candidate stage runs on the reference's recorded inputs to that stage (the inputs the candidate's
own graph says it reads), so upstream error cannot accumulate. The batch is cut into chunks that
run in lockstep (``parity/chunks.py``): for each chunk the reference runs (or a golden is read),
then the candidate in both modes, and every tap is compared chunk by chunk with streaming
statistics, so memory does not grow with the batch. Every call into adapter code goes through a
``Guard`` (``parity/guard.py``): whatever the adapter does, the run ends in a report.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from backends.common.backend import StageError
from backends.common.config import NEUTRAL_VALUES
from backends.common.regions import region_names
from backends.common.taps import TapSpec, pipeline_taps

from . import process_end, provenance
from .adapters import Adapter, graph_of
from .audits import affected_taps, config_audit, port_weights_audit, reference_audit, resolve_all, weights_audit
from .capture import OutputLog
from .cases import Case
from .chunks import DEFAULT_CHUNK_BYTES, batch_of, plan
from .diagnose_run import SampleKeeper, attach_diagnoses
from .divergence import amplification, first_divergence
from .dumps import TapDump
from .evidence import EvidenceSettings
from .geometry import LAYOUT_AXES
from .errors import ParityInputError, PipelineNotCovered
from .global_taps import global_specs, needs_pinning, pin_global_taps
from .goldens import Golden
from .guard import DEFAULT_STAGE_TIMEOUT, AdapterFault, Guard, describe_exception
from .jsonable import to_jsonable
from .results import MODES, NOT_COMPARABLE, NOT_REACHED, Audit, ModeResult, RunReport, TapResult
from .tapflow import CaseRun
from .tolerances import ToleranceTable


@dataclasses.dataclass(frozen=True)
class RunOptions:
    modes: tuple[str, ...] = MODES
    taps: tuple[str, ...] | None = None  # globs: which taps to compare (all by default)
    dump_dir: Path | None = None  # write both backends' taps to HDF5 here
    chunk_bytes: int = 64 << 20  # kept for callers: runs compare batch chunk by chunk (spill_bytes sets them)
    spill_bytes: int = DEFAULT_CHUNK_BYTES  # all taps of one batch chunk, one side (sets the chunk size)
    batch_chunk: int | None = None  # at most this many samples per chunk
    stage_timeout: float | None = DEFAULT_STAGE_TIMEOUT  # seconds a stage may run without delivering a tap
    log_path: Path | None = None  # adapter output goes here (default: a file beside the report, or none)
    evidence: EvidenceSettings | None = EvidenceSettings()  # what `run_and_write` keeps for the HTML report
    diagnose: bool = True  # say what kind of mistake each stage that fails on its own makes


def _selected(specs: list[TapSpec], patterns: tuple[str, ...] | None) -> list[TapSpec]:
    if not patterns:
        return specs
    return [spec for spec in specs if any(fnmatch.fnmatchcase(spec.name, pattern) for pattern in patterns)]


def _tap_result(spec: TapSpec, case: Case, inputs: Sequence[str]) -> TapResult:
    return TapResult(name=spec.name, stage=spec.stage, inputs=list(inputs), layout=spec.layout,
                     kind=spec.kind, shape=list(spec.shape(case.config, case.batch)),
                     dtype=spec.dtype(case.config).name)


def _skip(mode: str, kind: str, reason: str) -> ModeResult:
    return ModeResult(mode, None, skipped=reason, skip_kind=kind)


def _uses_tensorflow(described: dict[str, Any], adapter: Any) -> bool:
    """Whether an adapter runs TensorFlow (by its own description, or its frameworks; a golden does not)."""
    if adapter is None:
        return False
    frameworks = {str(name).lower() for name in (getattr(adapter, "frameworks", ()) or ())}
    return bool(frameworks & {"tf", "tensorflow"}) or "tensorflow" in (described.get("versions") or {})


def _describe(guard: Guard, adapter: Any, role: str) -> dict[str, Any]:
    try:
        described = guard.call("describe()", adapter.describe)
    except AdapterFault as fault:
        return {"name": getattr(adapter, "name", role), "describe_error": str(fault)}
    try:
        described = to_jsonable(described)
    except Exception as error:  # noqa: BLE001 - a mapping whose items() is adapter code that raises
        return {"name": getattr(adapter, "name", role),
                "describe_error": f"describe() returned a value that cannot be read ({describe_exception(error)})"}
    return described if isinstance(described, dict) else {"name": getattr(adapter, "name", role),
                                                          "describe": described}


def run_case(case: Case, reference: Adapter | Golden, candidate: Adapter, tolerances: ToleranceTable,
             options: RunOptions = RunOptions(), observers: Iterable[Any] = ()) -> RunReport:
    """Judge ``candidate`` against ``reference`` (an adapter, or a golden file) on ``case``."""
    registry = pipeline_taps(case.pipeline, case.config)
    selected = _selected(registry, options.taps)
    if not selected:
        raise ParityInputError(f"--taps {list(options.taps or ())}: no tap of the {case.pipeline} pipeline matches; "
                               f"its taps are {[spec.name for spec in registry]}")
    log = OutputLog(options.log_path) if options.log_path is not None else None
    guards = {"candidate": Guard("candidate", log, options.stage_timeout)}
    golden = isinstance(reference, Golden)
    if not golden:
        guards["reference"] = Guard("reference", log, options.stage_timeout)
    observers = list(observers)
    dump = None
    if options.dump_dir is not None:
        dump = TapDump(options.dump_dir, case.batch, options.modes)
        observers.append(dump)
    process_end.run_began()
    report = None
    try:
        report = _run(case, reference, candidate, tolerances, options, observers, registry, selected, guards, log)
        return report
    except BaseException:
        if dump is not None:
            dump.abort()
        raise
    finally:
        process_end.run_ended(report is not None and report.passed)
        for guard in guards.values():
            guard.close()
        if log is not None:
            log.close()


def _blind_spots(case: Case, selected: Sequence[TapSpec], golden: bool = False) -> list[str]:
    """A knob at a value where mistakes with it give the same numbers, read by a compared tap: say so, and how
    to cover it (against goldens, whose cases are fixed, with a built-in case that sets the knob otherwise)."""
    notes = []
    for knob, (value, mistakes) in NEUTRAL_VALUES.items():
        readers = [spec.name for spec in selected if knob in spec.knobs]
        if readers and getattr(case.config, knob) == value:
            if golden:
                from .builtin_cases import BUILTIN_CASES

                others = sorted((other for other in BUILTIN_CASES.values() if getattr(other.config, knob) != value
                                 and any(knob in spec.knobs for spec in pipeline_taps(other.pipeline, other.config))),
                                key=lambda other: other.pipeline != case.pipeline)  # this pipeline's cases first
                others = [other.name for other in others]
                advice = (f"check a case that sets it otherwise too ({', '.join(others[:3])})" if others else
                          f"record a golden with another value too (parity record ... --set {knob}=2.5 --goldens DIR)")
            else:
                advice = f"run a case with another value too (--set {knob}=2.5)"
            notes.append(f"{knob} = {value:g} here, so {mistakes} gives the same numbers at {readers[0]} and "
                         f"after; {advice}")
    return notes


def _output_unjudged(results: Sequence[TapResult]) -> list[str]:
    """A run whose last tap (the pipeline's output) a side does not provide can pass on what came before it
    alone: say so, so that a pass over a stub port that declares every stage `not_provided` reads as what it is."""
    if not results or results[-1].status != "not_compared":
        return []
    judged = sum(tap.passed is not None for tap in results)
    why = next((result.skipped for result in results[-1].modes.values() if result.skipped), "")
    return [f"the last tap, {results[-1].name}, was not compared ({why.removeprefix('not compared: ')}); "
            f"{judged} of {len(results)} taps were judged, so a pass says nothing about the output"]


def _check_region_rules(selected: Sequence[TapSpec], case: Case, tolerances: ToleranceTable, modes: Sequence[str],
                        device: str) -> None:
    """A tolerance rule that judges a region a tap does not have is a mistake in the file (exit 2), found
    before anything runs, not a failed tap."""
    for spec in selected:
        spatial = LAYOUT_AXES.get(spec.layout, (None, None, None, None))[3] is not None
        available = (("interior", "border") if spatial else ()) + region_names(spec)
        for mode in modes:
            applied = tolerances.lookup(spec.name, case.config.dtype, device, mode, case.pipeline)
            unknown = [region for region, _ in applied.criteria.regions if region not in available]
            if unknown:
                raise ParityInputError(
                    f"{applied.source}: judges region(s) {unknown} of tap {spec.name!r} ({mode}), which it does not "
                    f"have; its regions: {list(available) or 'none'} (interior and border: taps with two spatial "
                    "axes; others: those the registry gives the tap)")


def _run(case, reference, candidate, tolerances, options, observers, registry, selected, guards, log) -> RunReport:
    golden = isinstance(reference, Golden)
    device = str(getattr(candidate, "device", "cpu"))
    timing: dict[str, float] = {}
    candidate_info = _describe(guards["candidate"], candidate, "candidate")
    if golden:
        reference.check_case(case)
        reference_info = {**reference.backend, "name": "golden", "path": str(reference.path),
                          "recorded_by": reference.backend.get("name")}
    else:
        reference_info = _describe(guards["reference"], reference, "reference")
    adapters = {"candidate": candidate} if golden else {"reference": reference, "candidate": candidate}
    resolved = resolve_all(case, adapters, lambda role, fn, cfg: guards[role].call("resolve_config()", fn, cfg))
    audits = [config_audit(case, resolved)]
    if case.pipeline == "pinn":  # through a real Keras file only where TensorFlow is in use anyway
        tensorflow = any(_uses_tensorflow(info, adapter) for info, adapter in
                         ((candidate_info, candidate), (reference_info, None if golden else reference)))
        audits.append(weights_audit(case, keras_files=tensorflow))
    graphs = {}
    for role, adapter in (("candidate", candidate), ("reference", reference)):
        try:  # an adapter that cannot say what it computes is a usage error, not a verdict
            graphs[role] = (reference.graph() if golden and role == "reference" else
                            graph_of(adapter, case.pipeline, case.config, guards[role]))
        except AdapterFault as fault:
            if fault.kind in ("timeout", "stuck"):  # it hung in describe(), resolve_config() or graph(): a verdict
                return _finish(_hung_before_stages(case, role, fault, reference_info, candidate_info, device,
                                                   options, audits, timing), log)
            if isinstance(fault.original, StageError):  # the adapter's own word: it cannot run this pipeline
                why = f"the {role} cannot run the {case.pipeline} pipeline: {fault.original}"
                raise PipelineNotCovered(f"case {case.name!r}: {why}; choose the cases it covers with --pipeline "
                                         "or --case", case.name, case.pipeline, why) from None
            raise ParityInputError(f"{fault.original if fault.original is not None else fault}") from None
    _check_region_rules(selected, case, tolerances, options.modes, device)
    candidate_inputs = {spec.name: spec.inputs for spec in graphs["candidate"].specs}
    results = [_tap_result(spec, case, candidate_inputs.get(spec.name, spec.inputs)) for spec in selected]
    report = RunReport(case=case.summary() | {"hashes": case.hashes()}, pipeline=case.pipeline,
                       config=case.config.to_dict(), reference=reference_info, candidate=candidate_info,
                       device=device, modes=list(options.modes), audits=audits, taps=results,
                       first_divergence=None, provenance=provenance.collect(device), timing=timing)
    if log is not None:
        report.log = {"path": str(log.path)}
    report.notes += _blind_spots(case, selected, golden)
    blocking = next((audit for audit in audits[1:] if not audit.passed), None)
    not_comparable = affected_taps(audits[0], [graph.specs for graph in graphs.values()], registry)
    if blocking is not None or len(not_comparable) == len(registry):
        reason = (f"not compared: the {blocking.name} audit failed" if blocking is not None
                  else next(iter(not_comparable.values())))
        for tap in results:
            for mode in options.modes:
                tap.modes[mode] = _skip(mode, NOT_COMPARABLE, not_comparable.get(tap.name, reason))
        report.first_divergence = first_divergence(results, audits)
        return _finish(report, log)

    keeper = SampleKeeper() if options.diagnose else None
    batch = batch_of(case.pipeline, case.inputs)
    started = time.perf_counter()
    chunks = plan(case.pipeline, registry, case.config, batch, options.spill_bytes, options.batch_chunk,
                  split_global=True)
    flow = CaseRun(case, reference, candidate, tolerances, options, graphs, selected, not_comparable, guards,
                   observers + ([keeper] if keeper is not None else []), device)
    pinned_global = False
    try:
        if len(chunks) > 1 and needs_pinning(registry, flow.compared_names):
            began = time.perf_counter()
            pinned, why = pin_global_taps(case, reference, candidate, graphs, registry, guards, chunks, golden,
                                          tuple(options.modes))
            timing["global_pass_s"] = time.perf_counter() - began
            if pinned is None:
                chunks = [(0, batch)]
                asked = (f" (--batch-chunk {options.batch_chunk} could not be honoured)" if options.batch_chunk
                         else "")
                report.notes.append(f"ran as one chunk of {batch} samples, not in chunks{asked}: {why}")
            else:
                flow.reference, flow.candidate = pinned
                pinned_global = True
        report.notes += _chunk_notes(chunks, batch, registry, pinned_global)
        for start, stop in chunks:
            if not flow.run_chunk(start, stop, whole=len(chunks) == 1):
                break
    except KeyboardInterrupt:
        report.stopped, report.stop_kind = "interrupted (KeyboardInterrupt) before the run completed", "interrupted"
    except AdapterFault as fault:  # the reference failed: no verdict is possible
        report.stopped, report.stop_kind = f"the reference failed: {fault}", "reference"
    timing.update(flow.timing)
    timing["total_s"] = time.perf_counter() - started
    for role, guard in guards.items():
        if guard.replaced:
            report.notes.append(f"the {role}'s code changed {', '.join(guard.replaced[:8])}"
                                + (f" and {len(guard.replaced) - 8} more" if len(guard.replaced) > 8 else "")
                                + "; the harness put the originals back before comparing (a port that does this "
                                  "changes them for all other code in its process too)")
    if flow.stopped and report.stopped is None:
        report.stopped, report.stop_kind = flow.stopped, flow.stop_kind
    if flow.unknown_delivered:
        names = list(flow.unknown_delivered)
        report.notes.append(f"the candidate delivered {len(names)} tap(s) that pipeline {case.pipeline!r} does not "
                            f"have: {', '.join(map(repr, names[:8]))}{' ...' if len(names) > 8 else ''}; not judged "
                            "(a misspelt or renamed tap? its registry name would be judged)")
    contract = flow.contract_problems
    if contract:
        audits.append(reference_audit(contract))
    if case.weights and callable(getattr(candidate, "canonical_weights", None)) and report.stop_kind is None \
            and guards["candidate"].stuck is None:
        port = _port_weights(case, candidate, guards["candidate"])
        if port is not None:
            audits.append(port)
    by_mode = flow.results()
    errors = {name: result.rel_error for name, result in by_mode.get("propagated", {}).items()}
    for tap in results:
        for mode in options.modes:
            tap.modes[mode] = by_mode.get(mode, {}).get(tap.name) or _skip(mode, NOT_REACHED, "not reached")
        tap.amplification = amplification(tap, errors)
    for observer in observers:
        finish = getattr(observer, "finish", None)
        if finish is not None:
            finish(report)
    report.first_divergence = first_divergence(results, audits, report.stopped, registry)
    report.notes += _output_unjudged(results)
    if keeper is not None and report.stop_kind is None:
        rerun, stand_in = None, False
        if not golden and guards["reference"].stuck is None:
            def rerun(tap, inputs):
                return guards["reference"].call(f"run_stage({tap!r})", reference.run_stage, tap, case.pipeline,
                                                case.config, inputs, case.weights)
        elif golden:
            rerun, stand_in = _stand_in_rerun(case), True
        attach_diagnoses(report, keeper, case, {spec.name: spec for spec in graphs["candidate"].specs}, rerun,
                         stand_in=stand_in)
    return _finish(report, log)


def _chunk_notes(chunks: list[tuple[int, int]], batch: int, registry: list, pinned_global: bool) -> list[str]:
    """What a run cut into chunks could not see: a path that changes with the batch size, and a whole-batch
    statistic (``parity.global_taps``) that goes wrong only over more samples than two chunks hold."""
    if len(chunks) < 2:
        return []
    longest = max(stop - start for start, stop in chunks)
    whole = f"--batch-chunk {batch}: the whole batch at once"
    notes = [f"the batch of {batch} samples ran in {len(chunks)} chunks: each side saw at most {longest} samples per "
             f"call, so a code path that changes with the batch size (another branch from some number of patterns "
             f"on, a state kept between calls) was exercised only up to {longest}; --batch-chunk N sets the samples "
             f"per call ({whole})"]
    specs = global_specs(registry)
    if pinned_global and specs and len(chunks) > 2:
        notes.append(f"the whole-batch statistics ({', '.join(spec.name for spec in specs)}) were computed by each "
                     f"side on {len(chunks)} chunks of up to {longest} samples and combined (the rule checked on the "
                     f"first two chunks joined): a statistic that goes wrong only over more than {2 * longest} samples "
                     f"at once is not seen ({whole}, memory permitting)")
    return notes


def _port_weights(case: Case, candidate: Any, guard: Guard) -> Audit | None:
    """The candidate's ``canonical_weights()`` (its parameters mapped back), after its taps ran."""
    try:
        returned: Any = guard.call("canonical_weights()", candidate.canonical_weights)
    except AdapterFault as fault:
        if isinstance(fault.original, NotImplementedError):  # it says it cannot map them back: no audit
            return None
        returned = RuntimeError(fault.detail)
    return port_weights_audit(case.weights, returned)


def _stand_in_rerun(case: Case):
    """A golden holds no code: the built-in Torch backend (the spec's stages, on the CPU) reruns a stage for the
    diagnosis instead, where it reproduces the golden's own output of that stage (``attach_diagnoses`` checks
    that first, per tap, so a golden of another reference is never explained by code that is not its own)."""
    backend = []

    def rerun(tap, inputs):
        if not backend:
            from backends.torch import TorchBackend  # only when a golden check has something to diagnose

            backend.append(TorchBackend("cpu"))
        return backend[0].run_stage(tap, case.pipeline, case.config, inputs, case.weights)
    return rerun


def _hung_before_stages(case, role, fault, reference_info, candidate_info, device, options, audits,
                        timing) -> RunReport:
    """A side that hangs before any stage ran: the candidate's hang is its failure (exit 1), the
    reference's leaves no verdict (exit 3); either way a report says where."""
    return RunReport(case=case.summary() | {"hashes": case.hashes()}, pipeline=case.pipeline,
                     config=case.config.to_dict(), reference=reference_info, candidate=candidate_info, device=device,
                     modes=list(options.modes), audits=audits, taps=[], first_divergence=None,
                     provenance=provenance.collect(device), timing=timing,
                     stopped=f"the {role} hung before any stage ran: {fault}",
                     stop_kind="candidate" if role == "candidate" else "reference")


def _finish(report: RunReport, log: OutputLog | None) -> RunReport:
    if log is not None:
        log.bound()
        size = log.size()
        report.log = {"path": str(log.path), "bytes": size} if size else {}
        if size and log.dropped:
            report.log["truncated_at"] = log.limit
    return report
