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
outside the timing; so are the regions (``tap_regions``), which a runner computes once per
case.  Bench code: ``parity/bench.py`` may call this; ``tools/comparison_overhead.py`` prints it.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Any

import numpy as np

from backends.common.regions import tap_regions
from backends.common.taps import pipeline_taps

from .cases import builtin_case
from .metrics import StreamingComparator
from .tolerances import load_tolerances

__all__ = ["measure_comparison_overhead"]


def _canonical_view(spec, tensor):
    """The canonical-layout view of a Torch backend's internal tensor, without a copy."""
    if spec.layout == "BHWC":
        return tensor.permute(0, 2, 3, 1)
    if spec.layout == "B12C":
        return tensor.transpose(1, 2)[:, None]
    return tensor


def _reference_taps(case, reference: str) -> dict[str, np.ndarray]:
    if reference == "tf":
        from backends.tf import TensorFlowBackend

        backend = TensorFlowBackend()
    else:
        from backends.torch import TorchBackend

        backend = TorchBackend("cpu")
    return backend.run_all(case.pipeline, case.config, case.inputs, case.weights)


def measure_comparison_overhead(pipeline: str = "physics", *, batch: int = 64, rounds: int = 7,
                                device: str = "cpu", reference: str = "tf", candidate_form: str = "tensor",
                                engine: str = "auto", tolerances: str | None = "fixtures/tolerances.toml",
                                ) -> dict[str, Any]:
    """Median ratio (forward + statistics sink) / (forward, no sink) over interleaved rounds.

    ``pipeline``: ``pinn`` or ``physics`` (the ``<pipeline>-default`` case at ``batch``).
    ``engine``: passed to every comparator (``auto``, ``numpy``, ``torch``).
    """
    import torch

    from backends.torch import TorchBackend

    case = dataclasses.replace(builtin_case(f"{pipeline}-default"), batch=batch)
    recorded = _reference_taps(case, reference)
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

    def sink(spec, value):
        ref = recorded[spec.name]
        comparator = StreamingComparator(spec.name, ref.shape, ref.dtype, tuple(value.shape),
                                         str(value.dtype).replace("torch.", ""), criteria[spec.name] or
                                         _default_criteria(), layout=spec.layout, engine=engine)
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

    forward(False), forward(True)  # warm-up: parameters built, kernels loaded
    plain, with_sink = [], []
    for _ in range(rounds):
        plain.append(forward(False))
        with_sink.append(forward(True))
    ratios = [s / p for s, p in zip(with_sink, plain)]
    return {"pipeline": pipeline, "batch": batch, "device": device, "reference": reference,
            "candidate_form": candidate_form, "engine": engine, "rounds": rounds,
            "threads": torch.get_num_threads(),
            "forward_s": statistics.median(plain), "forward_with_sink_s": statistics.median(with_sink),
            "ratio_median": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
            "taps": len(specs), "taps_passed": sum(outcomes.values())}


def _default_criteria():
    from .criteria import Criteria

    return Criteria(max_rel_to_peak=1e-6)
