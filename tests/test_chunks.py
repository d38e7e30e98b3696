"""Lockstep batch chunks: a run cut into chunks judges every tap as the unchunked run does."""

from __future__ import annotations

import numpy as np
import pytest

from backends.common.config import resolve_config
from backends.common.taps import pipeline_taps
from parity.builtin_cases import builtin_case
from parity.chunks import MeanCombiner, plan
from parity.runner import RunOptions, run_case

pytest.importorskip("backends.tf", reason="TensorFlow (the reference) is not installed")


def test_plan_covers_the_batch_and_respects_the_limits():
    cfg = resolve_config({"N": 32})
    specs = pipeline_taps("physics", cfg)
    assert plan("physics", specs, cfg, 10, max_samples=3) == [(0, 3), (3, 6), (6, 9), (9, 10)]
    assert plan("physics", specs, cfg, 10) == [(0, 10)]
    per_sample = sum(int(np.prod(s.shape(cfg, 1))) * s.dtype(cfg).itemsize for s in specs if s.layout == "BHWC")
    assert plan("physics", specs, cfg, 10, max_bytes=per_sample * 4) == [(0, 4), (4, 8), (8, 10)]
    # --batch-chunk is the user's choice above the memory-bounded default too (a port's large-batch code path)
    assert plan("physics", specs, cfg, 10, max_bytes=per_sample * 4, max_samples=6) == [(0, 6), (6, 10)]
    simulate = pipeline_taps("simulate", cfg)  # a batch-global statistic: one chunk, whatever the limit
    assert plan("simulate", simulate, cfg, 10, max_samples=2) == [(0, 10)]


def test_mean_combiner_weights_by_chunk_size_and_passes_one_chunk_through():
    single = MeanCombiner()
    value = np.float32(0.1)
    single.add(value, 5)
    assert single.value() is value
    combined = MeanCombiner()
    combined.add(np.float32(1.0), 1)
    combined.add(np.float32(4.0), 3)
    assert combined.value() == np.float32(3.25) and combined.value().dtype == np.float32


@pytest.mark.parametrize("name", ["physics-default", "pinn-n32-single-patch"])
def test_chunked_run_matches_the_whole_batch(name, reference, candidate, tolerances):
    """Physics stages are per sample and bitwise the same in chunks. Convolutions pick kernels by batch
    size (in both frameworks), so network taps move by rounding only."""
    case = builtin_case(name)
    case = case.with_config(N=32) if case.config.N != 32 else case
    whole = run_case(case, reference, candidate, tolerances)
    chunked = run_case(case, reference, candidate, tolerances, RunOptions(batch_chunk=1))
    assert whole.passed and chunked.passed
    for a, b in zip(whole.taps, chunked.taps):
        for mode in ("propagated", "isolated"):
            ma, mb = a.modes[mode].metrics, b.modes[mode].metrics
            if a.layout == "scalar" or case.pipeline == "pinn":  # equal up to rounding
                assert mb.max_rel_to_peak <= 1e-5 and mb.reference_peak == pytest.approx(ma.reference_peak, 1e-5)
                continue
            assert ma.max_abs_error == mb.max_abs_error and ma.worst_index == mb.worst_index, (a.name, mode)
            assert ma.reference_peak == mb.reference_peak
