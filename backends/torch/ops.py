"""PyTorch building blocks of the physics stages (channels first).

Translation is bilinear with zero fill (spec section 4), computed with gathers
on an integer/fractional split of the shift instead of ``grid_sample``:
grid_sample normalises coordinates to [-1, 1] and back in the image dtype,
which in float32 moves samples by ~1e-5 px on an 80 px canvas, enough to
break 1e-6 parity where the canvas divides by a small overlap count.

As in the reference, the source pixels of one image form a single
(size + 1) x (size + 1) window (the integer shift is the same for the whole
image): one indexed gather of clamped indices and one ``where`` for the zero
fill; the four neighbours are views into that window and the x interpolation
runs once per window row. Complex images are translated as (..., 2) real
views (``torch.view_as_real``), real and imaginary parts together.
"""

from __future__ import annotations

import torch


def _split_shift(shift: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    whole = torch.floor(shift)
    return whole.to(torch.int64), shift - whole


def _windows(images: torch.Tensor, row0: torch.Tensor, col0: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """Windows ``images[g, row0[i] + r, col0[i] + c, :]`` (zero outside the image), shape (S, rows, cols, K).

    ``images`` is (G, H, W, K) and each image serves S / G consecutive windows
    (G = 1: one image shared by every window).
    """
    groups, height, width = images.shape[0], images.shape[1], images.shape[2]
    count = row0.shape[0]
    device = images.device
    row_index = row0[:, None] + torch.arange(rows, device=device)[None, :]
    col_index = col0[:, None] + torch.arange(cols, device=device)[None, :]
    inside = (((row_index >= 0) & (row_index < height))[:, :, None, None]
              & ((col_index >= 0) & (col_index < width))[:, None, :, None])
    image_index = torch.div(torch.arange(count, device=device), count // groups, rounding_mode="floor")
    picked = images[image_index[:, None, None], row_index.clamp(0, height - 1)[:, :, None],
                    col_index.clamp(0, width - 1)[:, None, :]]
    return torch.where(inside, picked, torch.zeros((), dtype=picked.dtype, device=device))


def _translate_channels(images: torch.Tensor, shifts: torch.Tensor, start: tuple[int, int],
                        size: tuple[int, int] | None) -> torch.Tensor:
    """(G, H, W, K) real images, (S, 2) shifts -> (S, size_y, size_x, K); see ``translate``."""
    groups, height, width = images.shape[0], images.shape[1], images.shape[2]
    if shifts.shape[0] % groups:
        raise ValueError(f"{shifts.shape[0]} shifts cannot be shared evenly by {groups} images")
    size_y, size_x = size if size is not None else (height, width)
    start_y, start_x = start
    whole_x, frac_x = _split_shift(shifts[:, 0])
    whole_y, frac_y = _split_shift(shifts[:, 1])
    window = _windows(images, start_y - whole_y - 1, start_x - whole_x - 1, size_y + 1, size_x + 1)
    fx = frac_x[:, None, None, None]
    fy = frac_y[:, None, None, None]
    along_x = fx * window[:, :, :-1] + (1 - fx) * window[:, :, 1:]
    return fy * along_x[:, :-1] + (1 - fy) * along_x[:, 1:]


def translate(images: torch.Tensor, shifts: torch.Tensor, start: tuple[int, int] = (0, 0),
              size: tuple[int, int] | None = None) -> torch.Tensor:
    """Move real images (G, H, W) by shifts (S, 2) = (t_x, t_y); content moves by +t.

    Same contract and arithmetic order as the TensorFlow reference's
    ``translate``: x interpolation on the two source rows, then y. Each image
    serves S / G consecutive shifts (a single image is shared by every shift).
    """
    return _translate_channels(images[..., None], shifts, start, size)[..., 0]


def translate_complex(images: torch.Tensor, shifts: torch.Tensor, start: tuple[int, int] = (0, 0),
                      size: tuple[int, int] | None = None) -> torch.Tensor:
    return torch.view_as_complex(_translate_channels(torch.view_as_real(images), shifts, start, size))


def ordered_sum(parts: list[torch.Tensor]) -> torch.Tensor:
    """Left-to-right sum, rounding exactly as the reference's channel sums."""
    total = parts[0]
    for part in parts[1:]:
        total = total + part
    return total


def centred_offsets(offsets: torch.Tensor) -> torch.Tensor:
    """(B, C, 2) offsets minus their per-sample mean."""
    channels = offsets.shape[1]
    mean = ordered_sum([offsets[:, c, :] for c in range(channels)]) / channels
    return offsets - mean[:, None, :]


def _per_component(factor):
    """A real factor lined up with the (..., 2) real view of a complex tensor (scalars as they are)."""
    return factor[..., None] if isinstance(factor, torch.Tensor) and factor.dim() > 0 else factor


def divide_complex_by_real(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    """(re / d) + i (im / d), on the (..., 2) real view: the same two divisions, one pass."""
    return torch.view_as_complex(torch.view_as_real(numerator) / _per_component(denominator))


def scale_complex(values: torch.Tensor, factor) -> torch.Tensor:
    """(re * f) + i (im * f), on the (..., 2) real view: the same two products, one pass."""
    return torch.view_as_complex(torch.view_as_real(values) * _per_component(factor))


def smooth_3x3(images: torch.Tensor, kernel) -> torch.Tensor:
    """Real (B, C, H, W) images smoothed by a 3 x 3 kernel with mirror padding."""
    height, width = images.shape[-2], images.shape[-1]
    padded = torch.nn.functional.pad(images, (1, 1, 1, 1), mode="reflect")
    terms = [float(kernel[dy, dx]) * padded[..., dy : dy + height, dx : dx + width]
             for dy in range(3) for dx in range(3)]
    return ordered_sum(terms)
