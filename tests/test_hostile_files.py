"""Files that point elsewhere or claim too much: HDF5 external storage and virtual datasets, huge strays,
weights that could not tell a port, zip-bombed Keras archives. Each refused with exit 2, without hanging."""

from __future__ import annotations

import os
import shutil
import zipfile

import h5py
import numpy as np
import pytest

from backends.common.config import resolve_config
from backends.common.weights import init_weights
from parity.goldens import DIGEST_ATTR, metadata_digest
from tests.hostile import ROOT, assert_refused, parity_process

CASE = "physics-n32-edge-offsets-f64"
SHIPPED = ROOT / "fixtures" / "goldens" / f"{CASE}.h5"


def _forged(tmp_path, change, monkeypatch) -> str:
    """A copy of the shipped golden changed by ``change`` and resealed (as someone who read the code would)."""
    folder = tmp_path / "goldens"
    folder.mkdir()
    path = folder / SHIPPED.name
    shutil.copy(SHIPPED, path)
    with h5py.File(path, "r+") as h5:
        change(h5, tmp_path)
        with monkeypatch.context() as patched:  # the digest of the forged layout, past the harness's refusal
            patched.setattr(h5py.Dataset, "external", property(lambda self: None))
            patched.setattr(h5py.Dataset, "is_virtual", property(lambda self: False))
            h5.attrs[DIGEST_ATTR] = metadata_digest(h5)
    return str(folder)


def _replace_tap(h5, make):
    old = h5["taps/amplitude"]
    attrs, shape, dtype, data = dict(old.attrs), old.shape, old.dtype, old[()]
    del h5["taps/amplitude"]
    make(h5["taps"], shape, dtype, data).attrs.update(attrs)


