"""One case, chunk by chunk: the reference's taps, the candidate in both modes, every comparison.

``CaseRun.run_chunk`` is called for consecutive batch chunks; ``CaseRun.results()`` then gives a
``ModeResult`` per (mode, tap). Per tap and mode only a ``TapJudge`` (streaming statistics) lives
across chunks; the reference's values of a chunk live until its candidate runs are compared.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from backends.common.backend import Backend, HandoverWatch, InputMutatedError, SetupError
from backends.common.regions import CANVAS_TAPS, covered_canvas, tap_regions
from backends.common.taps import TapSpec, batched, pipeline_inputs, tap_index

from .audits import contract_problems
from .chunks import as_array, read_only, slice_inputs, slice_tap
from .errors import AdapterSetupError
from .goldens import Golden
from .candidate_values import readable_value
from .guard import AdapterFault
from .metrics import ReferenceCache
from .results import NOT_COMPARABLE, NOT_DECLARED, NOT_PROVIDED, NOT_REACHED, NOT_RUN, ModeResult
from .supervise import stage_reached
from .tap_judge import TapJudge

UNDECLARED = ("not judged: the candidate does not compute it and does not say why; provide it (a @tap method), or "
              "declare it with a reason (not_provided = {tap: reason}, or a raw adapter's unprovided())")


class _Sink:
    """The candidate's propagated taps, compared as they arrive."""

    accepts_tensors = True

    def __init__(self, flow: CaseRun) -> None:
        self.flow = flow

    def __call__(self, spec: TapSpec, value: Any) -> None:
        try:
            # the harness's own statistics run here, on the adapter's thread and inside its output capture:
            # NaN/Inf are counted, never warned about into the adapter's log (errstate is per thread)
            with np.errstate(all="ignore"):
                self.flow._deliver(spec, value)
        except Exception as error:  # a harness bug must not pass for the candidate's failure
            self.flow.harness_error = error
            raise

    def input_mutated(self, spec: TapSpec, inputs: list[str]) -> None:
        self.flow._mutated(spec, inputs)

    def changed_after_handover(self, name: str) -> None:
        self.flow._changed(name)


