"""Facts (shape, NaN/Inf, dtype) and level hypotheses (an error with the size and texture of a known
numerical effect: a narrower dtype's rounding, float32 coordinate normalisation) for ``parity.diagnosis``."""

from __future__ import annotations

import itertools
import math

import numpy as np

from .diagnosis_core import Diagnosis, Problem

# The types a value may have been narrowed to on its way through a stage: (name, significant bits).
NARROWER = {"float64": [("float32", 24), ("TF32 / float16 (10-bit mantissa)", 11), ("bfloat16", 8)],
            "float32": [("TF32 / float16 (10-bit mantissa)", 11), ("bfloat16", 8)]}
SIMULATED_SPREAD = 5.0  # with a rerun: the candidate's error within 5x of the reference's on rounded inputs
LEVEL_SPREAD = 10.0  # the median relative error lies within 10x of the narrower type's unit roundoff
OFFSET_STEP = 1e-5  # pixels: how far the offsets are moved to measure the stage's sensitivity to them
ALTERNATIVE_PX = 1e-3  # an error equivalent to moving the offsets by less than this is "numerical"


def _real_dtype(dtype: np.dtype) -> str:
    return {"complex64": "float32", "complex128": "float64"}.get(np.dtype(dtype).name, np.dtype(dtype).name)


def _rel(a: np.ndarray, c: np.ndarray, peak: float) -> float:
    both = np.isfinite(a) & np.isfinite(c)
    return float(np.abs(a[both] - c[both]).max()) / peak if both.any() and peak else math.nan


def _centre_crop(x: np.ndarray, axes: tuple[int, ...], sizes: tuple[int, ...]) -> np.ndarray:
    index = [slice(None)] * x.ndim
    for axis, size in zip(axes, sizes):
        start = (x.shape[axis] - size) // 2
        index[axis] = slice(start, start + size)
    return x[tuple(index)]


