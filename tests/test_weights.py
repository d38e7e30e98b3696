"""Weights: Glorot init, names, the kernel converter, real Keras files <-> Torch state_dicts."""

from __future__ import annotations

import io
import json
import math
import shutil
import warnings
import zipfile

import numpy as np
import pytest

pytest.importorskip("backends.tf", reason="TensorFlow (the reference) is not installed")
pytest.importorskip("backends.torch", reason="PyTorch (the candidate) is not installed")

import h5py  # noqa: E402
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
import torch  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from backends.common.config import ForwardConfig  # noqa: E402
from backends.common.weights import init_weights, weight_problems, weight_specs  # noqa: E402
from backends.tf.keras_io import (  # noqa: E402
    WeightFileError,
    keras_weight_paths,
    load_keras_weights,
    save_keras_weights,
    to_snake_case,
)
from backends.tf.network import KerasNetwork, keras_layer_name  # noqa: E402
from backends.torch import state_dict as state_dict_module  # noqa: E402
from backends.torch.network import PtychoNet  # noqa: E402
from backends.torch.state_dict import (  # noqa: E402
    from_state_dict,
    kernel_to_keras,
    kernel_to_torch,
    parameter_table,
    to_state_dict,
)
from parity.weightmap import (  # noqa: E402
    WeightMappingError,
    audit_weights,
    check_weight_mapping,
    keras_file_to_state_dict,
    state_dict_to_keras_file,
    torch_roundtrip_report,
)

SMALL = ForwardConfig(N=32, dtype="float64")
# Both decoder branches (conv1 and final_block/conv2) and gridsize 2.
BIG = ForwardConfig(N=32, dtype="float64", probe_big=True)
UNPADDED = ForwardConfig(N=32, dtype="float64", pad_object=False)
SUFFIXES = (".weights.h5", ".keras")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """(cfg, weights, path) per (config, suffix), each file written once by the TF backend."""
    root = tmp_path_factory.mktemp("keras_files")
    files = {}
    for label, cfg in (("big", BIG), ("unpadded", UNPADDED)):
        weights = init_weights(cfg, seed=3, bias_scale=0.1)
        for suffix in SUFFIXES:
            path = save_keras_weights(cfg, weights, root / f"{label}{suffix}")
            files[label, suffix] = (cfg, weights, path)
    return files


@pytest.fixture(scope="module")
def tf_reference(saved):
    """The TF network's decoder heads on one random input, per configuration label."""
    reference = {}
    for label in ("big", "unpadded"):
        cfg, weights, _ = saved[label, SUFFIXES[0]]
        x = _inputs(cfg)
        reference[label] = x, _tf_decoder(cfg, weights, x)
    return reference


def _tf_decoder(cfg, weights, x):
    net = KerasNetwork(cfg, weights)
    h = tf.constant(x)
    for index in range(cfg.depth):
        h = net.encoder_block(index, h)
    return {head: np.asarray(net.decoder_head(head, h)) for head in ("amp", "phase")}


def _torch_decoder(cfg, net, x):
    with torch.no_grad():
        h = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
        for index in range(cfg.depth):
            h = net.encoder_block(index, h)
        return {head: net.decoder_head(head, h).numpy().transpose(0, 2, 3, 1) for head in ("amp", "phase")}


def _inputs(cfg, batch=1, seed=0):
    return np.random.default_rng(seed).uniform(0.0, 2.0, size=(batch, cfg.N, cfg.N, cfg.C)).astype(cfg.dtype)


# ---------------------------------------------------------------- Glorot init and names


def test_init_is_deterministic_per_seed():
    a, b, c = init_weights(SMALL, seed=7), init_weights(SMALL, seed=7), init_weights(SMALL, seed=8)
    assert list(a) == list(b) == list(c)
    for name in a:
        assert np.array_equal(a[name], b[name])
        if name.endswith(".kernel"):
            assert not np.array_equal(a[name], c[name]), name
    assert weight_problems(SMALL, a) == []


