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

from .stats import ChunkStats

MARGIN_ULPS = 16  # float rounding of |d|, |a| and |d|/|a| is a few ulps: candidates get this much slack
CANDIDATE_SHARE = 8  # beyond n / this many candidates, evaluate every element in float64 instead


def band_table(ops, x, geom, first_row: int, samples: int) -> np.ndarray:
    """max x per (local sample, channel, row band, column band) of a chunk of whole rows."""
    table = geom.table(samples)
    keep = [axis for axis in geom.kept_axes() if axis is not None]
    if geom.spatial_axes is None or x.ndim == 0:
        others = tuple(axis for axis in range(x.ndim) if axis not in keep)
        table[:, :, 1, 1] = ops.to_numpy(ops.amax(x, others)).reshape(samples, -1)
        return table
    row_axis, col_axis = geom.spatial_axes
    rows = x.shape[0]
    for i, (lo, hi) in enumerate(geom.bands(row_axis)):
        if row_axis == 0:
            lo, hi = max(lo - first_row, 0), min(hi - first_row, rows)
        if hi <= lo:
            continue
        index = [slice(None)] * x.ndim
        index[row_axis] = slice(lo, hi)
        reduced = ops.amax(x[tuple(index)], (row_axis,))  # the rows of the band, first: a contiguous pass
        for j, (clo, chi) in enumerate(geom.bands(col_axis)):
            if chi <= clo:
                continue
            index = [slice(None)] * reduced.ndim
            index[col_axis - 1] = slice(clo, chi)
            table[:, :, i, j] = ops.to_numpy(ops.amax(reduced[tuple(index)], (col_axis - 1,))).reshape(samples, -1)
    return table


def _sample_max(ops, x, mask, geom, samples: int) -> np.ndarray:
    others = tuple(range(1 if geom.has_samples else 0, x.ndim))
    return ops.to_numpy(ops.amax(ops.where(mask, x, 0), others)).reshape(samples)


def _locate(ops, x, table: np.ndarray, value: float, geom) -> int:
    """Flat index (C order, first occurrence) of ``value``, the maximum of ``x``."""
    if not geom.has_samples or x.ndim == 0:
        return ops.argmax(x)
    sample = int(np.argmax(table.reshape(table.shape[0], -1).max(axis=1) >= value))
    return sample * geom.row_size + ops.argmax(x[sample])


def _wide(x, is_complex: bool):
    """A value in float64/complex128: the exact values are numpy's, as the float64 definition computes them."""
    return np.complex128(x) if is_complex else np.float64(x)


def _exact_at(ops, a, b, flat: int):
    av, bv = ops.take(a, np.array([flat]))[0], ops.take(b, np.array([flat]))[0]
    return av, bv


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


def fused_chunk(ops, a_np, b_in, work, geom, start: int, criteria, regions: dict, phase) -> ChunkStats | None:
    a, b = ops.prepare(a_np, b_in, work)
    n = int(a_np.size)
    sample0, samples = geom.sample_range(start, n)
    first_row = start // geom.row_size if geom.shape else 0
    is_complex = ops.is_complex(a)
    margin = MARGIN_ULPS * ops.eps(a)
    aa = ops.magnitude(a)
    norm_a = ops.block_dot(a, a)
    if not math.isfinite(norm_a):
        return None
    peak = band_table(ops, aa, geom, first_row, samples)
    peak_max = float(peak.max()) if n else 0.0
    if ops.squares and 0.0 < peak_max < ops.tiny(a):
        return None
    peak_value = 0.0
    if peak_max > 0:
        av, _ = _exact_at(ops, a, b, _locate(ops, aa, peak, peak_max, geom))
        peak_value = float(np.abs(_wide(av, is_complex)))
    masks = {name: ops.mask(mask, a.shape) for name, mask in regions.items()}
    stats = ChunkStats(n=n, n_pairs=n, sample0=sample0, err=geom.table(samples), peak=peak, norm_a=norm_a,
                       peak_value=peak_value)
    for name, mask in masks.items():
        stats.region_peak[name] = _sample_max(ops, aa, mask, geom, samples)
        stats.region_count[name] = ops.count(mask)
        stats.region_err[name] = np.zeros(samples)
    if ops.identical(a, b):  # bitwise equal (and finite): every error statistic is exactly zero
        av, bv = _exact_at(ops, a, b, 0)
        stats.worst = (0, av, bv, 0.0)
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
    worst = _locate(ops, ad, err, err_max, geom)
    av, bv = _exact_at(ops, a, b, worst)
    stats.worst = (worst, av, bv, float(np.abs(_wide(bv, is_complex) - _wide(av, is_complex))))
    for name, mask in masks.items():
        stats.region_err[name] = _sample_max(ops, ad, mask, geom, samples)
    dot, norm_b = norm_a + stats.cross, norm_a + 2 * stats.cross + stats.sum_sq
    if norm_b < 1e-3 * (norm_a + stats.sum_sq) or abs(dot) < 1e-3 * norm_a:  # cancellation: measure directly
        contiguous = ops.contiguous(b)
        stats.dot, stats.norm_b = ops.block_dot(a, contiguous), ops.block_dot(contiguous, contiguous)
    if criteria.tolerance_active:
        stats.n_out = _out_of_tolerance(ops, a, b, ad, aa, criteria, margin)
    if is_complex:
        limit = max(64, n // CANDIDATE_SHARE)
        stats.mag_max = _magnitude_error(ops, a, b, ad, stats.worst, err_max, limit, margin)
        _phase_error(ops, a, b, ad, aa, stats, phase, peak_value, err_max, limit, margin)
    return stats


def _out_of_tolerance(ops, a, b, ad, aa, criteria, margin: float) -> int:
    """count(|d| > atol + rtol |a|): decided in the tap's precision except within a few ulps of the line."""
    atol, rtol = criteria.atol or 0.0, criteria.rtol or 0.0
    threshold = aa * rtol + atol
    sure = ops.count(ad > threshold * (1 + margin))
    close = ops.nonzero((ad > threshold * (1 - margin)) & (ad <= threshold * (1 + margin)))
    if close.size:
        av, bv = ops.take(a, close).astype(np.complex128), ops.take(b, close).astype(np.complex128)
        sure += int(np.count_nonzero(np.abs(bv - av) > np.abs(av) * rtol + atol))
    return sure


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
    # angle(b conj(a)) <= asin(|d| / |a|): the ratio bounds the phase error of every valid element
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
