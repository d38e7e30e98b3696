"""CNN parameters in the canonical (Keras) layout, with stable names.

``weight_specs`` lists every parameter the spec's network has under a
configuration; ``init_weights`` fills them deterministically from numpy's
PCG64 (Glorot-uniform kernels; zero biases unless ``bias_scale`` is set, since
zero biases would hide a bias-mapping bug). Kernels are (H, W, in, out).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import numpy as np

from .config import ForwardConfig

HEADS = ("amp", "phase")
CROPPED_FEATURES = 4  # h[..., -4:] feeds the probe_big border branch


def _conv(prefix: str, fan_in: int, fan_out: int) -> list[tuple[str, tuple[int, ...]]]:
    return [(f"{prefix}.kernel", (3, 3, fan_in, fan_out)), (f"{prefix}.bias", (fan_out,))]


def _block(prefix: str, fan_in: int, filters: int) -> list[tuple[str, tuple[int, ...]]]:
    return _conv(f"{prefix}.conv0", fan_in, filters) + _conv(f"{prefix}.conv1", filters, filters)


def weight_specs(cfg: ForwardConfig) -> list[tuple[str, tuple[int, ...]]]:
    """(name, canonical shape) of every parameter, in a stable order."""
    specs: list[tuple[str, tuple[int, ...]]] = []
    fan_in = cfg.C
    for index, filters in enumerate(cfg.encoder_filters):
        specs += _block(f"encoder.block{index}", fan_in, filters)
        fan_in = filters
    bottleneck = fan_in
    for head in HEADS:
        prefix = f"decoder.{head}"
        fan_in = bottleneck
        for index, filters in enumerate(cfg.decoder_filters):
            specs += _block(f"{prefix}.block{index}", fan_in, filters)
            fan_in = filters
        if cfg.pad_object:
            specs += _conv(f"{prefix}.conv1", cfg.features - CROPPED_FEATURES, cfg.Co)
        if cfg.probe_big or not cfg.pad_object:
            block_in = CROPPED_FEATURES if cfg.pad_object else cfg.features
            specs += _block(f"{prefix}.final_block", block_in, cfg.final_block_filters)
            specs += _conv(f"{prefix}.conv2", cfg.final_block_filters, cfg.Co)
    return specs


def init_weights(cfg: ForwardConfig, seed: int = 0, bias_scale: float = 0.0) -> dict[str, np.ndarray]:
    """Deterministic Glorot-uniform kernels (numpy PCG64), biases zero or U(-b, b)."""
    rng = np.random.Generator(np.random.PCG64(seed))
    weights = {}
    for name, shape in weight_specs(cfg):
        if name.endswith(".kernel"):
            fan_in = shape[0] * shape[1] * shape[2]
            fan_out = shape[0] * shape[1] * shape[3]
            limit = np.sqrt(6.0 / (fan_in + fan_out))
            values = rng.uniform(-limit, limit, size=shape)
        elif bias_scale:
            values = rng.uniform(-bias_scale, bias_scale, size=shape)
        else:
            values = np.zeros(shape)
        weights[name] = values.astype(cfg.dtype)
    return weights


def weight_problems(cfg: ForwardConfig, weights: Mapping[str, np.ndarray]) -> list[str]:
    """Missing, unexpected, mis-shaped or mis-typed parameters, one line each."""
    expected = dict(weight_specs(cfg))
    problems = [f"missing parameter {name!r} with shape {shape}" for name, shape in expected.items()
                if name not in weights]
    problems += [f"unexpected parameter {name!r}" for name in weights if name not in expected]
    for name, shape in expected.items():
        if name not in weights:
            continue
        array = np.asarray(weights[name])
        if array.shape != shape:
            problems.append(f"parameter {name!r} has shape {array.shape}, expected {shape}")
        elif array.dtype != np.dtype(cfg.dtype):
            problems.append(f"parameter {name!r} has dtype {array.dtype}, expected {cfg.dtype}")
        elif not np.all(np.isfinite(array)):
            problems.append(f"parameter {name!r} holds NaN or Inf")
    return problems


def weights_fingerprint(weights: Mapping[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for name in sorted(weights):
        array = np.ascontiguousarray(weights[name])
        digest.update(f"{name}:{array.dtype.str}:{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()[:16]
