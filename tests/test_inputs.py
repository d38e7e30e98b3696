"""User inputs and knobs: NPZ inputs validated against the tap registry, --set / --config, weights.

Every bad input must be a ``ParityInputError`` (CLI exit 2) whose message names
the file, the key and what was expected. No TensorFlow or PyTorch is needed.
"""

from __future__ import annotations

import pathlib
import re
import zipfile

import numpy as np
import pytest

from backends.common.config import ForwardConfig, resolve_config
from backends.common.taps import PIPELINE_INPUTS, pipeline_inputs
from backends.common.weights import init_weights, weight_specs
from parity import synthetic
from parity.errors import ParityInputError
from parity.inputs import (load_config_file, load_inputs, load_npz, load_weights, parse_set, resolve_knobs,
                           validate_inputs)

CFG = resolve_config({"N": 32})  # float32, gridsize 2 (C = 4), object_big
CFG64 = resolve_config({"N": 32, "dtype": "float64"})
BATCH = 3


def _inputs(pipeline: str, cfg: ForwardConfig = CFG64, batch: int = BATCH) -> dict[str, np.ndarray]:
    """Valid inputs, drawn in float64/complex128 so that loading under float32 has to cast."""
    return synthetic.pipeline_inputs(pipeline, cfg, batch, seed=11)


def _save(tmp_path: pathlib.Path, arrays: dict[str, np.ndarray], name: str = "inputs.npz") -> pathlib.Path:
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def _error(pipeline: str, arrays: dict[str, np.ndarray], tmp_path: pathlib.Path, cfg: ForwardConfig = CFG) -> str:
    path = _save(tmp_path, arrays)
    with pytest.raises(ParityInputError) as caught:
        load_inputs(path, pipeline, cfg)
    message = str(caught.value)
    assert str(path) in message, f"the message does not name the file: {message}"
    return message


# ---- valid inputs ----

@pytest.mark.parametrize("pipeline", ["pinn", "physics", "simulate"])
@pytest.mark.parametrize("cfg", [CFG, CFG64], ids=["float32", "float64"])
def test_valid_inputs_load_and_cast_to_the_config_dtype(tmp_path, pipeline, cfg):
    original = _inputs(pipeline)
    path = _save(tmp_path, original | {"notes": np.arange(3)})
    loaded, ignored = load_inputs(path, pipeline, cfg)
    assert list(loaded) == list(PIPELINE_INPUTS[pipeline])
    assert ignored == ["notes"]
    for spec in pipeline_inputs(pipeline):
        value = loaded[spec.name]
        assert value.dtype == np.dtype(cfg.complex_dtype if spec.kind == "complex" else cfg.dtype), spec.name
        assert value.shape == original[spec.name].shape
        np.testing.assert_allclose(value, original[spec.name], rtol=1e-6 if cfg.dtype == "float32" else 0)


def test_dotted_spec_names_are_accepted_as_keys(tmp_path):
    arrays = _inputs("physics")
    arrays["object.patches"] = arrays.pop("object_patches")
    loaded, ignored = load_inputs(_save(tmp_path, arrays), "physics", CFG)
    assert ignored == []
    assert loaded["object_patches"].shape == (BATCH, 32, 32, 4)


def test_integer_positions_are_cast(tmp_path):
    arrays = _inputs("physics") | {"positions": np.zeros((BATCH, 1, 2, 4), np.int64)}
    loaded, _ = load_inputs(_save(tmp_path, arrays), "physics", CFG)
    assert loaded["positions"].dtype == np.float32


# ---- each kind of bad input ----

def test_missing_key_names_it_and_the_expected_keys(tmp_path):
    arrays = _inputs("pinn")
    del arrays["probe"]
    message = _error("pinn", arrays, tmp_path)
    assert "missing key(s) ['probe']" in message
    assert "'X', 'positions', 'probe'" in message and "'pinn'" in message


def test_physics_inputs_given_to_pinn_name_the_missing_key(tmp_path):
    message = _error("pinn", _inputs("physics"), tmp_path)
    assert "['X']" in message


