"""Running a case once per pytest session, whichever test (or xdist worker) asks first.

A run is keyed by (case, reference, candidate, device). The first asker runs
it through ``parity.workflows`` and writes the case's ``report.json`` plus a
small record next to the session's other runs; every later asker, in this
process (threads wait on a lock) or in another xdist worker (processes wait
on a file lock), reads that record instead of running the case again. Tests
judge the ``report.json`` document, the format ``docs/report-schema.md``
promises to readers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import importlib.util
import json
import os
import re
import sys
import threading
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .cases import Case
from .errors import ParityInputError
from .pytest_settings import BUILTIN_ADAPTERS, ParitySettings, Reference, parse_reference
from .report import write_json_atomic
from .runner import RunOptions
from .workflows import check_against_golden, open_golden, run_and_write

try:
    import fcntl
except ImportError:  # Windows: each xdist worker runs the cases it needs once (threads still share)
    fcntl = None

SCHEMA = "ptycho-parity/report"
SCHEMA_VERSIONS = (1, 2)
FRAMEWORKS = {"tensorflow": "TensorFlow", "keras": "Keras", "torch": "PyTorch"}


@dataclasses.dataclass
class ParityOutcome:
    """What a test needs from one run: the report document, or why there is none.

    ``report`` is the live ``RunReport`` when the run happened in this process
    (``None`` when another xdist worker ran it); ``document`` is always the
    parsed ``report.json``.
    """

    case: str
    reference: str
    candidate: str
    device: str
    report_path: Path | None = None
    document: dict[str, Any] | None = None
    diagnoses: dict[str, dict[str, list[str]]] = dataclasses.field(default_factory=dict)
    dump_dir: Path | None = None
    skip: str | None = None  # a framework the run needs is not installed here
    error: str | None = None  # bad input, or a crash that is not a parity verdict
    report: Any = None
    error_said_by: str | None = None  # the test that showed ``error`` whole (the others of the case refer to it)

    @property
    def passed(self) -> bool:
        return self.document is not None and bool(self.document.get("passed"))

    @property
    def label(self) -> str:
        return f"{self.case} ({self.reference} vs {self.candidate}, {self.device})"

    def tap(self, name: str) -> dict[str, Any] | None:
        for tap in (self.document or {}).get("taps", []):
            if tap.get("name") == name:
                return tap
        return None

    def candidate_taps_file(self) -> Path | None:
        """The candidate's taps as written by the runner's dump (``RunOptions.dump_dir``)."""
        if self.dump_dir is None:
            return None
        path = self.dump_dir / "taps_candidate.h5"
        return path if path.is_file() else None


def framework_missing(spec: str | None) -> str | None:
    """A clear skip reason when ``spec`` needs TensorFlow / PyTorch and this machine lacks it."""
    if spec is None:
        return None
    module = BUILTIN_ADAPTERS.get(spec)
    if module is None and ":" in spec:
        from . import process_end
        from .guard import DEFAULT_STAGE_TIMEOUT

        try:  # importing the module runs adapter code: its os._exit is refused, a hang timed
            with process_end.running_adapter_code("construct", DEFAULT_STAGE_TIMEOUT):
                importlib.import_module(spec.partition(":")[0])
        except ModuleNotFoundError as error:
            module = (error.name or "").partition(".")[0]
            if module not in FRAMEWORKS:
                return None  # some other missing module: load_adapter reports it as bad input
        except (Exception, SystemExit):  # a broken module, or one that exits: loading the adapter reports it
            return None
        else:
            return None
    if module is None or _installed(module):
        return None
    return (f"{FRAMEWORKS[module]} is not installed here, and {spec!r} needs it; the golden checks "
            f"(--parity-reference golden) run without it")


def _installed(module: str) -> bool:
    if module in sys.modules:
        return sys.modules[module] is not None
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    if not _installed("torch"):
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "x"


def diagnosis_text(item: Any) -> str:
    """A diagnosis (of the report document, or live) as the terminal prints it: "kind: summary [residual r]"."""
    if not isinstance(item, dict):
        item = {"kind": getattr(item, "kind", "diagnosis"), "summary": getattr(item, "summary", None),
                "residual": getattr(item, "residual", None)}
    if not isinstance(item.get("summary"), str):
        return json.dumps(item, sort_keys=True, default=str)
    residual = item.get("residual")
    tail = f" [residual {residual:.1e}]" if isinstance(residual, (int, float)) and residual == residual else ""
    return f"{item.get('kind', 'diagnosis')}: {item['summary']}{tail}"


def _render_diagnosis(item: Any) -> str:
    if isinstance(getattr(item, "summary", None), str) and hasattr(item, "kind"):
        return diagnosis_text(item)  # the same line the report document gives, so one diagnosis prints once
    for attribute in ("headline", "summary", "message"):
        value = getattr(item, attribute, None)
        if isinstance(value, str) and value:
            return value
    if isinstance(item, dict):
        for key in ("headline", "summary", "message", "hypothesis"):
            if isinstance(item.get(key), str):
                return item[key]
        return json.dumps(item, sort_keys=True, default=str)
    return str(item)


def diagnoses_of(report: Any) -> dict[str, dict[str, list[str]]]:
    """Per tap and mode, the diagnosis lines of a live RunReport (``ModeResult.diagnoses`` where it exists)."""
    found: dict[str, dict[str, list[str]]] = {}
    for tap in getattr(report, "taps", []):
        for mode, result in getattr(tap, "modes", {}).items():
            items = getattr(result, "diagnoses", None) or []
            if items:
                found.setdefault(tap.name, {})[mode] = [_render_diagnosis(item) for item in items]
    return found


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        if fcntl is not None:
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(handle, fcntl.LOCK_UN)


def read_document(path: Path) -> dict[str, Any]:
    document = json.loads(path.read_text())
    if document.get("schema") != SCHEMA or document.get("schema_version") not in SCHEMA_VERSIONS:
        raise ParityInputError(f"{path}: schema {document.get('schema')!r} version {document.get('schema_version')!r}; "
                               f"the pytest plugin reads {SCHEMA!r} versions {SCHEMA_VERSIONS}")
    return document


class ParityRuns:
    """The session's runs; ``outcome`` runs a case at most once per session."""

    def __init__(self, settings: ParitySettings, records: Path, out: Path) -> None:
        self.settings = settings
        self.records = records  # shared by every xdist worker of this session
        self.out = out
        self.dump_cases: set[str] | None = None  # None: every case; the plugin narrows it after collection
        self._memo: dict[str, ParityOutcome] = {}
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        self._hashes: dict[Case, str] = {}  # a case's hash covers its inputs: computed once per Case object

    def _hash(self, case: Case) -> str:
        if case not in self._hashes:
            self._hashes[case] = case.hash()
        return self._hashes[case]

    def outcome(self, case: Case | str, reference: str | None = None, candidate: str | None = None,
                device: str | None = None) -> ParityOutcome:
        """The run of ``case`` (a name or a Case) with the session's (or the given) reference and candidate."""
        if isinstance(case, str):
            case = self.settings.case(case)
        ref = self.settings.reference if reference is None else _reference_of(reference)
        cand = candidate or self.settings.candidate or "torch"
        dev = resolve_device(device or self.settings.device)
        pair = _slug(f"{ref.label}-vs-{cand}-{dev}")
        digest = self._hash(case)
        key = f"{pair}/{_slug(case.name)}-{digest}"
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        # A case that shares a selected case's name but not its definition (knobs overridden) gets its own folder.
        registered = self.settings.cases().get(case.name)
        out = self.out / pair if registered is not None and self._hash(registered) == digest else self.out / pair / digest
        with lock:
            if key not in self._memo:
                with _file_lock(self.records / f"{key}.lock"):
                    self._memo[key] = self._load_or_run(case, ref, cand, dev, self.records / f"{key}.json", out)
            return self._memo[key]

    def _load_or_run(self, case: Case, reference: Reference, candidate: str, device: str, record: Path,
                     out: Path) -> ParityOutcome:
        outcome = ParityOutcome(case.name, reference.label, candidate, device)
        if record.is_file():  # another worker ran it
            saved = json.loads(record.read_text())
            outcome.skip, outcome.error, outcome.diagnoses = saved["skip"], saved["error"], saved["diagnoses"]
            outcome.dump_dir = Path(saved["dump_dir"]) if saved["dump_dir"] else None
            if saved["report"]:
                outcome.report_path = Path(saved["report"])
                outcome.document = read_document(outcome.report_path)
            return outcome
        from . import process_end

        process_end.expect_verdict()  # until pytest_sessionfinish says it, adapter code never ends the session with 0
        outcome.skip = framework_missing(reference.adapter) or framework_missing(candidate)
        if outcome.skip is None:
            self._run(case, reference, candidate, device, out, outcome)
        write_json_atomic(record, {
            "skip": outcome.skip, "error": outcome.error, "diagnoses": outcome.diagnoses,
            "report": None if outcome.report_path is None else str(outcome.report_path),
            "dump_dir": None if outcome.dump_dir is None else str(outcome.dump_dir),
            "worker": os.environ.get("PYTEST_XDIST_WORKER", "main"), "pid": os.getpid()})
        return outcome

    def _run(self, case: Case, reference: Reference, candidate: str, device: str, out: Path,
             outcome: ParityOutcome) -> None:
        from .adapters import load_adapter  # adapters import frameworks: only when a test runs

        dump = self.dump_cases is None or case.name in self.dump_cases
        options = RunOptions(dump_dir=out if dump else None)
        try:
            adapter = load_adapter(candidate, device)
            if reference.goldens is not None:
                with open_golden(case, reference.goldens, self.settings.tolerances) as opened:
                    report = check_against_golden(opened, adapter, self.settings.tolerances, options, out)
            else:
                report = run_and_write(case, load_adapter(reference.adapter, "cpu"), adapter,
                                       self.settings.tolerances, options, out)
        except ParityInputError as error:
            outcome.error = f"bad input: {error}"
            return
        except Exception:  # a crash (the reference raised, a harness bug) is reported, never a verdict
            outcome.error = "crashed (not a parity verdict):\n" + traceback.format_exc()
            return
        outcome.report = report
        outcome.report_path = out / case.name / "report.json"
        outcome.document = read_document(outcome.report_path)
        outcome.diagnoses = diagnoses_of(report)
        outcome.dump_dir = out / case.name if dump else None


def _reference_of(spec: str) -> Reference:
    return parse_reference(spec, Path.cwd())