def test_init_respects_glorot_limits_and_bias_scale():
    weights = init_weights(SMALL, seed=1)
    biased = init_weights(SMALL, seed=1, bias_scale=0.25)
    for name, shape in weight_specs(SMALL):
        array = weights[name]
        assert array.shape == shape and array.dtype == np.float64
        if name.endswith(".kernel"):
            limit = math.sqrt(6.0 / (9 * shape[2] + 9 * shape[3]))
            assert np.abs(array).max() <= limit, name
            # Uniform over the whole interval, not a narrower one.
            assert np.abs(array).max() > 0.9 * limit, name
            assert abs(array.mean()) < 0.1 * limit, name
        else:
            assert not array.any(), f"{name}: biases default to zero"
            assert np.abs(biased[name]).max() <= 0.25 and biased[name].any(), name
    assert init_weights(SMALL.replace(dtype="float32"), seed=1)["encoder.block0.conv0.kernel"].dtype == np.float32


def test_parameter_names_are_stable():
    table = parameter_table(SMALL)
    assert [(e.canonical, e.torch, e.canonical_shape) for e in table] == [
        ("encoder.block0.conv0.kernel", "encoder.blocks.0.conv0.weight", (3, 3, 4, 128)),
        ("encoder.block0.conv0.bias", "encoder.blocks.0.conv0.bias", (128,)),
        ("encoder.block0.conv1.kernel", "encoder.blocks.0.conv1.weight", (3, 3, 128, 128)),
        ("encoder.block0.conv1.bias", "encoder.blocks.0.conv1.bias", (128,)),
        ("encoder.block1.conv0.kernel", "encoder.blocks.1.conv0.weight", (3, 3, 128, 256)),
        ("encoder.block1.conv0.bias", "encoder.blocks.1.conv0.bias", (256,)),
        ("encoder.block1.conv1.kernel", "encoder.blocks.1.conv1.weight", (3, 3, 256, 256)),
        ("encoder.block1.conv1.bias", "encoder.blocks.1.conv1.bias", (256,)),
        ("decoder.amp.block0.conv0.kernel", "decoder_amp.blocks.0.conv0.weight", (3, 3, 256, 64)),
        ("decoder.amp.block0.conv0.bias", "decoder_amp.blocks.0.conv0.bias", (64,)),
        ("decoder.amp.block0.conv1.kernel", "decoder_amp.blocks.0.conv1.weight", (3, 3, 64, 64)),
        ("decoder.amp.block0.conv1.bias", "decoder_amp.blocks.0.conv1.bias", (64,)),
        ("decoder.amp.conv1.kernel", "decoder_amp.conv1.weight", (3, 3, 60, 4)),
        ("decoder.amp.conv1.bias", "decoder_amp.conv1.bias", (4,)),
        ("decoder.phase.block0.conv0.kernel", "decoder_phase.blocks.0.conv0.weight", (3, 3, 256, 64)),
        ("decoder.phase.block0.conv0.bias", "decoder_phase.blocks.0.conv0.bias", (64,)),
        ("decoder.phase.block0.conv1.kernel", "decoder_phase.blocks.0.conv1.weight", (3, 3, 64, 64)),
        ("decoder.phase.block0.conv1.bias", "decoder_phase.blocks.0.conv1.bias", (64,)),
        ("decoder.phase.conv1.kernel", "decoder_phase.conv1.weight", (3, 3, 60, 4)),
        ("decoder.phase.conv1.bias", "decoder_phase.conv1.bias", (4,)),
    ]
    for cfg in (SMALL, BIG, UNPADDED):
        # The Torch module's own names, in the same order, and every Keras layer named after its prefix.
        assert list(PtychoNet(cfg).state_dict()) == [e.torch for e in parameter_table(cfg)]
        network = KerasNetwork(cfg)
        assert sorted(layer.name for layer in network.layers.values()) == sorted(
            {keras_layer_name(name.rsplit(".", 1)[0]) for name, _ in weight_specs(cfg)})


