"""Issue #12, input side: each attack first reproduced as a real ``python -m parity`` process.

Every refusal must be exit 2 with one stderr line naming the file, the key and
the expectation, no traceback, nothing written, and it must come before any
comparison runs (and quickly: no allocation, no hang). Numbers in test names
are the issue's causes. No TensorFlow or PyTorch is loaded by these processes:
every attack is refused before an adapter is imported.
"""

from __future__ import annotations

import math
import os
import pickle
import shutil
import stat
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from backends.common.config import resolve_config
from parity import synthetic

from tests.hostile import (ROOT, assert_refused, npy_bytes, parity_process, skip_unless_permissions_apply, write_npz,
                      zip_bomb)

CFG = resolve_config({"N": 32})
SMALL = ["--set", "N=32"]
PHYSICS = ["run", "--pipeline", "physics"]


def _physics_inputs(tmp_path: Path, name: str = "inputs.npz", **changes: np.ndarray) -> Path:
    arrays = synthetic.pipeline_inputs("physics", CFG, 2, seed=3) | changes
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def _simulate_inputs(tmp_path: Path, **changes: np.ndarray) -> Path:
    arrays = synthetic.pipeline_inputs("simulate", CFG, 3, seed=4) | changes
    path = tmp_path / "scan.npz"
    np.savez(path, **arrays)
    return path


