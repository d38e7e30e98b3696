"""Paths a user or an adapter can get wrong: empty option values, an adapter that changes folder."""

from __future__ import annotations

import hashlib
import json

import pytest

from tests.hostile import ROOT, parity_process

SHIPPED = ROOT / "fixtures" / "goldens" / "physics-n32-edge-offsets-f64.h5"


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("argv", [
    ["record", "--case", "physics-n32-edge-offsets-f64", "--goldens", ""],
    ["check", "--case", "physics-n32-edge-offsets-f64", "--tolerances", " "],
    ["calibrate", "--case", "physics-n32-edge-offsets-f64", "--tolerances", "", "--write"],
    ["check", "--case", "physics-n32-edge-offsets-f64", "--out", ""],
    ["run", "--pipeline", "physics", "--inputs", ""],
    ["diff", "", "reports"],
])
def test_an_empty_path_is_refused_not_taken_for_the_shipped_default(tmp_path, argv):
    before = _digest(SHIPPED)
    result = parity_process(*argv, cwd=tmp_path)
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "expected a path, got" in result.stderr and "Traceback" not in result.stderr
    assert _digest(SHIPPED) == before and not any(tmp_path.iterdir())


def test_an_adapter_that_changes_folder_does_not_move_the_run_outputs(tmp_path):
    result = parity_process("check", "--case", "physics-n32-edge-offsets-f64", "--candidate",
                            "tests.hostile_adapters:ChangesFolder", "--out", "out", "--quiet", cwd=tmp_path,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    case = tmp_path / "out" / "physics-n32-edge-offsets-f64"
    assert json.loads((case / "report.json").read_text())["passed"] is True
    assert (case / "report.html").is_file()