def test_keras_file_keys_are_stable():
    # Keras files are keyed by class name and position in model.layers, not by layer name:
    # note that the phase head's output conv is filed before the amp head's (same shape!).
    paths = keras_weight_paths(SMALL)
    assert list(paths) == [name for name, _ in weight_specs(SMALL)]
    assert {name: paths[name] for name in paths if name.endswith(".kernel")} == {
        "encoder.block0.conv0.kernel": "layers/conv2d/vars/0",
        "encoder.block0.conv1.kernel": "layers/conv2d_1/vars/0",
        "encoder.block1.conv0.kernel": "layers/conv2d_2/vars/0",
        "encoder.block1.conv1.kernel": "layers/conv2d_3/vars/0",
        "decoder.amp.block0.conv0.kernel": "layers/conv2d_4/vars/0",
        "decoder.phase.block0.conv0.kernel": "layers/conv2d_5/vars/0",
        "decoder.amp.block0.conv1.kernel": "layers/conv2d_6/vars/0",
        "decoder.phase.block0.conv1.kernel": "layers/conv2d_7/vars/0",
        "decoder.phase.conv1.kernel": "layers/conv2d_8/vars/0",
        "decoder.amp.conv1.kernel": "layers/conv2d_9/vars/0",
    }
    assert all(paths[n] == paths[n.replace(".bias", ".kernel")][:-1] + "1" for n in paths if n.endswith(".bias"))


def test_snake_case_is_keras_own_rule():
    naming = pytest.importorskip("keras.src.utils.naming")
    for name in ("Conv2D", "MaxPooling2D", "UpSampling2D", "InputLayer", "BatchNormalization", "Dense"):
        assert to_snake_case(name) == naming.to_snake_case(name)


# ---------------------------------------------------------------- the kernel converter


def test_kernel_converter_against_a_real_convolution():
    rng = np.random.default_rng(11)
    kernel = rng.normal(size=(3, 3, 3, 5))
    bias = rng.normal(size=5)
    x = rng.normal(size=(2, 9, 7, 3))
    layer = keras.layers.Conv2D(5, 3, padding="same", dtype="float64")
    layer.build((None, None, None, 3))
    layer.set_weights([kernel, bias])
    expected = np.asarray(layer(tf.constant(x)))

    def torch_conv(weight):
        out = F.conv2d(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), torch.from_numpy(weight),
                       torch.from_numpy(bias), padding=1)
        return out.numpy().transpose(0, 2, 3, 1)

    got = torch_conv(kernel_to_torch(kernel))
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12 * np.abs(expected).max())
    # Negative control: H and W swapped (the classic wrong transpose) is visibly wrong.
    wrong = np.ascontiguousarray(np.transpose(kernel, (3, 2, 1, 0)))
    assert np.abs(torch_conv(wrong) - expected).max() > 1e-3


def test_kernel_converter_round_trips_exactly():
    kernel = np.random.default_rng(2).normal(size=(3, 3, 6, 5))
    weight = kernel_to_torch(kernel)
    assert weight.shape == (5, 6, 3, 3) and weight[4, 1, 2, 0] == kernel[2, 0, 1, 4]
    assert np.array_equal(kernel_to_keras(weight), kernel)
    with pytest.raises(ValueError, match="4 axes"):
        kernel_to_torch(kernel[0])
    weights = init_weights(BIG, seed=5, bias_scale=0.1)
    back = from_state_dict(BIG, to_state_dict(BIG, weights))
    assert all(np.array_equal(back[name], weights[name]) for name in weights)
    assert torch_roundtrip_report(BIG, weights).ok