def test_wrong_ndim(tmp_path):
    arrays = _inputs("physics")
    arrays["positions"] = arrays["positions"][:, 0]  # (B, 2, C): the singleton axis dropped
    message = _error("physics", arrays, tmp_path)
    assert "key 'positions'" in message
    assert f"expected shape ({BATCH}, 1, 2, 4)" in message
    assert f"got ({BATCH}, 2, 4)" in message


def test_wrong_shape_names_the_knobs_that_shape_it(tmp_path):
    arrays = _inputs("pinn")
    arrays["X"] = arrays["X"][..., :1]  # gridsize 1 data under gridsize 2
    message = _error("pinn", arrays, tmp_path)
    assert "key 'X'" in message and f"expected shape ({BATCH}, 32, 32, 4)" in message
    assert "gridsize=2" in message and "N=32" in message and f"got ({BATCH}, 32, 32, 1)" in message
    assert "(the shape gridsize=1 would give: --set gridsize=1)" in message


def test_wrong_probe_size_suggests_the_n_that_fits(tmp_path):
    arrays = _inputs("physics")
    arrays["probe"] = np.ones((64, 64), np.complex64)  # N=64 data under the N=32 these tests use
    assert "--set N=64" in _error("physics", arrays, tmp_path)


def test_wrong_probe_size(tmp_path):
    arrays = _inputs("simulate")
    arrays["probe"] = np.ones((64, 64), np.complex64)
    message = _error("simulate", arrays, tmp_path)
    assert "key 'probe'" in message and "expected shape (32, 32)" in message and "got (64, 64)" in message


def test_channels_first_data_is_rejected(tmp_path):
    arrays = _inputs("pinn")
    arrays["X"] = np.ascontiguousarray(arrays["X"].transpose(0, 3, 1, 2))  # (B, C, N, N)
    message = _error("pinn", arrays, tmp_path)
    assert "key 'X'" in message and f"got ({BATCH}, 4, 32, 32)" in message


@pytest.mark.parametrize("pipeline, key", [("pinn", "X"), ("physics", "object_patches")])
def test_channels_first_data_gets_a_hint(tmp_path, pipeline, key):
    """Regression: the hint once tested shape[1] == shape[3] (C == N) and never fired."""
    arrays = _inputs(pipeline)
    arrays[key] = np.ascontiguousarray(arrays[key].transpose(0, 3, 1, 2))
    message = _error(pipeline, arrays, tmp_path)
    assert "channels-first" in message


def test_no_channels_first_hint_for_other_shape_errors(tmp_path):
    arrays = _inputs("pinn")
    arrays["X"] = arrays["X"][:, :16]  # (B, 16, N, C): wrong, but not channels-first
    assert "channels-first" not in _error("pinn", arrays, tmp_path)


def test_batch_size_mismatch_between_data_and_positions(tmp_path):
    arrays = _inputs("pinn")
    arrays["positions"] = arrays["positions"][:2]
    message = _error("pinn", arrays, tmp_path)
    assert "key 'positions'" in message and f"expected batch size {BATCH}" in message and "got 2" in message


def test_real_where_complex_expected(tmp_path):
    arrays = _inputs("physics")
    arrays["probe"] = np.abs(arrays["probe"])
    message = _error("physics", arrays, tmp_path)
    assert "key 'probe'" in message and "expected a complex array (complex64)" in message and "float64" in message


def test_complex_where_real_expected(tmp_path):
    arrays = _inputs("pinn")
    arrays["X"] = arrays["X"].astype(np.complex128)
    message = _error("pinn", arrays, tmp_path)
    assert "key 'X'" in message and "expected a real array" in message and "complex128" in message


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_gives_count_and_first_index(tmp_path, bad):
    arrays = _inputs("physics")
    patches = arrays["object_patches"].copy()
    patches[2, 5, 7, 1] = bad
    patches[1, 3, 4, 2] = complex(0, bad)  # in the imaginary part only
    patches[2, 0, 0, 0] = bad
    arrays["object_patches"] = patches
    message = _error("physics", arrays, tmp_path)
    assert "key 'object_patches'" in message and "expected finite values" in message
    assert "found 3 NaN/Inf" in message and "first at index (1, 3, 4, 2)" in message


