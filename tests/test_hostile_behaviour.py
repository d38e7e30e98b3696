"""Adapter behaviour the verdict must survive (a review's findings): what it hands the sink, and what it leaves
running or registered after the verdict. Each runs the command line, checks the exit code and the report."""

from __future__ import annotations

import json

import pytest

from tests.hostile import parity_process

CASE = "physics-n32-edge-offsets-f64"


def _check(tmp_path, adapter, timeout=300):
    result = parity_process("check", "--case", CASE, "--candidate", f"tests.hostile_adapters:{adapter}",
                            "--out", "out", "--stage-timeout", "60", cwd=tmp_path, timeout=timeout)
    path = tmp_path / "out" / CASE / "report.json"
    return result, (json.loads(path.read_text()) if path.is_file() else None)


def _farfield(report):
    return next(tap for tap in report["taps"] if tap["name"] == "farfield")


@pytest.mark.parametrize("adapter, words", [
    ("DeliversAScalar", "shape differs"),
    ("DeliversSparse", "expected a dense one"),
    ("DeliversAHugeBroadcast", "far too large to compare"),
    ("DeliversTwice", "delivered twice"),
])
def test_junk_handed_to_the_sink_fails_that_tap_with_a_report(tmp_path, adapter, words):
    result, report = _check(tmp_path, adapter)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert report is not None and report["passed"] is False
    assert words in json.dumps(_farfield(report)["modes"]["propagated"]), _farfield(report)


def test_right_values_on_a_tensor_that_requires_grad_pass(tmp_path):
    result, report = _check(tmp_path, "DeliversWithGrad")
    assert result.returncode == 0, result.stderr
    assert report["passed"] is True


def test_an_atexit_handler_cannot_turn_a_failure_into_exit_0(tmp_path):
    result, report = _check(tmp_path, "WrongThenEndsWithZeroAtExit")
    assert report["passed"] is False
    assert result.returncode == 1, result.stderr


def test_a_thread_left_running_does_not_hold_the_command(tmp_path):
    result, report = _check(tmp_path, "LeavesAThreadRunning", timeout=120)
    assert result.returncode == 0 and report["passed"] is True, result.stderr


def test_a_graph_that_is_not_a_list_of_taps_is_a_usage_error(tmp_path):
    result, report = _check(tmp_path, "GraphIsText")
    assert result.returncode == 2, result.stderr
    assert "graph() returned str, expected a list of TapSpec" in result.stderr


def test_a_name_that_would_write_control_characters_to_the_terminal_is_refused(tmp_path):
    result, report = _check(tmp_path, "EscapesInItsName")
    assert result.returncode == 2 and "not a printable one-line name" in result.stderr and "\x1b" not in result.stderr
