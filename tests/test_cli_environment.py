"""The command on machines unlike the developer's: a reader that leaves, a full standard output, warnings
turned into errors, a HOME matplotlib cannot write to, a non-UTF-8 locale. The exit code is the verdict's
or says why there is none, in one line, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.hostile import ROOT

RUN = ["run", "--case", "physics-default", "--set", "N=32", "--reference", "torch"]


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "parity", *args]


def _environment(**extra: str) -> dict[str, str]:
    return os.environ | {"PYTHONPATH": str(ROOT)} | extra


@pytest.mark.parametrize("candidate, verdict", [("torch", 0), ("tests.hostile_process_adapters:ZeroesNumpyAbs", 1)])
def test_a_reader_that_leaves_does_not_change_the_exit_code(tmp_path, candidate, verdict):
    process = subprocess.Popen(_command(*RUN, "--candidate", candidate, "--out", str(tmp_path)), cwd=tmp_path,
                               env=_environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()  # `parity run ... | head -0`: every write to stdout fails with EPIPE
    _, errors = process.communicate(timeout=300)
    assert process.returncode == verdict, errors.decode()
    assert b"Traceback" not in errors


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_full_standard_output_is_one_line_and_exit_3(tmp_path):
    with open("/dev/full", "w") as full:
        result = subprocess.run(_command("cases"), cwd=tmp_path, env=_environment(), stdout=full,
                                stderr=subprocess.PIPE, text=True, timeout=120)
    assert result.returncode == 3 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().startswith("parity: error: a write was refused (No space left on device)")


def test_warnings_as_errors_and_an_unwritable_matplotlib_folder_change_nothing(tmp_path):
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    result = subprocess.run(_command(*RUN, "--candidate", "torch", "--out", str(tmp_path / "out")), cwd=tmp_path,
                            env=_environment(PYTHONWARNINGS="error", MPLCONFIGDIR=str(tmp_path / "missing" / "x"),
                                             HOME=str(tmp_path / "missing"), TMPDIR=str(temporary)),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no matplotlib complaint, no empty line from a progress bar off a terminal
    assert list(temporary.iterdir()) == []  # matplotlib's temporary config folder went with the command


def test_a_path_the_locale_cannot_decode_is_written_back_as_its_bytes(tmp_path):
    out = tmp_path / "r\u00e9sultats"
    result = subprocess.run(_command(*RUN, "--candidate", "torch", "--out", str(out)), cwd=tmp_path,
                            env=_environment(LC_ALL="C", LANG="C", PYTHONUTF8="0", PYTHONCOERCECLOCALE="0"),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert (out / "physics-default" / "report.html").is_file()


@pytest.mark.parametrize("command, code", [("cases", 0), ("run", 3)])
def test_a_broken_pipe_that_reaches_the_command_line_never_reads_as_a_verdict(monkeypatch, command, code):
    """rich >= 13.8 lets a command with a verdict finish quietly when its reader leaves (report._Console); a
    BrokenPipeError that still reaches the command line stopped it before its verdict: not 0 ("parity holds")."""
    from parity import cli, commands

    def leaves(args):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setitem(commands.COMMANDS, command, leaves)
    monkeypatch.setattr(os, "dup2", lambda *args: None)  # the command line silences stdout: not pytest's capture
    monkeypatch.setattr(cli, "COMMANDS", commands.COMMANDS)
    assert cli.main([command] + (["--case", "physics-default"] if command == "run" else [])) == code
