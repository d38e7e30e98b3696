"""Each command imports only what it needs: `cases` no framework, `check` no TensorFlow (pinn weights
audit included), Torch's determinism switch no compiler stack; ``--allow-tf32`` is recorded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("backends.torch", reason="PyTorch (the candidate) is not installed")

from backends.common import determinism  # noqa: E402
from parity.cli import main  # noqa: E402
from parity.errors import EXIT_OK  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

# Runs `parity ARGS` with TensorFlow made unimportable, then prints which heavy modules got loaded.
PROBE = textwrap.dedent("""
    import importlib.abc, json, sys

    class NoTensorFlow(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in ("tensorflow", "keras", "tf_keras"):
                raise ImportError(f"{name} is blocked by the test")
            return None

    if sys.argv[1] == "block-tf":
        sys.meta_path.insert(0, NoTensorFlow())
    from parity.cli import main
    code = main(sys.argv[2:])
    heavy = ("tensorflow", "keras", "torch", "torch._dynamo", "torch._inductor")
    print("LOADED " + json.dumps({"code": code, "loaded": [name for name in heavy if name in sys.modules]}))
""")


def _run(mode: str, *args: str) -> dict:
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", PROBE, mode, *args], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=600)
    lines = [line for line in result.stdout.splitlines() if line.startswith("LOADED ")]
    assert len(lines) == 1, result.stdout + result.stderr
    return json.loads(lines[0].removeprefix("LOADED "))


def test_cases_imports_no_framework():
    assert _run("free", "cases") == {"code": EXIT_OK, "loaded": []}


def test_check_of_a_pinn_case_needs_no_tensorflow_and_no_compiler(tmp_path):
    found = _run("block-tf", "check", "--case", "pinn-n32-single-patch", "--out", str(tmp_path), "--quiet")
    assert found == {"code": EXIT_OK, "loaded": ["torch"]}
    report = json.loads((tmp_path / "pinn-n32-single-patch" / "report.json").read_text())
    weights = next(audit for audit in report["audits"] if audit["name"] == "weights")
    assert weights["passed"] and weights["details"]["mapping"]["source"].startswith("canonical -> torch state_dict")
    torch_state = report["provenance"]["determinism"]["torch"]
    assert torch_state["deterministic_algorithms"] is True and "inductor_deterministic" not in torch_state


@pytest.fixture()
def tf32_off():
    yield
    determinism.allow_tf32(False)


def test_allow_tf32_is_switched_per_command_and_recorded(tmp_path, tf32_off, capsys):
    base = ["check", "--case", "physics-n32-edge-offsets-f64", "--mode", "propagated", "--quiet"]
    assert main([*base, "--allow-tf32", "--out", str(tmp_path / "on")]) == EXIT_OK  # no TF32 on a CPU
    assert main([*base, "--out", str(tmp_path / "off")]) == EXIT_OK
    capsys.readouterr()
    states = {}
    for name in ("on", "off"):
        report = json.loads((tmp_path / name / "physics-n32-edge-offsets-f64" / "report.json").read_text())
        states[name] = report["provenance"]["determinism"]
    assert states["on"]["allow_tf32"] is True and states["off"]["allow_tf32"] is False
    assert states["on"]["torch"]["matmul_allow_tf32"] is True and states["on"]["torch"]["cudnn_allow_tf32"] is True
    assert states["on"]["torch"]["float32_matmul_precision"] == "high"
    assert states["off"]["torch"]["matmul_allow_tf32"] is False
    assert states["off"]["torch"]["float32_matmul_precision"] == "highest"


def test_the_library_sets_the_frameworks_variables_before_an_adapters_module_runs_and_says_when_it_could_not(
        tmp_path):
    (tmp_path / "env_probe.py").write_text(textwrap.dedent("""
        import os
        SEEN = os.environ.get("TF_ENABLE_ONEDNN_OPTS")  # what TensorFlow would read if this module imported it
        from backends.torch import TorchBackend

        class Probe(TorchBackend):
            pass
    """))
    script = textwrap.dedent("""
        import json, sys
        if sys.argv[1] == "torch first":
            import torch  # the host program imported a framework before the harness
        from parity import load_adapter
        from backends.common import determinism
        load_adapter("env_probe:Probe")
        import env_probe
        print(json.dumps([env_probe.SEEN, determinism.record()["imported_before_the_switch"]]))
    """)
    environment = {key: value for key, value in os.environ.items() if key != "TF_ENABLE_ONEDNN_OPTS"}
    environment["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(tmp_path)])
    for order, loaded_first in (("harness first", []), ("torch first", ["torch"])):
        result = subprocess.run([sys.executable, "-c", script, order], cwd=tmp_path, capture_output=True, text=True,
                                timeout=120, env=environment)
        assert result.returncode == 0, result.stderr[-2000:]
        assert json.loads(result.stdout.splitlines()[-1]) == ["0", loaded_first]
