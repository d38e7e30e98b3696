"""A smoothing on one side only: candidate = reference convolved with a small symmetric kernel, or the reverse.

A 3 x 3 kernel is fitted by least squares to the interior of every image (the outermost pixel ring,
where padding conventions differ, is left out). The fit has nine free weights, so it would also
reproduce a constant factor or a one-pixel shift; the diagnosis is only given for a kernel that is
point-symmetric (a shift is not) and spreads weight off its centre (a factor does not), i.e. a blur.
"""

from __future__ import annotations

import math

import numpy as np

from .diagnosis_core import Diagnosis, Problem, to_images

MAX_ROWS = 400_000  # fit on at most this many interior pixels (the residual is measured on all of them)
SYMMETRY = 0.02  # |k - k rotated 180 deg| <= 2% of the kernel's largest weight
SPREAD = 0.01  # off-centre weights >= 1% of the centre weight: a blur, not a factor


def _taps(images: np.ndarray) -> np.ndarray:
    """(9, n, H-2, W-2): each image's interior read at the nine offsets of a 3 x 3 kernel."""
    height, width = images.shape[1:]
    return np.stack([images[:, 1 + dy:height - 1 + dy, 1 + dx:width - 1 + dx]
                     for dy in (-1, 0, 1) for dx in (-1, 0, 1)])


def _real_rows(x: np.ndarray) -> np.ndarray:
    """(rows, m) -> (rows, m) real or (rows, 2m): real parts, then imaginary parts, of each row."""
    return np.concatenate([x.real, x.imag], axis=1) if np.iscomplexobj(x) else x


def _fit(source: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, float] | None:
    """The 3 x 3 kernel k with target ~ k * source on the interiors, and max |target - k * source|."""
    taps = _taps(source)
    wanted = target[:, 1:-1, 1:-1]
    keep = max(1, min(len(source), MAX_ROWS // max(1, wanted[0].size)))
    design = _real_rows(taps[:, :keep].reshape(9, -1)).T
    if not np.isfinite(design).all():
        return None
    kernel, *_ = np.linalg.lstsq(design, _real_rows(wanted[:keep].reshape(1, -1))[0], rcond=None)
    fitted = np.tensordot(kernel, taps, axes=1)
    return kernel.reshape(3, 3), float(np.abs(wanted - fitted).max())


def _is_blur(kernel: np.ndarray) -> bool:
    top = float(np.abs(kernel).max())
    if top == 0.0 or float(np.abs(kernel - kernel[::-1, ::-1]).max()) > SYMMETRY * top:
        return False
    off_centre = float(np.abs(kernel).sum() - abs(kernel[1, 1]))
    return off_centre >= SPREAD * abs(kernel[1, 1])


def _weights(kernel: np.ndarray) -> str:
    return (f"centre {kernel[1, 1]:.3g}, edges {np.mean([kernel[0, 1], kernel[1, 0], kernel[1, 2], kernel[2, 1]]):.3g}, "
            f"corners {np.mean([kernel[0, 0], kernel[0, 2], kernel[2, 0], kernel[2, 2]]):.3g}, sum {kernel.sum():.3g}")


def smoothing(p: Problem) -> list[Diagnosis]:
    a, b = to_images(p.a, p.layout), to_images(p.b, p.layout)
    if a is None or a.shape[1] < 5 or a.shape[2] < 5 or not (np.isfinite(a).all() and np.isfinite(b).all()):
        return []
    out = []
    for smoothed, source, target in (("candidate", a, b), ("reference", b, a)):
        fitted = _fit(source, target)
        if fitted is None or not _is_blur(fitted[0]):
            continue
        kernel, left = fitted
        residual = left / p.peak
        if not (math.isfinite(residual) and p.explains(residual)):
            continue
        other = "reference" if smoothed == "candidate" else "candidate"
        out.append(Diagnosis("smoothing", f"{smoothed} = {other} smoothed by a symmetric 3x3 kernel ({_weights(kernel)})"
                             f" away from the image edge: a blur/smoothing applied on one side only or with another "
                             f"width (a smoothing knob's default that differs?)", residual,
                             {"smoothed": smoothed, "kernel": kernel.tolist()}))
    return out
