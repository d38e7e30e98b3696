"""The adapter kit, point by point (issue #7): a user's TF code base and Torch port wrapped with
``parity.PluginAdapter`` and compared for real against the TF reference and each other."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from parity import PluginAdapter, RunOptions, builtin_case, load_adapter, run_case, tap
from parity.cli import main
from parity.errors import EXIT_BAD_INPUT, EXIT_DIVERGED, EXIT_OK, ParityInputError

pytest.importorskip("backends.tf", reason="TensorFlow (the reference) is not installed")

from examples.keras_flat.adapter import LegacyTF  # noqa: E402
from examples.torch_fused.adapter import TorchPort  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = [ROOT / "examples" / "keras_flat" / "adapter.py", ROOT / "examples" / "torch_fused" / "adapter.py"]


@pytest.fixture(scope="module")
def case():
    return builtin_case("physics-fly001-moon").with_config(N=32)


def _statuses(report):
    return {tap.name: tap.status for tap in report.taps}


@pytest.mark.parametrize("adapter", [LegacyTF, TorchPort], ids=["keras-flat", "torch-fused"])
def test_each_example_passes_against_the_tf_reference(adapter, reference, tolerances, case):
    report = run_case(case, reference, adapter(), tolerances)
    assert report.passed, [(tap.name, tap.status, tap.reason) for tap in report.taps]
    statuses = _statuses(report)
    assert statuses["farfield"] == "not_compared" and statuses["amplitude"] == "passed"
    assert "fuses the FFT and the modulus" in report.tap("farfield").reason


def test_the_two_ports_compare_against_each_other(tolerances, case):
    """Neither side is a built-in backend: TF legacy code as reference, the Torch port as candidate."""
    report = run_case(case, LegacyTF(), TorchPort(), tolerances)
    assert report.passed
    farfield = report.tap("farfield")
    assert farfield.status == "not_compared" and "the reference does not provide it" in farfield.reason
    assert report.counts()["not_compared"] == 3  # farfield, object.trimmed, probe.effective


def test_a_reference_without_a_tap_the_candidate_reads_is_judged_propagated_only(tolerances, case, candidate):
    """Point 1 and 8: the built-in Torch amplitude reads farfield, which the legacy reference lacks."""
    report = run_case(case, LegacyTF(), candidate, tolerances)
    amplitude = report.tap("amplitude")
    assert amplitude.modes["propagated"].passed is True
    isolated = amplitude.modes["isolated"]
    assert isolated.status == "not_run" and "the reference does not provide 'farfield'" in isolated.skipped
    assert "judged propagated only" in isolated.skipped and "Unable to" not in isolated.skipped
    assert report.passed


def test_examples_are_short_and_use_only_the_public_api():
    for path in EXAMPLES:
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        assert len(lines) < 40, path
        tree = ast.parse(path.read_text())
        imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level == 0}
        imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        assert not any(name.startswith(("backends", "parity.")) for name in imported), (path, imported)


def test_isolated_mode_localises_a_fault_in_a_port(reference, tolerances, case):
    class Swapped(TorchPort):  # the port reads offsets as (y, x)
        @tap("object.canvas")
        def canvas(self, patches, offsets):
            return self.model.reassemble(patches, offsets.flip(-1))

    report = run_case(case, reference, Swapped(), tolerances)
    assert report.first_divergence.tap == "object.canvas" and report.first_divergence.mode == "isolated"
    assert _statuses(report)["patches.extracted"] == "failed"  # propagated inherits it ...
    assert report.tap("patches.extracted").modes["isolated"].passed  # ... isolated does not


def test_an_override_without_the_decorator_serves_the_same_tap(reference, tolerances, case):
    class Swapped(TorchPort):  # the same fault, written as a plain override of the base's @tap method
        def canvas(self, patches, offsets):
            return self.model.reassemble(patches, offsets.flip(-1))

    report = run_case(case, reference, Swapped(), tolerances)
    assert report.first_divergence.tap == "object.canvas" and report.first_divergence.mode == "isolated"


def test_a_subclass_method_under_another_name_serves_the_tap_its_base_served(reference, tolerances, case):
    class Swapped(TorchPort):  # a bug planted as a new method: it must be the one that runs
        @tap("object.canvas")
        def reassemble_swapped(self, patches, offsets):
            return self.model.reassemble(patches, offsets.flip(-1))

    report = run_case(case, reference, Swapped(), tolerances)
    assert report.first_divergence.tap == "object.canvas" and report.first_divergence.mode == "isolated"


def test_two_methods_of_one_class_for_one_tap_are_refused():
    class Twice(TorchPort):
        @tap("object.canvas")
        def canvas_a(self, patches, offsets):
            return self.model.reassemble(patches, offsets)

        @tap("object.canvas")
        def canvas_b(self, patches, offsets):
            return self.model.reassemble(patches, offsets) * 3

    with pytest.raises(ValueError, match=r"tap 'object.canvas' is declared by two methods of Twice, "
                                         r"canvas_a\(\) and canvas_b\(\)"):
        Twice()


def test_per_knob_audit_compares_what_the_knob_does_not_touch(reference, tolerances, case):
    """Point 6: a port that ignores buffer makes the canvas and everything after it not comparable."""
    class NoBuffer(TorchPort):
        knobs = {"gaussian_sigma": 0.0, "buffer": 0}

    report = run_case(case, reference, NoBuffer(), tolerances)
    assert not report.passed and report.first_divergence.mode == "config"
    assert report.tap("object.canvas").status == "not_comparable"
    assert "buffer differs" in report.tap("object.canvas").reason
    pinn = builtin_case("pinn-n32-single-patch")

    class PinnNoBuffer(PluginAdapter):
        frameworks = ("torch",)
        knobs = {"buffer": 0}

        @tap("input.scaled")
        def scaled(self, X):
            return X / self.cfg.intensity_scale

    report = run_case(pinn, reference, PinnNoBuffer(), tolerances, RunOptions(taps=("input.scaled", "object.*")))
    assert report.tap("input.scaled").status == "passed"  # compared: it does not depend on buffer
    assert report.tap("object.canvas").status == "not_comparable"
    assert not report.passed


def test_an_undeclared_missing_tap_is_not_judged_and_the_run_does_not_pass(reference, tolerances, case):
    class Partial(TorchPort):
        not_provided = {}  # forgot to say why

    report = run_case(case, reference, Partial(), tolerances)
    forgotten = set(TorchPort.not_provided)
    assert all(report.tap(name).status == "unjudged" and "does not say why" in report.tap(name).reason
               for name in forgotten)
    assert all(tap.status == "passed" for tap in report.taps if tap.name not in forgotten)
    assert not report.passed
    assert report.first_divergence.kind == "unjudged" and report.first_divergence.tap == "object.trimmed"
    from parity.report import summary_lines

    verdict = summary_lines(report)[-1]  # "FAIL: 6/6 within tolerance" alone would read as a contradiction
    assert verdict.startswith(f"FAIL ({len(forgotten)} not judged, and no verdict is no pass): "), verdict
    declared = run_case(case, reference, TorchPort(), tolerances)  # the same port, with its reason
    assert declared.passed and declared.tap("farfield").status == "not_compared"


def test_a_pass_without_the_pipeline_output_says_so(reference, tolerances, case):
    class NoOutput(TorchPort):
        not_provided = {**TorchPort.not_provided, "intensity": "not ported yet"}

    report = run_case(case, reference, NoOutput(), tolerances)
    assert report.passed and report.tap("intensity").status == "not_compared"
    note = next(note for note in report.notes if "the last tap, intensity, was not compared" in note)
    assert "not ported yet" in note and "a pass says nothing about the output" in note
    assert not any("the last tap" in note for note in run_case(case, reference, TorchPort(), tolerances).notes)


def test_base_class_supplies_name_device_describe_and_run_stage(case):
    port = TorchPort(device="cpu")
    described = port.describe()
    assert described["name"] == "TorchPort" and described["device"] == "cpu"
    assert described["layouts"]["BHWC"] == "BCHW" and "farfield" in described["not_provided"]
    stage_inputs = {"exit_wave": np.ones((2, 32, 32, 4), np.complex64)}
    amplitude = port.run_stage("amplitude", "physics", case.config, stage_inputs)
    assert amplitude.shape == (2, 32, 32, 4) and amplitude.dtype == np.float32
    assert np.allclose(amplitude.max(), 32 / 32 * 1.0 * 32 / 32 * 32, rtol=1e-6)  # DC of ones: N^2 / N


def test_multi_output_and_glob_taps(reference, tolerances, case):
    class Fused(TorchPort):
        scaled = intensity = None

        @tap("amplitude.scaled", "intensity")
        def both(self, amplitude):
            scaled = self.model.intensity_scale * amplitude
            return scaled, scaled * scaled

    report = run_case(case, reference, Fused(), tolerances)
    assert report.passed and report.tap("intensity").status == "passed"


def test_a_tap_that_reads_what_the_port_never_computes_is_a_clear_error(reference, tolerances, case):
    class Broken(TorchPort):
        @tap("amplitude", inputs=("farfield",))
        def amplitude(self, spectrum):
            return spectrum.abs()

    with pytest.raises(ParityInputError, match=r"tap 'amplitude' reads \['farfield'\], which this adapter does not"):
        run_case(case, reference, Broken(), tolerances)


def test_the_cli_runs_an_example_and_keeps_its_output_out_of_the_table(tmp_path, capfd):
    code = main(["run", "--case", "physics-default", "--set", "N=32", "--candidate",
                 "examples.keras_flat.adapter:LegacyTF", "--out", str(tmp_path)])
    out, _ = capfd.readouterr()
    assert code == EXIT_OK
    assert "2 not compared (not provided)" in out and "farfield: not compared" in out


def test_a_port_with_an_audited_knob_fails_with_the_audit_named_first(tmp_path, capfd):
    code = main(["run", "--case", "physics-n32-edge-offsets-f64", "--candidate",
                 "examples.torch_fused.adapter:TorchPort", "--out", str(tmp_path)])
    out, _ = capfd.readouterr()
    assert code == EXIT_DIVERGED
    summary = out[out.index("config audit"):]
    assert summary.startswith("config audit: candidate resolves gaussian_sigma=0.0")
    assert "5 not comparable (configuration)" in " ".join(summary.split())
    assert "not judged" not in summary


DETERMINISM_PROBE = """
import json, sys
from parity.adapters import load_adapter
load_adapter("tests.kit_adapters:TFOnly")
from backends.common import determinism
state = determinism.record()
print(json.dumps({"tf": state.get("tensorflow"), "builtins": [m for m in sys.modules if m.startswith("backends.tf")]}))
"""


def test_the_determinism_switch_is_applied_for_declared_frameworks_before_adapter_code():
    """Point 9: a plug-in adapter declaring TF gets op determinism without any built-in backend loaded."""
    process = subprocess.run([sys.executable, "-c", DETERMINISM_PROBE], cwd=ROOT, capture_output=True, text=True,
                             env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=240)
    assert process.returncode == 0, process.stderr
    state = json.loads(process.stdout.strip().splitlines()[-1])
    assert state["tf"]["op_determinism"] is True and state["tf"]["tensor_float_32"] is False
    assert state["builtins"] == []
    assert load_adapter("tests.kit_adapters:TFOnly").name == "TFOnly"


def test_a_plug_in_reference_records_goldens_that_say_what_it_leaves_out(tmp_path, capfd):
    goldens = tmp_path / "goldens"
    code = main(["record", "--case", "physics-default", "--set", "N=32", "--reference",
                 "examples.keras_flat.adapter:LegacyTF", "--goldens", str(goldens)])
    assert code == EXIT_OK, capfd.readouterr().err
    code = main(["check", "--case", "physics-default", "--set", "N=32", "--goldens", str(goldens),
                 "--candidate", "examples.torch_fused.adapter:TorchPort", "--out", str(tmp_path / "out")])
    out, err = capfd.readouterr()
    assert code == EXIT_OK, err
    report = json.loads((tmp_path / "out" / "physics-default" / "report.json").read_text())
    farfield = next(tap for tap in report["taps"] if tap["name"] == "farfield")
    assert farfield["status"] == "not_compared"
    assert "the reference does not provide it (diffract() fuses the FFT and the modulus)" in farfield["reason"]


def test_a_run_over_every_case_skips_those_of_pipelines_the_port_does_not_cover(tmp_path, capfd):
    """A physics-only port against every shipped golden: the physics cases are judged, the others skipped
    with the reason; asked for by name, such a case is bad usage naming the case and the way out."""
    from parity.builtin_cases import BUILTIN_CASES

    code = main(["check", "--candidate", "examples.torch_fused.adapter:TorchPort", "--out", str(tmp_path), "--quiet"])
    out, err = capfd.readouterr()
    others = [name for name, case in BUILTIN_CASES.items() if case.pipeline != "physics"]
    assert code == EXIT_DIVERGED, err  # physics-n32-edge-offsets-f64: the port's sigma fails the config audit
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(
        name for name, case in BUILTIN_CASES.items() if case.pipeline == "physics")
    assert "skipped 7 pinn case(s) (pinn-default, " in out and "skipped 3 simulate case(s) (" in out
    assert all(name in out for name in others)
    assert f"skipped {len(others)} case(s)" in out
    # physics-n32-intensity-scale, in this run and passing, sets the knob: the note on the others is left out
    assert out.count("intensity_scale = 1 here") == 0
    code = main(["check", "--case", "pinn-default", "--candidate", "examples.torch_fused.adapter:TorchPort",
                 "--out", str(tmp_path / "named")])
    _, err = capfd.readouterr()
    assert code == EXIT_BAD_INPUT
    assert "case 'pinn-default': the candidate cannot run the pinn pipeline: TorchPort: tap" in err
    assert "--pipeline" in err


def test_a_layout_gets_what_the_tap_returned_in_both_modes(reference, tolerances, case):
    """A Layout written for the port's tensors works in isolated mode too (it was handed numpy there)."""
    import torch

    from parity import Layout

    seen: set[str] = set()

    class TorchOnlyChannelsFirst(Layout):
        def to_port(self, value, canonical_layout, shape):
            return np.moveaxis(value, -1, 1)

        def to_canonical(self, value, canonical_layout, shape):
            seen.add(type(value).__name__)
            return value.permute(0, 2, 3, 1)  # a torch method: numpy has none

    class Port(TorchPort):
        layouts = {**TorchPort.layouts, "exit_wave": TorchOnlyChannelsFirst(), "amplitude": TorchOnlyChannelsFirst()}

    for modes in (("propagated",), ("isolated",)):  # isolated alone: each stage run on its own
        report = run_case(case, reference, Port(), tolerances, RunOptions(modes=modes))
        assert report.passed, (modes, report.first_divergence)
    assert seen == {torch.Tensor.__name__}
