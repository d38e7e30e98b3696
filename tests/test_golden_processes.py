"""Attacks on goldens through the real command line: signals, file-size limits, permissions, bad files.

Each test first sets up the attack as a user would meet it (issue #12 items
5, 6, 7, 17, 21, 22, 23), then checks the promised outcome: exit 2 with one
line naming the file for bad input, exit 3 with "disk full or file too large"
for a refused write, never a hang, a traceback or a segfault, and the old
golden intact. The reference here is the Torch backend (``record`` works with
any adapter); no TensorFlow is imported by this module.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import pytest

pytest.importorskip("backends.torch", reason="PyTorch is not installed")

from parity.atomic_files import _TEMPORARY  # noqa: E402
from parity.cli import main  # noqa: E402
from parity.errors import EXIT_BAD_INPUT, EXIT_CRASHED, EXIT_OK  # noqa: E402
from parity.goldens import DIGEST_ATTR, atomic_h5, metadata_digest  # noqa: E402
from tests.golden_adapters import MARKER  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CASE = ["--case", "physics-default", "--set", "N=32"]
GOLDEN = "physics-default.h5"
PR_CAPBSET_DROP, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 24, 1, 2  # linux/prctl.h, linux/capability.h


def _run(args: list, timeout: int = 120, **kwargs) -> subprocess.CompletedProcess:
    env = os.environ | {"PYTHONPATH": str(ROOT)} | kwargs.pop("env", {})
    return subprocess.run([sys.executable, "-m", "parity", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout, **kwargs)


def _one_line_error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1 and lines[0].startswith("parity: error: "), stderr
    return lines[0]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("goldens")
    assert main(["record", "--reference", "torch", *CASE, "--goldens", str(folder)]) == EXIT_OK
    return folder


@pytest.fixture
def goldens(recorded, tmp_path) -> Path:
    folder = tmp_path / "goldens"
    shutil.copytree(recorded, folder)
    return folder


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


# ---- item 21: SIGTERM / SIGHUP / SIGKILL during record ----

@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_signal_mid_record_leaves_the_old_golden_and_no_temporary(goldens, tmp_path, signum):
    before = _snapshot(goldens)
    marker = tmp_path / "mid-record"
    process = subprocess.Popen(
        [sys.executable, "-m", "parity", "record", "--reference", "tests.golden_adapters:SlowReference", *CASE,
         "--goldens", str(goldens)], cwd=ROOT, env=os.environ | {"PYTHONPATH": str(ROOT), MARKER: str(marker)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert marker.exists(), process.communicate(timeout=5)
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == -signum, stderr  # it still dies of the signal, as the sender expects
    assert f"{signal.Signals(signum).name} received; temporary files removed" in stderr
    assert _snapshot(goldens) == before


def test_temporaries_of_a_killed_writer_are_swept_by_the_next_record(goldens, tmp_path):
    """SIGKILL cannot be handled: the temporary names its dead writer and the next writer removes it."""
    marker = tmp_path / "writing"
    script = (f"import pathlib, time\nfrom parity.goldens import atomic_h5\n"
              f"with atomic_h5({str(goldens / GOLDEN)!r}) as h5:\n"
              f"    h5['x'] = list(range(1000)); h5.flush()\n"
              f"    pathlib.Path({str(marker)!r}).write_text('1'); time.sleep(120)\n")
    process = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env=os.environ | {"PYTHONPATH": str(ROOT)})
    try:
        deadline = time.monotonic() + 60
        while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists()
        process.kill()
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    [left] = [path for path in goldens.iterdir() if path.name != GOLDEN]  # the attack: a temporary stays
    match = _TEMPORARY.match(left.name)
    assert match and int(match["pid"]) == process.pid and match["target"] == GOLDEN
    assert main(["record", "--reference", "torch", *CASE, "--goldens", str(goldens)]) == EXIT_OK
    assert sorted(path.name for path in goldens.iterdir()) == [GOLDEN]


# ---- item 22: a file-size limit during record ----

def test_a_file_size_limit_during_record_exits_3_and_keeps_the_old_golden(goldens):
    before = _snapshot(goldens)
    size = (goldens / GOLDEN).stat().st_size
    limit = size // 3

    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        signal.signal(signal.SIGXFSZ, signal.SIG_DFL)  # as a shell would leave it: the default action kills

    result = _run(["record", "--reference", "torch", *CASE, "--set", "gaussian_sigma=0.5", "--goldens", goldens],
                  preexec_fn=limit_file_size)
    assert result.returncode == EXIT_CRASHED, (result.returncode, result.stderr)  # not -SIGXFSZ, not -SIGSEGV
    line = _one_line_error(result.stderr)
    assert str(goldens / GOLDEN) in line and "disk full or file too large" in line and "intact" in line
    assert _snapshot(goldens) == before


# ---- item 7: record into a folder that cannot take it, refused before the reference is loaded ----

def _without_root_override() -> None:
    """Root ignores permission bits: drop CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH before exec, as a user."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
        if libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def test_record_into_a_read_only_folder_exits_2_before_the_reference_runs(tmp_path):
    folder = tmp_path / "goldens"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        as_user = {"preexec_fn": _without_root_override} if os.geteuid() == 0 else {}
        result = _run(["record", "--reference", "tests.golden_adapters:never_loaded", *CASE, "--goldens", folder],
                      **as_user)
        assert result.returncode == EXIT_BAD_INPUT, result.stderr
        line = _one_line_error(result.stderr)
        assert f"--goldens {folder}: cannot write into the golden folder (Permission denied)" in line
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o755)


