"""The library calls behind each CLI command: choose cases, run, record, check.

The CLI parses arguments and prints; everything it does is a function here
that tests and the pytest plugin can call directly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from backends.common.config import ConfigError, ForwardConfig, resolve_config
from backends.common.taps import pipeline_taps

from . import provenance, supervise
from .adapters import Adapter, graph_of
from .atomic_files import terminate_as_interrupt, writable_folder
from .audits import contract_problems
from .builtin_cases import select_cases
from .cases import Case, user_case
from .data import fixtures_are_installed, fixtures_dir
from .errors import CorruptGoldenError, ParityInputError, ReferenceFailed
from .guard import DEFAULT_STAGE_TIMEOUT, AdapterFault, Guard
from .evidence import EvidenceCollector
from .golden_inputs import InputDrift, judge_inputs
from .goldens import Golden, GoldenWriter, golden_path, write_golden
from .inputs import (
    check_weights,
    infer_dtype,
    load_inputs,
    load_weights,
    resolve_knobs,
    scan_npz,
    split_keys,
    validate_inputs,
)
from .report import write_case_outputs
from .results import RunReport
from .runner import RunOptions, run_case
from .tolerances import ToleranceTable, load_tolerances

DEFAULT_TOLERANCES = fixtures_dir() / "tolerances.toml"
DEFAULT_GOLDENS = fixtures_dir() / "goldens"


SHIPPED_TOLERANCES_LABEL = "shipped fixtures/tolerances.toml"  # how reports name the default table (no machine path)


def tolerance_table(path: str | Path | None) -> ToleranceTable:
    """The table at ``path``, or the shipped one, named in reports as SHIPPED_TOLERANCES_LABEL wherever it lies."""
    if path:
        return load_tolerances(path)
    return dataclasses.replace(load_tolerances(DEFAULT_TOLERANCES), path=SHIPPED_TOLERANCES_LABEL)


def cast_case(case: Case, cfg: ForwardConfig) -> Case:
    """``case`` under ``cfg``; user inputs/weights are cast to its dtype."""
    if cfg == case.config:
        return case
    clone = dataclasses.replace(case, config=cfg)
    if "user" in case.tags:
        inputs = {name: value.astype(cfg.complex_dtype if value.dtype.kind == "c" else cfg.dtype)
                  for name, value in case.inputs.items()}
        clone = dataclasses.replace(clone, build_inputs=lambda _: dict(inputs))
    if case.provided_weights is not None:
        clone = dataclasses.replace(clone, provided_weights={k: v.astype(cfg.dtype)
                                                             for k, v in case.provided_weights.items()})
    return clone


def _odd_dtype_notes(inputs_file: str, arrays: Mapping[str, Any], dtype: str) -> list[str]:
    """Inputs stored as neither 32- nor 64-bit floats: what the cast to the run's dtype does to them."""
    notes = []
    for key, header in arrays.items():
        stored = np.dtype(header.dtype)
        if stored.kind in "fc" and stored.itemsize * (2 if stored.kind == "f" else 1) not in (8, 16):
            target = np.dtype(dtype) if stored.kind == "f" else np.result_type(np.dtype(dtype), np.complex64)
            effect = "rounded (precision is lost)" if stored.itemsize > target.itemsize else "widened"
            notes.append(f"{inputs_file}: key {key!r} is {stored.name}, {effect} to {target.name}")
    return notes


