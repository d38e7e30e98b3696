"""Reductions shared by the engines' paths: maxima per (sample, channel, band), locating a maximum."""

from __future__ import annotations

import math

import numpy as np


def band_table(ops, x, geom, first_row: int, samples: int) -> np.ndarray:
    """max x per (local sample, channel, row band, column band) of a chunk of whole rows."""
    table = geom.table(samples)
    keep = [axis for axis in geom.kept_axes() if axis is not None]
    if geom.spatial_axes is None or x.ndim == 0:
        others = tuple(axis for axis in range(x.ndim) if axis not in keep)
        table[:, :, 1, 1] = ops.to_numpy(ops.amax(x, others)).reshape(samples, -1)
        return table
    row_axis, col_axis = geom.spatial_axes
    rows = x.shape[0]
    col = col_axis - 1  # the column axis once the row axis is reduced away
    for i, (lo, hi) in enumerate(geom.bands(row_axis)):
        if row_axis == 0:
            lo, hi = max(lo - first_row, 0), min(hi - first_row, rows)
        if hi <= lo:
            continue
        index = [slice(None)] * x.ndim
        index[row_axis] = slice(lo, hi)
        # the rows of the band first: a contiguous pass on the engine's device; what is left is 1/rows of
        # the tap, so the column bands are cut on the host (one transfer, not one per band)
        reduced = ops.to_numpy(ops.amax(x[tuple(index)], (row_axis,)))
        trailing = math.prod(reduced.shape[col + 1:])
        if 1 < trailing <= 8:  # few channels: numpy reduces a middle axis in inner loops this short
            reduced, axis = np.ascontiguousarray(np.moveaxis(reduced, col, -1)), reduced.ndim - 1
        else:
            axis = col
        for j, (clo, chi) in enumerate(geom.bands(col_axis)):
            if chi <= clo:
                continue
            index = [slice(None)] * reduced.ndim
            index[axis] = slice(clo, chi)
            table[:, :, i, j] = np.max(reduced[tuple(index)], axis=axis).reshape(samples, -1)
    return table


def sample_max(ops, x, mask, geom, samples: int) -> np.ndarray:
    others = tuple(range(1 if geom.has_samples else 0, x.ndim))
    return ops.to_numpy(ops.amax(ops.masked(x, mask), others)).reshape(samples)


def locate(ops, x, table: np.ndarray, value: float, geom) -> int:
    """Flat index (C order, first occurrence) of ``value``, the maximum of ``x``."""
    if not geom.has_samples or x.ndim == 0:
        return ops.argmax(x)
    sample = int(np.argmax(table.reshape(table.shape[0], -1).max(axis=1) >= value))
    return sample * geom.row_size + ops.argmax(x[sample])


def wide(x, is_complex: bool):
    """A value in float64/complex128: the exact values are numpy's, as the float64 definition computes them."""
    return np.complex128(x) if is_complex else np.float64(x)


def value_at(ops, x, flat: int):
    return ops.take(x, np.array([flat]))[0]
