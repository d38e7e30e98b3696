"""``parity bench`` runs on a tiny configuration and writes valid JSON (no timing is asserted)."""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest

pytest.importorskip("backends.tf", reason="TensorFlow (the reference) is not installed")
pytest.importorskip("backends.torch", reason="PyTorch (the candidate) is not installed")

from parity.bench import BenchOptions, interleaved, run_bench, scaling, throughput_ratios  # noqa: E402
from parity.bench_process import import_seconds, measure_process, parity_command  # noqa: E402
from parity.cli import main  # noqa: E402
from parity.errors import EXIT_BAD_INPUT, EXIT_OK  # noqa: E402

TINY = BenchOptions(pipelines=("physics", "pinn"), batches=(2,), scaling_batches=(2, 4), overhead_batch=2,
                    repeats=2, warmup=2, knobs={"N": 32}, devices=("cpu",),
                    sections=("throughput", "scaling", "overhead"))


def _finite_positive(value: float) -> bool:
    return isinstance(value, float) and math.isfinite(value) and value > 0


def test_in_process_sections_on_a_tiny_configuration():
    document = json.loads(json.dumps(run_bench(TINY, command=["test"]), allow_nan=False))
    assert document["schema"] == "ptycho-parity/bench" and document["config"]["N"] == 32
    variants = {(row["pipeline"], row["device"], row["variant"]) for row in document["throughput"]}
    assert variants == {(p, "cpu", v) for p in ("physics", "pinn")
                        for v in ("tf reference", "plain tf", "torch candidate", "plain torch")}
    assert all(_finite_positive(row["patterns_per_s"]) and row["repeats"] == 2 for row in document["throughput"])
    assert {row["ratio"] for row in document["throughput_ratios"]} == {
        "tf reference / plain tf", "tf reference / torch candidate (cpu)", "torch candidate / plain torch (cpu)"}
    assert [row["batches"] for row in document["scaling"]["ratios"]] == [[2, 4], [2, 4]]
    overhead = {(row["pipeline"], row["variant"]): row["ratio_to_forward"] for row in document["overhead"]}
    assert len(overhead) == 12 and overhead["pinn", "forward (no sink)"] == 1.0
    assert all(_finite_positive(ratio) for ratio in overhead.values())
    assert "torch" in document["determinism"] and document["machine"]["cpu_count"] >= 1


def test_ratios_and_scaling_from_rows():
    rows = [{"pipeline": "physics", "batch": b, "device": "cpu", "variant": v, "median_s": t}
            for b, v, t in ((4, "tf reference", 2.0), (4, "torch candidate", 1.0), (8, "tf reference", 4.0),
                            (8, "torch candidate", 3.0), (4, "plain tf", 1.6))]
    ratios = {(row["batch"], row["ratio"]): row["value"] for row in throughput_ratios(rows)}
    assert ratios == {(4, "tf reference / plain tf"): 1.25, (4, "tf reference / torch candidate (cpu)"): 2.0,
                      (8, "tf reference / torch candidate (cpu)"): 4.0 / 3.0}
    grown = {row["variant"]: row["time_ratio"] for row in scaling(rows) if row["batches"] == [4, 8]}
    assert grown == {"tf reference": 2.0, "torch candidate": 3.0}


def test_interleaving_runs_every_variant_in_rotating_order():
    calls = []
    times = interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=2, warmup=1)
    assert calls == ["a", "b", "a", "b", "b", "a"]
    assert [len(times["a"]), len(times["b"])] == [2, 2]


def test_a_measured_command_reports_its_own_peak_memory_and_imports():
    cases = measure_process(parity_command(["cases"], importtime=True))
    assert cases["returncode"] == 0 and any(line.startswith("simulate-") for line in cases["stdout_tail"])
    assert cases["import_s"] == {"tensorflow": 0.0, "torch": 0.0}  # `parity cases` imports neither framework
    assert 0 < cases["max_rss_mib"] < 300  # its own peak, not this (framework-laden) process's
    big = measure_process([sys.executable, "-c", "import numpy; numpy.ones(40_000_000).sum()"])
    assert big["max_rss_mib"] > cases["max_rss_mib"] + 250


def test_import_seconds_reads_importtime_lines():
    log = "import time: self [us] | cumulative | imported package\nimport time:  5 |  2500000 | torch\n" \
          "import time:  1 |   100 |   torch.nn\nnoise\n"
    assert import_seconds(log) == {"tensorflow": 0.0, "torch": 2.5}


def test_cli_bench_writes_json(tmp_path, capsys):
    path = tmp_path / "bench.json"
    code = main(["bench", "--only", "throughput", "--set", "N=32", "--pipeline", "physics", "--batch", "2",
                 "--repeats", "1", "--device", "cpu", "--json", str(path)])
    assert code == EXIT_OK
    out = capsys.readouterr().out
    assert "patterns/s" in out and "bench results written to" in out
    document = json.loads(path.read_text())
    assert document["options"]["knobs"] == {"N": 32} and document["command"][:2] == ["parity", "bench"]
    assert {row["batch"] for row in document["throughput"]} == {2} and "memory" not in document


def test_cli_bench_refuses_a_bad_knob(capsys):
    assert main(["bench", "--set", "N=48", "--only", "throughput"]) == EXIT_BAD_INPUT
    assert "N" in capsys.readouterr().err


def test_inputs_already_on_the_device_give_the_same_taps():
    """The CUDA throughput row without the inputs' host-to-device copy: the Torch backend takes tensors
    where they are (here on the CPU, where the row is not timed) and computes the same taps."""
    import torch

    from backends.common.config import resolve_config
    from backends.torch import TorchBackend
    from parity.bench import on_device
    from parity.synthetic import pipeline_inputs

    cfg = resolve_config({"N": 32})
    inputs = pipeline_inputs("physics", cfg, 2, 5)
    resident = on_device(inputs, "cpu")
    assert all(isinstance(value, torch.Tensor) for value in resident.values())
    backend = TorchBackend("cpu")
    from_numpy, from_tensors = (backend.run_all("physics", cfg, source) for source in (inputs, resident))
    assert from_numpy.keys() == from_tensors.keys()
    for name, value in from_numpy.items():
        assert np.array_equal(value, from_tensors[name]), name


def test_the_host_to_device_share_is_a_ratio_of_its_own():
    rows = [{"pipeline": "physics", "batch": 4, "device": "cuda", "variant": variant, "median_s": seconds}
            for variant, seconds in (("torch candidate", 2.0), ("torch candidate, inputs on device", 0.5))]
    assert throughput_ratios(rows) == [{"pipeline": "physics", "batch": 4, "value": 4.0,
                                        "ratio": "torch candidate / the same, inputs on device (cuda)"}]