def choose_cases(names: Sequence[str] | None, config_file: str | None = None, assignments: Sequence[str] = (),
                 pipeline: str | None = None, inputs_file: str | None = None, weights_file: str | None = None,
                 ) -> tuple[list[Case], list[str]]:
    """Built-in cases (knob overrides applied) or one case from a user's inputs file; plus notes."""
    notes: list[str] = []
    if inputs_file:
        if names:
            raise ParityInputError("--case and --inputs exclude each other")
        if not pipeline:
            raise ParityInputError("--inputs needs --pipeline {pinn,physics,simulate}")
        arrays = scan_npz(inputs_file)  # headers only: data is read once shapes and sizes are checked
        dtype, rounded = infer_dtype(split_keys(pipeline, arrays)[0])
        cfg = resolve_knobs(config_file, assignments, defaults={"dtype": dtype})
        if cfg.dtype == "float32" and rounded:
            notes.append(f"{inputs_file}: {rounded} are 64-bit and are rounded to the float32 run "
                         "(--set dtype=float64 keeps them)")
        elif cfg.dtype != dtype:
            notes.append(f"{inputs_file}: inputs are {dtype}, cast to dtype={cfg.dtype} as set")
        notes += _odd_dtype_notes(inputs_file, split_keys(pipeline, arrays)[0], cfg.dtype)
        inputs, ignored = load_inputs(inputs_file, pipeline, cfg, arrays)
        if ignored:
            shown = f"{ignored[:10]}" + (f" and {len(ignored) - 10} more" if len(ignored) > 10 else "")
            notes.append(f"{inputs_file}: ignored keys {shown} (not inputs of pipeline {pipeline!r})")
        weights = None
        if weights_file:
            if pipeline != "pinn":
                raise ParityInputError(f"--weights is only for the pinn pipeline, not {pipeline!r}")
            weights = load_weights(weights_file, cfg)
        elif pipeline == "pinn":
            notes.append("no --weights: using the seeded Glorot initialisation (seed 0)")
        name = f"user-{Path(inputs_file).name.removesuffix('.npz')}"
        # the file's name only: the description travels in goldens, where a machine's path must not
        return [user_case(name, pipeline, cfg, inputs, weights, f"inputs from {Path(inputs_file).name}")], notes
    if weights_file:
        raise ParityInputError("--weights needs --inputs (built-in cases carry their own weights)")
    cases = select_cases(list(names) if names else None)
    if pipeline:
        cases = [case for case in cases if case.pipeline == pipeline]
        if not cases:
            raise ParityInputError(f"--pipeline {pipeline}: none of the selected cases "
                                   f"{list(names) if names else 'built-in'} runs that pipeline")
    if config_file or assignments:
        cases = [cast_case(case, resolve_knobs(config_file, assignments, base=case.config)) for case in cases]
    return cases, notes


def case_from_arrays(name: str, pipeline: str, inputs: Mapping[str, object], *,
                     weights: Mapping[str, object] | None = None, config: ForwardConfig | Mapping[str, object] | None = None,
                     description: str = "") -> Case:
    """A case around your own arrays (registry names or the .npz aliases), checked as ``--inputs`` files are.

    ``config``: a ``ForwardConfig`` or knob values (``{"N": 32}``); the dtype defaults to the inputs'.
    ``weights`` (pinn only): canonical names, as ``--weights`` takes them; without, the seeded ones.
    """
    where = f"inputs of case {name!r}"
    arrays = {key: np.asarray(value) for key, value in inputs.items()}
    known, ignored = split_keys(pipeline, arrays)
    if ignored:
        raise ParityInputError(f"{where}: keys {ignored} are not inputs of the {pipeline!r} pipeline; expected "
                               f"{sorted(known) or 'its inputs'}")
    if isinstance(config, ForwardConfig):
        cfg = config
    else:
        knobs = dict(config or {})
        knobs.setdefault("dtype", infer_dtype(known)[0])
        try:
            cfg = resolve_config(knobs)
        except ConfigError as error:
            raise ParityInputError(f"config of case {name!r}: {error}") from None
    validated = validate_inputs(where, pipeline, cfg, arrays)
    checked = None
    if weights is not None:
        if pipeline != "pinn":
            raise ParityInputError(f"{where}: weights are only for the pinn pipeline, not {pipeline!r}")
        checked = check_weights(f"weights of case {name!r}", {key: np.asarray(value) for key, value in weights.items()},
                                cfg)
    return user_case(name, pipeline, cfg, validated, checked, description or f"case_from_arrays({name!r})")


