"""The configuration matrix the backend-parity tests and the matrix report run.

A covering subset of the forward model's knobs, not their full product
(2**9 * 4 = 2048 configurations). It is generated deterministically by a small
greedy covering-array construction (AETG-like, but with no randomness) from

* ``KNOBS``: every value each varied knob must take, preferred value first
  (the generator picks the first value on a tie, so N=32 unless a combination
  still to be covered needs N=64);
* ``COVER``: the knob tuples whose value combinations must all appear in some
  configuration: every pair of non-N knobs, N with the knobs that change the
  canvas or decoder geometry, and the interacting pairs of the issue crossed
  with ``dtype`` (each interaction is checked at both precisions, whose bounds
  differ by six orders of magnitude).

``EXTRA`` adds hand-picked cases the covering array cannot express (the real
default configuration, an odd P - N canvas). The module is pure: numpy and the
shared config/synthetic helpers only, no framework import, so that
``test_registry`` can check its coverage cheaply and ``tools/`` can reuse it.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from backends.common.config import ForwardConfig, resolve_config
from backends.common.taps import PIPELINES, tap_index
from backends.common.weights import init_weights
from parity.synthetic import pipeline_inputs

# ---- what is varied, preferred value first ----
KNOBS: dict[str, tuple[Any, ...]] = {
    "N": (32, 64),
    "gridsize": (2, 1),
    "object_big": (True, False),
    "probe_big": (False, True),
    "probe_mask": (False, True),
    "pad_object": (True, False),
    "gaussian_sigma": (0.0, 0.8),
    "amp_activation": ("sigmoid", "swish", "softplus", "relu"),
    "intensity_scale": (1.0, 3.7),
    "dtype": ("float32", "float64"),
}

# Knobs whose value changes a tensor's geometry (canvas size, masks, decoder
# windows): these are crossed with N as well.
GEOMETRY_KNOBS = ("gridsize", "object_big", "pad_object", "probe_big")

# The interacting pairs the issue names; each must be fully crossed.
REQUIRED_PAIRS: tuple[tuple[str, str], ...] = (
    ("object_big", "gridsize"),
    ("pad_object", "probe_big"),
    ("probe_mask", "gaussian_sigma"),
    ("dtype", "N"),
    ("amp_activation", "dtype"),
    ("intensity_scale", "dtype"),
)


def _cover() -> tuple[tuple[str, ...], ...]:
    others = [name for name in KNOBS if name != "N"]
    cover: list[tuple[str, ...]] = list(itertools.combinations(others, 2))
    cover += [("N", name) for name in ("dtype", *GEOMETRY_KNOBS)]
    cover += [("N", "gridsize", "object_big"), ("N", "pad_object", "probe_big")]
    cover += [(*pair, "dtype") for pair in REQUIRED_PAIRS if "dtype" not in pair]
    return tuple(cover)


COVER = _cover()

# Hand-picked extra cases: (id, knobs).
EXTRA: tuple[tuple[str, dict[str, Any]], ...] = (
    ("default", {}),  # resolve_config({}): N=64, gridsize 2, n_filters_scale 2, float32
    # P - N = 5 + 10 = 15 is odd: the canvas grows by one pixel (spec section 1 deviation).
    ("odd-canvas-f64", {"N": 32, "gridsize": 2, "offset": 5, "buffer": 10, "dtype": "float64",
                        "gaussian_sigma": 0.8, "probe_big": True}),
)

BATCH = 2  # samples per pinn / physics case
SCAN_POSITIONS = 5  # M for the simulate pipeline
WEIGHT_BIAS_SCALE = 0.1  # nonzero biases, so a bias-mapping bug shows


# ---- the covering-array generator ----
def _combos(row: Mapping[str, Any], cover: Sequence[tuple[str, ...]]) -> set[tuple[tuple[str, ...], tuple]]:
    """The (knob tuple, value tuple) combinations a (possibly partial) row covers."""
    return {(names, tuple(row[name] for name in names)) for names in cover if all(name in row for name in names)}


def covering_rows(knobs: Mapping[str, Sequence[Any]] = KNOBS,
                  cover: Sequence[tuple[str, ...]] = COVER) -> list[dict[str, Any]]:
    """Rows (knob -> value) such that every combination of every ``cover`` tuple appears.

    Deterministic greedy: each round seeds one candidate row from every still
    uncovered combination, completes it knob by knob with the value covering
    the most uncovered combinations (earlier values win ties) and keeps the
    candidate covering the most; earlier seeds win ties.
    """
    uncovered = {(names, values) for names in cover
                 for values in itertools.product(*(knobs[name] for name in names))}
    order = sorted(uncovered, key=lambda item: (tuple(list(knobs).index(n) for n in item[0]),
                                                tuple(knobs[n].index(v) for n, v in zip(*item))))
    touching = {name: [names for names in cover if name in names] for name in knobs}
    rows: list[dict[str, Any]] = []
    while uncovered:
        best: tuple[int, dict[str, Any]] | None = None
        for names, values in order:
            if (names, values) not in uncovered:
                continue
            row = dict(zip(names, values))
            for name in knobs:
                if name in row:
                    continue
                # only the tuples that contain `name` change; the rest cover the same either way
                gains = [len(_combos(row | {name: value}, touching[name]) & uncovered) for value in knobs[name]]
                row[name] = knobs[name][gains.index(max(gains))]
            row = {name: row[name] for name in knobs}
            gain = len(_combos(row, cover) & uncovered)
            if best is None or gain > best[0]:
                best = (gain, row)
        assert best is not None and best[0] > 0
        rows.append(best[1])
        uncovered -= _combos(best[1], cover)
    return rows


# ---- the cases ----
_SHORT = {"N": "N", "gridsize": "g", "object_big": "ob", "probe_big": "pb", "probe_mask": "pm",
          "pad_object": "po", "gaussian_sigma": "gs", "intensity_scale": "s"}


def case_id(knobs: Mapping[str, Any]) -> str:
    """A readable, unique id: N32-g2-ob1-pb0-pm0-po1-gs0.8-swish-s3.7-f64."""
    parts = []
    for name, value in knobs.items():
        if name == "amp_activation":
            parts.append(str(value))
        elif name == "dtype":
            parts.append("f" + str(value)[-2:])
        elif isinstance(value, bool):
            parts.append(f"{_SHORT[name]}{int(value)}")
        elif isinstance(value, float):
            parts.append(f"{_SHORT[name]}{value:g}")
        else:
            parts.append(f"{_SHORT.get(name, name)}{value}")
    return "-".join(parts)


@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    knobs: Mapping[str, Any]
    cfg: ForwardConfig

    @property
    def seed(self) -> int:
        """Input seed, a stable function of the resolved configuration."""
        return int(self.cfg.hash()[:8], 16) % 2**31

    def batch(self, pipeline: str) -> int:
        return SCAN_POSITIONS if pipeline == "simulate" else BATCH

    def inputs(self, pipeline: str) -> dict[str, np.ndarray]:
        return pipeline_inputs(pipeline, self.cfg, batch=self.batch(pipeline), seed=self.seed)

    def weights(self, pipeline: str) -> dict[str, np.ndarray] | None:
        if pipeline != "pinn":
            return None
        return init_weights(self.cfg, seed=self.seed, bias_scale=WEIGHT_BIAS_SCALE)


def build_cases() -> list[Case]:
    cases = [Case(case_id(row), row, resolve_config(row)) for row in covering_rows()]
    cases += [Case(name, knobs, resolve_config(knobs)) for name, knobs in EXTRA]
    return cases


CASES: list[Case] = build_cases()
CASE_BY_ID: dict[str, Case] = {case.id: case for case in CASES}


# ---- the metric and its bounds ----
def rel_error(reference: np.ndarray, candidate: np.ndarray) -> float:
    """max|a - b| / max|a|, in double precision; 0 if both are all zero, inf if only a is.

    NaN anywhere gives NaN, which fails every ``<=`` bound.
    """
    a = np.asarray(reference)
    b = np.asarray(candidate)
    wide = np.complex128 if np.iscomplexobj(a) or np.iscomplexobj(b) else np.float64
    a, b = a.astype(wide), b.astype(wide)
    if a.size == 0:
        return 0.0
    if np.isnan(a).any() or np.isnan(b).any():
        return float("nan")
    scale = float(np.max(np.abs(a)))
    diff = float(np.max(np.abs(a - b)))
    if diff == 0.0:
        return 0.0
    return diff / scale if scale > 0 else float("inf")


# Network taps of the pinn pipeline (before the physics); bounds include CNN rounding.
NETWORK_TAP_PREFIXES = ("input.scaled", "encoder.", "decoder.", "object.patches")


def is_network_tap(name: str) -> bool:
    return name.startswith(NETWORK_TAP_PREFIXES)


def bound(cfg: ForwardConfig, pipeline: str, mode: str, tap: str) -> float:
    """The allowed ``rel_error`` of one tap.

    ``mode`` is "propagated" (the whole pipeline in each backend) or
    "isolated" (the candidate's stage on the reference's recorded inputs).
    float64: 1e-12 everywhere. float32: pinn end to end 1e-5 per tap (the
    network's rounding included); physics / simulate and isolated physics
    stages 1e-6; isolated network stages 1e-5 (a conv stack's own rounding).
    """
    if cfg.dtype == "float64":
        return 1e-12
    if pipeline == "pinn" and (mode == "propagated" or is_network_tap(tap)):
        return 1e-5
    return 1e-6


# ---- running and measuring (backends are passed in; nothing here imports a framework) ----
@dataclasses.dataclass(frozen=True)
class Measurement:
    case: str
    dtype: str
    pipeline: str
    mode: str  # "propagated" or "isolated"
    tap: str
    value: float  # rel_error(reference, candidate)
    bound: float
    reference_shape: tuple[int, ...]
    candidate_shape: tuple[int, ...]
    reference_dtype: str
    candidate_dtype: str

    @property
    def layout_ok(self) -> bool:
        return self.reference_shape == self.candidate_shape and self.reference_dtype == self.candidate_dtype

    @property
    def ok(self) -> bool:
        return self.layout_ok and self.value <= self.bound  # NaN compares False


class RunCache:
    """Each (case, pipeline) runs once per backend; each isolated stage once.

    ``reference`` and ``candidate`` are backend instances (TF and Torch).
    """

    def __init__(self, reference: Any, candidate: Any) -> None:
        self.reference = reference
        self.candidate = candidate
        self._inputs: dict[tuple[str, str], dict[str, np.ndarray]] = {}
        self._weights: dict[str, dict[str, np.ndarray]] = {}
        self._runs: dict[tuple[str, str], tuple[dict[str, np.ndarray], dict[str, np.ndarray]]] = {}
        self._isolated: dict[tuple[str, str, str], np.ndarray] = {}

    def inputs(self, case: Case, pipeline: str) -> dict[str, np.ndarray]:
        key = (case.id, pipeline)
        if key not in self._inputs:
            self._inputs[key] = case.inputs(pipeline)
        return self._inputs[key]

    def weights(self, case: Case, pipeline: str) -> dict[str, np.ndarray] | None:
        if pipeline != "pinn":
            return None
        if case.id not in self._weights:
            self._weights[case.id] = case.weights(pipeline)
        return self._weights[case.id]

    def propagated(self, case: Case, pipeline: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """(reference taps, candidate taps) of one whole-pipeline run each."""
        key = (case.id, pipeline)
        if key not in self._runs:
            inputs, weights = self.inputs(case, pipeline), self.weights(case, pipeline)
            reference = self.reference.run_all(pipeline, case.cfg, inputs, weights)
            candidate = self.candidate.run_all(pipeline, case.cfg, inputs, weights)
            self._runs[key] = (reference, candidate)
        return self._runs[key]

    def isolated(self, case: Case, pipeline: str, tap: str) -> tuple[np.ndarray, np.ndarray]:
        """(reference tap, candidate stage run on the reference's recorded inputs)."""
        key = (case.id, pipeline, tap)
        reference, _ = self.propagated(case, pipeline)
        if key not in self._isolated:
            spec = tap_index(pipeline, case.cfg)[tap]
            recorded = {**self.inputs(case, pipeline), **reference}
            self._isolated[key] = self.candidate.run_stage(
                tap, pipeline, case.cfg, {name: recorded[name] for name in spec.inputs}, self.weights(case, pipeline))
        return reference[tap], self._isolated[key]

    def measure(self, case: Case, pipeline: str, mode: str, tap: str) -> Measurement:
        if mode == "propagated":
            reference, candidate = self.propagated(case, pipeline)
            a, b = reference[tap], candidate[tap]
        elif mode == "isolated":
            a, b = self.isolated(case, pipeline, tap)
        else:
            raise ValueError(f"mode is 'propagated' or 'isolated', not {mode!r}")
        a, b = np.asarray(a), np.asarray(b)
        same_layout = a.shape == b.shape
        return Measurement(case.id, case.cfg.dtype, pipeline, mode, tap,
                           rel_error(a, b) if same_layout else float("nan"), bound(case.cfg, pipeline, mode, tap),
                           a.shape, b.shape, a.dtype.name, b.dtype.name)


def describe_case(case: Case) -> str:
    """The case id and every knob that differs from the defaults (for assertion messages)."""
    changed = {name: ours for name, (ours, _) in case.cfg.diff(ForwardConfig()).items()}
    return f"{case.id} {changed}"


__all__ = ["BATCH", "CASES", "CASE_BY_ID", "COVER", "Case", "EXTRA", "GEOMETRY_KNOBS", "KNOBS", "Measurement",
           "PIPELINES", "REQUIRED_PAIRS", "RunCache", "SCAN_POSITIONS", "bound", "build_cases", "case_id",
           "covering_rows", "describe_case", "is_network_tap", "rel_error"]
