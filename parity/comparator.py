"""``StreamingComparator``: the metrics and verdict of one tap, fed chunk by chunk.

Chunks are consecutive runs of the flattened tap (usually slices along axis 0, the batch);
the reference chunk is a numpy array, the candidate chunk a numpy array or a Torch tensor
(any device, any strides).  Each chunk goes to an engine (``parity.engines``) and only its
statistics are kept, so memory is bounded by the chunk whatever the tap's size.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import breakdown
from .accumulator import Accumulator
from .criteria import Criteria
from .engines import ENGINES, PhasePlan, ReferenceCache, is_tensor, run_chunk, to_numpy
from .engines.exact import count_nonfinite
from .geometry import TapGeometry
from .tap_metrics import TapMetrics

__all__ = ["StreamingComparator"]


def _fmt(value: Any, dtype: str) -> str:
    """A value as its dtype prints it (shortest repr), without numpy's parentheses around complex."""
    s = str(np.dtype(dtype).type(value))
    return s[1:-1] if s.startswith("(") and s.endswith(")") else s


def _ratio(num: float, peak: float) -> float:
    return 0.0 if num == 0 else (num / peak if peak > 0 else math.inf)


def _dtype(d) -> np.dtype:
    """A numpy dtype in native byte order ('>f4' is float32) from a numpy dtype, its name or a Torch dtype."""
    d = d if isinstance(d, np.dtype) else np.dtype(str(d).replace("torch.", ""))
    return d if d.isnative else d.newbyteorder("=")


def _size(x) -> int:
    return int(x.numel()) if is_tensor(x) else int(np.size(x))


def _reshape(x, shape):
    if tuple(x.shape) == tuple(shape):
        return x
    return x.reshape(shape) if is_tensor(x) else np.reshape(x, shape)


