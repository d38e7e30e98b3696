"""The adapter kit: wrap your own model as a parity adapter with one decorated method per tap.

```python
from parity import PluginAdapter, tap

class MyPort(PluginAdapter):
    frameworks = ("torch",)                      # determinism switch; tensors handed in as torch
    layouts = {"BHWC": "BCHW", "positions": "BC12", "probe": "11HW"}
    not_provided = {"farfield": "fused with the modulus"}

    def setup(self, cfg, weights):                # once per configuration (and weights)
        self.model = build_my_model(cfg.N, cfg.gridsize)

    @tap("object.canvas", inputs=("object_patches", "positions"))
    def canvas(self, patches, positions):
        return self.model.reassemble(patches, positions)

    @tap("amplitude", inputs=("exit_wave",))      # reads exit_wave: my FFT and modulus are one step
    def amplitude(self, wave):
        return self.model.diffract(wave)
```

The harness supplies ``run_pipeline`` (the adapter's own graph, in registry order), ``run_stage``
(isolated mode), ``describe``, construction with ``device``, layout conversion (declared per tensor
name, or per canonical layout as in ``"BHWC": "BCHW"``; a ``parity.Layout`` for anything a string
cannot say) and the configuration (``self.cfg``, also passed to ``setup``). A registry tap that has
no method is reported as not compared (say why in ``not_provided``); a knob the port fixes is
declared in ``knobs`` and audited per knob.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from backends.common.backend import Backend, StageContext, StageError
from backends.common.config import DEFAULTS, ConfigError, ForwardConfig, resolve_config
from backends.common.taps import (TapSpec, canonical_layouts, matches_a_tap, pipeline_inputs, pipeline_taps,
                                  registry_tap_names, tap_name_hints, tensor_names)
from backends.common.weights import weights_fingerprint

from .engines import to_numpy
from .errors import AdapterSetupError, did_you_mean
from .guard import describe_exception
from .layouts import Layout, LayoutError, as_layout

TENSOR_KINDS = ("numpy", "torch", "tf")


@dataclasses.dataclass(frozen=True)
class TapDeclaration:
    names: tuple[str, ...]  # tap names or globs; several names: the method returns one value per name
    inputs: tuple[str, ...] | None  # None: the registry's inputs
    layout: str | Layout | None


def _is_glob(pattern: str) -> bool:
    return any(character in pattern for character in "*?[")


def _inherited_declaration(cls: type, attribute: str) -> TapDeclaration | None:
    """A subclass that overrides a ``@tap`` method without the decorator (to try a fix, to inject a bug)
    means the same tap: the nearest base's declaration stands."""
    for base in cls.__mro__[1:]:
        if attribute in vars(base):
            declaration = getattr(vars(base)[attribute], "__parity_tap__", None)
            if isinstance(declaration, TapDeclaration):
                return declaration
    return None


def tap(*names: str, inputs: Sequence[str] | None = None, layout: str | Layout | None = None) -> Callable:
    """Mark a method as the stage that computes the tap(s) ``names``.

    ``inputs``: the named tensors the method reads, in argument order (default: the registry's),
    which may skip registry taps. ``layout``: the layout of the returned tensor(s). A glob name
    (``"encoder.block*"``) serves every matching tap; the method then gets ``tap=<name>``.
    """
    if not names or not all(isinstance(name, str) and name for name in names):
        raise TypeError("@tap needs at least one tap name, e.g. @tap('object.canvas')")

    def mark(method: Callable) -> Callable:
        method.__parity_tap__ = TapDeclaration(tuple(names), None if inputs is None else tuple(inputs), layout)
        return method

    return mark


