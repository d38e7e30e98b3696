"""Hypotheses tested on the two outputs alone: a transform of the reference that gives the candidate.

Each test returns candidate diagnoses with their residual; ``parity.diagnosis`` keeps those that
explain the difference. Images are (S, H, W) stacks: a "BHWC" tap is S = k*C images, sample-major.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy import ndimage

from .diagnosis_activations import activation_pair, dropout
from .diagnosis_blur import smoothing
from .diagnosis_channels import channel_permutation
from .diagnosis_core import SPATIAL, Diagnosis, Problem, from_images, to_images
from .diagnosis_factors import conjugate, power, scale
from .diagnosis_shift import best_shifts, relate_to_offsets

NEAR_ZERO = 1e-6  # |x| <= 1e-6 max|x|: "where x is ~0" (masked, outside a support)
SIGNIFICANT = 1e-3  # |a| > 1e-3 max|a|: where a ratio b/a means something


# ---- rearrangements of the spatial axes ----

def transpose(p: Problem) -> list[Diagnosis]:
    axes = SPATIAL.get(p.layout)
    if axes is None or p.a.shape[axes[0]] != p.a.shape[axes[1]]:
        return []
    residual = p.residual(np.swapaxes(p.b, *axes))
    return [Diagnosis("transpose", "candidate = reference with rows and columns swapped (x/y transposed)", residual,
                      {"axes": list(axes)})]


def fftshift(p: Problem) -> list[Diagnosis]:
    axes = SPATIAL.get(p.layout)
    if axes is None:
        return []
    out = []
    for chosen, where in ((axes, "both spatial axes"), (axes[:1], "the row axis only"), (axes[1:], "the column "
                                                                                               "axis only")):
        odd = any(p.a.shape[axis] % 2 for axis in chosen)
        for name, undo in (("fftshift", np.fft.ifftshift), ("ifftshift", np.fft.fftshift))[: 2 if odd else 1]:
            residual = p.residual(undo(p.b, axes=chosen))
            what = f"candidate = {name}(reference) over {where}: an fftshift missing on one side or applied twice"
            if odd:
                what += " (or ifftshift where fftshift is meant)"
            out.append(Diagnosis("fftshift", what, residual, {"shift": name, "axes": list(chosen)}))
    return out


def checkerboard(p: Problem) -> list[Diagnosis]:
    """A +-1 checkerboard: an (i)fftshift in the other domain (before the FFT instead of after the modulus) is,
    for an even size, the transform times (-1)^k along each shifted axis."""
    axes = SPATIAL.get(p.layout)
    if axes is None:
        return []
    out = []
    for chosen, where in ((axes, "both spatial axes"), (axes[:1], "the rows"), (axes[1:], "the columns")):
        parity = sum(np.arange(p.b.shape[axis]).reshape([-1 if d == axis else 1 for d in range(p.b.ndim)])
                     for axis in chosen) % 2
        residual = p.residual(p.b * (1 - 2 * parity))
        out.append(Diagnosis("checkerboard", f"candidate = reference x (-1)^k over {where}: an fftshift or "
                             "ifftshift applied in the other domain (to the wave before the FFT instead of to the "
                             "result), which multiplies the transform by a +-1 checkerboard", residual,
                             {"axes": list(chosen)}))
    return out


def mirror(p: Problem) -> list[Diagnosis]:
    """Spatial axes reversed: a flip, or the circular k -> -k of an ifft where an fft is meant."""
    axes = SPATIAL.get(p.layout)
    if axes is None:
        return []
    out = []
    for chosen, where in ((axes, "both spatial axes"), (axes[:1], "the rows"), (axes[1:], "the columns")):
        flipped = np.flip(p.b, axis=chosen)
        out.append(Diagnosis("mirror", f"candidate = reference mirrored over {where} (a flip, or coordinates "
                             f"counted from the other end)", p.residual(flipped), {"axes": list(chosen),
                                                                                  "circular": False}))
        circular = np.roll(flipped, 1, axis=chosen)
        words = ("an inverse FFT where a forward one is meant (or the reverse)" if chosen == axes
                 else "a one-axis frequency reversal")
        out.append(Diagnosis("mirror", f"candidate = reference at -k over {where} (index -i mod n): {words}",
                             p.residual(circular), {"axes": list(chosen), "circular": True}))
    return out


def shift(p: Problem) -> list[Diagnosis]:
    """An integer or sub-pixel translation (phase correlation, refined on the bilinear model)."""
    if SPATIAL.get(p.layout) is None or p.a.size > 1 << 22:
        return []
    if p.layout == "BHWC" and p.a.shape[0] * p.a.shape[3] > 256:
        return []
    a_images, b_images = to_images(np.where(p.finite, p.a, 0), p.layout), to_images(np.where(p.finite, p.b, 0),
                                                                                   p.layout)
    found = best_shifts(a_images, b_images)
    if found is None:
        return []
    shifts, predicted, band = found
    if 4 * band > min(a_images.shape[1:]):
        return []  # the band that entered from outside would hide too much of the image
    moved = np.abs(shifts).max(axis=1) >= 0.02
    if not moved.any():
        return []
    exclude = np.zeros(a_images.shape, bool)
    exclude[:, :band], exclude[:, -band:], exclude[:, :, :band], exclude[:, :, -band:] = True, True, True, True
    exclude = from_images(exclude, p.a.shape, p.layout)
    corrected = from_images(predicted, p.a.shape, p.layout)
    # residual of the prediction (reference moved) against the candidate, outside the band that entered
    keep = p.finite & ~exclude
    residual = float(np.abs(corrected[keep] - p.b[keep]).max()) / p.peak if keep.any() else math.nan
    unmoved = float(np.abs(p.a[keep] - p.b[keep]).max()) / p.peak if keep.any() else math.nan
    if p.explains(unmoved):
        return []  # outside the band the two agree unmoved: a difference at the edges (border_only), not a shift
    channels = p.a.shape[3] if p.layout == "BHWC" else 1
    text = _describe_shifts(shifts, channels)
    relation = relate_to_offsets(shifts, channels, p.inputs_of("B12C"))
    summary = f"candidate = reference translated by {text}" + (f"; {relation}" if relation else "")
    summary += f" (outside a {band}-px band at the edges)"
    return [Diagnosis("shift", summary, residual, {"shifts_xy": shifts[:, ::-1].round(4).tolist(),
                                                   "edge_band_px": band, "offsets_relation": relation})]


def _describe_shifts(shifts: np.ndarray, channels: int) -> str:
    def xy(t):
        return f"(x {t[1]:+.3g}, y {t[0]:+.3g}) px"

    if np.allclose(shifts, shifts[0], atol=0.02):
        return xy(shifts[0])
    per_sample = shifts.reshape(-1, channels, 2)
    if np.allclose(per_sample, per_sample[:, :1], atol=0.02):
        return "a different amount per sample: " + ", ".join(xy(t) for t in per_sample[:4, 0]) + (
            " ..." if len(per_sample) > 4 else "")
    return "a different amount per channel: " + ", ".join(xy(t) for t in shifts[:4]) + (" ..." if len(shifts) > 4
                                                                                        else "")


# ---- differences confined to a region ----

def border_only(p: Problem) -> list[Diagnosis]:
    axes = SPATIAL.get(p.layout)
    if axes is None:
        return []
    height, width = p.a.shape[axes[0]], p.a.shape[axes[1]]
    error = np.where(p.finite, np.abs(p.a - p.b), 0.0)
    other = tuple(axis for axis in range(p.a.ndim) if axis not in axes)
    error_map = error.max(axis=other) if other else error
    for band in range(1, max(1, min(height, width) // 8) + 1):
        interior = float(error_map[band:-band, band:-band].max(initial=0.0)) / p.peak
        # the interior must agree (within the tap's tolerance itself, and to a tenth of the error), not merely
        # hold 1% of it: an unshifted spectrum has its largest values at the border, so a wrong transform, or
        # rounding, is mostly there as well; "confined" with a failing interior would point at the wrong code
        if p.complete(interior) and interior <= p.tolerance and interior <= 0.1 * p.error:
            return [Diagnosis("border_only", f"the difference is confined to a {band}-px band at the image border "
                              f"(inside it: {interior:.1e}): a padding or edge-handling difference", interior,
                              {"band_px": band, "interior_error": interior})]
    return []


def _zero_regions(p: Problem) -> list[tuple[str, np.ndarray]]:
    regions = [("|reference|", np.abs(np.where(p.finite, p.a, 0)) <= NEAR_ZERO * p.peak)]
    peak_b = float(np.abs(p.b[p.finite]).max(initial=0.0))
    regions.append(("|candidate|", np.abs(np.where(p.finite, p.b, 0)) <= NEAR_ZERO * peak_b))
    for name, value in p.stage_inputs.items():
        layout = p.input_layouts.get(name)
        magnitude = np.abs(np.asarray(value))
        top = float(magnitude.max(initial=0.0))
        if top == 0.0:
            continue
        zero = magnitude <= NEAR_ZERO * top
        if layout == "HW" and p.layout == "BHWC" and zero.shape == p.a.shape[1:3]:
            regions.append((f"input {name!r}", np.broadcast_to(zero[None, :, :, None], p.a.shape)))
        elif layout == p.layout and zero.shape[:3] == p.a.shape[:3] and zero.shape[-1] in (1, p.a.shape[-1]):
            regions.append((f"input {name!r}", np.broadcast_to(zero, p.a.shape)))
    return regions


def masked_region(p: Problem) -> list[Diagnosis]:
    axes = SPATIAL.get(p.layout)
    if axes is None:
        return []
    out = []
    structure = np.ones([3 if axis in axes else 1 for axis in range(p.a.ndim)], bool)  # 8-neighbours in the plane
    for source, zero in _zero_regions(p):
        if not zero.any():
            continue
        region = zero
        for grow in range(0, 3):
            if grow:
                region = ndimage.binary_dilation(region, structure=structure)
            fraction = float(region.mean())
            if fraction > 0.95:
                break
            residual = p.residual(p.b, exclude=region)
            inside = float(np.abs(p.a - p.b)[region & p.finite].max(initial=0.0)) / p.peak
            if inside > 0 and math.isfinite(residual):
                within = f" (within {grow} px of it)" if grow else ""
                out.append(Diagnosis("masked_region", f"the difference is confined to where {source} is ~0{within}, "
                                     f"{fraction:.0%} of the elements: a mask applied on one side only or with another footprint (radius, edge), or applied "
                                     f"before a smoothing/interpolation as well as after", residual,
                                     {"source": source, "dilation_px": grow, "region_fraction": fraction,
                                      "error_inside": inside}))
                if p.complete(residual):
                    break
    return out


def normalisation(p: Problem) -> list[Diagnosis]:
    """candidate = reference x a real, position-dependent factor (a divisor, weight or mask differs)."""
    significant = p.finite & (np.abs(p.a) > (NEAR_ZERO if p.complex else SIGNIFICANT) * p.peak)
    if np.count_nonzero(significant) < 16:
        return []
    ratio = np.ones(p.a.shape, dtype=p.b.dtype)
    ratio[significant] = p.b[significant] / p.a[significant]
    if p.complex:
        gain = ratio.real
        predicted = np.where(significant, gain * p.a, p.b)
        residual = max(p.residual(np.where(significant, p.a + (p.b - predicted), p.a)),
                       float(np.abs(p.b[p.finite & ~significant]).max(initial=0.0)) / p.peak)
    else:
        images = to_images(np.where(significant, ratio, np.nan), p.layout)
        if images is None or len(images) < 2:
            return []
        with warnings.catch_warnings():  # a position insignificant in every image has no gain: NaN, then 1
            warnings.simplefilter("ignore", RuntimeWarning)
            shared = np.nanmedian(images, axis=0)  # one gain map for every sample and channel
        gain_images = np.broadcast_to(np.nan_to_num(shared, nan=1.0), images.shape)
        gain = from_images(np.ascontiguousarray(gain_images), p.a.shape, p.layout)
        residual = p.residual(p.b / np.where(gain == 0, 1, gain))
        if not p.complete(residual):  # a real map (features) differing by region fits a gain map in part: an
            return []  # activation or branch that differs there, not a divisor; only a gain that explains it all
    values = gain[significant]
    low, high = float(values.min()), float(values.max())
    if high - low <= 10 * p.tolerance:
        return []  # constant: a scale, not a normalisation
    levels = np.unique(np.round(values, 6))
    shown = f"{len(levels)} levels" if len(levels) > 6 else "levels " + ", ".join(f"{v:.4g}" for v in levels)
    return [Diagnosis("normalisation", f"candidate = reference x a real factor that varies with position "
                      f"({low:.6g} .. {high:.6g}, {shown}{'; the phase is unchanged' if p.complex else ''}): a "
                      "divisor, weight or overlap/mask count differs", residual, {"gain_min": low, "gain_max": high, "levels": len(levels)})]


# ---- elementwise functions ----

# Neighbour windows (offsets in value order) a point is predicted from: lines and parabolas on one
# side (so an activation's switch point, a step, is allowed) or across.
_WINDOWS = ((-2, -1), (-1, 1), (1, 2), (-3, -2, -1), (-2, -1, 1), (-1, 1, 2), (1, 2, 3))


def _local_prediction_error(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """For sorted ``x``: how far each y_i is from the Lagrange polynomial through a window of its
    neighbours, taking the window that fits best (at most 3 points, so no window can fit noise)."""
    n = x.size
    errors = np.full(n, np.inf)
    index = np.arange(n)
    for window in _WINDOWS:
        lo, hi = max(0, -min(window)), n - max(0, max(window))
        at = index[lo:hi]
        xs = [x[at + offset] for offset in window]
        ys = [y[at + offset] for offset in window]
        prediction = np.zeros(at.size)
        valid = np.ones(at.size, bool)
        for j, (xj, yj) in enumerate(zip(xs, ys)):
            weight = np.ones(at.size)
            for m, xm in enumerate(xs):
                if m != j:
                    span = xj - xm
                    valid &= span != 0
                    weight *= np.divide(x[at] - xm, span, out=np.zeros(at.size), where=span != 0)
            prediction += weight * yj
        error = np.where(valid, np.abs(y[at] - prediction), np.inf)
        errors[lo:hi] = np.minimum(errors[lo:hi], error)
    return errors


def elementwise(p: Problem) -> list[Diagnosis]:
    """candidate = f(reference) for one function f of the value (an activation or its switch point differs).

    In the order of the reference's values, d = b - a must follow a function of a: every d_i lies on
    a line or parabola through two or three of its neighbours (on one side or across), up to noise.
    """
    if p.complex:
        return []
    a, b = p.a[p.finite], p.b[p.finite]
    if a.size < 512 or np.unique(a).size < 128:
        return []
    values, group = np.unique(a, return_inverse=True)  # equal reference values must map to one value
    count = np.bincount(group)
    mean = np.bincount(group, b - a) / count
    spread = float(np.abs((b - a) - mean[group]).max())
    local = _local_prediction_error(values, mean)[1:-1]  # an end value can only be extrapolated to: any f fits it
    residual = max(spread, float(local.max(initial=0.0))) / p.peak
    low, high = float(mean.min()), float(mean.max())
    pair = activation_pair(a, b, p.peak, 0.01 * min(p.error, 1.0))  # the pair must remove 99% of the error
    named = (f": the reference's values are {pair[0]}(x), the candidate's {pair[1]}(x) of the same x ({pair[1]} "
             f"where {pair[0]} is meant, e.g. a default activation that differs)" if pair else
             ": an activation, its switch point or another pointwise nonlinearity differs")
    return [Diagnosis("elementwise", f"candidate = f(reference) for one function f of the value (f(x) - x spans "
                      f"{low:.3g} .. {high:.3g}){named}", residual,
                      {"deviation_min": low, "deviation_max": high,
                       "activations": {"reference": pair[0], "candidate": pair[1]} if pair else None})]


def overflow(p: Problem) -> list[Diagnosis]:
    """Integer wrap-around: candidate = reference mod 2**bits where the reference exceeds the type."""
    if p.complex or p.peak < 2**8:
        return []
    out = []
    for bits, signed in ((8, False), (16, False), (16, True), (32, False), (32, True)):
        modulus = 2.0**bits
        if p.peak < modulus / (2 if signed else 1):
            continue
        low = -modulus / 2 if signed else 0.0
        values = p.b[p.finite]
        if values.min() < low or values.max() >= low + modulus:
            continue  # the candidate holds values the type cannot: not a wrap-around of it
        wraps = np.round((p.a - p.b) / modulus)
        if not (wraps[p.finite] != 0).any():
            continue
        residual = p.residual(p.b + wraps * modulus)
        kind = f"{'int' if signed else 'uint'}{bits}"
        out.append(Diagnosis("overflow", f"candidate = reference modulo 2^{bits} where the reference exceeds the "
                             f"{kind} range ({int(np.count_nonzero(wraps))} elements wrapped): a square or product "
                             f"computed in {kind} before a cast", residual, {"type": kind}))
    return out


TESTS = (scale, power, conjugate, fftshift, checkerboard, transpose, mirror, channel_permutation, shift, border_only,
         masked_region, smoothing, dropout, normalisation, elementwise, overflow)

__all__ = ["TESTS"]
