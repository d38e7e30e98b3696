"""``parity bench``: speed, harness overhead, peak memory and start-up, side by side in one run.

Sections (all in one process run, timings interleaved and reported as medians):

- ``throughput``: TF reference and Torch candidate forward (no sink) next to
  the same model written plainly (``backends.{tf,torch}.plain``), patterns/s
  per pipeline, batch and device (CUDA when PyTorch sees one).
- ``scaling``: the physics pipeline at larger batches, TF vs Torch: time per
  sample must stay flat (linear in batch).
- ``overhead``: the harness's cost on the Torch candidate, as ratios over its
  bare forward: the same forward on the adapter thread a run uses (what the
  thread alone costs), the statistics sink (propagated comparison), full
  capture (every tap to numpy), isolated mode.
- ``memory``: peak RSS of whole ``parity run`` commands on large generated
  inputs (a many-position ``simulate``, a large-batch ``physics``).
- ``startup``: wall time, peak RSS and framework import time of one-case
  ``parity cases`` / ``check`` / ``run`` commands.

A *pattern* is one N x N diffraction pattern: a ``pinn``/``physics`` sample
holds C = gridsize**2 of them. The harness steps timed in ``overhead`` are
the functions of ``parity/bench_steps.py`` (``statistics_sink`` ...): the one
place to change when the runner's API changes.
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib.metadata
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from backends.common.config import ForwardConfig, resolve_config
from backends.common.taps import pipeline_taps
from backends.common.weights import init_weights

from .bench_steps import (both_modes, forward_on_worker, forward_only, full_capture, isolated_mode, reference_store,
                          statistics_sink)
from .bench_process import measure_process, parity_command
from .cases import user_case
from .synthetic import pipeline_inputs

SCHEMA = "ptycho-parity/bench"
SCHEMA_VERSION = 1
SECTIONS = ("throughput", "scaling", "overhead", "memory", "startup")


@dataclasses.dataclass(frozen=True)
class BenchOptions:
    pipelines: tuple[str, ...] = ("pinn", "physics")
    batches: tuple[int, ...] = (16, 64)
    scaling_batches: tuple[int, ...] = (256, 1024)
    overhead_batch: int = 64
    repeats: int = 5
    warmup: int = 2  # untimed runs first: the TF reference traces a stage at its second call
    knobs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    devices: tuple[str, ...] | None = None  # Torch devices; None: cpu, plus cuda when available
    sections: tuple[str, ...] = SECTIONS
    memory_positions: int = 4096
    memory_batch: int = 1024
    startup_case: str = "pinn-default"
    seed: int = 0
    tensorflow: bool = True  # False: Torch rows only


# ---- timing ----
def interleaved(variants: Mapping[str, Callable[[], Any]], repeats: int, warmup: int) -> dict[str, list[float]]:
    """Seconds per call of each variant; repetitions interleaved (rotating order) so drift hits all alike."""
    for _ in range(warmup):
        for function in variants.values():
            function()
    names = list(variants)
    times: dict[str, list[float]] = {name: [] for name in names}
    for repetition in range(repeats):
        shift = repetition % len(names)
        for name in names[shift:] + names[:shift]:
            started = time.perf_counter()
            variants[name]()
            times[name].append(time.perf_counter() - started)
    return times


def synchronised(function: Callable[[], Any], device: str) -> Callable[[], Any]:
    if not device.startswith("cuda"):
        return function
    import torch

    def run() -> Any:
        result = function()
        torch.cuda.synchronize(device)
        return result

    return run


# ---- backends, loaded lazily (TensorFlow may be absent on a GPU machine) ----
class _Backends:
    def __init__(self, notes: list[str], tensorflow: bool = True) -> None:
        self.notes = notes
        self._tf: Any = None
        if not tensorflow:
            self._tf = False
            notes.append("TensorFlow reference skipped: --no-tf")
        self._torch: dict[str, Any] = {}

    def tf(self) -> Any | None:
        if self._tf is None:
            try:
                from backends.tf import TensorFlowBackend
            except ImportError as error:
                self._tf = False
                self.notes.append(f"TensorFlow reference skipped: {error}")
            else:
                self._tf = TensorFlowBackend()
        return self._tf or None

    def torch(self, device: str) -> Any:
        if device not in self._torch:
            from backends.torch import TorchBackend

            self._torch[device] = TorchBackend(device)
        return self._torch[device]


def torch_devices(requested: Sequence[str] | None, notes: list[str]) -> list[str]:
    import torch

    if requested:
        return list(requested)
    if torch.cuda.is_available():
        return ["cpu", "cuda"]
    notes.append("CUDA: skipped, this PyTorch sees no GPU (CPU rows only)")
    return ["cpu"]


def _inputs(pipeline: str, cfg: ForwardConfig, batch: int, seed: int) -> tuple[dict, dict | None]:
    weights = init_weights(cfg, seed=seed, bias_scale=0.05) if pipeline == "pinn" else None
    return pipeline_inputs(pipeline, cfg, batch, seed), weights


def on_device(inputs: Mapping[str, np.ndarray], device: str) -> dict[str, Any]:
    """The inputs as torch tensors on ``device`` (canonical layout), copied there once."""
    import torch

    return {name: torch.from_numpy(np.ascontiguousarray(value)).to(device) for name, value in inputs.items()}


def _row(pipeline: str, batch: int, device: str, variant: str, seconds: list[float], cfg: ForwardConfig) -> dict:
    median = statistics.median(seconds)
    return {"pipeline": pipeline, "batch": batch, "device": device, "variant": variant, "median_s": median,
            "min_s": min(seconds), "repeats": len(seconds), "samples_per_s": batch / median,
            "patterns_per_s": batch * cfg.C / median}


# ---- sections ----
def throughput(options: BenchOptions, cfg: ForwardConfig, backends: _Backends, devices: list[str],
               batches: Sequence[int], pipelines: Sequence[str], plain: bool = True) -> list[dict]:
    rows = []
    for pipeline in pipelines:
        for batch in batches:
            inputs, weights = _inputs(pipeline, cfg, batch, options.seed)
            variants: dict[tuple[str, str], Callable[[], Any]] = {}
            reference = backends.tf()
            if reference is not None:
                variants["cpu", "tf reference"] = lambda r=reference: r.run_pipeline(pipeline, cfg, inputs, weights)
                if plain:
                    from backends.tf.plain import plain_forward as tf_plain

                    variants["cpu", "plain tf"] = lambda f=tf_plain(pipeline, cfg, weights): f(inputs)
            for device in devices:
                candidate = backends.torch(device)
                variants[device, "torch candidate"] = synchronised(
                    lambda c=candidate: c.run_pipeline(pipeline, cfg, inputs, weights), device)
                if device != "cpu":  # the same forward without the host-to-device copy of its inputs
                    resident = on_device(inputs, device)
                    variants[device, "torch candidate, inputs on device"] = synchronised(
                        lambda c=candidate, r=resident: c.run_pipeline(pipeline, cfg, r, weights), device)
                if plain:
                    from backends.torch.plain import plain_forward as torch_plain

                    variants[device, "plain torch"] = synchronised(
                        lambda f=torch_plain(pipeline, cfg, weights, device): f(inputs), device)
            named = {f"{device}/{variant}": function for (device, variant), function in variants.items()}
            times = interleaved(named, options.repeats, options.warmup)
            rows += [_row(pipeline, batch, device, variant, times[f"{device}/{variant}"], cfg)
                     for device, variant in variants]
    return rows


def throughput_ratios(rows: list[dict]) -> list[dict]:
    """The target ratios: TF reference / plain TF, TF / Torch (CPU), Torch / plain Torch (per device), and on a
    GPU what the inputs' host-to-device copy costs the Torch forward."""
    by_key = {(row["pipeline"], row["batch"], row["device"], row["variant"]): row["median_s"] for row in rows}
    ratios = []
    for pipeline, batch in dict.fromkeys((row["pipeline"], row["batch"]) for row in rows):
        pairs = [("tf reference / plain tf", ("cpu", "tf reference"), ("cpu", "plain tf")),
                 ("tf reference / torch candidate (cpu)", ("cpu", "tf reference"), ("cpu", "torch candidate"))]
        for device in dict.fromkeys(row["device"] for row in rows):
            candidate = (device, "torch candidate")
            pairs += [(f"torch candidate / plain torch ({device})", candidate, (device, "plain torch")),
                      (f"torch candidate / the same, inputs on device ({device})", candidate,
                       (device, "torch candidate, inputs on device"))]
        for name, top, bottom in pairs:
            a, b = by_key.get((pipeline, batch, *top)), by_key.get((pipeline, batch, *bottom))
            if a is not None and b is not None:
                ratios.append({"pipeline": pipeline, "batch": batch, "ratio": name, "value": a / b})
    return ratios


