"""parity calibrate: noise floors measured, tighter tolerances written, looser ones only on request."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

pytest.importorskip("backends.tf", reason="TensorFlow (the reference) is not installed")
from backends.tf import TensorFlowBackend
from backends.torch import TorchBackend
from parity.calibrate import calibrate, round_up
from parity.builtin_cases import builtin_case
from parity.errors import ParityInputError
from parity.tolerances import load_tolerances
from parity.workflows import DEFAULT_TOLERANCES, cast_case

TIGHT_RULE = """
[[rule]]
taps = ["farfield"]
dtype = "float32"
mode = "isolated"
max_rel_to_peak = 1e-20
note = "hand-set, absurdly tight"
"""


@pytest.fixture(scope="module")
def small_case():
    case = builtin_case("physics-default")
    return cast_case(dataclasses.replace(case, name="physics-n32-b1", batch=1), case.config.replace(N=32))


@pytest.fixture()
def table(tmp_path) -> Path:
    path = tmp_path / "tolerances.toml"
    shutil.copy(DEFAULT_TOLERANCES, path)
    path.write_text(path.read_text() + TIGHT_RULE)
    return path


def test_round_up():
    assert round_up(3.2e-6) == 4e-6
    assert round_up(1e-7) == 1e-7
    assert round_up(9.01e-7) == 1e-6


def test_calibrate_proposes_and_writes_only_tighter(small_case, table, tmp_path):
    before = table.read_text()
    result = calibrate([small_case], TensorFlowBackend(), TorchBackend(), table, factor=2.0, out_dir=tmp_path)
    assert table.read_text() == before  # nothing written without --write
    farfield32 = next(m for m in result.measurements
                      if (m.tap, m.dtype, m.mode) == ("farfield", "float32", "isolated"))
    assert 0 < farfield32.sources["float32_vs_float64"] < 1e-6
    assert farfield32.sources["run_twice"] == 0.0  # determinism switch on
    assert farfield32.decision == "looser (kept)" and farfield32.current == 1e-20
    canvas = next(m for m in result.measurements if (m.tap, m.dtype, m.mode) == ("object.canvas", "float32", "propagated"))
    assert canvas.decision == "tighter" and canvas.proposed < 1e-6
    assert (tmp_path / "calibration.json").exists()

    written = calibrate([small_case], TensorFlowBackend(), TorchBackend(), table, factor=2.0, write=True)
    assert written.written
    reread = load_tolerances(table)
    # the tighter proposal is in force, with a note saying how it was obtained
    applied = reread.lookup("object.canvas", "float32", "cpu", "propagated", "physics")
    assert applied.criteria.max_rel_to_peak == canvas.proposed
    assert applied.note.startswith("calibrated") and "float32_vs_float64" in applied.note
    # ... and keeps the standing rule's own check of each region (the last matching rule wins)
    shipped = load_tolerances(DEFAULT_TOLERANCES).lookup("object.canvas", "float32", "cpu", "propagated", "physics")
    assert shipped.criteria.regions and applied.criteria.regions == shipped.criteria.regions
    # the looser proposal was not written: the hand-set 1e-20 still rules
    assert reread.lookup("farfield", "float32", "cpu", "isolated", "physics").criteria.max_rel_to_peak == 1e-20
    # other pipelines and devices are untouched
    assert reread.lookup("object.canvas", "float32", "cuda", "propagated", "physics").criteria.max_rel_to_peak == 1e-6


def test_allow_looser_writes_the_looser_value(small_case, table):
    calibrate([small_case], TensorFlowBackend(), None, table, write=True, allow_looser=True)
    applied = load_tolerances(table).lookup("farfield", "float32", "cpu", "isolated", "physics")
    assert applied.criteria.max_rel_to_peak > 1e-20
    assert "looser (written)" in applied.note


def test_writing_keeps_the_tables_permissions_and_writes_through_a_symlink(small_case, table, tmp_path):
    import os

    table.chmod(0o644)
    link = tmp_path / "link.toml"
    link.symlink_to(table)
    calibrate([small_case], TensorFlowBackend(), None, link, write=True, allow_looser=True)
    assert link.is_symlink() and link.resolve() == table  # the link still names the table, which was updated
    assert "looser (written)" in table.read_text()
    assert table.stat().st_mode & 0o777 == 0o644  # a shared table stays readable by the others
    assert not [path for path in tmp_path.iterdir() if path.name.startswith(".")]  # no temporary left
    table.chmod(0o444)
    before = table.read_text()
    with pytest.raises(ParityInputError, match="is read-only"):
        calibrate([small_case], TensorFlowBackend(), None, table, write=True, allow_looser=True)
    assert table.read_text() == before
    os.chmod(table, 0o644)
