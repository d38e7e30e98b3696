"""The TensorFlow reference as a backend adapter."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from backends.common.backend import Backend
from backends.common.config import ForwardConfig
from backends.common.taps import TapSpec

from .network import KerasNetwork
from .stages import STAGES
from .tracing import AUTO_MAX_INPUT_BYTES, POLICIES, Runtimes, tracing_policy

# Only the stock stage functions are traced; a replacement (with_stage, a subclass's table) runs eagerly.
TRACEABLE = frozenset(STAGES.values())


class TensorFlowBackend(Backend):
    name = "tf"
    frameworks = ("tf",)
    STAGES = STAGES

    def __init__(self, device: str = "cpu", trace: str | None = None) -> None:
        """``trace``: ``auto``, ``always`` or ``never`` (default: ``PARITY_TF_TRACE``, else ``auto``)."""
        if device != "cpu":
            raise ValueError(f"the TensorFlow reference runs on the CPU only, not {device!r}")
        super().__init__(device)
        self.trace = tracing_policy(trace)
        self._runtimes = Runtimes()

    def to_internal(self, spec: TapSpec, cfg: ForwardConfig, array: np.ndarray) -> tf.Tensor:
        with tf.device("/CPU:0"):
            return tf.constant(np.asarray(array))

    def to_canonical(self, spec: TapSpec, cfg: ForwardConfig, tensor: tf.Tensor) -> np.ndarray:
        return np.asarray(tensor.numpy())

    def build_params(self, cfg: ForwardConfig, weights: Mapping[str, np.ndarray]) -> KerasNetwork:
        return self._runtimes(cfg).network_for(weights)

    def params_for(self, cfg: ForwardConfig, weights: Mapping[str, np.ndarray] | None) -> KerasNetwork:
        """The configuration's one network with ``weights`` assigned (traced graphs hold its variables)."""
        return self.build_params(cfg, self.check_weights(cfg, weights))

    def _invoke(self, spec: TapSpec, ctx: Any, inputs: list[Any]) -> Any:
        """The stage, traced once it repeats (``backends/tf/tracing.py``); Backend._call names its errors."""
        function = self.stages.get(spec.stage)
        with tf.device("/CPU:0"):
            if not (self.trace in POLICIES and function in TRACEABLE
                    and all(isinstance(x, tf.Tensor) for x in inputs)):
                return super()._invoke(spec, ctx, inputs)
            return self._runtimes(ctx.cfg).call(function, ctx, inputs, spec.args,
                                                eager=lambda: super(TensorFlowBackend, self)._invoke(spec, ctx, inputs),
                                                eager_calls=POLICIES[self.trace],
                                                max_input_bytes=AUTO_MAX_INPUT_BYTES if self.trace == "auto"
                                                else None)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "tracing": self.trace}

    def versions(self) -> dict[str, str]:
        return {"tensorflow": tf.__version__, "keras": keras.__version__, "numpy": np.__version__}
