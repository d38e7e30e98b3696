"""Constant arrays of the spec (masks, smoothing kernel), built once in numpy.

Both backends turn these into tensors; the test oracle builds its own from the
spec text, so a misreading here still shows up there.
"""

from __future__ import annotations

import numpy as np

CANVAS_EPSILON = 0.001  # added to the overlap count before dividing (spec 4.1)
POISSON_EPSILON = 1e-12  # inside the log of the Poisson loss (spec 6)


def centre_mask(n: int) -> np.ndarray:
    """1 on rows and columns [N/4, 3N/4) of an N x N patch, 0 elsewhere."""
    mask = np.zeros((n, n))
    mask[n // 4 : 3 * n // 4, n // 4 : 3 * n // 4] = 1.0
    return mask


def border_mask(n: int) -> np.ndarray:
    """0 on rows and columns [N/4, 3N/4), 1 elsewhere (probe_big branch)."""
    return 1.0 - centre_mask(n)


def disk_mask(n: int) -> np.ndarray:
    """Hard disk (y - (N/2 - 0.5))^2 + (x - (N/2 - 0.5))^2 < (N // 4)^2."""
    centre = n / 2 - 0.5
    y, x = np.mgrid[0:n, 0:n]
    return (((y - centre) ** 2 + (x - centre) ** 2) < (n // 4) ** 2).astype(float)


def gaussian_kernel_3x3(sigma: float) -> np.ndarray:
    """Normalised 3 x 3 Gaussian of standard deviation ``sigma`` (> 0)."""
    taps = np.exp(-(np.arange(-1, 2) ** 2) / (2.0 * sigma**2))
    kernel = np.outer(taps, taps)
    return kernel / kernel.sum()
