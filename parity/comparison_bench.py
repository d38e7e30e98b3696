"""What the propagated statistics sink costs over a Torch forward with no sink (issue #11).

``measure_comparison_overhead`` runs the Torch candidate's pipeline in interleaved rounds:
a forward with no sink, then the same forward whose sink compares every tap against the
reference's recorded taps (a fresh ``StreamingComparator`` per tap: ``update`` on the whole
batch as one chunk, with the registry's layout and regions, then ``result``).  The sink gets
each tap as the runner v2 will hand it over: the canonical view of the candidate's own
tensor (a permuted, non-contiguous view for channels-first tensors; nothing copied to the
host), so on CUDA the comparison runs on the GPU.  ``candidate_form="numpy"`` hands it a
host numpy copy instead (what the backend's ``to_canonical`` does today).

The ratio of each round (sink / no sink) is reported with its median: on a shared machine
absolute times drift, ratios from interleaved runs much less.  The reference taps
(TensorFlow, or the Torch backend on CPU for machines without TensorFlow) are recorded once,
outside the timing (TensorFlow in a child process); so are the regions (``tap_regions``),
which a runner computes once per case.  Bench code: ``parity/bench.py`` may call this; ``tools/comparison_overhead.py`` prints it.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Any

import numpy as np

from backends.common.regions import tap_regions
from backends.common.taps import pipeline_taps

from .builtin_cases import builtin_case
from .metrics import ReferenceCache, StreamingComparator
from .tolerances import load_tolerances

__all__ = ["measure_comparison_overhead"]


def _canonical_view(spec, tensor):
    """The canonical-layout view of a Torch backend's internal tensor, without a copy."""
    if spec.layout == "BHWC":
        return tensor.permute(0, 2, 3, 1)
    if spec.layout == "B12C":
        return tensor.transpose(1, 2)[:, None]
    return tensor


_RECORD = """
import dataclasses, sys
import numpy as np
from backends.tf import TensorFlowBackend
from parity.builtin_cases import builtin_case
case = dataclasses.replace(builtin_case(sys.argv[1]), batch=int(sys.argv[2]))
np.savez(sys.argv[3], **TensorFlowBackend().run_all(case.pipeline, case.config, case.inputs, case.weights))
"""


def _reference_taps(case, name: str, reference: str) -> dict[str, np.ndarray]:
    """The reference's taps: TensorFlow in a child process (so its thread pools never compete with the
    timed Torch forward), or the Torch backend on CPU (machines without TensorFlow)."""
    if reference == "tf":
        import os
        import subprocess
        import sys
        import tempfile

        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        with tempfile.TemporaryDirectory(prefix="parity-bench-") as folder:
            path = os.path.join(folder, "reference.npz")
            subprocess.run([sys.executable, "-c", _RECORD, name, str(case.batch), path], check=True, cwd=root,
                           env={**os.environ, "PYTHONPATH": root})
            with np.load(path) as recorded:
                return {key: recorded[key] for key in recorded.files}
    from backends.torch import TorchBackend

    return TorchBackend("cpu").run_all(case.pipeline, case.config, case.inputs, case.weights)


def measure_comparison_overhead(pipeline: str = "physics", *, batch: int = 64, rounds: int = 7,
                                device: str = "cpu", reference: str = "tf", candidate_form: str = "tensor",
                                engine: str = "auto", tolerances: str | None = "fixtures/tolerances.toml",
                                share_reference: bool = False) -> dict[str, Any]:
    """Median ratio (forward + statistics sink) / (forward, no sink) over interleaved rounds.

    ``pipeline``: ``pinn`` or ``physics`` (the ``<pipeline>-default`` case at ``batch``).
    ``engine``: passed to every comparator (``auto``, ``numpy``, ``torch``).
    ``share_reference``: the reference side of every tap (|a|, its peaks, sum |a|^2, the region
    masks on the device) comes from a ``ReferenceCache`` filled before the timing, as a runner can
    fill it once per chunk for both modes; the sink then does the candidate side only.
    """
    import torch

    from backends.torch import TorchBackend

    case = dataclasses.replace(builtin_case(f"{pipeline}-default"), batch=batch)
    recorded = _reference_taps(case, f"{pipeline}-default", reference)
    specs = pipeline_taps(case.pipeline, case.config)
    regions = {spec.name: tap_regions(spec, case.config, case.inputs) for spec in specs}
    table = load_tolerances(tolerances) if tolerances else None
    criteria = {spec.name: (table.lookup(spec.name, case.config.dtype, device, "propagated", pipeline).criteria
                            if table else None) for spec in specs}

    class ViewBackend(TorchBackend):
        def to_canonical(self, spec, cfg, tensor):
            if candidate_form == "numpy":
                return super().to_canonical(spec, cfg, tensor)
            return _canonical_view(spec, tensor)

    backend = ViewBackend(device)
    outcomes: dict[str, bool] = {}
    cache = ReferenceCache() if share_reference else None

    def sink(spec, value):
        ref = recorded[spec.name]
        comparator = StreamingComparator(spec.name, ref.shape, ref.dtype, tuple(value.shape),
                                         str(value.dtype).replace("torch.", ""), criteria[spec.name] or
                                         _default_criteria(), layout=spec.layout, engine=engine,
                                         reference_cache=cache)
        comparator.update(ref, value, 0, regions[spec.name])
        outcomes[spec.name] = comparator.result().passed

    def forward(with_sink: bool) -> float:
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        started = time.perf_counter()
        backend.run_pipeline(case.pipeline, case.config, case.inputs, case.weights, sink=sink if with_sink else None)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - started

    forward(False), forward(True)  # warm-up: parameters built, kernels loaded (and the reference sides cached)
    plain, with_sink = [], []
    for _ in range(rounds):
        plain.append(forward(False))
        with_sink.append(forward(True))
    ratios = [s / p for s, p in zip(with_sink, plain)]
    return {"pipeline": pipeline, "batch": batch, "device": device, "reference": reference,
            "candidate_form": candidate_form, "engine": engine, "share_reference": share_reference, "rounds": rounds,
            "threads": torch.get_num_threads(),
            "forward_s": statistics.median(plain), "forward_with_sink_s": statistics.median(with_sink),
            "ratio_median": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
            "taps": len(specs), "taps_passed": sum(outcomes.values())}


def _default_criteria():
    from .criteria import Criteria

    return Criteria(max_rel_to_peak=1e-6)
