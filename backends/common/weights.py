"""CNN parameters in the canonical (Keras) layout, with stable names.

``weight_specs`` lists every parameter the spec's network has under a
configuration; ``init_weights`` fills them deterministically from numpy's
PCG64 (Glorot-uniform kernels; zero biases unless ``bias_scale`` is set, since
zero biases would hide a bias-mapping bug). Kernels are (H, W, in, out).

The initial weights are bit-portable, so a golden need not store them (the
default network has 2.26 M parameters, ~9 MB in float32): every machine
regenerates the same bits. The argument, checked by a pure-Python
re-implementation in ``tests/test_weights_portable.py``:

- the draws are PCG64's raw 64-bit outputs (``random_raw``), integer
  arithmetic only (SeedSequence hashing, a 128-bit LCG, xor and rotation);
- a draw ``r`` becomes the integer ``j = (r >> 11) - 2**52`` (|j| <= 2**52),
  which converts to float64 exactly;
- the value is ``j * (bound * 2**-52)``: ``bound * 2**-52`` is exact (a power
  of two, far from underflow) and the product is one IEEE multiplication,
  correctly rounded on every conforming machine; ``bound`` itself is
  ``sqrt(6 / (fan_in + fan_out))``, one division and one square root, both
  correctly rounded by IEEE 754 (no exp, log, sin or pow, whose last bit
  depends on the library and the CPU's SIMD path);
- the cast to float32 is one correctly rounded conversion, and no value is
  subnormal (|value| >= bound * 2**-52 or exactly 0).

So ``value`` is uniform on [-bound, bound) (Glorot uniform for kernels,
U(-b, b) for biases), taking one of 2**53 values.
"""

from __future__ import annotations

import hashlib
import math
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


def glorot_bound(shape: tuple[int, ...]) -> float:
    """sqrt(6 / (fan_in + fan_out)) of a (H, W, in, out) kernel: one division, one square root."""
    fan_in = shape[0] * shape[1] * shape[2]
    fan_out = shape[0] * shape[1] * shape[3]
    return math.sqrt(6.0 / (fan_in + fan_out))


def symmetric_uniform(raw: np.ndarray, bound: float) -> np.ndarray:
    """float64 values on [-bound, bound) from raw 64-bit draws, with one rounding each (see the module doc)."""
    steps = (raw >> np.uint64(11)).astype(np.int64) - (1 << 52)  # exact integers in [-2**52, 2**52)
    return steps.astype(np.float64) * (float(bound) * 2.0**-52)


def init_weights(cfg: ForwardConfig, seed: int = 0, bias_scale: float = 0.0) -> dict[str, np.ndarray]:
    """Deterministic, bit-portable Glorot-uniform kernels; biases zero or U(-b, b).

    Parameters draw, in ``weight_specs`` order and C order within each, one
    raw PCG64 output per element; zero biases draw nothing.
    """
    if not (math.isfinite(bias_scale) and bias_scale >= 0):
        raise ValueError(f"bias_scale must be finite and >= 0, got {bias_scale!r}")
    bits = np.random.PCG64(seed)
    weights = {}
    for name, shape in weight_specs(cfg):
        if name.endswith(".kernel"):
            bound = glorot_bound(shape)
        elif bias_scale:
            bound = float(bias_scale)
        else:
            weights[name] = np.zeros(shape, cfg.dtype)
            continue
        raw = bits.random_raw(math.prod(shape))
        weights[name] = symmetric_uniform(raw, bound).reshape(shape).astype(cfg.dtype)
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
