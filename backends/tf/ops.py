"""TensorFlow building blocks of the physics stages.

Translation is bilinear with zero fill, as spec section 4 defines it. It is
written with gathers rather than ``ImageProjectiveTransformV3`` because that
kernel computes source coordinates and interpolation weights in float32 even
for float64 images, which caps float64 parity near 1e-7. The arithmetic order
follows that kernel (interpolate along x on the two source rows, then along
y), and tests check it against the native op in float32.

The shift's integer part is the same for every pixel of an image, so the
source pixels an output needs form one (size + 1) x (size + 1) window per
image: two whole-row/column gathers of clamped indices and one ``where`` for
the zero fill, instead of a padded gather per neighbour and axis. The
neighbours are then slices of that window, and the x interpolation runs once
per window row (each output row shares its two source rows with its
neighbours). Every output element is still ``fy * (fx * a + (1 - fx) * b) +
(1 - fy) * (fx * c + (1 - fx) * d)`` with the same roundings as before.
Complex images are translated as (..., 2) real views, real and imaginary
parts together.
"""

from __future__ import annotations

import tensorflow as tf

_REAL_OF = {tf.complex64: tf.float32, tf.complex128: tf.float64}


def _split_shift(shift: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    whole = tf.floor(shift)
    return tf.cast(whole, tf.int32), shift - whole


def _windows(images: tf.Tensor, row0: tf.Tensor, col0: tf.Tensor, rows: int, cols: int) -> tf.Tensor:
    """Windows ``images[g, row0[i] + r, col0[i] + c, :]`` (zero outside the image), shape (S, rows, cols, K).

    ``images`` is (G, H, W, K) and each image serves S / G consecutive windows
    (G = 1: one image shared by every window).
    """
    groups, height, width = images.shape[0], images.shape[1], images.shape[2]
    count = row0.shape[0]
    row_index = row0[:, None] + tf.range(rows)[None, :]
    col_index = col0[:, None] + tf.range(cols)[None, :]
    inside = (((row_index >= 0) & (row_index < height))[:, :, None, None]
              & ((col_index >= 0) & (col_index < width))[:, None, :, None])
    row_index = tf.clip_by_value(row_index, 0, height - 1)
    col_index = tf.clip_by_value(col_index, 0, width - 1)
    per_image = count // groups
    picked = tf.gather(images, tf.reshape(row_index, (groups, per_image * rows)), axis=1, batch_dims=1)
    picked = tf.reshape(picked, (count, rows, width, images.shape[3]))
    picked = tf.gather(picked, col_index, axis=2, batch_dims=1)
    return tf.where(inside, picked, tf.zeros((), picked.dtype))


def _translate_channels(images: tf.Tensor, shifts: tf.Tensor, start: tuple[int, int],
                        size: tuple[int, int] | None) -> tf.Tensor:
    """(G, H, W, K) real images, (S, 2) shifts -> (S, size_y, size_x, K); see ``translate``."""
    groups, height, width = images.shape[0], images.shape[1], images.shape[2]
    if shifts.shape[0] % groups:
        raise ValueError(f"{shifts.shape[0]} shifts cannot be shared evenly by {groups} images")
    size_y, size_x = size if size is not None else (height, width)
    start_y, start_x = start
    whole_x, frac_x = _split_shift(shifts[:, 0])
    whole_y, frac_y = _split_shift(shifts[:, 1])
    # Output pixel p reads source p - w - 1 with weight f and p - w with 1 - f.
    window = _windows(images, start_y - whole_y - 1, start_x - whole_x - 1, size_y + 1, size_x + 1)
    fx = frac_x[:, None, None, None]
    fy = frac_y[:, None, None, None]
    along_x = fx * window[:, :, :-1] + (1 - fx) * window[:, :, 1:]
    return fy * along_x[:, :-1] + (1 - fy) * along_x[:, 1:]


def translate(images: tf.Tensor, shifts: tf.Tensor, start: tuple[int, int] = (0, 0),
              size: tuple[int, int] | None = None) -> tf.Tensor:
    """Move real images (G, H, W) by shifts (S, 2) = (t_x, t_y); content moves by +t.

    Returns rows [start_y, start_y + size_y) and columns [start_x, ...) of the
    translated images, shape (S, size_y, size_x). Each image serves S / G
    consecutive shifts (a single image is shared by every shift).
    """
    return _translate_channels(images[..., None], shifts, start, size)[..., 0]


def translate_complex(images: tf.Tensor, shifts: tf.Tensor, start: tuple[int, int] = (0, 0),
                      size: tuple[int, int] | None = None) -> tf.Tensor:
    """Translate real and imaginary parts separately (spec section 4), as one (..., 2) real view."""
    parts = tf.bitcast(images, _REAL_OF[images.dtype])
    return tf.bitcast(_translate_channels(parts, shifts, start, size), images.dtype)


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


def _per_component(values: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
    """A real factor lined up with the (..., 2) real view of complex ``values`` (scalars as they are)."""
    factor = tf.convert_to_tensor(factor, _REAL_OF[values.dtype])
    return factor if factor.shape.rank == 0 else factor[..., None]


def divide_complex_by_real(numerator: tf.Tensor, denominator: tf.Tensor) -> tf.Tensor:
    """(re / d) + i (im / d), on the (..., 2) real view: the same two divisions, one pass."""
    parts = tf.bitcast(numerator, _REAL_OF[numerator.dtype]) / _per_component(numerator, denominator)
    return tf.bitcast(parts, numerator.dtype)


def scale_complex(values: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
    """(re * f) + i (im * f), on the (..., 2) real view: the same two products, one pass."""
    parts = tf.bitcast(values, _REAL_OF[values.dtype]) * _per_component(values, factor)
    return tf.bitcast(parts, values.dtype)


def smooth_3x3(images: tf.Tensor, kernel, dtype) -> tf.Tensor:
    """Real (B, H, W, C) images smoothed by a 3 x 3 kernel with mirror padding."""
    height, width = images.shape[1], images.shape[2]
    padded = tf.pad(images, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="REFLECT")
    terms = [tf.constant(kernel[dy, dx], dtype) * padded[:, dy : dy + height, dx : dx + width, :]
             for dy in range(3) for dx in range(3)]
    return ordered_sum(terms)
