"""Stand-in for a legacy TensorFlow ptychography code base (the reference side of a real port).

Written the way such code bases often are: a module-level ``params`` dict read everywhere, flat
(B*C, N, N, 1) patches and (B*C, 1, 1, 2) offsets, and the FFT fused with the modulus in one
function. Only the object/probe/offset forward (the ``physics`` pipeline) is here. Nothing in this
file knows about the parity harness; ``adapter.py`` wraps it.
"""

import numpy as np
import tensorflow as tf

params = {"N": 64, "gridsize": 2, "offset": 4, "max_position_jitter": 10, "probe.mask": False,
          "intensity_scale": 1.0}


def get_padded_size():
    n, g = params["N"], params["gridsize"]
    size = n + (g - 1) * params["offset"] + params["max_position_jitter"]
    return size + 1 if (size - n) % 2 else size


def _shift_bilinear(images, shifts, top=0, left=0, rows=None, cols=None):
    """images (K, H, W) real, shifts (K, 2) as (dx, dy): content moves by +shift, zeros outside."""
    k, height, width = images.shape
    rows, cols = rows or height, cols or width
    padded = tf.pad(images, [[0, 0], [1, 1], [1, 1]])  # reads outside the image land on a zero
    whole = tf.floor(shifts)
    frac = shifts - whole
    whole = tf.cast(whole, tf.int32)
    y = tf.range(top, top + rows)[None, :] - whole[:, 1:2]  # (K, rows): the source row below, padded
    x = tf.range(left, left + cols)[None, :] - whole[:, 0:1]

    def pick(dy, dx):  # indices clipped onto the zero border read zero
        yy = tf.clip_by_value(y + dy, 0, height + 1)[:, :, None] * tf.ones_like(x)[:, None, :]
        xx = tf.clip_by_value(x + dx, 0, width + 1)[:, None, :] * tf.ones_like(y)[:, :, None]
        return tf.gather_nd(padded, tf.stack([yy, xx], axis=-1), batch_dims=1)

    fx, fy = frac[:, 0, None, None], frac[:, 1, None, None]
    upper = fx * pick(0, 0) + (1 - fx) * pick(0, 1)
    lower = fx * pick(1, 0) + (1 - fx) * pick(1, 1)
    return fy * upper + (1 - fy) * lower


def _shift_complex(images, shifts, **window):
    return tf.complex(_shift_bilinear(tf.math.real(images), shifts, **window),
                      _shift_bilinear(tf.math.imag(images), shifts, **window))


def _centred(offsets_flat):
    """(B*C, 1, 1, 2) -> (B, C, 2) offsets minus each group's mean, summed channel by channel."""
    c = params["gridsize"] ** 2
    grouped = tf.reshape(offsets_flat, (-1, c, 2))
    total = grouped[:, 0]
    for channel in range(1, c):
        total = total + grouped[:, channel]
    return grouped - (total / c)[:, None, :]


def reassemble_position(patches_flat, offsets_flat):
    """Flat patches placed on one canvas per group, normalised by the overlap of their centres."""
    n, c, size = params["N"], params["gridsize"] ** 2, get_padded_size()
    pad = (size - n) // 2
    shifts = tf.reshape(-_centred(offsets_flat), (-1, 2))
    placed = _shift_complex(tf.pad(patches_flat[..., 0], [[0, 0], [pad, pad], [pad, pad]]), shifts)
    window = np.zeros((size, size), params.get("dtype", "float32"))
    window[pad + n // 4 : pad + 3 * n // 4, pad + n // 4 : pad + 3 * n // 4] = 1
    counts = _shift_bilinear(tf.constant(np.repeat(window[None], shifts.shape[0], 0)), shifts)
    placed, counts = tf.reshape(placed, (-1, c, size, size)), tf.reshape(counts, (-1, c, size, size))
    numerator, denominator = placed[:, 0], counts[:, 0]
    for channel in range(1, c):
        numerator, denominator = numerator + placed[:, channel], denominator + counts[:, channel]
    denominator = denominator + 0.001
    canvas = tf.complex(tf.math.real(numerator) / denominator, tf.math.imag(numerator) / denominator)
    return canvas[..., None]


def extract_patches_position(canvas, offsets_flat):
    n, c, size = params["N"], params["gridsize"] ** 2, get_padded_size()
    pad = (size - n) // 2
    shifts = tf.reshape(_centred(offsets_flat), (-1, 2))
    repeated = tf.repeat(canvas[..., 0], c, axis=0)
    return _shift_complex(repeated, shifts, top=pad, left=pad, rows=n, cols=n)[..., None]


def probe_mask():
    n = params["N"]
    centre = n / 2 - 0.5
    y, x = np.mgrid[0:n, 0:n]
    return ((y - centre) ** 2 + (x - centre) ** 2 < (n // 4) ** 2).astype(params.get("dtype", "float32"))


def illuminate(probe, patches_flat):
    """(N, N, 1) probe times (B*C, N, N, 1) patches, masked by the disk when params say so."""
    wave = probe[None] * patches_flat
    if params["probe.mask"]:
        mask = tf.constant(probe_mask())[None, :, :, None]
        wave = tf.complex(tf.math.real(wave) * mask, tf.math.imag(wave) * mask)
    return wave


def diffract(wave_flat):
    """Far-field amplitude in one step: |FFT2(wave) / N|, centred."""
    spectrum = tf.signal.fft2d(wave_flat[..., 0])
    scale = tf.constant(1.0 / params["N"], tf.math.real(spectrum).dtype)
    spectrum = tf.complex(tf.math.real(spectrum) * scale, tf.math.imag(spectrum) * scale)
    power = tf.math.real(spectrum) ** 2 + tf.math.imag(spectrum) ** 2
    return tf.sqrt(tf.signal.fftshift(power, axes=(1, 2)))[..., None]


def scale_amplitude(amplitude):
    return tf.constant(params["intensity_scale"], amplitude.dtype) * amplitude
