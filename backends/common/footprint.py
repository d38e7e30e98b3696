"""Temporary memory each stage needs beyond its inputs and its output, in bytes.

Model knowledge for the harness's size estimate (``parity.budget``): the
registry gives every tap's shape, this gives what a stage allocates on the way
(convolution buffers, translated canvases, gather temporaries, FFT
workspace). Numbers are upper-bound-ish counts of arrays of the sizes the
backends really allocate (``backends/*/stages.py``), not measurements; they
exist so that absurd knob values are refused before an allocator fails, not to
predict RSS to the byte. All arithmetic is on Python ints: no overflow.
"""

from __future__ import annotations

import math

from .config import ForwardConfig
from .taps import TapSpec

IM2COL_TAPS = 9  # a 3 x 3 convolution may unfold its input 9-fold (Torch CPU, TF Eigen)
INDEX_BYTES = 8  # int64 gather indices


def _conv_bytes(batch: int, side: int, fan_in: int, fan_out: int, itemsize: int) -> int:
    """One 3 x 3 'same' convolution: the unfolded input plus its output."""
    return batch * side * side * (IM2COL_TAPS * fan_in + fan_out) * itemsize


def _encoder(cfg: ForwardConfig, batch: int, index: int, itemsize: int) -> int:
    side = cfg.N // 2**index
    fan_in = cfg.C if index == 0 else cfg.encoder_filters[index - 1]
    filters = cfg.encoder_filters[index]
    first = _conv_bytes(batch, side, fan_in, filters, itemsize)
    second = _conv_bytes(batch, side, filters, filters, itemsize) + batch * side * side * filters * itemsize
    return max(first, second)


def _decoder_head(cfg: ForwardConfig, batch: int, itemsize: int) -> int:
    """The largest layer of one head, plus the base output h it keeps for the last stage."""
    side = cfg.N // 2**cfg.depth
    fan_in = cfg.encoder_filters[-1]
    peak = 0
    for filters in cfg.decoder_filters:
        peak = max(peak, _conv_bytes(batch, side, fan_in, filters, itemsize),
                   _conv_bytes(batch, side, filters, filters, itemsize) + batch * (2 * side) ** 2 * filters * itemsize)
        side, fan_in = side * 2, filters
    h = batch * side * side * fan_in * itemsize  # (B, N/2, N/2, 32 f)
    final = cfg.final_block_filters
    if cfg.probe_big or not cfg.pad_object:
        width = 4 if cfg.pad_object else fan_in
        peak = max(peak, _conv_bytes(batch, side, width, final, itemsize),
                   _conv_bytes(batch, side, final, final, itemsize) + batch * (2 * side) ** 2 * final * itemsize,
                   _conv_bytes(batch, 2 * side, final, cfg.Co, itemsize))
    if cfg.pad_object:
        peak = max(peak, _conv_bytes(batch, side, fan_in, cfg.Co, itemsize))
    return peak + h


def _translate(batch: int, images: int, height: int, width: int, real: int, complex_: int) -> int:
    """Bilinear translation of ``images`` complex images: padded copies, ~8 real gathers, indices."""
    pixels = batch * images * height * width
    return pixels * (2 * complex_ + 8 * real) + batch * images * (height + width) * 4 * INDEX_BYTES


def stage_temporaries(spec: TapSpec, cfg: ForwardConfig, batch: int) -> int:
    """Bytes stage ``spec.stage`` allocates beyond its inputs and its output (0 for inputs)."""
    real = 4 if cfg.dtype == "float32" else 8
    complex_ = 2 * real
    n, p, c = cfg.N, cfg.P, cfg.C
    key = spec.stage
    if key is None:
        return 0
    if key == "encoder_block":
        return _encoder(cfg, batch, int(spec.args["index"]), real)
    if key == "decoder_head":
        return _decoder_head(cfg, batch, real)
    if key == "object_canvas":
        channels = c if cfg.object_big else 1
        return _translate(batch, channels, p, p, real, complex_) + 2 * batch * channels * p * p * real  # masks
    if key == "patches_extracted":
        return _translate(batch, c, p, p, real, complex_)
    if key == "sim_patches":
        return _translate(batch, 1, n, n, real, complex_)
    shape = spec.shape(cfg, batch)
    elements = math.prod(dim or 1 for dim in shape)
    # elementwise stages, FFTs, losses: a few arrays of the output's size (|x|^2, shifts, FFT workspace)
    return 3 * elements * (complex_ if spec.kind == "complex" else real) + batch * n * n * c * real
