"""Batch-global taps in a chunked run: two passes over the chunks instead of one whole-batch chunk.

A tap with ``reduction == "global"`` (the simulate pipeline's intensity scale, a statistic of every
scan position that a later stage reads) has a different value in every chunk. When the registry
says how chunk values combine (``TapSpec.combine``), the run still goes in chunks:

1. ``pin_global_taps`` runs every chunk of each side's pipeline once, keeps only the chunk values
   of the global taps and combines them into the whole batch's value;
2. the ordinary chunked run then sees each adapter through ``Pinned``: its pipeline hands over the
   whole batch's value of a global tap, and the stages that read it (directly or not) are run again
   with that value (``run_stage``), so every chunk gets what one whole-batch run would give, to
   rounding. In isolated mode the candidate's global stage runs on each chunk of the reference's
   inputs, its values combined as they come; the judge compares the last, the whole batch's.

Memory stays that of one chunk; the cost is a second forward of each side. Before trusting the
combination, pass 1 checks it on the adapter itself: its global tap over the first two chunks
joined must equal the combination of its two chunk values, to rounding (a stage that sums where it
should average, or reads only the first pattern, does not combine and must be judged on the whole
batch). Where that fails, or an adapter does not compute a global tap itself, does not read it as
the registry's stages do, cannot run those stages alone, or fails in pass 1, the run goes as one
whole-batch chunk, as before, and the report says why.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from backends.common.taps import TapSpec, batched, tap_index

from .chunks import as_array, read_only, slice_inputs
from .guard import AdapterFault, Guard

__all__ = ["Pinned", "combine_chunks", "global_specs", "needs_pinning", "pin_global_taps"]

AGREEMENT_ULPS = 64  # the joined-chunks check: a correct stage combines to within rounding, a wrong one does not


def global_specs(registry: list[TapSpec]) -> list[TapSpec]:
    return [spec for spec in registry if spec.reduction == "global"]


def needs_pinning(registry: list[TapSpec], selected: set[str]) -> bool:
    """Whether a compared tap is a global tap or reads one (otherwise chunk values are never looked at)."""
    names = {spec.name for spec in global_specs(registry)}
    return bool(selected & (names | set(_dependents(registry, names))))


def combine_chunks(spec: TapSpec, parts: list[tuple[Any, int]]) -> np.ndarray | None:
    """The whole batch's value of a global tap from (chunk value, chunk size) pairs; None if it cannot be.

    ``inverse_square_mean``: the tap is c / sqrt(mean over samples of s), so the whole batch's
    mean of s is the chunks' 1/value**2 averaged by size (c cancels). A chunk of zero power (an
    infinite value) adds nothing; a NaN chunk makes the whole NaN, as one whole-batch run would.
    """
    values = [np.asarray(as_array(value)) for value, _ in parts]
    if (not values or spec.combine != "inverse_square_mean"
            or any(value.shape != () or value.dtype.kind != "f" for value in values)):
        return None
    wide = np.array([float(value) for value in values])
    counts = np.array([count for _, count in parts], dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        combined = np.sum(counts / counts.sum() * wide ** -2.0) ** -0.5
    return np.asarray(combined, dtype=values[0].dtype)


def _dependents(specs: list[TapSpec], roots: set[str]) -> list[str]:
    """The taps that read one of ``roots``, directly or through other taps, in stage order."""
    reached, order = set(roots), []
    for spec in specs:
        if spec.name not in roots and reached.intersection(spec.inputs):
            reached.add(spec.name)
            order.append(spec.name)
    return order


def _usable(graph_specs: list[TapSpec], registry: list[TapSpec], names: set[str]) -> bool:
    """The adapter computes every global tap and its stages read them as the registry's do."""
    provided = {spec.name for spec in graph_specs}
    if not names <= provided:
        return False
    expected = [name for name in _dependents(registry, names) if name in provided]
    return _dependents(graph_specs, names) == expected


