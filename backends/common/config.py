"""The forward model's configuration: every knob of spec section 1, explicit.

A ``ForwardConfig`` is resolved once (defaults filled in, values validated and
normalised) and then handed, frozen, to both backends and recorded with every
result. Derived sizes (C, Co, P, k, D, filter counts) are properties so that
no backend computes them its own way.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any

AMP_ACTIVATIONS = ("sigmoid", "swish", "softplus", "relu")
DTYPES = ("float32", "float64")
COMPLEX_OF = {"float32": "complex64", "float64": "complex128"}

# Knobs whose value changes what the network computes; `nphotons` only feeds
# the simulate pipeline.
KNOB_DOC = {
    "N": "patch size, a power of two, >= 32",
    "gridsize": "patches per group side; C = gridsize**2 channels",
    "offset": "nominal neighbour spacing in pixels, sizes the canvas",
    "buffer": "extra canvas margin in pixels (PtychoPINN max_position_jitter)",
    "object_big": "reassemble the C patches onto one canvas (else pad one patch)",
    "probe_big": "decoder adds the border branch",
    "probe_mask": "multiply by the hard disk mask",
    "pad_object": "decoder predicts the central N/2 window and zero-pads it",
    "gaussian_sigma": "complex Gaussian smoothing of the exit wave; 0 disables",
    "intensity_scale": "dataset-level amplitude scale, > 0",
    "nphotons": "expected photons per pattern (simulate only)",
    "amp_activation": "sigmoid, swish, softplus or relu",
    "n_filters_scale": "width multiplier of the CNN",
    "dtype": "float32 (complex64) or float64 (complex128)",
}


class ConfigError(ValueError):
    """A knob has a value outside its documented range (or is unknown)."""


# Knob values at which a whole class of port bugs gives the same numbers (x s = x / s = x at s = 1): a
# run there cannot see them, and its report says so.
NEUTRAL_VALUES = {"intensity_scale": (1.0, "applying it twice, the wrong way (x s for / s) or not at all")}


@dataclasses.dataclass(frozen=True)
class ForwardConfig:
    N: int = 64
    gridsize: int = 2
    offset: int = 4
    buffer: int = 10
    object_big: bool = True
    probe_big: bool = False
    probe_mask: bool = False
    pad_object: bool = True
    gaussian_sigma: float = 0.0
    intensity_scale: float = 1.0
    nphotons: float = 1e9
    amp_activation: str = "sigmoid"
    n_filters_scale: int = 2
    dtype: str = "float32"

    def __post_init__(self) -> None:
        problems = _validate(self)
        if problems:
            raise ConfigError("; ".join(problems))

    # ---- derived sizes (spec section 1 and 3) ----
    @property
    def C(self) -> int:
        return self.gridsize * self.gridsize

    @property
    def Co(self) -> int:
        return self.C if self.object_big else 1

    @property
    def P(self) -> int:
        size = self.N + (self.gridsize - 1) * self.offset + self.buffer
        return size + 1 if (size - self.N) % 2 else size

    @property
    def k(self) -> int:
        return (self.P - self.N) // 2

    @property
    def depth(self) -> int:
        return int(math.log2(self.N)) - 3

    @property
    def encoder_filters(self) -> tuple[int, ...]:
        # f * (2048 / N) * 2^i exactly; validation guarantees f * 2048 / N is an integer.
        return tuple(self.n_filters_scale * 2048 * 2**i // self.N for i in range(self.depth))

    @property
    def decoder_filters(self) -> tuple[int, ...]:
        f = self.n_filters_scale
        return tuple(f * 32 * 2 ** (self.depth - 2 - j) for j in range(self.depth - 1))

    @property
    def final_block_filters(self) -> int:
        return self.n_filters_scale * 2048 // self.N

    @property
    def features(self) -> int:
        """Channels of the decoder's base output `h` (32 f)."""
        return 32 * self.n_filters_scale

    @property
    def complex_dtype(self) -> str:
        return COMPLEX_OF[self.dtype]

    # ---- serialisation ----
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def hash(self) -> str:
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def replace(self, **changes: Any) -> ForwardConfig:
        return resolve_config(self.to_dict() | changes)

    def diff(self, other: ForwardConfig) -> dict[str, tuple[Any, Any]]:
        """Knobs that differ, as {knob: (self value, other value)}."""
        mine, theirs = self.to_dict(), other.to_dict()
        return {key: (mine[key], theirs[key]) for key in mine if mine[key] != theirs[key]}


