"""Golden HDF5 files: record, reopen, checksums, provenance, stale refusal, corruption, atomic writes.

The reference is the real TensorFlow backend and the candidate the real
PyTorch one, on a physics case shrunk to N=32 and a batch of 1. Attacks run
as real processes (signals, file-size limits, permissions) live in
``test_golden_processes.py``; the shipped goldens are checked in
``test_shipped_goldens.py``.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

pytest.importorskip("backends.tf", reason="TensorFlow (the reference) is not installed")
pytest.importorskip("backends.torch", reason="PyTorch (the candidate) is not installed")

import torch  # noqa: E402

from backends.common.config import resolve_config  # noqa: E402
from backends.common.taps import pipeline_taps  # noqa: E402
from parity import builtin_cases  # noqa: E402
from parity import cases as cases_module  # noqa: E402
from parity.builtin_cases import BUILTIN_CASES  # noqa: E402
from parity.errors import CorruptGoldenError, ParityInputError, ReferenceFailed, StaleGoldenError  # noqa: E402
from parity.goldens import (  # noqa: E402
    DIGEST_ATTR,
    SCHEMA_VERSION,
    Golden,
    GoldenWriter,
    dataset_digest,
    golden_path,
    metadata_digest,
)
from parity.runner import RunOptions, run_case  # noqa: E402
from parity.tolerances import load_tolerances  # noqa: E402
from parity.workflows import DEFAULT_TOLERANCES, check_against_golden, open_golden, record_golden  # noqa: E402

CASE = dataclasses.replace(BUILTIN_CASES["physics-default"], name="physics-small", config=resolve_config({"N": 32}),
                           batch=1)
SPECS = pipeline_taps(CASE.pipeline, CASE.config)
TAP_NAMES = [spec.name for spec in SPECS]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory, reference) -> Path:
    """The golden folder holding CASE's golden; tests copy it before changing anything."""
    folder = tmp_path_factory.mktemp("goldens")
    path = record_golden(CASE, reference, folder)
    assert path == golden_path(folder, CASE.name) == folder / "physics-small.h5"
    return folder


@pytest.fixture
def goldens(recorded, tmp_path) -> Path:
    """A private copy of the recorded golden folder."""
    folder = tmp_path / "goldens"
    shutil.copytree(recorded, folder)
    return folder


def _path(folder: Path) -> Path:
    return golden_path(folder, CASE.name)


# ---- record and reopen ----

def test_golden_reopens_and_verifies(recorded):
    with open_golden(CASE, recorded) as opened:
        golden = opened.golden
        golden.verify()
        assert golden.case_name == CASE.name and golden.pipeline == "physics"
        assert golden.config == CASE.config
        assert golden.tap_names() == TAP_NAMES
        assert list(golden.h5["taps"]) == sorted(TAP_NAMES)  # every tap, nothing else
        assert opened.notes == [] and opened.drift.status == "identical"


def test_golden_taps_have_registry_shape_dtype_and_attrs(recorded):
    with open_golden(CASE, recorded) as opened:
        for spec in SPECS:
            dataset = opened.golden.tap(spec.name)
            assert dataset.shape == spec.shape(CASE.config, CASE.batch), spec.name
            assert dataset.dtype == spec.dtype(CASE.config), spec.name
            assert dataset.attrs["layout"] == spec.layout and dataset.attrs["kind"] == spec.kind
            assert dataset.attrs["stage"] == spec.stage
            assert dataset.attrs["sha256"] == dataset_digest(dataset)
            assert dataset.attrs["declared_dtype"] == spec.dtype(CASE.config).name


def test_golden_holds_the_case_inputs_and_the_reference_values(recorded, reference):
    fresh = reference.run_all(CASE.pipeline, CASE.config, CASE.inputs)
    with open_golden(CASE, recorded) as opened:
        inputs = opened.golden.inputs()
        assert sorted(inputs) == sorted(CASE.inputs)
        for name, value in CASE.inputs.items():
            assert inputs[name].dtype == value.dtype and np.array_equal(inputs[name], value), name
        for name in TAP_NAMES:  # the reference is deterministic: a rerun gives the same bits
            assert np.array_equal(opened.golden.tap(name)[()], fresh[name]), name