class _Collect:
    """A sink that keeps the named taps of one run (canonical numpy) and ticks the guard."""

    accepts_tensors = True  # as the backend holds them: only the kept taps are converted

    def __init__(self, names: set[str], guard: Guard) -> None:
        self.names, self.guard, self.values = names, guard, {}
        self.delivered: list[str] = []

    def __call__(self, spec: TapSpec, value: Any) -> None:
        self.guard.tick()
        self.delivered.append(spec.name)
        if spec.name in self.names:
            self.values[spec.name] = np.array(as_array(value), copy=True)


class _Side:
    """One adapter in pass 1: its pipeline on chunks (keeping the named taps), its stages alone."""

    def __init__(self, role: str, case: Any, adapter: Any, guard: Guard, specs: list[TapSpec]) -> None:
        self.role, self.case, self.adapter, self.guard, self.specs = role, case, adapter, guard, specs

    def run(self, inputs: Mapping[str, Any], keep: set[str]) -> dict[str, Any]:
        """One chunk of the pipeline: the taps in ``keep``. A hang is put on the stage it hung in."""
        collect = _Collect(keep, self.guard)
        try:
            self.guard.call("run_pipeline()", self.adapter.run_pipeline, self.case.pipeline, self.case.config,
                            inputs, self.case.weights, sink=collect)
        except AdapterFault as fault:
            if fault.kind == "timeout":  # abandoned: the run will name the stage it hung in, not its first
                self.guard.stuck_tap = next((s.name for s in self.specs if s.name not in collect.delivered), None)
            raise
        return collect.values

    def run_dependents(self, names: set[str], held: dict[str, Any], inputs: Mapping[str, Any]) -> str | None:
        """Each stage that reads a global tap, alone on this chunk's values: what pass 2 will do. None when
        each gives what the pipeline gave (to rounding), else what differs; AdapterFault if it cannot run."""
        by_name = {spec.name: spec for spec in self.specs}
        for name in _dependents(self.specs, names):
            stage = {key: inputs[key] if key in inputs else held[key] for key in by_name[name].inputs}
            try:
                alone = np.asarray(as_array(self.guard.call(
                    f"run_stage({name!r})", self.adapter.run_stage, name, self.case.pipeline, self.case.config, stage,
                    self.case.weights)))
            except AdapterFault as fault:
                if fault.kind == "timeout":
                    self.guard.stuck_tap = name
                raise
            piped = np.asarray(held[name])
            peak = float(np.max(np.abs(piped))) if piped.size else 0.0
            tolerance = AGREEMENT_ULPS * float(np.finfo(piped.dtype).eps) * peak if piped.dtype.kind == "f" else 0.0
            if alone.shape != piped.shape or not (np.array_equal(alone, piped) or (
                    np.all(np.isfinite(alone)) and float(np.max(np.abs(alone - piped))) <= tolerance)):
                return (f"its {name!r} run alone differs from what its pipeline computed on the same chunk (pass 2 "
                        "would judge the stage run alone, not the pipeline's output)")
            held[name] = alone
        return None


def _reads(specs: list[TapSpec], names: set[str]) -> set[str]:
    """The taps one chunk must keep to run each stage that reads a global tap alone: their inputs."""
    by_name = {spec.name: spec for spec in specs}
    return names | {name for tap in _dependents(specs, names) for name in by_name[tap].inputs}


def _joined(case: Any, chunks: list[tuple[int, int]]) -> dict[str, Any]:
    """The inputs of the first two chunks as one."""
    index = tap_index(case.pipeline, case.config)
    first = slice_inputs(case.pipeline, case.inputs, *chunks[0], False)
    second = slice_inputs(case.pipeline, case.inputs, *chunks[1], False)
    return {name: read_only(np.concatenate([np.asarray(value), np.asarray(second[name])])
                            if batched(index[name]) else value) for name, value in first.items()}


