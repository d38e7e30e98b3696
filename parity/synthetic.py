"""Deterministic synthetic inputs for every pipeline, from numpy's PCG64 only.

Framework samplers change between releases; fixtures drawn from them drift.
Everything here is a pure function of (configuration, batch, seed).
"""

from __future__ import annotations

import numpy as np

from backends.common.config import ForwardConfig


def generator(seed: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(seed))


def smooth_field(rng: np.random.Generator, shape: tuple[int, int], correlation: float) -> np.ndarray:
    """A smooth real random field in [0, 1] (white noise low-passed in Fourier space)."""
    noise = rng.normal(size=shape)
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.fftfreq(shape[1])[None, :]
    spectrum = np.fft.fft2(noise) * np.exp(-(fx**2 + fy**2) * (np.pi * correlation) ** 2 / 2)
    field = np.real(np.fft.ifft2(spectrum))
    span = field.max() - field.min()
    return (field - field.min()) / (span if span > 0 else 1.0)


def gaussian_probe(n: int, rng: np.random.Generator, dtype: str = "complex64") -> np.ndarray:
    """A focused-beam-like probe: Gaussian amplitude with a curved, slightly random phase."""
    y, x = np.mgrid[0:n, 0:n] - (n / 2 - 0.5)
    width = n / 6 * rng.uniform(0.9, 1.1)
    amplitude = np.exp(-(x**2 + y**2) / (2 * width**2))
    phase = 0.5 * (x**2 + y**2) / width**2 + rng.uniform(-0.3, 0.3) * x / n
    return (amplitude * np.exp(1j * phase)).astype(dtype)


def object_patches(cfg: ForwardConfig, batch: int, rng: np.random.Generator) -> np.ndarray:
    """Smooth complex patches (B, N, N, Co): amplitude in [0.5, 1], phase in [-1, 1]."""
    shape = (batch, cfg.Co, cfg.N, cfg.N)
    amplitude = np.empty(shape)
    phase = np.empty(shape)
    for index in np.ndindex(batch, cfg.Co):
        amplitude[index] = 0.5 + 0.5 * smooth_field(rng, (cfg.N, cfg.N), cfg.N / 16)
        phase[index] = 2 * smooth_field(rng, (cfg.N, cfg.N), cfg.N / 16) - 1
    patches = amplitude * np.exp(1j * phase)
    return np.transpose(patches, (0, 2, 3, 1)).astype(cfg.complex_dtype)


def group_positions(cfg: ForwardConfig, batch: int, rng: np.random.Generator, jitter: float = 1.5) -> np.ndarray:
    """Offsets (B, 1, 2, C) of a g x g neighbour group, as PtychoPINN stores them.

    Scan positions sit on the nominal grid (spacing ``offset``) plus uniform
    jitter; stored offsets are o_c = -(pos_c - mean(pos)). Non-integer on purpose.
    """
    g = cfg.gridsize
    rows, cols = np.divmod(np.arange(cfg.C), g)
    nominal = np.stack([cols * cfg.offset, rows * cfg.offset]).astype(float)  # (2, C) as (x, y)
    scan = nominal[None] + rng.uniform(-jitter, jitter, size=(batch, 2, cfg.C))
    offsets = -(scan - scan.mean(axis=2, keepdims=True))
    return offsets[:, None].astype(cfg.dtype)


def diffraction(cfg: ForwardConfig, batch: int, rng: np.random.Generator) -> np.ndarray:
    """Positive amplitudes (B, N, N, C) shaped like diffraction: bright centre, weak tails."""
    y, x = np.mgrid[0 : cfg.N, 0 : cfg.N] - cfg.N / 2
    envelope = np.exp(-(x**2 + y**2) / (2 * (cfg.N / 8) ** 2))[None, :, :, None]
    counts = rng.poisson(lam=200 * envelope + 1, size=(batch, cfg.N, cfg.N, cfg.C))
    return (np.sqrt(counts) * cfg.intensity_scale / 20.0).astype(cfg.dtype)


def large_object(shape: tuple[int, int], rng: np.random.Generator, dtype: str = "complex64") -> np.ndarray:
    amplitude = 0.3 + 0.7 * smooth_field(rng, shape, 6.0)
    phase = np.pi * (smooth_field(rng, shape, 10.0) - 0.5)
    return (amplitude * np.exp(1j * phase)).astype(dtype)


def raster_scan(object_shape: tuple[int, int], n: int, count: int, rng: np.random.Generator,
                dtype: str = "float32") -> np.ndarray:
    """``count`` scan positions (x, y) spread over the object, some near or past its edge."""
    height, width = object_shape
    xs = rng.uniform(n / 4, width - n / 4, size=count)
    ys = rng.uniform(n / 4, height - n / 4, size=count)
    return np.stack([xs, ys], axis=1).astype(dtype)


def pipeline_inputs(pipeline: str, cfg: ForwardConfig, batch: int, seed: int) -> dict[str, np.ndarray]:
    """Canonical inputs for ``pipeline`` (``batch`` = B, or M scan positions for simulate)."""
    rng = generator(seed)
    probe = gaussian_probe(cfg.N, rng, cfg.complex_dtype)
    if pipeline == "pinn":
        return {"X": diffraction(cfg, batch, rng), "positions": group_positions(cfg, batch, rng), "probe": probe}
    if pipeline == "physics":
        return {"object_patches": object_patches(cfg, batch, rng), "positions": group_positions(cfg, batch, rng),
                "probe": probe}
    if pipeline == "simulate":
        shape = (2 * cfg.N + 16, 2 * cfg.N + 24)
        return {"object": large_object(shape, rng, cfg.complex_dtype),
                "scan_positions": raster_scan(shape, cfg.N, batch, rng, cfg.dtype), "probe": probe}
    raise KeyError(f"unknown pipeline {pipeline!r}")
