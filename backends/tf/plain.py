"""The forward model as plain TensorFlow: one ``tf.function``, no taps (the bench's yardstick).

This is how the model would be written without the harness: the network and
the physics called in sequence inside a single traced function that returns
only what a model returns (the predicted intensity and, for ``pinn``, the
losses). ``parity bench`` times the reference backend against it; the ratio
is the harness's cost (per-stage calls, every tap kept reachable, numpy in
and out).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import tensorflow as tf

from backends.common.backend import StageContext
from backends.common.config import ForwardConfig

from . import stages as s
from .network import KerasNetwork


def plain_forward(pipeline: str, cfg: ForwardConfig, weights: Mapping[str, np.ndarray] | None = None,
                  ) -> Callable[[Mapping[str, np.ndarray]], list[tf.Tensor]]:
    """``forward(inputs) -> outputs`` for the ``pinn`` or ``physics`` pipeline (canonical numpy inputs)."""
    network = KerasNetwork(cfg, weights) if pipeline == "pinn" else None
    ctx = StageContext(cfg=cfg, build_params=lambda: network, device="cpu")

    def physics(patches: tf.Tensor, positions: tf.Tensor, probe: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        canvas = s.object_canvas(ctx, patches, positions)
        wave = s.exit_wave(ctx, probe, s.patches_extracted(ctx, canvas, positions))
        scaled = s.amplitude_scaled(ctx, s.amplitude(ctx, s.farfield(ctx, wave)))
        return scaled, s.intensity(ctx, scaled)

    if pipeline == "pinn":
        @tf.function(autograph=False)
        def graph(X: tf.Tensor, positions: tf.Tensor, probe: tf.Tensor) -> list[tf.Tensor]:
            x = s.input_scaled(ctx, X)
            for index in range(cfg.depth):
                x = s.encoder_block(ctx, x, index)
            patches = s.object_patches(ctx, s.decoder_head(ctx, x, "amp"), s.decoder_head(ctx, x, "phase"))
            scaled, lam = physics(patches, positions, probe)
            return [lam, s.loss_poisson(ctx, lam, X), s.loss_mae(ctx, scaled, X)]

        names = ("X", "positions", "probe")
    elif pipeline == "physics":
        @tf.function(autograph=False)
        def graph(patches: tf.Tensor, positions: tf.Tensor, probe: tf.Tensor) -> list[tf.Tensor]:
            return [physics(patches, positions, probe)[1]]

        names = ("object_patches", "positions", "probe")
    else:
        raise ValueError(f"plain_forward covers the pinn and physics pipelines, not {pipeline!r}")

    def forward(inputs: Mapping[str, np.ndarray]) -> list[tf.Tensor]:
        with tf.device("/CPU:0"):
            return graph(*[tf.constant(inputs[name]) for name in names])

    return forward
