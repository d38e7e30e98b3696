"""nox sessions: `nox -s parity` (the main job), `nox -s tests`, and helpers.

Installs are pinned by ``constraints/cpu.txt`` so a CPU machine never pulls a
multi-GB CUDA build of PyTorch by accident:
- ``PARITY_CONSTRAINTS=FILE`` uses another constraints file (``none``: no pins).
- ``PARITY_TORCH_INDEX=URL`` adds a PyTorch wheel index, e.g.
  https://download.pytorch.org/whl/cu126 for a GPU build (``none``: no extra
  index). By default the CPU index https://download.pytorch.org/whl/cpu is
  added when that host resolves; offline mirrors and ``find-links`` folders
  (as on CI) are used as pip is configured.
Virtualenvs are reused between runs (``nox -R`` skips the install entirely).
"""

from __future__ import annotations

import os
import socket

import nox
from nox.command import CommandFailed

nox.options.reuse_venv = "yes"
nox.options.sessions = ["tests"]
# Sessions run on the interpreter that runs nox (any 3.11+); a missing one is an error, never a skip.
nox.options.error_on_missing_interpreters = True

CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def _pip_args() -> list[str]:
    args: list[str] = []
    constraints = os.environ.get("PARITY_CONSTRAINTS", "constraints/cpu.txt")
    if constraints != "none":
        args += ["-c", constraints]
    index = os.environ.get("PARITY_TORCH_INDEX")
    if index is None:
        try:
            socket.getaddrinfo("download.pytorch.org", 443)
            index = CPU_INDEX
        except OSError:
            index = "none"
    if index != "none":
        args += ["--extra-index-url", index]
    return args


def _install(session: nox.Session, extras: str) -> None:
    session.install(*_pip_args(), "-e", f".[{extras}]")


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite (real TensorFlow and PyTorch on the CPU)."""
    _install(session, "torch,tf,test")
    session.run("pytest", "-n", os.environ.get("PARITY_TEST_WORKERS", "2"), "--dist", "loadfile", *session.posargs)


@nox.session
def parity(session: nox.Session) -> None:
    """The main job: every built-in case, TF vs Torch here, then Torch vs the recorded goldens.

    Reports land in reports/run/<case>/report.json and reports/check/<case>/report.json.
    Extra arguments go to both commands, e.g. `nox -s parity -- --case pinn-default`.
    """
    _install(session, "torch,tf,test")
    failed = []
    for command in (["run", "--out", "reports/run"], ["check", "--candidate", "torch", "--out", "reports/check"]):
        try:  # both run, whatever the first says: a failing `run` still leaves the goldens to check against
            session.run("parity", *command, *session.posargs)
        except CommandFailed:
            failed.append(f"parity {command[0]}")
    if failed:
        session.error(f"{' and '.join(failed)} failed (see above)")


EXAMPLES = [
    ["--candidate", "examples.keras_flat.adapter:LegacyTF"],
    ["--candidate", "examples.torch_fused.adapter:TorchPort"],
    ["--reference", "examples.keras_flat.adapter:LegacyTF", "--candidate", "examples.torch_fused.adapter:TorchPort"],
]


@nox.session
def examples(session: nox.Session) -> None:
    """The two worked plug-in adapters of examples/ against the TF reference, and against each other."""
    _install(session, "torch,tf,test")
    for index, adapters in enumerate(EXAMPLES):
        session.run("parity", "run", "--case", "physics-default", "--case", "physics-fly001-moon", *adapters,
                    "--out", f"reports/examples/{index}", *session.posargs)


@nox.session
def selftest(session: nox.Session) -> None:
    """Inject the fault catalog into the Torch candidate: every bug detected, localized and diagnosed,
    every equivalent refactor passing, and no false positive over 20 seeds of every built-in case."""
    _install(session, "torch,tf,test")
    session.run("parity", "selftest", "--out", "reports/selftest", *session.posargs)


@nox.session
def gpu(session: nox.Session) -> None:
    """Torch on CUDA against the CPU-recorded TF goldens (no TensorFlow needed).

    Run on a GPU machine as `PARITY_CONSTRAINTS=none PARITY_TORCH_INDEX=<cuda index> nox -s gpu`.
    """
    _install(session, "torch,test")
    session.run("parity", "check", "--candidate", "torch", "--device", "cuda", "--repeat", "2", "--out",
                "reports/gpu", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """`parity bench`: throughput, harness overhead, peak memory and start-up in one run (docs/benchmarks.md).

    Writes reports/bench.json; extra arguments go to `parity bench`, e.g. `nox -s bench -- --repeats 9`.
    """
    _install(session, "torch,tf,test")
    session.run("parity", "bench", "--json", "reports/bench.json", *session.posargs)


@nox.session(name="gpu-bench")
def gpu_bench(session: nox.Session) -> None:
    """`parity bench` on CUDA, Torch rows only (no TensorFlow needed); install as for `nox -s gpu`."""
    _install(session, "torch,test")
    session.run("parity", "bench", "--no-tf", "--device", "cuda", "--batch", "64", "--batch", "1024",
                "--batch", "4096", "--scaling-batch", "4096", "--scaling-batch", "16384", "--skip", "memory",
                "--skip", "startup", "--json", "reports/bench-gpu.json", *session.posargs)


@nox.session
def record(session: nox.Session) -> None:
    """Re-record the goldens with the TF reference (after a deliberate change of a case)."""
    _install(session, "torch,tf,test")
    session.run("parity", "record", *session.posargs)


@nox.session
def calibrate(session: nox.Session) -> None:
    """Measure noise floors; `nox -s calibrate -- --write` tightens tolerances.toml."""
    _install(session, "torch,tf,test")
    session.run("parity", "calibrate", *session.posargs)
