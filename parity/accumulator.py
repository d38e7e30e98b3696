"""Merging the ``ChunkStats`` of consecutive chunks into the statistics of a whole tap.

Everything merged is exact across chunks (maxima, counts, the worst element with the first
occurrence winning ties, per-sample maxima) except the float64 sums, which agree up to
rounding.  Memory stays bounded: per sample only running maxima of the sample being read
(a sample may straddle two chunks) survive; finished samples fold into the top few and a
running maximum of the per-sample ratio.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from . import phase_frontier
from .engines import ChunkStats

TOP = 5  # samples and channels listed in the breakdown
_BORDER = [0, 1, 2, 3, 5, 6, 7, 8]  # the eight bands around the interior band (1, 1)


def ratio(err: float, peak: float) -> float:
    """err / peak: 0 when err is 0, inf when only the peak is 0."""
    return 0.0 if err == 0 else (err / peak if peak > 0 else math.inf)


def ratios(err: np.ndarray, peak: np.ndarray) -> np.ndarray:
    """``ratio`` elementwise."""
    err, peak = np.asarray(err, np.float64), np.asarray(peak, np.float64)
    out = np.full(err.shape, np.inf)
    np.divide(err, peak, out=out, where=peak > 0)
    out[err == 0] = 0.0
    return out


def _interior_border(table: np.ndarray) -> dict[str, np.ndarray]:
    """Per row of a (k, C, 3, 3) table: max over the interior band, max over the border bands."""
    flat = table.reshape(table.shape[0], -1, 9)
    return {"interior": flat[:, :, 4].max(axis=1), "border": flat[:, :, _BORDER].max(axis=(1, 2))}


@dataclasses.dataclass
class RegionState:
    err: float = 0.0
    peak: float = 0.0
    elements: int = 0
    sample_ratio: float = 0.0  # max over samples of (region err in the sample / region peak in the sample)


class Accumulator:
    def __init__(self, geom, region_names: tuple = ()) -> None:
        self.geom = geom
        self.seen = self.n_pairs = 0
        self.nan, self.inf = [0, 0], [0, 0]
        self.n_mismatch, self.first_mismatch = 0, None
        self.sum_abs = self.sum_sq = self.norm_a = self.norm_b = self.dot = 0.0
        self.n_out = 0
        self.worst: tuple | None = None  # (flat index, reference value, candidate value, |b - a|)
        self.peak = 0.0
        self.mag_max = 0.0
        self.phase_max = 0.0
        self.front = phase_frontier.EMPTY
        channels = geom.n_channels
        self.channel_err, self.channel_peak = np.zeros(channels), np.zeros(channels)
        self.spatial = geom.spatial_axes is not None
        self.regions: dict[str, RegionState] = {}
        if self.spatial:
            for name, count in geom_band_counts(geom).items():
                self.regions[name] = RegionState(elements=count)
        self.user_regions = tuple(region_names)
        for name in self.user_regions:
            self.regions[name] = RegionState()
        self.sample_ratio = 0.0
        self.top: list[tuple] = []  # (-ratio, sample, err, peak)
        self.open: tuple | None = None  # (sample, err row (C,3,3), peak row, {region: (err, peak)})

    # ---- merging one chunk ----
    def add(self, stats: ChunkStats, start: int, phase_threshold: float) -> None:
        self.seen += stats.n
        self.n_pairs += stats.n_pairs
        for side in (0, 1):
            self.nan[side] += stats.nan[side]
            self.inf[side] += stats.inf[side]
        if stats.n_mismatch and self.first_mismatch is None:
            index, a, b = stats.first_mismatch
            self.first_mismatch = (start + index, a, b)
        self.n_mismatch += stats.n_mismatch
        self.sum_abs += stats.sum_abs
        self.sum_sq += stats.sum_sq
        self.norm_a += stats.norm_a
        self.dot += stats.dot if stats.dot is not None else stats.norm_a + stats.cross
        self.norm_b += (stats.norm_b if stats.norm_b is not None
                        else stats.norm_a + 2 * stats.cross + stats.sum_sq)
        if stats.n_out is not None:
            self.n_out += stats.n_out
        if stats.worst is not None and (self.worst is None or stats.worst[3] > self.worst[3]):
            index, a, b, err = stats.worst
            self.worst = (start + index, _scalar(a), _scalar(b), err)  # strict: the first occurrence wins ties
        self.peak = max(self.peak, stats.peak_value)
        if stats.mag_max is not None:
            self.mag_max = max(self.mag_max, stats.mag_max)
        if stats.phase_max is not None:
            self.phase_max = max(self.phase_max, stats.phase_max)
        if stats.phase_front is not None:
            self.front = phase_frontier.merge(self.front, *stats.phase_front, phase_threshold)
        elif self.front[0].size:
            self.front = phase_frontier.merge(self.front, *phase_frontier.EMPTY, phase_threshold)
        self._add_tables(stats)

    def _add_tables(self, stats: ChunkStats) -> None:
        err, peak = stats.err.copy(), stats.peak.copy()
        np.maximum(self.channel_err, err.max(axis=(0, 2, 3)), out=self.channel_err)
        np.maximum(self.channel_peak, peak.max(axis=(0, 2, 3)), out=self.channel_peak)
        if self.spatial:
            for name, values in _interior_border(err).items():
                self.regions[name].err = max(self.regions[name].err, float(values.max()))
            for name, values in _interior_border(peak).items():
                self.regions[name].peak = max(self.regions[name].peak, float(values.max()))
        regions = {}
        for name in self.user_regions:
            if name not in stats.region_err:
                raise ValueError(f"region {name!r} was given for an earlier chunk but not for this one")
            state = self.regions[name]
            region_err, region_peak = stats.region_err[name].copy(), stats.region_peak[name].copy()
            state.err = max(state.err, float(region_err.max()))
            state.peak = max(state.peak, float(region_peak.max()))
            state.elements += stats.region_count[name]
            regions[name] = (region_err, region_peak)
        if self.open is not None:
            sample, open_err, open_peak, open_regions = self.open
            if sample == stats.sample0:  # the sample straddles the chunk boundary
                np.maximum(err[0], open_err, out=err[0])
                np.maximum(peak[0], open_peak, out=peak[0])
                for name, (e, p) in open_regions.items():
                    regions[name][0][0] = max(regions[name][0][0], e)
                    regions[name][1][0] = max(regions[name][1][0], p)
            else:
                self._fold(open_err[None], open_peak[None], np.array([sample]),
                           {name: (np.array([e]), np.array([p])) for name, (e, p) in open_regions.items()})
        last = err.shape[0] - 1
        self._fold(err[:last], peak[:last], np.arange(stats.sample0, stats.sample0 + last),
                   {name: (e[:last], p[:last]) for name, (e, p) in regions.items()})
        self.open = (stats.sample0 + last, err[last], peak[last],
                     {name: (float(e[last]), float(p[last])) for name, (e, p) in regions.items()})

    def _fold(self, err: np.ndarray, peak: np.ndarray, samples: np.ndarray, regions: dict) -> None:
        """Samples that are complete: into the top list and the running maxima of per-sample ratios."""
        if not len(samples):
            return
        sample_err = err.reshape(len(samples), -1).max(axis=1)
        sample_peak = peak.reshape(len(samples), -1).max(axis=1)
        sample_ratio = ratios(sample_err, sample_peak)
        self.sample_ratio = max(self.sample_ratio, float(sample_ratio.max()))
        rows = [(-float(r), int(s), float(e), float(p))
                for r, s, e, p in zip(sample_ratio, samples, sample_err, sample_peak)]
        if len(rows) > TOP:
            keep = np.lexsort((samples, -sample_ratio))[:TOP]
            rows = [rows[i] for i in keep]
        self.top = sorted(self.top + rows)[:TOP]
        if self.spatial:
            errs, peaks = _interior_border(err), _interior_border(peak)
            for name in ("interior", "border"):
                state = self.regions[name]
                state.sample_ratio = max(state.sample_ratio, float(ratios(errs[name], peaks[name]).max()))
        for name, (e, p) in regions.items():
            state = self.regions[name]
            state.sample_ratio = max(state.sample_ratio, float(ratios(e, p).max()))

    def finish(self) -> None:
        if self.open is not None:
            sample, err, peak, regions = self.open
            self._fold(err[None], peak[None], np.array([sample]),
                       {name: (np.array([e]), np.array([p])) for name, (e, p) in regions.items()})
            self.open = None

    def phase_error(self, threshold: float) -> float:
        return max(self.phase_max, phase_frontier.query(self.front, threshold))


def _scalar(x):
    return x.item() if isinstance(x, np.generic) else x


def geom_band_counts(geom) -> dict[str, int]:
    """Elements in the interior and in the border band of a spatial tap."""
    row_axis, col_axis = geom.spatial_axes
    rows, cols = (hi - lo for lo, hi in geom.bands(row_axis)), (hi - lo for lo, hi in geom.bands(col_axis))
    rows, cols = list(rows), list(cols)
    others = geom.row_size * geom.shape[0] // (geom.shape[row_axis] * geom.shape[col_axis]) if geom.shape else 0
    interior = rows[1] * cols[1] * others
    return {"interior": interior, "border": geom.row_size * geom.shape[0] - interior}
