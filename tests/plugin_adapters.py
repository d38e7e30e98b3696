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
