"""Named constants a ratio between reference and candidate is checked against (N, sqrt(N), s, 1/s, 2, pi, ...).

Built from the configuration (no tap names) and from the stage's illumination-like inputs (an "HW"
input: its L2 norm, energy, peak, ...), so "x 0.0213" reads "x 1/||probe||_2".
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

FFT = "a missing or extra 1/N normalisation (an FFT without norm='ortho', or normalised twice)"
HALF_FFT = "a 1/sqrt(N) normalisation applied once per axis, or once too often"
FFT_SQUARED = "1/N^2 where 1/N is meant (norm='forward' vs 'ortho'), or a squared 1/N factor"
SCALE = "one factor intensity_scale too many or too few: the scale applied twice, or forgotten, or a / s missing"
SCALE_SQUARED = ("a factor intensity_scale^2: the scale applied the wrong way (x s where / s is meant, or the reverse), "
                 "or applied twice where it belongs once")
CHANNELS = "a sum over the C channels where a mean is meant (or the reverse)"
SAMPLE_SUM = "a sum over a sample's C x N x N elements where their mean is meant (or the reverse)"
SQRT_SCALE = ("a factor sqrt(intensity_scale): the scale of an intensity applied to an amplitude (or the reverse), "
              "or a square root taken of it where none belongs")
BATCH_SUM = ("a sum over the batch's {m} samples (scan positions) where their mean is meant (or the reverse): a "
             "statistic of the whole batch")
BATCH_SQRT = ("a sum over the batch's {m} samples (scan positions) where their mean is meant (or the reverse), "
              "under a square root (a scale c / sqrt(mean))")
PIXEL_SQRT = ("a mean over a pattern's {n} x {n} pixels where their sum is meant (or the reverse), under a square "
              "root (a scale c / sqrt(mean))")
FACTOR_2 = "a factor 2 (a doubled sum, a mean over two parts, a missing 1/2)"
GENERIC = {"2", "4", "pi", "2pi", "sqrt(2)"}  # plain numbers: a name from the configuration or inputs says more
PI = "radians vs half turns (a factor pi)"
SQRT2 = "a 1/sqrt(2) normalisation (e.g. of a complex Gaussian)"
SIGN = "a sign flip"
NORM = "the {name} normalised one more (or one fewer) time than in the reference"
SMOOTHING = ("the 3 x 3 Gaussian smoothing kernel not divided by its sum (or divided twice): "
             "exp(-r^2 / 2 sigma^2) where the normalised kernel is meant")
SMOOTHING_AXIS = "the Gaussian smoothing kernel normalised along one axis only (a separable kernel's 1-D sum)"


def _add(table: list[tuple[str, float, str]], name: str, value: float, hint: str) -> None:
    if math.isfinite(value) and value > 0 and abs(value - 1.0) > 1e-9:
        table.append((name, float(value), hint))


def _pair(table, name: str, value: float, hint: str) -> None:
    _add(table, name, value, hint)
    _add(table, f"1/{name}", 1.0 / value if value else math.nan, hint)


def named_values(cfg: Any, inputs: dict[str, np.ndarray] | None = None,
                 reduced: bool = False, batch: int | None = None) -> list[tuple[str, float, str]]:
    """(name, value, what it usually means), simplest names first; ``reduced``: the tap is a reduction of each
    sample (a loss), where a count of the elements reduced is a likelier reading than an FFT norm; ``batch``: the
    samples a whole-batch reduction reduced over (M), whose count a sum-for-mean multiplies in."""
    table: list[tuple[str, float, str]] = []
    if reduced and cfg is not None:
        _pair(table, "C N^2", float(cfg.C) * float(cfg.N) ** 2, SAMPLE_SUM)
        # a reduction has no FFT: a factor N there is a square root of a pixel count, not a missing 1/N norm
        _pair(table, "sqrt(N^2)", float(cfg.N), PIXEL_SQRT.format(n=int(cfg.N)))
    if batch is not None and batch > 1:
        _pair(table, "M", float(batch), BATCH_SUM.format(m=batch))
        _pair(table, "sqrt(M)", math.sqrt(batch), BATCH_SQRT.format(m=batch))
    for name, value, hint in (("2", 2.0, FACTOR_2), ("4", 4.0, FACTOR_2), ("pi", math.pi, PI),
                              ("2pi", 2 * math.pi, PI), ("sqrt(2)", math.sqrt(2.0), SQRT2)):
        _pair(table, name, value, hint)
    if cfg is not None:
        n, s, c = float(cfg.N), float(cfg.intensity_scale), float(cfg.C)
        _pair(table, "N", n, FFT)
        _pair(table, "sqrt(N)", math.sqrt(n), HALF_FFT)
        _pair(table, "N^2", n * n, FFT_SQUARED)
        _pair(table, "s", s, SCALE)
        _pair(table, "s^2", s * s, SCALE_SQUARED)
        _pair(table, "sqrt(s)", math.sqrt(s), SQRT_SCALE)
        _pair(table, "C", c, CHANNELS)
        sigma = float(getattr(cfg, "gaussian_sigma", 0.0) or 0.0)
        if sigma > 0:  # spec 5: exit_wave smoothed with a normalised 3 x 3 Gaussian
            axis_sum = float(np.exp(-(np.arange(-1, 2) ** 2) / (2.0 * sigma**2)).sum())
            _pair(table, "sum of the Gaussian kernel", axis_sum**2, SMOOTHING)
            _pair(table, "sum of the 1-D Gaussian", axis_sum, SMOOTHING_AXIS)
    for key, array in (inputs or {}).items():
        magnitude = np.abs(np.asarray(array, dtype=np.complex128 if np.iscomplexobj(array) else np.float64))
        energy = float(np.sum(magnitude**2))
        hint = NORM.format(name=key)
        _pair(table, f"||{key}||_2", math.sqrt(energy), hint)
        _pair(table, f"||{key}||_2^2", energy, hint)
        _pair(table, f"max|{key}|", float(magnitude.max()) if magnitude.size else math.nan, hint)
        _pair(table, f"rms({key})", math.sqrt(energy / magnitude.size) if magnitude.size else math.nan, hint)
        _pair(table, f"sum|{key}|", float(magnitude.sum()), hint)
    return table


def name_ratio(ratio: complex | float, table: list[tuple[str, float, str]], rel: float) -> tuple[str, str] | None:
    """('N', hint) when ``ratio`` is a named value (or its negative) to within ``rel``; else None."""
    value = complex(ratio)
    if abs(value.imag) > rel * abs(value):
        return None
    real = value.real
    if abs(real + 1.0) <= rel:
        return "-1", SIGN
    sign = "-" if real < 0 else ""
    matches = [(name, hint) for name, named, hint in table if abs(abs(real) / named - 1.0) <= rel]
    if not matches:
        return None
    names = " = ".join(dict.fromkeys(name for name, _ in matches[:3]))
    # the hint of the most specific name: x 4 at gridsize 2 is C (a channel sum) before it is a plain 4
    specific = next((hint for name, hint in matches if name.removeprefix("1/") not in GENERIC), matches[0][1])
    return f"{sign}{names}", specific + (" with a sign flip" if sign else "")
