"""Canonical (Keras-layout) weights <-> this port's ``state_dict``.

The one kernel converter lives here: Keras stores a convolution kernel as
(H, W, in, out), PyTorch as (out, in, H, W). Names map through a table built
from the configuration, so a parameter the table does not know is an error,
never a silent skip.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping

import numpy as np

from backends.common.config import ForwardConfig
from backends.common.weights import weight_specs

KERAS_TO_TORCH_KERNEL = (3, 2, 0, 1)
TORCH_TO_KERAS_KERNEL = (2, 3, 1, 0)


def kernel_to_torch(kernel: np.ndarray) -> np.ndarray:
    """(H, W, in, out) -> (out, in, H, W)."""
    if kernel.ndim != 4:
        raise ValueError(f"a convolution kernel has 4 axes, got shape {kernel.shape}")
    return np.ascontiguousarray(np.transpose(kernel, KERAS_TO_TORCH_KERNEL))


def kernel_to_keras(weight: np.ndarray) -> np.ndarray:
    """(out, in, H, W) -> (H, W, in, out)."""
    if weight.ndim != 4:
        raise ValueError(f"a convolution weight has 4 axes, got shape {weight.shape}")
    return np.ascontiguousarray(np.transpose(weight, TORCH_TO_KERAS_KERNEL))


@dataclasses.dataclass(frozen=True)
class ParameterMapping:
    canonical: str
    torch: str
    canonical_shape: tuple[int, ...]
    torch_shape: tuple[int, ...]
    transform: str  # "transpose(3, 2, 0, 1)" or "identity"


def torch_name(canonical: str) -> str:
    """'encoder.block1.conv0.kernel' -> 'encoder.blocks.1.conv0.weight' etc."""
    name = re.sub(r"^decoder\.(amp|phase)\.", r"decoder_\1.", canonical)
    name = re.sub(r"\.block(\d+)\.", r".blocks.\1.", name)
    return name.replace(".kernel", ".weight")


def parameter_table(cfg: ForwardConfig) -> list[ParameterMapping]:
    table = []
    for name, shape in weight_specs(cfg):
        if name.endswith(".kernel"):
            torch_shape = tuple(shape[axis] for axis in KERAS_TO_TORCH_KERNEL)
            transform = f"transpose{KERAS_TO_TORCH_KERNEL}"
        else:
            torch_shape, transform = shape, "identity"
        table.append(ParameterMapping(name, torch_name(name), shape, torch_shape, transform))
    return table


def to_state_dict(cfg: ForwardConfig, weights: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    state = {}
    for entry in parameter_table(cfg):
        value = np.asarray(weights[entry.canonical])
        state[entry.torch] = kernel_to_torch(value) if entry.transform != "identity" else value.copy()
    return state


def from_state_dict(cfg: ForwardConfig, state: Mapping[str, object]) -> dict[str, np.ndarray]:
    """A torch state_dict (tensors or arrays) -> canonical weights; unknown keys are errors."""
    table = parameter_table(cfg)
    known = {entry.torch for entry in table}
    unknown = sorted(set(state) - known)
    missing = sorted(known - set(state))
    if unknown or missing:
        raise KeyError(f"state_dict does not fit the configuration: missing {missing}, unexpected {unknown}")
    weights = {}
    for entry in table:
        value = state[entry.torch]
        array = value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)
        if array.shape != entry.torch_shape:
            raise ValueError(f"state_dict[{entry.torch!r}] has shape {array.shape}, expected {entry.torch_shape}")
        weights[entry.canonical] = kernel_to_keras(array) if entry.transform != "identity" else array.copy()
    return weights
