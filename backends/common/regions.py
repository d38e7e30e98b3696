"""Regions of a tap the comparison judges on their own scale (registry side).

The object canvas (spec 4.1) divides the placed patches by the overlap count of the
translated centre masks plus 0.001.  Where the count is 0 the canvas is the raw patch sum
over 0.001, about a thousand times the values where the patches are averaged: the tap's
peak (~3,500 on the default case) sits where no centre mask lands, and a relative error
confined to the region the canvas actually covers (values 0.5 to 0.7) is diluted by that
peak.  ``tap_regions`` gives, per sample, the *covered* region (overlap count >=
``COVERED_THRESHOLD``) and its complement, for the canvas and the two taps cut from it
(``object.trimmed``, ``patches.extracted``), so the tolerance file can judge each region
relative to its own peak.

Everything here is numpy, from the ``positions`` input alone (never from either backend's
output), so both sides are judged on the same masks; it works on any batch slice of the
inputs (a runner cutting the batch into chunks may call it per chunk).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .config import ForwardConfig
from .constants import centre_mask
from .taps import TapSpec

__all__ = ["tap_regions", "coverage", "translate", "CANVAS_TAPS", "COVERED_THRESHOLD"]

CANVAS_TAPS = ("object.canvas", "object.trimmed", "patches.extracted")
# At least half a pixel of centre-mask weight: the divisor is then >= 0.501, so the canvas is the
# overlap-weighted average of the patches (amplified at most 2x); below, the 0.001 guard takes over
# (up to 1000x).  Clean TF and Torch agree to ~1e-7 of the covered peak there; see docs/tolerances.md.
COVERED_THRESHOLD = 0.5


def translate(images: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """Spec 4: out[y, x] = bilinear sample of img at (y - t_y, x - t_x), zero outside; shifts (M, 2) = (t_x, t_y)."""
    count, height, width = images.shape
    padded = np.zeros((count, height + 2, width + 2))
    padded[:, 1:-1, 1:-1] = images
    source_y = np.arange(height)[None, :] - shifts[:, 1:2]
    source_x = np.arange(width)[None, :] - shifts[:, 0:1]
    y0, x0 = np.floor(source_y), np.floor(source_x)
    fy, fx = (source_y - y0)[:, :, None], (source_x - x0)[:, None, :]

    def index(value: np.ndarray, length: int) -> np.ndarray:  # out of range -> the zero border
        return np.clip(value + 1, 0, length + 1).astype(np.intp)

    rows0, rows1 = index(y0, height)[:, :, None], index(y0 + 1, height)[:, :, None]
    cols0, cols1 = index(x0, width)[:, None, :], index(x0 + 1, width)[:, None, :]
    image = np.arange(count)[:, None, None]
    top = (1 - fx) * padded[image, rows0, cols0] + fx * padded[image, rows0, cols1]
    bottom = (1 - fx) * padded[image, rows1, cols0] + fx * padded[image, rows1, cols1]
    return (1 - fy) * top + fy * bottom


def _centred_offsets(positions: np.ndarray) -> np.ndarray:
    """(B, 1, 2, C) positions -> (B, C, 2) offsets (x, y) minus their per-sample mean (spec 4)."""
    offsets = np.asarray(positions, np.float64)[:, 0].transpose(0, 2, 1)
    return offsets - offsets.mean(axis=1, keepdims=True)


def coverage(cfg: ForwardConfig, positions: np.ndarray) -> np.ndarray:
    """(B, P, P) overlap count of the canvas: the divisor of spec 4.1 without its 0.001.

    Without ``object_big`` the canvas is one zero-padded patch: its footprint (1 inside).
    """
    batch, k = positions.shape[0], cfg.k
    if not cfg.object_big:
        return np.broadcast_to(np.pad(np.ones((cfg.N, cfg.N)), k), (batch, cfg.P, cfg.P))
    channels = positions.shape[-1]
    mask = np.broadcast_to(np.pad(centre_mask(cfg.N), k), (batch * channels, cfg.P, cfg.P))
    placed = translate(mask, -_centred_offsets(positions).reshape(batch * channels, 2))
    return placed.reshape(batch, channels, cfg.P, cfg.P).sum(axis=1)


def tap_regions(spec: TapSpec, cfg: ForwardConfig, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``{"covered": mask, "uncovered": ~mask}`` in the tap's canonical shape, or {} for other taps."""
    if spec.name not in CANVAS_TAPS or "positions" not in inputs:
        return {}
    positions = np.asarray(inputs["positions"])
    covered = coverage(cfg, positions) >= COVERED_THRESHOLD
    k, n = cfg.k, cfg.N
    if spec.name == "object.canvas":
        covered = covered[..., None]
    elif spec.name == "object.trimmed":
        covered = covered[:, k:k + n, k:k + n, None]
    else:
        # patches.extracted: channel c is the central crop of the canvas moved by +o'_c, interpolated
        # bilinearly; a pixel is covered when every canvas pixel it reads (with nonzero weight) is
        batch, channels = positions.shape[0], positions.shape[-1]
        moved = translate(np.repeat(covered.astype(np.float64), channels, axis=0),
                          _centred_offsets(positions).reshape(-1, 2))
        covered = moved[:, k:k + n, k:k + n].reshape(batch, channels, n, n).transpose(0, 2, 3, 1) >= 1 - 1e-9
    covered = np.ascontiguousarray(covered)
    return {"covered": covered, "uncovered": ~covered}
