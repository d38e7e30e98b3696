"""Which stage diverges first, and how much each stage amplifies the error it is handed.

Rules, in order (tested in tests/test_divergence.py):
1. An audit that failed (configuration, weights, the reference's contract) is named first.
2. Otherwise the first tap in stage order whose stage fails on its own: isolated mode fails (a
   wrong value, a raise, a timeout, junk returned), or the stage changed an input in place (in
   either mode), or it fails propagated where isolated could not judge it.
3. Otherwise, when every stage passes on its own but a propagated tap fails, the error
   accumulated across stages: the first such tap, marked inherited (unless it raised or returned junk in
   the pipeline: then it is that tap's own failure).
4. Otherwise a tap never judged (no verdict is no pass), or a run stopped early.
A candidate that could not be set up (its ``setup()`` or the building of its parameters raised) is named
right after the audits: no stage of it ran, so no tap is to blame.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from .results import Audit, Divergence, ModeResult, TapResult


def messages_of(result: ModeResult) -> list[str]:
    found = []
    if result.error is not None:
        found.append(f"{result.mode}: {result.error}")
    if result.metrics is not None:
        found += list(result.metrics.failures)
    return found


def _in_place(result: ModeResult | None) -> bool:
    return result is not None and result.error_kind == "in_place"


def unjudged_upstream(tap: str, registry: Sequence[Any], taps: list[TapResult]) -> list[str]:
    """The stages before ``tap`` (its inputs, theirs, ... in the registry) that no isolated verdict covers: not
    compared (``--taps``), not provided by a side, or not isolable. An error that reaches ``tap`` may have begun
    in any of them, so "every stage passes alone" is not known there."""
    specs = {spec.name: spec for spec in registry}
    judged = {result.name for result in taps
              if (result.modes.get("isolated") is not None and result.modes["isolated"].passed is not None)}
    found, seen, queue = [], set(), list(specs[tap].inputs) if tap in specs else []
    while queue:
        name = queue.pop(0)
        if name in seen or name not in specs:  # a pipeline input: the same on both sides
            continue
        seen.add(name)
        if name not in judged:
            found.append(name)
        queue += list(specs[name].inputs)
    order = list(specs)
    return sorted(found, key=order.index)


def first_divergence(taps: list[TapResult], audits: list[Audit], stopped: str | None = None,
                     registry: Sequence[Any] | None = None) -> Divergence | None:
    failed = next((audit for audit in audits if not audit.passed), None)
    if failed is not None:
        return Divergence(None, failed.name, list(failed.messages), kind="audit")
    not_set_up = next((result for tap in taps for result in tap.modes.values() if result.error_kind == "setup"), None)
    if not_set_up is not None:  # no stage ran: the first tap is not to blame
        return Divergence(None, "setup", [stopped or not_set_up.error or "the candidate could not be set up"],
                          kind="stopped")
    for tap in taps:
        isolated, propagated = tap.modes.get("isolated"), tap.modes.get("propagated")
        for result in (isolated, propagated):
            if _in_place(result):
                return Divergence(tap.name, result.mode, messages_of(result), kind="in_place")
        if isolated is not None and isolated.passed is False:
            return Divergence(tap.name, "isolated", messages_of(isolated))
        if (isolated is None or isolated.passed is None) and propagated is not None and propagated.passed is False:
            return Divergence(tap.name, "propagated", messages_of(propagated))
    for tap in taps:  # every stage passes alone: the error accumulated past tolerance downstream
        propagated = tap.modes.get("propagated")
        if propagated is not None and propagated.passed is False and propagated.error is not None:
            # it raised or handed over junk in the pipeline only: that is not error accumulated across stages
            return Divergence(tap.name, "propagated", messages_of(propagated))
        if propagated is not None and propagated.passed is False:
            unseen = unjudged_upstream(tap.name, registry, taps) if registry is not None else []
            return Divergence(tap.name, "propagated", messages_of(propagated), inherited=True, kind="inherited",
                              unjudged_upstream=unseen)
    if stopped is not None:
        return Divergence(None, "stopped", [stopped], kind="stopped")
    unjudged = next((tap for tap in taps if tap.status == "unjudged"), None)
    if unjudged is not None:
        reasons = [f"{mode}: {result.skipped}" for mode, result in unjudged.modes.items() if result.skipped]
        return Divergence(unjudged.name, "unjudged", [f"{unjudged.name}: not judged in any mode"] + reasons,
                          kind="unjudged")
    return None


def amplification(tap: TapResult, errors: Mapping[str, float | None]) -> float | None:
    """A tap's propagated error over the largest propagated error of its inputs (None when undefined)."""
    own = errors.get(tap.name)
    upstream = [errors[name] for name in tap.inputs if errors.get(name) is not None]
    if own is None or not math.isfinite(own) or not upstream:
        return None
    worst = max(upstream)
    if not math.isfinite(worst) or worst == 0:
        return None
    return own / worst