def test_golden_provenance_and_definition(recorded):
    with open_golden(CASE, recorded) as opened:
        golden = opened.golden
        attrs = golden.attrs
        assert int(attrs["schema_version"]) == SCHEMA_VERSION == 2
        assert attrs["case_hash"] == CASE.hash()
        assert json.loads(attrs["definition"]) == CASE.definition() == golden.definition
        assert set(CASE.definition()) == {"pipeline", "config", "seed", "batch", "registry", "inputs"}
        assert CASE.definition()["inputs"] == "synthetic/1"
        assert json.loads(attrs["config"])["dtype"] == "float32" and json.loads(attrs["config"])["N"] == 32
        assert attrs[DIGEST_ATTR] == metadata_digest(golden.h5)
        backend = golden.backend
        assert backend["name"] == "tf" and backend["device"] == "cpu" and backend["stages_replaced"] == []
        assert {"tensorflow", "keras", "numpy"} <= set(backend["versions"])
        provenance = golden.provenance
        assert provenance["device"] == "cpu"
        libraries = provenance["libraries"]
        assert {"python", "numpy", "h5py", "keras", "torch"} <= set(libraries)
        assert "tensorflow" in libraries or "tensorflow-cpu" in libraries
        determinism = provenance["determinism"]
        assert determinism["environment"]["TF_DETERMINISTIC_OPS"] == "1"
        assert determinism["environment"]["TF_ENABLE_ONEDNN_OPTS"] == "0"
        assert determinism["tensorflow"]["op_determinism"] is True
        assert determinism["settings"]["intra_op_threads"] >= 1
        assert "+src." in provenance["code_version"]
        stamp = datetime.datetime.fromisoformat(provenance["timestamp"])
        age = datetime.datetime.now(datetime.timezone.utc) - stamp
        assert datetime.timedelta(0) <= age < datetime.timedelta(hours=1)
        assert attrs["created"] == provenance["timestamp"]


def test_pinn_golden_stores_no_weights_but_their_digest(tmp_path, reference):
    case = dataclasses.replace(BUILTIN_CASES["pinn-n32-single-patch"], batch=1)
    record_golden(case, reference, tmp_path)
    with h5py.File(golden_path(tmp_path, case.name), "r") as h5:
        assert sorted(h5) == ["inputs", "taps"]
        assert sorted(h5["inputs"]) == ["X", "positions", "probe"]
        assert json.loads(h5.attrs["definition"])["weights"] == case.definition()["weights"]
    with open_golden(case, tmp_path) as opened:
        assert opened.case.weights is not None and opened.notes == []


def test_golden_file_mode_is_not_private(recorded):
    """A golden is an ordinary shared file, not a private temporary."""
    mask = os.umask(0)
    os.umask(mask)
    assert _path(recorded).stat().st_mode & 0o777 == 0o666 & ~mask


def test_missing_golden_is_an_input_error(tmp_path):
    with pytest.raises(ParityInputError, match="golden file not found") as caught:
        open_golden(CASE, tmp_path)
    assert "parity record" in str(caught.value)


# ---- stale goldens: the case's definition changed ----

def test_changed_knob_is_stale(recorded):
    changed = dataclasses.replace(CASE, config=CASE.config.replace(gaussian_sigma=0.5))
    with pytest.raises(StaleGoldenError) as caught:
        open_golden(changed, recorded)
    message = str(caught.value)
    assert "stale golden for case 'physics-small'" in message
    assert "gaussian_sigma: golden 0.0 -> now 0.5" in message
    assert CASE.hash() in message and changed.hash() in message
    assert "input" not in message and "registry" not in message  # neither the inputs nor the shapes changed
    assert "parity record --case physics-small" in message


def test_changed_dtype_is_stale_and_names_the_registry_change(recorded):
    changed = dataclasses.replace(CASE, config=CASE.config.replace(dtype="float64"))
    with pytest.raises(StaleGoldenError) as caught:
        open_golden(changed, recorded)
    message = str(caught.value)
    assert "dtype: golden 'float32' -> now 'float64'" in message
    assert "registry" in message and "farfield golden ['BHWC', [1, 32, 32, 4], 'complex64'] -> now " \
        "['BHWC', [1, 32, 32, 4], 'complex128']" in message


def test_changed_batch_is_stale_and_names_the_shapes(recorded):
    with pytest.raises(StaleGoldenError) as caught:
        open_golden(dataclasses.replace(CASE, batch=2), recorded)
    message = str(caught.value)
    assert "batch: golden '1' -> now '2'" in message and "[2, 32, 32, 4]" in message


def test_changed_seed_is_stale(recorded):
    with pytest.raises(StaleGoldenError, match="seed: golden '5' -> now '6'"):
        open_golden(dataclasses.replace(CASE, seed=CASE.seed + 1), recorded)


def test_changed_builder_version_is_stale(recorded):
    bumped = cases_module.VersionedBuilder(CASE.build_inputs.function, "synthetic/2")
    with pytest.raises(StaleGoldenError, match="inputs: golden 'synthetic/1' -> now 'synthetic/2'"):
        open_golden(dataclasses.replace(CASE, build_inputs=bumped), recorded)


