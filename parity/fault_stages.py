"""The stage functions of ``parity.faults``: each is the built-in Torch stage with one realistic port bug
(or an equivalent rewrite, for the refactors). Signatures are those of ``backends.torch.stages``.

Imports PyTorch (never TensorFlow); only ``Fault.candidate`` imports this module.
"""

from __future__ import annotations

import dataclasses

import torch
from torch.nn import functional as F

from backends.common.backend import StageContext
from backends.common.constants import CANVAS_EPSILON, centre_mask, disk_mask, gaussian_kernel_3x3
from backends.torch import stages as S
from backends.torch.ops import (centred_offsets, divide_complex_by_real, ordered_sum, scale_complex, smooth_3x3,
                                translate, translate_complex)


def _with_cfg(ctx: StageContext, **changes) -> StageContext:
    return dataclasses.replace(ctx, cfg=ctx.cfg.replace(**changes), cache={})


# ---- reassembly: the built-in object_canvas with one piece swapped ----

def _canvas(ctx, patches, shifts, *, mask=None, denominator=None, pad=None, translate_c=translate_complex,
            translate_r=translate):
    """object_canvas given the (B, C, 2) placement shifts; keyword pieces replace the built-in ones."""
    cfg = ctx.cfg
    k = cfg.k
    padded = F.pad(patches, pad or (k, k, k, k))
    batch, channels = patches.shape[0], cfg.C
    flat = shifts.reshape(batch * channels, 2)
    placed = translate_c(padded.reshape(batch * channels, cfg.P, cfg.P), flat).reshape(batch, channels, cfg.P, cfg.P)
    window = torch.as_tensor(centre_mask(cfg.N) if mask is None else mask, dtype=patches.real.dtype)
    coverage = translate_r(F.pad(window, pad or (k, k, k, k))[None], flat).reshape(batch, channels, cfg.P, cfg.P)
    numerator = ordered_sum([placed[:, c] for c in range(channels)])
    count = ordered_sum([coverage[:, c] for c in range(channels)])
    divisor = count + CANVAS_EPSILON if denominator is None else denominator(count)
    return divide_complex_by_real(numerator, divisor)[:, None]


def canvas_offset_sign(ctx, patches, offsets):
    return _canvas(ctx, patches, centred_offsets(offsets))


def canvas_offset_sign_x(ctx, patches, offsets):
    return S.object_canvas(ctx, patches, offsets * torch.tensor([-1.0, 1.0], dtype=offsets.dtype))


def canvas_offset_swap_xy(ctx, patches, offsets):
    return _canvas(ctx, patches, -centred_offsets(offsets.flip(-1)))


def canvas_channels_first_as_last(ctx, patches, offsets):
    b, c, h, w = patches.shape
    misread = patches.reshape(b, h, w, c).permute(0, 3, 1, 2)  # reshape where a permute was meant
    return _canvas(ctx, misread, -centred_offsets(offsets))


def canvas_flattened_offsets(ctx, patches, offsets):
    b, c, _ = offsets.shape
    misread = offsets.transpose(0, 1).reshape(b, c, 2)  # offsets flattened (C, B); patches are (B, C)
    return _canvas(ctx, patches, -centred_offsets(misread))


def canvas_wrong_count(ctx, patches, offsets):
    channels = float(ctx.cfg.C)
    return _canvas(ctx, patches, -centred_offsets(offsets), denominator=lambda count: channels + CANVAS_EPSILON)


def canvas_no_epsilon(ctx, patches, offsets):
    return _canvas(ctx, patches, -centred_offsets(offsets), denominator=lambda count: count)


def canvas_buffer_0(ctx, patches, offsets):
    return S.object_canvas(_with_cfg(ctx, buffer=0), patches, offsets)


def canvas_buffer_default(ctx, patches, offsets):
    """The canvas margin hard-coded at its default (10) whatever the configuration says: right in every
    case that keeps the default."""
    return S.object_canvas(_with_cfg(ctx, buffer=10), patches, offsets)


