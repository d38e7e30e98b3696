"""The fast path: one chunk's statistics in the tap's own precision, in a handful of passes.

Written once against a small array interface (``ops``: ``NumpyOps`` or ``TorchOps``), so the
numpy and the Torch engine run the same algorithm.  Per chunk: the difference ``d = b - a``
(one pass), |d| and |a| (one pass each), sums as float32 blocks of 4096 accumulated in
float64 (read-only BLAS passes), maxima per (sample, channel, band) (one read pass each),
and the worst element located inside its sample only.  Every reported maximum is then
recomputed in float64 at the element that attains it, so it equals what a float64
computation gives whenever that element is the float64 arg-max too.

The complex extras are exact maxima found by screening with a cheap bound, so the expensive
float64 evaluation runs on a few candidates only: ||b|-|a|| <= |d|, and the phase error
angle(b conj(a)) <= asin(|d| / |a|).  Candidates are all elements whose bound can beat the
best exact value found so far; if too many qualify, everything is evaluated in float64.

A chunk with NaN/Inf, or with magnitudes whose squares leave the dtype's range, is not
handled here: ``fused_chunk`` returns None and the caller uses ``exact.exact_chunk``.
"""

from __future__ import annotations

import math

import numpy as np

from .reference import reference_side
from .stats import ChunkStats
from .tables import band_table, locate, sample_max, value_at, wide

MARGIN_ULPS = 16  # float rounding of |d|, |a| and |d|/|a| is a few ulps: candidates get this much slack
CANDIDATE_SHARE = 8  # beyond n / this many candidates, evaluate every element in float64 instead


def _screened(ops, bound, limit: int, start: float, value_at, ceiling, give_up, shrink: float = 0.25):
    """Exact max of a quantity q with q <= ceiling(bound) elementwise, ``ceiling`` increasing.

    Rounds: the elements with bound >= t are evaluated exactly (``value_at(indices)``); every other
    element has q <= ceiling(t), so once the best exact value reaches that the answer is known.
    """
    t = start * 0.5
    while True:
        mask = bound >= t
        if t <= 0.0 or ops.count(mask) > limit:
            return give_up()
        best = value_at(ops.nonzero(mask))
        if best >= ceiling(t):
            return best
        t *= shrink


