"""PyTorch reimplementation backend (channels first inside, CPU or CUDA)."""

from backends.common.determinism import configure_torch

configure_torch()

from .backend import TorchBackend  # noqa: E402

__all__ = ["TorchBackend"]