def scaling(rows: list[dict]) -> list[dict]:
    """Time ratio between consecutive batches per (device, variant), next to the batch ratio (linear: equal)."""
    out = []
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["pipeline"], row["device"], row["variant"]), []).append(row)
    for (pipeline, device, variant), members in groups.items():
        members.sort(key=lambda row: row["batch"])
        for small, large in zip(members, members[1:]):
            out.append({"pipeline": pipeline, "device": device, "variant": variant, "batches": [small["batch"],
                        large["batch"]], "batch_ratio": large["batch"] / small["batch"],
                        "time_ratio": large["median_s"] / small["median_s"]})
    return out


def overhead(options: BenchOptions, cfg: ForwardConfig, backends: _Backends, devices: list[str]) -> list[dict]:
    from .workflows import tolerance_table

    tolerances = tolerance_table(None)
    rows = []
    for pipeline in options.pipelines:
        inputs, weights = _inputs(pipeline, cfg, options.overhead_batch, options.seed)
        case = user_case(f"bench-{pipeline}", pipeline, cfg, inputs, weights, "parity bench")
        reference = backends.tf()
        if reference is None:  # no TensorFlow here: the Torch CPU backend stands in as the reference
            reference = backends.torch("cpu")
        store = reference_store(case, reference)
        for device in devices:
            candidate = backends.torch(device)
            variants = {
                "forward (no sink)": lambda c=candidate: forward_only(c, case),
                "forward on the adapter thread": lambda c=candidate: forward_on_worker(c, case),
                "statistics sink (propagated)": lambda c=candidate: statistics_sink(c, case, store, tolerances),
                "full capture": lambda c=candidate: full_capture(c, case),
                "isolated mode": lambda c=candidate: isolated_mode(c, case, store, tolerances),
                "both modes (a run)": lambda c=candidate: both_modes(c, case, store, tolerances),
            }
            times = interleaved({name: synchronised(fn, device) for name, fn in variants.items()},
                                options.repeats, options.warmup)
            base = statistics.median(times["forward (no sink)"])
            for name, seconds in times.items():
                row = _row(pipeline, options.overhead_batch, device, name, seconds, cfg)
                rows.append(row | {"ratio_to_forward": row["median_s"] / base})
    return rows


