"""A porting team's adapter: their PyTorch implementation behind the harness's adapter protocol.

Here the "port" is the harness's own Torch backend with one stage written
the team's way (the far field through ``torch.fft.fftn`` over the two image
axes instead of ``fft2``), which agrees to rounding. A real port wraps its own
modules the same way: a stage table, or ``run_pipeline`` / ``run_stage``
(see parity/adapters.py and README "Plugging in your own implementation").
"""

import torch

from backends.torch import TorchBackend


def farfield(ctx, wave):
    """Orthonormal 2-D FFT of the exit wave (channels-first tensors: the image axes are the last two)."""
    return torch.fft.fftn(wave, dim=(-2, -1), norm="ortho")


class MyPort(TorchBackend):
    name = "my-port"
    STAGES = {**TorchBackend.STAGES, "farfield": farfield}
