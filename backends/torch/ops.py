"""PyTorch building blocks of the physics stages (channels first).

Translation is bilinear with zero fill (spec section 4), computed with gathers
on an integer/fractional split of the shift instead of ``grid_sample``:
grid_sample normalises coordinates to [-1, 1] and back in the image dtype,
which in float32 moves samples by ~1e-5 px on an 80 px canvas, enough to
break 1e-6 parity where the canvas divides by a small overlap count.
"""

from __future__ import annotations

import torch


def _gather_zero(images: torch.Tensor, index: torch.Tensor, axis: int, batched: bool) -> torch.Tensor:
    """Gather along ``axis`` where out-of-range indices read a zero.

    Batched: ``index`` is (B, K), one row of indices per image. Not batched:
    ``images`` is one (H, W) image, ``axis`` is 0 and the result (B, K, W).
    """
    length = images.shape[axis]
    pad = [0, 0] * (images.dim() - 1 - axis) + [0, 1]  # F.pad lists the last axis first
    padded = torch.nn.functional.pad(images, pad)
    safe = torch.where((index >= 0) & (index < length), index, torch.full_like(index, length))
    if not batched:
        return padded[safe]
    view = [index.shape[0]] + [1] * (padded.dim() - 1)
    view[axis] = index.shape[1]
    shape = list(padded.shape)
    shape[axis] = index.shape[1]
    return torch.gather(padded, axis, safe.reshape(view).expand(shape))


def _split_shift(shift: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    whole = torch.floor(shift)
    return whole.to(torch.int64), shift - whole


def translate(images: torch.Tensor, shifts: torch.Tensor, start: tuple[int, int] = (0, 0),
              size: tuple[int, int] | None = None) -> torch.Tensor:
    """Move real images (B or 1, H, W) by shifts (B, 2) = (t_x, t_y); content moves by +t.

    Same contract and arithmetic order as the TensorFlow reference's
    ``translate``: x interpolation on the two source rows, then y.
    """
    height, width = images.shape[1], images.shape[2]
    size_y, size_x = size if size is not None else (height, width)
    start_y, start_x = start
    whole_x, frac_x = _split_shift(shifts[:, 0])
    whole_y, frac_y = _split_shift(shifts[:, 1])
    device = images.device
    rows = torch.arange(start_y, start_y + size_y, device=device)[None, :]
    cols = torch.arange(start_x, start_x + size_x, device=device)[None, :]
    row_lower = rows - whole_y[:, None]
    col_lower = cols - whole_x[:, None]
    shared = images.shape[0] == 1 and shifts.shape[0] != 1
    source = images[0] if shared else images
    row_floor = _gather_zero(source, row_lower - 1, axis=0 if shared else 1, batched=not shared)
    row_ceil = _gather_zero(source, row_lower, axis=0 if shared else 1, batched=not shared)
    fx = frac_x[:, None, None]
    fy = frac_y[:, None, None]

    def along_x(row_values: torch.Tensor) -> torch.Tensor:
        return (fx * _gather_zero(row_values, col_lower - 1, axis=2, batched=True)
                + (1 - fx) * _gather_zero(row_values, col_lower, axis=2, batched=True))

    return fy * along_x(row_floor) + (1 - fy) * along_x(row_ceil)


def translate_complex(images: torch.Tensor, shifts: torch.Tensor, start: tuple[int, int] = (0, 0),
                      size: tuple[int, int] | None = None) -> torch.Tensor:
    return torch.complex(translate(images.real, shifts, start, size), translate(images.imag, shifts, start, size))


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


def divide_complex_by_real(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    return torch.complex(numerator.real / denominator, numerator.imag / denominator)


def scale_complex(values: torch.Tensor, factor) -> torch.Tensor:
    return torch.complex(values.real * factor, values.imag * factor)


def smooth_3x3(images: torch.Tensor, kernel) -> torch.Tensor:
    """Real (B, C, H, W) images smoothed by a 3 x 3 kernel with mirror padding."""
    height, width = images.shape[-2], images.shape[-1]
    padded = torch.nn.functional.pad(images, (1, 1, 1, 1), mode="reflect")
    terms = [float(kernel[dy, dx]) * padded[..., dy : dy + height, dx : dx + width]
             for dy in range(3) for dx in range(3)]
    return ordered_sum(terms)