class StreamingComparator:
    """Accumulates the metrics of one tap over consecutive chunks.

    ``update(reference_chunk, candidate_chunk, start, regions=None)``: chunks of both sides
    whose C-order elements are consecutive in the flattened tap, ``start`` being the flat
    offset of the first element; ``regions`` maps a region name to a boolean mask of the
    chunk's shape (the same names for every chunk).  When the shapes differ, feed each side
    to ``count_nonfinite`` instead.  ``layout`` (a registry layout: ``BHWC``, ``HW``,
    ``B12C``, ``M2``, ``B``, ``scalar``) names the batch, channel and spatial axes for the
    breakdown; ``border_fraction`` sizes the border band of image taps.  The phase error of
    complex taps is thresholded at the global peak: ``reference_peak`` may give it up front,
    else an exact frontier is kept (``parity.phase_frontier``).  ``engine``: ``auto``
    (numpy for numpy arrays and CPU tensors, Torch on a CUDA tensor's device), ``numpy`` or
    ``torch``.  ``reference_cache``: a ``ReferenceCache`` shared with the comparator of the
    other mode, so the reference side of a chunk is computed (and moved to the device) once.
    """

    def __init__(self, name, reference_shape, reference_dtype, candidate_shape, candidate_dtype,
                 criteria: Criteria, *, reference_peak: float | None = None, layout: str | None = None,
                 border_fraction: float = 0.25, engine: str = "auto", reference_cache: ReferenceCache | None = None):
        self.name = name
        self.reference_shape = tuple(int(n) for n in reference_shape)
        self.candidate_shape = tuple(int(n) for n in candidate_shape)
        rd, cd = (_dtype(d) for d in (reference_dtype, candidate_dtype))
        for dt in (rd, cd):
            if dt.kind not in "biufc":
                raise TypeError(f"{name}: unsupported dtype {dt} (numeric dtypes only)")
        if engine not in ENGINES:
            raise ValueError(f"{name}: engine must be one of {ENGINES}, got {engine!r}")
        self._rd, self._cd = rd, cd
        self.reference_dtype, self.candidate_dtype = str(rd), str(cd)
        self.criteria = criteria
        self.engine = engine
        self.reference_cache = reference_cache
        self.shape_match = self.reference_shape == self.candidate_shape
        self.complex = rd.kind == "c" or cd.kind == "c"
        self.size = math.prod(self.reference_shape)
        self.geom = TapGeometry.of(name, self.reference_shape, layout, border_fraction)
        self._peak_hint = None if reference_peak is None else float(reference_peak)
        self._acc: Accumulator | None = None
        self._region_names: tuple | None = None
        self._nan, self._inf = [0, 0], [0, 0]  # count_nonfinite only (shapes differ)

    def count_nonfinite(self, reference_chunk=None, candidate_chunk=None) -> None:
        """NaN/Inf counting only, for either side alone (used when the shapes differ)."""
        work = np.complex128 if self.complex else np.float64
        for side, chunk in ((0, reference_chunk), (1, candidate_chunk)):
            if chunk is not None:
                nan, inf = count_nonfinite(to_numpy(chunk).astype(work).ravel())
                self._nan[side] += nan
                self._inf[side] += inf

    def update(self, reference_chunk, candidate_chunk, start: int, regions: dict | None = None) -> None:
        if not self.shape_match:
            raise ValueError(f"{self.name}: shapes differ; use count_nonfinite()")
        regions = dict(regions or {})
        if self._acc is None:
            self._region_names = tuple(sorted(regions))
            self._acc = Accumulator(self.geom, self._region_names)
        acc = self._acc
        if tuple(sorted(regions)) != self._region_names:
            raise ValueError(f"{self.name}: regions {sorted(regions)} differ from the first chunk's "
                             f"{list(self._region_names)}")
        if start != acc.seen:
            raise ValueError(f"{self.name}: chunk starts at {start}, expected {acc.seen} (chunks must be consecutive)")
        reference = reference_chunk if is_tensor(reference_chunk) else np.asarray(reference_chunk)
        n, m = _size(reference), _size(candidate_chunk)
        if n != m or start + n > self.size:
            raise ValueError(f"{self.name}: chunk sizes {n}/{m} at {start} do not fit size {self.size}")
        if n == 0:
            return
        row = self.geom.row_size
        shape = ((n // row,) + self.reference_shape[1:] if self.reference_shape and start % row == 0 and n % row == 0
                 else tuple(reference.shape))
        reference, candidate = _reshape(reference, shape), _reshape(candidate_chunk, shape)
        for key, mask in regions.items():
            if _size(mask) != n:
                raise ValueError(f"{self.name}: region {key!r} mask has {_size(mask)} elements, the chunk {n}")
            regions[key] = _reshape(mask, shape)
        c = self.criteria
        plan = PhasePlan(floor=c.phase_floor, hint=self._peak_hint, peak_before=acc.peak,
                         known=self._peak_hint is not None or start + n == self.size)
        stats = run_chunk(reference, candidate, self.geom, start, c, regions, plan, self._rd, self._cd,
                          self.engine, self.reference_cache)
        acc.add(stats, start, c.phase_floor * max(acc.peak, stats.peak_value))

    def _shape_mismatch(self, common: dict, failures: list) -> TapMetrics:
        nan = float("nan")
        nans = dict.fromkeys(("max_abs_error", "reference_peak", "max_rel_to_peak", "mean_abs_error",
                              "rms_error", "cosine_similarity", "fraction_out_of_tolerance"), nan)
        if not self.criteria.tolerance_active:
            nans["fraction_out_of_tolerance"] = None
        nones = dict.fromkeys(("n_out_of_tolerance", "worst_index", "worst_reference", "worst_candidate",
                               "nonfinite_positions_agree", "n_nonfinite_mismatch", "magnitude_max_abs_error",
                               "magnitude_max_rel_to_peak", "phase_max_abs_error", "breakdown"))
        return TapMetrics(**common, **nans, **nones, n_compared=0, allclose=False if self.criteria.tolerance_active
                          else None, passed=False, failures=failures, max_rel_to_sample_peak=nan,
                          nan_reference=self._nan[0], nan_candidate=self._nan[1],
                          inf_reference=self._inf[0], inf_candidate=self._inf[1])

    def result(self) -> TapMetrics:
        c, name = self.criteria, self.name
        dtype_match = self.reference_dtype == self.candidate_dtype
        failures: list[str] = []
        common = dict(
            name=name, reference_shape=self.reference_shape, candidate_shape=self.candidate_shape,
            reference_dtype=self.reference_dtype, candidate_dtype=self.candidate_dtype,
            shape_match=self.shape_match, dtype_match=dtype_match, size=self.size, complex=self.complex, criteria=c,
        )
        if not self.shape_match:
            failures.append(f"{name}: shape differs: reference {self.reference_shape}, candidate {self.candidate_shape}")
        if not dtype_match:
            failures.append(f"{name}: dtype differs: reference {self.reference_dtype}, candidate {self.candidate_dtype}")
        if not self.shape_match:
            return self._shape_mismatch(common, failures)
        if self._acc is None:
            self._region_names = ()
            self._acc = Accumulator(self.geom, ())
        acc = self._acc
        if acc.seen != self.size:
            raise ValueError(f"{name}: only {acc.seen} of {self.size} elements were fed to the comparator")
        if self._peak_hint is not None and self._peak_hint != acc.peak:
            raise ValueError(f"{name}: reference_peak hint {self._peak_hint!r} differs from the data's {acc.peak!r}")
        acc.finish()

        peak, n = acc.peak, acc.n_pairs
        max_err = acc.worst[3] if acc.worst is not None else 0.0
        max_rel = _ratio(max_err, peak)
        na, nb = acc.norm_a, max(acc.norm_b, 0.0)
        cosine = min(1.0, max(-1.0, acc.dot / math.sqrt(na * nb))) if na and nb else float(na == nb)
        agree = acc.n_mismatch == 0
        shape = self.reference_shape
        worst_index, wa, wb, worst_txt = None, None, None, ""
        if acc.worst is not None:
            worst_index = tuple(int(i) for i in np.unravel_index(acc.worst[0], shape))
            wa, wb = acc.worst[1], acc.worst[2]
            worst_txt = (f" (worst at {worst_index}: reference {_fmt(wa, self.reference_dtype)}, "
                         f"candidate {_fmt(wb, self.candidate_dtype)})")
        n_out = frac = allclose = None
        if c.tolerance_active:
            n_out = acc.n_out
            frac = n_out / self.size if self.size else 0.0
            allclose = n_out == 0 and agree

        if not agree:
            fi, fa_, fb_ = acc.first_mismatch
            idx = tuple(int(i) for i in np.unravel_index(fi, shape))
            failures.append(
                f"{name}: NaN/Inf positions differ: reference {acc.nan[0]} NaN, {acc.inf[0]} Inf, "
                f"candidate {acc.nan[1]} NaN, {acc.inf[1]} Inf ({acc.n_mismatch} positions differ, "
                f"first at {idx}: reference {_fmt(fa_, self.reference_dtype)}, candidate {_fmt(fb_, self.candidate_dtype)})")
        nonfinite = acc.nan[0] + acc.inf[0] + acc.nan[1] + acc.inf[1]
        if agree and nonfinite and not c.allow_nonfinite:
            failures.append(f"{name}: {acc.nan[0]} NaN and {acc.inf[0]} Inf in the reference, at the same "
                            f"positions in the candidate; non-finite values fail unless the tolerance sets "
                            f"allow_nonfinite = true")
        if c.max_rel_to_peak is not None and not max_rel <= c.max_rel_to_peak:
            failures.append(f"{name}: max |a-b| / max |a| = {_exceeds(max_rel, c.max_rel_to_peak)}{worst_txt}")
        if c.max_rel_to_sample_peak is not None and not acc.sample_ratio <= c.max_rel_to_sample_peak:
            worst_sample = f" (sample {acc.top[0][1]})" if acc.top and self.geom.has_samples else ""
            failures.append(f"{name}: max over samples of max |a-b| / max |a| in the sample = "
                            f"{_exceeds(acc.sample_ratio, c.max_rel_to_sample_peak)}{worst_sample}")
        if c.max_abs is not None and not max_err <= c.max_abs:
            failures.append(f"{name}: max |a-b| = {_exceeds(max_err, c.max_abs)}{worst_txt}")
        if c.tolerance_active and not frac <= c.max_fraction_out:
            failures.append(
                f"{name}: {n_out} of {self.size} elements ({100 * frac:.2f}%) outside "
                f"atol={c.atol or 0.0:g}, rtol={c.rtol or 0.0:g} (allowed {100 * c.max_fraction_out:.2f}%)")
        if c.min_cosine is not None and not cosine >= c.min_cosine:
            failures.append(f"{name}: cosine similarity = {cosine:.9f} (1 - cos = {1 - cosine:.1e}) "
                            f"below {c.min_cosine:.9g}")
        phase = mag = mag_rel = None
        if self.complex:
            phase, mag = acc.phase_error(c.phase_floor * peak), acc.mag_max
            mag_rel = _ratio(mag, peak)
            if c.max_phase_error is not None and not phase <= c.max_phase_error:
                failures.append(f"{name}: max phase error = {_exceeds(phase, c.max_phase_error, ' rad')} "
                                f"(over |a| >= {c.phase_floor:g} * max |a|)")
        summaries = breakdown.region_summaries(acc)
        failures += _region_failures(name, c, summaries, peak)
        return TapMetrics(
            **common, n_compared=n, max_abs_error=max_err, reference_peak=peak, max_rel_to_peak=max_rel,
            mean_abs_error=acc.sum_abs / n if n else 0.0, rms_error=math.sqrt(acc.sum_sq / n) if n else 0.0,
            cosine_similarity=cosine, n_out_of_tolerance=n_out, fraction_out_of_tolerance=frac,
            allclose=allclose, worst_index=worst_index, worst_reference=wa, worst_candidate=wb,
            nan_reference=acc.nan[0], nan_candidate=acc.nan[1], inf_reference=acc.inf[0], inf_candidate=acc.inf[1],
            nonfinite_positions_agree=agree, n_nonfinite_mismatch=acc.n_mismatch,
            magnitude_max_abs_error=mag, magnitude_max_rel_to_peak=mag_rel, phase_max_abs_error=phase,
            passed=not failures, failures=failures, max_rel_to_sample_peak=acc.sample_ratio,
            breakdown=breakdown.build(acc, worst_index))


def _exceeds(value: float, limit: float, unit: str = "") -> str:
    """"v exceeds l" with as many digits as it takes for the two to read differently (1.0e-06 vs 1.0e-06)."""
    for digits in range(1, 17):
        shown, bound = f"{value:.{digits}e}", f"{limit:.{digits}e}"
        if shown != bound:
            break
    return f"{shown}{unit} exceeds {bound}{unit}"


def _region_failures(name: str, criteria: Criteria, summaries: dict, peak: float) -> list[str]:
    failures = []
    for region, crit in criteria.regions:
        summary = summaries.get(region)
        if summary is None:
            known = ", ".join(summaries) or "none"
            failures.append(f"{name}: the tolerance judges region {region!r}, which this comparison does not have "
                            f"(its regions: {known}; registry regions come from backends.common.regions.tap_regions)")
            continue
        if not summary["elements"]:
            continue
        where = f"{name} [{region}, {summary['elements']} elements]"
        scale = f" (region peak {summary['peak']:.3g}, tap peak {peak:.3g})"
        if not summary["peak"] and summary["max_abs_error"]:  # inf says less than what is there instead
            scale = (f" (the reference is 0 over the whole region, the candidate is not: max |a-b| "
                     f"{summary['max_abs_error']:.3g}; tap peak {peak:.3g})")
        if crit.max_rel_to_peak is not None and not summary["max_rel"] <= crit.max_rel_to_peak:
            failures.append(f"{where}: max |a-b| / max |a| over the region = "
                            f"{_exceeds(summary['max_rel'], crit.max_rel_to_peak)}{scale}")
        if crit.max_rel_to_sample_peak is not None and not summary["max_rel_to_sample_peak"] <= crit.max_rel_to_sample_peak:
            failures.append(f"{where}: max over samples of max |a-b| / max |a| = "
                            f"{_exceeds(summary['max_rel_to_sample_peak'], crit.max_rel_to_sample_peak)}")
        if crit.max_abs is not None and not summary["max_abs_error"] <= crit.max_abs:
            failures.append(f"{where}: max |a-b| = {_exceeds(summary['max_abs_error'], crit.max_abs)}")
    return failures