class Tripwire:
    """Unpickling this creates ``path``: proof that a file was unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return Path.touch, (self.path,)


# ---- 1, 2, 19, 20: the inputs file ----

def test_1_member_of_raw_pickle_bytes_exits_2_and_is_never_unpickled(tmp_path):
    sentinel = tmp_path / "unpickled"
    arrays = synthetic.pipeline_inputs("physics", CFG, 2, seed=3)
    path = write_npz(tmp_path / "inputs.npz", {**arrays, "probe": pickle.dumps(Tripwire(sentinel))})
    result = parity_process(*PHYSICS, "--inputs", path, *SMALL, "--out", tmp_path / "out")
    assert_refused(result, str(path), "key 'probe'", "not npy data", "never loaded")
    assert not sentinel.exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize("shape, dtype, claim", [((1, 200000, 200000, 1), "complex64", "298.0 GiB"),
                                                  ((1, 1024, 1024, 1024), "float64", "8.0 GiB")])
def test_2_npy_header_claiming_a_huge_shape_is_refused_without_allocating(tmp_path, shape, dtype, claim):
    arrays = synthetic.pipeline_inputs("physics", CFG, 2, seed=3)
    path = write_npz(tmp_path / "inputs.npz", {**arrays, "object_patches": npy_bytes(shape, dtype, bytes(64))})
    started = time.perf_counter()
    result = parity_process(*PHYSICS, "--inputs", path, *SMALL, "--out", tmp_path / "out")
    line = assert_refused(result, str(path), "key 'object_patches'", f"claims shape {shape}", claim,
                          "holds 64 data bytes", "truncated or forged")
    assert "pickle" not in line
    assert time.perf_counter() - started < 60


def _peak_rss_of(args: list[object]) -> tuple[int, str]:
    """Peak RSS (KiB) of a parity process, measured by a fresh wrapper whose only child it is."""
    import subprocess

    wrapper = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
               "sys.stderr.write(r.stderr); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); "
               "sys.exit(r.returncode)")
    result = subprocess.run([sys.executable, "-c", wrapper, sys.executable, "-m", "parity", *map(str, args)],
                            cwd=ROOT, env=os.environ | {"PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2, result.stderr
    return int(result.stdout.strip()), result.stderr


def test_19_zip_bomb_of_the_wrong_shape_is_refused_from_its_header(tmp_path):
    arrays = synthetic.pipeline_inputs("physics", CFG, 2, seed=3)
    others = {key: value for key, value in arrays.items() if key != "object_patches"}
    bomb = zip_bomb(tmp_path / "bomb.npz", "object_patches", (2, 32, 32, 4 * 4096), "complex64", others=others)
    control = zip_bomb(tmp_path / "control.npz", "object_patches", (2, 32, 32, 8), "complex64", others=others)
    assert bomb.stat().st_size < 2 << 20  # 256 MiB when inflated
    baseline, _ = _peak_rss_of([*PHYSICS, "--inputs", control, *SMALL, "--out", tmp_path / "out"])
    peak, stderr = _peak_rss_of([*PHYSICS, "--inputs", bomb, *SMALL, "--out", tmp_path / "out"])
    assert "key 'object_patches': expected shape (2, 32, 32, 4)" in stderr and "Traceback" not in stderr
    assert peak < baseline + (64 << 10), f"peak RSS {peak} KiB against {baseline} KiB: the member was inflated"


def test_19_oversized_member_of_the_right_shape_is_weighed_before_it_is_read(tmp_path):
    big = synthetic.pipeline_inputs("physics", CFG, 1, seed=3)
    bomb = zip_bomb(tmp_path / "bomb.npz", "object_patches", (4096, 32, 32, 4), "complex64",
                    others={"positions": np.zeros((4096, 1, 2, 4), np.float32), "probe": big["probe"]})
    peak, stderr = _peak_rss_of([*PHYSICS, "--inputs", bomb, *SMALL, "--max-memory", "64M",
                                 "--out", tmp_path / "out"])
    assert "more than the memory limit 64.0 MiB (--max-memory)" in stderr and str(bomb) in stderr
    assert peak < 300 << 10


def test_19_ignored_keys_are_never_read(tmp_path):
    from parity.inputs import load_inputs, scan_npz

    arrays = synthetic.pipeline_inputs("physics", CFG, 2, seed=3)
    path = write_npz(tmp_path / "inputs.npz", {**arrays, "junk": pickle.dumps(Tripwire(tmp_path / "unpickled")),
                                               "huge": npy_bytes((10**12,), "float64", b"")})
    inputs, ignored = load_inputs(path, "physics", CFG, scan_npz(path))
    assert ignored == ["huge", "junk"] and sorted(inputs) == ["object_patches", "positions", "probe"]
    assert not (tmp_path / "unpickled").exists()


def test_20_unreadable_inputs_file_says_permission_denied(tmp_path):
    skip_unless_permissions_apply()
    path = _physics_inputs(tmp_path)
    path.chmod(0)
    result = parity_process(*PHYSICS, "--inputs", path, *SMALL, "--out", tmp_path / "out", honour_permissions=True)
    line = assert_refused(result, str(path), "permission denied")
    assert "not an .npz" not in line


# ---- 3, 4: config and tolerance files ----

def _not_utf8(tmp_path: Path) -> Path:
    path = tmp_path / "file.toml"
    path.write_bytes(b"N = 32\n# caf\xe9\n")
    return path


def _folder(tmp_path: Path) -> Path:
    (tmp_path / "folder.toml").mkdir()
    return tmp_path / "folder.toml"


@pytest.mark.parametrize("option", ["--config", "--tolerances"])
@pytest.mark.parametrize("make, fragment", [(_not_utf8, "not UTF-8 text (byte 12, line 2"),
                                            (_folder, "is a folder, expected a regular file")],
                         ids=["not-utf8", "directory"])
def test_3_config_and_tolerance_files_that_cannot_be_read(tmp_path, option, make, fragment):
    path = make(tmp_path)
    result = parity_process("run", "--case", "physics-default", *SMALL, option, path, "--out", tmp_path / "out")
    assert_refused(result, str(path), fragment, "config file" if option == "--config" else "tolerance file")


@pytest.mark.parametrize("option", ["--config", "--tolerances"])
def test_3_unreadable_config_and_tolerance_files(tmp_path, option):
    skip_unless_permissions_apply()
    path = tmp_path / "file.toml"
    path.write_text("N = 32\n" if option == "--config" else "schema = 1\n")
    path.chmod(0)
    result = parity_process("run", "--case", "physics-default", *SMALL, option, path, "--out", tmp_path / "out",
                            honour_permissions=True)
    assert_refused(result, str(path), "permission denied")


@pytest.mark.parametrize("taps", ["5", "[1, 2]"])
def test_4_tolerance_rule_taps_that_are_not_tap_names(tmp_path, taps):
    path = tmp_path / "tolerances.toml"
    path.write_text(f"schema = 1\n[[rule]]\ntaps = {taps}\nmax_rel_to_peak = 1e-6\n")
    result = parity_process("run", "--case", "physics-default", *SMALL, "--tolerances", path, "--out", tmp_path / "o")
    assert_refused(result, str(path), "[[rule]] 1: key 'taps': expected a tap name, glob or non-empty list")


# ---- 7: --out ----

def test_7_out_under_a_file_is_refused_before_any_comparison(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("keep me")
    # the reference raises when it runs: exit 2 (not 3) proves nothing ran before the refusal
    result = parity_process("run", "--case", "physics-default", *SMALL, "--out", blocker / "reports",
                            "--reference", "tests.plugin_adapters:RaisingReference")
    assert_refused(result, f"--out {blocker / 'reports'}", "is a file, not a folder")
    assert blocker.read_text() == "keep me"


def test_7_out_at_a_file_is_refused(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("keep me")
    result = parity_process("run", "--case", "physics-default", *SMALL, "--out", blocker,
                            "--reference", "tests.plugin_adapters:RaisingReference")
    assert_refused(result, f"--out {blocker}", "exists and is not a folder")


def test_7_out_at_a_read_only_folder_is_refused_before_any_comparison(tmp_path):
    skip_unless_permissions_apply()
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
    for target in (folder, folder / "sub"):
        result = parity_process("run", "--case", "physics-default", *SMALL, "--out", target,
                                "--reference", "tests.plugin_adapters:RaisingReference", honour_permissions=True)
        assert_refused(result, f"--out {target}")
    assert list(folder.iterdir()) == []


# ---- 8: absurd sizes ----

@pytest.mark.parametrize("args, knob", [
    (["--set", "N=1048576", "--set", "n_filters_scale=512"], "N=1048576"),
    (["--set", "buffer=1000000000"], "buffer=1000000000"),
    (["--set", "n_filters_scale=1000000"], "n_filters_scale=1000000"),
    (["--case", "physics-default", "--set", "N=4096", "--max-memory", "8G"], "N=4096"),
    (["--case", "simulate-n32-f64", "--set", "N=4096", "--set", "dtype=float32", "--max-memory", "1G"], "N=4096"),
])
def test_8_absurd_knobs_are_refused_up_front_naming_the_knob(tmp_path, args, knob):
    started = time.perf_counter()
    result = parity_process("run", *args, "--out", tmp_path / "out")
    assert_refused(result, "needs an estimated", "more than the memory limit", f"what makes it large: {knob}")
    assert time.perf_counter() - started < 60 and not (tmp_path / "out").exists()


def test_8_every_command_goes_through_the_size_check(tmp_path):
    out = ["--out", tmp_path / "out"]
    for command in (["run", *out], ["record", "--goldens", tmp_path / "g"], ["check", "--goldens", tmp_path / "g", *out],
                    ["calibrate", "--tolerances", tmp_path / "t.toml", *out]):
        result = parity_process(*command, "--case", "physics-default", "--set", "buffer=100000")
        assert_refused(result, "what makes it large: buffer=100000")
    assert not (tmp_path / "g").exists() and not (tmp_path / "out").exists()


# ---- 9: PARITY_THREADS ----

@pytest.mark.parametrize("value", ["abc", "0", "99999999999999999999"])
def test_9_bad_parity_threads_is_bad_input_not_a_traceback(tmp_path, value):
    result = parity_process("run", "--case", "physics-default", *SMALL, "--out", tmp_path / "out",
                            env={"PARITY_THREADS": value})
    assert_refused(result, f"PARITY_THREADS={value!r}", "expected a whole number of threads")


def test_9_parity_threads_is_read_when_used_not_at_import():
    import subprocess

    code = ("import backends.common.determinism as d, parity.cli, parity.workflows\n"
            "print('imported')\n"
            "try:\n    d.settings()\nexcept d.SettingsError as error:\n    print('refused:', error)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env=os.environ | {"PYTHONPATH": str(ROOT), "PARITY_THREADS": "abc"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["imported", "refused: environment variable PARITY_THREADS='abc': expected a "
                                          "whole number of threads from 1 to 1024 (default 2)"]


# ---- 10: calibrate ----

@pytest.mark.parametrize("option, value", [("--factor", "nan"), ("--factor", "inf"), ("--factor", "-10"),
                                           ("--floor", "-1"), ("--floor", "nan")])
def test_10_calibrate_refuses_factors_and_floors_that_make_no_tolerance(tmp_path, option, value):
    table = tmp_path / "tolerances.toml"
    shutil.copy(ROOT / "fixtures" / "tolerances.toml", table)
    before = table.read_bytes()
    result = parity_process("calibrate", "--case", "physics-default", *SMALL, "--tolerances", table, "--write",
                            option, value, "--out", tmp_path / "out")
    assert_refused(result, f"{option} ", "expected")
    assert table.read_bytes() == before


@pytest.mark.parametrize("factor, floor", [(0.5, None), (math.nan, None), (10.0, 0.0), (10.0, 2.0), (10.0, math.inf)])
def test_10_the_library_call_refuses_them_too(tmp_path, factor, floor):
    from parity.calibrate import calibrate
    from parity.errors import ParityInputError

    with pytest.raises(ParityInputError, match="expected"):
        calibrate([], None, None, tmp_path / "never-read.toml", factor=factor, floor=floor, write=True)


# ---- 14, 15, 16: values ----

def test_14_finiteness_is_checked_after_the_cast_to_the_runs_dtype(tmp_path):
    positions = synthetic.group_positions(CFG, 2, synthetic.generator(1)).astype(np.float64)
    positions[1, 0, 1, 2] = 1e39
    path = _physics_inputs(tmp_path, positions=positions)
    result = parity_process(*PHYSICS, "--inputs", path, *SMALL, "--set", "dtype=float32", "--out", tmp_path / "o")
    assert_refused(result, str(path), "key 'positions'", "1e+39 at index (1, 0, 1, 2) overflows to Inf", "float32")


@pytest.mark.parametrize("change, key, fragment", [
    ("object", "object", "an object that is nonzero under at least one scan position; it is zero under all"),
    ("probe", "probe", "it is zero, so every diffraction pattern is zero"),
    ("far", "object", "an object that is nonzero under at least one scan position; it is zero under all"),
], ids=["zero-object", "zero-probe", "positions-far-outside"])
def test_15_simulate_inputs_that_make_the_photon_normalisation_infinite(tmp_path, change, key, fragment):
    arrays = synthetic.pipeline_inputs("simulate", CFG, 3, seed=4)
    if change == "far":
        arrays["scan_positions"] = np.full_like(arrays["scan_positions"], 1e6)
    else:
        arrays[change] = np.zeros_like(arrays[change])
    path = tmp_path / "scan.npz"
    np.savez(path, **arrays)
    result = parity_process("run", "--pipeline", "simulate", "--inputs", path, *SMALL, "--out", tmp_path / "o")
    assert_refused(result, str(path), f"key {key!r}", fragment)


def test_15_positions_at_1e9_are_refused(tmp_path):
    path = _simulate_inputs(tmp_path, scan_positions=np.full((3, 2), 1e9, np.float32))
    result = parity_process("run", "--pipeline", "simulate", "--inputs", path, *SMALL, "--out", tmp_path / "o")
    assert_refused(result, str(path), "key 'scan_positions'", "positions within +-16777216 px")


@pytest.mark.parametrize("knob", ["gaussian_sigma=1e-300", "intensity_scale=1e-320", "nphotons=1e300"])
def test_16_knobs_that_underflow_or_overflow_are_refused(tmp_path, knob):
    result = parity_process("run", "--case", "pinn-default", "--set", knob, "--out", tmp_path / "o")
    name = knob.partition("=")[0]
    assert_refused(result, name, "expected")


# ---- 17: FIFOs and other non-regular files ----

@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "pipe.npz"
    os.mkfifo(path)
    return path


@pytest.mark.parametrize("args", [
    lambda f, t: [*PHYSICS, "--inputs", f, *SMALL],
    lambda f, t: ["run", "--case", "physics-default", *SMALL, "--config", f],
    lambda f, t: ["run", "--case", "physics-default", *SMALL, "--tolerances", f],
    lambda f, t: ["run", "--pipeline", "pinn", "--inputs", t, "--weights", f, *SMALL],
    lambda f, t: ["run", "--dataset", f],
    lambda f, t: ["calibrate", "--case", "physics-default", *SMALL, "--tolerances", f],
], ids=["inputs", "config", "tolerances", "weights", "dataset", "calibrate-tolerances"])
def test_17_a_fifo_is_refused_and_never_blocks(tmp_path, fifo, args):
    inputs = tmp_path / "pinn.npz"
    np.savez(inputs, **synthetic.pipeline_inputs("pinn", CFG, 2, seed=1))
    result = parity_process(*args(fifo, inputs), "--out", tmp_path / "out", timeout=60)
    assert_refused(result, str(fifo), "is a FIFO (named pipe), expected a regular file")


def test_17_a_symlink_to_a_fifo_is_refused_and_to_a_file_followed(tmp_path, fifo):
    link = tmp_path / "link.npz"
    link.symlink_to(fifo)
    assert_refused(parity_process(*PHYSICS, "--inputs", link, *SMALL, "--out", tmp_path / "o", timeout=60),
                   "is a FIFO")
    from parity.inputs import load_inputs

    target = _physics_inputs(tmp_path, "real.npz")
    good = tmp_path / "good.npz"
    good.symlink_to(target)
    inputs, _ = load_inputs(good, "physics", CFG)
    assert inputs["probe"].shape == (32, 32)


def test_17_a_character_device_is_refused(tmp_path):
    result = parity_process("run", "--case", "physics-default", *SMALL, "--config", "/dev/zero", "--out", tmp_path)
    assert_refused(result, "/dev/zero", "is a character device, expected a regular file")


# ---- the same causes, in-process where a process adds nothing ----

@pytest.mark.parametrize("taps", ["[]", "{a = 1}", '[""]', "true", "1.5"])
def test_4_more_malformed_taps(tmp_path, taps):
    from parity.errors import ParityInputError
    from parity.tolerances import load_tolerances

    path = tmp_path / "tolerances.toml"
    path.write_text(f"[[rule]]\ntaps = {taps}\nmax_rel_to_peak = 1e-6\n")
    with pytest.raises(ParityInputError, match=r"\[\[rule\]\] 1: key 'taps'"):
        load_tolerances(path)


@pytest.mark.parametrize("knobs", [{"intensity_scale": 1e-30}, {"intensity_scale": 1e30},
                                   {"nphotons": 1e-39, "dtype": "float32"}, {"gaussian_sigma": 1e-170}])
def test_16_more_knobs_out_of_the_runs_arithmetic(knobs):
    from backends.common.config import ConfigError

    with pytest.raises(ConfigError, match="expected"):
        resolve_config(knobs)


@pytest.mark.parametrize("knobs", [{"intensity_scale": 1e-30, "dtype": "float64"}, {"gaussian_sigma": 1e-150},
                                   {"intensity_scale": 1e19}, {"nphotons": 1e18}])
def test_16_values_that_fit_are_accepted(knobs):
    assert resolve_config(knobs).to_dict().items() >= knobs.items()


def test_8_a_small_file_that_asks_for_a_huge_run_is_weighed_in_the_chunks_the_run_takes(tmp_path):
    """200 000 scan positions are 1.6 MB on disk and ~20 GB at once, but a run takes them in chunks
    (simulate's whole-batch scale in a first pass): weighed from the headers, before the data is read, as
    those chunks; a memory limit that no chunk fits is still refused, naming the limit."""
    from parity import budget
    from parity.errors import ParityInputError
    from parity.workflows import choose_cases

    arrays = synthetic.pipeline_inputs("simulate", CFG, 3, seed=4)
    path = tmp_path / "scan.npz"
    np.savez(path, **arrays | {"scan_positions": np.full((200000, 2), 40.0, np.float32)})
    with budget.memory_limit(1 << 30):
        cases, _ = choose_cases(None, None, ["N=32"], "simulate", str(path))
    assert cases[0].batch == 200000
    assert budget.estimate(CFG, "simulate", 200000).total_bytes > 16 << 30  # what an unchunked run would need
    with budget.memory_limit(8 << 20), pytest.raises(ParityInputError) as caught:
        choose_cases(None, None, ["N=32"], "simulate", str(path))
    assert str(caught.value).startswith(f"{path}: needs an estimated") and "memory limit 8.0 MiB" in str(caught.value)


@pytest.mark.parametrize("status", [0, 1])
def test_adapter_code_ending_the_process_is_a_crash_with_a_report_never_a_verdict(tmp_path, status):
    """os._exit inside a stage: the supervising parent exits 3 and the case's report says why (an older
    passing report of the case does not survive)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    stale = tmp_path / "physics-default" / "report.json"
    stale.parent.mkdir()
    stale.write_text('{"passed": true}')
    for name in ("report.html", "samples.h5", "canvas.json", "patches-amplitude.png"):  # an earlier run's
        (stale.parent / name).write_text("an earlier run's")
    process = subprocess.run(
        [sys.executable, "-m", "parity", "run", "--case", "physics-default", "--set", "N=32", "--reference", "torch",
         "--candidate", "tests.hostile_adapters:EndsTheProcess", "--out", str(tmp_path)], cwd=root,
        env={**__import__("os").environ, "PYTHONPATH": str(root), "PARITY_TEST_EXIT": str(status)},
        capture_output=True, text=True, timeout=300)
    assert process.returncode == 3, process.stderr
    assert "the run ended abruptly in case 'physics-default'" in process.stderr
    report = json.loads(stale.read_text())
    assert report["stop_kind"] == "crashed" and report["passed"] is False
    assert f"exited with status {status}" in report["stopped"]
    # where it ended: the candidate had delivered the tap before intensity's, and intensity was running
    assert "last seen: candidate delivered 'amplitude.scaled'" in report["stopped"], report["stopped"]
    # nothing of the earlier run is left beside it: its page is this crash's
    assert {path.name for path in stale.parent.iterdir()} <= {"adapter.log", "report.html", "report.json"}
    assert "an earlier run" not in (stale.parent / "report.html").read_text()
    assert "Stopped" in (stale.parent / "report.html").read_text()


