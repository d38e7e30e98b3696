"""Every branch of every stage, and every knob value, is exercised by the built-in cases (issue #9).

A port bug on a path no case takes passes every case. Two proofs: branch coverage of both backends'
forward-model code over the built-in cases (any branch never taken fails), and the port bugs that
hide on degenerate data (offsets ignored with object_big off, per-batch recentring, a doubled probe
mask, softplus's switch point) injected into the built-in cases that were added for them: each
must fail.
"""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import numpy as np
import pytest

from backends.common.config import AMP_ACTIVATIONS, DTYPES, FIELDS
from parity.builtin_cases import BUILTIN_CASES, builtin_case
from parity.runner import RunOptions, run_case

coverage = pytest.importorskip("coverage", reason="coverage.py measures the backends' branches")
pytest.importorskip("backends.tf", reason="TensorFlow (the reference) is not installed")

ROOT = Path(__file__).resolve().parent.parent
FORWARD_MODEL = ["backends/tf/stages.py", "backends/tf/ops.py", "backends/tf/network.py",
                 "backends/torch/stages.py", "backends/torch/ops.py", "backends/torch/network.py"]
# Not forward-model paths: argument checks that raise, and helpers for weight files.
EXCLUDED = ["raise ", r"def get_weights\(", r"def keras_model\(", r"self\.set_weights\(weights\)"]


def _definitions(path: Path) -> set[int]:
    """Lines that run at import (imports, defs, decorators, constants): measured before coverage starts."""
    found: set[int] = set()

    def visit(body):
        for node in body:
            header = isinstance(node, (ast.FunctionDef, ast.ClassDef))  # the signature, not the body
            found.update(range(node.lineno, node.body[0].lineno if header else node.end_lineno + 1))
            found.update(decorator.lineno for decorator in getattr(node, "decorator_list", []))
            if isinstance(node, ast.ClassDef):
                visit(node.body)

    visit(ast.parse(path.read_text()).body)
    return found


def test_every_branch_of_the_forward_model_is_taken_by_the_builtin_cases(reference, candidate):
    measured = coverage.Coverage(branch=True, data_file=None, include=[str(ROOT / path) for path in FORWARD_MODEL])
    for pattern in EXCLUDED:
        measured.exclude(pattern)
    measured.start()
    try:
        for case in BUILTIN_CASES.values():
            for backend in (reference, candidate):
                backend.run_all(case.pipeline, case.config, case.inputs, case.weights)
    finally:
        measured.stop()
    missed = {}
    for path in FORWARD_MODEL:
        analysis = measured._analyze(str(ROOT / path))
        lines = sorted(set(analysis.missing) - _definitions(ROOT / path))
        branches = analysis.missing_branch_arcs()
        if lines or branches:
            missed[path] = {"lines": lines, "branches": {line: sorted(arcs) for line, arcs in branches.items()}}
    assert not missed, f"paths no built-in case takes: {missed}"


def test_every_knob_value_appears_in_a_builtin_case():
    configs = [case.config for case in BUILTIN_CASES.values()]
    for knob, field in FIELDS.items():
        if field.type == "bool":
            assert {getattr(cfg, knob) for cfg in configs} == {True, False}, knob
    pinn = [case.config for case in BUILTIN_CASES.values() if case.pipeline == "pinn"]
    assert {cfg.amp_activation for cfg in pinn} == set(AMP_ACTIVATIONS)
    assert {cfg.dtype for cfg in configs} == set(DTYPES)
    assert any(cfg.C > 1 and not cfg.object_big for cfg in configs), "C > 1 with object_big off"
    assert any(cfg.gaussian_sigma > 0 and cfg.probe_mask for cfg in configs), "smoothing with the disk mask"


@pytest.mark.parametrize("pipeline", ["pinn", "physics"])
def test_some_builtin_case_has_uncentred_offsets(pipeline):
    def uncentred(case):
        positions = np.asarray(case.inputs["positions"], float)
        return case.config.C > 1 and np.abs(positions.mean(axis=-1)).max() > 0.1
    assert any(uncentred(case) for case in BUILTIN_CASES.values() if case.pipeline == pipeline)


HIDDEN_BUGS = [  # (fault of parity/faults.py, built-in case that must expose it, tap it must fail at)
    ("extract-ignores-offsets", "pinn-n32-g2-single-object", "patches.extracted"),
    ("extract-ignores-offsets", "physics-n32-single-object-mask-sigma", "patches.extracted"),
    ("canvas-recentred-per-batch", "physics-n32-edge-offsets-f64", "object.canvas"),
    ("probe-mask-doubled", "physics-n32-single-object-mask-sigma", "exit_wave"),
    ("decoder-softplus-threshold", "pinn-n32-softplus-switch-f64", "decoder.amp"),
    ("intensity-scale-dead", "physics-n32-intensity-scale", "amplitude.scaled"),  # s = 1 in every other physics case
    ("canvas-shared-large-batch", "physics-n32-intensity-scale", "object.canvas"),  # B*C = 64: no other case
    ("canvas-buffer-default", "physics-n32-g3-buffer", "object.canvas"),  # buffer 10 in every other case
]


@pytest.mark.parametrize("fault_id, case_name, tap", HIDDEN_BUGS, ids=[f"{f}-{c}" for f, c, _ in HIDDEN_BUGS])
def test_bugs_that_hide_on_degenerate_data_fail_a_builtin_case(fault_id, case_name, tap, reference, tolerances):
    from parity.faults import fault

    report = run_case(builtin_case(case_name), reference, fault(fault_id).candidate(), tolerances,
                      dataclasses.replace(RunOptions(), diagnose=False))
    assert not report.passed
    assert report.first_divergence.tap == tap, report.first_divergence.headline()