def test_changed_weights_are_stale_naming_the_weights(tmp_path, reference, monkeypatch):
    """Weights regenerated here that differ (an unportable generator) are refused, naming them."""
    case = dataclasses.replace(BUILTIN_CASES["pinn-n32-single-patch"], batch=1)
    record_golden(case, reference, tmp_path)
    original = cases_module.init_weights

    def one_ulp_off(cfg, seed=0, bias_scale=0.0):
        weights = original(cfg, seed=seed, bias_scale=bias_scale)
        kernel = weights["encoder.block0.conv0.kernel"]
        kernel.flat[0] = np.nextafter(kernel.flat[0], np.float32(np.inf))
        return weights

    monkeypatch.setattr(cases_module, "init_weights", one_ulp_off)
    fresh = dataclasses.replace(case)  # weights are cached per case object
    with pytest.raises(StaleGoldenError) as caught:
        open_golden(fresh, tmp_path)
    message = str(caught.value)
    assert "changed: weights (digest golden" in message and "not bit-portable" in message
    assert "config" not in message and "inputs:" not in message


def test_stale_golden_is_refused_by_run_case_too(recorded, candidate):
    changed = dataclasses.replace(CASE, config=CASE.config.replace(probe_mask=True))
    golden = Golden(_path(recorded))
    try:
        with pytest.raises(StaleGoldenError, match="probe_mask"):
            run_case(changed, golden, candidate, load_tolerances(DEFAULT_TOLERANCES))
    finally:
        golden.close()


def test_run_case_refuses_inputs_that_are_not_the_golden_s(recorded, candidate):
    """The runner never judges a candidate run on regenerated inputs against a golden."""
    inputs = dict(CASE.inputs)
    inputs["probe"] = inputs["probe"] * np.complex64(1 + 1e-6)
    elsewhere = CASE.with_inputs(inputs)
    golden = Golden(_path(recorded))
    try:
        with pytest.raises(ParityInputError, match="the case's inputs are not the golden's"):
            run_case(elsewhere, golden, candidate, load_tolerances(DEFAULT_TOLERANCES))
    finally:
        golden.close()


# ---- inputs regenerated here versus the golden's ----

def _drifted(case, transform):
    """``case`` whose builder (same version) returns transformed inputs: another machine's rounding."""
    original = case.build_inputs

    def build(c):
        return {name: transform(name, value) for name, value in original(c).items()}

    return dataclasses.replace(case, build_inputs=cases_module.VersionedBuilder(build, original.version))


def _nudge(array, ulps=1):
    array = array.copy()
    real = array.view(array.real.dtype)  # complex: both parts
    for _ in range(ulps):
        real[...] = np.nextafter(real, np.inf)
    return array


def _own(notes):
    """The notes about the golden (not the run's note on a knob at a neutral value)."""
    return [note for note in notes if "gives the same numbers" not in note]


def test_inputs_within_tolerance_use_the_golden_s_and_say_so(recorded, candidate, tmp_path):
    drifted = _drifted(CASE, lambda name, value: _nudge(value, 3) if name == "probe" else value)
    with open_golden(drifted, recorded) as opened:
        stored = opened.golden.inputs()
        assert all(np.array_equal(opened.case.inputs[name], stored[name]) for name in stored)
        assert not np.array_equal(drifted.inputs["probe"], stored["probe"])
        assert opened.drift.status == "within tolerance"
        [row] = opened.drift.differences
        assert row["input"] == "probe" and 0 < row["max_rel_to_peak"] < 1e-6
        assert row["tolerance"] == {"max_rel_to_peak": 1e-6}
        [note] = opened.notes
        assert note.startswith("inputs regenerated here differ from the golden's by ")
        assert note.endswith(" of peak (input 'probe'); the golden's inputs were used")
        report = check_against_golden(opened, candidate, load_tolerances(DEFAULT_TOLERANCES), RunOptions(),
                                      tmp_path)
    assert report.passed, report.first_divergence
    assert _own(report.notes) == [note]
    saved = json.loads((tmp_path / CASE.name / "report.json").read_text())
    assert _own(saved["notes"]) == [note]
    assert saved["reference"]["inputs"]["regenerated"] == "within tolerance"
    assert saved["reference"]["inputs"]["differences"][0]["input"] == "probe"
    assert saved["case"]["hashes"]["input:probe"] == cases_module.array_hash(stored["probe"])


def test_inputs_beyond_tolerance_are_refused_naming_input_difference_and_tolerance(recorded):
    drifted = _drifted(CASE, lambda name, value: value * np.float32(1.001) if name == "positions" else value)
    with pytest.raises(ParityInputError) as caught:
        open_golden(drifted, recorded)
    message = str(caught.value)
    assert not isinstance(caught.value, StaleGoldenError)
    assert str(_path(recorded)) in message and "input 'positions'" in message
    assert "max |a-b| = " in message and "of peak" in message
    assert "{'max_rel_to_peak': 1e-06}" in message and "synthetic/1" in message


