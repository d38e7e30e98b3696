"""A candidate that computes taps from the pipeline's own inputs (a whole forward behind one ``@tap("*")``
method, as docs/adapters.md offers): its isolated run is its propagated one, so it is judged by the propagated
tolerance, and a diagnosis never reruns the reference's stage on inputs that stage does not read."""

from __future__ import annotations

import numpy as np

from backends.torch import TorchBackend
from parity import PluginAdapter, RunOptions, builtin_case, load_tolerances, run_case, tap

PIPELINE_INPUTS = ("X", "positions", "probe")


class WholeForward(PluginAdapter):
    """The built-in Torch backend's whole pinn forward, every tap from X, positions and probe."""

    frameworks = ("numpy",)
    swap_offsets = False

    def setup(self, cfg, weights):
        self.cfg, self.weights, self.model, self.cache = cfg, weights, TorchBackend("cpu"), None

    @tap("*", inputs=PIPELINE_INPUTS)
    def forward(self, X, positions, probe, tap):
        key = (id(X), id(positions), id(probe))
        if self.cache is None or self.cache[0] != key:
            offsets = np.asarray(positions)[..., ::-1].copy() if self.swap_offsets else np.asarray(positions)
            inputs = {"X": np.asarray(X), "positions": offsets, "probe": np.asarray(probe)}
            self.cache = key, self.model.run_all("pinn", self.cfg, inputs, self.weights)
        return self.cache[1][tap]


class SwapsOffsets(WholeForward):
    swap_offsets = True


def _case():
    return builtin_case("pinn-default").with_config(N=32)


def _tolerances(folder, isolated: float, propagated: float):
    table = folder / "tolerances.toml"
    table.write_text(f"schema = 1\n[default]\nmax_rel_to_peak = {propagated}\n"
                     f"[[rule]]\ntaps = [\"*\"]\nmode = \"isolated\"\nmax_rel_to_peak = {isolated}\n")
    return load_tolerances(table)


def test_taps_computed_from_the_pipeline_inputs_are_judged_by_the_propagated_tolerance_in_isolated_mode(tmp_path):
    report = run_case(_case(), TorchBackend("cpu"), WholeForward(), _tolerances(tmp_path, isolated=1e-9, propagated=1e-5),
                      RunOptions())
    canvas = report.tap("object.canvas").modes["isolated"]
    assert canvas.tolerance.criteria.max_rel_to_peak == 1e-5, canvas.tolerance
    assert "from the pipeline's inputs (X, positions, probe)" in canvas.note
    scaled = report.tap("input.scaled").modes["isolated"]  # its stage reads the pipeline's inputs: a stage's tolerance
    assert scaled.tolerance.criteria.max_rel_to_peak == 1e-9 and "pipeline's inputs" not in (scaled.note or "")
    assert report.passed


def test_a_fused_forward_is_diagnosed_without_rerunning_the_reference_on_inputs_its_stage_does_not_read(tmp_path):
    report = run_case(_case(), TorchBackend("cpu"), SwapsOffsets(), _tolerances(tmp_path, isolated=1e-6, propagated=1e-5),
                      RunOptions())
    assert not report.passed and report.first_divergence.tap == "object.canvas"
    diagnoses = report.tap("object.canvas").modes["isolated"].diagnoses
    text = " ".join(d.summary for d in diagnoses)
    assert "diagnosis_failed" not in {d.kind for d in diagnoses}, text
    assert "computes object.canvas from X, positions, probe" in text and "object.patches" in text, text
