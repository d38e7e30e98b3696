"""The tap registry, the backend machinery around it, configuration rules and the test matrix.

* every backend's stage table covers ``stage_keys()`` exactly, and every tap
  each backend emits has the registry's canonical shape and dtype;
* the Torch adapter's canonical <-> internal conversions round-trip (and put
  channels / x-y where the spec says);
* ``Backend.with_stage``, tap sinks, ``taps=[...]`` selection and the
  no-sink fast path behave as documented;
* configuration validation, canvas size P and margin k, filter counts;
* the configuration matrix (``tests/matrix.py``) covers what the issue asks.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest

from backends.common.config import ConfigError, ForwardConfig, resolve_config
from backends.common.taps import LAYOUTS, PIPELINES, pipeline_inputs, pipeline_taps, stage_keys, tap_index
from backends.common.weights import init_weights, weight_specs
from parity.synthetic import pipeline_inputs as make_inputs

try:
    from tests import matrix
except ImportError:  # tests/ is on sys.path but the repository root is not
    import matrix

pytest.importorskip("backends.tf", reason="TensorFlow (the reference) is not installed")
pytest.importorskip("backends.torch", reason="PyTorch (the candidate) is not installed")

from backends.tf import TensorFlowBackend  # noqa: E402
from backends.torch import TorchBackend  # noqa: E402

BACKENDS = {"tf": TensorFlowBackend, "torch": TorchBackend}
BATCH = 3  # not the matrix's batch, so a hard-coded batch size shows
SCAN_POSITIONS = 4

# Several configurations for the shape/dtype audit: each geometry the taps depend on.
SHAPE_CONFIGS = {
    "default": {},
    "n32-g1-f64": {"N": 32, "gridsize": 1, "dtype": "float64"},
    "n32-single-object-f32": {"N": 32, "gridsize": 2, "object_big": False, "pad_object": False},
    "n32-probe-big-odd-canvas-f64": {"N": 32, "offset": 5, "probe_big": True, "probe_mask": True,
                                     "gaussian_sigma": 0.8, "dtype": "float64", "n_filters_scale": 1},
}


@pytest.fixture(scope="module")
def backends():
    return {name: cls() for name, cls in BACKENDS.items()}


def _inputs(pipeline: str, cfg: ForwardConfig, seed: int = 3) -> dict[str, np.ndarray]:
    return make_inputs(pipeline, cfg, batch=SCAN_POSITIONS if pipeline == "simulate" else BATCH, seed=seed)


def _weights(pipeline: str, cfg: ForwardConfig):
    return init_weights(cfg, seed=1, bias_scale=0.1) if pipeline == "pinn" else None


# ---- stage tables ----
@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_stage_table_covers_stage_keys_exactly(name, backends):
    expected = stage_keys()
    table = set(BACKENDS[name].STAGES)
    assert table == expected, (f"{name}: missing {sorted(expected - table)}, "
                               f"not in the registry {sorted(table - expected)}")
    assert set(backends[name].stages) == expected
    assert all(callable(fn) for fn in BACKENDS[name].STAGES.values())


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_registry_is_a_dag_in_stage_order(pipeline):
    """Each stage reads only pipeline inputs and taps computed before it; names are unique."""
    for knobs in SHAPE_CONFIGS.values():
        cfg = resolve_config(knobs)
        known = {spec.name for spec in pipeline_inputs(pipeline)}
        for spec in pipeline_taps(pipeline, cfg):
            assert spec.stage is not None and spec.layout in LAYOUTS and spec.kind in ("real", "complex")
            missing = [name for name in spec.inputs if name not in known]
            assert not missing, f"{pipeline} tap {spec.name!r} reads {missing} before they exist"
            assert spec.name not in known, f"{pipeline} tap {spec.name!r} defined twice"
            known.add(spec.name)


# ---- every tap's canonical shape and dtype, in both backends ----
@pytest.mark.parametrize("pipeline", PIPELINES)
@pytest.mark.parametrize("config", sorted(SHAPE_CONFIGS))
def test_taps_have_registry_shape_and_dtype(backends, config, pipeline):
    cfg = resolve_config(SHAPE_CONFIGS[config])
    inputs = _inputs(pipeline, cfg)
    weights = _weights(pipeline, cfg)
    batch = SCAN_POSITIONS if pipeline == "simulate" else BATCH
    specs = pipeline_taps(pipeline, cfg)
    problems = []
    for name, backend in backends.items():
        taps = backend.run_all(pipeline, cfg, inputs, weights)
        assert list(taps) == [spec.name for spec in specs], f"{name} {pipeline} under {config}: taps {list(taps)}"
        for spec in specs:
            value = taps[spec.name]
            if not isinstance(value, np.ndarray):
                problems.append(f"{name} {spec.name}: {type(value).__name__}, not a numpy array")
                continue
            if value.shape != spec.shape(cfg, batch):
                problems.append(f"{name} {spec.name}: shape {value.shape}, registry {spec.shape(cfg, batch)}")
            if value.dtype != spec.dtype(cfg):
                problems.append(f"{name} {spec.name}: dtype {value.dtype}, registry {spec.dtype(cfg)}")
    assert not problems, f"{pipeline} under {config} ({cfg.diff(ForwardConfig())}):\n" + "\n".join(problems)


# ---- layout conversion ----
def _spec_with_layout(layout: str):
    cfg = ForwardConfig()
    for pipeline in PIPELINES:
        for spec in tap_index(pipeline, cfg).values():
            if spec.layout == layout and None not in spec.shape(cfg, BATCH):
                return spec
    raise LookupError(layout)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_torch_layout_round_trip(backends, layout, dtype):
    backend = backends["torch"]
    cfg = resolve_config({"N": 32, "dtype": dtype})
    spec = _spec_with_layout(layout)
    rng = np.random.default_rng(5)
    shape = spec.shape(cfg, BATCH)
    array = rng.normal(size=shape)
    if spec.kind == "complex":
        array = array + 1j * rng.normal(size=shape)
    array = np.asarray(array).astype(spec.dtype(cfg))
    internal = backend.to_internal(spec, cfg, array)
    back = backend.to_canonical(spec, cfg, internal)
    assert isinstance(back, np.ndarray)
    assert back.shape == array.shape and back.dtype == array.dtype, (layout, back.shape, back.dtype)
    np.testing.assert_array_equal(back, array, err_msg=f"{layout} via {spec.name!r} does not round-trip")
    internal = internal.cpu().numpy()
    if layout == "BHWC":  # channels first inside: internal[:, c] is channel c
        assert internal.shape == (shape[0], shape[3], shape[1], shape[2])
        for channel in range(shape[3]):
            np.testing.assert_array_equal(internal[:, channel], array[..., channel])
    elif layout == "B12C":  # (B, C, 2) inside, [..., 0] = x
        assert internal.shape == (shape[0], shape[3], 2)
        np.testing.assert_array_equal(internal[..., 0], array[:, 0, 0, :])
        np.testing.assert_array_equal(internal[..., 1], array[:, 0, 1, :])
    else:
        assert internal.shape == array.shape


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_tf_layout_round_trip(backends, layout):
    backend = backends["tf"]
    cfg = resolve_config({"N": 32, "dtype": "float64"})
    spec = _spec_with_layout(layout)
    array = np.random.default_rng(6).normal(size=spec.shape(cfg, BATCH)).astype(spec.dtype(cfg))
    back = backend.to_canonical(spec, cfg, backend.to_internal(spec, cfg, array))
    assert back.shape == array.shape and back.dtype == array.dtype
    np.testing.assert_array_equal(back, array)


# ---- with_stage ----
@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_with_stage_replaces_exactly_one_stage(backends, name):
    original = backends[name]
    before = dict(original.stages)
    stock = original.stages["farfield"]
    calls = []

    def doubled(ctx, wave):
        calls.append(1)
        return stock(ctx, wave) * 2

    clone = original.with_stage("farfield", doubled)
    assert clone is not original and type(clone) is type(original)
    assert clone.stages["farfield"] is doubled
    changed = sorted(key for key in before if clone.stages[key] is not before[key])
    assert changed == ["farfield"], changed
    assert set(clone.stages) == set(before)
    # the original, and the class table, are untouched
    assert original.stages == before and original.stages["farfield"] is stock
    assert type(original).STAGES["farfield"] is stock
    assert clone.describe()["stages_replaced"] == ["farfield"]
    assert original.describe()["stages_replaced"] == []

    cfg = resolve_config({"N": 32, "dtype": "float64"})
    inputs = _inputs("physics", cfg)
    plain = original.run_all("physics", cfg, inputs)
    faulty = clone.run_all("physics", cfg, inputs)
    assert calls, "the replacement stage was never called"
    for tap in ("object.canvas", "patches.extracted", "exit_wave"):  # upstream: identical
        np.testing.assert_array_equal(faulty[tap], plain[tap])
    np.testing.assert_array_equal(faulty["farfield"], 2 * plain["farfield"])
    np.testing.assert_allclose(faulty["intensity"], 4 * plain["intensity"], rtol=1e-13)
    again = original.run_all("physics", cfg, inputs)  # the original still runs its own stage
    np.testing.assert_array_equal(again["farfield"], plain["farfield"])
    with pytest.raises(KeyError, match="no_such_stage"):
        original.with_stage("no_such_stage", doubled)


# ---- tap delivery ----
@pytest.mark.parametrize("pipeline", PIPELINES)
@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_sink_gets_taps_in_registry_order(backends, name, pipeline):
    backend = backends[name]
    cfg = resolve_config({"N": 32})
    inputs, weights = _inputs(pipeline, cfg), _weights(pipeline, cfg)
    order = [spec.name for spec in pipeline_taps(pipeline, cfg)]
    seen = []
    result = backend.run_pipeline(pipeline, cfg, inputs, weights, sink=lambda spec, value: seen.append(spec.name))
    assert result is None
    assert seen == order
    wanted = [order[-1], order[0], order[len(order) // 2]]  # asked for out of order
    seen.clear()
    backend.run_pipeline(pipeline, cfg, inputs, weights, sink=lambda spec, value: seen.append(spec.name),
                         taps=wanted)
    assert seen == [tap for tap in order if tap in wanted]


def _counting(cls):
    class Counting(cls):
        conversions = 0

        def to_canonical(self, spec, cfg, tensor):
            type(self).conversions += 1
            return super().to_canonical(spec, cfg, tensor)

    return Counting


@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_no_sink_returns_none_and_converts_nothing(name):
    backend = _counting(BACKENDS[name])()
    cfg = resolve_config({"N": 32})
    for pipeline in PIPELINES:
        inputs, weights = _inputs(pipeline, cfg), _weights(pipeline, cfg)
        assert backend.run_pipeline(pipeline, cfg, inputs, weights, sink=None) is None
        assert type(backend).conversions == 0, f"{name} {pipeline}: to_canonical called with no sink"
        # with taps=[...] only the selected taps are converted
        backend.run_pipeline(pipeline, cfg, inputs, weights, sink=lambda spec, value: None,
                             taps=["probe.effective", "amplitude"])
        assert type(backend).conversions == 2
        type(backend).conversions = 0


# ---- configuration ----
@pytest.mark.parametrize(("knobs", "knob"), [
    ({"N": 48}, "N"),
    ({"N": 16}, "N"),
    ({"gridsize": 0}, "gridsize"),
    ({"amp_activation": "tanh"}, "amp_activation"),
    ({"n_filter_scale": 2}, "n_filter_scale"),  # unknown knob (a typo of n_filters_scale)
    ({"dtype": "float16"}, "dtype"),
    ({"intensity_scale": 0}, "intensity_scale"),
    ({"intensity_scale": -1.0}, "intensity_scale"),
    ({"gaussian_sigma": -0.5}, "gaussian_sigma"),
    ({"object_big": "maybe"}, "object_big"),
], ids=lambda value: str(value))
def test_config_errors_name_the_knob(knobs, knob):
    with pytest.raises(ConfigError) as error:
        resolve_config(knobs)
    assert knob in str(error.value), f"ConfigError for {knobs} does not name {knob!r}: {error.value}"


def test_config_defaults_are_the_spec_table():
    cfg = resolve_config({})
    assert cfg.to_dict() == {
        "N": 64, "gridsize": 2, "offset": 4, "buffer": 10, "object_big": True, "probe_big": False,
        "probe_mask": False, "pad_object": True, "gaussian_sigma": 0.0, "intensity_scale": 1.0, "nphotons": 1e9,
        "amp_activation": "sigmoid", "n_filters_scale": 2, "dtype": "float32"}
    assert (cfg.C, cfg.Co, cfg.P, cfg.k, cfg.depth) == (4, 4, 78, 7, 3)
    assert resolve_config({"object_big": False}).Co == 1


@pytest.mark.parametrize(("knobs", "P", "k"), [
    ({"N": 64, "gridsize": 2, "offset": 5, "buffer": 10}, 80, 8),  # 64 + 5 + 10 = 79: P - N odd -> + 1
    ({"N": 32, "gridsize": 2, "offset": 5, "buffer": 10}, 48, 8),
    ({"N": 64, "gridsize": 2, "offset": 4, "buffer": 10}, 78, 7),  # even: unchanged
    ({"N": 64, "gridsize": 1, "offset": 4, "buffer": 10}, 74, 5),
    ({"N": 32, "gridsize": 3, "offset": 4, "buffer": 3}, 44, 6),  # 32 + 8 + 3 = 43 -> 44
    ({"N": 32, "gridsize": 1, "offset": 4, "buffer": 0}, 32, 0),
])
def test_canvas_size_and_margin(knobs, P, k):
    cfg = resolve_config(knobs)
    assert (cfg.P, cfg.k) == (P, k)
    assert (cfg.P - cfg.N) % 2 == 0 and 2 * cfg.k == cfg.P - cfg.N
    assert cfg.P - (cfg.N + (cfg.gridsize - 1) * cfg.offset + cfg.buffer) in (0, 1)


@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_odd_canvas_pads_evenly_in_both_backends(backends, name):
    """offset 5, gridsize 2, buffer 10: the canvas is P = N + 16 with k = 8 zero rows/columns on each side."""
    cfg = resolve_config({"N": 32, "gridsize": 2, "offset": 5, "buffer": 10, "object_big": False,
                          "dtype": "float64"})
    inputs = _inputs("physics", cfg)
    taps = backends[name].run_all("physics", cfg, inputs)
    canvas, k, n = taps["object.canvas"], cfg.k, cfg.N
    assert canvas.shape == (BATCH, 48, 48, 1) and k == 8
    np.testing.assert_array_equal(canvas[:, k : k + n, k : k + n], inputs["object_patches"])
    border = np.ones(canvas.shape, bool)
    border[:, k : k + n, k : k + n] = False
    assert not np.any(canvas[border]), "the canvas margin is not zero"
    np.testing.assert_array_equal(taps["object.trimmed"], inputs["object_patches"])


# ---- network widths ----
def test_weight_specs_filter_counts_n64_f2():
    cfg = resolve_config({"N": 64, "n_filters_scale": 2})
    assert cfg.encoder_filters == (64, 128, 256)
    assert cfg.decoder_filters == (128, 64)
    assert cfg.final_block_filters == 64 and cfg.features == 64
    specs = dict(weight_specs(cfg))
    encoder = [specs[f"encoder.block{i}.conv1.kernel"][3] for i in range(cfg.depth)]
    assert encoder == [64, 128, 256]
    assert specs["encoder.block0.conv0.kernel"] == (3, 3, 4, 64)
    assert specs["encoder.block2.conv0.kernel"] == (3, 3, 128, 256)
    for head in ("amp", "phase"):
        decoder = [specs[f"decoder.{head}.block{j}.conv1.kernel"][3] for j in range(cfg.depth - 1)]
        assert decoder == [128, 64]
        assert specs[f"decoder.{head}.block0.conv0.kernel"] == (3, 3, 256, 128)
        assert specs[f"decoder.{head}.conv1.kernel"] == (3, 3, 60, 4)  # h[..., :-4] -> Co
        assert f"decoder.{head}.final_block.conv0.kernel" not in specs  # probe_big off, pad_object on
    big = dict(weight_specs(cfg.replace(probe_big=True)))
    assert big["decoder.amp.final_block.conv0.kernel"] == (3, 3, 4, 64)  # h[..., -4:]
    assert big["decoder.amp.conv2.kernel"] == (3, 3, 64, 4)
    unpadded = dict(weight_specs(cfg.replace(pad_object=False)))
    assert unpadded["decoder.amp.final_block.conv0.kernel"] == (3, 3, 64, 64)
    assert "decoder.amp.conv1.kernel" not in unpadded
    for name, shape in specs.items():
        if name.endswith(".bias"):
            assert shape == (specs[name[: -len("bias")] + "kernel"][3],)


@pytest.mark.parametrize(("N", "f"), list(itertools.product((32, 64, 128), (1, 2))))
def test_filter_counts_follow_the_spec_formula(N, f):
    cfg = resolve_config({"N": N, "n_filters_scale": f})
    depth = int(math.log2(N)) - 3
    assert cfg.depth == depth
    assert cfg.encoder_filters == tuple(f * (2048 // N) * 2**i for i in range(depth))
    assert cfg.decoder_filters == tuple(f * 32 * 2 ** (depth - 2 - j) for j in range(depth - 1))
    assert cfg.final_block_filters == f * 2048 // N


# ---- the configuration matrix ----
def _generated():
    return [case for case in matrix.CASES if case.id not in dict(matrix.EXTRA)]


def test_matrix_every_value_of_every_knob_appears():
    cases = _generated()
    for knob, values in matrix.KNOBS.items():
        seen = {case.knobs[knob] for case in cases}
        assert seen == set(values), f"{knob}: {sorted(map(str, set(values) - seen))} never appear"
        assert {getattr(case.cfg, knob) for case in cases} == set(values)
    # the issue's list, spelled out
    assert set(matrix.KNOBS["N"]) == {32, 64} and set(matrix.KNOBS["gridsize"]) == {1, 2}
    assert set(matrix.KNOBS["gaussian_sigma"]) == {0.0, 0.8}
    assert set(matrix.KNOBS["amp_activation"]) == {"sigmoid", "swish", "softplus", "relu"}
    assert 1.0 in matrix.KNOBS["intensity_scale"] and any(s != 1.0 for s in matrix.KNOBS["intensity_scale"])
    assert set(matrix.KNOBS["dtype"]) == {"float32", "float64"}
    for knob in ("object_big", "probe_big", "probe_mask", "pad_object"):
        assert set(matrix.KNOBS[knob]) == {True, False}


@pytest.mark.parametrize("pair", [*matrix.REQUIRED_PAIRS, *matrix.COVER], ids=lambda names: "x".join(names))
def test_matrix_crosses_interacting_knobs(pair):
    cases = _generated()
    wanted = set(itertools.product(*(matrix.KNOBS[name] for name in pair)))
    seen = {tuple(getattr(case.cfg, name) for name in pair) for case in cases}
    assert wanted <= seen, f"{' x '.join(pair)}: never run {sorted(map(str, wanted - seen))}"


def test_matrix_required_pairs_are_the_issues():
    required = {frozenset(pair) for pair in matrix.REQUIRED_PAIRS}
    for pair in [("object_big", "gridsize"), ("pad_object", "probe_big"), ("probe_mask", "gaussian_sigma"),
                 ("dtype", "N"), ("amp_activation", "dtype"), ("intensity_scale", "dtype")]:
        assert frozenset(pair) in required


def test_matrix_size_determinism_and_ids():
    assert 16 <= len(matrix.CASES) <= 24, len(matrix.CASES)
    assert [case.id for case in matrix.build_cases()] == [case.id for case in matrix.CASES]
    assert matrix.covering_rows() == matrix.covering_rows()
    assert len({case.id for case in matrix.CASES}) == len(matrix.CASES)
    assert len({case.cfg for case in matrix.CASES}) == len(matrix.CASES)
    assert len({case.seed for case in matrix.CASES}) == len(matrix.CASES)
    for case in matrix.CASES:
        assert case.cfg == resolve_config(case.knobs)
    # prefer N=32: N=64 only where a combination needs it
    generated = _generated()
    assert sum(case.cfg.N == 64 for case in generated) < sum(case.cfg.N == 32 for case in generated)
    # the real default and an odd P - N canvas are in
    assert matrix.CASE_BY_ID["default"].cfg == resolve_config({})
    odd = matrix.CASE_BY_ID["odd-canvas-f64"].cfg
    assert (odd.N + (odd.gridsize - 1) * odd.offset + odd.buffer - odd.N) % 2 == 1


def test_covering_generator_on_a_toy_problem():
    knobs = {"a": (0, 1, 2), "b": (0, 1), "c": (0, 1), "d": ("x", "y")}
    cover = tuple(itertools.combinations(knobs, 2)) + (("a", "b", "c"),)
    rows = matrix.covering_rows(knobs, cover)
    for names in cover:
        seen = {tuple(row[name] for name in names) for row in rows}
        assert seen == set(itertools.product(*(knobs[name] for name in names)))
    assert len(rows) <= 3 * 2 * 2 + 2
    assert rows == matrix.covering_rows(knobs, cover)


@pytest.mark.parametrize(("a", "b", "expected"), [
    (np.zeros(3), np.zeros(3), 0.0),
    (np.array([2.0, -4.0]), np.array([2.0, -3.0]), 0.25),
    (np.array([3 + 4j, 0]), np.array([3 + 4j, 1j]), 0.2),
    (np.zeros(2), np.array([0.0, 1e-30]), math.inf),
    (np.float32(2.0), np.float32(2.0), 0.0),
])
def test_rel_error(a, b, expected):
    assert matrix.rel_error(a, b) == expected
    assert math.isnan(matrix.rel_error(np.array([1.0, np.nan]), np.array([1.0, 1.0])))


def _tap_table() -> str:
    """docs/adapters.md's table of every pipeline's taps and what each reads (regenerated from the registry)."""
    cfg = ForwardConfig()
    lines = []
    for pipeline in ("physics", "pinn", "simulate"):
        inputs = ", ".join(f"`{spec.name}` ({spec.layout})" for spec in pipeline_inputs(pipeline))
        lines += [f"**{pipeline}** (inputs {inputs}):", "", "| tap | reads, in argument order | canonical layout |",
                  "|---|---|---|"]
        lines += [f"| `{spec.name}` | {', '.join(f'`{name}`' for name in spec.inputs)} | {spec.layout} |"
                  for spec in pipeline_taps(pipeline, cfg)]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def test_the_adapter_guide_lists_every_tap_with_what_it_reads():
    text = (Path(__file__).resolve().parent.parent / "docs" / "adapters.md").read_text()
    documented = text.split("<!-- taps:begin -->\n", 1)[1].split("<!-- taps:end -->", 1)[0]
    assert documented == _tap_table(), "docs/adapters.md's tap table is out of date; regenerate it:\n" + _tap_table()
