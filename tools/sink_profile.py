"""Where the statistics sink's time goes on one device: cProfile of a few propagated chunks.

    PYTHONPATH=$PWD python tools/sink_profile.py [--device cuda] [--pipeline physics pinn] [--batch 256]
        [--rounds 3] [--top 30]

The reference is the Torch backend on the CPU (no TensorFlow needed): its taps are recorded once and
replayed (``parity.bench_steps``), the candidate runs on ``--device``. For each pipeline it prints the
median forward (no sink), the median propagated chunk (forward + statistics sink) and the profile of
``--rounds`` such chunks, by own time. The adapter call is made inline (not on the guard's worker
thread) so that the profiler sees it; the bench (``parity bench --only overhead``) times the real thing.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import statistics


def profile(pipeline: str, device: str, batch: int, rounds: int, top: int) -> str:
    from backends.common.config import ForwardConfig
    from backends.common.weights import init_weights
    from backends.torch import TorchBackend
    from parity import bench_steps
    from parity.bench import interleaved, synchronised
    from parity.cases import user_case
    from parity.guard import Guard
    from parity.synthetic import pipeline_inputs
    from parity.workflows import tolerance_table

    cfg = ForwardConfig()
    weights = init_weights(cfg, seed=0, bias_scale=0.05) if pipeline == "pinn" else None
    case = user_case(f"profile-{pipeline}", pipeline, cfg, pipeline_inputs(pipeline, cfg, batch, 0), weights,
                     "tools/sink_profile.py")
    store = bench_steps.reference_store(case, TorchBackend("cpu"))
    candidate, tolerances = TorchBackend(device), tolerance_table(None)
    original = Guard.call
    Guard.call = lambda self, what, function, *args, **kwargs: function(*args, **kwargs)
    try:
        forward = synchronised(lambda: bench_steps.forward_only(candidate, case), device)
        sink = synchronised(lambda: bench_steps.statistics_sink(candidate, case, store, tolerances), device)
        times = interleaved({"forward": forward, "sink": sink}, rounds, warmup=1)  # as parity bench times them
        plain, with_sink = statistics.median(times["forward"]), statistics.median(times["sink"])
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(rounds):
            sink()
        profiler.disable()
    finally:
        Guard.call = original
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(top)
    return (f"{pipeline} batch {batch} on {device}: forward {plain * 1e3:.1f} ms, forward + statistics sink "
            f"{with_sink * 1e3:.1f} ms ({with_sink / plain:.2f}x)\n{text.getvalue()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--pipeline", nargs="+", default=["physics", "pinn"], choices=["physics", "pinn"])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()
    from backends.common import determinism

    determinism.configure_torch()
    for pipeline in args.pipeline:
        print(profile(pipeline, args.device, args.batch, args.rounds, args.top), flush=True)


if __name__ == "__main__":
    main()
