"""The harness steps ``parity bench`` times, each one call of the real runner's machinery.

The reference's taps are recorded once and replayed (``Replay``), so a timed step is what the
harness adds to a candidate's forward: the propagated statistics sink, the isolated stages, or a
full capture of every tap.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from backends.common.taps import pipeline_taps

from .adapters import graph_of
from .cases import Case
from .guard import Guard
from .runner import RunOptions
from .tapflow import CaseRun


class Replay:
    """A reference that hands back taps recorded earlier (the cost of a golden read, in memory)."""

    name = "replay"
    device = "cpu"

    def __init__(self, taps: dict[str, np.ndarray]) -> None:
        self.taps = taps

    def run_pipeline(self, pipeline, cfg, inputs, weights=None, sink=None, taps=None) -> None:
        for spec in pipeline_taps(pipeline, cfg):
            if sink is not None and spec.name in self.taps:
                sink(spec, self.taps[spec.name])


def reference_store(case: Case, reference: Any) -> Replay:
    return Replay(reference.run_all(case.pipeline, case.config, case.inputs, case.weights))


def forward_only(candidate: Any, case: Case) -> None:
    candidate.run_pipeline(case.pipeline, case.config, case.inputs, case.weights)


def forward_on_worker(candidate: Any, case: Case) -> None:
    """The bare forward where a run makes it: on the guard's worker thread (its own malloc arena)."""
    guard = Guard("candidate", None, None)
    try:
        guard.call("run_pipeline()", candidate.run_pipeline, case.pipeline, case.config, case.inputs, case.weights)
    finally:
        guard.close()


def full_capture(candidate: Any, case: Case) -> None:
    candidate.run_all(case.pipeline, case.config, case.inputs, case.weights)


def _flow(candidate: Any, case: Case, store: Replay, tolerances: Any, modes: tuple[str, ...]) -> CaseRun:
    guards = {"candidate": Guard("candidate", None, None), "reference": Guard("reference", None, None)}
    registry = pipeline_taps(case.pipeline, case.config)
    graphs = {"candidate": graph_of(candidate, case.pipeline, case.config),
              "reference": graph_of(store, case.pipeline, case.config)}
    return CaseRun(case, store, candidate, tolerances, RunOptions(modes=modes), graphs, registry, {}, guards, [],
                   str(getattr(candidate, "device", "cpu")))


def _one_chunk(flow: CaseRun, case: Case) -> None:
    try:
        flow.run_chunk(0, case.batch, whole=True)
        flow.results()
    finally:
        for guard in flow.guards.values():
            guard.close()


def statistics_sink(candidate: Any, case: Case, store: Replay, tolerances: Any) -> None:
    """The propagated comparison: every tap compared as it arrives, then dropped."""
    _one_chunk(_flow(candidate, case, store, tolerances, ("propagated",)), case)


def isolated_mode(candidate: Any, case: Case, store: Replay, tolerances: Any) -> None:
    """Every stage on the reference's recorded inputs (nothing shared with a propagated run)."""
    _one_chunk(_flow(candidate, case, store, tolerances, ("isolated",)), case)


def both_modes(candidate: Any, case: Case, store: Replay, tolerances: Any) -> None:
    """What `parity run` does per chunk: propagated, then isolated reusing what it can."""
    _one_chunk(_flow(candidate, case, store, tolerances, ("propagated", "isolated")), case)
