"""Inputs the forward model cannot compute with, found before any stage runs.

Valid shapes and finite values are not enough: some inputs make a stage
degenerate in both backends alike (an all-zero illumination makes the
simulate pipeline's photon normalisation sqrt(nphotons / 0) infinite), and
both backends then "agree" on Inf while the verdict is a failure that says
nothing about the port. Such inputs are refused up front. This is model
knowledge, so it lives next to the tap registry, not in the harness.

``input_problems(pipeline, cfg, inputs)`` returns (key, expectation) pairs;
empty when the inputs are usable. Inputs are already in the run's dtype.
For ``physics`` and ``pinn`` a batched input is judged by its largest modulus
alone: a large input is validated piece by piece and stands here as a single
element holding that maximum (``parity.input_stream``; tests/test_lazy_inputs.py
checks the two agree). A check that needs more of a batched input must change both.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .config import ForwardConfig
from .constants import disk_mask

POSITION_LIMIT = float(2**24)  # beyond, float32 keeps no sub-pixel part, and far beyond the integer split overflows


def _disk(cfg: ForwardConfig) -> np.ndarray:
    """Where the probe can reach the exit wave: the disk, grown by the 3 x 3 smoothing when it is on."""
    if not cfg.probe_mask:
        return np.ones((cfg.N, cfg.N), bool)
    disk = disk_mask(cfg.N) > 0
    if cfg.gaussian_sigma > 0:
        padded = np.pad(disk, 1)
        disk = np.logical_or.reduce([padded[1 + dy : 1 + dy + cfg.N, 1 + dx : 1 + dx + cfg.N]
                                     for dy in (-1, 0, 1) for dx in (-1, 0, 1)])
    return disk


def _position_problems(key: str, positions: np.ndarray) -> list[tuple[str, str]]:
    largest = float(np.max(np.abs(positions))) if positions.size else 0.0
    if largest > POSITION_LIMIT:
        return [(key, f"positions within +-{POSITION_LIMIT:.0f} px (beyond, no sub-pixel part survives and every "
                      f"patch is far outside the image); got magnitude {largest:.3g}")]
    return []


def _window_counts(nonzero: np.ndarray, scan: np.ndarray, n: int) -> np.ndarray:
    """Nonzero object pixels under each scan position's N x N window (bilinear support included)."""
    height, width = nonzero.shape
    table = np.zeros((height + 1, width + 1), np.int64)
    table[1:, 1:] = np.cumsum(np.cumsum(nonzero, axis=0, dtype=np.int64), axis=1)
    x, y = scan[:, 0].astype(np.float64), scan[:, 1].astype(np.float64)
    # patch_m[y, x] samples O at (pos_y + y - N/2, pos_x + x - N/2), y, x in [0, N); bilinear reads floor..ceil.
    top = np.clip(np.floor(y - n / 2), 0, height).astype(np.int64)
    bottom = np.clip(np.ceil(y + n / 2 - 1) + 1, 0, height).astype(np.int64)
    left = np.clip(np.floor(x - n / 2), 0, width).astype(np.int64)
    right = np.clip(np.ceil(x + n / 2 - 1) + 1, 0, width).astype(np.int64)
    bottom, right = np.maximum(bottom, top), np.maximum(right, left)
    return table[bottom, right] - table[top, right] - table[bottom, left] + table[top, left]


