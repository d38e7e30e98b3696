"""Adapter code that tampers with the process it shares with the harness (``tests/hostile_process_adapters``):
each runs ``parity run`` as a user would (the Torch port as the reference, a tampering port as the
candidate) and checks the exit code, the report and what reached the terminal."""

from __future__ import annotations

import json
import sys
import time

import pytest

from tests.hostile import ROOT, assert_refused, parity_process

ADAPTERS = "tests.hostile_process_adapters"


def _run(tmp_path, adapter, *extra, timeout=300):
    result = parity_process("run", "--case", "physics-default", "--set", "N=32", "--reference", "torch",
                            "--candidate", f"{ADAPTERS}:{adapter}", "--out", "out", *extra, cwd=tmp_path,
                            timeout=timeout)
    path = tmp_path / "out" / "physics-default" / "report.json"
    return result, (json.loads(path.read_text()) if path.is_file() else None)


def _farfield_failed(report) -> bool:
    tap = next(tap for tap in report["taps"] if tap["name"] == "farfield")
    return tap["status"] == "failed"


def test_a_port_that_replaces_numpy_abs_cannot_pass(tmp_path):
    result, report = _run(tmp_path, "ZeroesNumpyAbs")
    assert result.returncode == 1, result.stdout + result.stderr
    assert report["passed"] is False and _farfield_failed(report)
    assert any("numpy.abs" in note and "put the originals back" in note for note in report["notes"]), report["notes"]


def test_a_port_that_lowers_the_recursion_limit_does_not_crash_the_harness(tmp_path):
    result, report = _run(tmp_path, "LowersRecursionLimit")
    assert result.returncode == 0, result.stdout + result.stderr
    assert report["passed"] is True and "Traceback" not in result.stderr
    assert any("recursion limit" in note for note in report["notes"]), report["notes"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="closes descriptors the way a Linux daemon does")
def test_a_port_that_closes_every_descriptor_gets_its_verdict_and_keeps_its_report(tmp_path):
    result, report = _run(tmp_path, "ClosesDescriptors")
    assert result.returncode == 1, result.stderr  # its farfield is wrong: a failure, not a crash (3)
    assert report is not None and report["stop_kind"] is None and _farfield_failed(report), report
    assert "closed the run's standard output" in result.stderr and "out" in result.stderr


def test_a_port_that_closes_the_standard_streams_gets_its_verdict_printed(tmp_path):
    result, report = _run(tmp_path, "ClosesStandardStreams")
    assert result.returncode == 1, result.stderr
    assert report["passed"] is False and _farfield_failed(report)
    assert "FAIL" in result.stdout


def test_a_hostile_exception_message_is_escaped_and_cut(tmp_path):
    result, report = _run(tmp_path, "RaisesAHostileMessage")
    assert result.returncode == 1, result.stderr
    assert "\x1b" not in result.stdout + result.stderr and "\r" not in result.stdout + result.stderr
    assert len(result.stdout) < 200_000 and "\\x1b[2J" in result.stdout
    assert "more characters not shown" in json.dumps(report)
    assert not any(line.startswith("PASS") for line in result.stdout.splitlines())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the watcher's SIGKILL of a process group")
def test_a_stage_that_never_releases_the_interpreter_is_ended_by_the_watcher(tmp_path):
    began = time.monotonic()
    result, report = _run(tmp_path, "HoldsTheInterpreter", "--stage-timeout", "2", timeout=120)
    assert time.monotonic() - began < 60
    assert result.returncode == 1, result.stderr  # the candidate hung: a failure with a report
    assert "the watcher ended it" in result.stderr
    assert report["stop_kind"] == "candidate" and "hung" in report["stopped"]


@pytest.mark.parametrize("adapter, words", [
    ("NameIsAnArray", "name is a ndarray; expected a str"),
    ("RaisesABaseExceptionWhileBuilt", "building it failed: _NotAnException: raised while built"),
    ("RaisesKeyboardInterruptWhileBuilt", "building it failed: raised KeyboardInterrupt"),
])
def test_an_adapter_that_cannot_be_built_or_named_is_bad_input(tmp_path, adapter, words):
    result, _ = _run(tmp_path, adapter)
    assert_refused(result, words)


def test_a_name_that_is_a_str_subclass_is_printed_as_its_text(tmp_path):
    result, report = _run(tmp_path, "NameIsAStrSubclass")
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stdout and "plain-name" in result.stdout
    assert report["candidate"]["name"] == "plain-name"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the watcher's SIGKILL of a process group")
def test_an_adapter_that_hangs_while_built_is_ended_as_bad_input(tmp_path):
    began = time.monotonic()
    result, _ = _run(tmp_path, "HangsWhileBuilt", "--stage-timeout", "1", timeout=120)
    assert time.monotonic() - began < 60
    assert result.returncode == 2, result.stderr
    assert "importing or building an adapter made no progress" in result.stderr


def test_an_adapter_that_hangs_before_any_stage_fails_with_a_report(tmp_path):
    result, report = _run(tmp_path, "HangsInDescribe", "--stage-timeout", "1", timeout=120)
    assert result.returncode == 1, result.stderr
    assert report["stop_kind"] == "candidate" and "hung before any stage ran" in report["stopped"]
    assert "describe()" in report["stopped"]