def _tap_bytes(pipeline: str, cfg: ForwardConfig, batch: int) -> int:
    total = 0
    for spec in pipeline_taps(pipeline, cfg):
        shape = [dim or 1 for dim in spec.shape(cfg, batch)]
        total += int(np.prod(shape, dtype=np.int64)) * spec.dtype(cfg).itemsize
    return total


def _knob_args(knobs: Mapping[str, Any]) -> list[str]:
    args = []
    for knob, value in knobs.items():
        args += ["--set", f"{knob}={str(value).lower() if isinstance(value, bool) else value}"]
    return args


def memory(options: BenchOptions, cfg: ForwardConfig) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="parity-bench-") as folder:
        for pipeline, size in (("simulate", options.memory_positions), ("physics", options.memory_batch)):
            path = Path(folder) / f"{pipeline}-{size}.npz"
            np.savez(path, **pipeline_inputs(pipeline, cfg, size, options.seed))
            command = parity_command(["run", "--pipeline", pipeline, "--inputs", path, *_knob_args(options.knobs),
                                      "--out", Path(folder) / "reports", "--quiet"], importtime=True)
            result = measure_process(command)
            result["command"] = ["python", "-X", "importtime", "-m", "parity", "run", "--pipeline", pipeline,
                                 "--inputs", path.name,
                                 *_knob_args(options.knobs), "--quiet"]
            rows.append({"what": f"parity run --pipeline {pipeline}", "size": size,
                         "reference_tap_mib": _tap_bytes(pipeline, cfg, size) / (1 << 20)} | result)
    return rows