# ---------------------------------------------------------------- real Keras files


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_keras_weight_paths_match_the_file_keras_wrote(saved, suffix):
    cfg, weights, path = saved["big", suffix]
    paths = keras_weight_paths(cfg)
    if suffix == ".keras":
        with zipfile.ZipFile(path) as archive:
            assert {"config.json", "metadata.json", "model.weights.h5"} <= set(archive.namelist())
            handle = h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r")
    else:
        handle = h5py.File(path, "r")
    with handle:
        stored = set()
        handle.visititems(lambda key, item: stored.add(key) if isinstance(item, h5py.Dataset) else None)
        assert stored == set(paths.values()), "the file holds exactly our parameters"
        for name, key in paths.items():
            assert np.array_equal(handle[key][()], weights[name]), name
            layer_group = key.rsplit("/", 1)[0]
            assert handle[layer_group].attrs["name"] == keras_layer_name(name.rsplit(".", 1)[0])


@pytest.mark.parametrize("label", ["big", "unpadded"])
@pytest.mark.parametrize("suffix", SUFFIXES)
def test_keras_file_maps_to_torch_with_the_same_decoder_output(saved, tf_reference, label, suffix):
    cfg, _, path = saved[label, suffix]
    state, report = keras_file_to_state_dict(cfg, path)
    assert report.ok, report.render_lines()
    assert all(isinstance(value, torch.Tensor) and value.dtype == torch.float64 for value in state.values())
    net = PtychoNet(cfg)
    net.load_state_dict(state, strict=True)
    x, expected = tf_reference[label]
    got = _torch_decoder(cfg, net, x)
    for head in ("amp", "phase"):
        assert got[head].shape == expected[head].shape == (x.shape[0], cfg.N, cfg.N, cfg.Co)
        scale = np.abs(expected[head]).max()
        assert scale > 0
        assert np.abs(got[head] - expected[head]).max() <= 1e-12 * scale, head


def test_report_lists_every_parameter_with_zero_round_trip(saved):
    cfg, _, path = saved["big", ".weights.h5"]
    _, report = keras_file_to_state_dict(cfg, path)
    paths = keras_weight_paths(cfg)
    assert [row.canonical for row in report.rows] == [name for name, _ in weight_specs(cfg)]
    for row in report.rows:
        assert row.ok and row.max_abs_roundtrip_diff == 0
        assert row.keras_path == paths[row.canonical]
        if row.canonical.endswith(".kernel"):
            assert row.transform == "transpose(3, 2, 0, 1)"
            assert row.torch_shape == tuple(row.keras_shape[axis] for axis in (3, 2, 0, 1))
        else:
            assert row.transform == "identity" and row.torch_shape == row.keras_shape
    document = json.loads(json.dumps(report.to_dict()))
    assert document["ok"] is True and document["problems"] == []
    assert len(document["parameters"]) == len(report.rows)
    lines = report.render_lines()
    assert "ok" in lines[0] and all(any(row.canonical in line for line in lines) for row in report.rows)


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_state_dict_to_keras_file_and_back(tmp_path, suffix):
    torch.manual_seed(0)
    net = PtychoNet(BIG)
    state = net.state_dict()
    path = tmp_path / f"from_torch{suffix}"
    report = state_dict_to_keras_file(BIG, state, path)
    # Each row compares the file as Keras reads it back, in Torch layout, with the given tensor.
    assert report.ok, report.render_lines()
    assert [row.torch_name for row in report.rows] == list(state)
    assert all(row.max_abs_roundtrip_diff == 0 and row.keras_path for row in report.rows)
    assert path.is_file()


def test_keras_archive_is_a_full_keras_model(saved):
    # model.save of the functional model (slices, pads, tanh and all) is readable by Keras itself.
    cfg, weights, path = saved["big", ".keras"]
    model = keras.models.load_model(path)
    x = _inputs(cfg)
    amp, phase = (np.asarray(out) for out in model(tf.constant(x)))
    expected = _tf_decoder(cfg, weights, x)
    assert np.array_equal(amp, expected["amp"]) and np.array_equal(phase, expected["phase"])


def test_check_weight_mapping_round_trip_is_exact(tmp_path):
    weights = init_weights(BIG, seed=9, bias_scale=0.1)
    report = check_weight_mapping(BIG, weights, tmp_path)
    assert report.ok, report.render_lines()
    assert len(report.rows) == len(weights) and all(row.max_abs_roundtrip_diff == 0 for row in report.rows)
    assert report.source.startswith("canonical -> weight_mapping.weights.h5 ->")