def _knobs_for_size(cfg, reference: int, candidate: int) -> list[str]:
    """Knob values under which the configuration's canvas or patch size would be ``candidate``."""
    if cfg is None:
        return []
    found = []
    if reference == cfg.P:
        for knob, values in (("buffer", range(0, 4 * cfg.P)), ("offset", range(0, 4 * cfg.P)),
                             ("gridsize", range(1, 9))):
            hits = [value for value in values if value != getattr(cfg, knob)
                    and cfg.replace(**{knob: value}).P == candidate]
            if hits:
                shown = ", ".join(str(value) for value in hits[:3])
                found.append(f"{knob}={shown}{' ...' if len(hits) > 3 else ''} (this run: {getattr(cfg, knob)})")
        if candidate == cfg.N:
            found.append("no canvas margin at all (a patch-sized canvas)")
    elif reference == cfg.N and candidate in (cfg.N // 2, 2 * cfg.N):
        found.append(f"N={candidate} or a missing crop/pad (this run: N={cfg.N})")
    return found


def _knobs_for_channels(cfg, reference: int, candidate: int) -> list[str]:
    if cfg is None:
        return []
    found = [f"gridsize={g} (this run: {cfg.gridsize})" for g in range(1, 9) if g * g == candidate and
             g != cfg.gridsize]
    if reference == cfg.Co and candidate in (1, cfg.C) and candidate != reference:
        found.append(f"object_big={candidate != 1} (this run: {cfg.object_big})")
    return found


def shape_mismatch(p: Problem) -> list[Diagnosis]:
    a, b = p.a, p.b
    evidence: dict = {"reference_shape": list(a.shape), "candidate_shape": list(b.shape), "fact": True}
    peak = p.peak or 1.0
    if a.ndim == b.ndim and sorted(a.shape) == sorted(b.shape):
        for perm in itertools.permutations(range(b.ndim)):
            if tuple(b.shape[i] for i in perm) == a.shape and list(perm) != sorted(perm):
                residual = _rel(a, np.transpose(b, perm), peak)
                if residual <= max(3 * p.tolerance, 0.05):
                    evidence["axes"] = list(perm)
                    return [Diagnosis("shape_mismatch", f"candidate is the reference with its axes in another order "
                                      f"(transpose {tuple(perm)} restores it): a tensor handed over in the "
                                      f"backend's internal layout, not the canonical one", residual, evidence)]
    spatial = {"BHWC": (1, 2), "HW": (0, 1)}.get(p.layout, ())
    channel = 3 if p.layout == "BHWC" else None
    words, knobs, residual = [], [], math.nan
    if a.ndim == b.ndim:
        for axis in range(a.ndim):
            if a.shape[axis] == b.shape[axis]:
                continue
            if axis in spatial:
                knobs += _knobs_for_size(p.cfg, a.shape[axis], b.shape[axis])
            elif axis == channel:
                knobs += _knobs_for_channels(p.cfg, a.shape[axis], b.shape[axis])
        other = [axis for axis in range(a.ndim) if axis not in spatial and a.shape[axis] != b.shape[axis]]
        if spatial and not other:
            sizes = tuple(min(a.shape[axis], b.shape[axis]) for axis in spatial)
            residual = _rel(_centre_crop(a, spatial, sizes), _centre_crop(b, spatial, sizes), peak)
            evidence["common_centre_residual"] = residual
            words.append(f"their common {'x'.join(map(str, sizes))} centre differs by {residual:.1e} of the "
                         f"reference's peak")
    evidence["knobs"] = sorted(set(knobs))
    what = f"candidate is {_shape_words(b.shape)}, the reference {_shape_words(a.shape)}"
    if knobs:
        what += f": {' or '.join(dict.fromkeys(knobs))} would give that size"
    return [Diagnosis("shape_mismatch", "; ".join([what] + words), residual, evidence)]


def nonfinite(p: Problem) -> list[Diagnosis]:
    fa, fb = np.isfinite(p.a), np.isfinite(p.b)
    out = []
    for new, side, other, values in ((fa & ~fb, "candidate", "reference", p.b), (~fa & fb, "reference", "candidate",
                                                                                  p.a)):
        count = int(np.count_nonzero(new))
        if not count:
            continue
        nan = int(np.count_nonzero(np.isnan(values[new])))
        finite_side = p.a if side == "candidate" else p.b
        near_zero = float(np.mean(np.abs(finite_side[new]) <= 1e-6 * (p.peak or 1.0)))
        every_input = bool(p.stage_inputs) and set(p.input_layouts) <= set(p.stage_inputs)
        inputs_finite = all(np.isfinite(np.asarray(x)).all() for x in p.stage_inputs.values()) if every_input \
            else None  # "first appear here" only when every input of the stage was handed over
        words = [f"{side} has {nan} NaN and {count - nan} Inf where the {other} is finite "
                 f"({count} of {p.a.size} elements)"]
        if near_zero >= 0.5:
            words.append(f"{near_zero:.0%} of them where the {other} is ~0 (a division by ~0, 0/0 or log(0))")
        if inputs_finite:
            words.append("every input of this stage is finite: they first appear here")
        index = tuple(int(i) for i in np.argwhere(new)[0])
        out.append(Diagnosis("nonfinite", "; ".join(words), p.error if math.isfinite(p.error) else math.nan,
                             {"side": side, "count": count, "nan": nan, "inf": count - nan, "first_index": index,
                              "fraction_where_other_is_zero": near_zero, "inputs_finite": inputs_finite}))
    return out


def dtype_mismatch(p: Problem) -> list[Diagnosis]:
    ref, cand = np.dtype(p.reference_dtype), np.dtype(p.candidate_dtype)
    if ref == cand:
        return []
    ref_real, cand_real = _real_dtype(ref), _real_dtype(cand)
    evidence = {"reference_dtype": ref.name, "candidate_dtype": cand.name, "fact": True}
    narrower = (np.dtype(cand_real).kind == "f" and np.dtype(ref_real).kind == "f"
                and np.dtype(cand_real).itemsize < np.dtype(ref_real).itemsize)
    if narrower:
        level = _median_relative_error(p)
        evidence["median_relative_error"] = level
        roundoff = float(np.finfo(cand_real).eps) / 2  # unit roundoff
        return [Diagnosis("dtype_narrowing", f"candidate is {cand.name}, the reference {ref.name}: a downcast to "
                          f"{cand_real} (median relative error {level:.1e} = {level / roundoff:.2g} x its unit "
                          f"roundoff)", p.error, evidence)]
    if cand.kind != ref.kind and "c" in (cand.kind, ref.kind):
        return [Diagnosis("dtype_mismatch", f"candidate is {cand.name}, the reference {ref.name}: complex and real "
                          f"differ (a dropped or extra imaginary part)", p.error, evidence)]
    return [Diagnosis("dtype_mismatch", f"candidate is {cand.name}, the reference {ref.name}", p.error, evidence)]


def _median_relative_error(p: Problem) -> float:
    significant = p.finite & (np.abs(p.a) > 1e-3 * p.peak)
    if not significant.any():
        return math.nan
    return float(np.median(np.abs(p.b[significant] - p.a[significant]) / np.abs(p.a[significant])))


def round_to_bits(x: np.ndarray, bits: int) -> np.ndarray:
    """``x`` rounded to ``bits`` significant bits (24: float32), in its own dtype; integers unchanged."""
    x = np.asarray(x)
    if x.dtype.kind == "c":
        return round_to_bits(x.real, bits) + 1j * round_to_bits(x.imag, bits)
    if x.dtype.kind != "f":
        return x
    if bits == 24:
        return x.astype(np.float32).astype(x.dtype)
    mantissa, exponent = np.frexp(x.astype(np.float64))
    return np.ldexp(np.round(np.ldexp(mantissa, bits)), exponent - bits).astype(x.dtype)


def _representable(x: np.ndarray, bits: int) -> float:
    """The fraction of the finite nonzero elements of ``x`` that ``bits`` significant bits hold exactly."""
    x = np.asarray(x)
    x = np.concatenate([x.real.ravel(), x.imag.ravel()]) if x.dtype.kind == "c" else x.ravel()
    x = x[np.isfinite(x) & (x != 0)]
    return float(np.mean(round_to_bits(x, bits) == x)) if x.size else 0.0


def _relative_errors(p: Problem, other: np.ndarray) -> np.ndarray:
    significant = p.finite & np.isfinite(other) & (np.abs(p.a) > 1e-3 * p.peak)
    return (other[significant] - p.a[significant]) / p.a[significant]


SHOT_NOISE_SLOPE = (0.35, 0.7)


def _grows_as_square_root(p: Problem) -> bool:
    """Whether the error's size grows as the square root of the values' (log-log slope of binned medians
    within SHOT_NOISE_SLOPE over at least a decade): noise added to them, not their rounding."""
    values = np.abs(p.a[p.finite]).ravel()
    errors = np.abs((p.b - p.a)[p.finite]).ravel()
    keep = values > 0
    values, errors = values[keep], errors[keep]
    if values.size < 256:
        return False
    bins = np.array_split(np.argsort(values), 8)
    sizes = np.log([float(np.median(values[index])) for index in bins])
    if sizes[-1] - sizes[0] < math.log(10):
        return False  # too little range in the values to tell
    typical = np.array([float(np.median(errors[index])) for index in bins])
    if not np.all(typical > 0):
        return False
    slope = float(np.polyfit(sizes, np.log(typical), 1)[0])
    # shot noise: slope 1/2 (0.53 measured on Poisson-noised intensities); rounding of the values: 1; an error
    # set by the terms of a sum rather than by its value (TF32 convolutions: ~0.2) is not claimed here
    return SHOT_NOISE_SLOPE[0] <= slope <= SHOT_NOISE_SLOPE[1]


def _neighbour_correlation(p: Problem) -> float:
    """Correlation of the relative error between horizontally adjacent pixels (rounding noise: ~0)."""
    axis = {"BHWC": 2, "HW": 1}.get(p.layout)
    if axis is None:
        return 0.0
    significant = p.finite & (np.abs(p.a) > 1e-3 * p.peak)
    relative = np.zeros(p.a.shape)
    relative[significant] = ((p.b[significant] - p.a[significant]) / p.a[significant]).real
    length = p.a.shape[axis]
    left = np.take(relative, range(length - 1), axis=axis)
    right = np.take(relative, range(1, length), axis=axis)
    both = np.take(significant, range(length - 1), axis=axis) & np.take(significant, range(1, length), axis=axis)
    if np.count_nonzero(both) < 32 or np.std(left[both]) == 0 or np.std(right[both]) == 0:
        return 0.0
    return float(np.corrcoef(left[both], right[both])[0, 1])


def dtype_narrowing(p: Problem) -> list[Diagnosis]:
    """Same dtype, but an error with the size and noise texture of a narrower type's rounding.

    Without a rerun only a float64 run is judged (a float32-level error there is hard to get any
    other way); with one, the reference's own stage on inputs rounded to the narrower type must
    make an error of the same size (within SIMULATED_SPREAD), so a structural difference that
    happens to be small is not called a dtype.
    """
    if np.dtype(p.reference_dtype) != np.dtype(p.candidate_dtype) or p.a.size < 64:
        return []
    reference_type = _real_dtype(p.reference_dtype)
    options = NARROWER.get(reference_type, [])
    relative = _relative_errors(p, p.b)
    if not options or relative.size < 64 or (p.rerun is None and reference_type != "float64"):
        return []
    level = float(np.median(np.abs(relative)))
    upward = float(np.mean(relative.real > 0))
    if not 0.15 <= upward <= 0.85:  # rounding noise goes both ways; a constant bias is a scale, not a dtype
        return []
    texture = _neighbour_correlation(p)
    if abs(texture) > 0.5 and p.rerun is None:  # rounding noise is (nearly) white; a smooth error is structural,
        return []  # unless the rerun shows it: rounded positions make a smooth error once interpolated
    if _grows_as_square_root(p):  # shot noise (Poisson) grows as sqrt(value), rounding as the value
        return []
    own = float(np.finfo(reference_type).eps) / 2
    fits = []
    for name, bits in options:
        roundoff = 2.0**-bits
        if not (roundoff / LEVEL_SPREAD <= level <= LEVEL_SPREAD * roundoff and p.error <= 1e3 * roundoff and level >= 30 * own):
            continue
        simulated = None
        # direct evidence: the candidate's values are numbers of the narrower type (and the reference's are not):
        # the stage ran in it, weights and arithmetic included, which rounding its inputs alone cannot imitate
        held = _representable(p.b, bits) >= 0.99 and _representable(p.a, bits) <= 0.5
        if p.rerun is not None and not held:
            try:
                out = np.asarray(p.rerun({key: round_to_bits(value, bits) for key, value in p.stage_inputs.items()}))
            except Exception:  # noqa: BLE001 - the reference cannot run on rounded inputs: no evidence either way
                continue
            simulated = float(np.median(np.abs(_relative_errors(p, out)))) if out.shape == p.a.shape else 0.0
            if not (simulated > 0 and 1 / SIMULATED_SPREAD <= level / simulated <= SIMULATED_SPREAD):
                continue
        fits.append((abs(math.log(level / roundoff)), name, roundoff, held, simulated))
    if not fits:
        return []
    _, name, roundoff, held, simulated = min(fits)
    seen = (f"; the candidate's values are {name} numbers (the reference's are not): it computed in {name}" if held else
            f"; the reference on inputs rounded to {name} errs alike ({simulated:.1e})" if simulated is not None
            else "")
    return [Diagnosis("dtype_narrowing", f"error at the level of {name} rounding in a {reference_type} run (median "
                      f"relative error {level:.1e} = {level / roundoff:.2g} x its unit roundoff, noise of both "
                      f"signs{seen}): a downcast or reduced-precision arithmetic in this stage", math.nan,
                      {"narrower_type": name, "unit_roundoff": roundoff, "median_relative_error": level,
                       "fraction_upward": upward, "neighbour_correlation": texture,
                       "simulated_median_relative_error": simulated})]


def numerical_alternative(p: Problem) -> list[Diagnosis]:
    """An error the stage also makes when its offsets move by a small fraction of a float32 pixel.

    Measured, not assumed: the reference stage is rerun with every offset moved by +-OFFSET_STEP px;
    the candidate's error must sit where that sensitivity sits (correlation) and be equivalent to a
    move below ALTERNATIVE_PX (float32 coordinate normalisation, as grid_sample does, is ~1e-5 px).
    """
    offsets = p.inputs_of("B12C", "M2")
    if p.rerun is None or not offsets or p.layout not in ("BHWC", "HW") or p.error > 1e-2:
        return []  # a numerical alternative moves a tap by far less than 1% of its peak
    error_map = np.where(p.finite, np.abs(p.a - p.b), 0.0)
    rng = np.random.Generator(np.random.PCG64(0))
    sensitivity = np.zeros(p.a.shape)
    for _ in range(4):
        moved = dict(p.stage_inputs)
        for name, value in offsets.items():
            step = max(OFFSET_STEP, 100 * float(np.finfo(value.dtype).eps) * float(np.abs(value).max(initial=1.0)))
            moved[name] = (value + step * rng.choice([-1.0, 1.0], size=value.shape)).astype(value.dtype)
        out = np.asarray(p.rerun(moved))
        if out.shape != p.a.shape:
            return []
        sensitivity = np.maximum(sensitivity, np.where(np.isfinite(out), np.abs(out - p.a), 0.0))
    if not sensitivity.any():
        return []
    equivalent_px = step * float(error_map.max()) / float(sensitivity.max())
    correlation = float(np.corrcoef(sensitivity.ravel(), error_map.ravel())[0, 1])
    single = _real_dtype(p.reference_dtype) == "float32"
    bound = ALTERNATIVE_PX if single else ALTERNATIVE_PX * 1e-8
    if not (equivalent_px <= ALTERNATIVE_PX and correlation >= 0.5):
        return []
    where = (f"error equals moving the offsets by ~{equivalent_px:.0e} px (and sits where the stage is sensitive to "
             f"them, correlation {correlation:.2f})")
    if single or equivalent_px <= bound:
        summary = (f"{where}: consistent with float32 coordinate normalisation (as grid_sample does), an equivalent "
                   f"implementation; widen the tolerance or translate with exact coordinates, rather than hunt for a bug")
    else:  # a float64 run moved by a float32-sized amount: one side forms its coordinates in float32
        summary = (f"{where}, a float32-sized move in a float64 run: one side computes its sampling coordinates in "
                   f"float32 (an image-transform op that works in float32, a float32 grid); a precision leak, not a "
                   f"logic bug: widen this stage's float64 tolerance or compute the coordinates in float64")
    return [Diagnosis("numerical_alternative", summary, math.nan,
                      {"equivalent_offset_px": equivalent_px, "correlation": correlation, "step_px": step,
                       "bound_px": bound, "float32_coordinates_in_float64_run": not single and equivalent_px > bound})]


def level_hypotheses(p: Problem) -> list[Diagnosis]:
    return dtype_narrowing(p) + numerical_alternative(p)


def _shape_words(shape: tuple[int, ...]) -> str:
    """2x32x32x4; "a scalar" for (), "1 value" for (1,): an empty string read as a missing word."""
    if not shape:
        return "a scalar"
    return "x".join(map(str, shape)) + (f" value{'s' if shape[0] != 1 else ''}" if len(shape) == 1 else "")
