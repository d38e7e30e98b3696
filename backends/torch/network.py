"""The spec's CNN as a PyTorch module (channels first), named as a port would.

Parameter names are the port's own (``encoder.blocks.0.conv0.weight``);
``backends.torch.state_dict`` maps them to and from the canonical names.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from backends.common.config import ForwardConfig
from backends.common.constants import border_mask
from backends.common.weights import CROPPED_FEATURES

def softplus(x: torch.Tensor) -> torch.Tensor:
    """log(1 + e^x), switching to x where the correction is below the dtype's precision.

    F.softplus's default switch (x > 20) drops e^-20 ~ 2e-9, far above float64
    precision; -(log(eps) + 2) (34 in float64, 14 in float32) does not, and is
    the switch TensorFlow uses.
    """
    threshold = -(math.log(torch.finfo(x.dtype).eps) + 2.0)
    return F.softplus(x, beta=1.0, threshold=threshold)


ACTIVATIONS = {"sigmoid": torch.sigmoid, "swish": F.silu, "softplus": softplus, "relu": F.relu}


def _conv(fan_in: int, fan_out: int, dtype: torch.dtype) -> nn.Conv2d:
    return nn.Conv2d(fan_in, fan_out, kernel_size=3, padding=1, bias=True, dtype=dtype)


class ConvBlock(nn.Module):
    """conv 3x3 + ReLU, conv 3x3 + ReLU, then a 2x resampling (pool or upsample)."""

    def __init__(self, fan_in: int, filters: int, resample: str, dtype: torch.dtype) -> None:
        super().__init__()
        self.conv0 = _conv(fan_in, filters, dtype)
        self.conv1 = _conv(filters, filters, dtype)
        self.resample = resample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(F.relu(self.conv0(x))))
        if self.resample == "pool":
            return F.max_pool2d(x, kernel_size=2, stride=2)
        return F.interpolate(x, scale_factor=2, mode="nearest")


class Encoder(nn.Module):
    def __init__(self, cfg: ForwardConfig, dtype: torch.dtype) -> None:
        super().__init__()
        fan_in = cfg.C
        blocks = []
        for filters in cfg.encoder_filters:
            blocks.append(ConvBlock(fan_in, filters, "pool", dtype))
            fan_in = filters
        self.blocks = nn.ModuleList(blocks)


class DecoderHead(nn.Module):
    def __init__(self, cfg: ForwardConfig, head: str, dtype: torch.dtype) -> None:
        super().__init__()
        self.cfg = cfg
        self.head = head
        fan_in = cfg.encoder_filters[-1]
        blocks = []
        for filters in cfg.decoder_filters:
            blocks.append(ConvBlock(fan_in, filters, "upsample", dtype))
            fan_in = filters
        self.blocks = nn.ModuleList(blocks)
        if cfg.pad_object:
            self.conv1 = _conv(cfg.features - CROPPED_FEATURES, cfg.Co, dtype)
        if cfg.probe_big or not cfg.pad_object:
            block_in = CROPPED_FEATURES if cfg.pad_object else cfg.features
            self.final_block = ConvBlock(block_in, cfg.final_block_filters, "upsample", dtype)
            self.conv2 = _conv(cfg.final_block_filters, cfg.Co, dtype)
        self.register_buffer("border", torch.tensor(border_mask(cfg.N), dtype=dtype), persistent=False)

    def activation(self, x: torch.Tensor) -> torch.Tensor:
        if self.head == "amp":
            return ACTIVATIONS[self.cfg.amp_activation](x)
        return math.pi * torch.tanh(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        for block in self.blocks:
            x = block(x)
        if not cfg.pad_object:
            return self.activation(self.conv2(self.final_block(x)))
        quarter = cfg.N // 4
        output = F.pad(self.activation(self.conv1(x[:, :-CROPPED_FEATURES])), (quarter,) * 4)
        if cfg.probe_big:
            border = F.silu(self.conv2(self.final_block(x[:, -CROPPED_FEATURES:])))
            output = output + border * self.border
        return output


class PtychoNet(nn.Module):
    def __init__(self, cfg: ForwardConfig) -> None:
        super().__init__()
        self.cfg = cfg  # what the parameters were built for: their canonical names (canonical_weights)
        dtype = getattr(torch, cfg.dtype)
        self.encoder = Encoder(cfg, dtype)
        self.decoder_amp = DecoderHead(cfg, "amp", dtype)
        self.decoder_phase = DecoderHead(cfg, "phase", dtype)

    def encoder_block(self, index: int, x: torch.Tensor) -> torch.Tensor:
        return self.encoder.blocks[index](x)

    def decoder_head(self, head: str, x: torch.Tensor) -> torch.Tensor:
        return (self.decoder_amp if head == "amp" else self.decoder_phase)(x)