@pytest.mark.parametrize("where", ["file", "under-a-file"])
def test_record_at_a_file_exits_2_before_the_reference_runs(tmp_path, where):
    target = tmp_path / "goldens.txt"
    target.write_text("not a folder")
    folder = target if where == "file" else target / "goldens"
    result = _run(["record", "--reference", "tests.golden_adapters:never_loaded", *CASE, "--goldens", folder])
    assert result.returncode == EXIT_BAD_INPUT, result.stderr
    line = _one_line_error(result.stderr)
    assert f"--goldens {folder}" in line
    assert ("exists and is not a folder" if where == "file" else "cannot create the golden folder") in line
    assert target.read_text() == "not a folder"


# ---- items 5, 6, 17, 23: bad goldens given to check ----

def _check(capsys, goldens: Path, tmp_path: Path) -> tuple[int, str]:
    code = main(["check", "--candidate", "torch", *CASE, "--goldens", str(goldens), "--out", str(tmp_path / "out")])
    return code, capsys.readouterr().err


def test_check_with_a_flipped_byte_in_a_compressed_chunk_exits_2(goldens, tmp_path, capsys):
    with h5py.File(goldens / GOLDEN, "r") as h5:
        offset = h5["taps/farfield"].id.get_chunk_info(0).byte_offset
    with open(goldens / GOLDEN, "r+b") as handle:
        handle.seek(offset)
        first = handle.read(1)[0]
        handle.seek(offset)
        handle.write(bytes([first ^ 0xFF]))
    code, err = _check(capsys, goldens, tmp_path)
    assert code == EXIT_BAD_INPUT
    line = _one_line_error(err)
    assert f"{goldens / GOLDEN}: dataset 'taps/farfield' cannot be read" in line and "damaged" in line
    assert not (tmp_path / "out" / "physics-default").exists()


@pytest.mark.parametrize("attrs, reseal, expected", [
    ({"definition": "[1,2]"}, True, "attribute 'definition' must hold a JSON dict, got list"),
    ({"definition": "[1,2]"}, False, "does not match its digest"),
    ({"provenance": json.dumps({"device": "cuda:7"})}, False, "does not match its digest"),
    ({"backend": json.dumps({"name": "torch"})}, False, "does not match its digest"),
    ({"tap_order": "[]"}, False, "does not match its digest"),
], ids=["malformed-resealed", "malformed", "forged-provenance", "forged-backend", "forged-tap-order"])
def test_check_with_malformed_or_forged_metadata_exits_2(goldens, tmp_path, capsys, attrs, reseal, expected):
    with h5py.File(goldens / GOLDEN, "r+") as h5:
        h5.attrs.update(attrs)
        if reseal:
            h5.attrs[DIGEST_ATTR] = metadata_digest(h5)
    code, err = _check(capsys, goldens, tmp_path)
    assert code == EXIT_BAD_INPUT
    line = _one_line_error(err)
    assert str(goldens / GOLDEN) in line and expected in line


def test_check_with_a_fifo_as_golden_exits_2_without_blocking(tmp_path):
    folder = tmp_path / "goldens"
    folder.mkdir()
    os.mkfifo(folder / GOLDEN)
    result = _run(["check", "--candidate", "torch", *CASE, "--goldens", folder, "--out", tmp_path / "out"],
                  timeout=120)  # a blocking open() would end in TimeoutExpired
    assert result.returncode == EXIT_BAD_INPUT, result.stderr
    line = _one_line_error(result.stderr)
    assert f"{folder / GOLDEN}: the golden file is a FIFO; expected a regular file" in line


def test_the_intact_golden_passes_the_same_check(goldens, tmp_path, capsys):
    """Control for the attacks above: unmodified, the same command exits 0."""
    code, err = _check(capsys, goldens, tmp_path)
    assert code == EXIT_OK, err


def test_atomic_h5_still_streams_and_cleans_up(tmp_path):
    """The streamed writer (tap dumps) shares the naming and cleanup."""
    with pytest.raises(RuntimeError), atomic_h5(tmp_path / "dump.h5") as h5:
        h5["x"] = [1, 2, 3]
        assert [path.name for path in tmp_path.iterdir()][0].startswith(".dump.h5.")
        raise RuntimeError("stop")
    assert list(tmp_path.iterdir()) == []
    with atomic_h5(tmp_path / "dump.h5") as h5:
        h5["x"] = [1, 2, 3]
    assert [path.name for path in tmp_path.iterdir()] == ["dump.h5"]


def test_sigterm_to_a_watched_run_mid_case_reports_the_case_and_dies_of_the_signal(tmp_path):
    """The watcher forwards SIGTERM; the child reports its interrupted case; the command then dies of SIGTERM
    (143 in a shell), as the README says, not 130 as after a Ctrl-C."""
    out = tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, "-m", "parity", "check", "--case", "physics-n32-g3-buffer", "--candidate",
         "tests.hostile_adapters:Hangs", "--stage-timeout", "120", "--out", str(out), "--quiet"], cwd=ROOT,
        env=os.environ | {"PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = out / "physics-n32-g3-buffer" / "adapter.log"
    try:
        deadline = time.monotonic() + 120
        while not log.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(2)  # into the hanging stage
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == -signal.SIGTERM, stderr
    report = json.loads((out / "physics-n32-g3-buffer" / "report.json").read_text())
    assert report["passed"] is not True and report["stop_kind"] == "interrupted", report["stopped"]
