"""``--repeat N``: a candidate that is not bitwise reproducible is named, tap by tap; a deterministic one passes."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("backends.torch", reason="PyTorch (the candidate) is not installed")

from backends.torch import TorchBackend  # noqa: E402
from parity.builtin_cases import builtin_case  # noqa: E402
from parity.cli import main  # noqa: E402
from parity.errors import EXIT_DIVERGED, EXIT_OK  # noqa: E402
from parity.repeat import repeat_check, summary_lines  # noqa: E402

try:
    from tests.nondeterministic_adapter import Nondeterministic
except ImportError:  # tests/ is on sys.path but the repository root is not
    from nondeterministic_adapter import Nondeterministic

CASE = builtin_case("physics-n32-edge-offsets-f64")
DOWNSTREAM = ["farfield", "amplitude", "amplitude.scaled", "intensity"]


def test_the_torch_backend_repeats_bit_for_bit():
    found = repeat_check(CASE, TorchBackend(), runs=3)
    assert found == []
    assert "bitwise identical" in summary_lines(CASE, found, 3)[0]


def test_a_nondeterministic_candidate_is_caught_at_the_tap_that_moves():
    found = repeat_check(CASE, Nondeterministic(), runs=3)
    assert sorted({difference.tap for difference in found}) == sorted(DOWNSTREAM)
    assert {difference.run for difference in found} == {2, 3}
    farfield = next(difference for difference in found if difference.tap == "farfield")
    assert farfield.elements and farfield.elements > 0 and 0 < farfield.max_abs_difference < 1e-3
    assert "not bitwise identical" in farfield.describe()
    lines = summary_lines(CASE, found, 3)
    assert lines[0].startswith("repeat check: NONDETERMINISTIC")


def test_without_kept_arrays_digests_still_catch_it():
    found = repeat_check(CASE, Nondeterministic(), runs=2, keep_bytes=0)
    assert {difference.tap for difference in found} == set(DOWNSTREAM)
    assert all(difference.elements is None for difference in found)


def test_one_run_is_no_check():
    with pytest.raises(ValueError, match="at least 2"):
        repeat_check(CASE, TorchBackend(), runs=1)


@pytest.mark.parametrize(("candidate", "code", "marker"), [
    ("torch", EXIT_OK, "bitwise identical"),
    ("tests.nondeterministic_adapter:Nondeterministic", EXIT_DIVERGED, "NONDETERMINISTIC"),
])
def test_check_with_repeat(tmp_path, capsys, candidate, code, marker):
    args = ["check", "--case", CASE.name, "--candidate", candidate, "--repeat", "2", "--mode", "propagated",
            "--out", str(tmp_path), "--quiet"]
    assert main(args) == code
    out = capsys.readouterr().out
    assert marker in out
    report = json.loads((tmp_path / CASE.name / "report.json").read_text())
    assert any(marker in note for note in report["notes"])
    # the jitter is inside tolerance, but a tap that is not bitwise identical between runs fails: the report,
    # the summary line and `parity diff` say so, not only the notes
    assert report["passed"] is (code == EXIT_OK) and (f"{CASE.name}: PASS" in out) is (code == EXIT_OK)
    page = (tmp_path / CASE.name / "report.html").read_text()
    assert ('No divergence' in page) is (code == EXIT_OK)  # the page says what report.json says
    if code != EXIT_OK:
        assert report["first_divergence"]["tap"] == "farfield"
        farfield = next(tap for tap in report["taps"] if tap["name"] == "farfield")
        assert farfield["modes"]["propagated"]["error_kind"] == "nondeterministic"


def test_a_candidate_that_fails_when_run_again_fails_the_repeat_check(tmp_path, capsys):
    args = ["check", "--case", CASE.name, "--candidate", "tests.nondeterministic_adapter:FailsWhenRepeated",
            "--repeat", "2", "--mode", "propagated", "--out", str(tmp_path), "--quiet"]
    assert main(args) == EXIT_DIVERGED
    report = json.loads((tmp_path / CASE.name / "report.json").read_text())
    assert report["passed"] is False and report["first_divergence"]["mode"] == "repeat"
    assert "a cache the first run left behind" in json.dumps(report["audits"])
