"""Pass criteria of one tap: what a tolerance rule sets and the comparator checks."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["Criteria", "REGION_CRITERIA"]

# What a region can be judged by: scale-relative maxima only (a region has no cosine, no fraction).
REGION_CRITERIA = ("max_rel_to_peak", "max_rel_to_sample_peak", "max_abs")


@dataclasses.dataclass(frozen=True)
class Criteria:
    """Pass criteria for one tap; every criterion that is set must hold.

    ``atol``/``rtol`` follow :func:`numpy.isclose` with the reference as the
    second argument: ``|a-b| <= atol + rtol*|a|``.  The criterion is active when
    either is set (the unset one is 0); at most ``max_fraction_out`` of the
    elements may lie outside.  ``max_phase_error`` applies to complex taps only,
    over the elements with ``|a| >= phase_floor * max|a|``.
    ``max_rel_to_sample_peak`` bounds, for every sample, max |a-b| over the
    sample / max |a| over the same sample (a tap without a batch axis is one
    sample).  ``regions`` maps a region name (``interior``/``border`` of an
    image tap, or a region the registry supplies, e.g. ``covered``) to the
    criteria of that region, each relative to the region's own peak; only
    ``REGION_CRITERIA`` may be set there.
    """

    max_rel_to_peak: float | None = None
    atol: float | None = None
    rtol: float | None = None
    max_fraction_out: float = 0.0
    max_abs: float | None = None
    min_cosine: float | None = None
    max_phase_error: float | None = None
    phase_floor: float = 1e-3
    allow_nonfinite: bool = False  # NaN/Inf at the same positions in both sides pass only when set
    max_rel_to_sample_peak: float | None = None
    # ((name, Criteria), ...) sorted by name; given as a mapping, stored as a tuple so Criteria stays hashable
    regions: tuple = ()

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name == "allow_nonfinite":
                if not isinstance(v, bool):
                    raise TypeError(f"Criteria.allow_nonfinite must be true or false, got {v!r}")
                continue
            if f.name == "regions":
                object.__setattr__(self, "regions", _regions(v))
                continue
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
                raise TypeError(f"Criteria.{f.name} must be a number or None, got {v!r}")
            object.__setattr__(self, f.name, v := float(v))
            lo, hi = {"min_cosine": (-1.0, 1.0), "max_fraction_out": (0.0, 1.0)}.get(f.name, (0.0, math.inf))
            if not (lo <= v <= hi and math.isfinite(v)):
                raise ValueError(f"Criteria.{f.name} must be finite and in [{lo}, {hi}], got {v!r}")

    @property
    def tolerance_active(self) -> bool:
        return self.atol is not None or self.rtol is not None

    @property
    def region_criteria(self) -> dict[str, Criteria]:
        return dict(self.regions)

    def to_dict(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "regions"}
        out["regions"] = {name: crit.set_fields() for name, crit in self.regions}
        return out

    def set_fields(self) -> dict:
        """Only the criteria that differ from the defaults (what a TOML rule needs to say)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
               if f.name != "regions" and getattr(self, f.name) != f.default}
        if self.regions:
            out["regions"] = {name: crit.set_fields() for name, crit in self.regions}
        return out

    @classmethod
    def from_dict(cls, d: dict) -> Criteria:
        if not isinstance(d, dict):
            raise TypeError(f"Criteria.from_dict expects a dict, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(str(k) for k in d if k not in known)
        if unknown:
            raise ValueError(f"unknown criteria key(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        return cls(**d)


def _regions(value: Any) -> tuple:
    """Normalise ``regions`` (a mapping name -> Criteria or dict, or pairs) to sorted (name, Criteria) pairs."""
    if value is None:
        return ()
    items = value.items() if isinstance(value, Mapping) else value
    try:
        pairs = [(name, crit) for name, crit in items]
    except (TypeError, ValueError):
        raise TypeError(f"Criteria.regions must map a region name to its criteria, got {value!r}") from None
    out = []
    for name, crit in pairs:
        if not isinstance(name, str) or not name:
            raise TypeError(f"Criteria.regions: a region name must be a non-empty string, got {name!r}")
        if isinstance(crit, dict):
            crit = Criteria.from_dict(crit)
        if not isinstance(crit, Criteria):
            raise TypeError(f"Criteria.regions[{name!r}] must be a table of criteria, got {crit!r}")
        extra = sorted(set(crit.set_fields()) - set(REGION_CRITERIA))
        if extra:
            raise ValueError(f"Criteria.regions[{name!r}]: a region can set only {', '.join(REGION_CRITERIA)}; "
                             f"got {', '.join(extra)}")
        out.append((name, crit))
    names = [name for name, _ in out]
    if len(set(names)) != len(names):
        raise ValueError(f"Criteria.regions: region named twice in {names}")
    return tuple(sorted(out, key=lambda pair: pair[0]))