def test_nan_in_scan_positions(tmp_path):
    arrays = _inputs("simulate")
    arrays["scan_positions"][1, 1] = np.nan
    message = _error("simulate", arrays, tmp_path)
    assert "key 'scan_positions'" in message and "found 1 NaN/Inf" in message and "(1, 1)" in message


def test_empty_batch(tmp_path):
    arrays = _inputs("physics")
    arrays = {key: value[:0] if key != "probe" else value for key, value in arrays.items()}
    message = _error("physics", arrays, tmp_path)
    assert "key 'object_patches'" in message and "non-empty" in message and "(0, 32, 32, 4)" in message


def test_empty_object(tmp_path):
    arrays = _inputs("simulate") | {"object": np.zeros((0, 0), np.complex64)}
    message = _error("simulate", arrays, tmp_path)
    assert "key 'object'" in message and "non-empty" in message


def test_non_numeric_array(tmp_path):
    arrays = _inputs("pinn") | {"positions": np.full((BATCH, 1, 2, 4), "a")}
    message = _error("pinn", arrays, tmp_path)
    assert "key 'positions'" in message and "numeric" in message


class _Tripwire:
    """Unpickling this object creates ``path``: proof that the file was unpickled."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path

    def __reduce__(self):
        return pathlib.Path.touch, (self.path,)


def test_object_array_is_refused_and_never_unpickled(tmp_path):
    sentinel = tmp_path / "unpickled"
    arrays = _inputs("pinn")
    arrays["probe"] = np.array([_Tripwire(sentinel), 1.0], dtype=object)
    path = _save(tmp_path, arrays)
    with pytest.raises(ParityInputError) as caught:
        load_inputs(path, "pinn", CFG)
    message = str(caught.value)
    assert str(path) in message and "pickle" in message and "numeric" in message
    assert not sentinel.exists(), "the harness unpickled a user file"
    # The tripwire works: loading with pickle allowed does trip it.
    with np.load(path, allow_pickle=True) as archive:
        archive["probe"]
    assert sentinel.exists()


def test_file_that_is_not_an_npz(tmp_path):
    path = tmp_path / "inputs.npz"
    path.write_text("X,positions,probe\n1,2,3\n")
    with pytest.raises(ParityInputError) as caught:
        load_inputs(path, "pinn", CFG)
    assert str(path) in str(caught.value)


def test_file_that_is_not_an_npz_is_not_called_pickled(tmp_path):
    """Regression: np.load falls back to pickle for unknown magic, so a text file was reported as pickled."""
    path = tmp_path / "inputs.npz"
    path.write_text("X,positions,probe\n1,2,3\n")
    with pytest.raises(ParityInputError) as caught:
        load_npz(path)
    assert "pickle" not in str(caught.value) and ".npz" in str(caught.value)


def test_truncated_npz(tmp_path):
    good = _save(tmp_path, _inputs("pinn"), "good.npz")
    bad = tmp_path / "truncated.npz"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ParityInputError) as caught:
        load_inputs(bad, "pinn", CFG)
    assert str(bad) in str(caught.value)
    assert re.search(r"not an? (readable )?\.npz archive", str(caught.value)), str(caught.value)


def test_npy_file_instead_of_npz(tmp_path):
    """Regression: np.load returns an ndarray for .npy data; it was used as a context manager (TypeError)."""
    path = tmp_path / "inputs.npz"
    with path.open("wb") as handle:
        np.save(handle, np.zeros((BATCH, 32, 32, 4)))
    with pytest.raises(ParityInputError) as caught:
        load_inputs(path, "pinn", CFG)
    assert str(path) in str(caught.value)


def test_zip_that_is_not_an_npz(tmp_path):
    path = tmp_path / "inputs.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "no arrays here")
    with pytest.raises(ParityInputError) as caught:
        load_inputs(path, "pinn", CFG)
    assert str(path) in str(caught.value) and "missing key(s)" in str(caught.value)


def test_missing_file(tmp_path):
    path = tmp_path / "nowhere.npz"
    with pytest.raises(ParityInputError) as caught:
        load_inputs(path, "pinn", CFG)
    assert str(path) in str(caught.value) and "not found" in str(caught.value)


def test_unknown_pipeline():
    with pytest.raises(ParityInputError, match="--pipeline 'nope'"):
        validate_inputs("x.npz", "nope", CFG, {})


# ---- --set ----

@pytest.mark.parametrize("item", ["N", "=32", " =32", "N32"])
def test_set_without_knob_equals_value(item):
    with pytest.raises(ParityInputError) as caught:
        parse_set([item])
    assert repr(item) in str(caught.value) and "knob=value" in str(caught.value)


def test_set_parses_and_strips():
    assert parse_set(["N=32", " dtype = float64 ", "amp_activation=swish"]) == {
        "N": "32", "dtype": "float64", "amp_activation": "swish"}


@pytest.mark.parametrize("item, fragment", [
    ("colour=red", "unknown knob(s) ['colour']"),
    ("N=abc", "N must be an integer, got 'abc'"),
    ("N=48", "N must be a power of two"),
    ("gridsize=1.5", "gridsize must be an integer, got '1.5'"),
    ("object_big=maybe", "object_big must be true or false, got 'maybe'"),
    ("gaussian_sigma=wide", "gaussian_sigma must be a number"),
    ("intensity_scale=0", "intensity_scale must be finite and > 0"),
    ("dtype=float16", "dtype must be one of"),
    ("amp_activation=gelu", "amp_activation must be one of"),
])
def test_set_bad_values(item, fragment):
    with pytest.raises(ParityInputError) as caught:
        resolve_knobs(None, [item])
    message = str(caught.value)
    assert message.startswith("--set: ") and fragment in message


def test_set_coerces_types():
    cfg = resolve_knobs(None, ["N=32", "gridsize=1", "object_big=false", "probe_mask=yes", "gaussian_sigma=0.5",
                               "dtype=float64"])
    assert (cfg.N, cfg.gridsize, cfg.object_big, cfg.probe_mask, cfg.gaussian_sigma, cfg.dtype) == (
        32, 1, False, True, 0.5, "float64")


def test_set_keeps_the_base_config():
    base = resolve_config({"N": 32, "offset": 7, "dtype": "float64"})
    cfg = resolve_knobs(None, ["gaussian_sigma=0.8"], base=base)
    assert cfg == base.replace(gaussian_sigma=0.8)


# ---- --config ----

def test_config_top_level_knobs(tmp_path):
    path = tmp_path / "knobs.toml"
    path.write_text('N = 32\ndtype = "float64"\nobject_big = false\n')
    assert load_config_file(path) == {"N": 32, "dtype": "float64", "object_big": False}
    cfg = resolve_knobs(str(path), [])
    assert (cfg.N, cfg.dtype, cfg.object_big) == (32, "float64", False)


def test_config_table(tmp_path):
    path = tmp_path / "knobs.toml"
    path.write_text('title = "ignored"\n[config]\nN = 32\ngaussian_sigma = 0.8\n')
    cfg = resolve_knobs(str(path), [])
    assert (cfg.N, cfg.gaussian_sigma) == (32, 0.8)


def test_set_overrides_config(tmp_path):
    path = tmp_path / "knobs.toml"
    path.write_text('N = 64\ngridsize = 1\n')
    cfg = resolve_knobs(str(path), ["N=32"])
    assert (cfg.N, cfg.gridsize) == (32, 1)


def test_invalid_toml_names_the_file(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("N = = 32\n")
    with pytest.raises(ParityInputError) as caught:
        resolve_knobs(str(path), [])
    assert str(path) in str(caught.value) and "not valid TOML" in str(caught.value)


def test_missing_config_file(tmp_path):
    path = tmp_path / "absent.toml"
    with pytest.raises(ParityInputError, match="config file not found") as caught:
        resolve_knobs(str(path), [])
    assert str(path) in str(caught.value)


def test_config_with_a_non_table_config_key(tmp_path):
    path = tmp_path / "knobs.toml"
    path.write_text('config = "N=32"\n')
    with pytest.raises(ParityInputError) as caught:
        resolve_knobs(str(path), [])
    assert str(path) in str(caught.value) and "key 'config'" in str(caught.value)


def test_bad_knob_in_config_file_names_the_file(tmp_path):
    path = tmp_path / "knobs.toml"
    path.write_text('N = 32\ngridsize = 1.5\n')
    with pytest.raises(ParityInputError) as caught:
        resolve_knobs(str(path), [])
    assert str(path) in str(caught.value) and "gridsize must be an integer" in str(caught.value)


def test_unknown_knob_in_config_file(tmp_path):
    path = tmp_path / "knobs.toml"
    path.write_text('[config]\nN = 32\nbatch = 4\n')
    with pytest.raises(ParityInputError) as caught:
        resolve_knobs(str(path), [])
    assert str(path) in str(caught.value) and "unknown knob(s) ['batch']" in str(caught.value)


# ---- weights ----

WCFG = resolve_config({"N": 32, "n_filters_scale": 1})


def test_load_weights_npz_with_canonical_names_casts_to_the_config_dtype(tmp_path):
    weights = init_weights(WCFG.replace(dtype="float64"), seed=2, bias_scale=0.1)
    path = tmp_path / "weights.npz"
    np.savez(path, **weights)
    loaded = load_weights(path, WCFG)
    assert list(loaded) == [name for name, _ in weight_specs(WCFG)]
    for name, value in loaded.items():
        assert value.dtype == np.float32, name
        np.testing.assert_allclose(value, weights[name], rtol=1e-6)


def test_load_weights_refuses_integer_parameters_by_name(tmp_path):
    """Weights rounded to integers (a savez of the wrong array) are not a model's: refused, not cast."""
    weights = init_weights(WCFG)
    weights["encoder.block0.conv0.kernel"] = np.round(weights["encoder.block0.conv0.kernel"] * 100).astype(np.int32)
    path = tmp_path / "weights.npz"
    np.savez(path, **weights)
    with pytest.raises(ParityInputError) as caught:
        load_weights(path, WCFG)
    assert str(path) in str(caught.value)
    assert "parameter 'encoder.block0.conv0.kernel' has dtype int32, expected real floating point" in str(caught.value)


