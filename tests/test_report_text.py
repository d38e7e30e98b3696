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
    console = make_console()
    print_report(report, console)  # a "[/...]" read as a closing tag raised MarkupError here
    console.print(cases_table([report]))
    text = buffer.getvalue()
    assert "never cropped [see design doc] [/acme/ptycho#12]" in text
    assert "acme[port]  [physics, float32, torch vs torch on cpu]" in text
    assert text.count("acme[port]") >= 2