def _simulate_problems(cfg: ForwardConfig, inputs: Mapping[str, np.ndarray]) -> list[tuple[str, str]]:
    probe, obj, scan = (np.asarray(inputs[key]) for key in ("probe", "object", "scan_positions"))
    problems = _position_problems("scan_positions", scan)
    if problems:
        return problems
    illumination = np.abs(probe) * _disk(cfg)
    if not illumination.any():
        where = " inside the probe_mask disk" if cfg.probe_mask else ""
        return [("probe", f"a probe that is nonzero somewhere{where}; it is zero, so every diffraction pattern is "
                          "zero and the photon normalisation sqrt(nphotons / 0) is infinite")]
    magnitude = np.abs(obj)
    if not (_window_counts(magnitude > 0, scan, cfg.N) > 0).any():
        return [("object", f"an object that is nonzero under at least one scan position; it is zero under all "
                           f"{len(scan)} (a {obj.shape[0]} x {obj.shape[1]} object), so every diffraction pattern "
                           "would be zero and the photon normalisation sqrt(nphotons / 0) infinite")]
    finfo = np.finfo(cfg.dtype)
    peak = float(illumination.max()) * float(magnitude.max())
    energy = peak**2 * cfg.N**2  # an upper bound of one pattern's sum |exit_wave|^2
    if energy > float(finfo.max):
        return [("object", f"probe x object values small enough that a pattern's energy fits {cfg.dtype}; "
                           f"|probe| |object| reaches {peak:.3g}, so sum |exit_wave|^2 overflows")]
    if peak**2 < float(finfo.tiny):
        return [("object", f"probe x object values large enough that |exit_wave|^2 does not underflow in "
                           f"{cfg.dtype}; the largest |probe| |object| is {peak:.3g}")]
    return []


def _amplitude_problems(cfg: ForwardConfig, inputs: Mapping[str, np.ndarray], patches: str | None,
                        ) -> list[tuple[str, str]]:
    """intensity = (s * amplitude)^2 must stay finite; amplitude <= N max|probe| max|patch| (orthonormal FFT)."""
    finfo = np.finfo(cfg.dtype)
    probe = np.abs(np.asarray(inputs["probe"])).max(initial=0.0)
    patch = np.abs(np.asarray(inputs[patches])).max(initial=0.0) if patches else 1.0
    bound = cfg.intensity_scale * cfg.N * float(probe) * float(patch)
    if bound > np.sqrt(float(finfo.max)):
        key = patches if patches and patch > 1 else "probe"
        return [(key, f"values whose scaled intensity (intensity_scale * amplitude)^2 fits {cfg.dtype}; "
                      f"its bound (s N max|probe| max|patch|)^2 = {bound:.3g}^2 overflows")]
    return []


def _zero_problems(cfg: ForwardConfig, inputs: Mapping[str, np.ndarray], patches: str | None) -> list[tuple[str, str]]:
    """An all-zero probe (where the mask lets it through) or object: every tap from the exit wave on is zero on
    both sides, so any port would pass there."""
    if not (np.abs(np.asarray(inputs["probe"])) * _disk(cfg)).any():
        where = " inside the probe_mask disk" if cfg.probe_mask else ""
        return [("probe", f"a probe that is nonzero somewhere{where}; it is zero, so the exit wave and every tap "
                          "after it are zero in both backends and would pass whatever the port does")]
    if patches is not None and not np.abs(np.asarray(inputs[patches])).max(initial=0.0) > 0:
        return [(patches, "object patches that are nonzero somewhere; they are zero, so every tap is zero in both "
                          "backends and would pass whatever the port does")]
    return []


def _pinn_problems(cfg: ForwardConfig, inputs: Mapping[str, np.ndarray]) -> list[tuple[str, str]]:
    problems = _position_problems("positions", np.asarray(inputs["positions"]))
    X = np.asarray(inputs["X"])
    largest = float(np.max(np.abs(X))) if X.size else 0.0
    if (cfg.intensity_scale * largest) ** 2 > float(np.finfo(cfg.dtype).max):
        problems.append(("X", f"amplitudes whose counts (intensity_scale * X)^2 fit {cfg.dtype}; the largest X is "
                              f"{largest:.3g}, so the Poisson loss overflows"))
    return problems or _zero_problems(cfg, inputs, None) or _amplitude_problems(cfg, inputs, None)


def input_problems(pipeline: str, cfg: ForwardConfig, inputs: Mapping[str, np.ndarray]) -> list[tuple[str, str]]:
    """(key, what was expected and why) for every input that makes a stage degenerate."""
    if pipeline == "simulate":
        return _simulate_problems(cfg, inputs)
    if pipeline == "physics":
        return (_position_problems("positions", np.asarray(inputs["positions"]))
                or _zero_problems(cfg, inputs, "object_patches") or _amplitude_problems(cfg, inputs, "object_patches"))
    if pipeline == "pinn":
        return _pinn_problems(cfg, inputs)
    return []
