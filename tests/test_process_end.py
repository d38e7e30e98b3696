"""Adapter code ending the process with ``os._exit`` where no watcher stands outside it (``parity.process_end``):
the pytest plugin, ``PARITY_SUPERVISE=0``, the library API. Each check runs a fresh interpreter, since
the replacement of ``os._exit`` lasts for the process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from tests.hostile import parity_process

ROOT = Path(__file__).resolve().parent.parent


def _python(code: str, tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, env=os.environ | {"PYTHONPATH": str(ROOT)})


def test_os_exit_in_adapter_code_is_refused_and_elsewhere_never_ends_a_worse_verdict_with_0(tmp_path):
    result = _python("""
        import os
        from parity import process_end
        process_end.install()
        with process_end.adapter_code():
            try:
                os._exit(0)
            except process_end.ProcessEndRefused as refused:
                print("refused", refused.what)
        pid = os.fork()
        if pid == 0:
            os._exit(7)  # a forked worker: the original
        print("child", os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
        process_end.said(1)
        os._exit(0)  # an atexit handler's os._exit(0) after a failing verdict
    """, tmp_path)
    assert result.stdout.split() == ["refused", "os._exit(0)", "child", "7"], result.stdout + result.stderr
    assert result.returncode == 1, result.stderr


def test_os_exit_0_from_an_adapter_thread_before_any_verdict_is_exit_3(tmp_path):
    result = _python("""
        import os, threading
        from parity import process_end
        process_end.install()
        threading.Thread(target=os._exit, args=(0,)).start()
        threading.Event().wait(30)
    """, tmp_path)
    assert result.returncode == 3, result.stderr
    assert "os._exit(0)" in result.stderr and "not a parity verdict" in result.stderr
    same = _python("""
        import os, threading
        from parity import process_end
        process_end.install()
        threading.Thread(target=os._exit, args=(5,)).start()  # a non-zero status goes through (pytest-timeout)
        threading.Event().wait(30)
    """, tmp_path)
    assert same.returncode == 5, same.stderr


def test_posix_exit_a_status_that_wraps_to_0_and_exec_are_covered_too(tmp_path):
    result = _python("""
        import os, posix
        from parity import process_end
        process_end.install()
        with process_end.adapter_code():
            for call in (lambda: posix._exit(0), lambda: os.execv("/bin/true", ["true"]),
                         lambda: os.execlp("true", "true")):
                try:
                    call()
                except process_end.ProcessEndRefused as refused:
                    print("refused", refused.what)
        process_end.expect_verdict()  # a session under way: 256 (the shell reads 0) before any verdict is exit 3
        posix._exit(256)
    """, tmp_path)
    assert result.stdout.split() == ["refused", "os._exit(0)", "refused", "os.execv", "refused", "os.execv"], (
        result.stdout + result.stderr)
    assert result.returncode == 3 and "os._exit(256)" in result.stderr, result.stderr
    execs = _python("""
        import os
        from parity import process_end
        process_end.install()
        process_end.expect_verdict()
        os.execv("/bin/true", ["true"])
    """, tmp_path)
    assert execs.returncode == 3 and "os.execv" in execs.stderr, execs.stderr
    # a script of the library API: a thread of the port's replacing the process while a run is under way
    during_a_run = _python("""
        import os, threading
        from parity import process_end
        process_end.install()
        process_end.run_began()
        worker = threading.Thread(target=os.execv, args=("/bin/true", ["true"]))
        worker.start()
        worker.join()
    """, tmp_path)
    assert during_a_run.returncode == 3 and "os.execv" in during_a_run.stderr, during_a_run.stderr


def test_unwatched_command_reports_a_stage_that_calls_os_exit_as_the_candidates_fault(tmp_path):
    result = parity_process("check", "--case", "physics-default", "--candidate",
                            "tests.hostile_adapters:EndsTheProcess", "--out", tmp_path, env={"PARITY_SUPERVISE": "0"})
    assert result.returncode == 1, result.stdout + result.stderr
    report = json.loads((tmp_path / "physics-default" / "report.json").read_text())
    assert report["passed"] is False
    assert "called os._exit(0)" in json.dumps(report)


def _pytest_session(tmp_path: Path, candidate: str) -> subprocess.CompletedProcess:
    (tmp_path / "test_nothing.py").write_text("def test_nothing():\n    pass\n")
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
                           f"--parity-candidate={candidate}", "--parity-reference=golden",
                           "--parity-cases=physics-default", "--parity-baselines=off", str(tmp_path)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env=os.environ | {"PYTHONPATH": str(ROOT)})


def test_a_pytest_session_whose_port_calls_os_exit_0_fails_instead_of_passing(tmp_path):
    result = _pytest_session(tmp_path, "tests.hostile_adapters:EndsTheProcess")
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    assert "called os._exit(0)" in result.stdout
    assert "test_parity[physics-default-intensity]" in result.stdout


def test_a_pytest_session_ended_by_a_thread_of_the_port_says_why_on_the_terminal(tmp_path):
    # pytest captures descriptor 2 into a file that a process ended by os._exit never prints: the line goes to
    # standard error as it was before the capture
    result = _pytest_session(tmp_path, "tests.hostile_adapters:ExitsFromItsOwnThread")
    assert result.returncode == 3, result.stdout[-3000:] + result.stderr[-3000:]
    assert "os._exit(0) from thread 'port-worker'" in result.stderr and "not a parity verdict" in result.stderr


def test_a_pytest_session_whose_port_ends_with_0_at_exit_keeps_its_failing_status(tmp_path):
    result = _pytest_session(tmp_path, "tests.hostile_adapters:WrongThenEndsWithZeroAtExit")
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    assert "FAILED" in result.stdout


def test_unwatched_a_stage_that_holds_the_interpreter_is_ended_by_the_hang_timer_with_its_traceback(tmp_path):
    started = time.monotonic()
    result = parity_process("run", "--case", "physics-default", "--set", "N=32", "--reference", "torch",
                            "--candidate", "tests.hostile_process_adapters:HoldsTheInterpreter", "--stage-timeout", "2",
                            "--out", tmp_path, env={"PARITY_SUPERVISE": "0"}, timeout=180)
    assert result.returncode == 1, result.stdout + result.stderr
    assert time.monotonic() - started < 120
    assert "Timeout" in result.stderr and "in _holds_the_interpreter" in result.stderr, result.stderr[-3000:]



def test_a_conftest_that_imports_a_port_replacing_numpy_abs_cannot_make_a_wrong_port_pass(tmp_path):
    # the port module replaces numpy.abs when imported; the conftest imports it before any test runs
    (tmp_path / "patching_port.py").write_text(textwrap.dedent("""
        import numpy as np
        from backends.torch import TorchBackend
        from backends.torch.stages import STAGES

        class Port(TorchBackend):
            def __init__(self, device="cpu"):
                super().__init__(device)
                self.stages["farfield"] = lambda ctx, wave: STAGES["farfield"](ctx, wave) * 2

        np.abs = np.absolute = lambda x, *args, **kwargs: np.zeros(np.shape(x))
    """))
    (tmp_path / "conftest.py").write_text("import patching_port  # noqa: F401\n")
    result = _pytest_session(tmp_path, "patching_port:Port")
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    assert "test_parity[physics-default-farfield]" in result.stdout


def test_a_watched_child_that_fails_before_any_adapter_code_is_not_blamed_on_adapter_code(tmp_path):
    # sitecustomize runs in the watched child only (PARITY_SUPERVISED): a broken environment, not a port
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text("import os, sys\nif os.environ.get('PARITY_SUPERVISED') == '1':\n"
                                           "    sys.exit('broken environment')\n")
    result = parity_process("check", "--case", "physics-default", "--out", tmp_path / "out",
                            env={"PYTHONPATH": f"{ROOT}{os.pathsep}{site}"})
    assert result.returncode == 3, result.stderr
    assert "before any adapter code ran" in result.stderr and "adapter code;" not in result.stderr, result.stderr


def test_a_port_module_that_calls_os_exit_0_when_imported_fails_the_session(tmp_path):
    (tmp_path / "exits_on_import.py").write_text("import os\nos._exit(0)\n")
    result = _pytest_session(tmp_path, "exits_on_import:Port")
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    assert "called os._exit(0)" in result.stdout


def test_a_thread_the_port_leaves_running_does_not_hang_the_session(tmp_path):
    started = time.monotonic()
    result = _pytest_session(tmp_path, "tests.hostile_adapters:LeavesAThreadRunning")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]  # a correct port: the verdict stands
    assert "thread(s) still running after the session" in result.stderr
    assert time.monotonic() - started < 120


def test_a_script_of_the_library_api_keeps_a_failing_verdict_when_the_port_exits_0_at_exit(tmp_path):
    result = _python("""
        import sys
        from pathlib import Path
        import parity
        from parity.adapters import load_adapter
        from parity.workflows import DEFAULT_GOLDENS, DEFAULT_TOLERANCES, check_against_golden, open_golden
        from parity.tolerances import load_tolerances
        tolerances = load_tolerances(DEFAULT_TOLERANCES)
        candidate = load_adapter("tests.hostile_adapters:WrongThenEndsWithZeroAtExit")
        with open_golden(parity.builtin_case("physics-default"), DEFAULT_GOLDENS, tolerances) as opened:
            report = check_against_golden(opened, candidate, tolerances, parity.RunOptions(), Path("out"))
        print("passed", report.passed)
        sys.exit(0 if report.passed else 1)
    """, tmp_path)
    assert "passed False" in result.stdout, result.stdout + result.stderr
    assert result.returncode == 1, result.stderr[-2000:]


def test_without_testpaths_the_suite_is_generated_in_the_folder_the_session_collects(tmp_path):
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "tests").mkdir()
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             "--parity-candidate=tests.hostile_adapters:ScalesWaveInFarfield",
                             "--parity-reference=golden", "--parity-cases=physics-default", "--parity-baselines=off",
                             "--collect-only", "tests"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                            env=os.environ | {"PYTHONPATH": str(ROOT)})
    assert "tests/parity::test_parity[physics-default-farfield]" in result.stdout, result.stdout[-3000:]
