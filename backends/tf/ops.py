"""TensorFlow building blocks of the physics stages.

Translation is bilinear with zero fill, as spec section 4 defines it. It is
written with gathers rather than ``ImageProjectiveTransformV3`` because that
kernel computes source coordinates and interpolation weights in float32 even
for float64 images, which caps float64 parity near 1e-7. The arithmetic order
follows that kernel (interpolate along x on the two source rows, then along
y), and tests check it against the native op in float32.
"""

from __future__ import annotations

import tensorflow as tf


def _gather_zero(images: tf.Tensor, index: tf.Tensor, axis: int, batched: bool) -> tf.Tensor:
    """Gather along ``axis`` where out-of-range indices read a zero."""
    length = tf.shape(images)[axis]
    paddings = [[0, 0]] * images.shape.rank
    paddings[axis] = [0, 1]
    padded = tf.pad(images, paddings)
    inside = (index >= 0) & (index < length)
    safe = tf.where(inside, index, length)
    return tf.gather(padded, safe, axis=axis, batch_dims=1 if batched else 0)


def _split_shift(shift: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    whole = tf.floor(shift)
    return tf.cast(whole, tf.int32), shift - whole


def translate(images: tf.Tensor, shifts: tf.Tensor, start: tuple[int, int] = (0, 0),
              size: tuple[int, int] | None = None) -> tf.Tensor:
    """Move real images (B or 1, H, W) by shifts (B, 2) = (t_x, t_y); content moves by +t.

    Returns rows [start_y, start_y + size_y) and columns [start_x, ...) of the
    translated images, shape (B, size_y, size_x). A single image is shared by
    every shift.
    """
    height, width = images.shape[1], images.shape[2]
    size_y, size_x = size if size is not None else (height, width)
    start_y, start_x = start
    whole_x, frac_x = _split_shift(shifts[:, 0])
    whole_y, frac_y = _split_shift(shifts[:, 1])
    rows = tf.range(start_y, start_y + size_y)[None, :]
    cols = tf.range(start_x, start_x + size_x)[None, :]
    # Output pixel p reads source p - w - 1 with weight f and p - w with 1 - f.
    row_lower = rows - whole_y[:, None]
    col_lower = cols - whole_x[:, None]
    shared = images.shape[0] == 1 and shifts.shape[0] != 1
    source = images[0] if shared else images
    row_floor = _gather_zero(source, row_lower - 1, axis=0 if shared else 1, batched=not shared)
    row_ceil = _gather_zero(source, row_lower, axis=0 if shared else 1, batched=not shared)
    fx = frac_x[:, None, None]
    fy = frac_y[:, None, None]

    def along_x(row_values: tf.Tensor) -> tf.Tensor:
        return (fx * _gather_zero(row_values, col_lower - 1, axis=2, batched=True)
                + (1 - fx) * _gather_zero(row_values, col_lower, axis=2, batched=True))

    return fy * along_x(row_floor) + (1 - fy) * along_x(row_ceil)


def translate_complex(images: tf.Tensor, shifts: tf.Tensor, start: tuple[int, int] = (0, 0),
                      size: tuple[int, int] | None = None) -> tf.Tensor:
    """Translate real and imaginary parts separately (spec section 4)."""
    real = translate(tf.math.real(images), shifts, start, size)
    imag = translate(tf.math.imag(images), shifts, start, size)
    return tf.complex(real, imag)


def ordered_sum(parts: list[tf.Tensor]) -> tf.Tensor:
    """Left-to-right sum, so both backends round a channel sum identically."""
    total = parts[0]
    for part in parts[1:]:
        total = total + part
    return total


def centred_offsets(positions: tf.Tensor) -> tf.Tensor:
    """(B, 1, 2, C) positions -> (B, C, 2) offsets minus their per-sample mean."""
    offsets = tf.transpose(positions[:, 0, :, :], (0, 2, 1))
    channels = offsets.shape[1]
    mean = ordered_sum([offsets[:, c, :] for c in range(channels)]) / channels
    return offsets - mean[:, None, :]


def divide_complex_by_real(numerator: tf.Tensor, denominator: tf.Tensor) -> tf.Tensor:
    return tf.complex(tf.math.real(numerator) / denominator, tf.math.imag(numerator) / denominator)


def scale_complex(values: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
    return tf.complex(tf.math.real(values) * factor, tf.math.imag(values) * factor)


def smooth_3x3(images: tf.Tensor, kernel, dtype) -> tf.Tensor:
    """Real (B, H, W, C) images smoothed by a 3 x 3 kernel with mirror padding."""
    height, width = images.shape[1], images.shape[2]
    padded = tf.pad(images, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="REFLECT")
    terms = [tf.constant(kernel[dy, dx], dtype) * padded[:, dy : dy + height, dx : dx + width, :]
             for dy in range(3) for dx in range(3)]
    return ordered_sum(terms)
