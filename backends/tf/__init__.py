"""TensorFlow reference backend (channels last, the spec's canonical layout)."""

from backends.common.determinism import configure_tensorflow

# Determinism must be switched on before TensorFlow creates its runtime.
configure_tensorflow()

from .backend import TensorFlowBackend  # noqa: E402

__all__ = ["TensorFlowBackend"]
