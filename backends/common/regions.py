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

__all__ = ["tap_regions", "region_names", "covered_canvas", "coverage", "translate", "CANVAS_TAPS",
           "COVERED_THRESHOLD"]

CANVAS_TAPS = ("object.canvas", "object.trimmed", "patches.extracted")
# At least half a pixel of centre-mask weight: the divisor is then >= 0.501, so the canvas is the
# overlap-weighted average of the patches (amplified at most 2x); below, the 0.001 guard takes over
# (up to 1000x).  Clean TF and Torch agree to ~1e-7 of the covered peak there; see docs/tolerances.md.
COVERED_THRESHOLD = 0.5


def _source_pixels(shifts: np.ndarray, count: int, size: int, first: int = 0):
    """Along one axis of length ``size``, outputs ``first .. first + count - 1`` moved by ``shifts`` (any
    shape S) read two source pixels with bilinear weights (1 - w, w): their indices (S + (count,)) into
    the axis zero-padded by one (outside the image: the zero border), and w (S + (1,))."""
    start = np.floor(-shifts)
    source = np.arange(first, first + count) + start[..., None] + 1

    def clip(index: np.ndarray) -> np.ndarray:
        return np.clip(index, 0, size + 1).astype(np.intp)

    return clip(source), clip(source + 1), (-shifts - start)[..., None]


def translate(images: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """Spec 4: out[y, x] = bilinear sample of img at (y - t_y, x - t_x), zero outside; shifts (M, 2) = (t_x, t_y).

    A shift is one per image, so its fractional part is too: the bilinear sample is separable, rows
    first (one gather of whole rows), then columns.  These are masks compared with thresholds, not
    tap values: the rounding of the separable order does not matter.
    """
    count, height, width = images.shape
    padded = np.zeros((count, height + 2, width + 2))
    padded[:, 1:-1, 1:-1] = images
    shifts = np.asarray(shifts, np.float64)
    image = np.arange(count)[:, None]

    def blend(array: np.ndarray, first: np.ndarray, second: np.ndarray, weight: np.ndarray) -> np.ndarray:
        """Along axis 1: (1 - w) * array[rows first] + w * array[rows second], whole rows gathered."""
        weight = weight[..., None]
        return (1 - weight) * array[image, first] + weight * array[image, second]

    by_rows = blend(padded, *_source_pixels(shifts[:, 1], height, height))  # (count, H, W + 2)
    by_columns = blend(np.ascontiguousarray(by_rows.transpose(0, 2, 1)),
                       *_source_pixels(shifts[:, 0], width, width))  # (count, W, H)
    return by_columns.transpose(0, 2, 1)


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
    shifts = -_centred_offsets(positions).reshape(batch * channels, 2)
    # the centre mask is a square: the outer product of one profile with itself, and so is each of its
    # bilinear translates (rows by t_y, columns by t_x): the overlap count is a sum of outer products
    profile = np.pad(centre_mask(cfg.N)[cfg.N // 2], k)
    rows = _translate_profile(profile, shifts[:, 1]).reshape(batch, channels, cfg.P)
    columns = _translate_profile(profile, shifts[:, 0]).reshape(batch, channels, cfg.P)
    return np.einsum("bcy,bcx->byx", rows, columns)


def _translate_profile(profile: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """(M, L): ``translate`` of one 1-D profile by each shift (zero outside)."""
    padded = np.pad(np.asarray(profile, np.float64), 1)
    first, second, weight = _source_pixels(shifts, len(profile), len(profile))
    return (1 - weight) * padded[first] + weight * padded[second]


def covered_canvas(cfg: ForwardConfig, positions: np.ndarray) -> np.ndarray:
    """(B, P, P) True where the canvas averages patches (overlap count >= ``COVERED_THRESHOLD``)."""
    return coverage(cfg, np.asarray(positions)) >= COVERED_THRESHOLD


def region_names(spec: TapSpec) -> tuple[str, ...]:
    """The names ``tap_regions`` gives this tap (known before any data: a tolerance file is checked against them)."""
    return ("covered", "uncovered") if spec.name in CANVAS_TAPS else ()


def tap_regions(spec: TapSpec, cfg: ForwardConfig, inputs: Mapping[str, np.ndarray],
                covered: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """``{"covered": mask, "uncovered": ~mask}`` in the tap's canonical shape, or {} for other taps.

    ``covered``: ``covered_canvas(cfg, inputs["positions"])`` when the caller has it already (one per
    batch chunk serves the three canvas taps).
    """
    if spec.name not in CANVAS_TAPS or "positions" not in inputs:
        return {}
    positions = np.asarray(inputs["positions"])
    if covered is None:
        covered = covered_canvas(cfg, positions)
    k, n = cfg.k, cfg.N
    if spec.name == "object.canvas":
        covered = covered[..., None]
    elif spec.name == "object.trimmed":
        covered = covered[:, k:k + n, k:k + n, None]
    else:
        # patches.extracted: channel c is the central crop of the canvas moved by +o'_c, interpolated
        # bilinearly; a pixel is covered when every canvas pixel it reads (with nonzero weight) is
        covered = _covered_after_moving(covered, _centred_offsets(positions), k, n)
    covered = np.ascontiguousarray(covered)
    return {"covered": covered, "uncovered": ~covered}


def _covered_after_moving(covered: np.ndarray, offsets: np.ndarray, k: int, n: int) -> np.ndarray:
    """(B, N, N, C): the central N x N crop of ``covered`` (B, P, P) moved by each offset (B, C, 2),
    True where every pixel the bilinear sample reads with a weight over 1e-9 is covered (outside: not).

    The boolean form of ``translate(covered) >= 1 - 1e-9`` on the crop, on bytes instead of doubles.
    """
    batch, channels = offsets.shape[:2]
    size = covered.shape[-1]
    padded = np.zeros((batch, size + 2, size + 2), bool)
    padded[:, 1:-1, 1:-1] = covered
    image = np.arange(batch)[:, None, None]

    def sources(axis: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(B, C, N) padded indices of the two source pixels along ``axis`` (0: x, 1: y) of the crop, and
        whether each carries weight ((B, C, 1))."""
        first, second, weight = _source_pixels(offsets[..., axis], n, size, first=k)
        return first, second, weight < 1 - 1e-9, weight > 1e-9

    rows0, rows1, row0_used, row1_used = sources(1)
    cols0, cols1, col0_used, col1_used = sources(0)
    channel = np.arange(channels)[None, :, None]
    result = np.ones((batch, channels, n, n), bool)  # (B, C, x, y): columns gathered as rows of the transpose
    for rows, row_used in ((rows0, row0_used), (rows1, row1_used)):
        picked = np.ascontiguousarray(padded[image, rows].transpose(0, 1, 3, 2))  # (B, C, P + 2, y)
        for cols, col_used in ((cols0, col0_used), (cols1, col1_used)):
            read = picked[image, channel, cols]  # (B, C, x, y)
            result &= read | ~(col_used[..., :, None] & row_used[..., None, :].transpose(0, 1, 3, 2))
    return result.transpose(0, 3, 2, 1)