def canvas_wide_mask(ctx, patches, offsets):
    n = ctx.cfg.N
    mask = torch.zeros(n, n)
    mask[n // 4 - 1 : 3 * n // 4 + 1, n // 4 - 1 : 3 * n // 4 + 1] = 1.0
    return _canvas(ctx, patches, -centred_offsets(offsets), mask=mask.numpy())


def canvas_pad_off_by_one(ctx, patches, offsets):
    k = ctx.cfg.k
    return _canvas(ctx, patches, -centred_offsets(offsets), pad=(k + 1, k - 1, k + 1, k - 1))


def canvas_batch_centred(ctx, patches, offsets):
    return _canvas(ctx, patches, -(offsets - offsets.mean(dim=(0, 1), keepdim=True)))


LARGE_BATCH_PATCHES = 64


def canvas_shared_large_batch(ctx, patches, offsets):
    """Right for small batches; from 64 patches on, every sample's patches go onto one canvas shared by the
    batch (a path a port takes for large batches only: the built-in cases but one hold 2 samples)."""
    cfg = ctx.cfg
    if patches.shape[0] * cfg.C < LARGE_BATCH_PATCHES:
        return S.object_canvas(ctx, patches, offsets)
    k = cfg.k
    flat = (-centred_offsets(offsets)).reshape(-1, 2)
    placed = translate_complex(F.pad(patches, (k, k, k, k)).reshape(-1, cfg.P, cfg.P), flat)
    window = torch.as_tensor(centre_mask(cfg.N), dtype=patches.real.dtype)
    coverage = translate(F.pad(window, (k, k, k, k))[None], flat)
    shared = divide_complex_by_real(placed.sum(dim=0), coverage.sum(dim=0) + CANVAS_EPSILON)
    return shared.expand(patches.shape[0], 1, cfg.P, cfg.P).clone()


def _grid_translate(images, shifts):
    """Bilinear zero-fill translation through grid_sample (align_corners=True), coordinates in the image dtype."""
    batch = shifts.shape[0]
    height, width = images.shape[-2:]
    dtype = images.dtype
    rows = torch.arange(height, dtype=dtype)[None, :, None] - shifts[:, 1, None, None]
    cols = torch.arange(width, dtype=dtype)[None, None, :] - shifts[:, 0, None, None]
    grid = torch.stack([(2 * cols / (width - 1) - 1).expand(batch, height, width),
                        (2 * rows / (height - 1) - 1).expand(batch, height, width)], dim=-1)
    source = images.expand(batch, height, width) if images.shape[0] == 1 else images
    return F.grid_sample(source[:, None], grid, mode="bilinear", padding_mode="zeros", align_corners=True)[:, 0]


def _grid_translate_complex(images, shifts):
    return torch.complex(_grid_translate(images.real, shifts), _grid_translate(images.imag, shifts))


def canvas_grid_sample(ctx, patches, offsets):
    return _canvas(ctx, patches, -centred_offsets(offsets), translate_c=_grid_translate_complex,
                   translate_r=_grid_translate)


def trimmed_off_by_one(ctx, canvas):
    k, n = ctx.cfg.k, ctx.cfg.N
    return canvas[:, :, k + 1 : k + 1 + n, k + 1 : k + 1 + n]


def trimmed_transposed(ctx, canvas):
    return S.object_trimmed(ctx, canvas).transpose(-1, -2)


def trimmed_narrow(ctx, canvas):
    k, n = ctx.cfg.k, ctx.cfg.N
    return canvas.narrow(-2, k, n).narrow(-1, k, n)


# ---- extraction ----

def extracted_offset_sign(ctx, canvas, offsets):
    return S.patches_extracted(ctx, canvas, -offsets)


def extracted_column_major(ctx, canvas, offsets):
    g = ctx.cfg.gridsize
    order = [(c % g) * g + c // g for c in range(g * g)]
    return S.patches_extracted(ctx, canvas, offsets[:, order])


def extracted_ignores_offsets_single(ctx, canvas, offsets):
    if ctx.cfg.object_big:
        return S.patches_extracted(ctx, canvas, offsets)
    return S.patches_extracted(ctx, canvas, torch.zeros_like(offsets))


def sim_patches_swap_xy(ctx, obj, scan_positions):
    return S.sim_patches(ctx, obj, scan_positions.flip(-1))


# ---- illumination and far field ----

def probe_normalised_twice(ctx, probe):
    probe = probe / torch.sqrt(torch.sum(probe.real**2 + probe.imag**2))
    return S.probe_effective(ctx, probe)


def _disk(ctx):
    return torch.as_tensor(disk_mask(ctx.cfg.N), dtype=getattr(torch, ctx.cfg.dtype))


def exit_wave_mask_doubled(ctx, probe, patches):
    masked = scale_complex(probe, _disk(ctx)) if ctx.cfg.probe_mask else probe
    return S.exit_wave(ctx, masked, patches)


def exit_wave_mask_always(ctx, probe, patches):
    return scale_complex(S.exit_wave(ctx, probe, patches), _disk(ctx))


def exit_wave_replicate_padding(ctx, probe, patches):
    cfg = ctx.cfg
    wave = probe * patches
    if cfg.gaussian_sigma > 0:
        kernel = gaussian_kernel_3x3(cfg.gaussian_sigma)

        def smooth(images):
            height, width = images.shape[-2:]
            padded = F.pad(images, (1, 1, 1, 1), mode="replicate")
            return ordered_sum([float(kernel[dy, dx]) * padded[..., dy : dy + height, dx : dx + width]
                                for dy in range(3) for dx in range(3)])

        wave = torch.complex(smooth(wave.real), smooth(wave.imag))
    if cfg.probe_mask:
        wave = scale_complex(wave, _disk(ctx))
    return wave


def exit_wave_smoothing_default(ctx, probe, patches):
    """The port's own smoothing default (sigma 0.8) where the configuration says none."""
    return S.exit_wave(_with_cfg(ctx, gaussian_sigma=0.8), probe, patches)


def exit_wave_complex64(ctx, probe, patches):
    return S.exit_wave(_with_cfg(ctx, dtype="float32"), probe.to(torch.complex64), patches.to(torch.complex64))


def exit_wave_downcast(ctx, probe, patches):
    return exit_wave_complex64(ctx, probe, patches).to(probe.dtype)


def exit_wave_commuted(ctx, probe, patches):
    cfg = ctx.cfg
    wave = patches * probe
    if cfg.gaussian_sigma > 0:
        kernel = gaussian_kernel_3x3(cfg.gaussian_sigma)
        wave = torch.complex(smooth_3x3(wave.real, kernel), smooth_3x3(wave.imag, kernel))
    if cfg.probe_mask:
        wave = scale_complex(wave, _disk(ctx))
    return wave


def probe_where(ctx, probe):
    if not ctx.cfg.probe_mask:
        return probe
    return torch.where(_disk(ctx) > 0, probe, torch.zeros_like(probe))


def farfield_unnormalised(ctx, wave):
    return torch.fft.fft2(wave)


def farfield_norm_forward(ctx, wave):
    return torch.fft.fft2(wave, norm="forward")


def farfield_inverse(ctx, wave):
    return torch.fft.ifft2(wave) * ctx.cfg.N


def sim_patches_rounded(ctx, obj, scan_positions):
    return S.sim_patches(ctx, obj, torch.round(scan_positions))


def sim_patches_half_pixel(ctx, obj, scan_positions):
    return S.sim_patches(ctx, obj, scan_positions + 0.5)


def sim_patches_corner(ctx, obj, scan_positions):
    """Each scan position taken as its patch's top-left corner: obj[y:y+N, x:x+N] where the spec centres it."""
    return S.sim_patches(ctx, obj, scan_positions + ctx.cfg.N / 2)


def farfield_shifted_wave(ctx, wave):
    return S.farfield(ctx, torch.fft.fftshift(wave, dim=(-2, -1)))


def exit_wave_conjugate_patches(ctx, probe, patches):
    return S.exit_wave(ctx, probe, patches.conj())


def farfield_ortho(ctx, wave):
    return torch.fft.fft2(wave, norm="ortho")


def farfield_fftn(ctx, wave):
    return torch.fft.fftn(wave, dim=(-2, -1)) / ctx.cfg.N


def farfield_scales_input_in_place(ctx, wave):
    out = S.farfield(ctx, wave)
    wave.mul_(0.5)  # "free" the buffer by reusing it: the exit wave changes under later readers
    return out


def amplitude_no_fftshift(ctx, field):
    return torch.sqrt(field.real**2 + field.imag**2)


def amplitude_missing_sqrt(ctx, field):
    return torch.fft.fftshift(field.real**2 + field.imag**2, dim=(-2, -1))


def amplitude_abs(ctx, field):
    return torch.abs(torch.fft.fftshift(field, dim=(-2, -1)))


def amplitude_incoherent(ctx, field):
    """Two 'modes' (the far fields of the exit wave's real and imaginary parts) summed in intensity."""
    mirrored = torch.roll(torch.flip(field, dims=(-2, -1)), shifts=(1, 1), dims=(-2, -1)).conj()  # F*(-k)
    real_mode, imag_mode = (field + mirrored) / 2, (field - mirrored) / 2
    power = real_mode.abs() ** 2 + imag_mode.abs() ** 2
    return torch.sqrt(torch.fft.fftshift(power, dim=(-2, -1)))


def amplitude_scaled_dead(ctx, amp):
    return amp.clone()


def intensity_square(ctx, amp_scaled):
    return torch.square(amp_scaled)


def sim_intensity_uint16(ctx, scale, amp):
    root = torch.round(scale * amp).to(torch.int64)
    counts = (root * root) % 65536  # what uint16 arithmetic keeps
    return counts.to(amp.dtype)


# ---- network ----

def input_scaled_inverted(ctx, X):
    return X * ctx.cfg.intensity_scale


def input_scaled_reciprocal(ctx, X):
    return X * (1.0 / ctx.cfg.intensity_scale)


def input_scaled_negates_in_place(ctx, X):
    out = S.input_scaled(ctx, X)
    X.neg_()  # a sign convention applied to the caller's tensor
    return out


def _encoder(ctx, x, index, conv):
    block = ctx.params.encoder.blocks[index]
    x = F.relu(conv(F.relu(conv(x, block.conv0)), block.conv1))
    return F.max_pool2d(x, kernel_size=2, stride=2)


def encoder_kernel_transposed(ctx, x, index):
    return _encoder(ctx, x, index, lambda h, layer: F.conv2d(h, layer.weight.transpose(-1, -2), layer.bias, padding=1))


def encoder_kernel_flipped(ctx, x, index):
    return _encoder(ctx, x, index, lambda h, layer: F.conv2d(h, layer.weight.flip(-2, -1), layer.bias, padding=1))


def encoder_reflect_padding(ctx, x, index):
    return _encoder(ctx, x, index, lambda h, layer: F.conv2d(F.pad(h, (1, 1, 1, 1), mode="reflect"), layer.weight,
                                                             layer.bias))


def encoder_dropout_train(ctx, x, index):
    """Dropout(0.1) left in training mode after the block. The mask comes from numpy's PCG64, not Torch's RNG,
    so the fault is the same in every run (a port's real dropout also differs between runs: --repeat)."""
    from .synthetic import generator

    out = S.encoder_block(ctx, x, index)
    keep = torch.from_numpy(generator(17).uniform(size=tuple(out.shape)) >= 0.1).to(out.device)
    return torch.where(keep, out * (1.0 / 0.9), torch.zeros((), dtype=out.dtype, device=out.device))


def _tf32(tensor):
    """Round float32 to TF32 (10 explicit mantissa bits), nearest-even."""
    bits = tensor.contiguous().view(torch.int32)
    rounded = (bits + 0xFFF + ((bits >> 13) & 1)) & ~0x1FFF
    return rounded.view(torch.float32)


def encoder_tf32(ctx, x, index):
    return _encoder(ctx, x, index, lambda h, layer: F.conv2d(_tf32(h), _tf32(layer.weight), layer.bias, padding=1))


def encoder_attention(ctx, x, index):
    out = S.encoder_block(ctx, x, index)
    return out * torch.sigmoid(out.mean(dim=(-2, -1), keepdim=True))


def _decoder(ctx, x, head, activation=None, upsample="nearest"):
    module = ctx.params.decoder_amp if head == "amp" else ctx.params.decoder_phase
    cfg = ctx.cfg
    act = activation if activation is not None and head == "amp" else module.activation

    def block(layers, h):
        h = F.relu(layers.conv1(F.relu(layers.conv0(h))))
        return F.interpolate(h, scale_factor=2, mode=upsample)

    for layers in module.blocks:
        x = block(layers, x)
    if not cfg.pad_object:
        return act(module.conv2(block(module.final_block, x)))
    quarter = cfg.N // 4
    output = F.pad(act(module.conv1(x[:, :-4])), (quarter,) * 4)
    if cfg.probe_big:
        output = output + F.silu(module.conv2(block(module.final_block, x[:, -4:]))) * module.border
    return output


def decoder_swish(ctx, bottleneck, head):
    return _decoder(ctx, bottleneck, head, activation=F.silu)


def decoder_softplus_default(ctx, bottleneck, head):
    return _decoder(ctx, bottleneck, head, activation=F.softplus)


def decoder_bilinear(ctx, bottleneck, head):
    if head != "amp":
        return S.decoder_head(ctx, bottleneck, head)
    return _decoder(ctx, bottleneck, head, upsample="bilinear")


def object_patches_conjugate(ctx, amp, phase):
    return torch.complex(amp * torch.cos(phase), -amp * torch.sin(phase))


def object_patches_polar(ctx, amp, phase):
    return torch.polar(amp, phase)


def loss_mae_squared(ctx, amp_scaled, X):
    return torch.mean((amp_scaled - ctx.cfg.intensity_scale * X) ** 2)


def loss_mae_l1(ctx, amp_scaled, X):
    return F.l1_loss(amp_scaled, ctx.cfg.intensity_scale * X)

