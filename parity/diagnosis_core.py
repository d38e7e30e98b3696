"""The pair under diagnosis (``Problem``), the rule that decides when a hypothesis explains it, and
``Diagnosis``, the typed result. See ``parity.diagnosis`` for the rule in words."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

UNEXPLAINED = "unexplained"
WITHIN_TOLERANCE = 3.0  # residual <= 3 x tolerance: the corrected candidate passes, with room for rounding
FRACTION_LEFT = 0.01  # ... or at most 1% of the error is left
MUST_REDUCE = 0.5  # ... and never when it removes less than half of the error
MIN_COMPARED = 0.9  # a correction must leave at least 90% of the finite pairs comparable


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else ("nan" if math.isnan(value) else ("inf" if value > 0 else "-inf"))
    if isinstance(value, complex):
        return [_jsonable(value.real), _jsonable(value.imag)]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, Mapping):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)


@dataclasses.dataclass(frozen=True)
class Diagnosis:
    kind: str  # stable id: "scale", "offset_sign", ..., or "unexplained"
    summary: str  # one line a developer understands
    residual: float  # max |a - corrected(b)| / max |a| after correcting for it (nan if not applicable)
    evidence: dict = dataclasses.field(default_factory=dict)  # JSON-able numbers behind it

    def to_dict(self) -> dict:
        return {"kind": self.kind, "summary": self.summary, "residual": _jsonable(float(self.residual)),
                "evidence": _jsonable(self.evidence)}


def work_array(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype.kind == "c":
        return array.astype(np.complex128)
    return array.astype(np.float64)


@dataclasses.dataclass
class Problem:
    """One (reference, candidate) pair prepared for the hypotheses: float64/complex128 copies, peak, error."""

    a: np.ndarray
    b: np.ndarray
    layout: str
    kind: str
    tolerance: float
    cfg: Any = None
    stage_inputs: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)
    input_layouts: Mapping[str, str] = dataclasses.field(default_factory=dict)
    rerun: Callable[[Mapping[str, np.ndarray]], np.ndarray] | None = None
    reference_dtype: np.dtype = np.dtype("float64")
    candidate_dtype: np.dtype = np.dtype("float64")
    batch: int | None = None  # samples a whole-batch reduction (a scale, a mean loss) reduced over

    def __post_init__(self) -> None:
        self.finite = np.isfinite(self.a) & np.isfinite(self.b) if self.a.shape == self.b.shape else None
        finite_a = np.isfinite(self.a)
        self.peak = float(np.abs(self.a[finite_a]).max()) if finite_a.any() else 0.0
        if self.peak == 0.0 and self.finite is not None and self.finite.any():
            self.peak = float(np.abs(self.b[self.finite]).max()) or 1.0  # all-zero reference: absolute scale
        self.error = self.residual(self.b) if self.finite is not None else math.nan

    @property
    def complex(self) -> bool:
        return self.a.dtype.kind == "c" or self.b.dtype.kind == "c"

    @property
    def eps(self) -> float:
        return float(np.finfo(self.reference_dtype if self.reference_dtype.kind in "fc" else np.float64).eps)

    def residual(self, corrected: np.ndarray, exclude: np.ndarray | None = None) -> float:
        """max |a - corrected| / peak over elements finite on both sides (and not excluded)."""
        if corrected.shape != self.a.shape or self.peak == 0.0:
            return math.nan
        keep = self.finite & np.isfinite(corrected)
        if np.count_nonzero(keep) < MIN_COMPARED * np.count_nonzero(self.finite):
            return math.nan  # the correction moved NaN/Inf over the data: it compares too little to explain
        if exclude is not None:
            keep &= ~np.broadcast_to(exclude, keep.shape)
        if not keep.any():
            return math.nan
        return float(np.abs(self.a[keep] - corrected[keep]).max()) / self.peak

    def explains(self, residual: float) -> bool:
        if not (math.isfinite(residual) and self.error > 0):
            return False
        if residual > MUST_REDUCE * self.error:
            return False
        # 1% of the error, but never more than 1% of the peak: a x640 "scale" that leaves 150% of the
        # peak behind has removed 99.9% of a huge error and still explains nothing
        return residual <= max(WITHIN_TOLERANCE * self.tolerance, FRACTION_LEFT * min(self.error, 1.0))

    def complete(self, residual: float) -> bool:
        """The corrected candidate would pass: nothing else is needed to explain the error."""
        return self.explains(residual) and residual <= WITHIN_TOLERANCE * self.tolerance

    def inputs_of(self, *layouts: str) -> dict[str, np.ndarray]:
        return {name: np.asarray(value) for name, value in self.stage_inputs.items()
                if self.input_layouts.get(name) in layouts}


SPATIAL = {"BHWC": (1, 2), "HW": (0, 1)}  # the spatial axes of each layout that has them


def to_images(x: np.ndarray, layout: str) -> np.ndarray | None:
    if layout == "BHWC" and x.ndim == 4:
        return np.moveaxis(x, 3, 1).reshape(-1, x.shape[1], x.shape[2])
    if layout == "HW" and x.ndim == 2:
        return x[None]
    return None


def from_images(images: np.ndarray, shape: tuple[int, ...], layout: str) -> np.ndarray:
    if layout == "BHWC":
        return np.moveaxis(images.reshape(shape[0], shape[3], shape[1], shape[2]), 1, 3)
    return images[0]