def test_builder_building_other_inputs_under_the_same_version_is_refused(recorded):
    def extra(case):
        return {**builtin_cases._synthetic(case), "bonus": np.zeros(3, np.float32)}

    with pytest.raises(ParityInputError, match=r"now builds \['bonus'"):
        open_golden(dataclasses.replace(CASE, build_inputs=cases_module.VersionedBuilder(extra, "synthetic/1")),
                    recorded)


def test_inputs_that_cannot_be_regenerated_here_are_not_needed(recorded):
    def missing_fixture(case):
        raise ParityInputError("fixtures/data/fly001_probe.npz: probe fixture not found")

    case = dataclasses.replace(CASE, build_inputs=cases_module.VersionedBuilder(missing_fixture, "synthetic/1"))
    with open_golden(case, recorded) as opened:
        assert opened.drift.status == "not regenerated"
        assert "could not be regenerated here" in opened.notes[0] and "probe fixture not found" in opened.notes[0]
        assert sorted(opened.case.inputs) == sorted(CASE.inputs)


# ---- corruption and forgery ----

def _flip_bytes(path: Path, dataset: str) -> None:
    with h5py.File(path, "r+") as h5:
        data = h5[dataset][()]
        raw = data.view(np.uint8).copy()
        raw.reshape(-1)[[0, raw.size // 2]] ^= 0x5A
        h5[dataset][...] = raw.view(data.dtype).reshape(data.shape)


@pytest.mark.parametrize("dataset", ["taps/farfield", "taps/object.canvas", "inputs/probe"])
def test_corrupted_dataset_fails_its_checksum(goldens, dataset):
    _flip_bytes(_path(goldens), dataset)
    with pytest.raises(CorruptGoldenError) as caught:
        open_golden(CASE, goldens)
    assert f"dataset '{dataset}' fails its sha256 checksum" in str(caught.value)
    assert str(_path(goldens)) in str(caught.value)
    golden = Golden(_path(goldens))  # opening alone does not read data; verify() does
    try:
        with pytest.raises(CorruptGoldenError, match="sha256"):
            golden.verify()
    finally:
        golden.close()


def flip_compressed_chunk(path: Path, dataset: str) -> None:
    """Flip the first byte of the dataset's first gzip chunk in the raw file (its zlib header)."""
    with h5py.File(path, "r") as h5:
        assert h5[dataset].compression == "gzip"
        offset = h5[dataset].id.get_chunk_info(0).byte_offset
    with open(path, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0xFF]))


@pytest.mark.parametrize("dataset", ["taps/farfield", "inputs/object_patches"])
def test_a_flipped_byte_in_a_compressed_chunk_is_corruption_not_a_crash(goldens, dataset):
    flip_compressed_chunk(_path(goldens), dataset)
    with h5py.File(_path(goldens), "r") as h5, pytest.raises(OSError, match="filter returned failure"):
        h5[dataset][()]  # the attack: h5py itself raises an OSError on read
    with pytest.raises(CorruptGoldenError) as caught:
        open_golden(CASE, goldens)
    message = str(caught.value)
    assert f"dataset '{dataset}' cannot be read" in message and "damaged" in message
    golden = Golden(_path(goldens))
    try:
        with pytest.raises(CorruptGoldenError, match="cannot be read"):
            golden.verify()
        if dataset.startswith("inputs/"):
            with pytest.raises(CorruptGoldenError, match="cannot be read"):
                golden.inputs()
    finally:
        golden.close()


def test_uncorrupted_copy_still_verifies(goldens):
    """The corruption tests fail because of the changed bytes, not because of the copy."""
    with open_golden(CASE, goldens) as opened:
        opened.golden.verify()


def _tamper(path: Path, where: str = "/", reseal: bool = False, **attrs) -> None:
    """Set attributes; ``reseal`` recomputes the digest as a forger who knows the format would."""
    with h5py.File(path, "r+") as h5:
        h5[where].attrs.update(attrs)
        if reseal:
            h5.attrs[DIGEST_ATTR] = metadata_digest(h5)


@pytest.mark.parametrize("where, attrs", [
    ("/", {"provenance": json.dumps({"device": "cuda", "timestamp": "1999-01-01T00:00:00+00:00"})}),
    ("/", {"backend": json.dumps({"name": "torch", "device": "cpu", "stages_replaced": []})}),
    ("/", {"config": json.dumps(resolve_config({"N": 32, "gaussian_sigma": 0.5}).to_dict(), sort_keys=True)}),
    ("/", {"tap_order": json.dumps(list(reversed(TAP_NAMES)))}),
    ("/", {"description": "forged"}),
    ("/", {"created": "2001-01-01"}),
    ("/", {"extra": "added"}),
    ("taps/farfield", {"layout": "HW"}),
    ("taps/farfield", {"sha256": "0" * 64}),
], ids=["provenance", "backend", "config", "tap_order", "description", "created", "added", "tap-layout",
        "tap-checksum"])
