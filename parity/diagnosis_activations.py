"""Which activation each side applied, when the candidate is one function of the reference's value.

The network's heads end in an activation the configuration names (sigmoid, swish, softplus, relu; a
port's default may differ). From the reference's output ``a = g(x)`` of an invertible ``g`` the
pre-activation ``x = g^-1(a)`` is recovered, and the candidate's ``b`` is checked against ``h(x)`` for
each other activation ``h``: the pair that reproduces ``b`` names the mix-up.

``dropout``: a layer left in training mode zeroes a fraction p of the values and scales the rest by
1/(1-p), a signature no other mistake leaves.
"""

from __future__ import annotations

import numpy as np

from .diagnosis_core import Diagnosis, Problem


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


OUTPUTS = {  # what a candidate's activation makes of the pre-activation x
    "sigmoid": _sigmoid,
    "swish": lambda x: x * _sigmoid(x),
    "softplus": _softplus,
    "relu": lambda x: np.maximum(x, 0.0),
}


def _inverse_sigmoid(a: np.ndarray) -> np.ndarray:
    return np.log(a) - np.log1p(-a)


def _inverse_softplus(a: np.ndarray) -> np.ndarray:
    return np.where(a > 30.0, a, np.log(np.expm1(np.minimum(a, 30.0))))


# invertible reference activations: the inverse, and the open range of values it is defined on
INVERSES = {"sigmoid": (_inverse_sigmoid, 0.0, 1.0), "softplus": (_inverse_softplus, 0.0, np.inf)}


def activation_pair(a: np.ndarray, b: np.ndarray, peak: float, tolerance: float) -> tuple[str, str, float] | None:
    """(reference's activation, candidate's, residual / peak) whose pair reproduces ``b`` from ``a`` within
    ``tolerance`` of the peak, or None."""
    a64, b64 = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if peak <= 0 or a64.size == 0:
        return None
    best = None
    with np.errstate(all="ignore"):
        for reference, (inverse, low, high) in INVERSES.items():
            inside = (a64 > low) & (a64 < high)  # padding (zeros) lies outside: there both sides must agree
            if np.count_nonzero(inside) < max(64, a64.size // 10):
                continue
            outside = float(np.max(np.abs(a64[~inside] - b64[~inside]), initial=0.0)) / peak
            x = inverse(a64[inside])
            if outside > tolerance or not np.all(np.isfinite(x)):
                continue
            for candidate, apply in OUTPUTS.items():
                if candidate == reference:
                    continue
                residual = max(outside, float(np.max(np.abs(apply(x) - b64[inside]))) / peak)
                if residual <= tolerance and (best is None or residual < best[2]):
                    best = (reference, candidate, residual)
    return best


def dropout(p: Problem) -> list[Diagnosis]:
    """candidate = reference with a fraction of the values zeroed and the rest scaled by one factor > 1."""
    if p.complex or p.a.size < 256:
        return []
    nonzero = p.finite & (p.a != 0)
    zeroed = nonzero & (p.b == 0)
    kept = nonzero & (p.b != 0)
    fraction = np.count_nonzero(zeroed) / max(np.count_nonzero(nonzero), 1)
    if not (0.01 <= fraction <= 0.9) or np.count_nonzero(kept) < 64:
        return []
    large = kept & (np.abs(p.a) >= 0.1 * p.peak)  # the factor from values well above rounding
    if np.count_nonzero(large) < 16:
        return []
    factor = float(np.median(p.b[large] / p.a[large]))
    if not factor > 1.0 + 1e-3:
        return []
    residual = p.residual(np.where(zeroed, p.a, p.b / factor))
    if not p.explains(residual):
        return []
    rate = 1.0 - 1.0 / factor
    return [Diagnosis("dropout", f"{fraction:.0%} of the values are zeroed and the rest scaled by {factor:.6g} "
                      f"(= 1/(1-{rate:.3g})): dropout left in training mode (model.eval() not called, or a training "
                      "flag on); `--repeat 2` shows it as nondeterministic", residual,
                      {"fraction_zeroed": fraction, "factor": factor})]