def test_audit_reports_problems_before_any_comparison(monkeypatch):
    weights = init_weights(SMALL, seed=0, bias_scale=0.1)
    assert audit_weights(SMALL, weights) == []
    missing = dict(weights)
    del missing["decoder.amp.conv1.bias"]
    assert any("decoder.amp.conv1.bias" in line and "missing" in line for line in audit_weights(SMALL, missing))
    bad = dict(weights, **{"encoder.block0.conv0.kernel": weights["encoder.block0.conv0.kernel"][:, :, :1]})
    assert any("encoder.block0.conv0.kernel" in line and "shape" in line for line in audit_weights(SMALL, bad))
    # An injected port bug: kernels transposed (H, W swapped) on the way to Torch. The 3x3 shapes
    # still fit, so only the round trip can see it, and it must name the kernels.
    monkeypatch.setattr(state_dict_module, "KERAS_TO_TORCH_KERNEL", (3, 2, 1, 0))
    problems = audit_weights(SMALL, weights)
    kernels = [name for name, _ in weight_specs(SMALL) if name.endswith(".kernel")]
    assert len(problems) == len(kernels)
    assert all(any(repr(name) in line for line in problems) for name in kernels)


# ---------------------------------------------------------------- error cases


def test_missing_file(tmp_path):
    with pytest.raises(WeightFileError, match="does not exist") as info:
        load_keras_weights(SMALL, tmp_path / "nothing.weights.h5")
    assert "nothing.weights.h5" in str(info.value)
    with pytest.raises(WeightFileError, match="does not exist"):
        keras_file_to_state_dict(SMALL, tmp_path / "nothing.keras")
    with pytest.raises(WeightFileError, match="unsupported file name"):
        load_keras_weights(SMALL, tmp_path / "legacy.h5")


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_truncated_and_corrupt_files(saved, tmp_path, suffix):
    _, _, path = saved["big", suffix]
    data = path.read_bytes()
    container = "HDF5" if suffix == ".weights.h5" else "zip"
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightFileError, match=f"{container}.*truncated") as info:
        load_keras_weights(BIG, cut)
    assert str(info.value).startswith(f"{cut}: ")
    garbage = tmp_path / f"garbage{suffix}"
    garbage.write_bytes(b"\x80\x04\x95 a pickle header: not a weights file, and never unpickled" * 10)
    with pytest.raises(WeightFileError, match=f"not an? {'HDF5 file' if container == 'HDF5' else 'readable zip'}"):
        load_keras_weights(BIG, garbage)


def test_wrong_container_for_the_suffix(saved, tmp_path):
    _, _, archive = saved["big", ".keras"]
    renamed = tmp_path / "archive.weights.h5"
    shutil.copy(archive, renamed)
    with pytest.raises(WeightFileError, match="not an HDF5 file"):
        load_keras_weights(BIG, renamed)
    no_weights = tmp_path / "empty.keras"
    with zipfile.ZipFile(no_weights, "w") as out:
        out.writestr("config.json", "{}")
    with pytest.raises(WeightFileError, match="model.weights.h5"):
        load_keras_weights(BIG, no_weights)


def test_archive_with_a_repeated_member_is_refused(saved, tmp_path):
    """Two copies of model.weights.h5: zipfile reads the last, Keras or unzip may read the first."""
    _, _, archive = saved["big", ".keras"]
    doubled = tmp_path / "doubled.keras"
    with zipfile.ZipFile(archive) as source, zipfile.ZipFile(doubled, "w") as out, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile's "Duplicate name" warning
        for info in source.infolist():
            out.writestr(info, source.read(info))
        out.writestr("model.weights.h5", source.read("model.weights.h5"))
    with pytest.raises(WeightFileError, match="holds member 'model.weights.h5' 2 times") as caught:
        load_keras_weights(BIG, doubled)
    assert str(doubled) in str(caught.value)


