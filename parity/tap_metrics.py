"""``TapMetrics``: the typed, JSON-serialisable comparison result of one tap."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from .criteria import Criteria

__all__ = ["TapMetrics"]


def _enc_float(x: float) -> float | str:
    return x if math.isfinite(x) else ("nan" if math.isnan(x) else ("inf" if x > 0 else "-inf"))


def jsonable(v: Any) -> Any:
    """Strict-JSON form: non-finite floats as "nan"/"inf"/"-inf", complex as [re, im]."""
    v = v.item() if isinstance(v, np.generic) else v
    if isinstance(v, Criteria):
        return v.to_dict()
    if isinstance(v, float):
        return _enc_float(v)
    if isinstance(v, complex):
        return [_enc_float(v.real), _enc_float(v.imag)]
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(key): jsonable(value) for key, value in v.items()}
    if v is None or isinstance(v, (bool, int, str)):
        return v
    raise TypeError(f"cannot serialise {type(v).__name__}")


def _dec_scalar(x: Any) -> Any:
    """Inverse of ``jsonable`` for scalars: [re, im] -> complex, "nan"/"inf"/"-inf" -> float."""
    if isinstance(x, list):
        return complex(float(x[0]), float(x[1]))
    return float(x) if isinstance(x, str) else x


def _dec_numbers(x: Any) -> Any:
    """Inverse of ``jsonable`` inside the breakdown, whose only string values are encoded floats."""
    if isinstance(x, dict):
        return {key: _dec_numbers(value) for key, value in x.items()}
    if isinstance(x, list):
        return [_dec_numbers(value) for value in x]
    return float(x) if isinstance(x, str) else x


@dataclasses.dataclass
class TapMetrics:
    """Typed comparison result of one tap; ``to_dict`` is strict-JSON serialisable.

    When the shapes differ, elementwise metrics are NaN (floats) or None and only
    the NaN/Inf counts are reported.  ``n_out_of_tolerance``,
    ``fraction_out_of_tolerance`` and ``allclose`` are about the elementwise
    ``atol``/``rtol`` criterion and are None when the criteria set neither:
    nothing was tested, so nothing is claimed.  ``allclose`` is True when every
    compared element lies within atol/rtol, the non-finite positions agree and
    the shapes match.  ``breakdown`` says where the error is (see
    ``parity.breakdown``).
    """

    name: str
    reference_shape: tuple
    candidate_shape: tuple
    reference_dtype: str
    candidate_dtype: str
    shape_match: bool
    dtype_match: bool
    size: int  # elements of the reference
    n_compared: int  # pairs where both sides are finite
    max_abs_error: float
    reference_peak: float  # max |a| over finite reference elements
    max_rel_to_peak: float
    mean_abs_error: float
    rms_error: float
    cosine_similarity: float
    n_out_of_tolerance: int | None
    fraction_out_of_tolerance: float | None
    allclose: bool | None
    worst_index: tuple | None
    worst_reference: Any
    worst_candidate: Any
    nan_reference: int
    nan_candidate: int
    inf_reference: int
    inf_candidate: int
    nonfinite_positions_agree: bool | None  # None when the shapes differ
    n_nonfinite_mismatch: int | None
    complex: bool
    magnitude_max_abs_error: float | None
    magnitude_max_rel_to_peak: float | None
    phase_max_abs_error: float | None
    criteria: Criteria
    passed: bool
    failures: list
    max_rel_to_sample_peak: float | None = None  # max over samples of (max |a-b| / max |a|) within the sample
    breakdown: dict | None = None

    def to_dict(self) -> dict:
        return {f.name: jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, d: dict) -> TapMetrics:
        text = ("name", "reference_dtype", "candidate_dtype")
        kw = {k: float(v) if isinstance(v, str) and k not in text else v for k, v in d.items() if k != "breakdown"}
        kw["worst_reference"] = _dec_scalar(kw["worst_reference"])
        kw["worst_candidate"] = _dec_scalar(kw["worst_candidate"])
        for k in ("reference_shape", "candidate_shape", "worst_index"):
            kw[k] = None if kw[k] is None else tuple(int(i) for i in kw[k])
        kw["criteria"] = Criteria.from_dict(kw["criteria"])
        kw["breakdown"] = _dec_numbers(d.get("breakdown"))
        return cls(**kw)
