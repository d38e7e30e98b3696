"""Stage functions traced once per configuration and input shape (``tf.function``).

Eager TensorFlow dispatches every op from Python and runs Keras layers through
their eager call path; a traced stage is one graph call. Each stage keeps its
own graph, so every tap stays a tensor the runner can read, tensors are still
freed after their last consumer, and ``with_stage`` replacements keep working
(a replaced stage runs eagerly: it may do anything, ``.numpy()`` included).

A concrete function is built per (stage function, stage arguments, input
shapes and dtypes) inside a per-configuration ``Runtime``; ``get_concrete_function``
with exact ``TensorSpec``s means exactly one trace per key, never a retrace.
Runner chunks all have one size but the last, so a chunked run traces each
stage at most twice. The network's Keras layers live in the same
``Runtime`` (one ``KerasNetwork`` per configuration, new weights assigned to
its variables), so a graph that captured them stays valid when the weights
change and the two are evicted together.

Numerics: the determinism switch turns off Grappler's arithmetic rewrites
(``backends.common.determinism``); traced stages are checked bitwise against
eager ones over every built-in case and the configuration matrix
(``tests/test_tf_tracing.py``), so mixing the two is safe. Tracing a stage
costs more than running it once, so by default (``PARITY_TF_TRACE=auto``) a
stage is traced the second time it runs with the same key, and runs eagerly
when its inputs exceed ``AUTO_MAX_INPUT_BYTES`` (large tensors ran slower in
graphs); ``always`` traces at once, ``never`` (or ``0``) runs everything eagerly.
"""

from __future__ import annotations

import collections
import dataclasses
import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import tensorflow as tf

from backends.common.backend import StageContext
from backends.common.config import ForwardConfig
from backends.common.weights import weights_fingerprint

from .network import KerasNetwork

MAX_RUNTIMES = 8  # configurations kept warm; a test session walks through dozens


POLICIES = {"auto": 1, "always": 0}  # eager calls of a key before it is traced; "never": not traced
# "auto" runs a stage eagerly when its inputs exceed this: on large tensors TensorFlow's graph
# executor ran the physics stages up to 1.8x slower than eager ops (a whole-model graph too),
# while per-op dispatch, the cost tracing saves, is negligible there. Measured on 2 CPU cores
# (N=64, gridsize 2): with this limit "auto" matched the faster of eager and traced at every
# batch from 16 to 1024, pinn and physics.
AUTO_MAX_INPUT_BYTES = 16 << 20


def tracing_policy(value: str | None = None) -> str:
    """``PARITY_TF_TRACE``: ``auto`` (default: trace a stage the second time it runs with the same key),
    ``always`` (trace at the first call) or ``never`` (eager; also ``0``/``off``)."""
    raw = (value if value is not None else os.environ.get("PARITY_TF_TRACE", "auto")).strip().lower()
    if raw in ("0", "false", "no", "off", "never", "eager"):
        return "never"
    if raw in ("", "1", "true", "yes", "on", "auto"):
        return "auto"
    if raw == "always":
        return "always"
    raise ValueError(f"PARITY_TF_TRACE must be auto, always or never, got {raw!r}")


@dataclasses.dataclass
class _Traced:
    function: Any  # a ConcreteFunction
    reads_params: bool  # the stage read ctx.params while tracing: load this run's weights before calling it


class Runtime:
    """Everything TensorFlow keeps per configuration: the network and the traced stages."""

    def __init__(self, cfg: ForwardConfig) -> None:
        self.cfg = cfg
        self.network: KerasNetwork | None = None
        self.loaded: str | None = None  # fingerprint of the weights in the network's variables
        self.traced: dict[tuple, _Traced] = {}
        self.eager_runs: dict[tuple, int] = {}

    def network_for(self, weights: Mapping[str, np.ndarray]) -> KerasNetwork:
        fingerprint = weights_fingerprint(weights)
        if self.network is None:
            self.network = KerasNetwork(self.cfg)
        if self.loaded != fingerprint:
            self.loaded = None  # a failed assignment leaves no stale fingerprint behind
            self.network.set_weights(weights)
            self.loaded = fingerprint
        return self.network

    def call(self, function: Callable[..., Any], ctx: StageContext, inputs: list[tf.Tensor],
             args: Mapping[str, Any], eager: Callable[[], tf.Tensor], eager_calls: int,
             max_input_bytes: int | None = None) -> tf.Tensor:
        """The stage's traced graph on ``inputs``; ``eager()`` instead for a key's first ``eager_calls`` calls
        and for inputs larger than ``max_input_bytes``.

        Tracing costs more than one eager run of a small stage, so by default a
        key is traced only when it comes back (a second chunk, a second run).
        """
        if max_input_bytes is not None and sum(
                tensor.shape.num_elements() * tensor.dtype.size for tensor in inputs) > max_input_bytes:
            return eager()
        key = (function, tuple(sorted(args.items())),
               tuple((tuple(tensor.shape.as_list()), tensor.dtype) for tensor in inputs))
        traced = self.traced.get(key)
        if traced is None:
            calls = self.eager_runs.get(key, 0)
            if calls < eager_calls:
                self.eager_runs[key] = calls + 1
                return eager()
            traced = self.traced[key] = self._trace(function, ctx, inputs, args)
            self.eager_runs.pop(key, None)
        elif traced.reads_params:
            ctx.params  # noqa: B018 - assigns this run's weights to the variables the graph reads
        return traced.function(*inputs)

    @staticmethod
    def _trace(function: Callable[..., Any], ctx: StageContext, inputs: list[tf.Tensor],
               args: Mapping[str, Any]) -> _Traced:
        read: list[bool] = []

        def params() -> Any:
            read.append(True)
            with tf.init_scope():  # build / load the network eagerly, outside the graph being traced
                return ctx.params

        # A fresh context: constants built while tracing are graph tensors and must not leak into the run's.
        trace_ctx = StageContext(cfg=ctx.cfg, build_params=params, device=ctx.device)

        @tf.function(autograph=False, reduce_retracing=False)
        def staged(*tensors: tf.Tensor) -> tf.Tensor:
            return function(trace_ctx, *tensors, **args)

        concrete = staged.get_concrete_function(*[tf.TensorSpec(t.shape, t.dtype) for t in inputs])
        return _Traced(concrete, bool(read))


class Runtimes:
    """Least recently used ``Runtime`` per configuration."""

    def __init__(self, size: int = MAX_RUNTIMES) -> None:
        self.size = size
        self._by_config: collections.OrderedDict[ForwardConfig, Runtime] = collections.OrderedDict()

    def __call__(self, cfg: ForwardConfig) -> Runtime:
        runtime = self._by_config.get(cfg)
        if runtime is None:
            runtime = self._by_config[cfg] = Runtime(cfg)
            while len(self._by_config) > self.size:
                self._by_config.popitem(last=False)
        else:
            self._by_config.move_to_end(cfg)
        return runtime

    def clear(self) -> None:
        self._by_config.clear()