def knob_changes(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    """``["intensity_scale 2.5 -> 3.0", ...]``: the knobs two configuration mappings (a report's, a baseline's
    record) hold differently, in name order."""
    return [f"{knob} {before.get(knob)!r} -> {after.get(knob)!r}" for knob in sorted({*before, *after})
            if before.get(knob) != after.get(knob)]


FIELDS = {field.name: field for field in dataclasses.fields(ForwardConfig)}
DEFAULTS = {name: field.default for name, field in FIELDS.items()}
# float32 / float64 limits, written out so that this module needs no numpy.
FLOAT_LIMITS = {"float32": (1.1754943508222875e-38, 3.4028234663852886e38),
                "float64": (2.2250738585072014e-308, 1.7976931348623157e308)}


def _fits(value: float, dtype: str) -> bool:
    """``value`` a normal number whose square and reciprocal are normal too, in ``dtype``."""
    tiny, huge = FLOAT_LIMITS[dtype]
    return tiny <= value <= huge and tiny <= value * value <= huge and tiny <= 1.0 / value <= huge


def _range_text(dtype: str) -> str:
    tiny, huge = FLOAT_LIMITS[dtype]
    return f"[{math.sqrt(tiny):.3g}, {math.sqrt(huge):.3g}]"


def _arithmetic_problems(cfg: ForwardConfig) -> list[str]:
    """Knob values that underflow or overflow in the run's arithmetic (checked once the basics hold).

    The backends compute X / s, s * amplitude and (s * X)^2 in the run's dtype, and the
    smoothing kernel exp(-x^2 / (2 sigma^2)) in float64: s = 1e-320 is 0 in float32 (X / 0),
    and sigma = 1e-300 makes 2 sigma^2 = 0 (a NaN kernel), while both pass "finite and >= 0".
    """
    problems = []
    for name in ("intensity_scale", "nphotons"):
        value = getattr(cfg, name)
        if not _fits(value, cfg.dtype):
            problems.append(f"{name} = {value!r} underflows or overflows in {cfg.dtype} arithmetic (it, its square "
                            f"and its reciprocal must be normal numbers): expected a value in {_range_text(cfg.dtype)}")
    sigma = cfg.gaussian_sigma
    if sigma > 0 and not (2.0 * sigma * sigma >= FLOAT_LIMITS["float64"][0]):
        problems.append(f"gaussian_sigma = {sigma!r}: 2 sigma^2 underflows to 0 and the smoothing kernel is NaN; "
                        f"expected 0 (off) or a value >= {math.sqrt(FLOAT_LIMITS['float64'][0]):.3g}")
    return problems


def _validate(cfg: ForwardConfig) -> list[str]:
    problems = []
    n = cfg.N
    if not (isinstance(n, int) and n >= 32 and n & (n - 1) == 0):
        problems.append(f"N must be a power of two >= 32, got {n!r}")
    for name in ("gridsize", "n_filters_scale"):
        value = getattr(cfg, name)
        if not (isinstance(value, int) and value >= 1):
            problems.append(f"{name} must be an integer >= 1, got {value!r}")
    for name in ("offset", "buffer"):
        value = getattr(cfg, name)
        if not (isinstance(value, int) and value >= 0):
            problems.append(f"{name} must be an integer >= 0, got {value!r}")
    if not (math.isfinite(cfg.gaussian_sigma) and cfg.gaussian_sigma >= 0):
        problems.append(f"gaussian_sigma must be finite and >= 0, got {cfg.gaussian_sigma!r}")
    for name in ("intensity_scale", "nphotons"):
        value = getattr(cfg, name)
        if not (math.isfinite(value) and value > 0):
            problems.append(f"{name} must be finite and > 0, got {value!r}")
    if not problems and (cfg.n_filters_scale * 2048) % n:
        problems.append(f"n_filters_scale * 2048 / N must be a whole number of filters, got "
                        f"{cfg.n_filters_scale} * 2048 / {n}")
    if cfg.amp_activation not in AMP_ACTIVATIONS:
        problems.append(f"amp_activation must be one of {AMP_ACTIVATIONS}, got {cfg.amp_activation!r}")
    if cfg.dtype not in DTYPES:
        problems.append(f"dtype must be one of {DTYPES}, got {cfg.dtype!r}")
    return problems or _arithmetic_problems(cfg)


def _coerce(name: str, value: Any) -> Any:
    """Convert a knob value (possibly a string from --set) to the field's type."""
    kind = FIELDS[name].type
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"{name} must be true or false, got {value!r}")
    if kind == "int":
        if isinstance(value, bool):
            raise ConfigError(f"{name} must be an integer, got {value!r}")
        try:
            as_float = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name} must be an integer, got {value!r}") from None
        if not as_float.is_integer():
            raise ConfigError(f"{name} must be an integer, got {value!r}")
        return int(as_float)
    if kind == "float":
        if isinstance(value, bool):
            raise ConfigError(f"{name} must be a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name} must be a number, got {value!r}") from None
    return str(value)


def resolve_config(knobs: Mapping[str, Any] | None = None, base: ForwardConfig | None = None) -> ForwardConfig:
    """Fill defaults, coerce types and validate; unknown knobs are errors."""
    knobs = dict(knobs or {})
    unknown = sorted(set(knobs) - set(FIELDS))
    if unknown:
        raise ConfigError(f"unknown knob(s) {unknown}; known knobs: {sorted(FIELDS)}")
    values = (base or ForwardConfig()).to_dict()
    values.update({name: _coerce(name, value) for name, value in knobs.items()})
    return ForwardConfig(**values)
