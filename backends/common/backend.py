"""The framework-neutral part of a backend: running stages in registry order.

A concrete backend supplies a stage table (registry stage key -> function),
layout conversion between its internal tensors and canonical numpy arrays,
and a way to turn canonical weights into its parameters. Everything else
(stage order, which inputs a stage reads, freeing tensors after their last
use, tap delivery) lives here so both backends behave identically.

Stage functions have the signature ``fn(ctx, *inputs, **args)`` where the
inputs come in the order of ``TapSpec.inputs`` in the backend's internal
layout and ``args`` are the registry line's fixed arguments.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

from .config import ForwardConfig
from .taps import TapSpec, pipeline_inputs, pipeline_taps, tap_index
from .weights import weight_problems, weights_fingerprint

StageFn = Callable[..., Any]
TapSink = Callable[[TapSpec, np.ndarray], None]


class StageError(RuntimeError):
    """A stage raised; the message names the backend and the stage, ``tap`` the tap."""

    def __init__(self, message: str, tap: str | None = None) -> None:
        super().__init__(message)
        self.tap = tap


class WeightsError(ValueError):
    """Weights do not fit the configuration's network."""


@dataclasses.dataclass
class StageContext:
    """What a stage may read besides its inputs: configuration, parameters, device, constants.

    Parameters are built on first use, so stages that need none (everything
    but the network) run without weights.
    """

    cfg: ForwardConfig
    build_params: Callable[[], Any]
    device: str
    cache: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def params(self) -> Any:
        return self.constant("__params__", self.build_params)

    def constant(self, key: str, build: Callable[[], Any]) -> Any:
        """A per-run constant (mask, kernel), built on first use."""
        if key not in self.cache:
            self.cache[key] = build()
        return self.cache[key]


class Backend:
    """Base class of a backend adapter; see the module docstring."""

    name = "abstract"
    STAGES: Mapping[str, StageFn] = {}

    def __init__(self, device: str = "cpu") -> None:
        self.device = device
        self.stages: dict[str, StageFn] = dict(self.STAGES)
        self._params_key: tuple[str, str] | None = None
        self._params: Any = None

    # ---- hooks a concrete backend implements ----
    def to_internal(self, spec: TapSpec, cfg: ForwardConfig, array: np.ndarray) -> Any:
        raise NotImplementedError

    def to_canonical(self, spec: TapSpec, cfg: ForwardConfig, tensor: Any) -> np.ndarray:
        raise NotImplementedError

    def build_params(self, cfg: ForwardConfig, weights: Mapping[str, np.ndarray]) -> Any:
        raise NotImplementedError

    def versions(self) -> dict[str, str]:
        return {}

    def resolve_config(self, cfg: ForwardConfig) -> ForwardConfig:
        """The configuration this backend will actually run (audited by the harness)."""
        return cfg

    # ---- generic machinery ----
    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "class": f"{type(self).__module__}.{type(self).__qualname__}",
                "device": self.device, "versions": self.versions(), "stages_replaced": self.stages_replaced()}

    def stages_replaced(self) -> list[str]:
        """Stage keys that differ from the first backend in this class's ancestry that defined a table."""
        tables = [cls.__dict__["STAGES"] for cls in type(self).__mro__ if "STAGES" in cls.__dict__]
        original = tables[-2] if len(tables) > 1 else tables[-1]  # tables[-1] is Backend's empty one
        return sorted(key for key, fn in self.stages.items() if original.get(key) is not fn)

    def with_stage(self, key: str, fn: StageFn) -> Backend:
        """A copy of this backend whose stage ``key`` is ``fn`` (for fault injection and overrides)."""
        if key not in self.stages:
            raise KeyError(f"{self.name} has no stage {key!r}; stages: {sorted(self.stages)}")
        clone = copy.copy(self)
        clone.stages = dict(self.stages)
        clone.stages[key] = fn
        return clone

    def params_for(self, cfg: ForwardConfig, weights: Mapping[str, np.ndarray] | None) -> Any:
        if weights is None:
            raise WeightsError("the pinn pipeline needs weights")
        problems = weight_problems(cfg, weights)
        if problems:
            raise WeightsError("weights do not fit the configuration: " + "; ".join(problems))
        key = (cfg.hash(), weights_fingerprint(weights))
        if key != self._params_key:
            self._params, self._params_key = self.build_params(cfg, weights), key
        return self._params

    def _context(self, cfg: ForwardConfig, weights: Mapping[str, np.ndarray] | None) -> StageContext:
        return StageContext(cfg=cfg, build_params=lambda: self.params_for(cfg, weights), device=self.device)

    def _call(self, spec: TapSpec, ctx: StageContext, inputs: list[Any]) -> Any:
        try:
            function = self.stages[spec.stage]
        except KeyError:
            raise StageError(f"{self.name}: no stage {spec.stage!r} for tap {spec.name!r}", spec.name) from None
        try:
            return function(ctx, *inputs, **spec.args)
        except Exception as error:  # re-raised with the stage named
            raise StageError(f"{self.name} stage {spec.name!r} failed: {type(error).__name__}: {error}",
                             spec.name) from error

    def run_pipeline(self, pipeline: str, cfg: ForwardConfig, inputs: Mapping[str, np.ndarray],
                     weights: Mapping[str, np.ndarray] | None = None, sink: TapSink | None = None,
                     taps: Iterable[str] | None = None) -> None:
        """Run ``pipeline`` and hand each selected tap, canonical, to ``sink``.

        With no sink nothing is converted or copied; tensors are dropped after
        their last consumer, so only the live frontier of the graph is held.
        """
        specs = pipeline_taps(pipeline, cfg)
        ctx = self._context(cfg, weights)
        if pipeline == "pinn":
            ctx.params  # noqa: B018 - weight problems surface before the first stage runs
        env = {spec.name: self.to_internal(spec, cfg, inputs[spec.name]) for spec in pipeline_inputs(pipeline)}
        last_use: dict[str, int] = {}
        for position, spec in enumerate(specs):
            for name in spec.inputs:
                last_use[name] = position
        selected = None if taps is None else set(taps)
        for position, spec in enumerate(specs):
            value = self._call(spec, ctx, [env[name] for name in spec.inputs])
            if sink is not None and (selected is None or spec.name in selected):
                sink(spec, self.to_canonical(spec, cfg, value))
            if last_use.get(spec.name, -1) > position:
                env[spec.name] = value
            del value
            for name in spec.inputs:
                if last_use[name] == position:
                    env.pop(name, None)

    def run_all(self, pipeline: str, cfg: ForwardConfig, inputs: Mapping[str, np.ndarray],
                weights: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """Every tap of a run, canonical, in stage order (small runs only)."""
        collected: dict[str, np.ndarray] = {}
        self.run_pipeline(pipeline, cfg, inputs, weights, sink=lambda spec, value: collected.__setitem__(spec.name, value))
        return collected

    def run_stage(self, tap: str, pipeline: str, cfg: ForwardConfig, stage_inputs: Mapping[str, np.ndarray],
                  weights: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
        """Run the single stage producing ``tap`` on canonical inputs (isolated mode)."""
        index = tap_index(pipeline, cfg)
        spec = index[tap]
        if spec.is_input:
            raise KeyError(f"{tap!r} is a pipeline input, not a stage")
        missing = [name for name in spec.inputs if name not in stage_inputs]
        if missing:
            raise KeyError(f"stage {tap!r} needs inputs {missing}")
        ctx = self._context(cfg, weights)
        args = [self.to_internal(index[name], cfg, stage_inputs[name]) for name in spec.inputs]
        return self.to_canonical(spec, cfg, self._call(spec, ctx, args))