def test_a_forged_attribute_is_refused_as_corrupt(goldens, where, attrs):
    _tamper(_path(goldens), where, **attrs)
    with pytest.raises(CorruptGoldenError) as caught:
        Golden(_path(goldens))
    message = str(caught.value)
    assert str(_path(goldens)) in message and "does not match its digest" in message


@pytest.mark.parametrize("change", ["delete-attr", "delete-tap", "add-dataset"])
def test_removed_or_added_objects_are_refused_as_corrupt(goldens, change):
    with h5py.File(_path(goldens), "r+") as h5:
        if change == "delete-attr":
            del h5.attrs["definition"]
        elif change == "delete-tap":
            del h5["taps"]["farfield"]
        else:
            h5["taps"].create_dataset("extra", data=np.zeros(3))
    with pytest.raises(CorruptGoldenError, match="does not match its digest"):
        open_golden(CASE, goldens)


@pytest.mark.parametrize("attrs, expected", [
    ({"definition": "[1,2]"}, "attribute 'definition' must hold a JSON dict, got list"),
    ({"definition": json.dumps({"pipeline": 5})}, "attribute 'definition' must hold only strings"),
    ({"config": "{not json"}, "attribute 'config' is not JSON (Expecting property name"),
    ({"config": json.dumps({"N": 33})}, "N must be a power of two"),
    ({"config": json.dumps({"warp": 9})}, "unknown knob"),
    ({"tap_order": "7"}, "attribute 'tap_order' must hold a JSON list, got int"),
    ({"pipeline": "teleport"}, "attribute 'pipeline' is 'teleport'"),
    ({"case_name": np.arange(3)}, "attribute 'case_name' must be text, got ndarray"),
    ({"provenance": b"\xff\xfe"}, "attribute 'provenance' is not JSON"),
], ids=["definition-list", "definition-values", "config-json", "config-knob", "config-unknown", "tap-order",
        "pipeline", "array", "bytes"])
def test_malformed_metadata_is_corrupt_not_a_crash(goldens, attrs, expected):
    """Even with a digest recomputed to match, malformed attributes are refused (exit 2), never a traceback."""
    _tamper(_path(goldens), reseal=True, **attrs)
    with pytest.raises(CorruptGoldenError) as caught:
        open_golden(CASE, goldens)
    message = str(caught.value)
    assert "missing or malformed golden metadata" in message and expected in message, message


def test_a_link_inside_a_golden_is_corrupt(goldens):
    with h5py.File(_path(goldens), "r+") as h5:
        h5["taps"]["alias"] = h5py.SoftLink("/taps/farfield")
    with pytest.raises(CorruptGoldenError, match="'taps/alias' is a SoftLink"):
        Golden(_path(goldens))


@pytest.mark.parametrize("version", [1, SCHEMA_VERSION + 1])
def test_other_schema_version_is_refused(goldens, version):
    _tamper(_path(goldens), schema_version=version)
    with pytest.raises(CorruptGoldenError, match=f"golden schema {version}, this harness reads {SCHEMA_VERSION}"):
        open_golden(CASE, goldens)


def test_schema_version_of_the_wrong_type_is_refused(goldens):
    _tamper(_path(goldens), schema_version="2")
    with pytest.raises(CorruptGoldenError, match="'schema_version' missing or not an integer"):
        open_golden(CASE, goldens)


def test_not_an_hdf5_file_is_corrupt(goldens):
    _path(goldens).write_bytes(b"not hdf5 at all" * 100)
    with pytest.raises(CorruptGoldenError, match="not a readable HDF5 golden"):
        open_golden(CASE, goldens)


def test_unrecorded_tap_is_named(goldens):
    with open_golden(CASE, goldens) as opened, pytest.raises(CorruptGoldenError, match="'exit_wav' not recorded"):
        opened.golden.tap("exit_wav")


# ---- files that are not regular: refused, never blocking ----

@pytest.fixture
def alarm():
    """Fail instead of hanging: an open() that blocks is interrupted after 20 s."""
    def timeout(signum, frame):
        raise TimeoutError("blocked")

    previous = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("kind", ["fifo", "symlink-to-fifo", "folder"])
def test_a_golden_that_is_not_a_regular_file_is_refused(tmp_path, alarm, kind):
    path = golden_path(tmp_path, CASE.name)
    if kind == "folder":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        os.mkfifo(tmp_path / "pipe")
        path.symlink_to(tmp_path / "pipe")
    with pytest.raises(ParityInputError) as caught:
        open_golden(CASE, tmp_path)
    expected = "a folder" if kind == "folder" else "a FIFO"
    assert f"{path}: the golden file is {expected}; expected a regular file" == str(caught.value)


