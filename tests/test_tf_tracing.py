"""The TF reference's traced stages: bitwise equal to eager ones, traced once per key, weights kept live.

Tracing (``backends/tf/tracing.py``) may not move a single bit: the goldens
and every tolerance were recorded eagerly, and by default a stage runs
eagerly once and traced afterwards, so a run can mix both.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("backends.tf", reason="TensorFlow (the reference) is not installed")

from backends.common import determinism  # noqa: E402
from backends.common.backend import StageError  # noqa: E402
from backends.common.config import resolve_config  # noqa: E402
from backends.common.taps import PIPELINES, pipeline_taps  # noqa: E402
from backends.common.weights import init_weights  # noqa: E402
from backends.tf import TensorFlowBackend  # noqa: E402
from backends.tf.tracing import tracing_policy  # noqa: E402
from parity.synthetic import pipeline_inputs  # noqa: E402

CONFIGS = {
    "n32-f32": {"N": 32},
    "n32-f64-smooth-mask-bigprobe": {"N": 32, "dtype": "float64", "gaussian_sigma": 0.8, "probe_mask": True,
                                     "probe_big": True, "amp_activation": "softplus", "intensity_scale": 3.7},
    "n32-odd-canvas-single": {"N": 32, "offset": 5, "gridsize": 1, "object_big": False, "pad_object": False},
}


def _case(pipeline: str, knobs: dict, batch: int = 3, seed: int = 11):
    cfg = resolve_config(knobs)
    weights = init_weights(cfg, seed=seed, bias_scale=0.05) if pipeline == "pinn" else None
    return cfg, pipeline_inputs(pipeline, cfg, batch, seed), weights


def _assert_bitwise(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].dtype == b[name].dtype and a[name].shape == b[name].shape, name
        assert a[name].tobytes() == b[name].tobytes(), f"{name} is not bitwise identical"


@pytest.mark.parametrize("pipeline", PIPELINES)
@pytest.mark.parametrize("knobs", list(CONFIGS.values()), ids=list(CONFIGS))
def test_traced_stages_are_bitwise_equal_to_eager_ones(pipeline, knobs):
    cfg, inputs, weights = _case(pipeline, knobs)
    eager, traced = TensorFlowBackend(trace="never"), TensorFlowBackend(trace="always")
    expected = eager.run_all(pipeline, cfg, inputs, weights)
    _assert_bitwise(traced.run_all(pipeline, cfg, inputs, weights), expected)
    env = dict(inputs) | expected
    for spec in pipeline_taps(pipeline, cfg):  # isolated stages too
        stage_inputs = {name: env[name] for name in spec.inputs}
        value = traced.run_stage(spec.name, pipeline, cfg, stage_inputs, weights)
        assert value.tobytes() == expected[spec.name].tobytes(), spec.name


def test_auto_traces_a_stage_at_its_second_call_and_never_retraces():
    cfg, inputs, _ = _case("physics", CONFIGS["n32-f32"])
    backend = TensorFlowBackend(trace="auto")
    stages = len(pipeline_taps("physics", cfg))
    first = backend.run_all("physics", cfg, inputs)
    runtime = backend._runtimes(cfg)
    assert runtime.traced == {}  # the first run is eager
    second = backend.run_all("physics", cfg, inputs)
    assert len(runtime.traced) == stages
    functions = dict(runtime.traced)
    third = backend.run_all("physics", cfg, inputs)
    assert runtime.traced == functions  # same concrete functions: no retrace
    _assert_bitwise(second, first)
    _assert_bitwise(third, first)
    _, bigger, _ = _case("physics", CONFIGS["n32-f32"], batch=5)  # a new batch is a new key
    backend.run_all("physics", cfg, bigger)
    backend.run_all("physics", cfg, bigger)
    assert len(runtime.traced) == 2 * stages - 1  # probe.effective reads only the probe: same key


def test_new_weights_reach_the_traced_network():
    cfg, inputs, weights = _case("pinn", CONFIGS["n32-f32"])
    other = init_weights(cfg, seed=99, bias_scale=0.05)
    traced, eager = TensorFlowBackend(trace="always"), TensorFlowBackend(trace="never")
    first = traced.run_all("pinn", cfg, inputs, weights)
    changed = traced.run_all("pinn", cfg, inputs, other)
    _assert_bitwise(changed, eager.run_all("pinn", cfg, inputs, other))
    assert changed["decoder.amp"].tobytes() != first["decoder.amp"].tobytes()
    _assert_bitwise(traced.run_all("pinn", cfg, inputs, weights), first)  # and back again


def test_a_replaced_stage_runs_eagerly():
    cfg, inputs, _ = _case("physics", CONFIGS["n32-f32"])
    backend = TensorFlowBackend(trace="always")
    stock = backend.stages["farfield"]
    seen = []

    def host_side(ctx, wave):  # .numpy() only works eagerly
        seen.append(float(np.abs(wave.numpy()).max()))
        return stock(ctx, wave)

    clone = backend.with_stage("farfield", host_side)
    _assert_bitwise(clone.run_all("physics", cfg, inputs), backend.run_all("physics", cfg, inputs))
    assert len(seen) == 1 and seen[0] > 0


def test_a_traced_stage_that_fails_names_the_stage():
    cfg, inputs, _ = _case("physics", CONFIGS["n32-f32"])
    backend = TensorFlowBackend(trace="always")
    wrong = {"object_patches": inputs["object_patches"][:, :8], "positions": inputs["positions"]}
    with pytest.raises(StageError, match="object.canvas") as raised:
        backend.run_stage("object.canvas", "physics", cfg, wrong)
    assert raised.value.tap == "object.canvas"


def test_tracing_policy_values():
    assert tracing_policy("0") == tracing_policy("never") == "never"
    assert tracing_policy("") == tracing_policy("auto") == "auto"
    assert tracing_policy("always") == "always"
    with pytest.raises(ValueError, match="PARITY_TF_TRACE"):
        tracing_policy("sometimes")
    assert TensorFlowBackend(trace="never").describe()["tracing"] == "never"


def test_grappler_rewrites_that_move_roundings_are_off_and_recorded():
    state = determinism.record()["tensorflow"]
    assert state["grappler"] == {"constant_folding": False, "arithmetic_optimization": False}


def test_auto_leaves_stages_with_large_inputs_eager(monkeypatch):
    import backends.tf.backend as tf_backend

    monkeypatch.setattr(tf_backend, "AUTO_MAX_INPUT_BYTES", 1)  # every input is "large"
    cfg, inputs, _ = _case("physics", CONFIGS["n32-f32"])
    backend = TensorFlowBackend(trace="auto")
    first = backend.run_all("physics", cfg, inputs)
    _assert_bitwise(backend.run_all("physics", cfg, inputs), first)
    assert backend._runtimes(cfg).traced == {}


def test_the_allocator_setting_is_recorded():
    state = determinism.record()["allocator"]
    assert state["PARITY_MALLOC"] in ("heap", "system")
    if state["PARITY_MALLOC"] == "heap" and determinism.platform_is_glibc():
        assert state["applied"] == {"M_MMAP_MAX": 0, "M_TRIM_THRESHOLD": 2**31 - 1}
