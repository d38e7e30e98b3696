"""Comparison engines: one chunk of (reference, candidate) in, ``ChunkStats`` out.

``numpy`` for numpy inputs, ``torch`` when either side is a Torch tensor (on that tensor's
device), both running the fast path of ``fused``; ``exact`` when the fast path cannot vouch
for its result.  Torch is never imported here: a tensor can only arrive if its caller
imported Torch already, so ``sys.modules`` tells whether one can be present.
"""

from __future__ import annotations

import sys

import numpy as np

from .exact import exact_chunk
from .fused import fused_chunk
from .numpy_engine import NumpyOps
from .reference import ReferenceCache
from .stats import ChunkStats, PhasePlan

__all__ = ["ChunkStats", "PhasePlan", "ReferenceCache", "run_chunk", "is_tensor", "to_numpy", "ENGINES"]

ENGINES = ("auto", "numpy", "torch")
_NUMPY = NumpyOps()


def is_tensor(x) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def to_numpy(x) -> np.ndarray:
    """A host numpy array of ``x`` (a Torch tensor is detached and copied to the CPU if needed)."""
    if is_tensor(x):
        return x.detach().resolve_conj().resolve_neg().cpu().numpy()
    return np.asarray(x)


def _ops(reference, candidate, engine: str):
    """``auto``: numpy for numpy inputs and CPU tensors (seen zero-copy), Torch on the device of a CUDA tensor.

    CPU tensors go to numpy because there it is the faster of the two (docs/tolerances.md: numpy's
    complex |z| is several times Torch's, and single-threaded passes do not wait on a busy second core).
    """
    tensor = candidate if is_tensor(candidate) else (reference if is_tensor(reference) else None)
    if engine == "numpy" or (engine == "auto" and (tensor is None or tensor.device.type == "cpu")):
        return _NUMPY
    if tensor is None:
        import torch  # asked for explicitly

        return _torch_ops(torch.device("cpu"))
    return _torch_ops(tensor.device)


def _torch_ops(device):
    from .torch_engine import TorchOps

    return TorchOps(device)


def _fast_dtype(reference_dtype: np.dtype, candidate_dtype: np.dtype) -> np.dtype | None:
    """The working dtype of the fast path, or None when only the exact path handles these dtypes."""
    if reference_dtype.kind != candidate_dtype.kind or reference_dtype.kind not in "fc":
        return None
    work = np.result_type(reference_dtype, candidate_dtype)
    return work if work.itemsize >= (4 if work.kind == "f" else 8) else None


def run_chunk(reference, candidate, geom, start: int, criteria, regions: dict, phase: PhasePlan,
              reference_dtype: np.dtype, candidate_dtype: np.dtype, engine: str = "auto",
              cache: ReferenceCache | None = None) -> ChunkStats:
    """Statistics of one chunk (reference numpy, candidate numpy or Torch) starting at flat ``start``."""
    shape = tuple(reference.shape)
    n = int(np.prod(shape, dtype=np.int64))
    whole_rows = not geom.shape or (start % geom.row_size == 0 and n % geom.row_size == 0
                                    and shape == (n // geom.row_size,) + geom.shape[1:])
    work = _fast_dtype(reference_dtype, candidate_dtype)
    if n and whole_rows and work is not None:
        ops = _ops(reference, candidate, engine)
        if ops is _NUMPY:  # a CPU tensor is viewed, not copied
            if is_tensor(candidate) and not candidate.is_contiguous():
                # A channels-first tensor seen channels-last: Torch's vectorised transpose makes it
                # contiguous in a fraction of what numpy's strided passes over it would cost.
                candidate = candidate.contiguous()
            candidate = to_numpy(candidate)
            if is_tensor(reference):
                reference = to_numpy(reference)
            regions = {name: mask if isinstance(mask, np.ndarray) else to_numpy(mask) for name, mask in regions.items()}
        stats = fused_chunk(ops, reference, candidate, work, geom, start, criteria, regions, phase, cache)
        if stats is not None:
            return stats
    return exact_chunk(to_numpy(reference), to_numpy(candidate), geom, start, criteria,
                       {name: to_numpy(mask) for name, mask in regions.items()}, phase, shape)