class PluginAdapter(Backend):
    """Base class of a user's adapter; see the module docstring."""

    name = ""
    frameworks: tuple[str, ...] = ()
    tensors: str | None = None  # what tap methods receive: numpy, torch or tf (default: frameworks[0] or numpy)
    layouts: Mapping[str, str | Layout] = {}
    not_provided: Mapping[str, str] = {}
    knobs: Mapping[str, Any] = {}

    def __init__(self, device: str = "cpu") -> None:
        super().__init__(device)
        self.name = self.name or type(self).__name__
        self.cfg: ForwardConfig | None = None
        self.weights: Mapping[str, np.ndarray] | None = None
        self._setup_key: tuple[str, str] | None = None
        self._methods = self._collect()
        kind = self.tensors or next((fw for fw in self.frameworks if fw in TENSOR_KINDS), "numpy")
        if kind not in TENSOR_KINDS:
            raise ValueError(f"{self.name}: tensors = {kind!r}; expected one of {TENSOR_KINDS}")
        self.tensor_kind = kind
        self._check_names()
        self._layouts = {key: as_layout(value) for key, value in dict(self.layouts).items()}

    def _check_names(self) -> None:
        """A misspelt name would be silently ignored (a tap never compared, a layout never applied): refuse it."""
        tensors, layouts = tensor_names(), canonical_layouts()
        for declaration, method in self._methods:
            for pattern in declaration.names:
                if not matches_a_tap(pattern):
                    raise ValueError(f"{self.name}: @tap({pattern!r}) on {method.__name__}() names no tap of the "
                                     f"registry{did_you_mean(pattern, tap_name_hints())}; expected a tap name or "
                                     "glob (docs/adapters.md lists them)")
        for key in dict(self.layouts):
            if key not in tensors and key not in layouts:
                raise ValueError(f"{self.name}: layouts key {key!r} is neither a tap, an input nor a canonical "
                                 f"layout{did_you_mean(key, tensors | layouts)}; expected e.g. a layout such as "
                                 f"{sorted(layouts)[:4]} or a tensor name")
        for key in dict(self.not_provided):
            if key not in registry_tap_names():
                raise ValueError(f"{self.name}: not_provided key {key!r} names no tap of the registry"
                                 f"{did_you_mean(key, tap_name_hints())}; expected a tap name")
        for key in dict(self.knobs):
            if key not in DEFAULTS:
                raise ValueError(f"{self.name}: knobs key {key!r} is no knob of the configuration"
                                 f"{did_you_mean(key, set(DEFAULTS))}; expected one of {sorted(DEFAULTS)}")
        try:  # a value the configuration cannot take is refused now, not as a failed audit of every case
            resolve_config(dict(DEFAULTS) | dict(self.knobs))
        except ConfigError as error:
            raise ValueError(f"{self.name}: knobs {dict(self.knobs)!r}: {error}") from None

    # ---- hooks for the user ----
    def setup(self, cfg: ForwardConfig, weights: Mapping[str, np.ndarray] | None) -> None:
        """Build what the taps need for ``cfg`` (a model, a global parameter dict); called when it changes."""

    def resolve_config(self, cfg: ForwardConfig) -> ForwardConfig:
        return cfg.replace(**dict(self.knobs)) if self.knobs else cfg

    # ---- declarations ----
    def _collect(self) -> list[tuple[TapDeclaration, Callable]]:
        """The ``@tap`` methods, most derived class first (a subclass's method for a tap serves it, whatever
        its name); within one class, exact names before globs. Two methods of one class that both name the
        same tap exactly are refused: which one the run would call is not written anywhere."""
        cls = type(self)
        found = []
        for attribute in dir(cls):
            member = getattr(cls, attribute, None)
            declaration = getattr(member, "__parity_tap__", None)
            if declaration is None and callable(member):
                declaration = _inherited_declaration(cls, attribute)
            if isinstance(declaration, TapDeclaration):
                level = next(index for index, base in enumerate(cls.__mro__) if attribute in vars(base))
                globbed = all(_is_glob(name) for name in declaration.names)
                found.append(((level, globbed, attribute), declaration, getattr(self, attribute)))
        found.sort(key=lambda item: item[0])
        owners: dict[tuple[int, str], str] = {}
        for (level, _, attribute), declaration, _ in found:
            for name in declaration.names:
                if _is_glob(name):
                    continue
                other = owners.setdefault((level, name), attribute)
                if other != attribute:
                    raise ValueError(f"{self.name}: tap {name!r} is declared by two methods of "
                                     f"{cls.__mro__[level].__name__}, {other}() and {attribute}(); expected one "
                                     "method per tap (a subclass's method replaces its base's)")
        return [(declaration, method) for _, declaration, method in found]

    def _method_for(self, name: str) -> tuple[TapDeclaration, Callable, int] | None:
        for declaration, method in self._methods:
            for position, pattern in enumerate(declaration.names):
                if pattern == name or (_is_glob(pattern) and fnmatch.fnmatchcase(name, pattern)):
                    return declaration, method, position
        return None

    def unprovided(self, pipeline: str, cfg: ForwardConfig) -> dict[str, str]:
        """Registry taps this adapter says it does not compute (``not_provided``), with the reason. A tap with
        neither a method nor a reason is left out of the graph too, and the run reports it not judged."""
        return {spec.name: str(self.not_provided[spec.name])
                for spec in pipeline_taps(pipeline, cfg) if spec.name in self.not_provided}

    def graph(self, pipeline: str, cfg: ForwardConfig) -> list[TapSpec]:
        missing = self.unprovided(pipeline, cfg)
        available = {spec.name for spec in pipeline_inputs(pipeline)}
        specs = []
        for spec in pipeline_taps(pipeline, cfg):
            if spec.name in missing or self._method_for(spec.name) is None:
                continue
            declaration, _, _ = self._method_for(spec.name)
            inputs = spec.inputs if declaration.inputs is None else declaration.inputs
            unknown = [name for name in inputs if name not in available]
            if unknown:
                raise StageError(f"{self.name}: tap {spec.name!r} reads {unknown}, which this adapter does not "
                                 f"compute before it (pipeline inputs and earlier taps: {sorted(available)})",
                                 spec.name)
            specs.append(dataclasses.replace(spec, inputs=tuple(inputs)))
            available.add(spec.name)
        if not specs:
            raise StageError(f"{self.name} computes no tap of the {pipeline!r} pipeline")
        return specs

    # ---- layouts and tensor types ----
    def layout_of(self, spec: TapSpec) -> Layout | None:
        declared = self._method_for(spec.name)
        if declared is not None and declared[0].layout is not None:
            return as_layout(declared[0].layout)
        return self._layouts.get(spec.name) or self._layouts.get(spec.layout)

    def _shape(self, spec: TapSpec, cfg: ForwardConfig) -> tuple[int | None, ...]:
        return tuple(None if dim == -1 else dim for dim in spec.shape(cfg, -1))

    def to_internal(self, spec: TapSpec, cfg: ForwardConfig, array: np.ndarray) -> Any:
        layout = self.layout_of(spec)
        value = array if layout is None else layout.to_port(array, spec.layout, self._shape(spec, cfg))
        value = np.ascontiguousarray(value)
        if np.shares_memory(value, array):  # never hand the harness's own array to code that may write it
            value = value.copy()
        if self.tensor_kind == "torch":
            import torch

            return torch.from_numpy(value).to(self.device)
        if self.tensor_kind == "tf":
            import tensorflow as tf

            return tf.constant(value)
        return value

    def _canonical(self, spec: TapSpec, cfg: ForwardConfig, value: Any, native: bool) -> Any:
        """The tap in the canonical layout. A layout gets what the tap method returned (a Torch port's tensor) in
        both modes; only its result becomes numpy where the harness asks for numpy (``native=False``)."""
        if hasattr(value, "detach"):  # torch
            value = value.detach().resolve_conj().resolve_neg()
        elif hasattr(value, "numpy") and not isinstance(value, np.ndarray):  # TensorFlow eager tensor
            value = value.numpy()
        elif not hasattr(value, "shape"):
            if not isinstance(value, (int, float, complex, np.number)):
                raise StageError(f"{self.name} tap {spec.name!r} returned {type(value).__name__}, expected an "
                                 f"array or tensor", spec.name)
            value = np.asarray(value)
        layout = self.layout_of(spec)
        try:
            value = value if layout is None else layout.to_canonical(value, spec.layout, self._shape(spec, cfg))
        except (LayoutError, RuntimeError, ValueError) as error:
            raise StageError(f"{self.name} tap {spec.name!r}: {error}", spec.name) from None
        return value if native else to_numpy(value)

    def to_canonical(self, spec: TapSpec, cfg: ForwardConfig, value: Any) -> np.ndarray:
        return np.asarray(self._canonical(spec, cfg, value, native=False))

    def to_canonical_native(self, spec: TapSpec, cfg: ForwardConfig, value: Any) -> Any:
        return self._canonical(spec, cfg, value, native=True)

    # ---- execution ----
    def _prepare(self, pipeline: str, cfg: ForwardConfig, weights: Mapping[str, np.ndarray] | None,
                 ctx: StageContext) -> None:
        key = (cfg.hash(), weights_fingerprint(weights) if weights else "")
        if key != self._setup_key:
            self.cfg, self.weights = cfg, weights
            try:
                self.setup(cfg, weights)
            except Exception as error:
                raise AdapterSetupError(f"{self.name}.setup() raised {describe_exception(error)}") from error
            self._setup_key = key

    def _invoke(self, spec: TapSpec, ctx: StageContext, inputs: list[Any]) -> Any:
        declared = self._method_for(spec.name)
        if declared is None:
            raise StageError(f"{self.name} has no @tap method for {spec.name!r}", spec.name)
        declaration, method, position = declared
        keywords = {}
        if any(_is_glob(pattern) for pattern in declaration.names) and "tap" in _parameters(method):
            keywords["tap"] = spec.name
        if len(declaration.names) == 1:
            return self._as_kind(method(*inputs, **keywords))
        key = ("__parity_multi__", method.__name__, tuple(id(value) for value in inputs))
        results = ctx.constant(key, lambda: tuple(method(*inputs, **keywords)))
        if len(results) != len(declaration.names):
            raise StageError(f"{self.name}.{method.__name__} returned {len(results)} values for taps "
                             f"{list(declaration.names)}", spec.name)
        return self._as_kind(results[position])

    def _as_kind(self, value: Any) -> Any:
        """A numpy result of a Torch port's method, as a tensor: a later method gets what isolated mode gives it."""
        if self.tensor_kind == "torch" and isinstance(value, np.ndarray) and value.dtype.kind in "fcbiu":
            import torch

            return torch.from_numpy(np.ascontiguousarray(value)).to(self.device)
        return value

    def run_stage(self, tap: str, pipeline: str, cfg: ForwardConfig, stage_inputs: Mapping[str, np.ndarray],
                  weights: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
        self._prepare(pipeline, cfg, weights, self._context(cfg, weights))
        return super().run_stage(tap, pipeline, cfg, stage_inputs, weights)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "class": f"{type(self).__module__}.{type(self).__qualname__}",
                "device": self.device, "frameworks": list(self.frameworks), "tensors": self.tensor_kind,
                "layouts": {key: layout.describe() for key, layout in self._layouts.items()},
                "not_provided": dict(self.not_provided), "knobs": dict(self.knobs), "versions": self.versions()}

    def versions(self) -> dict[str, str]:
        import sys

        found = {"numpy": np.__version__}
        for framework, module in (("torch", "torch"), ("tf", "tensorflow")):
            if framework in self.frameworks and module in sys.modules:
                found[module] = getattr(sys.modules[module], "__version__", "?")
        return found

    def build_params(self, cfg: ForwardConfig, weights: Mapping[str, np.ndarray]) -> Any:
        return None


def _parameters(method: Callable) -> Mapping[str, inspect.Parameter]:
    try:
        return inspect.signature(method).parameters
    except (TypeError, ValueError):
        return {}
