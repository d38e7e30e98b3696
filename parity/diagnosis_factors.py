"""Hypotheses of a factor: the candidate is the reference times a constant (named when it is N, s, pi, a batch
size...), times a factor per sample, squared or square-rooted, or conjugated."""

from __future__ import annotations

import math

import numpy as np

from .diagnosis_core import Diagnosis, Problem
from .diagnosis_names import name_ratio, named_values


def _number(value: complex | float) -> str:
    value = complex(value)
    if abs(value.imag) <= 1e-12 * max(abs(value), 1e-300):
        near_one = value.real - 1.0
        if 0 < abs(near_one) < 1e-3:  # 1.0000012 would print as 1
            return f"(1 {'+' if near_one > 0 else '-'} {abs(near_one):.2g})"
        return f"{value.real:.6g}"
    return f"({value.real:.6g}{value.imag:+.6g}j)"


def scale(p: Problem) -> list[Diagnosis]:
    a, b = p.a[p.finite], p.b[p.finite]
    energy = float(np.vdot(a, a).real)
    if energy == 0.0:
        return []
    factor = complex(np.vdot(a, b)) / energy
    candidates = [factor.real] if not p.complex else [factor, factor.real]
    factor, residual = min(((c, p.residual(p.b / c)) for c in candidates if c != 0), key=lambda item: item[1],
                           default=(0, math.inf))
    if abs(factor - 1) <= p.tolerance or not math.isfinite(residual):
        return []
    if not p.complete(residual):  # one factor per sample (a per-pattern normalisation) may fit where one cannot
        per_sample = _per_sample_scale(p)
        if per_sample is not None:
            return per_sample
    rel = min(max(2 * residual, 4 * p.tolerance, 1e-12), 1e-3)  # a name is only given to a precise ratio
    named = name_ratio(factor, named_values(p.cfg, p.inputs_of("HW"), reduced=p.layout in ("scalar", "B"),
                                            batch=p.batch), rel)
    few = p.layout == "scalar" or p.a.size < 4
    if few and named is None:
        return []  # one number (or a few) always has a ratio: only a named one is evidence
    evidence = {"factor": factor, "named": named[0] if named else None}
    text = _number(factor)
    if named:
        summary = f"candidate = reference x {text} (= {named[0]}): {named[1]}"
    elif p.complex and abs(abs(factor) - 1) <= rel:
        summary = f"candidate = reference x exp(i {np.angle(factor):.4g}): a constant phase factor"
    else:
        summary = f"candidate = reference x {text}: a constant factor"
    return [Diagnosis("scale", summary, residual, evidence)]


def _per_sample_scale(p: Problem) -> list[Diagnosis] | None:
    """candidate[i] = reference[i] x c_i, real c_i that differ between samples: each sample scaled on its own
    (normalised to its own total where one factor for the batch is meant)."""
    if p.complex or p.layout != "BHWC" or p.a.ndim != 4 or p.a.shape[0] < 2 or p.a[0].size < 16:
        return None  # one number per sample (a per-sample loss) always has a ratio per sample: no evidence
    a, b = np.where(p.finite, p.a, 0.0), np.where(p.finite, p.b, 0.0)
    axes = (1, 2, 3)
    energy = np.sum(a * a, axis=axes)
    if not np.all(energy > 0):
        return None
    factors = np.sum(a * b, axis=axes) / energy
    if np.allclose(factors, factors[0], rtol=10 * max(p.tolerance, 1e-9)) or np.any(factors == 0):
        return None
    residual = p.residual(p.b / factors.reshape(-1, 1, 1, 1))
    if not p.complete(residual):
        return None
    shown = ", ".join(f"{value:.4g}" for value in factors[:4]) + (" ..." if len(factors) > 4 else "")
    return [Diagnosis("scale", f"candidate = reference x a factor per sample ({shown}): each sample scaled on its "
                      "own (normalised to its own total, or a per-pattern statistic) where one factor for the batch "
                      "is meant", residual, {"factors": factors[:16].tolist(), "per_sample": True})]


def power(p: Problem) -> list[Diagnosis]:
    """The candidate is the reference squared, or its square root: an intensity where an amplitude is meant (a
    missing sqrt), or the reverse."""
    if p.complex or not (p.a[p.finite] >= 0).all():
        return []
    b = np.where(p.finite, p.b, 0.0)
    with np.errstate(invalid="ignore"):
        found = [("candidate = reference^2: an intensity where an amplitude is meant (a sqrt missing)",
                  np.sqrt(np.abs(b)), 2.0),
                 ("candidate = sqrt(reference): an amplitude where an intensity is meant (a sqrt too many)",
                  b * b, 0.5)]
    return [Diagnosis("power", words, p.residual(corrected), {"exponent": exponent})
            for words, corrected, exponent in found]


def conjugate(p: Problem) -> list[Diagnosis]:
    if not p.complex:
        return []
    a, b = p.a[p.finite], p.b[p.finite]
    energy = float(np.vdot(a, a).real)
    if energy == 0.0:
        return []
    factor = complex(np.vdot(np.conj(a), b)) / energy
    options = [(1, "candidate = conj(reference): the phase has the opposite sign (exp(-i phi) for exp(i phi), "
                   "or a conjugate/ifft convention)"),
               (1j, "candidate = reference with real and imaginary parts swapped")]
    if min(abs(factor - 1), abs(factor - 1j)) > 1e-6:
        options.append((factor, f"candidate = {_number(factor)} x conj(reference): a phase sign flip and a constant "
                                f"factor"))
    out = []
    for fixed, summary in options:
        residual = p.residual(np.conj(p.b / fixed))
        out.append(Diagnosis("conjugate", summary, residual, {"factor": complex(fixed)}))
    return out
