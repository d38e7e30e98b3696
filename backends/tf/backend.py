"""The TensorFlow reference as a backend adapter."""

from __future__ import annotations

from collections.abc import Mapping

import keras
import numpy as np
import tensorflow as tf

from backends.common.backend import Backend
from backends.common.config import ForwardConfig
from backends.common.taps import TapSpec

from .network import KerasNetwork
from .stages import STAGES


class TensorFlowBackend(Backend):
    name = "tf"
    frameworks = ("tf",)
    STAGES = STAGES

    def __init__(self, device: str = "cpu") -> None:
        if device != "cpu":
            raise ValueError(f"the TensorFlow reference runs on the CPU only, not {device!r}")
        super().__init__(device)

    def to_internal(self, spec: TapSpec, cfg: ForwardConfig, array: np.ndarray) -> tf.Tensor:
        with tf.device("/CPU:0"):
            return tf.constant(np.asarray(array))

    def to_canonical(self, spec: TapSpec, cfg: ForwardConfig, tensor: tf.Tensor) -> np.ndarray:
        return np.asarray(tensor.numpy())

    def build_params(self, cfg: ForwardConfig, weights: Mapping[str, np.ndarray]) -> KerasNetwork:
        return KerasNetwork(cfg, weights)

    def versions(self) -> dict[str, str]:
        return {"tensorflow": tf.__version__, "keras": keras.__version__, "numpy": np.__version__}
