"""Golden HDF5 files: record, reopen, checksums, provenance, stale refusal, corruption, atomic writes.

The reference is the real TensorFlow backend and the candidate the real
PyTorch one, on a physics case shrunk to N=32 and a batch of 1.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

pytest.importorskip("backends.tf", reason="TensorFlow (the reference) is not installed")
pytest.importorskip("backends.torch", reason="PyTorch (the candidate) is not installed")

import torch  # noqa: E402

from backends.common.config import resolve_config  # noqa: E402
from backends.common.taps import pipeline_taps  # noqa: E402
from parity import cases as cases_module  # noqa: E402
from parity.cases import BUILTIN_CASES  # noqa: E402
from parity.errors import CorruptGoldenError, ParityInputError, StaleGoldenError  # noqa: E402
from parity.goldens import SCHEMA_VERSION, Golden, GoldenWriter, dataset_digest, golden_path  # noqa: E402
from parity.runner import RunOptions, run_case  # noqa: E402
from parity.tolerances import load_tolerances  # noqa: E402
from parity.workflows import DEFAULT_TOLERANCES, open_golden, record_golden  # noqa: E402

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
    with open_golden(CASE, recorded) as golden:
        golden.verify()
        assert golden.case_name == CASE.name and golden.pipeline == "physics"
        assert golden.config == CASE.config
        assert golden.tap_names() == TAP_NAMES
        assert list(golden.h5["taps"]) == sorted(TAP_NAMES)  # every tap, nothing else


def test_golden_taps_have_registry_shape_dtype_and_attrs(recorded):
    with open_golden(CASE, recorded) as golden:
        for spec in SPECS:
            dataset = golden.tap(spec.name)
            assert dataset.shape == spec.shape(CASE.config, CASE.batch), spec.name
            assert dataset.dtype == spec.dtype(CASE.config), spec.name
            assert dataset.attrs["layout"] == spec.layout and dataset.attrs["kind"] == spec.kind
            assert dataset.attrs["stage"] == spec.stage
            assert dataset.attrs["sha256"] == dataset_digest(dataset)


def test_golden_taps_record_their_declared_dtype(recorded):
    with open_golden(CASE, recorded) as golden:
        for spec in SPECS:
            assert golden.tap(spec.name).attrs["declared_dtype"] == spec.dtype(CASE.config).name


def test_golden_holds_the_case_inputs_and_the_reference_values(recorded, reference):
    fresh = reference.run_all(CASE.pipeline, CASE.config, CASE.inputs)
    with open_golden(CASE, recorded) as golden:
        inputs = golden.inputs()
        assert sorted(inputs) == sorted(CASE.inputs)
        for name, value in CASE.inputs.items():
            assert inputs[name].dtype == value.dtype and np.array_equal(inputs[name], value), name
        for name in TAP_NAMES:  # the reference is deterministic: a rerun gives the same bits
            assert np.array_equal(golden.tap(name)[()], fresh[name]), name


def test_golden_provenance(recorded):
    with open_golden(CASE, recorded) as golden:
        attrs = golden.attrs
        assert int(attrs["schema_version"]) == SCHEMA_VERSION
        assert attrs["case_hash"] == CASE.hash()
        assert json.loads(attrs["case_hashes"]) == CASE.hashes()
        assert json.loads(attrs["config"])["dtype"] == "float32" and json.loads(attrs["config"])["N"] == 32
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


def test_golden_file_mode_is_not_private(recorded):
    """mkstemp makes 0600 files; a golden is an ordinary shared file."""
    mask = os.umask(0)
    os.umask(mask)
    assert _path(recorded).stat().st_mode & 0o777 == 0o666 & ~mask


def test_missing_golden_is_an_input_error(tmp_path):
    with pytest.raises(ParityInputError, match="golden file not found") as caught:
        open_golden(CASE, tmp_path)
    assert "parity record" in str(caught.value)


# ---- stale goldens ----

def test_changed_knob_is_stale(recorded):
    changed = dataclasses.replace(CASE, config=CASE.config.replace(gaussian_sigma=0.5))
    with pytest.raises(StaleGoldenError) as caught:
        open_golden(changed, recorded)
    message = str(caught.value)
    assert "stale golden for case 'physics-small'" in message
    assert "gaussian_sigma: golden 0.0 -> now 0.5" in message
    assert CASE.hash() in message and changed.hash() in message
    assert "input:" not in message  # the inputs did not change
    assert "parity record --case physics-small" in message


def test_changed_dtype_is_stale_and_names_every_changed_part(recorded):
    changed = dataclasses.replace(CASE, config=CASE.config.replace(dtype="float64"))
    with pytest.raises(StaleGoldenError) as caught:
        open_golden(changed, recorded)
    message = str(caught.value)
    assert "dtype: golden 'float32' -> now 'float64'" in message
    for name in CASE.inputs:  # rebuilt in the new dtype
        assert f"input:{name}" in message


def test_changed_input_is_stale_and_names_the_input(recorded):
    def nudged_probe(case):
        inputs = cases_module._synthetic(case)
        inputs["probe"] = inputs["probe"] * np.complex64(1 + 1e-6)
        return inputs

    changed = dataclasses.replace(CASE, build_inputs=nudged_probe)
    assert changed.config == CASE.config
    with pytest.raises(StaleGoldenError) as caught:
        open_golden(changed, recorded)
    message = str(caught.value)
    assert "input:probe" in message
    assert "input:positions" not in message and "input:object_patches" not in message and "config" not in message


def test_changed_seed_is_stale(recorded):
    with pytest.raises(StaleGoldenError, match="input:object_patches"):
        open_golden(dataclasses.replace(CASE, seed=CASE.seed + 1), recorded)


def test_stale_golden_is_refused_by_run_case_too(recorded, candidate):
    changed = dataclasses.replace(CASE, config=CASE.config.replace(probe_mask=True))
    golden = Golden(_path(recorded))
    try:
        with pytest.raises(StaleGoldenError, match="probe_mask"):
            run_case(changed, golden, candidate, load_tolerances(DEFAULT_TOLERANCES))
    finally:
        golden.close()


# ---- corruption ----

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


def test_uncorrupted_copy_still_verifies(goldens):
    """The corruption tests fail because of the flipped bytes, not because of the copy."""
    with open_golden(CASE, goldens) as golden:
        golden.verify()


def test_missing_metadata_is_corrupt(goldens):
    with h5py.File(_path(goldens), "r+") as h5:
        del h5.attrs["case_hashes"]
    with pytest.raises(CorruptGoldenError, match="missing or malformed golden metadata"):
        open_golden(CASE, goldens)


def test_missing_taps_group_is_corrupt(goldens):
    with h5py.File(_path(goldens), "r+") as h5:
        del h5["taps"]
    with pytest.raises(CorruptGoldenError, match="malformed"):
        open_golden(CASE, goldens)


def test_other_schema_version_is_refused(goldens):
    with h5py.File(_path(goldens), "r+") as h5:
        h5.attrs["schema_version"] = SCHEMA_VERSION + 1
    with pytest.raises(CorruptGoldenError, match=f"golden schema {SCHEMA_VERSION + 1}"):
        open_golden(CASE, goldens)


def test_not_an_hdf5_file_is_corrupt(goldens):
    _path(goldens).write_bytes(b"not hdf5 at all" * 100)
    with pytest.raises(CorruptGoldenError, match="not a readable HDF5 golden"):
        open_golden(CASE, goldens)


def test_unrecorded_tap_is_named(goldens):
    with open_golden(CASE, goldens) as golden, pytest.raises(CorruptGoldenError, match="'exit_wav' not recorded"):
        golden.tap("exit_wav")


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


@pytest.mark.parametrize("error", [RuntimeError("disk on fire"), KeyboardInterrupt()], ids=["exception", "ctrl-c"])
def test_crash_mid_record_leaves_the_old_golden_intact(goldens, reference, error):
    before = _snapshot(goldens)
    crashing = CrashingReference(reference, after=3, error=error)
    with pytest.raises(type(error)):
        record_golden(dataclasses.replace(CASE, description="re-recorded"), crashing, goldens)
    assert crashing.delivered == TAP_NAMES[:3]  # it did crash mid-write
    assert _snapshot(goldens) == before  # byte-identical, and no temporary file left behind
    with open_golden(CASE, goldens) as golden:
        golden.verify()
        assert golden.tap_names() == TAP_NAMES


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
    with pytest.raises(RuntimeError):
        record_golden(CASE, CrashingReference(reference, after=2, error=RuntimeError("boom")), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_successful_rerecord_replaces_the_file_and_leaves_no_temporaries(goldens, reference):
    with h5py.File(_path(goldens), "r") as h5:
        first = h5.attrs["created"]
    changed = dataclasses.replace(CASE, config=CASE.config.replace(gaussian_sigma=0.5))
    record_golden(changed, reference, goldens)
    assert [path.name for path in goldens.iterdir()] == ["physics-small.h5"]
    with open_golden(changed, goldens) as golden:
        assert golden.config.gaussian_sigma == 0.5 and golden.attrs["created"] >= first
    with pytest.raises(StaleGoldenError):
        open_golden(CASE, goldens)


# ---- judging a candidate against the golden ----

def test_torch_passes_against_the_golden(recorded, candidate):
    with open_golden(CASE, recorded) as golden:
        report = run_case(CASE, golden, candidate, load_tolerances(DEFAULT_TOLERANCES))
    assert report.passed, report.first_divergence
    assert report.reference["path"] == str(_path(recorded))
    assert [tap.name for tap in report.taps] == TAP_NAMES
    assert all(set(tap.modes) == {"propagated", "isolated"} for tap in report.taps)
    assert all(tap.modes[mode].metrics.n_compared > 0 for tap in report.taps for mode in tap.modes)


def test_report_against_a_golden_names_the_golden_as_reference(recorded, candidate):
    with open_golden(CASE, recorded) as golden:
        report = run_case(CASE, golden, candidate, load_tolerances(DEFAULT_TOLERANCES), RunOptions(modes=("isolated",)))
    assert report.reference["name"] == "golden"


def test_dtype_mismatch_fails_even_when_values_agree(recorded, candidate):
    original = candidate.stages["farfield"]
    widened = candidate.with_stage("farfield", lambda ctx, wave: original(ctx, wave).to(torch.complex128))
    assert widened.describe()["stages_replaced"] == ["farfield"]
    with open_golden(CASE, recorded) as golden:
        report = run_case(CASE, golden, widened, load_tolerances(DEFAULT_TOLERANCES),
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


def test_golden_missing_a_tap_is_corrupt(recorded, tmp_path):
    folder = tmp_path / "goldens"
    shutil.copytree(recorded, folder)
    with h5py.File(golden_path(folder, CASE.name), "a") as h5:
        del h5["taps"]["farfield"]
    with pytest.raises(CorruptGoldenError, match=r"missing \['farfield'\]"):
        open_golden(CASE, folder)


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