def test_load_weights_reports_wrong_shapes_by_parameter_name(tmp_path):
    weights = init_weights(WCFG)
    weights["decoder.amp.block0.conv1.kernel"] = weights["decoder.amp.block0.conv1.kernel"][..., :3]
    weights["encoder.block1.conv0.bias"] = np.zeros(5, np.float32)
    path = tmp_path / "weights.npz"
    np.savez(path, **weights)
    with pytest.raises(ParityInputError) as caught:
        load_weights(path, WCFG)
    message = str(caught.value)
    assert str(path) in message
    expected = dict(weight_specs(WCFG))
    assert (f"parameter 'decoder.amp.block0.conv1.kernel' has shape "
            f"{expected['decoder.amp.block0.conv1.kernel'][:3] + (3,)}, expected "
            f"{expected['decoder.amp.block0.conv1.kernel']}") in message
    assert "parameter 'encoder.block1.conv0.bias' has shape (5,)" in message


def test_load_weights_missing_and_unexpected_parameters(tmp_path):
    weights = init_weights(WCFG)
    del weights["encoder.block0.conv0.kernel"]
    weights["encoder.block9.conv0.kernel"] = np.zeros((3, 3, 1, 1), np.float32)
    path = tmp_path / "weights.npz"
    np.savez(path, **weights)
    with pytest.raises(ParityInputError) as caught:
        load_weights(path, WCFG)
    assert "missing parameter 'encoder.block0.conv0.kernel'" in str(caught.value)
    assert "unexpected parameter 'encoder.block9.conv0.kernel'" in str(caught.value)


