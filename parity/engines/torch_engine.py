"""The Torch engine: ``fused.fused_chunk`` on the candidate's device (CPU or CUDA).

Imported only when a Torch tensor arrives.  The reference chunk (numpy) is copied to the
candidate's device once; the difference and every reduction run there, and only scalars,
small tables and a few gathered elements come back.  On CUDA every element's magnitude and
phase error is evaluated in float64 (cheap there, and no host round trips for screening);
on CPU the complex maxima are screened like the numpy engine does.
"""

from __future__ import annotations

import numpy as np
import torch

BLOCK = 4096

_TORCH_DTYPES = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64,
                 np.dtype(np.complex64): torch.complex64, np.dtype(np.complex128): torch.complex128}


def _real_view(x: torch.Tensor) -> torch.Tensor:
    return torch.view_as_real(x).reshape(-1) if x.is_complex() else x.reshape(-1)


class TorchOps:
    name = "torch"

    def __init__(self, device: torch.device) -> None:
        self.device = torch.device(device)
        self.screen = self.device.type == "cpu"
        # CPU: |z| as sqrt(re^2 + im^2), several times faster than torch's complex abs there; guarded
        self.squares = self.device.type == "cpu"

    def prepare_reference(self, a, work):
        """The reference chunk on the device once, contiguous in canonical order."""
        if isinstance(a, torch.Tensor):
            return a.detach().resolve_conj().resolve_neg().to(self.device, _TORCH_DTYPES[np.dtype(work)]).contiguous()
        return torch.from_numpy(np.asarray(a, dtype=work, order="C")).to(self.device)

    def prepare_candidate(self, b, work):
        """The candidate as it comes (any strides); converted only if its dtype or device differ."""
        if not isinstance(b, torch.Tensor):
            b = torch.from_numpy(np.asarray(b))
        return b.detach().resolve_conj().resolve_neg().to(self.device, _TORCH_DTYPES[np.dtype(work)])

    @staticmethod
    def is_complex(x) -> bool:
        return x.is_complex()

    @staticmethod
    def eps(x) -> float:
        return float(torch.finfo(x.real.dtype if x.is_complex() else x.dtype).eps)

    @staticmethod
    def tiny(x) -> float:
        return float(torch.finfo(x.real.dtype if x.is_complex() else x.dtype).tiny) ** 0.5

    def magnitude(self, x):
        if not x.is_complex():
            return torch.abs(x)
        if not self.squares:
            return torch.abs(x)
        parts = torch.view_as_real(x)
        out = torch.mul(parts[..., 0], parts[..., 0])
        out.addcmul_(parts[..., 1], parts[..., 1])
        return out.sqrt_()

    @staticmethod
    def sub(b, a):
        return torch.sub(b, a, out=torch.empty_like(a, memory_format=torch.contiguous_format))

    @staticmethod
    def _blocks(flat: torch.Tensor) -> float:
        full = flat.numel() - flat.numel() % BLOCK
        total = flat[:full].view(-1, BLOCK).sum(dim=1).double().sum() if full else flat.new_zeros((), dtype=torch.float64)
        return float(total + flat[full:].double().sum())

    def block_sum(self, x) -> float:
        return self._blocks(x.reshape(-1))

    def block_dot(self, x, y) -> float:
        """Re sum conj(x) y, x and y contiguous."""
        return self._blocks(torch.mul(_real_view(x), _real_view(y)))

    @staticmethod
    def amax(x, axes):
        return x.amax(dim=axes) if axes else x

    @staticmethod
    def masked(x, mask):
        """x where mask, 0 elsewhere (x finite and >= 0)."""
        return x * mask

    @staticmethod
    def argmax(x) -> int:
        return int(torch.argmax(x))

    def take(self, x, flat):
        if x.ndim == 0:
            return np.full(len(flat), x.cpu().item())
        flat = torch.as_tensor(flat, device=self.device)
        if x.is_contiguous():  # a flat gather
            return x.reshape(-1)[flat].cpu().numpy()
        return x[torch.unravel_index(flat, tuple(x.shape))].cpu().numpy()

    @staticmethod
    def nonzero(mask):
        return torch.nonzero(mask.reshape(-1)).reshape(-1).cpu().numpy()

    @staticmethod
    def count(mask) -> int:
        return int(torch.count_nonzero(mask))

    @staticmethod
    def to_numpy(x):
        return x.cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)

    @staticmethod
    def contiguous(x):
        return x.contiguous()

    def mask(self, mask, shape):
        if isinstance(mask, torch.Tensor):
            mask = mask.to(self.device)
        else:
            mask = torch.from_numpy(np.asarray(mask, order="C")).to(self.device)
        if mask.dtype != torch.bool or tuple(mask.shape) != tuple(shape):
            raise ValueError(f"a region mask must be a boolean array of the chunk's shape {tuple(shape)}, "
                             f"got {mask.dtype} {tuple(mask.shape)}")
        return mask

    @staticmethod
    def identical(a, b) -> bool:
        if a.ndim and not torch.equal(a[:1], b[:1]):
            return False
        return bool(torch.equal(a, b))

    @staticmethod
    def ratio(ad, aa, threshold: float):
        """|d| / max(|a|, threshold): the ratio where |a| >= threshold, a smaller number elsewhere."""
        out = torch.clamp_min(aa, max(threshold, torch.finfo(aa.dtype).tiny))
        return torch.div(ad, out, out=out)

    @staticmethod
    def _wide(a, b):
        return a.to(torch.complex128), b.to(torch.complex128)

    def exact_magnitude_error(self, a, b) -> float:
        a64, b64 = self._wide(a, b)
        return float((b64.abs() - a64.abs()).abs().max()) if a.numel() else 0.0

    def exact_phase_error(self, a, b, threshold: float) -> float:
        a64, b64 = self._wide(a, b)
        keep = a64.abs() >= threshold
        if not bool(keep.any()):
            return 0.0
        return float(torch.angle(b64[keep] * a64[keep].conj()).abs().max())

    def phase_frontier(self, a, b, threshold: float):
        """(|a|, phase error) pairs that can be on the chunk's frontier (see ``parity.phase_frontier``)."""
        from .. import phase_frontier

        a64, b64 = self._wide(a.reshape(-1), b.reshape(-1))
        magnitude = a64.abs()
        keep = magnitude >= threshold
        magnitude, a64, b64 = magnitude[keep], a64[keep], b64[keep]
        errors = torch.angle(b64 * a64.conj()).abs()
        if magnitude.numel() > 1:
            bucket = torch.floor(torch.log2(magnitude) * phase_frontier.BUCKETS_PER_OCTAVE)
            bucket = torch.nan_to_num(bucket, neginf=-9000.0).long()
            low = int(bucket.min())
            best = torch.full((int(bucket.max()) - low + 2,), -torch.inf, dtype=torch.float64, device=self.device)
            best.scatter_reduce_(0, bucket - low, errors, reduce="amax")
            above = torch.flip(torch.cummax(torch.flip(best, (0,)), 0).values, (0,))
            survivors = errors > above[bucket - low + 1]
            magnitude, errors = magnitude[survivors], errors[survivors]
        return magnitude.cpu().numpy(), errors.cpu().numpy()
