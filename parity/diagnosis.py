"""Diagnosis of a failing tap: which kind of mistake explains the difference, with the evidence.

``diagnose(reference, candidate, ...)`` tests hypotheses on the two canonical arrays (and, when
given, the stage's inputs and a ``rerun`` of the reference's stage on transformed inputs) and
returns those that EXPLAIN the difference, best first, or a single ``unexplained`` diagnosis.

The rule (documented in docs/faults.md). With ``e`` = max |a - b| / max |a| over the elements
finite on both sides and ``r`` the residual after correcting for a hypothesis (max |a - corrected(b)|
/ max |a|, or, for an input hypothesis, max |rerun(transformed inputs) - b| / max |a|), the hypothesis
explains the difference when

    r <= 0.5 e                                   (it removes at least half of the error) and
    r <= max(3 x tolerance, 0.01 min(e, 1))      (the corrected candidate passes, or 99% of it is gone,
                                                  and what is left is at most 1% of the peak).

Facts are reported whatever the rule says: a shape mismatch, and NaN/Inf the reference does not
have. Level hypotheses ("dtype_narrowing", "numerical_alternative") say the error has the size and
texture of a known numerical effect; they are only offered when no specific structural hypothesis
explains the error completely (a real position-dependent gain or a pointwise function, true of many
mistakes, does not count), and never for errors above their own bound. Nothing is returned as an
explanation on a coincidence of one number: a scalar (or a handful of per-sample values) is only
called a scale when the ratio is a named constant of the configuration.

Nothing here knows the model's tap names: hypotheses reason from the tap's layout and kind, the
configuration and the layouts of the stage's inputs (a "B12C" input is a per-channel offset, an
"HW" complex input an illumination, ...).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from . import diagnosis_inputs, diagnosis_levels, diagnosis_output
from .diagnosis_core import UNEXPLAINED, Diagnosis, Problem, work_array

__all__ = ["Diagnosis", "diagnose", "caveat_untested", "UNEXPLAINED"]

# Best first: facts, then the most specific structural hypotheses, then the generic and level ones.
# A level hypothesis, when it holds, describes the whole error and says whether to fix or to widen:
# it goes before the two generic descriptions (a real gain, a pointwise function) that may also fit.
PRIORITY = ["shape_mismatch", "nonfinite", "dtype_mismatch", "scale", "power", "conjugate", "fftshift", "checkerboard",
            "offset_sign", "offset_swap_xy", "offsets_ignored", "offsets_rounded", "offset_half_pixel",
            "positions_origin", "channel_permutation", "transpose", "kernel_flip", "mirror", "shift", "overflow",
            "border_only", "masked_region", "smoothing", "dropout", "dtype_narrowing", "numerical_alternative",
            "normalisation", "elementwise"]
FACTS = {"shape_mismatch", "nonfinite", "dtype_mismatch"}
LEVELS = {"dtype_narrowing", "numerical_alternative"}
GENERIC = {"normalisation", "elementwise"}  # true of many mistakes: they do not stop the level hypotheses
# A more specific explanation makes these redundant (a channel permutation of extracted patches is also
# "each channel shifted by its neighbour's offset"; a constant factor is also an elementwise function).
SUBSUMED_BY = {"elementwise": {"scale", "power", "conjugate", "overflow"},
               "normalisation": {"scale", "power", "checkerboard"},
               "shift": {"fftshift", "offset_sign", "offsets_ignored", "offset_swap_xy", "channel_permutation",
                         "transpose", "kernel_flip", "mirror", "offsets_rounded", "offset_half_pixel",
                         "positions_origin"}}


def is_fact(diagnosis: Diagnosis) -> bool:
    """Observed, not inferred (a shape, NaN/Inf, a dtype): reported whatever the rule says."""
    return diagnosis.kind in FACTS or bool(diagnosis.evidence.get("fact"))


def _rank(diagnosis: Diagnosis, problem: Problem) -> tuple:
    order = PRIORITY.index(diagnosis.kind) if diagnosis.kind in PRIORITY else len(PRIORITY)
    if diagnosis.kind in GENERIC:  # two generic descriptions that both fit: the closer fit first
        order = min(PRIORITY.index(kind) for kind in GENERIC)
    fact = is_fact(diagnosis)
    residual = diagnosis.residual if math.isfinite(diagnosis.residual) else math.inf
    complete = fact or diagnosis.kind in LEVELS or problem.complete(residual)
    return (not fact, not complete, order, residual)


def _select(problem: Problem, candidates: list[Diagnosis]) -> list[Diagnosis]:
    facts = [d for d in candidates if is_fact(d)]
    explained = [d for d in candidates
                 if not is_fact(d) and (d.kind in LEVELS or problem.explains(d.residual))]
    # a more specific explanation makes a generic one redundant; a pointwise function only where the specific
    # one explains at least as much (a factor that leaves 4e-4 of the peak does not replace the function of
    # the value that leaves nothing; a per-element real factor always fits, so it never counts against one)
    explained = [d for d in explained if not any(
        e.kind in SUBSUMED_BY.get(d.kind, ()) and (d.kind != "elementwise" or problem.complete(e.residual)
                                                   or e.residual <= d.residual)
        for e in explained)]
    if any(problem.complete(d.residual) for d in explained if d.kind not in LEVELS | GENERIC):
        # one hypothesis reproduces the candidate: those that leave part of the error are not offered beside it
        explained = [d for d in explained if d.kind in LEVELS or problem.complete(d.residual)]
    if any(d.kind == "elementwise" and problem.complete(d.residual) for d in explained):
        # one function of the value reproduces the candidate: a band grown around the zeros (which can hold most
        # of a sparse tap, and its largest values) is a coincidence of where those values sit, not a mask
        explained = [d for d in explained if not (d.kind == "masked_region" and d.evidence.get("dilation_px"))]
    if any(d.kind in LEVELS for d in explained):  # rounding-level error: a "factor of 0.99998 .. 1" or a function
        explained = [d for d in explained if d.kind not in GENERIC]  # of the value restates it, and misleads
    explained = [d if d.kind in LEVELS or problem.complete(d.residual) else dataclasses.replace(
        d, summary=f"{d.summary} (something else differs too: {d.residual:.1e} of the peak is left)")
        for d in explained]
    best: dict[str, Diagnosis] = {}
    for diagnosis in explained:  # one diagnosis per kind: the lowest residual (the first among equals)
        if diagnosis.kind not in best or diagnosis.residual < best[diagnosis.kind].residual:
            best[diagnosis.kind] = diagnosis
    return sorted(facts + list(best.values()), key=lambda d: _rank(d, problem))


def diagnose(reference: np.ndarray, candidate: np.ndarray, *, layout: str, kind: str, tolerance: float,
             cfg: Any = None, stage_inputs: Mapping[str, np.ndarray] | None = None,
             input_layouts: Mapping[str, str] | None = None,
             rerun: Callable[[Mapping[str, np.ndarray]], np.ndarray] | None = None,
             reference_dtype: Any = None, candidate_dtype: Any = None, batch: int | None = None) -> list[Diagnosis]:
    """The hypotheses that explain why ``candidate`` differs from ``reference``, best first.

    ``reference``/``candidate`` are canonical arrays of the same samples (axis 0 for batch
    layouts); ``stage_inputs`` the stage's canonical inputs for those samples (those both sides
    saw), ``input_layouts`` the registry layouts of all the stage's inputs; ``rerun(inputs)`` runs
    the reference's stage on transformed inputs; ``batch``: for a tap that reduces over the whole batch (a
    scale, a mean loss), how many samples it reduced (a sum for a mean multiplies it in).
    Returns ``[]`` when there is nothing to explain, else at least one diagnosis (``unexplained``
    when no hypothesis explains the difference).
    """
    # NaN/Inf are data here (the facts report them, the tests skip them); a junk dtype's casts are too
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", np.exceptions.ComplexWarning)
        return _diagnose(np.asarray(reference), np.asarray(candidate), layout, kind, tolerance, cfg, stage_inputs,
                         input_layouts, rerun, reference_dtype, candidate_dtype, batch)


def _diagnose(a, b, layout, kind, tolerance, cfg, stage_inputs, input_layouts, rerun, reference_dtype,
              candidate_dtype, batch) -> list[Diagnosis]:
    problem = Problem(
        a=work_array(a), b=work_array(b), layout=layout, kind=kind,
        tolerance=float(tolerance) if tolerance and tolerance > 0 else 0.0, cfg=cfg,
        stage_inputs=dict(stage_inputs or {}), input_layouts=dict(input_layouts or {}), rerun=rerun,
        reference_dtype=np.dtype(reference_dtype or a.dtype), candidate_dtype=np.dtype(candidate_dtype or b.dtype),
        batch=batch)
    if problem.tolerance == 0.0:
        problem.tolerance = 10 * problem.eps
    if a.shape != b.shape:
        return diagnosis_levels.shape_mismatch(problem)
    facts = diagnosis_levels.nonfinite(problem) + diagnosis_levels.dtype_mismatch(problem)
    if not (problem.error > 0) or (facts and problem.error <= problem.tolerance):
        return facts  # nothing else to explain: the values agree (a dtype alone can fail a tap)
    candidates = list(facts)
    tested: list[str] = []

    def settled() -> bool:  # a specific hypothesis already reproduces the candidate: skip the costly ones
        return any(not is_fact(d) and d.kind not in GENERIC and problem.complete(d.residual) for d in candidates)

    for group in (diagnosis_output.TESTS, diagnosis_inputs.TESTS if rerun is not None else ()):
        if settled():
            break
        for test in group:
            tested.append(test.__name__)
            try:
                candidates += test(problem)
            except (ValueError, IndexError, TypeError, FloatingPointError, np.linalg.LinAlgError):
                continue  # a hypothesis that cannot be evaluated on these arrays explains nothing
    if not settled():
        tested += ["dtype_narrowing", "numerical_alternative"]  # tried, and named if they hold
        candidates += diagnosis_levels.level_hypotheses(problem)
    chosen = _select(problem, candidates)
    if not (any(not is_fact(d) for d in chosen) or any(d.kind in LEVELS for d in chosen)):
        what = "the rest of the difference" if chosen else "it"
        chosen = chosen + [Diagnosis(UNEXPLAINED, f"no hypothesis explains {what}", math.nan,
                                     {"error": problem.error, "tolerance": problem.tolerance, "tested": tested})]
    return chosen


GOLDEN_HOLDS_NO_CODE = "a golden holds no code"
UNTESTED = ("; not tested here: the reference's stage could not be rerun ({why}), so neither "
            "a changed input (offset sign, order) nor a numerically equivalent implementation (float32 "
            "coordinates) can be ruled out{how}")
RUN_TESTS_THEM = "; `parity run` with the reference tests them"


def caveat_untested(chosen: list[Diagnosis], why: str = GOLDEN_HOLDS_NO_CODE, how: str = RUN_TESTS_THEM
                    ) -> list[Diagnosis]:
    """Where the reference's stage could not be rerun (a golden; a candidate that reads other inputs than the
    stage) only output hypotheses ran: a generic answer (or none) says what went untested, and why."""
    if any(not is_fact(d) and d.kind not in GENERIC and d.kind != UNEXPLAINED for d in chosen):
        return chosen
    caveat = UNTESTED.format(why=why, how=how)
    return [dataclasses.replace(d, summary=d.summary + caveat) if d.kind in GENERIC | {UNEXPLAINED} else d
            for d in chosen]