def test_an_adapter_calling_sys_exit_while_built_is_bad_usage_not_a_pass(tmp_path):
    from parity.cli import main
    from parity.errors import EXIT_BAD_INPUT

    assert main(["check", "--case", "physics-default", "--candidate", "tests.hostile_adapters:ExitsWhileBuilt",
                 "--out", str(tmp_path)]) == EXIT_BAD_INPUT


def test_a_tensor_without_data_is_junk_output_of_its_tap(tmp_path):
    from parity.builtin_cases import builtin_case
    from parity.runner import run_case
    from parity.workflows import cast_case, tolerance_table
    from tests.hostile_adapters import ReturnsMetaTensor
    from backends.torch import TorchBackend

    case = builtin_case("physics-default")
    report = run_case(cast_case(case, case.config.replace(N=32)), TorchBackend(), ReturnsMetaTensor(),
                      tolerance_table(None))
    result = report.tap("intensity").modes["propagated"]
    assert result.error_kind == "bad_output" and "meta" in result.error and not report.passed


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the watcher reads the child's state from /proc")
def test_a_stage_that_stops_its_own_process_is_resumed_and_the_run_reports(tmp_path):
    """SIGSTOP from adapter code: the stopped child can time out nothing itself; the watcher resumes it."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    process = subprocess.run(
        [sys.executable, "-m", "parity", "run", "--case", "physics-default", "--set", "N=32", "--reference", "torch",
         "--candidate", "tests.hostile_adapters:StopsItself", "--out", str(tmp_path)], cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)}, capture_output=True, text=True, timeout=300)
    assert "was stopped by a signal" in process.stderr and "resumed it (SIGCONT)" in process.stderr, process.stderr
    assert process.returncode == 0, process.stderr  # the Torch port against itself: parity holds once it runs on
    report = json.loads((tmp_path / "physics-default" / "report.json").read_text())
    assert report["passed"] is True


def test_an_adapter_that_floods_its_output_leaves_a_bounded_log(tmp_path, monkeypatch):
    from parity.builtin_cases import builtin_case
    from parity.runner import RunOptions, run_case
    from parity.workflows import cast_case, tolerance_table
    from tests.hostile_adapters import Floods
    from backends.torch import TorchBackend

    limit = 1 << 20
    monkeypatch.setenv("PARITY_LOG_LIMIT", str(limit))
    monkeypatch.setenv("PARITY_TEST_FLOOD", str(6 << 20))
    log_path = tmp_path / "adapter.log"
    case = builtin_case("physics-default")
    report = run_case(cast_case(case, case.config.replace(N=32)), TorchBackend(), Floods(), tolerance_table(None),
                      RunOptions(modes=("propagated",), log_path=log_path))
    assert report.passed  # the output is the port's business; the numbers still agree
    text = log_path.read_bytes()
    assert limit < len(text) < limit + 200, len(text)
    assert text.startswith(b"FLOOD ") and text.rstrip().endswith(b"the head is kept]")
    assert report.log["truncated_at"] == limit and report.log["bytes"] == len(text)
