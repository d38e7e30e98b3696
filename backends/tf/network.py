"""The spec's CNN as Keras 3 layers (channels last).

``KerasNetwork`` owns one named layer per canonical parameter prefix; the
stage functions call its ``encoder_block`` / ``decoder_head`` on eager
tensors, and ``keras_model()`` wires the same layers into a functional model
so that a real Keras weights file can be saved and loaded.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import keras
import numpy as np
from keras import layers, ops

from backends.common.config import ForwardConfig
from backends.common.constants import border_mask
from backends.common.weights import CROPPED_FEATURES, HEADS, weight_specs


def keras_layer_name(prefix: str) -> str:
    """Canonical prefix 'decoder.amp.block0.conv1' -> Keras layer name 'decoder_amp_block0_conv1'."""
    return prefix.replace(".", "_")


def in_block(prefix: str) -> bool:
    """Convolutions inside conv-conv blocks carry a ReLU; the heads' output convolutions don't."""
    return "block" in prefix.split(".")[-2]


def amplitude_activation(name: str):
    return {"sigmoid": ops.sigmoid, "swish": ops.silu, "softplus": ops.softplus, "relu": ops.relu}[name]


class KerasNetwork:
    def __init__(self, cfg: ForwardConfig, weights: Mapping[str, np.ndarray] | None = None) -> None:
        self.cfg = cfg
        self.layers: dict[str, layers.Conv2D] = {}
        for name, shape in weight_specs(cfg):
            prefix = name.rsplit(".", 1)[0]
            if prefix in self.layers:
                continue
            activation = "relu" if in_block(prefix) else None
            layer = layers.Conv2D(shape[3], 3, padding="same", activation=activation, use_bias=True,
                                  name=keras_layer_name(prefix), dtype=cfg.dtype)
            layer.build((None, None, None, shape[2]))
            self.layers[prefix] = layer
        self.pool = layers.MaxPooling2D(pool_size=2, strides=2, padding="valid", dtype=cfg.dtype)
        self.upsample = layers.UpSampling2D(size=2, interpolation="nearest", dtype=cfg.dtype)
        self._border = border_mask(cfg.N).astype(cfg.dtype)[None, :, :, None]
        if weights is not None:
            self.set_weights(weights)

    def set_weights(self, weights: Mapping[str, np.ndarray]) -> None:
        for prefix, layer in self.layers.items():
            layer.set_weights([np.asarray(weights[f"{prefix}.kernel"]), np.asarray(weights[f"{prefix}.bias"])])

    def get_weights(self) -> dict[str, np.ndarray]:
        weights = {}
        for prefix, layer in self.layers.items():
            kernel, bias = layer.get_weights()
            weights[f"{prefix}.kernel"], weights[f"{prefix}.bias"] = kernel, bias
        return weights

    def _block(self, prefix: str, x, resample):
        x = self.layers[f"{prefix}.conv0"](x)
        x = self.layers[f"{prefix}.conv1"](x)
        return resample(x)

    def encoder_block(self, index: int, x):
        return self._block(f"encoder.block{index}", x, self.pool)

    def decoder_head(self, head: str, bottleneck):
        cfg = self.cfg
        prefix = f"decoder.{head}"
        x = bottleneck
        for index in range(len(cfg.decoder_filters)):
            x = self._block(f"{prefix}.block{index}", x, self.upsample)
        act = amplitude_activation(cfg.amp_activation) if head == "amp" else (lambda v: math.pi * ops.tanh(v))
        if not cfg.pad_object:
            return act(self.layers[f"{prefix}.conv2"](self._block(f"{prefix}.final_block", x, self.upsample)))
        quarter = cfg.N // 4
        centre = act(self.layers[f"{prefix}.conv1"](x[..., :-CROPPED_FEATURES]))
        output = ops.pad(centre, [[0, 0], [quarter, quarter], [quarter, quarter], [0, 0]])
        if cfg.probe_big:
            border = self._block(f"{prefix}.final_block", x[..., -CROPPED_FEATURES:], self.upsample)
            border = ops.silu(self.layers[f"{prefix}.conv2"](border)) * self._border
            output = output + border
        return output

    def keras_model(self) -> keras.Model:
        """A functional model over the same layers: X-shaped input -> (amp, phase)."""
        cfg = self.cfg
        inputs = keras.Input((cfg.N, cfg.N, cfg.C), dtype=cfg.dtype, name="input_scaled")
        x = inputs
        for index in range(cfg.depth):
            x = self.encoder_block(index, x)
        outputs = [self.decoder_head(head, x) for head in HEADS]
        return keras.Model(inputs, outputs, name="ptycho_forward")
