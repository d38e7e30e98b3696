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
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

from .config import ForwardConfig
from .taps import TapSpec, pipeline_inputs, pipeline_taps, tap_index
from .weights import weight_problems, weights_fingerprint

StageFn = Callable[..., Any]
TapSink = Callable[[TapSpec, Any], None]


class StageError(RuntimeError):
    """A stage raised; the message names the backend and the stage, ``tap`` the tap."""

    def __init__(self, message: str, tap: str | None = None) -> None:
        super().__init__(message)
        self.tap = tap


class SetupError(RuntimeError):
    """The work before a run's first stage (building the network's parameters) raised: no stage is to blame."""


class InputMutatedError(StageError):
    """A stage changed one of its input tensors in place (its output may well be right)."""

    def __init__(self, tap: str, inputs: list[str], backend: str) -> None:
        names = ", ".join(repr(name) for name in inputs)
        super().__init__(f"{backend} stage {tap!r} modified its input {names} in place", tap)
        self.inputs = list(inputs)


class HandoverWatch:
    """Torch tensors' in-place counters when they were handed over, held weakly (numpy, TF: no counter).

    ``changed()`` names those written into since: alive after the run only where the adapter kept them
    (a cache), and what later stages read from them was not what was compared.
    """

    def __init__(self) -> None:
        self._handed: dict[str, tuple[weakref.ref, int]] = {}

    def add(self, name: str, value: Any) -> None:
        version = getattr(value, "_version", None)
        if isinstance(version, int):
            try:
                self._handed[name] = (weakref.ref(value), version)
            except TypeError:  # not weakly referable: not watched
                pass

    def changed(self) -> list[str]:
        found = []
        for name, (reference, version) in self._handed.items():
            tensor = reference()
            if tensor is not None and getattr(tensor, "_version", version) != version:
                found.append(name)
        return found


