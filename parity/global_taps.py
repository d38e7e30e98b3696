"""Batch-global taps in a chunked run: two passes over the chunks instead of one whole-batch chunk.

A tap with ``reduction == "global"`` (the simulate pipeline's intensity scale, a statistic of every
scan position that a later stage reads) has a different value in every chunk. When the registry
says how chunk values combine (``TapSpec.combine``), the run still goes in chunks:

1. ``pin_global_taps`` runs every chunk once and keeps only each side's chunk values of the
   global taps (for the candidate also its stage on the reference's inputs, for isolated mode),
   and combines them into the whole batch's value;
2. the ordinary chunked run then sees each adapter through ``Pinned``: its pipeline hands over the
   whole batch's value of a global tap, and the stages that read it (directly or not) are run again
   with that value (``run_stage``), so every chunk gets what one whole-batch run would give, to
   rounding.

Memory stays that of one chunk; the cost is a second forward of each side. Where an adapter cannot
do this (it does not compute a global tap itself, its stages do not read it as the registry's do,
or it cannot run a stage alone) the run falls back to one whole-batch chunk, as before.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from backends.common.taps import TapSpec

from .chunks import as_array, slice_inputs, slice_tap
from .guard import AdapterFault, Guard

__all__ = ["Pinned", "combine_chunks", "global_specs", "pin_global_taps"]


def global_specs(registry: list[TapSpec]) -> list[TapSpec]:
    return [spec for spec in registry if spec.reduction == "global"]


def combine_chunks(spec: TapSpec, parts: list[tuple[Any, int]]) -> np.ndarray | None:
    """The whole batch's value of a global tap from (chunk value, chunk size) pairs; None if it cannot be.

    ``inverse_square_mean``: the tap is c / sqrt(mean over samples of s), so the whole batch's
    mean of s is the chunks' 1/value**2 averaged by size (c cancels).
    """
    values = [np.asarray(as_array(value)) for value, _ in parts]
    if not values or any(value.shape != () for value in values) or spec.combine != "inverse_square_mean":
        return None
    wide = np.array([complex(value) if np.iscomplexobj(value) else float(value) for value in values])
    counts = np.array([count for _, count in parts], dtype=np.float64)
    if np.iscomplexobj(wide) or not np.all(np.isfinite(wide)) or np.any(wide == 0):
        return None
    combined = float(np.sum(counts / counts.sum() * wide ** -2.0)) ** -0.5
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

    def __init__(self, names: set[str], guard: Guard) -> None:
        self.names, self.guard, self.values = names, guard, {}
        self.delivered: list[str] = []
        self.accepts_tensors = True  # as the backend holds them: only the kept taps are converted

    def __call__(self, spec: TapSpec, value: Any) -> None:
        self.guard.tick()
        self.delivered.append(spec.name)
        if spec.name in self.names:
            self.values[spec.name] = np.array(as_array(value), copy=True)


def _reads(specs: list[TapSpec], names: set[str]) -> set[str]:
    """What the first chunk must keep to run once each stage that reads a global tap: their inputs."""
    by_name = {spec.name: spec for spec in specs}
    return names | {name for tap in _dependents(specs, names) for name in by_name[tap].inputs}


def _run_dependents(case: Any, adapter: Any, guard: Guard, specs: list[TapSpec], names: set[str],
                    held: dict[str, Any], inputs: Mapping[str, Any]) -> None:
    """Each stage that reads a global tap, run alone on one chunk (AdapterFault if the adapter cannot)."""
    by_name = {spec.name: spec for spec in specs}
    for name in _dependents(specs, names):
        stage = {key: inputs[key] if key in inputs else held[key] for key in by_name[name].inputs}
        held[name] = np.asarray(as_array(guard.call(f"run_stage({name!r})", adapter.run_stage, name, case.pipeline,
                                                    case.config, stage, case.weights)))


def _run_side(case: Any, adapter: Any, guard: Guard, specs: list[TapSpec], keep: set[str],
              inputs: Mapping[str, Any]) -> dict[str, Any]:
    """One chunk of one side's pipeline: the taps in ``keep``. A hang is put on the stage it hung in."""
    collect = _Collect(keep, guard)
    try:
        guard.call("run_pipeline()", adapter.run_pipeline, case.pipeline, case.config, inputs, case.weights,
                   sink=collect)
    except AdapterFault as fault:
        if fault.kind == "timeout":  # abandoned: the run will name the stage it hung in, not its first
            guard.stuck_tap = next((spec.name for spec in specs if spec.name not in collect.delivered), None)
        raise
    return collect.values


