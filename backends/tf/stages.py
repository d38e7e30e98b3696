"""TensorFlow stage table: one function per registry stage key (spec sections 3-7).

Tensors here are channels last, exactly the canonical layout.
"""

from __future__ import annotations

import tensorflow as tf

from backends.common.backend import StageContext
from backends.common.constants import (CANVAS_EPSILON, POISSON_EPSILON, centre_mask, disk_mask,
                                       gaussian_kernel_3x3)

from .ops import (centred_offsets, divide_complex_by_real, ordered_sum, scale_complex, smooth_3x3, translate,
                  translate_complex)


def _real(ctx: StageContext) -> tf.DType:
    return tf.as_dtype(ctx.cfg.dtype)


def _const(ctx: StageContext, value) -> tf.Tensor:
    return tf.constant(value, _real(ctx))


def input_scaled(ctx, X):
    return X / _const(ctx, ctx.cfg.intensity_scale)


def encoder_block(ctx, x, index):
    return ctx.params.encoder_block(index, x)


def decoder_head(ctx, bottleneck, head):
    return ctx.params.decoder_head(head, bottleneck)


def object_patches(ctx, amp, phase):
    return tf.complex(amp * tf.cos(phase), amp * tf.sin(phase))


def _channels_first(images: tf.Tensor) -> tf.Tensor:
    """(B, H, W, C) -> (B*C, H, W), channel-major within each sample."""
    batch, height, width, channels = images.shape
    return tf.reshape(tf.transpose(images, (0, 3, 1, 2)), (batch * channels, height, width))


def object_canvas(ctx, patches, positions):
    cfg = ctx.cfg
    k = cfg.k
    padded = tf.pad(patches, [[0, 0], [k, k], [k, k], [0, 0]])
    if not cfg.object_big:
        return padded
    batch, channels = patches.shape[0], cfg.C
    shifts = tf.reshape(-centred_offsets(positions), (batch * channels, 2))
    placed = tf.reshape(translate_complex(_channels_first(padded), shifts), (batch, channels, cfg.P, cfg.P))
    mask = _const(ctx, centre_mask(cfg.N))
    mask = tf.pad(mask, [[k, k], [k, k]])[None]
    coverage = tf.reshape(translate(mask, shifts), (batch, channels, cfg.P, cfg.P))
    numerator = ordered_sum([placed[:, c] for c in range(channels)])
    denominator = ordered_sum([coverage[:, c] for c in range(channels)]) + _const(ctx, CANVAS_EPSILON)
    return divide_complex_by_real(numerator, denominator)[..., None]


def object_trimmed(ctx, canvas):
    k, n = ctx.cfg.k, ctx.cfg.N
    return canvas[:, k : k + n, k : k + n, :]


def patches_extracted(ctx, canvas, positions):
    cfg = ctx.cfg
    batch, channels = canvas.shape[0], cfg.C
    shifts = tf.reshape(centred_offsets(positions), (batch * channels, 2))
    # Each sample's canvas serves its C consecutive shifts (no C-fold copy of the canvas).
    crops = translate_complex(canvas[..., 0], shifts, start=(cfg.k, cfg.k), size=(cfg.N, cfg.N))
    return tf.transpose(tf.reshape(crops, (batch, channels, cfg.N, cfg.N)), (0, 2, 3, 1))


def probe_effective(ctx, probe):
    if not ctx.cfg.probe_mask:
        return probe
    return scale_complex(probe, _const(ctx, disk_mask(ctx.cfg.N)))


def exit_wave(ctx, probe, patches):
    cfg = ctx.cfg
    wave = probe[None, :, :, None] * patches
    if cfg.gaussian_sigma > 0:
        kernel = gaussian_kernel_3x3(cfg.gaussian_sigma)
        dtype = _real(ctx)
        wave = tf.complex(smooth_3x3(tf.math.real(wave), kernel, dtype), smooth_3x3(tf.math.imag(wave), kernel, dtype))
    if cfg.probe_mask:
        wave = scale_complex(wave, _const(ctx, disk_mask(cfg.N))[None, :, :, None])
    return wave


def farfield(ctx, wave):
    # tf.signal transforms the two innermost axes: move channels out of the way.
    spectrum = tf.signal.fft2d(tf.transpose(wave, (0, 3, 1, 2)))
    spectrum = scale_complex(spectrum, _const(ctx, 1.0 / ctx.cfg.N))
    return tf.transpose(spectrum, (0, 2, 3, 1))


def amplitude(ctx, field):
    power = tf.math.real(field) ** 2 + tf.math.imag(field) ** 2
    return tf.sqrt(tf.signal.fftshift(power, axes=(1, 2)))


def amplitude_scaled(ctx, amp):
    return _const(ctx, ctx.cfg.intensity_scale) * amp


def intensity(ctx, amp_scaled):
    return amp_scaled * amp_scaled


def _poisson_terms(ctx, lam, X):
    counts = (_const(ctx, ctx.cfg.intensity_scale) * X) ** 2
    return lam - counts * tf.math.log(lam + _const(ctx, POISSON_EPSILON))


def _mae_terms(ctx, amp_scaled, X):
    return tf.abs(amp_scaled - _const(ctx, ctx.cfg.intensity_scale) * X)


def loss_poisson(ctx, lam, X):
    return tf.reduce_mean(_poisson_terms(ctx, lam, X))


def loss_poisson_per_sample(ctx, lam, X):
    return tf.reduce_mean(_poisson_terms(ctx, lam, X), axis=(1, 2, 3))


def loss_mae(ctx, amp_scaled, X):
    return tf.reduce_mean(_mae_terms(ctx, amp_scaled, X))


def loss_mae_per_sample(ctx, amp_scaled, X):
    return tf.reduce_mean(_mae_terms(ctx, amp_scaled, X), axis=(1, 2, 3))


SIM_CHUNK = 256  # scan positions per gather, bounding the (chunk, N, W) row buffer


def sim_patches(ctx, obj, scan_positions):
    n = ctx.cfg.N
    # patch[y, x] = O(pos + (x, y) - N/2): the object moved by N/2 - pos, first N x N window.
    shifts = _const(ctx, n / 2) - scan_positions
    chunks = [translate_complex(obj[None], shifts[start : start + SIM_CHUNK], size=(n, n))
              for start in range(0, shifts.shape[0], SIM_CHUNK)]
    return tf.concat(chunks, axis=0)[..., None]


def sim_intensity_scale(ctx, wave):
    power = tf.math.real(wave) ** 2 + tf.math.imag(wave) ** 2
    per_pattern = tf.reduce_sum(power, axis=(1, 2, 3))
    return tf.sqrt(_const(ctx, ctx.cfg.nphotons) / tf.reduce_mean(per_pattern))


def sim_intensity(ctx, scale, amp):
    return (scale * amp) ** 2


STAGES = {
    "input_scaled": input_scaled,
    "encoder_block": encoder_block,
    "decoder_head": decoder_head,
    "object_patches": object_patches,
    "object_canvas": object_canvas,
    "object_trimmed": object_trimmed,
    "patches_extracted": patches_extracted,
    "probe_effective": probe_effective,
    "exit_wave": exit_wave,
    "farfield": farfield,
    "amplitude": amplitude,
    "amplitude_scaled": amplitude_scaled,
    "intensity": intensity,
    "loss_poisson": loss_poisson,
    "loss_poisson_per_sample": loss_poisson_per_sample,
    "loss_mae": loss_mae,
    "loss_mae_per_sample": loss_mae_per_sample,
    "sim_patches": sim_patches,
    "sim_intensity_scale": sim_intensity_scale,
    "sim_intensity": sim_intensity,
}
