"""A smoothing on one side only: candidate = reference convolved with a small symmetric kernel, or the reverse.

A 3 x 3 kernel is fitted by least squares to the interior of every image (the outer pixel rings,
where padding conventions differ, are left out); where it does not explain the error, 5 x 5 and then
7 x 7 until one explains it completely (else the one that leaves the least is named): two smoothings
of different widths are not a 3 x 3 kernel away from each other, but a wider one reproduces the
difference closely (the sharper side, blurred further). The fit would also reproduce a
constant factor or a shift; the diagnosis is only given for a kernel that is point-symmetric (a shift
is not) and spreads weight off its centre (a factor does not), i.e. a blur.
"""

from __future__ import annotations

import math

import numpy as np

from .diagnosis_core import Diagnosis, Problem, to_images

MAX_ROWS = 400_000  # 3 x 3 fit on at most this many interior pixels (the residual is measured on all of them)
RADII = (1, 2, 3)  # kernels of 3 x 3, 5 x 5, 7 x 7: the first that explains the error completely, else the best
SYMMETRY = 0.02  # |k - k rotated 180 deg| <= 2% of the kernel's largest weight
SPREAD = 0.01  # off-centre weights >= 1% of the centre weight: a blur, not a factor


def _taps(images: np.ndarray, radius: int) -> np.ndarray:
    """(k*k, n, H-2r, W-2r), k = 2r+1: each image's interior read at the offsets of a k x k kernel."""
    height, width = images.shape[1:]
    steps = range(-radius, radius + 1)
    return np.stack([images[:, radius + dy:height - radius + dy, radius + dx:width - radius + dx]
                     for dy in steps for dx in steps])


def _real_rows(x: np.ndarray) -> np.ndarray:
    """(rows, m) -> (rows, m) real or (rows, 2m): real parts, then imaginary parts, of each row."""
    return np.concatenate([x.real, x.imag], axis=1) if np.iscomplexobj(x) else x


def _fit(source: np.ndarray, target: np.ndarray, radius: int) -> tuple[np.ndarray, float] | None:
    """The (2r+1)^2 kernel k with target ~ k * source on the interiors, and max |target - k * source|."""
    side = 2 * radius + 1
    taps = _taps(source, radius)
    wanted = target[:, radius:-radius, radius:-radius]
    rows = MAX_ROWS * 9 // side**2  # the design matrix stays the size of the 3 x 3 one
    keep = max(1, min(len(source), rows // max(1, wanted[0].size)))
    design = _real_rows(taps[:, :keep].reshape(side * side, -1)).T
    if not np.isfinite(design).all():
        return None
    kernel, *_ = np.linalg.lstsq(design, _real_rows(wanted[:keep].reshape(1, -1))[0], rcond=None)
    fitted = np.tensordot(kernel, taps, axes=1)
    return kernel.reshape(side, side), float(np.abs(wanted - fitted).max())


def _is_blur(kernel: np.ndarray) -> bool:
    top = float(np.abs(kernel).max())
    if top == 0.0 or float(np.abs(kernel - kernel[::-1, ::-1]).max()) > SYMMETRY * top:
        return False
    centre = abs(kernel[kernel.shape[0] // 2, kernel.shape[1] // 2])
    return float(np.abs(kernel).sum() - centre) >= SPREAD * centre


def _weights(kernel: np.ndarray) -> str:
    r = kernel.shape[0] // 2
    edges = [kernel[r - 1, r], kernel[r, r - 1], kernel[r, r + 1], kernel[r + 1, r]]
    corners = [kernel[r - 1, r - 1], kernel[r - 1, r + 1], kernel[r + 1, r - 1], kernel[r + 1, r + 1]]
    near = "edges" if r == 1 else "nearest"
    diagonal = "corners" if r == 1 else "diagonal"
    return (f"centre {kernel[r, r]:.3g}, {near} {np.mean(edges):.3g}, {diagonal} {np.mean(corners):.3g}, "
            f"sum {kernel.sum():.3g}")


def smoothing(p: Problem) -> list[Diagnosis]:
    a, b = to_images(p.a, p.layout), to_images(p.b, p.layout)
    if a is None or a.shape[1] < 5 or a.shape[2] < 5 or not (np.isfinite(a).all() and np.isfinite(b).all()):
        return []
    out = []
    for smoothed, source, target in (("candidate", a, b), ("reference", b, a)):
        found = _explaining_kernel(p, source, target)
        if found is None:
            continue
        kernel, residual = found
        other, side = ("reference" if smoothed == "candidate" else "candidate"), kernel.shape[0]
        what = ("a blur/smoothing applied on one side only or with another width" if side == 3 else
                f"the {smoothed}'s smoothing is the wider one (two widths differ by no exact finite kernel, so "
                f"the fit is close, not exact)")
        out.append(Diagnosis("smoothing", f"{smoothed} = {other} smoothed by a symmetric {side}x{side} kernel "
                             f"({_weights(kernel)}) away from the image edge: {what} (a smoothing knob's default "
                             f"that differs?)", residual, {"smoothed": smoothed, "kernel": kernel.tolist()}))
    return out


def _explaining_kernel(p: Problem, source: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, float] | None:
    """The blur kernel that explains the error best, and its residual relative to the peak.

    The smallest that explains it completely (3 x 3 first); else the one that leaves the least.
    """
    best = None
    for radius in RADII:
        if min(source.shape[1:]) < 4 * radius + 1:  # an interior at least as wide as the kernel
            break
        fitted = _fit(source, target, radius)
        if fitted is None:
            break
        kernel, left = fitted
        residual = left / p.peak
        if not (_is_blur(kernel) and math.isfinite(residual) and p.explains(residual)):
            continue
        if best is None or residual < best[1]:
            best = (kernel, residual)
        if p.complete(residual):
            break
    return best
