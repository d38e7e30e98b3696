"""Per-tap comparison metrics (``a`` reference, ``b`` candidate), computed in bounded-memory chunks.

Errors are computed in float64/complex128 one chunk at a time, so a tap in an HDF5 file larger
than memory still compares.  Maxima and the worst index are exact whatever the chunking; sums
(mean, RMS, cosine) agree up to rounding.  Elementwise metrics use the pairs where both sides are
finite; NaN, or +-Inf of the same sign, at the same positions do not fail by themselves, any other
non-finite disagreement fails.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

__all__ = ["Criteria", "TapMetrics", "StreamingComparator", "compare", "chunk_plan"]


@dataclasses.dataclass(frozen=True)
class Criteria:
    """Pass criteria for one tap; every criterion that is set must hold.

    ``atol``/``rtol`` follow :func:`numpy.isclose` with the reference as the
    second argument: ``|a-b| <= atol + rtol*|a|``.  The criterion is active when
    either is set (the unset one is 0); at most ``max_fraction_out`` of the
    elements may lie outside.  ``max_phase_error`` applies to complex taps only,
    over the elements with ``|a| >= phase_floor * max|a|``.
    """

    max_rel_to_peak: float | None = None
    atol: float | None = None
    rtol: float | None = None
    max_fraction_out: float = 0.0
    max_abs: float | None = None
    min_cosine: float | None = None
    max_phase_error: float | None = None
    phase_floor: float = 1e-3
    allow_nonfinite: bool = False  # NaN/Inf at the same positions in both sides pass only when set

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name == "allow_nonfinite":
                if not isinstance(v, bool):
                    raise TypeError(f"Criteria.allow_nonfinite must be true or false, got {v!r}")
                continue
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
                raise TypeError(f"Criteria.{f.name} must be a number or None, got {v!r}")
            object.__setattr__(self, f.name, v := float(v))
            lo, hi = {"min_cosine": (-1.0, 1.0), "max_fraction_out": (0.0, 1.0)}.get(f.name, (0.0, math.inf))
            if not (lo <= v <= hi and math.isfinite(v)):
                raise ValueError(f"Criteria.{f.name} must be finite and in [{lo}, {hi}], got {v!r}")

    @property
    def tolerance_active(self) -> bool:
        return self.atol is not None or self.rtol is not None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def set_fields(self) -> dict:
        """Only the criteria that differ from the defaults (what a TOML rule needs to say)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if getattr(self, f.name) != f.default}

    @classmethod
    def from_dict(cls, d: dict) -> Criteria:
        if not isinstance(d, dict):
            raise TypeError(f"Criteria.from_dict expects a dict, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(str(k) for k in d if k not in known)
        if unknown:
            raise ValueError(f"unknown criteria key(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        return cls(**d)


def _enc_float(x: float) -> float | str:
    return x if math.isfinite(x) else ("nan" if math.isnan(x) else ("inf" if x > 0 else "-inf"))


def _jsonable(v: Any) -> Any:
    v = v.item() if isinstance(v, np.generic) else v
    if isinstance(v, Criteria):
        return v.to_dict()
    if isinstance(v, float):
        return _enc_float(v)
    if isinstance(v, complex):
        return [_enc_float(v.real), _enc_float(v.imag)]
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if v is None or isinstance(v, (bool, int, str)):
        return v
    raise TypeError(f"cannot serialise {type(v).__name__}")


def _dec_scalar(x: Any) -> Any:
    """Inverse of ``_jsonable`` for scalars: [re, im] -> complex, "nan"/"inf"/"-inf" -> float."""
    if isinstance(x, list):
        return complex(float(x[0]), float(x[1]))
    return float(x) if isinstance(x, str) else x


@dataclasses.dataclass
class TapMetrics:
    """Typed comparison result of one tap; ``to_dict`` is strict-JSON serialisable.

    When the shapes differ, elementwise metrics are NaN (floats) or None and only
    the NaN/Inf counts are reported.  ``allclose`` is True when every compared
    element lies within atol/rtol (vacuously when neither is set), the non-finite
    positions agree and the shapes match.
    """

    name: str
    reference_shape: tuple
    candidate_shape: tuple
    reference_dtype: str
    candidate_dtype: str
    shape_match: bool
    dtype_match: bool
    size: int  # elements of the reference
    n_compared: int  # pairs where both sides are finite
    max_abs_error: float
    reference_peak: float  # max |a| over finite reference elements
    max_rel_to_peak: float
    mean_abs_error: float
    rms_error: float
    cosine_similarity: float
    n_out_of_tolerance: int | None
    fraction_out_of_tolerance: float
    allclose: bool
    worst_index: tuple | None
    worst_reference: Any
    worst_candidate: Any
    nan_reference: int
    nan_candidate: int
    inf_reference: int
    inf_candidate: int
    nonfinite_positions_agree: bool | None  # None when the shapes differ
    n_nonfinite_mismatch: int | None
    complex: bool
    magnitude_max_abs_error: float | None
    magnitude_max_rel_to_peak: float | None
    phase_max_abs_error: float | None
    criteria: Criteria
    passed: bool
    failures: list

    def to_dict(self) -> dict:
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, d: dict) -> TapMetrics:
        text = ("name", "reference_dtype", "candidate_dtype")
        kw = {k: float(v) if isinstance(v, str) and k not in text else v for k, v in d.items()}
        kw["worst_reference"] = _dec_scalar(kw["worst_reference"])
        kw["worst_candidate"] = _dec_scalar(kw["worst_candidate"])
        for k in ("reference_shape", "candidate_shape", "worst_index"):
            kw[k] = None if kw[k] is None else tuple(int(i) for i in kw[k])
        kw["criteria"] = Criteria.from_dict(kw["criteria"])
        return cls(**kw)


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


def _fmt(value: Any, dtype: str) -> str:
    """A value as its dtype prints it (shortest repr), without numpy's parentheses around complex."""
    s = str(np.dtype(dtype).type(value))
    return s[1:-1] if s.startswith("(") and s.endswith(")") else s


def _finite_peak(magnitude: np.ndarray, finite: np.ndarray) -> float:
    """max |a| over the elements where ``a`` itself is finite (0.0 if none)."""
    return float(magnitude[finite].max()) if finite.any() else 0.0


def _ratio(num: float, peak: float) -> float:
    return 0.0 if num == 0 else (num / peak if peak > 0 else math.inf)


class StreamingComparator:
    """Accumulates the metrics of one tap over consecutive chunks.

    ``update`` takes chunks of both sides whose C-order elements are consecutive in the flattened
    tap (usually slices along axis 0), ``start`` being the flat offset of the first element.  When
    the shapes differ, feed each side to ``count_nonfinite`` instead.  The phase error of complex
    taps needs the global peak: pass ``reference_peak`` (max |a| over finite reference elements,
    from a pre-pass) for memory bounded by the chunk, else an exact (|a|, error) frontier is kept.
    """

    def __init__(self, name, reference_shape, reference_dtype, candidate_shape, candidate_dtype,
                 criteria: Criteria, *, reference_peak: float | None = None):
        self.name = name
        self.reference_shape = tuple(int(n) for n in reference_shape)
        self.candidate_shape = tuple(int(n) for n in candidate_shape)
        rd, cd = (np.dtype(d).newbyteorder("=") for d in (reference_dtype, candidate_dtype))  # '>f4' is float32
        for dt in (rd, cd):
            if dt.kind not in "biufc":
                raise TypeError(f"{name}: unsupported dtype {dt} (numeric dtypes only)")
        self.reference_dtype, self.candidate_dtype = str(rd), str(cd)
        self.criteria = criteria
        self.shape_match = self.reference_shape == self.candidate_shape
        self.complex = rd.kind == "c" or cd.kind == "c"
        self._work = np.complex128 if self.complex else np.float64
        self.size = math.prod(self.reference_shape)
        self._peak_hint = None if reference_peak is None else float(reference_peak)
        self._seen = self._n_pairs = 0
        self._peak = self._max_err = 0.0
        self._nan, self._inf = [0, 0], [0, 0]
        self._worst: tuple | None = None  # (flat index, reference value, candidate value)
        self._sum_abs = self._sum_sq = self._dot = self._norm_a = self._norm_b = 0.0
        self._n_out = self._n_mismatch = 0
        self._first_mismatch: tuple | None = None
        self._mag_max = self._phase_max = 0.0
        self._front_mag = self._front_err = np.empty(0)  # (|a|, phase error) frontier, no peak hint

    def _count(self, side: int, x: np.ndarray) -> None:
        nan = np.isnan(x)
        self._nan[side] += int(np.count_nonzero(nan))
        self._inf[side] += int(np.count_nonzero(np.isinf(x) & ~nan))

    def count_nonfinite(self, reference_chunk=None, candidate_chunk=None) -> None:
        """NaN/Inf counting only, for either side alone (used when the shapes differ)."""
        for side, chunk in ((0, reference_chunk), (1, candidate_chunk)):
            if chunk is not None:
                self._count(side, np.asarray(chunk).astype(self._work).ravel())

    def update(self, reference_chunk, candidate_chunk, start: int) -> None:
        if not self.shape_match:
            raise ValueError(f"{self.name}: shapes differ; use count_nonfinite()")
        if start != self._seen:
            raise ValueError(f"{self.name}: chunk starts at {start}, expected {self._seen} (chunks must be consecutive)")
        raw_a = np.asarray(reference_chunk).ravel()
        raw_b = np.asarray(candidate_chunk).ravel()
        if raw_a.size != raw_b.size or start + raw_a.size > self.size:
            raise ValueError(f"{self.name}: chunk sizes {raw_a.size}/{raw_b.size} at {start} do not fit size {self.size}")
        self._seen += raw_a.size
        a, b = raw_a.astype(self._work), raw_b.astype(self._work)
        self._count(0, a)
        self._count(1, b)
        fa, fb = np.isfinite(a), np.isfinite(b)
        abs_a_all = np.abs(a)
        self._peak = max(self._peak, _finite_peak(abs_a_all, fa))
        both = fa & fb
        pos = None
        if not both.all():
            mism = _codes(a) != _codes(b)
            n = int(np.count_nonzero(mism))
            if n and self._first_mismatch is None:
                i = int(np.argmax(mism))
                self._first_mismatch = (start + i, raw_a[i].item(), raw_b[i].item())
            self._n_mismatch += n
            pos = np.flatnonzero(both)
            a, b, abs_a = a[pos], b[pos], abs_a_all[pos]
        else:
            abs_a = abs_a_all
        if a.size == 0:
            return
        d = b - a
        d = np.abs(d, out=d) if d.dtype == np.float64 else np.abs(d)
        i = int(np.argmax(d))
        if self._worst is None or d[i] > self._max_err:  # strict: first occurrence wins across chunks
            j = i if pos is None else int(pos[i])
            self._max_err = float(d[i])
            self._worst = (start + j, raw_a[j].item(), raw_b[j].item())
        self._n_pairs += a.size
        self._sum_abs += float(d.sum())
        self._sum_sq += float(np.dot(d, d))
        self._dot += float(np.vdot(a, b).real)
        self._norm_a += float(np.vdot(a, a).real)
        self._norm_b += float(np.vdot(b, b).real)
        c = self.criteria
        if c.tolerance_active:
            thr = abs_a * (c.rtol or 0.0)
            thr += c.atol or 0.0
            self._n_out += int(np.count_nonzero(d > thr))
            del thr
        if self.complex:
            abs_b = np.abs(b)
            self._mag_max = max(self._mag_max, float(np.abs(abs_b - abs_a).max()))
            phase = np.abs(np.angle(b * np.conj(a)))
            if self._peak_hint is not None:
                keep = abs_a >= c.phase_floor * self._peak_hint
                if keep.any():
                    self._phase_max = max(self._phase_max, float(phase[keep].max()))
            else:
                self._update_frontier(abs_a, phase)

    def _update_frontier(self, mag: np.ndarray, err: np.ndarray) -> None:
        """Keep the (|a|, phase error) pairs that can still be the answer for some threshold."""
        floor = self.criteria.phase_floor * self._peak
        keep = mag >= floor
        m = np.concatenate([self._front_mag[self._front_mag >= floor], mag[keep]])
        e = np.concatenate([self._front_err[self._front_mag >= floor], err[keep]])
        order = np.lexsort((-e, -m))  # |a| descending, then error descending
        m, e = m[order], e[order]
        prev = np.concatenate([[-np.inf], np.maximum.accumulate(e)[:-1]])
        record = e > prev
        self._front_mag, self._front_err = m[record], e[record]

    def _phase_result(self) -> float:
        if self._peak_hint is not None:
            return self._phase_max
        sel = self._front_err[self._front_mag >= self.criteria.phase_floor * self._peak]
        return float(sel.max()) if sel.size else 0.0

    def result(self) -> TapMetrics:
        c, name = self.criteria, self.name
        dtype_match = self.reference_dtype == self.candidate_dtype
        failures: list[str] = []
        nan = float("nan")
        common = dict(
            name=name, reference_shape=self.reference_shape, candidate_shape=self.candidate_shape,
            reference_dtype=self.reference_dtype, candidate_dtype=self.candidate_dtype,
            shape_match=self.shape_match, dtype_match=dtype_match, size=self.size,
            nan_reference=self._nan[0], nan_candidate=self._nan[1],
            inf_reference=self._inf[0], inf_candidate=self._inf[1], complex=self.complex, criteria=c,
        )
        if not self.shape_match:
            failures.append(f"{name}: shape differs: reference {self.reference_shape}, candidate {self.candidate_shape}")
        if not dtype_match:
            failures.append(f"{name}: dtype differs: reference {self.reference_dtype}, candidate {self.candidate_dtype}")
        if not self.shape_match:
            nans = dict.fromkeys(("max_abs_error", "reference_peak", "max_rel_to_peak", "mean_abs_error",
                                  "rms_error", "cosine_similarity", "fraction_out_of_tolerance"), nan)
            nones = dict.fromkeys(("n_out_of_tolerance", "worst_index", "worst_reference", "worst_candidate",
                                   "nonfinite_positions_agree", "n_nonfinite_mismatch", "magnitude_max_abs_error",
                                   "magnitude_max_rel_to_peak", "phase_max_abs_error"))
            return TapMetrics(**common, **nans, **nones, n_compared=0, allclose=False, passed=False, failures=failures)
        if self._seen != self.size:
            raise ValueError(f"{name}: only {self._seen} of {self.size} elements were fed to the comparator")
        if self._peak_hint is not None and self._peak_hint != self._peak:
            raise ValueError(f"{name}: reference_peak hint {self._peak_hint!r} differs from the data's {self._peak!r}")

        peak, n = self._peak, self._n_pairs
        max_rel = _ratio(self._max_err, peak)
        na, nb = self._norm_a, self._norm_b
        cosine = min(1.0, max(-1.0, self._dot / math.sqrt(na * nb))) if na and nb else float(na == nb)
        frac = self._n_out / self.size if self.size else 0.0
        agree = self._n_mismatch == 0
        shape = self.reference_shape
        worst_index, wa, wb, worst_txt = None, None, None, ""
        if self._worst is not None:
            worst_index = tuple(int(i) for i in np.unravel_index(self._worst[0], shape))
            wa, wb = self._worst[1], self._worst[2]
            worst_txt = (f" (worst at {worst_index}: reference {_fmt(wa, self.reference_dtype)}, "
                         f"candidate {_fmt(wb, self.candidate_dtype)})")

        if not agree:
            fi, fa_, fb_ = self._first_mismatch
            idx = tuple(int(i) for i in np.unravel_index(fi, shape))
            failures.append(
                f"{name}: NaN/Inf positions differ: reference {self._nan[0]} NaN, {self._inf[0]} Inf, "
                f"candidate {self._nan[1]} NaN, {self._inf[1]} Inf ({self._n_mismatch} positions differ, "
                f"first at {idx}: reference {_fmt(fa_, self.reference_dtype)}, candidate {_fmt(fb_, self.candidate_dtype)})")
        nonfinite = self._nan[0] + self._inf[0] + self._nan[1] + self._inf[1]
        if agree and nonfinite and not c.allow_nonfinite:
            failures.append(f"{name}: {self._nan[0]} NaN and {self._inf[0]} Inf in the reference, at the same "
                            f"positions in the candidate; non-finite values fail unless the tolerance sets "
                            f"allow_nonfinite = true")
        if c.max_rel_to_peak is not None and not max_rel <= c.max_rel_to_peak:
            failures.append(f"{name}: max |a-b| / max |a| = {max_rel:.1e} exceeds {c.max_rel_to_peak:.1e}{worst_txt}")
        if c.max_abs is not None and not self._max_err <= c.max_abs:
            failures.append(f"{name}: max |a-b| = {self._max_err:.1e} exceeds {c.max_abs:.1e}{worst_txt}")
        if c.tolerance_active and not frac <= c.max_fraction_out:
            failures.append(
                f"{name}: {self._n_out} of {self.size} elements ({100 * frac:.2f}%) outside "
                f"atol={c.atol or 0.0:g}, rtol={c.rtol or 0.0:g} (allowed {100 * c.max_fraction_out:.2f}%)")
        if c.min_cosine is not None and not cosine >= c.min_cosine:
            failures.append(f"{name}: cosine similarity = {cosine:.9f} (1 - cos = {1 - cosine:.1e}) "
                            f"below {c.min_cosine:.9g}")
        phase = mag = mag_rel = None
        if self.complex:
            phase, mag = self._phase_result(), self._mag_max
            mag_rel = _ratio(mag, peak)
            if c.max_phase_error is not None and not phase <= c.max_phase_error:
                failures.append(f"{name}: max phase error = {phase:.1e} rad exceeds {c.max_phase_error:.1e} rad "
                                f"(over |a| >= {c.phase_floor:g} * max |a|)")
        return TapMetrics(
            **common, n_compared=n, max_abs_error=self._max_err, reference_peak=peak, max_rel_to_peak=max_rel,
            mean_abs_error=self._sum_abs / n if n else 0.0, rms_error=math.sqrt(self._sum_sq / n) if n else 0.0,
            cosine_similarity=cosine, n_out_of_tolerance=self._n_out, fraction_out_of_tolerance=frac,
            allclose=self._n_out == 0 and agree, worst_index=worst_index, worst_reference=wa, worst_candidate=wb,
            nonfinite_positions_agree=agree, n_nonfinite_mismatch=self._n_mismatch,
            magnitude_max_abs_error=mag, magnitude_max_rel_to_peak=mag_rel, phase_max_abs_error=phase,
            passed=not failures, failures=failures)


def chunk_plan(shape: tuple, max_elements: int):
    """Yield ``(index, flat_start, count)`` blocks of <= max(1, max_elements) elements covering ``shape``
    in C order: runs of whole rows along axis 0 when a row fits, else runs along the first axis whose
    trailing sub-block fits, the leading axes being indexed."""
    shape = tuple(int(n) for n in shape)
    if shape == ():
        yield (), 0, 1
        return
    if math.prod(shape) == 0:
        return
    max_elements = max(1, int(max_elements))
    strides = [math.prod(shape[i + 1:]) for i in range(len(shape))]
    k = next(i for i, s in enumerate(strides) if s <= max_elements)
    step = max_elements // strides[k]
    for outer in np.ndindex(*shape[:k]):
        base = sum(i * s for i, s in zip(outer, strides))
        for j in range(0, shape[k], step):
            stop = min(j + step, shape[k])
            yield tuple(outer) + (slice(j, stop),), base + j * strides[k], (stop - j) * strides[k]


def _as_source(x):
    return x if hasattr(x, "shape") and hasattr(x, "dtype") and hasattr(x, "__getitem__") else np.asarray(x)


def compare(name: str, reference, candidate, criteria: Criteria | None = None, *,
            chunk_bytes: int = 64 << 20) -> TapMetrics:
    """Compare two taps (numpy arrays or h5py Datasets) reading at most ``chunk_bytes`` per side at a time.

    Chunks are sized so that one chunk cast to float64/complex128 fits in
    ``chunk_bytes``; the working memory peaks at about 8x ``chunk_bytes``.
    A read never exceeds ``chunk_bytes`` unless a single element is larger.
    Complex taps with matching shapes get a pre-pass over the reference for
    its peak, so the phase error is computed with bounded memory.
    """
    criteria = Criteria() if criteria is None else criteria
    ref, cand = _as_source(reference), _as_source(candidate)
    rd, cd = np.dtype(ref.dtype), np.dtype(cand.dtype)
    work = 16 if "c" in (rd.kind, cd.kind) else 8  # bytes per element once cast to complex128/float64
    max_elems = max(1, int(chunk_bytes) // max(rd.itemsize, cd.itemsize, work))
    shape_match = tuple(ref.shape) == tuple(cand.shape)
    peak = None
    if shape_match and (rd.kind == "c" or cd.kind == "c"):
        peak = 0.0
        for index, _, _ in chunk_plan(ref.shape, max_elems):
            a = np.asarray(ref[index]).astype(np.complex128)
            peak = max(peak, _finite_peak(np.abs(a), np.isfinite(a)))
    comp = StreamingComparator(name, ref.shape, rd, cand.shape, cd, criteria, reference_peak=peak)
    if shape_match:
        for index, start, _ in chunk_plan(ref.shape, max_elems):
            comp.update(np.asarray(ref[index]), np.asarray(cand[index]), start)
    else:
        for index, _, _ in chunk_plan(ref.shape, max_elems):
            comp.count_nonfinite(reference_chunk=np.asarray(ref[index]))
        for index, _, _ in chunk_plan(cand.shape, max_elems):
            comp.count_nonfinite(candidate_chunk=np.asarray(cand[index]))
    return comp.result()