def pin_global_taps(case: Any, reference: Any, candidate: Any, graphs: Mapping[str, Any], registry: list[TapSpec],
                    guards: Mapping[str, Guard], chunks: list[tuple[int, int]], golden: bool
                    ) -> tuple[Any, Any] | None:
    """(reference, candidate) wrapped so that their global taps hold the whole batch's values.

    None when the run must go as one chunk: no combination rule, an adapter that does not compute
    the global taps as the registry does or cannot run the stages that read them alone, or a
    failure in this first pass (the run itself will then meet and report it).
    """
    specs = global_specs(registry)
    names = {spec.name for spec in specs}
    if not specs or any(not spec.combine for spec in specs):
        return None
    sides = ["candidate"] if golden else ["reference", "candidate"]
    if not all(_usable(graphs[side].specs, registry, names) for side in sides):
        return None
    adapters = {"reference": reference, "candidate": candidate}
    by_name = {spec.name: spec for spec in graphs["candidate"].specs}
    stage_inputs = {name for spec in specs for name in by_name[spec.name].inputs}
    parts: dict[str, dict[str, list]] = {role: {name: [] for name in names} for role in (*sides, "isolated")}
    recorded = {spec.name: spec for spec in graphs["reference"].specs}
    try:
        for start, stop in chunks:
            inputs = slice_inputs(case.pipeline, case.inputs, start, stop, False)
            values = {}
            for side in sides:
                keep = _reads(graphs[side].specs, names) if start == 0 else set(names)
                values[side] = _run_side(case, adapters[side], guards[side], graphs[side].specs,
                                         keep | (stage_inputs if side == "reference" else set()), inputs)
                if start == 0:  # the second pass will run them alone: they must be able to
                    _run_dependents(case, adapters[side], guards[side], graphs[side].specs, names, values[side],
                                    inputs)
                for name in names:
                    parts[side][name].append((values[side][name], stop - start))
            seen = values.get("reference") if not golden else {
                name: np.asarray(slice_tap(recorded[name], reference.tap(name), start, stop, False))
                for name in stage_inputs if name not in inputs}
            for name in list(parts["isolated"]):
                stage = {key: inputs[key] if key in inputs else seen[key] for key in by_name[name].inputs}
                try:
                    value = guards["candidate"].call(f"run_stage({name!r})", candidate.run_stage, name,
                                                     case.pipeline, case.config, stage, case.weights)
                except AdapterFault:  # isolated mode will say it cannot isolate this stage
                    del parts["isolated"][name]
                    continue
                parts["isolated"][name].append((value, stop - start))
    except (AdapterFault, KeyError):
        return None
    spec_of = {spec.name: spec for spec in specs}
    combined = {role: {name: combine_chunks(spec_of[name], values) for name, values in by_tap.items()}
                for role, by_tap in parts.items()}
    if any(value is None for role in sides for value in combined[role].values()):
        return None
    isolated = {name: value for name, value in combined["isolated"].items() if value is not None}
    wrapped_reference = reference if golden else Pinned(reference, graphs["reference"].specs, combined["reference"],
                                                        combined["reference"])
    return wrapped_reference, Pinned(candidate, graphs["candidate"].specs, combined["candidate"], isolated)


class _Relay:
    """The inner pipeline's sink: global taps replaced, their dependents held back, the rest passed on."""

    def __init__(self, outer: Any, pinned: Mapping[str, np.ndarray], dependents: set[str], keep: set[str],
                 wanted: set[str] | None) -> None:
        self.outer, self.pinned, self.dependents, self.keep, self.wanted = outer, pinned, dependents, keep, wanted
        self.accepts_tensors = bool(getattr(outer, "accepts_tensors", False))
        self.held: dict[str, np.ndarray] = {}
        if callable(getattr(outer, "input_mutated", None)):
            self.input_mutated = outer.input_mutated

    def __call__(self, spec: TapSpec, value: Any) -> None:
        if spec.name in self.pinned:
            value = self.pinned[spec.name]
        if spec.name in self.keep:
            self.held[spec.name] = np.array(as_array(value), copy=True)
        if spec.name in self.dependents:
            return  # computed from this chunk's value of a global tap: recomputed with the whole batch's
        if self.outer is not None and (self.wanted is None or spec.name in self.wanted):
            self.outer(spec, value)


class Pinned:
    """An adapter whose global taps are the whole batch's (see the module docstring); all else is its own."""

    def __init__(self, inner: Any, specs: list[TapSpec], pinned: Mapping[str, np.ndarray],
                 isolated: Mapping[str, np.ndarray]) -> None:
        self.inner = inner
        self.pinned, self.isolated = dict(pinned), dict(isolated)
        self.specs = {spec.name: spec for spec in specs}
        self.dependents = _dependents(specs, set(self.pinned))
        self.keep = {name for tap in self.dependents for name in self.specs[tap].inputs} | set(self.pinned)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def run_pipeline(self, pipeline: str, cfg: Any, inputs: Mapping[str, np.ndarray], weights: Any = None,
                     sink: Any = None, taps: Any = None) -> None:
        wanted = None if taps is None else set(taps)
        relay = _Relay(sink, self.pinned, set(self.dependents), self.keep, wanted)
        inner_taps = None if wanted is None else sorted(wanted | self.keep | set(self.dependents))
        self.inner.run_pipeline(pipeline, cfg, inputs, weights, sink=relay, taps=inner_taps)
        held = relay.held
        for name in self.dependents:
            spec = self.specs[name]
            stage = {key: inputs[key] if key in inputs else held[key] for key in spec.inputs}
            value = self.inner.run_stage(name, pipeline, cfg, stage, weights)
            held[name] = np.asarray(value)
            if sink is not None and (wanted is None or name in wanted):
                sink(spec, value)

    def run_stage(self, tap: str, pipeline: str, cfg: Any, stage_inputs: Mapping[str, np.ndarray],
                  weights: Any = None) -> Any:
        if tap in self.pinned:
            if tap not in self.isolated:
                raise NotImplementedError(f"{tap!r} is a statistic of the whole batch, which this adapter's stage "
                                          "could not be run on in chunks")
            return self.isolated[tap]
        return self.inner.run_stage(tap, pipeline, cfg, stage_inputs, weights)
