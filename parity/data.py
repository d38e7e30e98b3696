"""Real data shipped in ``fixtures/data``: the fly001 probe and the moon object.

The probe is a measured 64 x 64 X-ray probe; the object is built from a test
image as PtychoPINN-style codes do: amplitude from luminance, a phase derived
from it, both scaled into a sensible range.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np

from .errors import ParityInputError
from .files import regular_file

PROBE_KEY = "probeGuess"


_PACKAGE = Path(__file__).resolve().parent
INSTALLED_FIXTURES = _PACKAGE / "_fixtures"  # a wheel's copy of fixtures/ (pyproject.toml: package-dir)


def fixtures_dir() -> Path:
    """``$PARITY_FIXTURES``, else the shipped tolerance table, goldens and data: the installed package's
    ``parity/_fixtures`` or, in a checkout (editable installs too), the repository's ``fixtures/``."""
    override = os.environ.get("PARITY_FIXTURES")
    if override:
        return Path(override)
    return INSTALLED_FIXTURES if INSTALLED_FIXTURES.is_dir() else _PACKAGE.parent / "fixtures"


def fixtures_are_installed() -> bool:
    """Whether the shipped fixtures live inside an installed package (no place to write a user's goldens)."""
    return fixtures_dir() == INSTALLED_FIXTURES


@functools.lru_cache(maxsize=None)
def fly001_probe() -> np.ndarray:
    """The measured probe, complex128 (64, 64)."""
    path = fixtures_dir() / "data" / "fly001_probe.npz"
    if path.exists():
        regular_file(path, "probe fixture")  # a FIFO or device there would block the read forever
    try:
        with np.load(path, allow_pickle=False) as archive:
            if PROBE_KEY not in archive.files:
                raise ParityInputError(f"{path}: key {PROBE_KEY!r} missing; keys are {archive.files}")
            probe = archive[PROBE_KEY]
    except FileNotFoundError:
        raise ParityInputError(f"{path}: probe fixture not found (set PARITY_FIXTURES?)") from None
    if probe.shape != (64, 64) or not np.iscomplexobj(probe):
        raise ParityInputError(f"{path}: key {PROBE_KEY!r}: expected complex (64, 64), got {probe.dtype} {probe.shape}")
    return probe.astype(np.complex128)


def probe_for(n: int) -> np.ndarray:
    """The fly001 probe cropped (central window) or zero-padded to N x N."""
    probe = fly001_probe()
    size = probe.shape[0]
    if n <= size:
        start = (size - n) // 2
        return probe[start : start + n, start : start + n].copy()
    padded = np.zeros((n, n), complex)
    start = (n - size) // 2
    padded[start : start + size, start : start + size] = probe
    return padded


@functools.lru_cache(maxsize=None)
def moon_luminance(downsample: int = 4) -> np.ndarray:
    """Luminance of moon.png in [0, 1], block-averaged by ``downsample``."""
    from matplotlib import image

    path = fixtures_dir() / "data" / "moon.png"
    if path.exists():
        regular_file(path, "object fixture")
    try:
        pixels = np.asarray(image.imread(path), dtype=float)
    except FileNotFoundError:
        raise ParityInputError(f"{path}: object fixture not found (set PARITY_FIXTURES?)") from None
    except (ValueError, SyntaxError, OSError) as error:  # not a PNG (PIL raises SyntaxError for a bad header)
        raise ParityInputError(f"{path}: object fixture: not a readable PNG ({error})") from None
    luminance = pixels[..., :3] @ np.array([0.299, 0.587, 0.114]) if pixels.ndim == 3 else pixels
    height, width = (dim - dim % downsample for dim in luminance.shape)
    blocks = luminance[:height, :width].reshape(height // downsample, downsample, width // downsample, downsample)
    averaged = blocks.mean(axis=(1, 3))
    return (averaged - averaged.min()) / (averaged.max() - averaged.min())


def moon_object(downsample: int = 4) -> np.ndarray:
    """Complex object: amplitude 0.2 + 0.8 L, phase (pi / 2) (L - mean L), complex128."""
    luminance = moon_luminance(downsample)
    amplitude = 0.2 + 0.8 * luminance
    phase = 0.5 * np.pi * (luminance - luminance.mean())
    return amplitude * np.exp(1j * phase)