# ---- atomic writes ----

class CrashingReference:
    """A reference adapter that raises ``error`` after its sink received ``after`` taps."""

    def __init__(self, inner, after: int, error: BaseException) -> None:
        self.inner, self.after, self.error = inner, after, error
        self.name, self.device = "crashing", "cpu"
        self.delivered: list[str] = []

    def describe(self):
        return self.inner.describe() | {"name": self.name}

    def resolve_config(self, cfg):
        return cfg

    def run_stage(self, *args, **kwargs):
        return self.inner.run_stage(*args, **kwargs)

    def run_pipeline(self, pipeline, cfg, inputs, weights=None, sink=None, taps=None):
        def counting(spec, value):
            sink(spec, value)
            self.delivered.append(spec.name)
            if len(self.delivered) == self.after:
                raise self.error

        self.inner.run_pipeline(pipeline, cfg, inputs, weights, sink=counting, taps=taps)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


@pytest.mark.parametrize("error, raised", [(RuntimeError("disk on fire"), ReferenceFailed),
                                           (KeyboardInterrupt(), KeyboardInterrupt)], ids=["exception", "ctrl-c"])
def test_crash_mid_record_leaves_the_old_golden_intact(goldens, reference, error, raised):
    """The reference's code raising is ReferenceFailed (exit 3, one line naming the golden); Ctrl-C stays one."""
    before = _snapshot(goldens)
    crashing = CrashingReference(reference, after=3, error=error)
    with pytest.raises(raised) as caught:
        record_golden(dataclasses.replace(CASE, description="re-recorded"), crashing, goldens)
    if raised is ReferenceFailed:
        assert "not recorded, the reference run_pipeline(): RuntimeError: disk on fire" in str(caught.value)
    assert crashing.delivered == TAP_NAMES[:3]  # it did crash mid-write
    assert _snapshot(goldens) == before  # byte-identical, and no temporary file left behind
    with open_golden(CASE, goldens) as opened:
        opened.golden.verify()
        assert opened.golden.tap_names() == TAP_NAMES


@pytest.mark.parametrize("error", [OSError("no space left on device"), KeyboardInterrupt()],
                         ids=["exception", "ctrl-c"])
def test_writer_failing_on_the_third_tap_leaves_the_old_golden_intact(goldens, reference, monkeypatch, error):
    before = _snapshot(goldens)
    original = GoldenWriter.__call__
    calls = []

    def failing(self, spec, value):
        calls.append(spec.name)
        if len(calls) == 3:
            raise error
        original(self, spec, value)

    monkeypatch.setattr(GoldenWriter, "__call__", failing)
    with pytest.raises(type(error)):
        record_golden(CASE, reference, goldens)
    assert len(calls) == 3
    assert _snapshot(goldens) == before


def test_crash_on_the_first_record_leaves_nothing(tmp_path, reference):
    with pytest.raises(ReferenceFailed):
        record_golden(CASE, CrashingReference(reference, after=2, error=RuntimeError("boom")), tmp_path)
    assert list(tmp_path.iterdir()) == []


class HangingReference(CrashingReference):
    """Delivers two taps, then never returns (a deadlocked worker of the reference's own)."""

    def run_pipeline(self, pipeline, cfg, inputs, weights=None, sink=None, taps=None):
        import threading

        def hanging(spec, value):
            sink(spec, value)
            self.delivered.append(spec.name)
            if len(self.delivered) == self.after:
                threading.Event().wait(3600)

        self.inner.run_pipeline(pipeline, cfg, inputs, weights, sink=hanging, taps=taps)


def test_a_reference_that_hangs_while_recorded_ends_at_the_stage_timeout_and_leaves_the_old_golden(goldens,
                                                                                                 reference):
    before = _snapshot(goldens)
    with pytest.raises(ReferenceFailed, match="no result within the stage timeout of 1 s"):
        record_golden(CASE, HangingReference(reference, after=2, error=RuntimeError()), goldens, stage_timeout=1)
    assert _snapshot(goldens) == before


def test_successful_rerecord_replaces_the_file_and_leaves_no_temporaries(goldens, reference):
    with h5py.File(_path(goldens), "r") as h5:
        first = h5.attrs["created"]
    changed = dataclasses.replace(CASE, config=CASE.config.replace(gaussian_sigma=0.5))
    record_golden(changed, reference, goldens)
    assert [path.name for path in goldens.iterdir()] == ["physics-small.h5"]
    with open_golden(changed, goldens) as opened:
        assert opened.golden.config.gaussian_sigma == 0.5 and opened.golden.attrs["created"] >= first
    with pytest.raises(StaleGoldenError):
        open_golden(CASE, goldens)


