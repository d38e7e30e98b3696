"""The one determinism switch for both frameworks, recorded with every result.

Import order matters: the environment variables below are read by TensorFlow
and cuBLAS when they load, so ``apply_environment`` runs before the first
``import tensorflow`` / ``import torch`` (the backends call it at import).
``PARITY_THREADS`` fixes the intra-op thread count (default 2): on CPU the
way a reduction is split across threads changes its rounding.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Any

ENVIRONMENT = {
    # oneDNN's fused CPU kernels reorder accumulations depending on the CPU's
    # instruction set, so results move between machines; Eigen's don't.
    "TF_ENABLE_ONEDNN_OPTS": "0",
    "TF_DETERMINISTIC_OPS": "1",
    "TF_CUDNN_DETERMINISTIC": "1",
    # cuBLAS needs a fixed workspace to be deterministic with torch's switch on.
    "CUBLAS_WORKSPACE_CONFIG": ":4096:8",
    # TensorFlow's start-up chatter drowns the report otherwise.
    "TF_CPP_MIN_LOG_LEVEL": "2",
}


GRAPPLER_OPTIONS = {"constant_folding": False, "arithmetic_optimization": False}


@dataclasses.dataclass(frozen=True)
class DeterminismSettings:
    intra_op_threads: int
    inter_op_threads: int = 1

    @classmethod
    def from_environment(cls) -> DeterminismSettings:
        raw = os.environ.get("PARITY_THREADS", "2")
        try:
            threads = int(raw)
            if threads < 1:
                raise ValueError
        except ValueError:
            raise ValueError(f"PARITY_THREADS must be a positive integer, got {raw!r}") from None
        return cls(intra_op_threads=threads)


SETTINGS = DeterminismSettings.from_environment()
_configured: set[str] = set()


def apply_environment() -> None:
    """Set the variables frameworks read at import; warn if one loaded first."""
    for key, value in ENVIRONMENT.items():
        os.environ.setdefault(key, value)


def configure_tensorflow() -> Any:
    """Import TensorFlow under the switch and return the module."""
    apply_environment()
    import tensorflow as tf

    if "tensorflow" not in _configured:
        tf.config.experimental.enable_op_determinism()
        try:
            tf.config.threading.set_intra_op_parallelism_threads(SETTINGS.intra_op_threads)
            tf.config.threading.set_inter_op_parallelism_threads(SETTINGS.inter_op_threads)
        except RuntimeError:
            pass  # runtime already initialised by the host program; recorded as found
        try:
            tf.config.experimental.enable_tensor_float_32_execution(False)
        except AttributeError:
            pass
        # Grappler rewrites that change roundings in traced graphs: constant folding turns x / c
        # into x * (1 / c), the arithmetic optimizer turns x ** 2 into Square and regroups sums.
        # Off, a traced stage is bitwise identical to the same stage run eagerly.
        tf.config.optimizer.set_experimental_options(GRAPPLER_OPTIONS)
        _configured.add("tensorflow")
    return tf


def configure_torch() -> Any:
    """Import PyTorch under the switch and return the module."""
    apply_environment()
    import torch

    if "torch" not in _configured:
        torch.use_deterministic_algorithms(True)
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        torch.set_float32_matmul_precision("highest")
        torch.set_num_threads(SETTINGS.intra_op_threads)
        try:
            torch.set_num_interop_threads(SETTINGS.inter_op_threads)
        except RuntimeError:
            pass  # only settable before the first parallel op; recorded as found
        _configured.add("torch")
    return torch


def record() -> dict[str, Any]:
    """The determinism state as it is now, for provenance."""
    state: dict[str, Any] = {
        "settings": dataclasses.asdict(SETTINGS),
        "environment": {key: os.environ.get(key) for key in ENVIRONMENT},
    }
    tf = sys.modules.get("tensorflow")
    if tf is not None and hasattr(tf, "config"):
        from tensorflow.python.framework import config as tf_config  # the public API has no getter

        state["tensorflow"] = {
            "op_determinism": bool(tf_config.is_op_determinism_enabled()),
            "tensor_float_32": bool(tf.config.experimental.tensor_float_32_execution_enabled()),
            "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
            "grappler": {key: tf.config.optimizer.get_experimental_options().get(key) for key in GRAPPLER_OPTIONS},
        }
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "backends"):
        state["torch"] = {
            "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
            "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
            "cudnn_deterministic": torch.backends.cudnn.deterministic,
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
            "intra_op_threads": torch.get_num_threads(),
            "inter_op_threads": torch.get_num_interop_threads(),
        }
    return state