@pytest.mark.parametrize(("other", "suffix"), [(BIG.replace(N=64), ".weights.h5"), (BIG.replace(gridsize=1), ".keras")],
                         ids=["N64", "gridsize1"])
def test_file_from_another_configuration(tmp_path, other, suffix):
    path = save_keras_weights(other, init_weights(other, seed=0), tmp_path / f"other{suffix}")
    with pytest.raises(WeightFileError) as info:
        keras_file_to_state_dict(BIG, path)
    message = str(info.value)
    assert str(path) in message
    first = "encoder.block0.conv0.kernel"
    expected = dict(weight_specs(BIG))[first]
    assert f"parameter {first!r}" in message and f"expected {expected}" in message
    assert "layers/conv2d/vars/0" in message


def test_file_with_another_layer_set(saved):
    _, _, path = saved["big", ".weights.h5"]  # probe_big: more layers than BIG without it
    with pytest.raises(WeightFileError) as info:
        load_keras_weights(BIG.replace(probe_big=False), path)
    assert "positionally" in str(info.value)


def test_file_with_layers_in_another_order(saved, tmp_path):
    _, _, path = saved["big", ".weights.h5"]
    swapped = tmp_path / "swapped.weights.h5"
    shutil.copy(path, swapped)
    paths = keras_weight_paths(BIG)
    amp = paths["decoder.amp.conv1.kernel"].rsplit("/", 1)[0]
    phase = paths["decoder.phase.conv1.kernel"].rsplit("/", 1)[0]
    with h5py.File(swapped, "r+") as handle:  # same shapes, names say the order differs
        handle[amp].attrs["name"], handle[phase].attrs["name"] = "decoder_phase_conv1", "decoder_amp_conv1"
    with pytest.raises(WeightFileError, match="positionally") as info:
        load_keras_weights(BIG, swapped)
    assert "decoder_amp_conv1" in str(info.value)
    # Files from Keras versions that wrote no layer names load on keys and shapes alone.
    with h5py.File(swapped, "r+") as handle:
        named = []
        handle.visititems(lambda _, item: named.append(item) if "name" in item.attrs else None)
        for item in named:
            del item.attrs["name"]
    assert load_keras_weights(BIG, swapped).keys() == paths.keys()


def test_file_lacking_a_layer(saved, tmp_path):
    _, _, path = saved["big", ".weights.h5"]
    lacking = tmp_path / "lacking.weights.h5"
    shutil.copy(path, lacking)
    key = keras_weight_paths(BIG)["decoder.phase.conv2.kernel"]
    with h5py.File(lacking, "r+") as handle:
        del handle[key.rsplit("/vars", 1)[0]]
    with pytest.raises(WeightFileError) as info:
        load_keras_weights(BIG, lacking)
    assert "'decoder.phase.conv2.kernel'" in str(info.value) and key in str(info.value)


def test_state_dict_with_missing_or_extra_keys(tmp_path):
    state = PtychoNet(SMALL).state_dict()
    missing = dict(state)
    del missing["decoder_phase.conv1.weight"]
    with pytest.raises(WeightMappingError, match="lacks key 'decoder_phase.conv1.weight'"):
        state_dict_to_keras_file(SMALL, missing, tmp_path / "missing.weights.h5")
    extra = dict(state, **{"decoder_phase.attention.weight": torch.zeros(3)})
    with pytest.raises(WeightMappingError, match="unexpected key 'decoder_phase.attention.weight'"):
        state_dict_to_keras_file(SMALL, extra, tmp_path / "extra.weights.h5")
    wrong = dict(state, **{"encoder.blocks.0.conv0.weight": state["encoder.blocks.0.conv0.weight"][:, :1]})
    with pytest.raises(WeightMappingError, match=r"encoder.blocks.0.conv0.weight.*expected \(128, 4, 3, 3\)"):
        state_dict_to_keras_file(SMALL, wrong, tmp_path / "wrong.weights.h5")
    assert not any(tmp_path.iterdir()), "nothing is written for a state_dict that does not fit"