def run_and_write(case: Case, reference: Adapter | Golden, candidate: Adapter, tolerances: ToleranceTable,
                  options: RunOptions, out_dir: Path, notes: Sequence[str] = (),
                  reference_extra: Mapping[str, object] | None = None) -> RunReport:
    case_dir = writable_folder(out_dir / case.name, "case's report folder", "--out")  # exit 2, not a crash later
    if options.dump_dir is not None:
        options = dataclasses.replace(options, dump_dir=case_dir)
    log_path = case_dir / "adapter.log"
    if log_path.exists():
        log_path.unlink()
    options = dataclasses.replace(options, log_path=log_path)
    evidence = EvidenceCollector.for_case(case, options.evidence)  # samples, statistics, assembly dumps
    supervise.case_started(case, case_dir)
    report = run_case(case, reference, candidate, tolerances, options, observers=[evidence] if evidence else [])
    report.notes.extend(notes)
    report.reference.update(reference_extra or {})
    write_case_outputs(report, case_dir, evidence)  # report.json, evidence files, report.html
    supervise.case_done(case_dir)
    return report


def goldens_folder(directory: str | Path | None) -> Path:
    """The golden folder for ``record``: created if needed and proven writable, before any reference runs."""
    if directory is None:
        refuse_installed_fixtures("record", "--goldens DIR", "golden folder", DEFAULT_GOLDENS)
    return writable_folder(directory or DEFAULT_GOLDENS, "golden folder", "--goldens")


def refuse_installed_fixtures(command: str, option: str, what: str, target: Path) -> None:
    """The shipped fixtures of an installed harness belong to its package (pip would neither update nor remove
    what a command wrote there): a command that would write into them is asked for a place of the user's own."""
    if fixtures_are_installed():
        raise ParityInputError(f"parity {command}: the shipped {what} {target} is part of the installed package "
                               f"(pip would neither update nor remove what is written there); expected {option}, "
                               "a place of your own")


def record_golden(case: Case, reference: Adapter, directory: str | Path,
                  stage_timeout: float | None = DEFAULT_STAGE_TIMEOUT) -> Path:
    """Run the reference on ``case`` and write ``<directory>/<case>.h5`` atomically.

    The golden is assembled in memory and written in one piece; SIGTERM,
    Ctrl-C, a crash or a refused write (exit 3) leave any earlier golden intact.
    The reference runs under a guard (``parity.guard``): its code raising, hanging past ``stage_timeout``
    without delivering a tap, or exiting is ``ReferenceFailed`` (exit 3, one line), never a traceback.
    """
    path = golden_path(goldens_folder(directory), case.name)

    unprovided = graph_of(reference, case.pipeline, case.config).unprovided

    def fill(h5) -> None:
        writer = GoldenWriter(h5, case, reference.describe(), provenance.collect(reference.device, portable=True), unprovided)
        _run_reference(reference, case, writer, path, stage_timeout)
        problems = [f"reference produced no tap {spec.name!r}" if spec.name not in writer.taps else
                    contract_problems(spec, case.config, case.batch, writer.taps[spec.name])
                    for spec in pipeline_taps(case.pipeline, case.config) if spec.name not in unprovided]
        problems = [problem for problem in problems if problem]
        if problems:  # raising here leaves any earlier golden in place
            raise ParityInputError(f"{path}: not recorded, the reference breaks the tap contract: "
                                   + "; ".join(problems))
        writer.finish()

    with terminate_as_interrupt():
        return write_golden(path, fill)


class _WriterFailed(Exception):
    """Raised into the reference's run to stop it when writing the golden failed (the harness's error, kept)."""


