"""The forward model as plain PyTorch: the module and the physics called in sequence, no taps.

The bench's yardstick for the Torch backend (see ``backends.tf.plain``):
inputs converted to channels first once, the network and physics functions
called directly under ``no_grad``, only the model's outputs returned.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import torch

from backends.common.backend import StageContext
from backends.common.config import ForwardConfig

from . import stages as s
from .network import PtychoNet
from .state_dict import to_state_dict


def _channels_first(array: np.ndarray, device: str) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array)).to(device).permute(0, 3, 1, 2).contiguous()


def _offsets(positions: np.ndarray, device: str) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(positions)).to(device)[:, 0].transpose(1, 2).contiguous()


def plain_forward(pipeline: str, cfg: ForwardConfig, weights: Mapping[str, np.ndarray] | None = None,
                  device: str = "cpu") -> Callable[[Mapping[str, np.ndarray]], list[torch.Tensor]]:
    """``forward(inputs) -> outputs`` for the ``pinn`` or ``physics`` pipeline (canonical numpy inputs)."""
    network = None
    if pipeline == "pinn":
        network = PtychoNet(cfg)
        network.load_state_dict({k: torch.from_numpy(v) for k, v in to_state_dict(cfg, weights).items()})
        network = network.to(device).eval()
    elif pipeline != "physics":
        raise ValueError(f"plain_forward covers the pinn and physics pipelines, not {pipeline!r}")
    ctx = StageContext(cfg=cfg, build_params=lambda: network, device=device)

    def physics(patches: torch.Tensor, offsets: torch.Tensor, probe: torch.Tensor):
        canvas = s.object_canvas(ctx, patches, offsets)
        wave = s.exit_wave(ctx, probe, s.patches_extracted(ctx, canvas, offsets))
        scaled = s.amplitude_scaled(ctx, s.amplitude(ctx, s.farfield(ctx, wave)))
        return scaled, s.intensity(ctx, scaled)

    @torch.no_grad()
    def forward(inputs: Mapping[str, np.ndarray]) -> list[torch.Tensor]:
        offsets = _offsets(inputs["positions"], device)
        probe = torch.from_numpy(np.ascontiguousarray(inputs["probe"])).to(device)
        if pipeline == "physics":
            return [physics(_channels_first(inputs["object_patches"], device), offsets, probe)[1]]
        X = _channels_first(inputs["X"], device)
        x = s.input_scaled(ctx, X)
        for index in range(cfg.depth):
            x = network.encoder_block(index, x)
        patches = s.object_patches(ctx, network.decoder_head("amp", x), network.decoder_head("phase", x))
        scaled, lam = physics(patches, offsets, probe)
        return [lam, s.loss_poisson(ctx, lam, X), s.loss_mae(ctx, scaled, X)]

    return forward