def test_an_out_folder_replaced_during_the_run_is_a_clear_write_error(tmp_path):
    result = parity_process("run", "--case", "physics-default", "--set", "N=32", "--reference", "torch",
                            "--candidate", f"{ADAPTERS}:ReplacesTheOutFolder", "--out", "out", cwd=tmp_path,
                            env={"PARITY_TEST_OUT": str(tmp_path / "out")}, timeout=300)
    assert result.returncode == 3 and "Traceback" not in result.stderr, result.stderr
    assert "cannot be made" in result.stderr and "removed or replaced" in result.stderr


def test_the_watcher_works_without_a_writable_temporary_folder(tmp_path):
    result = parity_process("cases", env={"TMPDIR": str(tmp_path / "missing")})
    assert result.returncode == 0 and "physics-default" in result.stdout, result.stderr


def test_a_system_exit_sent_to_the_main_thread_is_never_a_pass_and_leaves_no_earlier_verdict(tmp_path):
    """A signal handler's sys.exit(0) or an exception sent to the main thread ends the run outside any adapter
    call: exit 3 and a crash report, never 0, and the passing report of an earlier run of the case is gone."""
    result, report = _run(tmp_path, "PlainPort")
    assert result.returncode == 0 and report["passed"] is True
    result, report = _run(tmp_path, "ExitsInTheMainThread")
    # where the exception lands is up to the interpreter: mostly the main thread's wait for the stage (exit 3, a
    # crash report); should harness code absorb it, the run goes on to its verdict on the wrong farfield (exit 1)
    assert result.returncode in (1, 3), result.stdout + result.stderr
    assert report is not None and report["passed"] is not True, report
    if result.returncode == 3:
        assert "SystemExit" in result.stderr and "not a parity verdict" in result.stderr, result.stderr


@pytest.mark.parametrize("adapter", ["ConjugateView", "UnreadableFarfield", "DescribesWithARaisingMapping"])
def test_values_that_are_hard_to_read_are_judged_not_a_crash(tmp_path, adapter):
    """A conjugate-bit view (right values), a value whose __array__ raises, a describe() whose mapping raises."""
    result, report = _run(tmp_path, adapter)
    assert "Traceback" not in result.stderr, result.stderr
    assert report is not None and report["stop_kind"] is None, result.stderr
    if adapter == "UnreadableFarfield":
        assert result.returncode == 1
        farfield = next(tap for tap in report["taps"] if tap["name"] == "farfield")
        assert "cannot be read as an array (RuntimeError: lazy tensor was freed)" in json.dumps(farfield), farfield
    else:
        assert result.returncode == 0, result.stdout + result.stderr


def test_a_stage_that_sets_a_umask_of_0o777_does_not_write_unreadable_reports(tmp_path):
    result, report = _run(tmp_path, "MasksEveryPermission")
    assert result.returncode == 0, result.stdout + result.stderr
    case_dir = tmp_path / "out" / "physics-default"
    assert all(path.stat().st_mode & 0o400 for path in case_dir.iterdir()), [oct(p.stat().st_mode) for p in case_dir.iterdir()]
    assert any("os.umask 0o777" in note for note in report["notes"]), report["notes"]


def test_a_tap_the_pipeline_does_not_have_is_named_in_the_notes(tmp_path):
    result, report = _run(tmp_path, "DeliversAnUnknownTap")
    assert result.returncode == 0, result.stdout + result.stderr
    assert any("does not have: 'far_field'" in note for note in report["notes"]), report["notes"]


def test_a_host_program_that_sets_its_own_umask_keeps_it(tmp_path):
    """The library API in a program with its own mask: the mask is the host's, not the candidate's doing."""
    import os
    import subprocess

    script = ("import os, sys\nos.umask(0o077)\n"
              "from parity import builtin_case, run_case\nfrom backends.torch import TorchBackend\n"
              "from parity.workflows import tolerance_table\n"
              "case = builtin_case('physics-n32-g3-buffer')\n"
              "report = run_case(case, TorchBackend(), TorchBackend(), tolerance_table(None))\n"
              "mask = os.umask(0o022)\n"
              "print(oct(mask), report.passed, [n for n in report.notes if 'umask' in n])\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                            env=os.environ | {"PYTHONPATH": str(ROOT)})
    assert result.stdout.split() == ["0o77", "True", "[]"], result.stdout + result.stderr


def test_a_write_that_fails_after_the_report_keeps_the_report_and_usage_errors_keep_the_last_one(tmp_path):
    result, report = _run(tmp_path, "FillsTheDiskBeforeThePage")
    assert result.returncode == 3, result.stdout + result.stderr
    assert report is not None and report["stop_kind"] is None and len(report["taps"]) == 9, report
    assert "kept" in result.stderr, result.stderr
    result, again = _run(tmp_path, "PlainPort", "--taps", "no-such-tap*")  # bad usage: nothing ran
    assert result.returncode == 2, result.stderr
    assert again == report  # the folder's last report is left as it was


def test_an_interrupt_adapter_code_raises_is_not_the_users_ctrl_c(tmp_path):
    """130 means the user stopped the run; an interrupt from adapter code is no verdict and no Ctrl-C: exit 3, and
    an earlier passing report of the case does not stand."""
    result, report = _run(tmp_path, "PlainPort")
    assert result.returncode == 0 and report["passed"] is True
    result, report = _run(tmp_path, "InterruptsTheMainThread")
    assert result.returncode == 3, result.stdout + result.stderr
    assert "KeyboardInterrupt that no Ctrl-C or signal to the command sent" in result.stderr, result.stderr
    assert report is not None and report["passed"] is not True, report