def _run_reference(reference: Adapter, case: Case, writer: Any, path: Path, stage_timeout: float | None) -> None:
    guard = Guard("reference", None, stage_timeout)
    failed: list[BaseException] = []

    def sink(spec, value) -> None:
        guard.tick()
        try:
            writer(spec, value)
        except BaseException as error:  # a full disk, Ctrl-C while writing: the harness's, not the reference's
            failed.append(error)
            raise _WriterFailed() from None

    try:
        guard.call("run_pipeline()", reference.run_pipeline, case.pipeline, case.config, case.inputs, case.weights,
                   sink=sink)
    except AdapterFault as fault:
        if failed:
            raise failed[0] from None
        if fault.kind == "interrupt":
            raise KeyboardInterrupt from None  # Ctrl-C: exit 130, the earlier golden intact
        raise ReferenceFailed(f"{path}: not recorded, the {fault} (any earlier golden there is intact)") from None
    finally:
        guard.close()
    if failed:
        raise failed[0]


@dataclasses.dataclass
class OpenedGolden:
    """A verified, non-stale golden, the case to check on it (running on the golden's inputs) and notes."""

    golden: Golden
    case: Case
    drift: InputDrift
    notes: list[str]

    def close(self) -> None:
        self.golden.close()

    def __enter__(self) -> OpenedGolden:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _missing_own_golden(path: Path, case: Case) -> None:
    """A case of the user's own files is found by its name: say which names the folder holds."""
    held = sorted(entry.name.removesuffix(".h5") for entry in path.parent.glob("*.h5"))[:12]
    where = f"the folder holds goldens of {held}" if held else "the folder holds no golden"
    raise ParityInputError(f"{path}: golden file not found for case {case.name!r} ({where}); a case of your own is "
                           "named user-<inputs file stem> (a dataset's dataset-<stem>-<pipeline>) unless --name sets "
                           "it: check with the --name it was recorded with, or record it with `parity record` and "
                           "the same --inputs/--dataset and --name")


def open_golden(case: Case, directory: str | Path, tolerances: ToleranceTable | None = None) -> OpenedGolden:
    """Open ``<directory>/<case>.h5`` for checking ``case`` (raises ParityInputError, exit 2, otherwise).

    Refuses a corrupt golden, a golden of another definition of the case
    (stale: pipeline, config, seed, batch, input builder, registry, weights)
    and inputs regenerated here that differ from the golden's beyond tolerance.
    The returned case runs on the golden's inputs.
    """
    path = golden_path(directory, case.name)
    if "user" in case.tags and not path.exists() and Path(directory).is_dir():
        _missing_own_golden(path, case)
    golden = Golden(path)
    try:
        golden.check_contents(case)  # shapes before the checksums stream the data (a forged huge dataset)
        golden.verify()
        golden.check_definition(case)
        expected = [spec.name for spec in pipeline_taps(case.pipeline, case.config)]
        recorded = set(golden.h5["taps"]) | set(golden.not_provided)  # what the reference chose not to compute
        if set(expected) != recorded:
            raise CorruptGoldenError(f"{golden.path}: golden taps differ from the registry's: missing "
                                     f"{[name for name in expected if name not in recorded]}, unexpected "
                                     f"{sorted(recorded - set(expected))}; re-record with `parity record`")
        stored = golden.inputs()
        drift = judge_inputs(golden.path, case, stored, tolerances or tolerance_table(None))
    except BaseException:
        golden.close()
        raise
    note = drift.note()
    return OpenedGolden(golden, case.with_inputs(stored), drift, [note] if note else [])


def check_against_golden(opened: OpenedGolden, candidate: Adapter, tolerances: ToleranceTable,
                         options: RunOptions, out_dir: Path) -> RunReport:
    """Judge ``candidate`` against an opened golden; the report says where its inputs came from."""
    return run_and_write(opened.case, opened.golden, candidate, tolerances, options, out_dir, opened.notes,
                         reference_extra={"inputs": opened.drift.to_dict()})