def test_load_weights_for_another_configuration(tmp_path):
    path = tmp_path / "weights.npz"
    np.savez(path, **init_weights(WCFG.replace(n_filters_scale=2)))
    with pytest.raises(ParityInputError, match="weights do not fit the configuration") as caught:
        load_weights(path, WCFG)
    assert "(and " in str(caught.value) and "more)" in str(caught.value)  # long lists are cut


def test_load_weights_with_nan(tmp_path):
    weights = init_weights(WCFG)
    weights["decoder.phase.conv1.kernel"][0, 0, 0, 0] = np.nan
    path = tmp_path / "weights.npz"
    np.savez(path, **weights)
    with pytest.raises(ParityInputError, match="'decoder.phase.conv1.kernel' holds NaN"):
        load_weights(path, WCFG)


def test_load_weights_unknown_extension(tmp_path):
    path = tmp_path / "weights.pt"
    path.write_bytes(b"\0")
    with pytest.raises(ParityInputError) as caught:
        load_weights(path, WCFG)
    assert str(path) in str(caught.value) and ".npz" in str(caught.value)


def test_load_weights_object_array_is_not_unpickled(tmp_path):
    sentinel = tmp_path / "unpickled"
    path = tmp_path / "weights.npz"
    np.savez(path, **{"encoder.block0.conv0.kernel": np.array([_Tripwire(sentinel)], dtype=object)})
    with pytest.raises(ParityInputError, match="pickle"):
        load_weights(path, WCFG)
    assert not sentinel.exists()