def _external_fifo(h5, tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    _replace_tap(h5, lambda group, shape, dtype, data: group.create_dataset(
        "amplitude", shape=shape, dtype=dtype, external=[(str(fifo), 0, h5py.h5f.UNLIMITED)]))


def _external_raw(h5, tmp_path):
    def make(group, shape, dtype, data):
        data.tofile(tmp_path / "raw.bin")
        return group.create_dataset("amplitude", shape=shape, dtype=dtype,
                                    external=[(str(tmp_path / "raw.bin"), 0, data.nbytes)])
    _replace_tap(h5, make)


def _virtual(h5, tmp_path):
    def make(group, shape, dtype, data):
        with h5py.File(tmp_path / "source.h5", "w") as source:
            source["d"] = data
        layout = h5py.VirtualLayout(shape=shape, dtype=dtype)
        layout[...] = h5py.VirtualSource(str(tmp_path / "source.h5"), "d", shape=shape)
        return group.create_virtual_dataset("amplitude", layout)
    _replace_tap(h5, make)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
@pytest.mark.parametrize("change, what", [(_external_fifo, "external storage"), (_external_raw, "external storage"),
                                          (_virtual, "virtual dataset")])
def test_a_golden_whose_data_lives_in_another_file_is_refused(tmp_path, monkeypatch, change, what):
    goldens = _forged(tmp_path, change, monkeypatch)
    result = parity_process("check", "--case", CASE, "--goldens", goldens, "--out", tmp_path / "out", timeout=90)
    assert_refused(result, SHIPPED.name, "'taps/amplitude' stores its data outside the file", what)


def test_a_huge_stray_dataset_is_refused_before_any_checksum(tmp_path, monkeypatch):
    def stray(h5, _):
        h5["taps"].create_dataset("zz_junk", shape=(10**6, 10**6), dtype="f4", chunks=(1, 1024), compression="gzip")
        h5["taps/zz_junk"].attrs["sha256"] = "0" * 64
    goldens = _forged(tmp_path, stray, monkeypatch)
    result = parity_process("check", "--case", CASE, "--goldens", goldens, "--out", tmp_path / "out", timeout=90)
    assert_refused(result, "'taps/zz_junk'", "larger than any dataset of the case")


PINN = ["run", "--pipeline", "pinn", "--set", "N=32", "--set", "gridsize=1", "--set", "n_filters_scale=1",
        "--set", "object_big=false", "--set", "pad_object=false"]


def _pinn_inputs(tmp_path):
    from parity import synthetic

    path = tmp_path / "inputs.npz"
    cfg = resolve_config({"N": 32, "gridsize": 1, "n_filters_scale": 1, "object_big": False, "pad_object": False})
    np.savez(path, **synthetic.pipeline_inputs("pinn", cfg, 2, seed=1))
    return cfg, path


@pytest.mark.parametrize("change, fragment", [
    (lambda w: {name: np.zeros_like(value) for name, value in w.items()}, "every parameter is zero"),
    (lambda w: {name: value * (1e30 if index == 0 else 1) for index, (name, value) in enumerate(w.items())},
     "beyond 1e+10"),
])
def test_weights_that_cannot_tell_a_port_are_refused(tmp_path, change, fragment):
    cfg, inputs = _pinn_inputs(tmp_path)
    weights = tmp_path / "weights.npz"
    np.savez(weights, **change(init_weights(cfg, seed=0)))
    result = parity_process(*PINN, "--inputs", inputs, "--weights", weights, "--out", tmp_path / "out")
    assert_refused(result, str(weights), "weights cannot tell a port", fragment)


def test_a_zip_bombed_keras_archive_is_refused_before_unpacking(tmp_path):
    pytest.importorskip("backends.tf", reason="TensorFlow (the reference) is not installed")
    _, inputs = _pinn_inputs(tmp_path)
    bomb = tmp_path / "bomb.keras"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("model.weights.h5", "w", force_zip64=True) as member:
            block = bytes(2**20)
            for _ in range(1024):  # 1 GiB of zeros, about 1 MB on disk
                member.write(block)
    result = parity_process(*PINN, "--inputs", inputs, "--weights", bomb, "--out", tmp_path / "out", timeout=180)
    assert_refused(result, str(bomb), "'model.weights.h5' unpacks to 1073741824 bytes", "zip bomb")


def _huge_chunks(h5, _):
    _replace_tap(h5, lambda group, shape, dtype, data: group.create_dataset(
        "amplitude", data=data, chunks=(60000, *shape[1:]), maxshape=(None, *shape[1:]), compression="gzip"))


def test_a_golden_tap_stored_in_chunks_far_larger_than_itself_is_refused_before_it_is_read(tmp_path, monkeypatch):
    goldens = _forged(tmp_path, _huge_chunks, monkeypatch)
    result = parity_process("check", "--case", CASE, "--goldens", goldens, "--out", tmp_path / "out", timeout=90)
    assert_refused(result, SHIPPED.name, "'taps/amplitude' is stored in chunks of (60000,")


@pytest.mark.parametrize("loop", ["taps/loop", "extra/loop"])
def test_a_golden_whose_groups_link_in_a_cycle_is_refused_without_walking_it_forever(tmp_path, loop):
    folder = tmp_path / "goldens"
    folder.mkdir()
    shutil.copy(SHIPPED, folder / SHIPPED.name)
    with h5py.File(folder / SHIPPED.name, "r+") as h5:
        if loop == "taps/loop":
            h5[loop] = h5["taps"]
        else:
            h5.create_group("extra")
            h5[loop] = h5["/"]
    result = parity_process("check", "--case", CASE, "--goldens", folder, "--out", tmp_path / "out", timeout=90)
    assert_refused(result, SHIPPED.name, f"'{loop}' links to a group the file already holds")


def _keras_weights(tmp_path, cfg):
    from backends.tf.keras_io import save_keras_weights

    return save_keras_weights(cfg, init_weights(cfg, seed=0), tmp_path / "w.weights.h5")


def _fifo_link(h5, tmp_path):
    fifo = tmp_path / "fifo.h5"
    os.mkfifo(fifo)
    del h5["layers/conv2d/vars/0"]
    h5["layers/conv2d/vars/0"] = h5py.ExternalLink(str(fifo), "kernel")  # opening it would block forever


def _bomb_chunk(h5, _):
    size = h5["layers/conv2d/vars/1"].shape
    del h5["layers/conv2d/vars/1"]
    h5.create_dataset("layers/conv2d/vars/1", shape=size, maxshape=(None,), chunks=(2**26,), dtype="<f4",
                      compression="gzip")  # 256 MiB inflated for a few hundred bytes of bias


def _bad_gzip(h5, _):
    size = h5["layers/conv2d/vars/1"].shape
    del h5["layers/conv2d/vars/1"]
    dataset = h5.create_dataset("layers/conv2d/vars/1", shape=size, chunks=size, dtype="<f4", compression="gzip")
    dataset.id.write_direct_chunk((0,), b"\x78\x9c" + b"\xff" * 40)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
@pytest.mark.parametrize("change, fragment", [
    (_fifo_link, "key 'layers/conv2d/vars/0' is reached through an external link"),
    (_bomb_chunk, "key 'layers/conv2d/vars/1' is stored in chunks of (67108864,)"),
    (_bad_gzip, "key 'layers/conv2d/vars/1' cannot be read"),
], ids=["external link to a FIFO", "a chunk far larger than its dataset", "a damaged chunk"])
def test_a_keras_weights_file_that_points_elsewhere_inflates_or_is_damaged_is_refused(tmp_path, change, fragment):
    pytest.importorskip("backends.tf", reason="TensorFlow (the reference) is not installed")
    cfg, inputs = _pinn_inputs(tmp_path)
    weights = _keras_weights(tmp_path, cfg)
    with h5py.File(weights, "r+") as h5:
        change(h5, tmp_path)
    result = parity_process(*PINN, "--inputs", inputs, "--weights", weights, "--out", tmp_path / "out", timeout=120)
    assert_refused(result, str(weights), fragment)


def test_a_tap_stored_in_another_byte_order_is_refused_naming_it(tmp_path, monkeypatch):
    """'>c16' is complex128 by name: a resealed golden with a big-endian tap is refused, not a harness crash."""
    def big_endian(h5, _):
        from parity.golden_digest import dataset_digest

        def make(group, shape, dtype, data):
            swapped = data.astype(dtype.newbyteorder(">"))
            made = group.create_dataset("amplitude", data=swapped)
            made.attrs["sha256"] = dataset_digest(swapped)
            return made
        _replace_tap(h5, make)
        h5["taps/amplitude"].attrs["sha256"] = dataset_digest(h5["taps/amplitude"][()])

    goldens = _forged(tmp_path, big_endian, monkeypatch)
    result = parity_process("check", "--case", CASE, "--goldens", goldens, "--out", tmp_path / "out", timeout=90)
    assert_refused(result, SHIPPED.name, "'taps/amplitude' is stored as", "another byte order")
