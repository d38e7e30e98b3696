"""Adapters loaded by import path in the tests (``tests.plugin_adapters:NAME``)."""

from backends.torch import TorchBackend
from backends.torch import stages


def _sign_flipped_canvas(ctx, patches, offsets):
    return stages.object_canvas(ctx, patches, -offsets)


class SignFlipTorch(TorchBackend):
    """The Torch port with PtychoPINN's historical reassembly sign flip."""

    name = "torch-signflip"
    STAGES = {**TorchBackend.STAGES, "object_canvas": _sign_flipped_canvas}


INSTANCE = TorchBackend()


def _raising_farfield(ctx, wave):
    raise RuntimeError("reference farfield exploded")


class RaisingReference(TorchBackend):
    """A reference that crashes: the CLI must not report this as a parity verdict."""

    name = "raising-reference"
    STAGES = {**TorchBackend.STAGES, "farfield": _raising_farfield}