def startup(options: BenchOptions) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="parity-bench-") as folder:
        case = ["--case", options.startup_case]
        for name, args in (("parity cases", ["cases"]),
                           (f"parity check --case {options.startup_case}", ["check", *case, "--quiet"]),
                           (f"parity run --case {options.startup_case}", ["run", *case, "--quiet"])):
            out = ["--out", Path(folder) / args[0]] if args[0] != "cases" else []
            result = measure_process(parity_command([*args, *out], importtime=True))
            result["command"] = ["python", "-X", "importtime", "-m", "parity", *args]
            rows.append({"what": name} | result)
    return rows


# ---- the whole run ----
def _versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in ("numpy", "torch", "tensorflow-cpu", "tensorflow", "keras"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"platform": platform.platform(), "machine": platform.machine(),
                            "cpu_count": os.cpu_count(), "versions": _versions(),
                            "PARITY_THREADS": os.environ.get("PARITY_THREADS", "2"),
                            "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY")}
    if hasattr(os, "sched_getaffinity"):
        info["cpus_usable"] = len(os.sched_getaffinity(0))
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["memory_gib"] = round(int(line.split()[1]) / (1 << 20), 1)
                break
    except OSError:
        pass
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _load() -> list[float] | None:
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return None


def run_bench(options: BenchOptions = BenchOptions(), command: Sequence[str] = ()) -> dict[str, Any]:
    """Every requested section; a JSON-ready document (see ``docs/benchmarks.md``)."""
    from backends.common import determinism

    cfg = resolve_config(dict(options.knobs))
    notes: list[str] = []
    started = time.perf_counter()
    document: dict[str, Any] = {
        "schema": SCHEMA, "version": SCHEMA_VERSION, "command": list(command),
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "options": {**dataclasses.asdict(options), "knobs": dict(options.knobs)}, "config": cfg.to_dict(),
        "load_average_start": _load(), "notes": notes,
    }
    backends = _Backends(notes, options.tensorflow)
    sections = set(options.sections)
    if sections & {"throughput", "scaling", "overhead"}:
        devices = torch_devices(options.devices, notes)
        document["devices"] = devices
        if "throughput" in sections:
            rows = throughput(options, cfg, backends, devices, options.batches, options.pipelines)
            document["throughput"] = rows
            document["throughput_ratios"] = throughput_ratios(rows)
        if "scaling" in sections:
            rows = throughput(options, cfg, backends, devices, options.scaling_batches, ("physics",), plain=False)
            document["scaling"] = {"rows": rows, "ratios": scaling(rows), "tf_over_torch": [
                row for row in throughput_ratios(rows) if row["ratio"].startswith("tf reference / torch")]}
        if "overhead" in sections:
            document["overhead"] = overhead(options, cfg, backends, devices)
    document["machine"] = machine()
    document["determinism"] = determinism.record()
    if "memory" in sections:
        document["memory"] = memory(options, cfg)
    if "startup" in sections:
        document["startup"] = startup(options)
    document["load_average_end"] = _load()
    document["duration_s"] = time.perf_counter() - started
    return document


def write_json(document: Mapping[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, allow_nan=False) + "\n")
    return path