def test_a_case_from_your_own_arrays_is_checked_as_an_inputs_file_and_runs():
    import parity
    from backends.torch import TorchBackend
    from parity.synthetic import pipeline_inputs

    cfg = parity.ForwardConfig().replace(N=32)
    arrays = pipeline_inputs("physics", cfg, 3, seed=1)
    case = parity.case_from_arrays("mine", "physics", arrays, config={"N": 32})
    assert (case.name, case.batch, case.config.N, case.config.dtype) == ("mine", 3, 32, "float32")
    from parity.workflows import tolerance_table

    assert parity.run_case(case, TorchBackend(), TorchBackend(), tolerance_table(None)).passed
    bad = dict(arrays, positions=arrays["positions"][:2])
    with pytest.raises(ParityInputError, match=r"inputs of case 'mine': key 'positions'"):
        parity.case_from_arrays("mine", "physics", bad, config={"N": 32})
    with pytest.raises(ParityInputError, match=r"keys \['extra'\] are not inputs of the 'physics' pipeline"):
        parity.case_from_arrays("mine", "physics", dict(arrays, extra=np.zeros(3)), config={"N": 32})
    with pytest.raises(ParityInputError, match=r"weights are only for the pinn pipeline"):
        parity.case_from_arrays("mine", "physics", arrays, config={"N": 32}, weights={})


def test_with_inputs_refuses_arrays_of_another_batch():
    import parity
    from parity.synthetic import pipeline_inputs

    case = parity.builtin_case("physics-default")
    with pytest.raises(ParityInputError, match=r"the arrays hold 4 samples, the case 2; .*case_from_arrays"):
        case.with_inputs(pipeline_inputs("physics", case.config, 4, seed=0))
    assert case.with_inputs(pipeline_inputs("physics", case.config, 2, seed=3)).batch == 2


@pytest.mark.parametrize(("pipeline", "key"), [("physics", "probe"), ("physics", "object_patches"), ("pinn", "probe")])
def test_an_all_zero_probe_or_object_is_refused_since_any_port_would_pass(pipeline, key):
    from backends.common.input_checks import input_problems

    cfg = resolve_config({"N": 32})
    inputs = synthetic.pipeline_inputs(pipeline, cfg, 2, seed=0)
    assert input_problems(pipeline, cfg, inputs) == []
    inputs[key] = np.zeros_like(inputs[key])
    [(named, expectation)] = input_problems(pipeline, cfg, inputs)
    assert named == key and "would pass whatever the port does" in expectation


def test_a_pinn_case_from_arrays_takes_weights_checked_as_a_weights_file():
    import parity

    cfg = resolve_config({"N": 32, "n_filters_scale": 1})
    arrays = synthetic.pipeline_inputs("pinn", cfg, 2, seed=0)
    weights = init_weights(cfg, seed=3)
    case = parity.case_from_arrays("mine", "pinn", arrays, config={"N": 32, "n_filters_scale": 1}, weights=weights)
    assert case.weights is not None and set(case.weights) == set(weights)
    renamed = dict(weights)
    renamed["bogus"] = renamed.pop(next(iter(renamed)))
    with pytest.raises(ParityInputError, match=r"weights of case 'mine': weights do not fit .*unexpected parameter "
                                               r"'bogus'"):
        parity.case_from_arrays("mine", "pinn", arrays, config={"N": 32, "n_filters_scale": 1}, weights=renamed)