class CaseRun:
    def __init__(self, case, reference, candidate, tolerances, options, graphs, selected, not_comparable, guards,
                 observers, device: str) -> None:
        self.case, self.reference, self.candidate = case, reference, candidate
        self.options, self.guards, self.observers, self.device = options, guards, observers, device
        self.tolerances = tolerances
        self.golden = isinstance(reference, Golden)
        self.timing: dict[str, float] = {}
        self.stopped: str | None = None
        self.stop_kind: str | None = None
        self.contract_problems: list[str] = []
        self.final: dict[str, dict[str, ModeResult]] = {mode: {} for mode in options.modes}
        self.judges: dict[tuple[str, str], TapJudge] = {}
        self.caches: dict[str, ReferenceCache] = {}
        self.regions: dict[str, dict[str, np.ndarray]] = {}
        self.covered: np.ndarray | None = None
        self.batch = case.batch
        self.input_names = {spec.name for spec in pipeline_inputs(case.pipeline)}
        self.index = tap_index(case.pipeline, case.config)
        reference_graph, candidate_graph = graphs["reference"], graphs["candidate"]
        self.reference_provides = {spec.name for spec in reference_graph.specs}
        self.candidate_specs = {spec.name: spec for spec in candidate_graph.specs}
        self.compared: list[TapSpec] = []
        for spec in selected:
            reason = None
            if spec.name in not_comparable:
                self._set_all(spec.name, NOT_COMPARABLE, not_comparable[spec.name])
            elif spec.name in reference_graph.unprovided:
                reason = f"the reference does not provide it ({reference_graph.unprovided[spec.name]})"
            elif spec.name in candidate_graph.unprovided:
                reason = f"the candidate does not provide it ({candidate_graph.unprovided[spec.name]})"
            elif spec.name not in self.candidate_specs:  # forgotten, or a name that never matched: no pass
                self._set_all(spec.name, NOT_DECLARED, UNDECLARED)
            else:
                self.compared.append(self.candidate_specs[spec.name])
            if reason is not None:
                self._set_all(spec.name, NOT_PROVIDED, f"not compared: {reason}")
        self.isolable: dict[str, str | None] = {}
        for spec in self.compared:
            lacking = [name for name in spec.inputs
                       if name not in self.input_names and name not in self.reference_provides]
            self.isolable[spec.name] = None if not lacking else (
                f"not run in isolation: the reference does not provide {', '.join(map(repr, lacking))}, which this "
                f"stage reads ({reference_graph.unprovided.get(lacking[0], 'not computed')}); judged propagated only")
        # taps the candidate computes from the pipeline's own inputs where the registry has a stage in between
        # (a whole-forward adapter): their isolated run is their propagated one, rounding of every upstream stage
        # included, so the propagated tolerance judges it, not a single stage's
        self.from_the_start = {spec.name for spec in self.compared
                               if spec.inputs and all(name in self.input_names for name in spec.inputs)
                               and not all(name in self.input_names for name in self.index[spec.name].inputs)}
        self.propagated_alive = "propagated" in options.modes
        self.compared_names = {spec.name for spec in self.compared}
        self.unknown_delivered: dict[str, None] = {}  # names the candidate's sink got that the registry lacks
        self.reference_specs = {spec.name: spec for spec in reference_graph.specs}
        self.harness_error: Exception | None = None

    def _set_all(self, tap: str, kind: str, reason: str) -> None:
        for mode in self.options.modes:
            self.final[mode][tap] = ModeResult(mode, None, skipped=reason, skip_kind=kind)

    def _tolerance(self, spec: TapSpec, mode: str):
        if mode == "isolated" and spec.name in self.from_the_start:
            mode = "propagated"
        return self.tolerances.lookup(spec.name, self.case.config.dtype, self.device, mode, self.case.pipeline)

    def _judge(self, spec: TapSpec, mode: str) -> TapJudge:
        key = (mode, spec.name)
        if key not in self.judges:
            cache = self.caches.setdefault(spec.name, ReferenceCache())
            self.judges[key] = TapJudge(spec, mode, self._tolerance(spec, mode), self.batch, cache)
        return self.judges[key]

    # ---- one chunk ----
    def run_chunk(self, start: int, stop: int, whole: bool) -> bool:
        self.start, self.stop, self.whole = start, stop, whole
        inputs = {name: read_only(value)
                  for name, value in slice_inputs(self.case.pipeline, self.case.inputs, start, stop, whole).items()}
        self.chunk_inputs = inputs
        began = time.perf_counter()
        self.reference_values = self._reference_chunk(inputs)
        self._add_time("reference_s", began)
        if self.contract_problems:
            self.stopped = "the reference breaks the tap contract (see the reference audit)"
            self.stop_kind = "reference"
            return False
        self.delivered: dict[str, Any] = {}
        self.shared: set[str] = set()
        self.exact_inputs = set(self.input_names)
        if self.propagated_alive:
            began = time.perf_counter()
            self._propagated(inputs)
            self._add_time("propagated_s", began)
        if "isolated" in self.options.modes and self.stopped is None:
            began = time.perf_counter()
            self._isolated(inputs)
            self._add_time("isolated_s", began)
        self.reference_values, self.delivered, self.shared, self.regions = {}, {}, set(), {}
        self.covered = None
        for cache in self.caches.values():
            cache.clear()
        return self.stopped is None

    def _add_time(self, key: str, began: float) -> None:
        self.timing[key] = self.timing.get(key, 0.0) + time.perf_counter() - began

    def _reference_chunk(self, inputs: Mapping[str, np.ndarray]) -> dict[str, Any]:
        values: dict[str, Any] = {}
        needed = {spec.name for spec in self.compared} | {
            name for spec in self.compared for name in spec.inputs if name in self.reference_provides}
        if self.golden:
            for name in needed:
                spec = self.reference_specs[name]
                values[name] = np.asarray(slice_tap(spec, self.reference.tap(name), self.start, self.stop, self.whole))
            return values
        guard = self.guards["reference"]
        cfg, batch = self.case.config, self.stop - self.start

        def keep(spec: TapSpec, value: Any) -> None:
            guard.tick()
            stage_reached("reference", f"delivered {spec.name!r}; the stage after it was running")
            array = as_array(value)
            problem = contract_problems(spec, cfg, batch, array) if spec.reduction is None else None
            if problem is not None and problem not in self.contract_problems:
                self.contract_problems.append(problem)
            if spec.name in needed:
                values[spec.name] = array

        guard.call("run_pipeline()", self.reference.run_pipeline, self.case.pipeline, cfg, inputs,
                   self.case.weights, sink=keep)
        missing = sorted(needed - set(values))
        if missing:
            self.contract_problems.append(f"reference produced no tap {missing[0]!r}"
                                          + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
        return values

    def _compare(self, mode: str, spec: TapSpec, value: Any) -> bool:
        """Feed one chunk of a candidate tap; False when the value is not a tensor at all."""
        value, problem = readable_value(value, self.reference_values.get(spec.name),
                                        tuple(spec.shape(self.case.config, self.stop - self.start)))
        if problem is not None:
            self._error(mode, spec.name, problem, "bad_output")
            return False
        try:
            reference = self.reference_values[spec.name]
            judge = self._judge(spec, mode)
            if spec.name not in self.regions:  # where the tap is judged separately (the canvas's covered part)
                self.regions[spec.name] = self._regions(spec)
            before = judge.worst()
            judge.update(reference, value, self.start, self.stop, self.whole, self.regions[spec.name])
        except (TypeError, ValueError) as error:
            self._error(mode, spec.name, f"returned a value that cannot be compared: {error}", "bad_output")
            return False
        moved = judge.worst_sample(before)
        for observer in self.observers:
            update = getattr(observer, "update", None)
            if update is not None:
                update(mode, spec, reference, value, self.start)
            worst_moved = getattr(observer, "worst_moved", None)
            if worst_moved is not None and moved is not None and self.start <= moved < self.stop:
                worst_moved(mode, spec, reference, value, moved, self.start, self._inputs_of(spec, moved))
        return True

    def _inputs_of(self, spec: TapSpec, sample: int) -> dict[str, np.ndarray]:
        """One sample of the (reference's) per-sample inputs of ``spec``'s stage, as this chunk holds them."""
        row = sample - self.start
        found = {}
        for name in spec.inputs:
            value = self.chunk_inputs.get(name) if name in self.input_names else self.reference_values.get(name)
            item = self.index.get(name)
            if value is not None and item is not None and batched(item) and item.reduction is None:
                found[name] = np.array(np.asarray(value)[row:row + 1], copy=True)
        return found

    def _regions(self, spec: TapSpec) -> dict[str, np.ndarray]:
        covered = None
        if spec.name in CANVAS_TAPS and "positions" in self.chunk_inputs:  # one mask serves the chunk's canvas taps
            if self.covered is None:
                self.covered = covered_canvas(self.case.config, self.chunk_inputs["positions"])
            covered = self.covered
        return tap_regions(spec, self.case.config, self.chunk_inputs, covered)

    def _error(self, mode: str, tap: str, message: str, kind: str) -> None:
        if tap not in self.final[mode] or self.final[mode][tap].error is None:
            self.final[mode][tap] = ModeResult(mode, None, error=message, error_kind=kind)

    # ---- propagated ----
    def _deliver(self, spec: TapSpec, value: Any) -> None:
        self.guards["candidate"].tick()
        stage_reached("candidate", f"delivered {spec.name!r} (propagated); the stage after it was running")
        if spec.name not in self.compared_names:
            if spec.name not in self.index:  # not a tap of the pipeline: said once in the notes, never judged
                self.unknown_delivered.setdefault(spec.name, None)
            return
        if self.delivered.get(spec.name):
            self._error("propagated", spec.name, "delivered twice in one run of the pipeline (the sink takes each tap "
                        "once per chunk)", "bad_output")
            return
        self.delivered[spec.name] = True
        self.handed.add(spec.name, value)
        if not self._compare("propagated", spec, value):
            return
        judge = self.judges[("propagated", spec.name)]
        if judge.exact:
            self.exact_inputs.add(spec.name)
        if ("isolated" in self.options.modes and self.isolable.get(spec.name) is None
                and all(name in self.exact_inputs for name in spec.inputs)
                and (self.whole or spec.reduction != "global")):  # in chunks its isolated value is its own
            # isolated mode would feed this stage exactly these inputs: judge this value now, while it is
            # fresh (a later stage may still change it in place), instead of running the stage again
            if self._compare("isolated", spec, value):
                self.shared.add(spec.name)
                self.judges[("isolated", spec.name)].shared = True

    def _changed_after_handover(self) -> None:
        """Taps the adapter wrote into after handing them over (an adapter without ``Backend``'s own watch)."""
        for name in self.handed.changed():
            self._changed(name)
        self.handed = HandoverWatch()

    def _changed(self, name: str) -> None:
        if name in self.compared_names:
            self._error("propagated", name, f"the candidate changed {name!r} in place after handing it over (a later "
                        "stage, or a cache of it, wrote into the tensor): the stages that read it later saw other "
                        "values than the ones compared here", "in_place")

    def _mutated(self, spec: TapSpec, inputs: list[str]) -> None:
        self.exact_inputs.difference_update(inputs)  # later readers of a changed input run in isolation
        names = ", ".join(repr(name) for name in inputs)
        self._error("propagated", spec.name, f"stage {spec.name!r} modified its input {names} in place", "in_place")

    def _propagated(self, inputs: Mapping[str, np.ndarray]) -> None:
        names = [spec.name for spec in self.compared]
        self.handed = HandoverWatch()
        try:
            self.guards["candidate"].call("run_pipeline()", self.candidate.run_pipeline, self.case.pipeline,
                                          self.case.config, inputs, self.case.weights, sink=_Sink(self), taps=names)
        except AdapterFault as fault:
            if self.harness_error is not None:
                raise self.harness_error from None
            self._changed_after_handover()
            self._propagated_fault(fault, names)
            return
        self._changed_after_handover()
        for name in names:  # a tap the candidate never delivered is a failure, not a silent pass
            if name not in self.delivered:
                self._error("propagated", name, "the candidate's run_pipeline never delivered this tap", "missing")

    def _propagated_fault(self, fault: AdapterFault, names: list[str]) -> None:
        if isinstance(fault.original, (AdapterSetupError, SetupError)):  # no stage ran: one cause, not one per tap
            for name in names:
                if name not in self.delivered:
                    self._error("propagated", name, f"not run: {fault.original}", "setup")
            self.propagated_alive = False
            self.stopped, self.stop_kind = f"the candidate could not be set up: {fault.original}", "candidate"
            return
        failing = fault.tap if fault.tap in names else next((n for n in names if n not in self.delivered), None)
        kind = {"timeout": "timeout", "stuck": "timeout", "exit": "exit", "interrupt": "interrupt"}.get(
            fault.kind, "raised")
        if failing is not None:
            message = fault.detail if isinstance(fault.original, Exception) and fault.tap else str(fault)
            self._error("propagated", failing, f"stage raised: {message}" if kind == "raised" else str(fault), kind)
            later = names[names.index(failing) + 1:]
            for name in later:
                if name not in self.delivered and name not in self.final["propagated"]:
                    self.final["propagated"][name] = ModeResult(
                        "propagated", None, skipped=f"not reached: the candidate failed at {failing!r}",
                        skip_kind=NOT_REACHED)
        self.propagated_alive = False
        if fault.kind in ("timeout", "stuck"):
            self.stopped, self.stop_kind = f"the candidate hung: {fault}", "candidate"

    # ---- isolated ----
    def _isolated(self, inputs: Mapping[str, np.ndarray]) -> None:
        guard = self.guards["candidate"]
        # unknown adapters may write into what they get (``wrapped``: the adapter behind parity.global_taps')
        copy_inputs = not isinstance(getattr(self.candidate, "wrapped", self.candidate), Backend)
        for spec in self.compared:
            reason = self.isolable[spec.name]
            if reason is not None:
                self.final["isolated"].setdefault(spec.name, ModeResult("isolated", None, skipped=reason,
                                                                        skip_kind=NOT_RUN))
                continue
            if self.final["isolated"].get(spec.name) is not None and self.final["isolated"][spec.name].error:
                continue
            if spec.name in self.shared:
                continue
            stage_inputs = {name: inputs[name] if name in self.input_names else self.reference_values[name]
                            for name in spec.inputs}
            # the reference's own arrays: a stage that writes into its input must not change them
            stage_inputs = {name: np.array(value, copy=True) if copy_inputs else read_only(value)
                            for name, value in stage_inputs.items()}
            stage_reached("candidate", f"run_stage({spec.name!r}) (isolated)")
            try:
                value = guard.call(f"run_stage({spec.name!r})", self.candidate.run_stage, spec.name,
                                   self.case.pipeline, self.case.config, stage_inputs, self.case.weights)
            except AdapterFault as fault:
                if self._isolated_fault(spec, fault):
                    return
                continue
            self._compare("isolated", spec, value)

    def _isolated_fault(self, spec: TapSpec, fault: AdapterFault) -> bool:
        """Record a failed isolated stage; True when the run must stop."""
        original = fault.original
        if isinstance(original, NotImplementedError):
            self.final["isolated"][spec.name] = ModeResult("isolated", None, skipped=f"cannot isolate: {original}",
                                                           skip_kind=NOT_RUN)
            return False
        if isinstance(original, InputMutatedError):
            self._error("isolated", spec.name, str(original), "in_place")
            return False
        if fault.kind in ("timeout", "stuck"):
            self._error("isolated", spec.name, str(fault), "timeout")
            self.stopped, self.stop_kind = f"the candidate hung: {fault}", "candidate"
            return True
        kind = {"exit": "exit", "interrupt": "interrupt"}.get(fault.kind, "raised")
        text = fault.detail if original is not None else str(fault)
        self._error("isolated", spec.name, f"stage raised: {text}", kind)
        return False

    # ---- the end ----
    def results(self) -> dict[str, dict[str, ModeResult]]:
        by_mode: dict[str, dict[str, ModeResult]] = {mode: dict(results) for mode, results in self.final.items()}
        for (mode, tap), judge in self.judges.items():
            measured = judge.result()
            current = by_mode[mode].get(tap)
            if measured is None:
                continue
            if current is not None and current.error is not None:
                current.metrics, current.tolerance = measured.metrics, measured.tolerance or current.tolerance
                continue
            if current is not None and current.skip_kind is not None:
                continue
            if getattr(judge, "shared", False):
                measured.note = "its inputs equal the propagated run's bitwise: the propagated output is reused"
            if mode == "isolated" and tap in self.from_the_start:
                inputs = ", ".join(self.candidate_specs[tap].inputs)
                measured.note = (f"the candidate computes it from the pipeline's inputs ({inputs}), not from the "
                                 "stage before it: its isolated value is its propagated one, judged by the "
                                 "propagated tolerance")
            by_mode[mode][tap] = measured
        return by_mode