def _agrees(spec: TapSpec, parts: list[tuple[Any, int]], joined: Any) -> str | None:
    """None when the chunk values combine to the joined run's value, to rounding; else what differs."""
    combined, whole = combine_chunks(spec, parts), np.asarray(as_array(joined))
    if combined is None or whole.shape != () or whole.dtype.kind != "f":
        return f"its chunk values of {spec.name!r} cannot be combined (a scalar float each is expected)"
    a, b = float(combined), float(whole)
    if a == b or (np.isnan(a) and np.isnan(b)):
        return None
    tolerance = AGREEMENT_ULPS * float(np.finfo(whole.dtype).eps) * max(abs(a), abs(b))
    if np.isfinite(a) and np.isfinite(b) and abs(a - b) <= tolerance:
        return None
    return (f"its {spec.name!r} over the first two chunks joined is {b!r}, the combination of its two chunk "
            f"values {a!r} (the registry's rule {spec.combine!r}): a whole-batch statistic computed otherwise, or "
            "a stage before it whose values depend on how the batch is cut (its per-sample taps then differ between "
            "a chunked and a whole run)")


def pin_global_taps(case: Any, reference: Any, candidate: Any, graphs: Mapping[str, Any], registry: list[TapSpec],
                    guards: Mapping[str, Guard], chunks: list[tuple[int, int]], golden: bool,
                    modes: tuple[str, ...]) -> tuple[tuple[Any, Any] | None, str | None]:
    """((reference, candidate) wrapped so that their global taps hold the whole batch's values, None),
    or (None, why the run must go as one chunk)."""
    specs = global_specs(registry)
    names = {spec.name for spec in specs}
    if any(not spec.combine for spec in specs):
        return None, f"{sorted(names)}: no rule for combining chunk values in the registry"
    roles = ["candidate"] if golden else ["reference", "candidate"]
    for role in roles:
        if not _usable(graphs[role].specs, registry, names):
            return None, (f"the {role} does not compute {sorted(names)} as the registry's stages do (its own "
                          f"stage, read by the same stages)")
    sides = {role: _Side(role, case, {"reference": reference, "candidate": candidate}[role], guards[role],
                         graphs[role].specs) for role in roles}
    propagated = "propagated" in modes
    parts: dict[str, dict[str, list]] = {role: {name: [] for name in names} for role in roles}
    try:
        for number, (start, stop) in enumerate(chunks):
            inputs = {name: read_only(value)
                      for name, value in slice_inputs(case.pipeline, case.inputs, start, stop, False).items()}
            for role, side in sides.items():
                if role == "candidate" and not propagated and number >= 2:
                    continue  # isolated mode alone: its pipeline only for the check below
                rerun = role == "reference" or propagated  # pass 2 runs its readers alone: do they agree?
                keep = _reads(side.specs, names) | set(_dependents(side.specs, names)) if rerun else set(names)
                values = side.run(inputs, keep)
                problem = side.run_dependents(names, values, inputs) if rerun else None
                if problem is not None:
                    return None, f"the {role}: {problem}"
                for name in names:
                    parts[role][name].append((values[name], stop - start))
        joined = _joined(case, chunks)
        for role, side in sides.items():
            whole = side.run(joined, set(names))
            for spec in specs:
                problem = _agrees(spec, parts[role][spec.name][:2], whole[spec.name])
                if problem is not None:
                    return None, f"the {role}: {problem}"
    except AdapterFault as fault:
        return None, f"the {fault.kind} of a first-pass call ({fault})"
    except KeyError as error:
        return None, f"a first-pass tap was not delivered ({error})"
    combined = {role: {spec.name: combine_chunks(spec, parts[role][spec.name]) for spec in specs}
                for role in roles if role == "reference" or propagated}
    wrapped_reference = reference if golden else Pinned(reference, graphs["reference"].specs, specs,
                                                        combined["reference"])
    return (wrapped_reference, Pinned(candidate, graphs["candidate"].specs, specs, combined.get("candidate", {}))), None


