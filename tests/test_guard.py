"""Whatever adapter code does (exit, raise KeyboardInterrupt, hang, return junk, print, change its
input), the run ends in a report, with an honest exit code and the right stage named."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from parity.cli import main
from parity.errors import EXIT_CRASHED, EXIT_DIVERGED, EXIT_OK

pytest.importorskip("backends.tf", reason="TensorFlow (the reference) is not installed")

ROOT = Path(__file__).resolve().parent.parent
CASE = ["--case", "physics-default", "--set", "N=32"]


def _run(tmp_path, candidate, *extra, capfd=None):
    code = main(["run", *CASE, "--candidate", f"tests.hostile_adapters:{candidate}", "--out", str(tmp_path), *extra])
    report = json.loads((tmp_path / "physics-default" / "report.json").read_text())
    return code, report


def _tap(report, name):
    return next(tap for tap in report["taps"] if tap["name"] == name)


def test_sys_exit_in_run_stage_is_a_failure_with_a_report(tmp_path):
    code, report = _run(tmp_path, "ExitingInRunStage")
    assert code == EXIT_DIVERGED and report["passed"] is False
    isolated = _tap(report, "intensity")["modes"]["isolated"]
    assert isolated["status"] == "error" and "sys.exit(0)" in isolated["error"]
    assert report["first_divergence"]["tap"] == "intensity"


def test_sys_exit_inside_the_pipeline_names_the_stage(tmp_path):
    code, report = _run(tmp_path, "ExitingInPipeline")
    assert code == EXIT_DIVERGED
    propagated = _tap(report, "farfield")["modes"]["propagated"]
    assert propagated["error_kind"] == "exit" and "sys.exit(0)" in propagated["error"]
    assert _tap(report, "amplitude")["modes"]["propagated"]["status"] == "not_reached"


def test_keyboard_interrupt_raised_by_adapter_code_is_that_stages_failure(tmp_path):
    code, report = _run(tmp_path, "InterruptingStage")
    assert code == EXIT_DIVERGED
    assert report["first_divergence"]["tap"] == "farfield"
    assert "KeyboardInterrupt" in _tap(report, "farfield")["modes"]["isolated"]["error"]


def test_run_stage_returning_none_fails_that_tap_with_the_reason(tmp_path):
    code, report = _run(tmp_path, "ReturnsNone")
    assert code == EXIT_DIVERGED
    isolated = _tap(report, "intensity")["modes"]["isolated"]
    assert isolated["error_kind"] == "bad_output" and "returned NoneType" in isolated["error"]
    assert _tap(report, "intensity")["modes"]["propagated"]["status"] == "passed"
    assert report["first_divergence"]["tap"] == "intensity"


def test_run_stage_returning_a_torch_tensor_is_compared(tmp_path):
    code, report = _run(tmp_path, "ReturnsTensor")
    assert code == EXIT_OK and report["passed"]


def test_describe_with_numpy_scalars_and_nan_still_writes_the_report(tmp_path):
    code, report = _run(tmp_path, "OddDescribe")
    assert code == EXIT_OK
    assert report["candidate"]["gain"] == 1.5 and report["candidate"]["bad"] == "nan"
    assert report["candidate"]["big"] == "inf" and report["candidate"]["nested"] == {"x": 3}
    assert report["candidate"]["blob"].startswith("<object object")


def test_adapter_output_goes_to_the_log_not_the_table(tmp_path, capfd):
    code, report = _run(tmp_path, "Chatty")
    out, err = capfd.readouterr()
    assert code == EXIT_OK
    assert "CHATTY" not in out and "CHATTY" not in err
    log = Path(report["log"]["path"]).read_text()
    for marker in ("CHATTY-STDOUT", "CHATTY-STDERR", "CHATTY-WARNING"):
        assert marker in log
    assert "captured in" in out


def test_a_stage_that_changes_its_input_in_place_is_named(tmp_path):
    code, report = _run(tmp_path, "NegatesInputInPlace")
    assert code == EXIT_DIVERGED
    divergence = report["first_divergence"]
    assert divergence["tap"] == "exit_wave" and divergence["kind"] == "in_place"
    assert "modified its input 'patches.extracted' in place" in divergence["messages"][0]
    # its own output is right: the value is compared and within tolerance
    assert _tap(report, "exit_wave")["modes"]["propagated"]["metrics"]["passed"] is True


def test_in_place_change_inside_the_fft_stage_is_put_on_the_fft_stage(tmp_path):
    code = main(["run", "--case", "simulate-n32-f64", "--candidate", "tests.hostile_adapters:ScalesWaveInFarfield",
                 "--out", str(tmp_path)])
    report = json.loads((tmp_path / "simulate-n32-f64" / "report.json").read_text())
    assert code == EXIT_DIVERGED
    assert report["first_divergence"]["tap"] == "farfield" and report["first_divergence"]["kind"] == "in_place"
    assert report["first_divergence"]["inherited"] is False


def test_a_hanging_stage_ends_in_a_report_naming_it(tmp_path):
    started = time.monotonic()
    process = subprocess.run(
        [sys.executable, "-m", "parity", "run", *CASE, "--candidate", "tests.hostile_adapters:Hangs",
         "--stage-timeout", "3", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert process.returncode == EXIT_DIVERGED, process.stderr
    assert time.monotonic() - started < 200
    report = json.loads((tmp_path / "physics-default" / "report.json").read_text())
    farfield = _tap(report, "farfield")["modes"]["propagated"]
    assert farfield["error_kind"] == "timeout" and "stage timeout of 3 s" in farfield["error"]
    assert report["stop_kind"] == "candidate" and report["first_divergence"]["tap"] == "farfield"


def test_a_stage_hanging_in_the_first_pass_of_a_chunked_run_is_named(tmp_path):
    """simulate in chunks: the whole-batch scale is found in a first pass; a hang there is still put on
    the stage that hung, not on the first stage the abandoned adapter is no longer asked for."""
    process = subprocess.run(
        [sys.executable, "-m", "parity", "run", "--case", "simulate-n32-f64", "--batch-chunk", "2",
         "--candidate", "tests.hostile_adapters:HangsInGlobalStage", "--stage-timeout", "3", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=240, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert process.returncode == EXIT_DIVERGED, process.stderr
    report = json.loads((tmp_path / "simulate-n32-f64" / "report.json").read_text())
    scale = _tap(report, "sim.intensity_scale")["modes"]["propagated"]
    assert scale["error_kind"] == "timeout", scale
    # the stages before it ran in the first pass only, which compares nothing: not reached, not failed
    assert _tap(report, "sim.patches")["modes"]["propagated"]["status"] == "not_reached"
    assert report["stop_kind"] == "candidate" and report["first_divergence"]["tap"] == "sim.intensity_scale"


def test_a_crashing_reference_still_writes_a_report(tmp_path, capsys):
    code = main(["run", *CASE, "--reference", "tests.plugin_adapters:RaisingReference", "--out", str(tmp_path)])
    assert code == EXIT_CRASHED
    report = json.loads((tmp_path / "physics-default" / "report.json").read_text())
    assert report["passed"] is False and report["stop_kind"] == "reference"
    assert "reference farfield exploded" in report["stopped"]


def test_an_abandoned_call_gives_the_warnings_state_back(tmp_path):
    import warnings

    from parity.capture import OutputLog
    from parity.guard import AdapterFault, Guard

    log = OutputLog(tmp_path / "adapter.log")
    guard = Guard("candidate", log, stage_timeout=0.5)
    before = (list(warnings.filters), warnings.showwarning)
    with pytest.raises(AdapterFault, match="stage timeout"):
        guard.call("a hanging stage", time.sleep, 3)
    # the abandoned call is still inside its capture: the filters and showwarning are the harness's again
    assert (list(warnings.filters), warnings.showwarning) == before
    log.close()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.warn("after the log was closed", UserWarning)  # used to go to the closed log and raise
    assert [str(warning.message) for warning in caught] == ["after the log was closed"]
