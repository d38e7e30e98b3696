"""The terminal report prints what adapters and users wrote as text: ``[...]`` is never markup."""

from __future__ import annotations

import dataclasses
import io

from rich.console import Console

from backends.torch import TorchBackend
from parity.builtin_cases import builtin_case
from parity.report import cases_table, make_console, print_report
from parity.runner import run_case
from parity.workflows import cast_case, tolerance_table


def test_brackets_in_names_and_reasons_print_verbatim(monkeypatch):
    case = builtin_case("physics-default")
    case = cast_case(dataclasses.replace(case, name="acme[port]"), case.config.replace(N=32))
    report = run_case(case, TorchBackend(), TorchBackend(), tolerance_table(None))
    report.stopped = "the adapter said: never cropped [see design doc] [/acme/ptycho#12]"
    buffer = io.StringIO()
    monkeypatch.setattr("parity.report.Console", lambda **kw: Console(file=buffer, **kw) if kw else Console(file=buffer))
    monkeypatch.setattr("parity.report._Console", lambda **kw: Console(file=buffer, **kw))
    console = make_console()
    print_report(report, console)  # a "[/...]" read as a closing tag raised MarkupError here
    console.print(cases_table([report]))
    text = buffer.getvalue()
    assert "never cropped [see design doc] [/acme/ptycho#12]" in text
    assert "acme[port]  [physics, float32, torch vs torch on cpu]" in text
    assert text.count("acme[port]") >= 2


def test_a_tap_failing_on_a_region_only_is_starred_and_the_region_named():
    from backends.torch import stages

    case = builtin_case("physics-default")
    case = cast_case(case, case.config.replace(N=32))

    def canvas_off_where_covered(ctx, patches, offsets):  # the covered region's values are a few units
        canvas = stages.object_canvas(ctx, patches, offsets)
        return canvas + 2e-5 * (canvas.abs() < 6).to(canvas.dtype)

    candidate = TorchBackend().with_stage("object_canvas", canvas_off_where_covered)
    report = run_case(case, TorchBackend(), candidate, tolerance_table(None))
    canvas = report.tap("object.canvas").modes["propagated"]
    assert not canvas.passed and canvas.metrics.max_rel_to_peak < 1e-6  # the tap-wide number passes
    buffer = io.StringIO()
    print_report(report, Console(file=buffer, width=120, markup=False))
    text = buffer.getvalue()
    row = next(line for line in text.splitlines() if " object.canvas " in line)
    assert "*" in row and "FAIL" in row
    assert "* object.canvas (propagated) fails on region covered: max |a-b| / max |a| = " in text


def _saved(folder, text):
    folder.mkdir()
    (folder / "report.json").write_text(text)
    return folder


def test_hostile_saved_reports_are_bad_input_for_report_and_diff(tmp_path):
    from parity.cli import main
    from parity.errors import EXIT_BAD_INPUT

    header = '{"schema": "ptycho-parity/report", "schema_version": 1, '
    hostile = {"bigint": header + '"x": ' + "9" * 5001 + "}", "deep": "[" * 100_000 + "]" * 100_000,
               "wrongtypes": header + '"case": 3, "taps": 7, "audits": "no"}',
               "bare nan": header + '"passed": NaN, "taps": [], "audits": []}',
               "passed as text": header + '"passed": "yes", "case": {"name": "c"}, "taps": [], "audits": []}',
               "taps of junk": header + '"passed": true, "case": {"name": "c"}, "taps": [1, "x"], "audits": []}'}
    for name, text in hostile.items():
        folder = _saved(tmp_path / name, text)
        assert main(["report", str(folder)]) == EXIT_BAD_INPUT, name
        assert main(["diff", str(folder), str(folder)]) == EXIT_BAD_INPUT, name


def test_a_diagnosis_reads_the_same_live_and_from_the_report_document():
    """The pytest message merges both sources: one diagnosis must print once, not twice in two spellings."""
    from parity.diagnosis import Diagnosis
    from parity.jsonable import to_jsonable
    from parity.pytest_runs import _render_diagnosis, diagnosis_text

    live = Diagnosis("scale", "candidate = reference x 64 (= N)", 1.5e-8)
    assert _render_diagnosis(live) == diagnosis_text(to_jsonable(live)) == (
        "scale: candidate = reference x 64 (= N) [residual 1.5e-08]")


def test_diff_refuses_two_reports_of_one_case_in_a_run_folder(tmp_path):
    """A copy (case.bak/) beside the case folder would otherwise hide one of them, whichever sorts last."""
    import shutil

    from parity.cli import main
    from parity.errors import EXIT_BAD_INPUT

    run = tmp_path / "run"
    assert main(["run", "--case", "physics-n32-g3-buffer", "--reference", "torch", "--quiet", "--out", str(run)]) == 0
    shutil.copytree(run / "physics-n32-g3-buffer", run / "physics-n32-g3-buffer.bak")
    assert main(["diff", str(run), str(run)]) == EXIT_BAD_INPUT