def fused_chunk(ops, a_np, b_in, work, geom, start: int, criteria, regions: dict, phase,
                cache=None) -> ChunkStats | None:
    ref = (cache.get(ops, a_np, work, geom, start, regions) if cache is not None
           else reference_side(ops, a_np, work, geom, start, regions))
    if ref is None:
        return None
    a, aa, masks = ref.a, ref.aa, ref.masks
    b = ops.prepare_candidate(b_in, work)
    n = int(a_np.size)
    sample0, samples = geom.sample_range(start, n)
    first_row = start // geom.row_size if geom.shape else 0
    is_complex = ops.is_complex(a)
    margin = MARGIN_ULPS * ops.eps(a)
    stats = ChunkStats(n=n, n_pairs=n, sample0=sample0, err=geom.table(samples), peak=ref.peak, norm_a=ref.norm_a,
                       peak_value=ref.peak_value, region_peak=dict(ref.region_peak),
                       region_count=dict(ref.region_count), region_err={name: np.zeros(samples) for name in masks})
    if ops.identical(a, b):  # equal values (and finite): every error statistic is exactly zero
        stats.worst = (0, value_at(ops, a, 0), value_at(ops, b, 0), 0.0)
        stats.n_out = 0 if criteria.tolerance_active else None
        if is_complex:
            stats.mag_max = 0.0
            stats.phase_max, stats.phase_front = (0.0, None) if phase.known else (None, (np.empty(0), np.empty(0)))
        return stats

    d = ops.sub(b, a)
    ad = ops.magnitude(d)
    stats.sum_abs, stats.sum_sq, stats.cross = ops.block_sum(ad), ops.block_dot(d, d), ops.block_dot(a, d)
    if not all(math.isfinite(v) for v in (stats.sum_abs, stats.sum_sq, stats.cross)):
        return None
    stats.err = err = band_table(ops, ad, geom, first_row, samples)
    err_max = float(err.max())
    if ops.squares and err_max < ops.tiny(a):
        return None  # |d|^2 may have underflowed: let float64 decide
    worst = locate(ops, ad, err, err_max, geom)
    av, bv = value_at(ops, a, worst), value_at(ops, b, worst)
    stats.worst = (worst, av, bv, float(np.abs(wide(bv, is_complex) - wide(av, is_complex))))
    for name, mask in masks.items():
        stats.region_err[name] = sample_max(ops, ad, mask, geom, samples)
    dot, norm_b = ref.norm_a + stats.cross, ref.norm_a + 2 * stats.cross + stats.sum_sq
    if norm_b < 1e-3 * (ref.norm_a + stats.sum_sq) or abs(dot) < 1e-3 * ref.norm_a:  # cancellation: measure
        contiguous = ops.contiguous(b)
        stats.dot, stats.norm_b = ops.block_dot(a, contiguous), ops.block_dot(contiguous, contiguous)
    limit = max(64, n // CANDIDATE_SHARE)
    if criteria.tolerance_active:
        stats.n_out = _out_of_tolerance(ops, a, b, ad, aa, criteria, margin, limit)
    if is_complex:
        stats.mag_max = _magnitude_error(ops, a, b, ad, stats.worst, err_max, limit, margin)
        _phase_error(ops, a, b, ad, aa, stats, phase, ref.peak_value, err_max, limit, margin)
    return stats


def _out_of_tolerance(ops, a, b, ad, aa, criteria, margin: float, limit: int) -> int:
    """count(|d| > atol + rtol |a|): decided in the tap's precision except within a few ulps of the line."""
    atol, rtol = criteria.atol or 0.0, criteria.rtol or 0.0
    # Screen first: elements below the line by more than the margin are in, whatever the rounding
    # (a passing tap costs three passes); the few above it are decided in float64.
    above = ad > aa * (rtol * (1 - margin)) + atol * (1 - margin)
    if ops.count(above) <= limit:
        return _exact_out(ops, a, b, ops.nonzero(above), atol, rtol)
    threshold = aa * rtol + atol
    sure = ops.count(ad > threshold * (1 + margin))
    close = ops.nonzero((ad > threshold * (1 - margin)) & (ad <= threshold * (1 + margin)))
    return sure + _exact_out(ops, a, b, close, atol, rtol)


def _exact_out(ops, a, b, indices, atol: float, rtol: float) -> int:
    """count(|b - a| > atol + rtol |a|) at ``indices``, in float64."""
    if not indices.size:
        return 0
    av, bv = ops.take(a, indices).astype(np.complex128), ops.take(b, indices).astype(np.complex128)
    return int(np.count_nonzero(np.abs(bv - av) > np.abs(av) * rtol + atol))


def _magnitude_error(ops, a, b, ad, worst, err_max: float, limit: int, margin: float) -> float:
    if err_max == 0.0:
        return 0.0
    a_w, b_w = float(np.abs(np.complex128(worst[1]))), float(np.abs(np.complex128(worst[2])))
    at_worst = abs(b_w - a_w)
    if not ops.screen:
        return ops.exact_magnitude_error(a, b)
    # Every element has ||b| - |a|| <= |d|: only those with |d| >= the value at the worst element can beat
    # it.  Slack: |d| carries the tap's rounding (relative), the float64 value at the worst element its own
    # (absolute, ~eps64 |a|), which for float64 taps at rounding level leaves every element a candidate.
    floor = (at_worst - 8 * np.finfo(np.float64).eps * (a_w + b_w)) * (1 - margin)
    mask = ad >= floor
    if floor <= 0 or ops.count(mask) > limit:
        return ops.exact_magnitude_error(a, b)
    indices = ops.nonzero(mask)
    av, bv = ops.take(a, indices).astype(np.complex128), ops.take(b, indices).astype(np.complex128)
    return max(at_worst, float(np.abs(np.abs(bv) - np.abs(av)).max()) if indices.size else 0.0)


def _asin_bound(r: float) -> float:
    return math.asin(r) if r < 1.0 else math.pi


def _phase_error(ops, a, b, ad, aa, stats: ChunkStats, phase, peak_value: float, err_max: float, limit: int,
                 margin: float) -> None:
    """Set ``phase_max`` (threshold known) or ``phase_front`` (a later chunk may raise the peak)."""
    threshold = phase.floor * (phase.hint if phase.hint is not None else max(phase.peak_before, peak_value))
    if not phase.known:
        stats.phase_front = ops.phase_frontier(a, b, threshold)
        return
    if err_max == 0.0:
        stats.phase_max = 0.0
        return
    if not ops.screen:
        stats.phase_max = ops.exact_phase_error(a, b, threshold)
        return
    # angle(b conj(a)) <= asin(|d| / |a|): the ratio bounds the phase error of every element with
    # |a| >= threshold; below it the ratio is understated, but those elements are not judged (the exact
    # evaluation of candidates drops them), so only the bound of the judged elements matters.
    ratio = ops.ratio(ad, aa, threshold * (1 - margin))
    top = float(ratio.max())
    if top == 0.0:
        stats.phase_max = 0.0
        return

    def value_at(indices):
        av, bv = ops.take(a, indices).astype(np.complex128), ops.take(b, indices).astype(np.complex128)
        valid = np.abs(av) >= threshold
        errors = np.abs(np.angle(bv[valid] * np.conj(av[valid])))
        return float(errors.max()) if errors.size else 0.0

    stats.phase_max = _screened(ops, ratio, limit, top, value_at, lambda t: _asin_bound(t * (1 + margin)),
                                lambda: ops.exact_phase_error(a, b, threshold))