def _versions(values: list[Any]) -> list[int | None]:
    """Torch's per-tensor in-place counters (None for tensors without one: TF, numpy copies)."""
    return [getattr(value, "_version", None) for value in values]


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

    @staticmethod
    def check_weights(cfg: ForwardConfig, weights: Mapping[str, np.ndarray] | None) -> Mapping[str, np.ndarray]:
        """``weights`` if they fit the configuration's network, else a WeightsError saying why."""
        if weights is None:
            raise WeightsError("the pinn pipeline needs weights")
        problems = weight_problems(cfg, weights)
        if problems:
            raise WeightsError("weights do not fit the configuration: " + "; ".join(problems))
        return weights

    def params_for(self, cfg: ForwardConfig, weights: Mapping[str, np.ndarray] | None) -> Any:
        self.check_weights(cfg, weights)
        key = (cfg.hash(), weights_fingerprint(weights))
        if key != self._params_key:
            try:
                built = self.build_params(cfg, weights)
            except Exception as error:  # e.g. a build_params of a port's own that cannot load the weights
                raise SetupError(f"{self.name}: building its parameters (build_params) raised "
                                 f"{type(error).__name__}: {error}") from error
            self._params, self._params_key = built, key
        return self._params

    def _context(self, cfg: ForwardConfig, weights: Mapping[str, np.ndarray] | None) -> StageContext:
        return StageContext(cfg=cfg, build_params=lambda: self.params_for(cfg, weights), device=self.device)

    def graph(self, pipeline: str, cfg: ForwardConfig) -> list[TapSpec]:
        """The taps this backend computes, in stage order, each with the inputs it reads (the registry's)."""
        return pipeline_taps(pipeline, cfg)

    def to_canonical_native(self, spec: TapSpec, cfg: ForwardConfig, tensor: Any) -> Any:
        """The tap in the canonical layout, in the backend's own tensor type where that is cheaper (a view).

        Sinks that set ``accepts_tensors = True`` get this instead of a numpy copy.
        """
        return self.to_canonical(spec, cfg, tensor)

    def _stage_function(self, spec: TapSpec) -> StageFn:
        try:
            return self.stages[spec.stage]
        except KeyError:
            raise StageError(f"{self.name}: no stage {spec.stage!r} for tap {spec.name!r}", spec.name) from None

    def _invoke(self, spec: TapSpec, ctx: StageContext, inputs: list[Any]) -> Any:
        return self._stage_function(spec)(ctx, *inputs, **spec.args)

    def _call(self, spec: TapSpec, ctx: StageContext, inputs: list[Any]) -> Any:
        """Run one stage; returns (value, names of inputs it modified in place)."""
        before = _versions(inputs)
        try:
            value = self._invoke(spec, ctx, inputs)
        except StageError:
            raise
        except Exception as error:  # re-raised with the stage named
            raise StageError(f"{self.name} stage {spec.name!r} failed: {type(error).__name__}: {error}",
                             spec.name) from error
        mutated = [name for name, old, new in zip(spec.inputs, before, _versions(inputs))
                   if old is not None and new != old]
        return value, mutated

    def run_pipeline(self, pipeline: str, cfg: ForwardConfig, inputs: Mapping[str, np.ndarray],
                     weights: Mapping[str, np.ndarray] | None = None, sink: TapSink | None = None,
                     taps: Iterable[str] | None = None) -> None:
        """Run ``pipeline`` and hand each selected tap, canonical, to ``sink``.

        With no sink nothing is converted or copied; tensors are dropped after
        their last consumer, so only the live frontier of the graph is held.
        """
        specs = self.graph(pipeline, cfg)
        ctx = self._context(cfg, weights)
        self._prepare(pipeline, cfg, weights, ctx)
        env = {spec.name: self.to_internal(spec, cfg, inputs[spec.name]) for spec in pipeline_inputs(pipeline)}
        last_use: dict[str, int] = {}
        for position, spec in enumerate(specs):
            for name in spec.inputs:
                last_use[name] = position
        selected = None if taps is None else set(taps)
        native = getattr(sink, "accepts_tensors", False)
        on_mutation = getattr(sink, "input_mutated", None)
        on_change = getattr(sink, "changed_after_handover", None)
        handed = HandoverWatch()
        for position, spec in enumerate(specs):
            value, mutated = self._call(spec, ctx, [env[name] for name in spec.inputs])
            if mutated and on_mutation is not None:
                on_mutation(spec, mutated)
            if sink is not None and (selected is None or spec.name in selected):
                convert = self.to_canonical_native if native else self.to_canonical
                sink(spec, convert(spec, cfg, value))
                if on_change is not None:
                    handed.add(spec.name, value)
            if last_use.get(spec.name, -1) > position:
                env[spec.name] = value
            del value
            for name in spec.inputs:
                if last_use[name] == position:
                    env.pop(name, None)
        for name in handed.changed():
            on_change(name)

    def _prepare(self, pipeline: str, cfg: ForwardConfig, weights: Mapping[str, np.ndarray] | None,
                 ctx: StageContext) -> None:
        """Work before the first stage of a run: weight problems surface here, not mid-pipeline."""
        if pipeline == "pinn":
            ctx.params  # noqa: B018

    def run_all(self, pipeline: str, cfg: ForwardConfig, inputs: Mapping[str, np.ndarray],
                weights: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """Every tap of a run, canonical, in stage order (small runs only)."""
        collected: dict[str, np.ndarray] = {}
        self.run_pipeline(pipeline, cfg, inputs, weights, sink=lambda spec, value: collected.__setitem__(spec.name, value))
        return collected

    def run_stage(self, tap: str, pipeline: str, cfg: ForwardConfig, stage_inputs: Mapping[str, np.ndarray],
                  weights: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
        """Run the single stage producing ``tap`` on canonical inputs (isolated mode).

        Raises ``InputMutatedError`` when the stage changed one of its inputs in place.
        """
        index = tap_index(pipeline, cfg)
        graph = {spec.name: spec for spec in self.graph(pipeline, cfg)}
        if tap not in graph:
            if tap in index and index[tap].is_input:
                raise KeyError(f"{tap!r} is a pipeline input, not a stage")
            raise NotImplementedError(f"{self.name} does not compute {tap!r}")
        spec = graph[tap]
        missing = [name for name in spec.inputs if name not in stage_inputs]
        if missing:
            raise KeyError(f"stage {tap!r} needs inputs {missing}")
        ctx = self._context(cfg, weights)
        specs_by_name = {**index, **graph}
        args = [self.to_internal(specs_by_name[name], cfg, stage_inputs[name]) for name in spec.inputs]
        value, mutated = self._call(spec, ctx, args)
        if mutated:
            raise InputMutatedError(tap, mutated, self.name)
        return self.to_canonical(spec, cfg, value)
