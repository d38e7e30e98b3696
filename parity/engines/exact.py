"""The exact path: one chunk in float64/complex128 with NaN/Inf handling, on any run of elements.

Used when the fast path cannot vouch for its result (NaN or Inf in the chunk, magnitudes
whose squares leave the dtype's range), for integer, float16 or mixed-kind dtypes, and for
chunks that are not whole rows of axis 0.  Elementwise statistics use the pairs where both
sides are finite; NaN, or +-Inf of the same sign, at the same positions do not fail by
themselves, any other non-finite disagreement is counted as a mismatch.
"""

from __future__ import annotations

import numpy as np

from .. import phase_frontier
from .tables import band_table, sample_max
from .numpy_engine import NumpyOps
from .stats import ChunkStats

_OPS = NumpyOps()


def _codes(x: np.ndarray) -> np.ndarray:
    """Per-element class: 0 finite, 1 NaN, 2 +Inf, 3 -Inf.

    Complex: 4*code(re) + code(im), any NaN part -> 1; so the finite companion
    of an infinite part is not compared.
    """
    def real_codes(r):
        return np.where(np.isnan(r), 1, np.where(r == np.inf, 2, np.where(r == -np.inf, 3, 0)))
    if np.iscomplexobj(x):
        c = 4 * real_codes(x.real) + real_codes(x.imag)
        return np.where(np.isnan(x), 1, c)
    return real_codes(x)


def count_nonfinite(x: np.ndarray) -> tuple[int, int]:
    nan = np.isnan(x)
    return int(np.count_nonzero(nan)), int(np.count_nonzero(np.isinf(x) & ~nan))


def _cells(geom, start: int, count: int):
    """(local sample, table cell) per element of a run that is not whole rows."""
    return geom.element_cells(start, count)


def exact_chunk(a_raw, b_raw, geom, start: int, criteria, regions: dict, phase, chunk_shape) -> ChunkStats:
    raw_a, raw_b = np.asarray(a_raw).reshape(-1), np.asarray(b_raw).reshape(-1)
    is_complex = raw_a.dtype.kind == "c" or raw_b.dtype.kind == "c"
    work = np.complex128 if is_complex else np.float64
    a, b = raw_a.astype(work), raw_b.astype(work)
    n = a.size
    sample0, samples = geom.sample_range(start, n)
    stats = ChunkStats(n=n, n_pairs=0, sample0=sample0, err=geom.table(samples), peak=geom.table(samples),
                       nan=(0, 0), inf=(0, 0))
    (nan_a, inf_a), (nan_b, inf_b) = count_nonfinite(a), count_nonfinite(b)
    stats.nan, stats.inf = (nan_a, nan_b), (inf_a, inf_b)
    finite_a, finite_b = np.isfinite(a), np.isfinite(b)
    pair = finite_a & finite_b
    if not pair.all():
        mismatch = _codes(a) != _codes(b)
        stats.n_mismatch = int(np.count_nonzero(mismatch))
        if stats.n_mismatch:
            i = int(np.argmax(mismatch))
            stats.first_mismatch = (i, raw_a[i].item(), raw_b[i].item())
        del mismatch
    stats.n_pairs = int(np.count_nonzero(pair))
    np.copyto(a, 0, where=~finite_a)  # |a| of a finite reference counts for the peak even where b is not
    np.copyto(b, a, where=~pair)  # so d = 0 wherever the pair is not compared
    del finite_a, finite_b
    b -= a
    d = b
    ad, aa = np.abs(d), np.abs(a)
    # the breakdown tables hold maxima in the tap's precision, as the fast path computes them
    precision = np.result_type(raw_a.dtype, raw_b.dtype)
    precision = np.finfo(precision).dtype if precision.kind in "fc" else np.dtype(np.float64)
    ad_t, aa_t = ad.astype(precision, copy=False), aa.astype(precision, copy=False)
    if geom.shape and start % geom.row_size == 0 and n % geom.row_size == 0:
        shape = (n // geom.row_size,) + geom.shape[1:]
        first_row = start // geom.row_size
        stats.err = band_table(_OPS, ad_t.reshape(shape), geom, first_row, samples)
        stats.peak = band_table(_OPS, aa_t.reshape(shape), geom, first_row, samples)
        for name, mask in regions.items():
            mask = _OPS.mask(mask, chunk_shape).reshape(shape)
            stats.region_err[name] = sample_max(_OPS, ad_t.reshape(shape), mask, geom, samples)
            stats.region_peak[name] = sample_max(_OPS, aa_t.reshape(shape), mask, geom, samples)
            stats.region_count[name] = int(np.count_nonzero(mask))
    else:
        sample, cells = _cells(geom, start, n)
        np.maximum.at(stats.err.reshape(-1), cells, ad_t)
        np.maximum.at(stats.peak.reshape(-1), cells, aa_t)
        del cells
        for name, mask in regions.items():
            mask = _OPS.mask(mask, chunk_shape).reshape(-1)
            stats.region_err[name], stats.region_peak[name] = np.zeros(samples), np.zeros(samples)
            np.maximum.at(stats.region_err[name], sample[mask], ad_t[mask])
            np.maximum.at(stats.region_peak[name], sample[mask], aa_t[mask])
            stats.region_count[name] = int(np.count_nonzero(mask))
    del ad_t, aa_t
    stats.peak_value = float(aa.max()) if n else 0.0
    stats.sum_abs = float(ad.sum())
    stats.sum_sq = float(np.dot(ad, ad))
    a_pairs = np.where(pair, aa, 0.0)
    stats.norm_a = float(np.dot(a_pairs, a_pairs))
    del a_pairs
    stats.cross = float(np.vdot(a, d).real)
    b_back = a + d
    b_back[~pair] = 0
    stats.dot, stats.norm_b = float(np.vdot(a, b_back).real), float(np.vdot(b_back, b_back).real)
    del b_back
    if stats.n_pairs:
        i = int(np.argmax(np.where(pair, ad, -1.0)))  # the first maximum among compared pairs
        stats.worst = (i, raw_a[i].item(), raw_b[i].item(), float(ad[i]))
    if criteria.tolerance_active:
        stats.n_out = int(np.count_nonzero(ad > aa * (criteria.rtol or 0.0) + (criteria.atol or 0.0)))
    if is_complex:
        b_full = a + d  # equals b on pairs, a elsewhere: magnitude and phase errors vanish off the pairs
        stats.mag_max = float(np.abs(np.abs(b_full) - aa).max()) if n else 0.0
        threshold = phase.floor * (phase.hint if phase.hint is not None else max(phase.peak_before,
                                                                                  stats.peak_value))
        keep = aa >= threshold
        errors = np.abs(np.angle(b_full[keep] * np.conj(a[keep])))
        if phase.known:
            stats.phase_max = float(errors.max()) if errors.size else 0.0
        else:
            stats.phase_front = phase_frontier.prune(aa[keep], errors)
    return stats
