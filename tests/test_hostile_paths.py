"""Paths a user or an adapter can get wrong: empty option values, an adapter that changes folder."""

from __future__ import annotations

import hashlib
import json

import pytest

from tests.hostile import ROOT, assert_refused, parity_process

SHIPPED = ROOT / "fixtures" / "goldens" / "physics-n32-edge-offsets-f64.h5"


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("argv", [
    ["record", "--case", "physics-n32-edge-offsets-f64", "--goldens", ""],
    ["check", "--case", "physics-n32-edge-offsets-f64", "--tolerances", " "],
    ["calibrate", "--case", "physics-n32-edge-offsets-f64", "--tolerances", "", "--write"],
    ["check", "--case", "physics-n32-edge-offsets-f64", "--out", ""],
    ["run", "--pipeline", "physics", "--inputs", ""],
    ["diff", "", "reports"],
])
def test_an_empty_path_is_refused_not_taken_for_the_shipped_default(tmp_path, argv):
    before = _digest(SHIPPED)
    result = parity_process(*argv, cwd=tmp_path)
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "expected a path, got" in result.stderr and "Traceback" not in result.stderr
    assert _digest(SHIPPED) == before and not any(tmp_path.iterdir())


def test_an_adapter_that_changes_folder_does_not_move_the_run_outputs(tmp_path):
    result = parity_process("check", "--case", "physics-n32-edge-offsets-f64", "--candidate",
                            "tests.hostile_adapters:ChangesFolder", "--out", "out", "--quiet", cwd=tmp_path,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    case = tmp_path / "out" / "physics-n32-edge-offsets-f64"
    assert json.loads((case / "report.json").read_text())["passed"] is True
    assert (case / "report.html").is_file()


def _physics_inputs(path, dtype=None):
    import numpy as np

    from backends.common.config import resolve_config
    from parity import synthetic

    arrays = synthetic.pipeline_inputs("physics", resolve_config({"N": 32, "dtype": "float64"}), 2, seed=3)
    if dtype is not None:
        arrays["probe"] = arrays["probe"].astype(dtype)
    np.savez(path, **arrays)
    return path


def test_a_golden_of_your_own_inputs_holds_no_path_of_this_machine_and_advises_the_right_rerecord(tmp_path):
    pytest.importorskip("backends.tf", reason="TensorFlow (the reference) is not installed")
    import h5py

    inputs = _physics_inputs(tmp_path / "my scan.npz")
    recorded = parity_process("record", "--pipeline", "physics", "--inputs", inputs, "--set", "N=32",
                              "--goldens", tmp_path / "goldens", timeout=300)
    assert recorded.returncode == 0, recorded.stderr
    [golden] = (tmp_path / "goldens").glob("*.h5")
    with h5py.File(golden, "r") as h5:
        text = " ".join(str(h5.attrs[key]) for key in h5.attrs)
    assert "my scan.npz" in text and str(tmp_path) not in text
    stale = parity_process("check", "--pipeline", "physics", "--inputs", inputs, "--set", "N=32", "--set",
                           "intensity_scale=2.5", "--goldens", tmp_path / "goldens", "--out", tmp_path / "out",
                           timeout=300)
    assert stale.returncode == 2 and "stale golden" in stale.stderr, stale.stderr
    assert "parity record --pipeline physics" in stale.stderr and "--case user-" not in stale.stderr


def test_inputs_of_an_odd_float_width_are_named_with_what_the_cast_does(tmp_path):
    from parity.workflows import choose_cases

    _, notes = choose_cases(None, None, ["N=32", "dtype=float64"], "physics",
                            str(_physics_inputs(tmp_path / "scan.npz", "complex64")))
    assert not any("key 'probe' is" in note for note in notes)
    inputs = _physics_inputs(tmp_path / "wide.npz", "clongdouble")
    _, notes = choose_cases(None, None, ["N=32", "dtype=float64"], "physics", str(inputs))
    if __import__("numpy").dtype("clongdouble").itemsize > 16:  # long double wider than double here
        assert any("key 'probe' is complex" in note and "rounded (precision is lost) to complex128" in note
                   for note in notes), notes


def test_the_harness_own_warnings_are_not_reported_as_adapter_output(tmp_path):
    """NaN/Inf in a candidate's taps are counted by the statistics, not warned about into adapter.log."""
    result = parity_process("check", "--case", "physics-n32-edge-offsets-f64", "--candidate",
                            "tests.hostile_adapters:InfInFarfield", "--out", tmp_path / "out", timeout=300)
    assert result.returncode == 1, result.stderr
    case = tmp_path / "out" / "physics-n32-edge-offsets-f64"
    report = json.loads((case / "report.json").read_text())
    assert report["first_divergence"]["tap"] == "farfield"
    assert not (case / "adapter.log").exists() or "Warning" not in (case / "adapter.log").read_text()
    assert "RuntimeWarning" not in result.stderr


def test_a_worker_process_the_adapter_leaves_behind_does_not_hold_the_command(tmp_path):
    """The worker inherits the status pipe (and the saved terminal descriptors): the command ends all the same."""
    import os
    import subprocess
    import sys
    import time

    started = time.monotonic()
    with open(tmp_path / "output.txt", "w") as output:  # a file, not a pipe: the worker holds copies of it
        code = subprocess.run([sys.executable, "-m", "parity", "check", "--case", "physics-n32-edge-offsets-f64",
                               "--candidate", "tests.hostile_adapters:LeavesAWorker", "--mode", "propagated",
                               "--out", str(tmp_path / "out")], cwd=ROOT, stdout=output, stderr=subprocess.STDOUT,
                              env=os.environ | {"PYTHONPATH": str(ROOT), "WORKER_SECONDS": "90"}, timeout=80).returncode
    assert code == 0, (tmp_path / "output.txt").read_text()
    assert time.monotonic() - started < 60


def test_a_tap_changed_in_place_after_handover_is_named_as_the_first_divergence(tmp_path):
    result = parity_process("check", "--case", "physics-n32-edge-offsets-f64", "--candidate",
                            "tests.hostile_adapters:ScalesACachedTapLater", "--out", tmp_path / "out", timeout=300)
    assert result.returncode == 1, result.stderr
    report = json.loads((tmp_path / "out" / "physics-n32-edge-offsets-f64" / "report.json").read_text())
    first = report["first_divergence"]
    assert first["tap"] == "patches.extracted" and first["mode"] == "propagated", first
    assert "in place after handing it over" in json.dumps(report)


def test_a_folder_where_the_report_goes_is_bad_input_not_a_crash(tmp_path):
    (tmp_path / "out" / "physics-n32-edge-offsets-f64" / "report.json").mkdir(parents=True)
    result = parity_process("check", "--case", "physics-n32-edge-offsets-f64", "--out", tmp_path / "out",
                            "--quiet", timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "report.json: is a folder, so the file cannot be written there" in result.stderr


def test_a_name_too_long_for_the_temporary_is_refused_before_writing(tmp_path):
    from parity.atomic_files import write_bytes_atomically
    from parity.errors import ParityInputError

    target = tmp_path / ("a" * 250 + ".h5")
    with pytest.raises(ParityInputError, match="the file name is too long to write safely"):
        write_bytes_atomically(target, b"data")
    assert not any(tmp_path.iterdir())


def test_a_knob_a_dataset_implies_is_blamed_on_the_dataset_not_on_set(tmp_path):
    import numpy as np

    from parity.dataset_cases import dataset_cases
    from parity.errors import ParityInputError

    rng = np.random.default_rng(0)
    path = tmp_path / "odd.npz"
    np.savez(path, xcoords=rng.uniform(0, 10, 8), ycoords=rng.uniform(0, 10, 8),
             diff3d=rng.uniform(0, 1, (8, 63, 63)).astype(np.float32),
             probeGuess=(np.ones((63, 63)) + 0j).astype(np.complex64))
    with pytest.raises(ParityInputError) as caught:
        dataset_cases(str(path), "pinn", None, [], None)
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and "N must be a power of two" in message and "--set" not in message


@pytest.mark.parametrize("device, fragment", [
    ("cpu:7", "there is one CPU device"),
    ("cuda:x", "expected cpu, cuda or cuda:N"),
    ("cuda:64", "CUDA device"),
])
def test_a_device_no_adapter_can_honour_is_refused_before_anything_runs(tmp_path, device, fragment):
    result = parity_process("check", "--case", "physics-n32-edge-offsets-f64", "--device", device, "--out", "out",
                            cwd=tmp_path)
    assert_refused(result, repr(device), fragment)
    assert not (tmp_path / "out").exists()


def test_junk_in_the_supervision_switch_is_a_usage_error(tmp_path):
    result = parity_process("cases", env={"PARITY_SUPERVISE": "maybe"}, cwd=tmp_path)
    assert result.returncode == 2 and "PARITY_SUPERVISE='maybe'" in result.stderr and not result.stdout


def test_a_status_descriptor_left_in_the_environment_is_never_written_to(tmp_path):
    result = parity_process("cases", env={"PARITY_SUPERVISE": "0", "PARITY_STATUS_FD": "1"}, cwd=tmp_path)
    assert result.returncode == 0 and "pinn-default" in result.stdout
    assert '"exit"' not in result.stdout