class _Relay:
    """The inner pipeline's sink: global taps replaced, their dependents held back, the rest passed on."""

    def __init__(self, outer: Any, pinned: Mapping[str, np.ndarray], dependents: set[str], keep: set[str],
                 wanted: set[str] | None) -> None:
        self.outer, self.pinned, self.dependents, self.keep, self.wanted = outer, pinned, dependents, keep, wanted
        self.accepts_tensors = bool(getattr(outer, "accepts_tensors", False))
        self.held: dict[str, np.ndarray] = {}  # the taps in ``keep``, as handed on (global ones pinned)
        self.own: dict[str, np.ndarray] = {}  # each global tap as the adapter computed it on this chunk
        if callable(getattr(outer, "input_mutated", None)):
            self.input_mutated = outer.input_mutated

    def __call__(self, spec: TapSpec, value: Any) -> None:
        if spec.name in self.pinned:
            self.own[spec.name] = np.array(as_array(value), copy=True)
            value = self.pinned[spec.name]
        if spec.name in self.keep:
            self.held[spec.name] = np.array(as_array(value), copy=True)
        if spec.name in self.dependents:
            return  # computed from this chunk's value of a global tap: recomputed with the whole batch's
        if self.outer is not None and (self.wanted is None or spec.name in self.wanted):
            self.outer(spec, value)


class Pinned:
    """An adapter whose global taps are the whole batch's (see the module docstring); all else is its own."""

    def __init__(self, inner: Any, specs: list[TapSpec], global_taps: list[TapSpec],
                 pinned: Mapping[str, np.ndarray]) -> None:
        self.inner = self.wrapped = inner
        self.pinned = dict(pinned)
        self.global_taps = {spec.name: spec for spec in global_taps}
        self.specs = {spec.name: spec for spec in specs}
        self.dependents = _dependents(specs, set(self.global_taps))
        self.keep = ({name for tap in [*self.dependents, *self.global_taps] for name in self.specs[tap].inputs}
                     | set(self.global_taps))
        self.isolated: dict[str, list[tuple[Any, int]]] = {name: [] for name in self.global_taps}
        self.last_chunk: _Relay | None = None  # the last pipeline run's relay: what it held, its own values

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def run_pipeline(self, pipeline: str, cfg: Any, inputs: Mapping[str, np.ndarray], weights: Any = None,
                     sink: Any = None, taps: Any = None) -> None:
        wanted = None if taps is None else set(taps)
        relay = _Relay(sink, self.pinned, set(self.dependents), self.keep, wanted)
        inner_taps = None if wanted is None else sorted(wanted | self.keep | set(self.dependents))
        self.last_chunk = None  # a run that fails leaves nothing to reuse
        self.inner.run_pipeline(pipeline, cfg, inputs, weights, sink=relay, taps=inner_taps)
        self.last_chunk, held = relay, relay.held
        for name in self.dependents:
            spec = self.specs[name]
            stage = {key: inputs[key] if key in inputs else held[key] for key in spec.inputs}
            value = self.inner.run_stage(name, pipeline, cfg, stage, weights)
            held[name] = np.asarray(as_array(value))
            if sink is not None and (wanted is None or name in wanted):
                sink(spec, value)

    def run_stage(self, tap: str, pipeline: str, cfg: Any, stage_inputs: Mapping[str, np.ndarray],
                  weights: Any = None) -> Any:
        """A global tap: this chunk's value joins the earlier chunks'; their combination so far is returned
        (the judge keeps the last, the whole batch's). On exactly the inputs its pipeline had on this chunk
        the stage is not run again: its value there is reused, as a whole-batch run reuses it."""
        if tap not in self.global_taps:
            return self.inner.run_stage(tap, pipeline, cfg, stage_inputs, weights)
        last = self.last_chunk
        if last is not None and tap in last.own and all(
                name in last.held and np.shape(stage_inputs[name]) == last.held[name].shape
                and np.array_equal(np.asarray(stage_inputs[name]), last.held[name]) for name in self.specs[tap].inputs):
            value = last.own[tap]
        else:
            value = self.inner.run_stage(tap, pipeline, cfg, stage_inputs, weights)
        index = tap_index(pipeline, cfg)
        batch = next((len(array) for name, array in stage_inputs.items()
                      if name in index and batched(index[name]) and np.ndim(array)), 1)
        self.isolated[tap].append((value, batch))
        combined = combine_chunks(self.global_taps[tap], self.isolated[tap])
        return value if combined is None else combined
