"""PyTorch stage table (channels first inside; the adapter converts at the tap).

Internal layouts: BHWC taps are (B, C, H, W); positions are (B, C, 2) with
[..., 0] = x; everything else is as canonical.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from backends.common.backend import StageContext
from backends.common.constants import (CANVAS_EPSILON, POISSON_EPSILON, centre_mask, disk_mask,
                                       gaussian_kernel_3x3)

from .ops import (centred_offsets, divide_complex_by_real, ordered_sum, scale_complex, smooth_3x3, translate,
                  translate_complex)


def _dtype(ctx: StageContext) -> torch.dtype:
    return getattr(torch, ctx.cfg.dtype)


def _tensor(ctx: StageContext, key: str, build) -> torch.Tensor:
    return ctx.constant(key, lambda: torch.as_tensor(build(), dtype=_dtype(ctx), device=ctx.device))


def _scalar(ctx: StageContext, value: float) -> torch.Tensor:
    return torch.tensor(value, dtype=_dtype(ctx), device=ctx.device)


def input_scaled(ctx, X):
    return X / _scalar(ctx, ctx.cfg.intensity_scale)


def encoder_block(ctx, x, index):
    return ctx.params.encoder_block(index, x)


def decoder_head(ctx, bottleneck, head):
    return ctx.params.decoder_head(head, bottleneck)


def object_patches(ctx, amp, phase):
    return torch.complex(amp * torch.cos(phase), amp * torch.sin(phase))


def object_canvas(ctx, patches, offsets):
    cfg = ctx.cfg
    k = cfg.k
    padded = F.pad(patches, (k, k, k, k))
    if not cfg.object_big:
        return padded
    batch, channels = patches.shape[0], cfg.C
    shifts = (-centred_offsets(offsets)).reshape(batch * channels, 2)
    placed = translate_complex(padded.reshape(batch * channels, cfg.P, cfg.P), shifts)
    placed = placed.reshape(batch, channels, cfg.P, cfg.P)
    mask = _tensor(ctx, "padded_centre_mask", lambda: centre_mask(cfg.N))
    coverage = translate(F.pad(mask, (k, k, k, k))[None], shifts).reshape(batch, channels, cfg.P, cfg.P)
    numerator = ordered_sum([placed[:, c] for c in range(channels)])
    denominator = ordered_sum([coverage[:, c] for c in range(channels)]) + _scalar(ctx, CANVAS_EPSILON)
    return divide_complex_by_real(numerator, denominator)[:, None]


def object_trimmed(ctx, canvas):
    k, n = ctx.cfg.k, ctx.cfg.N
    return canvas[:, :, k : k + n, k : k + n]


def patches_extracted(ctx, canvas, offsets):
    cfg = ctx.cfg
    batch, channels = canvas.shape[0], cfg.C
    shifts = centred_offsets(offsets).reshape(batch * channels, 2)
    # Each sample's canvas serves its C consecutive shifts (no C-fold copy of the canvas).
    crops = translate_complex(canvas[:, 0], shifts, start=(cfg.k, cfg.k), size=(cfg.N, cfg.N))
    return crops.reshape(batch, channels, cfg.N, cfg.N)


def probe_effective(ctx, probe):
    if not ctx.cfg.probe_mask:
        return probe
    return scale_complex(probe, _tensor(ctx, "disk_mask", lambda: disk_mask(ctx.cfg.N)))


def exit_wave(ctx, probe, patches):
    cfg = ctx.cfg
    wave = probe * patches  # (N, N) broadcasts over (B, C, N, N)
    if cfg.gaussian_sigma > 0:
        kernel = gaussian_kernel_3x3(cfg.gaussian_sigma)
        wave = torch.complex(smooth_3x3(wave.real, kernel), smooth_3x3(wave.imag, kernel))
    if cfg.probe_mask:
        wave = scale_complex(wave, _tensor(ctx, "disk_mask", lambda: disk_mask(cfg.N)))
    return wave


def farfield(ctx, wave):
    return scale_complex(torch.fft.fft2(wave), _scalar(ctx, 1.0 / ctx.cfg.N))


def amplitude(ctx, field):
    power = field.real**2 + field.imag**2
    return torch.sqrt(torch.fft.fftshift(power, dim=(-2, -1)))


def amplitude_scaled(ctx, amp):
    return _scalar(ctx, ctx.cfg.intensity_scale) * amp


def intensity(ctx, amp_scaled):
    return amp_scaled * amp_scaled


def _poisson_terms(ctx, lam, X):
    counts = (_scalar(ctx, ctx.cfg.intensity_scale) * X) ** 2
    return lam - counts * torch.log(lam + _scalar(ctx, POISSON_EPSILON))


def _mae_terms(ctx, amp_scaled, X):
    return torch.abs(amp_scaled - _scalar(ctx, ctx.cfg.intensity_scale) * X)


def loss_poisson(ctx, lam, X):
    return torch.mean(_poisson_terms(ctx, lam, X))


def loss_poisson_per_sample(ctx, lam, X):
    return torch.mean(_poisson_terms(ctx, lam, X), dim=(1, 2, 3))


def loss_mae(ctx, amp_scaled, X):
    return torch.mean(_mae_terms(ctx, amp_scaled, X))


def loss_mae_per_sample(ctx, amp_scaled, X):
    return torch.mean(_mae_terms(ctx, amp_scaled, X), dim=(1, 2, 3))


SIM_CHUNK = 256  # scan positions per gather, bounding the (chunk, N, W) row buffer


def sim_patches(ctx, obj, scan_positions):
    n = ctx.cfg.N
    shifts = _scalar(ctx, n / 2) - scan_positions
    chunks = [translate_complex(obj[None], shifts[start : start + SIM_CHUNK], size=(n, n))
              for start in range(0, shifts.shape[0], SIM_CHUNK)]
    return torch.cat(chunks, dim=0)[:, None]


def sim_intensity_scale(ctx, wave):
    per_pattern = torch.sum(wave.real**2 + wave.imag**2, dim=(1, 2, 3))
    return torch.sqrt(_scalar(ctx, ctx.cfg.nphotons) / torch.mean(per_pattern))


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
