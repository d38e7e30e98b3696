"""Translations between two image stacks: phase correlation (integer peak, refined on an upsampled
DFT), then a least-squares fit on the spec's own bilinear zero-fill translation, and how the found
shifts relate to a stage's per-channel offsets (a "B12C" input)."""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

UPSAMPLE = 20  # phase-correlation refinement: 1/20 px, then a least-squares fit on the bilinear model
MIN_PEAK = 0.05  # normalised phase-correlation peak below which there is no common translation
WEAK_IMAGE = 0.05  # an image whose peak is below this fraction of the strongest is too faint to estimate a shift


def translate(image: np.ndarray, shift_yx: tuple[float, float]) -> np.ndarray:
    """out[y, x] = bilinear sample of ``image`` at (y - ty, x - tx), neighbours outside counting as 0."""
    def real(part):
        return ndimage.shift(part, shift_yx, order=1, mode="grid-constant", cval=0.0, prefilter=False)

    if np.iscomplexobj(image):
        return real(image.real) + 1j * real(image.imag)
    return real(image)


def _correlation_grid(cross: np.ndarray, centre: tuple[float, float], step: float, half: int) -> np.ndarray:
    """|inverse DFT of ``cross``| on a (2 half + 1)^2 grid of shifts around ``centre`` (matrix DFT)."""
    height, width = cross.shape
    offsets = np.arange(-half, half + 1) * step
    fy, fx = np.fft.fftfreq(height), np.fft.fftfreq(width)
    rows = np.exp(2j * np.pi * (centre[0] + offsets)[:, None] * fy[None, :])
    cols = np.exp(2j * np.pi * (centre[1] + offsets)[:, None] * fx[None, :])
    return np.abs(rows @ cross @ cols.T) / (height * width)


