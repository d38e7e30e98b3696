"""The PyTorch reimplementation as a backend adapter (CPU or CUDA)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from backends.common.backend import Backend
from backends.common.config import ForwardConfig
from backends.common.taps import TapSpec

from .network import PtychoNet
from .stages import STAGES
from .state_dict import from_state_dict, to_state_dict


class TorchBackend(Backend):
    name = "torch"
    frameworks = ("torch",)
    STAGES = STAGES

    def __init__(self, device: str = "cpu") -> None:
        try:
            kind = torch.device(device).type
        except (RuntimeError, TypeError):
            raise ValueError(f"device {device!r} is not a PyTorch device; expected cpu, cuda or cuda:N") from None
        if kind == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {device!r} asked for, but this PyTorch sees no CUDA device")
        if kind not in ("cpu", "cuda"):
            raise ValueError(f"device {device!r}: this backend runs on cpu or cuda")
        super().__init__(device)

    def to_internal(self, spec: TapSpec, cfg: ForwardConfig, array: np.ndarray) -> torch.Tensor:
        """Canonical array -> internal tensor with one copy at most (the channels-first one).

        A C-contiguous, writable array is wrapped, not copied (``torch.from_numpy``);
        stages never write into their inputs. A torch tensor (canonical layout) is taken as it is,
        moved only if it is on another device: inputs already on the GPU cost no copy.
        """
        if isinstance(array, torch.Tensor):
            tensor = array.to(self.device)
        else:
            array = np.asarray(array)
            if not (array.flags.c_contiguous and array.flags.writeable):
                array = np.array(array, order="C")  # torch has no read-only tensors
            tensor = torch.from_numpy(array).to(self.device)
        if spec.layout == "BHWC":
            return tensor.permute(0, 3, 1, 2).contiguous()
        if spec.layout == "B12C":
            return tensor[:, 0].transpose(1, 2).contiguous()
        return tensor

    def canonical_view(self, spec: TapSpec, tensor: torch.Tensor) -> torch.Tensor:
        """The internal tensor in the canonical layout, as a view: no copy, still on the device."""
        if spec.layout == "BHWC":
            return tensor.permute(0, 2, 3, 1)
        if spec.layout == "B12C":
            return tensor.transpose(1, 2)[:, None]
        return tensor

    def to_canonical(self, spec: TapSpec, cfg: ForwardConfig, tensor: torch.Tensor) -> np.ndarray:
        """A C-ordered numpy array the caller owns (exactly one copy: never aliases a live tensor)."""
        view = self.canonical_view(spec, tensor.detach())
        if view.device.type != "cpu":
            return view.contiguous().cpu().numpy()  # the layout change on the device, then one transfer
        array = view.numpy()
        return array.copy(order="C") if array.flags.c_contiguous else np.ascontiguousarray(array)

    def to_canonical_native(self, spec: TapSpec, cfg: ForwardConfig, tensor: torch.Tensor) -> torch.Tensor:
        """The canonical layout as a view on the device: no copy, for comparison engines that take tensors."""
        if spec.layout == "BHWC":
            return tensor.permute(0, 2, 3, 1)
        if spec.layout == "B12C":
            return tensor.transpose(1, 2)[:, None]
        return tensor

    def build_params(self, cfg: ForwardConfig, weights: Mapping[str, np.ndarray]) -> PtychoNet:
        network = PtychoNet(cfg)
        state = {name: torch.from_numpy(value) for name, value in to_state_dict(cfg, weights).items()}
        network.load_state_dict(state, strict=True)
        return network.to(self.device).eval()

    def canonical_weights(self) -> dict[str, np.ndarray]:
        """The parameters the network it last built holds, mapped back to canonical names and the Keras layout:
        the port weights audit then checks what a subclass whose ``build_params`` loads them its own way holds."""
        network = self._params
        if not isinstance(network, PtychoNet):
            raise NotImplementedError("no PtychoNet was built: nothing to map back")
        return from_state_dict(network.cfg, network.state_dict())

    def _call(self, spec, ctx, inputs):
        with torch.no_grad():
            return super()._call(spec, ctx, inputs)

    def versions(self) -> dict[str, str]:
        info = {"torch": torch.__version__, "numpy": np.__version__}
        if self.device.startswith("cuda"):
            info["cuda"] = str(torch.version.cuda)
            info["gpu"] = torch.cuda.get_device_name(self.device)
        return info
