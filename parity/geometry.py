"""Where an element of a tap sits: its sample, its channel, its spatial band.

A tap's registry layout (``BHWC``, ``HW``, ``B12C``, ``M2``, ``B``, ``scalar``)
says which axis is the batch, which the channel and which two are spatial.
The error breakdown keeps maxima per (sample, channel, row band, column band):
the three bands of a spatial axis are the border band of ``border_width``
pixels at each end and the interior between them, so the interior is band
(1, 1) and the border everything else.  Without a layout, axis 0 is taken as
the sample axis and there is no channel or spatial split.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

__all__ = ["TapGeometry", "LAYOUT_AXES"]

# layout -> (ndim, axis 0 is the batch, channel axis, spatial axes)
LAYOUT_AXES = {
    "BHWC": (4, True, 3, (1, 2)),
    "HW": (2, False, None, (0, 1)),
    "B12C": (4, True, 3, None),
    "M2": (2, True, None, None),
    "B": (1, True, None, None),
    "scalar": (0, False, None, None),
}


@dataclasses.dataclass(frozen=True)
class TapGeometry:
    shape: tuple
    layout: str | None
    has_samples: bool
    channel_axis: int | None
    spatial_axes: tuple | None
    border_width: int | None

    @classmethod
    def of(cls, name: str, shape: tuple, layout: str | None, border_fraction: float = 0.25) -> TapGeometry:
        shape = tuple(int(n) for n in shape)
        if layout is None:
            return cls(shape, None, len(shape) >= 1, None, None, None)
        if layout not in LAYOUT_AXES:
            raise ValueError(f"{name}: unknown layout {layout!r}; layouts are {sorted(LAYOUT_AXES)}")
        ndim, samples, channel, spatial = LAYOUT_AXES[layout]
        if len(shape) != ndim:
            raise ValueError(f"{name}: layout {layout} needs {ndim} axes, the reference has shape {shape}")
        if not (isinstance(border_fraction, (int, float)) and 0.0 <= border_fraction <= 0.5):
            raise ValueError(f"{name}: border_fraction must be in [0, 0.5], got {border_fraction!r}")
        width = None
        if spatial is not None:
            side = min(shape[spatial[0]], shape[spatial[1]])
            width = min(int(math.floor(border_fraction * side + 0.5)), side // 2)
        return cls(shape, layout, samples, channel, spatial, width)

    # ---- sizes ----
    @property
    def row_size(self) -> int:
        """Elements per index of axis 0 (1 for a 0-d tap)."""
        return math.prod(self.shape[1:]) if self.shape else 1

    @property
    def n_channels(self) -> int:
        return self.shape[self.channel_axis] if self.channel_axis is not None else 1

    @property
    def n_samples(self) -> int:
        return self.shape[0] if self.has_samples else 1

    def sample_range(self, start: int, count: int) -> tuple[int, int]:
        """First sample touched by the flat range [start, start+count) and how many samples it touches."""
        if not self.has_samples or count == 0:
            return 0, 1
        first = start // self.row_size
        last = (start + count - 1) // self.row_size
        return first, last - first + 1

    def bands(self, axis: int) -> list[tuple[int, int]]:
        """(lo, hi) of the border, interior, border bands along a spatial axis, in global coordinates."""
        length, width = self.shape[axis], self.border_width or 0
        return [(0, width), (width, length - width), (length - width, length)]

    def table(self, samples: int) -> np.ndarray:
        """An empty (samples, channels, 3, 3) table of maxima."""
        return np.zeros((samples, self.n_channels, 3, 3))

    # ---- the fast path: a chunk of whole rows along axis 0 ----
    def band_blocks(self, first_row: int, rows: int):
        """Yield ``(i, j, index)``: the chunk-local index of band (i, j) of a chunk of whole rows.

        Without spatial axes the whole chunk is band (1, 1).  Empty bands are skipped.
        """
        full = [slice(None)] * len(self.shape)
        if self.spatial_axes is None:
            yield 1, 1, tuple(full)
            return
        row_axis, col_axis = self.spatial_axes
        offset = first_row if row_axis == 0 else 0
        limit = rows if row_axis == 0 else self.shape[row_axis]
        for i, (lo, hi) in enumerate(self.bands(row_axis)):
            lo, hi = max(lo - offset, 0), min(hi - offset, limit)
            if hi <= lo:
                continue
            for j, (clo, chi) in enumerate(self.bands(col_axis)):
                if chi <= clo:
                    continue
                index = list(full)
                index[row_axis], index[col_axis] = slice(lo, hi), slice(clo, chi)
                yield i, j, tuple(index)

    def kept_axes(self) -> tuple[int | None, int | None]:
        return (0 if self.has_samples else None), self.channel_axis

    # ---- the general path: any run of consecutive elements ----
    def element_cells(self, start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        """Per element of the flat range: (local sample, flat cell in the (S, C, 3, 3) table)."""
        flat = np.arange(start, start + count, dtype=np.int64)
        if not self.shape:
            zeros = np.zeros(count, np.int64)
            return zeros, zeros + 4  # (0, 0, 1, 1)
        coords = np.unravel_index(flat, self.shape)
        first, _ = self.sample_range(start, count)
        sample = coords[0] - first if self.has_samples else np.zeros(count, np.int64)
        channel = coords[self.channel_axis] if self.channel_axis is not None else 0
        if self.spatial_axes is None:
            band_i = band_j = 1
        else:
            band_i, band_j = (np.searchsorted([hi for _, hi in self.bands(axis)[:2]], coords[axis], side="right")
                              for axis in self.spatial_axes)
        cell = ((sample * self.n_channels + channel) * 3 + band_i) * 3 + band_j
        return sample, np.asarray(cell, np.int64)