def phase_correlation(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """Shift t = (ty, tx) with y(r) ~ x(r - t), to 1/UPSAMPLE px, and the normalised peak height."""
    cross = np.fft.fft2(y) * np.conj(np.fft.fft2(x))
    magnitude = np.abs(cross)
    keep = magnitude > 1e-12 * magnitude.max(initial=0.0)
    if not keep.any():
        return np.zeros(2), 0.0
    cross = np.where(keep, cross / np.where(keep, magnitude, 1.0), 0.0)
    surface = np.abs(np.fft.ifft2(cross))
    iy, ix = np.unravel_index(int(np.argmax(surface)), surface.shape)
    height, width = surface.shape
    peak = np.array([iy - height if iy > height // 2 else iy, ix - width if ix > width // 2 else ix], float)
    fine = _correlation_grid(cross, (peak[0], peak[1]), 1.0 / UPSAMPLE, UPSAMPLE)
    jy, jx = np.unravel_index(int(np.argmax(fine)), fine.shape)
    refined = peak + (np.array([jy, jx]) - UPSAMPLE) / UPSAMPLE
    return refined, float(fine.max()) / float(keep.mean())


def _integer_shift(a: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """out[y, x] = a[y - dy, x - dx], zero where that falls outside."""
    out = np.zeros_like(a)
    height, width = a.shape
    if abs(dy) >= height or abs(dx) >= width:
        return out
    out[max(dy, 0): height + min(dy, 0), max(dx, 0): width + min(dx, 0)] = \
        a[max(-dy, 0): height + min(-dy, 0), max(-dx, 0): width + min(-dx, 0)]
    return out


def _fit_shift(a: np.ndarray, b: np.ndarray, estimate: np.ndarray, inner) -> np.ndarray:
    """Least-squares (ty, tx) within a pixel of ``estimate`` (phase correlation is only good to ~0.5 px
    on non-periodic images). Inside one pixel cell, bilinear translation is a weighted sum of four
    whole-pixel shifts, so the misfit is a quadratic form in the weights: cheap on a fine grid."""
    base = np.floor(estimate).astype(int)
    corners = [(base[0] + oy, base[1] + ox) for oy in range(-1, 3) for ox in range(-1, 3)]
    basis = np.stack([_integer_shift(a, dy, dx)[inner].ravel() for dy, dx in corners])
    target = b[inner].ravel()
    gram = np.real(basis.conj() @ basis.T)
    projection = np.real(basis.conj() @ target)
    energy = float(np.real(np.vdot(target, target)))
    where = {corner: index for index, corner in enumerate(corners)}

    def search(cell, centre, step):
        iy, ix = cell
        pick = [where[(iy, ix)], where[(iy + 1, ix)], where[(iy, ix + 1)], where[(iy + 1, ix + 1)]]
        g, q = gram[np.ix_(pick, pick)], projection[pick]
        grid = np.clip(centre[:, None] + step * np.arange(-25, 26)[None, :], 0.0, 1.0)
        fy, fx = np.meshgrid(grid[0], grid[1], indexing="ij")
        weights = np.stack([(1 - fy) * (1 - fx), fy * (1 - fx), (1 - fy) * fx, fy * fx], axis=-1)
        misfit = np.sum((weights @ g) * weights, axis=-1) - 2 * weights @ q + energy
        j = np.unravel_index(int(np.argmin(misfit)), misfit.shape)
        return float(misfit[j]), np.array([fy[j], fx[j]])

    cells = [(base[0] + cy, base[1] + cx) for cy in (-1, 0, 1) for cx in (-1, 0, 1)]
    coarse = [(search(cell, np.array([0.5, 0.5]), 0.02), cell) for cell in cells]  # 0.02 px over each cell
    (_, fraction), cell = min(coarse, key=lambda item: item[0][0])
    for step in (0.001, 0.00005):
        _, fraction = search(cell, fraction, step)
    return np.array(cell, dtype=float) + fraction


def best_shifts(a_images: np.ndarray, b_images: np.ndarray) -> tuple[np.ndarray, np.ndarray, int] | None:
    """Per-image shifts (S, 2) as (ty, tx), the reference images moved by them, and the edge band to ignore."""
    # an image with almost nothing in it (a feature map that is near zero) gives phase correlation nothing to
    # lock on: its estimate is noise, and one wild estimate would widen the ignored band past the image. Such
    # images take the median shift of the images that carry the signal.
    peaks = np.array([float(np.abs(a).max(initial=0.0)) for a in a_images])
    strong = peaks >= WEAK_IMAGE * peaks.max(initial=0.0)
    estimates = []
    for a, b, carries in zip(a_images, b_images, strong):
        if not (np.any(a) and np.any(b)) or not carries:
            estimates.append(None)
            continue
        estimate, height = phase_correlation(a, b)
        if height < MIN_PEAK:
            return None
        estimates.append(estimate)
    found = [estimate for estimate in estimates if estimate is not None]
    typical = np.median(np.array(found), axis=0) if found else np.zeros(2)
    estimates = np.array([typical if estimate is None else estimate for estimate in estimates])
    if np.abs(estimates).max(initial=0.0) < 1.0 / UPSAMPLE:
        return None  # nothing moved
    # the pixels that entered from outside, plus two for the fit (it may move a pixel further); an estimate a
    # refinement step above an integer (1.05) is that integer, not the next one
    band = int(math.ceil(np.abs(estimates).max(initial=0.0) - 2.0 / UPSAMPLE)) + 2
    if 2 * band >= min(a_images.shape[1:]):
        return None
    inner = (slice(band, -band), slice(band, -band))
    shifts = np.array([_fit_shift(a, b, estimate, inner) if carries else estimate
                       for a, b, estimate, carries in zip(a_images, b_images, estimates, strong)])
    if strong.any():  # a faint image's fit is noise too: it takes the typical fitted shift
        shifts[~strong] = np.median(shifts[strong], axis=0)
    predicted = np.stack([translate(a, t) for a, t in zip(a_images, shifts)])
    return shifts, predicted, band


def _per_image_offsets(offsets: np.ndarray) -> np.ndarray:
    """(k, 1, 2, C) offsets -> (k*C, 2) centred offsets as (x, y), sample-major like the image stacks."""
    centred = offsets[:, 0] - offsets[:, 0].mean(axis=-1, keepdims=True)
    return np.transpose(centred, (0, 2, 1)).reshape(-1, 2)


def relate_to_offsets(shifts: np.ndarray, channels: int, offsets: dict[str, np.ndarray]) -> str:
    """Words for a match between the found shifts and a per-channel offset input, or ''."""
    found_xy = shifts[:, ::-1]
    for name, value in offsets.items():
        value = np.asarray(value, dtype=np.float64)
        if value.ndim != 4 or value.shape[0] * value.shape[-1] != len(found_xy):
            continue
        centred = _per_image_offsets(value)
        for sign, words in ((1, "equal"), (-1, "equal minus")):
            if np.any(centred) and np.allclose(found_xy, sign * centred, atol=0.1):
                return (f"the shifts {words} the centred offsets of input {name!r}: offsets ignored here, or "
                        f"applied twice")
        means = value[:, 0].mean(axis=-1)  # (k, 2) as (x, y)
        drift = np.repeat(means - means.mean(axis=0, keepdims=True), value.shape[-1], axis=0)
        for sign in (1, -1):
            if np.any(np.abs(drift) > 0.05) and np.allclose(found_xy, sign * drift, atol=0.1):
                return (f"each sample moved by {'its' if sign > 0 else 'minus its'} mean offset of input {name!r} "
                        f"minus the batch's: offsets recentred over the whole batch instead of per sample")
    return ""
