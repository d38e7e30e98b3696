"""The goldens shipped in ``fixtures/goldens`` pass ``check``, here and on a machine that rounds differently.

A stale golden (a case's definition changed without a re-record) or an
unportable one (inputs or weights that another CPU would regenerate
differently) cannot land: the first test checks every built-in case, as
``parity check`` does on a GPU machine, in a process where TensorFlow cannot
be imported. The others simulate another machine by moving the regenerated
inputs by one ulp: the check must still pass, on the golden's inputs, and say
so. Torch only; this module never imports TensorFlow.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("backends.torch", reason="PyTorch (the candidate) is not installed")

from parity.cases import VersionedBuilder
from parity.builtin_cases import BUILTIN_CASES  # noqa: E402
from parity.errors import EXIT_OK  # noqa: E402
from parity.runner import run_case  # noqa: E402
from parity.workflows import DEFAULT_GOLDENS, open_golden, tolerance_table  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MAX_GOLDEN_BYTES = 5 << 20

# `parity check` with every TensorFlow / Keras import refused, as on a machine without them.
WITHOUT_TENSORFLOW = textwrap.dedent("""
    import importlib.abc, importlib.machinery, sys

    class _Refuse(importlib.abc.Loader):
        def create_module(self, spec):
            raise ModuleNotFoundError(f"No module named {spec.name!r} (blocked)", name=spec.name)

        def exec_module(self, module):
            raise AssertionError("unreachable")

    class _Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in ("tensorflow", "keras", "tf_keras"):
                return importlib.machinery.ModuleSpec(name, _Refuse(), origin=None)
            return None

    sys.meta_path.insert(0, _Block())
    from parity.cli import main
    code = main(sys.argv[1:])
    loaded = sorted(name for name in sys.modules if name.partition(".")[0] in ("tensorflow", "keras"))
    print("LOADED-TF " + ",".join(loaded), file=sys.stderr)
    sys.exit(code)
""")


def test_every_shipped_golden_is_small_and_there_is_one_per_builtin_case():
    shipped = sorted(path.stem for path in DEFAULT_GOLDENS.glob("*.h5"))
    assert shipped == sorted(BUILTIN_CASES)
    for path in DEFAULT_GOLDENS.glob("*.h5"):
        assert path.stat().st_size < MAX_GOLDEN_BYTES, path


def test_check_passes_for_every_builtin_case_against_the_shipped_goldens(tmp_path):
    out = tmp_path / "check"
    result = subprocess.run([sys.executable, "-c", WITHOUT_TENSORFLOW, "check", "--candidate", "torch",
                             "--out", str(out), "--quiet"], cwd=ROOT, env=os.environ | {"PYTHONPATH": str(ROOT)},
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == EXIT_OK, result.stdout + result.stderr
    assert "LOADED-TF \n" in result.stderr or result.stderr.rstrip().endswith("LOADED-TF"), result.stderr
    for name, case in BUILTIN_CASES.items():
        report = json.loads((out / name / "report.json").read_text())
        assert report["passed"] is True, (name, report["first_divergence"])
        assert report["case"]["hash"] == case.hash()
        assert report["reference"]["name"] == "golden"
        inputs = report["reference"]["inputs"]  # identical here; within tolerance on another CPU
        assert inputs["source"] == "golden" and inputs["regenerated"] in ("identical", "within tolerance"), name
        assert f"{name}: PASS" in result.stdout


def _one_ulp_elsewhere(case):
    """``case`` as another CPU would regenerate it: every float of every input one ulp up (same builder version)."""
    original = case.build_inputs

    def build(c):
        moved = {}
        for name, value in original(c).items():
            value = np.array(value, copy=True, order="C")
            parts = value.view(value.real.dtype) if value.dtype.kind == "c" else value
            parts[...] = np.nextafter(parts, np.inf)
            moved[name] = value
        return moved

    return dataclasses.replace(case, build_inputs=VersionedBuilder(build, original.version))


@pytest.mark.parametrize("name", ["simulate-n32-f64", "physics-n32-edge-offsets-f64", "physics-fly001-moon"])
def test_check_on_a_machine_that_rounds_differently_passes_and_reports_the_drift(name, candidate):
    """The three float64 cases the issue saw refused as stale, and a float32 one."""
    elsewhere = _one_ulp_elsewhere(BUILTIN_CASES[name])
    tolerances = tolerance_table(None)
    with open_golden(elsewhere, DEFAULT_GOLDENS, tolerances) as opened:
        stored = opened.golden.inputs()
        for key, value in elsewhere.inputs.items():  # the regenerated inputs do differ ...
            assert not np.array_equal(value, stored[key]), key
            assert np.array_equal(opened.case.inputs[key], stored[key]), key  # ... and the golden's are used
        assert opened.drift.status == "within tolerance"
        assert sorted(row["input"] for row in opened.drift.differences) == sorted(stored)
        # a few ulps for float64: numpy and scipy builds (1.26 / 1.11) already round the regenerated inputs differently
        bound = 1e-14 if BUILTIN_CASES[name].config.dtype == "float64" else 1e-6
        assert all(0 < row["max_rel_to_peak"] <= bound for row in opened.drift.differences)
        [note] = opened.notes
        assert note.startswith("inputs regenerated here differ from the golden's by ")
        assert note.endswith("; the golden's inputs were used") and "of peak (input '" in note
        report = run_case(opened.case, opened.golden, candidate, tolerances)
    assert report.passed, report.first_divergence


def test_goldens_carry_no_path_of_the_machine_that_recorded_them(tmp_path):
    """Goldens travel with the project: neither the shipped ones nor a new one names a folder of the recorder."""
    import h5py

    from backends.torch import TorchBackend
    from parity.workflows import record_golden

    for path in sorted(Path(DEFAULT_GOLDENS).glob("*.h5")):
        with h5py.File(path, "r") as h5:
            provenance = json.loads(h5.attrs["provenance"])
        assert os.sep not in provenance["python_executable"] and "/" not in provenance["python_executable"], path
    written = record_golden(BUILTIN_CASES["simulate-n32-f64"], TorchBackend("cpu"), tmp_path).read_bytes()
    for folder in {str(ROOT), sys.prefix, os.path.dirname(sys.executable), str(tmp_path)}:
        assert folder.encode() not in written, folder