def _dead_pid() -> int:
    process = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                             text=True, check=True)
    return int(process.stdout)


def test_record_sweeps_temporaries_of_dead_writers_only(goldens, reference):
    from parity.atomic_files import _host_tag

    host = _host_tag()
    dead = goldens / f".physics-small.h5.{host}.{_dead_pid()}.0badf00d.tmp"
    alive = goldens / f".physics-small.h5.{host}.{os.getppid()}.0badf00d.tmp"
    other_host = goldens / f".physics-small.h5.{host}x.{_dead_pid()}.0badf00d.tmp"
    unrelated = goldens / ".notes.tmp"
    for path in (dead, alive, other_host, unrelated):
        path.write_bytes(b"partial")
    record_golden(CASE, reference, goldens)
    assert sorted(path.name for path in goldens.iterdir()) == sorted(
        [alive.name, other_host.name, unrelated.name, "physics-small.h5"])


def test_temporaries_name_their_writer(goldens):
    from parity.atomic_files import _TEMPORARY, temporary_path

    match = _TEMPORARY.match(temporary_path(_path(goldens)).name)
    assert match and match["target"] == "physics-small.h5" and int(match["pid"]) == os.getpid()


# ---- where record may write ----

def test_record_into_a_file_is_refused_before_the_reference_runs(tmp_path):
    from parity.workflows import goldens_folder

    target = tmp_path / "not-a-folder"
    target.write_text("x")
    with pytest.raises(ParityInputError, match=f"--goldens {target}: the golden folder exists and is not a folder"):
        goldens_folder(target)
    with pytest.raises(ParityInputError, match="cannot create the golden folder"):
        goldens_folder(target / "sub")
    crashing = CrashingReference(None, after=0, error=AssertionError("the reference ran"))
    with pytest.raises(ParityInputError, match="not a folder"):
        record_golden(CASE, crashing, target)
    assert crashing.delivered == [] and target.read_text() == "x"


# ---- judging a candidate against the golden ----

def test_torch_passes_against_the_golden(recorded, candidate):
    with open_golden(CASE, recorded) as opened:
        report = run_case(opened.case, opened.golden, candidate, load_tolerances(DEFAULT_TOLERANCES))
    assert report.passed, report.first_divergence
    assert report.reference["path"] == str(_path(recorded))
    assert [tap.name for tap in report.taps] == TAP_NAMES
    assert all(set(tap.modes) == {"propagated", "isolated"} for tap in report.taps)
    assert all(tap.modes[mode].metrics.n_compared > 0 for tap in report.taps for mode in tap.modes)


def test_report_against_a_golden_names_the_golden_as_reference(recorded, candidate, tmp_path):
    with open_golden(CASE, recorded) as opened:
        report = check_against_golden(opened, candidate, load_tolerances(DEFAULT_TOLERANCES),
                                      RunOptions(modes=("isolated",)), tmp_path)
    assert report.reference["name"] == "golden"
    assert report.reference["inputs"] == {"source": "golden", "regenerated": "identical", "differences": []}
    assert _own(report.notes) == []


def test_dtype_mismatch_fails_even_when_values_agree(recorded, candidate):
    original = candidate.stages["farfield"]
    widened = candidate.with_stage("farfield", lambda ctx, wave: original(ctx, wave).to(torch.complex128))
    assert widened.describe()["stages_replaced"] == ["farfield"]
    with open_golden(CASE, recorded) as opened:
        report = run_case(opened.case, opened.golden, widened, load_tolerances(DEFAULT_TOLERANCES),
                          RunOptions(modes=("isolated", "propagated")))
    assert not report.passed
    farfield = report.tap("farfield")
    for mode in ("isolated", "propagated"):
        metrics = farfield.modes[mode].metrics
        assert metrics.candidate_dtype == "complex128" and metrics.reference_dtype == "complex64"
        assert not metrics.dtype_match and not metrics.passed
        assert metrics.max_rel_to_peak <= 1e-6  # the values agree
        assert metrics.failures == ["farfield: dtype differs: reference complex64, candidate complex128"]
    assert report.tap("exit_wave").passed  # upstream of the change
    assert report.tap("amplitude").modes["isolated"].passed  # fed the reference's complex64 farfield
    divergence = report.first_divergence
    assert (divergence.tap, divergence.mode) == ("farfield", "isolated")
    assert "dtype differs" in divergence.messages[0]


def test_record_refuses_a_reference_that_breaks_the_tap_contract(recorded, tmp_path, reference):
    class SkipsAmplitude(type(reference)):
        def run_pipeline(self, pipeline, cfg, inputs, weights=None, sink=None, taps=None):
            def skipping(spec, value):
                if spec.name != "amplitude":
                    sink(spec, value)

            super().run_pipeline(pipeline, cfg, inputs, weights, skipping, taps)

    folder = tmp_path / "goldens"
    shutil.copytree(recorded, folder)
    before = golden_path(folder, CASE.name).read_bytes()
    with pytest.raises(ParityInputError, match="reference produced no tap 'amplitude'"):
        record_golden(CASE, SkipsAmplitude(), folder)
    assert golden_path(folder, CASE.name).read_bytes() == before
    assert sorted(path.name for path in folder.iterdir()) == [f"{CASE.name}.h5"]


# ---- property: any attribute value, resealed, is refused cleanly or accepted ----

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from parity.golden_digest import _canonical  # noqa: E402

ROOT_ATTRIBUTES = ["schema_version", "case_name", "case_hash", "definition", "pipeline", "config", "description",
                   "backend", "provenance", "created", "tap_order"]
JSON_TEXT = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                         lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                      max_size=3),
                         max_leaves=6).map(json.dumps)
ATTRIBUTE_VALUES = st.one_of(st.text(max_size=20), JSON_TEXT, st.integers(-2**63, 2**63 - 1),
                             st.floats(allow_nan=True), st.binary(max_size=10),
                             st.lists(st.integers(-5, 5), min_size=1, max_size=4).map(np.array))


@settings(max_examples=60, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(ROOT_ATTRIBUTES), value=ATTRIBUTE_VALUES, reseal=st.booleans())
def test_any_attribute_value_is_refused_cleanly_or_accepted(recorded, tmp_path, key, value, reseal):
    folder = tmp_path / f"h{abs(hash((key, repr(value), reseal)))}"
    shutil.copytree(recorded, folder)
    with h5py.File(_path(folder), "r") as h5:
        original = _canonical(h5.attrs[key])
    try:
        _tamper(_path(folder), reseal=reseal, **{key: value})
    except (TypeError, ValueError):  # h5py cannot store this value: nothing to attack with
        return
    with h5py.File(_path(folder), "r") as h5:
        changed = _canonical(h5.attrs[key]) != original
    try:
        with open_golden(CASE, folder) as opened:  # accepted: a resealed value the reader understands
            assert reseal or not changed, "a changed attribute was accepted without a matching digest"
            assert opened.golden.case_name == CASE.name or key == "case_name"
    except CorruptGoldenError as error:
        assert str(_path(folder)) in str(error) and "\n" not in str(error)
    except StaleGoldenError as error:  # e.g. a resealed, valid, but different definition
        assert "stale golden" in str(error) and reseal
    finally:
        shutil.rmtree(folder)


def _replace_dataset(path: Path, where: str, value) -> None:
    """Replace a dataset and reseal every checksum, as a forger who knows the format would."""
    with h5py.File(path, "r+") as h5:
        attrs = dict(h5[where].attrs)
        del h5[where]
        h5[where] = value
        h5[where].attrs.update(attrs)
        h5[where].attrs["sha256"] = dataset_digest(h5[where])
        h5.attrs[DIGEST_ATTR] = metadata_digest(h5)


@pytest.mark.parametrize("change", ["other dtype", "one sample", "scalar", "bool", "huge input"])
def test_a_resealed_golden_whose_data_does_not_fit_its_case_is_corrupt(goldens, change):
    path = _path(goldens)
    with h5py.File(path, "r") as h5:
        intensity = h5["taps/intensity"][()]
    where, value = "taps/intensity", {"other dtype": intensity.astype(np.float64), "one sample": intensity[:1, :4],
                                      "scalar": np.float64(1.0) if intensity.dtype == np.float64 else np.float32(1.0),
                                      "bool": intensity > 0}.get(change)
    if change == "huge input":
        with h5py.File(path, "r+") as h5:  # declared huge, chunked, never written: tiny on disk
            attrs = dict(h5["inputs/probe"].attrs)
            del h5["inputs/probe"]
            h5.create_dataset("inputs/probe", shape=(400_000, 400_000), dtype=np.complex64, chunks=(64, 64))
            h5["inputs/probe"].attrs.update(attrs)
            h5.attrs[DIGEST_ATTR] = metadata_digest(h5)
    else:
        _replace_dataset(path, where, value)
    with pytest.raises(CorruptGoldenError, match=r"is stored as .* the registry says .* changed after recording"):
        open_golden(CASE, goldens)


def test_a_resealed_golden_of_another_case_or_pipeline_is_corrupt(goldens):
    _tamper(_path(goldens), reseal=True, case_name="pinn-default")
    with pytest.raises(CorruptGoldenError, match=r"holds case 'pinn-default' \(physics, recorded as physics\), not 'physics-small'"):
        open_golden(CASE, goldens)
