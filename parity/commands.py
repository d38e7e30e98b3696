"""The commands behind ``parity``: each calls the library on parsed arguments and returns an exit code."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from pathlib import Path

from . import budget
from .errors import EXIT_CRASHED, EXIT_DIVERGED, EXIT_INTERRUPTED, EXIT_OK, ParityInputError, PipelineNotCovered
from .tool_commands import command_bench, command_diff, command_report, command_selftest


def _option_number(option: str, text: str | None) -> float | None:
    """A numeric option, parsed here rather than by argparse so that a bad value is one line, exit 2."""
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        raise ParityInputError(f"{option} {text!r}: expected a number") from None


def _max_memory(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return budget.parse_size(text)
    except ValueError as error:
        raise ParityInputError(f"--max-memory: {error}") from None


def _output_folder(path: str) -> Path:
    """The --out folder, refused up front if it cannot be written (before any comparison runs)."""
    folder = Path(path)
    existing = folder
    try:
        while not existing.exists() and existing != existing.parent:  # nearest existing ancestor
            existing = existing.parent
    except OSError as error:  # a name longer than the file system takes, a loop of links
        raise ParityInputError(f"--out {path}: cannot be used ({error.strerror or error}); expected a folder the "
                               "reports can be written to") from None
    if not existing.is_dir():
        where = "exists and is not a folder" if existing == folder else f"{existing} is a file, not a folder"
        raise ParityInputError(f"--out {path}: {where}; expected a folder the reports can be written to")
    if existing == folder:
        try:  # really create a file: os.access says yes to root on a read-only file system
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError as error:
            raise ParityInputError(f"--out {path}: cannot write there ({error.strerror or error}); expected a "
                                   "writable folder") from None
    elif not os.access(existing, os.W_OK | os.X_OK):
        raise ParityInputError(f"--out {path}: cannot create it, {existing} is not writable (permission denied)")
    return folder


def _modes(choice: str) -> tuple[str, ...]:
    return ("propagated", "isolated") if choice == "both" else (choice,)


def _print(reports, quiet: bool) -> None:
    from .report import make_console, print_report, summary_lines

    console = make_console()
    for report in reports:
        if quiet:
            print(f"{report.case['name']}: " + summary_lines(report)[-1])
        else:
            print_report(report, console)
            console.print()
    if len(reports) > 1 and not quiet:
        from .report import cases_table

        console.print(cases_table(reports))


def _each_case(cases):
    """The cases, one at a time, under a rich progress bar on stderr (gone when done)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    console = Console(stderr=True)
    if not console.is_terminal:  # a CI log, a redirect: no bar (rich before 14.3 printed an empty line even disabled)
        yield from cases
        return
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("cases", total=len(cases))
        for case in cases:
            progress.update(task, description=f"running {case.name}")
            yield case
            progress.advance(task)


def _compare_options(args):
    from .runner import RunOptions

    from .evidence import EvidenceSettings

    return RunOptions(modes=_modes(args.mode), taps=tuple(args.taps) if args.taps else None,
                      dump_dir=Path(args.out) if args.dump_taps else None, spill_bytes=args.chunk_mb << 20,
                      batch_chunk=args.batch_chunk, stage_timeout=args.stage_timeout,
                      evidence=EvidenceSettings(patch_stats_limit=args.patch_stats_limit))


def verdict(reports, deterministic: bool = True) -> int:
    """The exit code of a set of case reports: a reference that failed is a crash (3), never a verdict."""
    crashed = [report for report in reports if report.stop_kind == "reference"]
    for report in crashed:
        print(f"parity: {report.case['name']}: {report.stopped}", file=sys.stderr)
    if crashed:
        print("parity: crashed (exit 3); this is not a parity verdict", file=sys.stderr)
        return EXIT_CRASHED
    if any(report.stop_kind == "interrupted" for report in reports):
        return EXIT_INTERRUPTED
    return EXIT_OK if deterministic and reports and all(report.passed for report in reports) else EXIT_DIVERGED


def command_cases(args) -> int:
    from .builtin_cases import BUILTIN_CASES

    if args.json:
        print(json.dumps([{**case.summary(), "config": case.config.to_dict()} for case in BUILTIN_CASES.values()],
                         indent=2))
        return EXIT_OK
    width = max(len(name) for name in BUILTIN_CASES)
    for case in BUILTIN_CASES.values():
        print(f"{case.name:<{width}}  {case.pipeline:<8}  {case.description}")
    return EXIT_OK


CALIBRATE_RUNS_HELD = 5  # float32, float64, float32 again, the candidate twice


def _chunk_batch(case, limit: int | None, chunk_mb: int | None = None) -> int:
    from backends.common.taps import pipeline_taps

    from .chunks import plan

    # split_global: simulate goes in chunks too (parity.global_taps); an adapter that sends it back to
    # one chunk (it computes the scale its own way) is estimated as chunked
    chunks = plan(case.pipeline, pipeline_taps(case.pipeline, case.config), case.config, case.batch,
                  max_bytes=None if chunk_mb is None else chunk_mb << 20, max_samples=limit, split_global=True)
    return max(stop - start for start, stop in chunks)


def _cases(args) -> tuple[list, list[str]]:
    """The command's cases, every one within the memory limit (the one place every command goes through).

    The limit (``--max-memory`` or the machine's default) also bounds what is read from a user's
    files: their headers are checked against it before any data is inflated.
    """
    from .workflows import choose_cases

    with budget.memory_limit(_max_memory(args.max_memory)):
        if getattr(args, "dataset", None):
            from .dataset_cases import dataset_cases

            if args.inputs or args.cases:
                raise ParityInputError("--dataset excludes --inputs and --case")
            cases, notes = dataset_cases(args.dataset, args.pipeline, args.config, args.assignments, args.weights)
        else:
            user = (args.inputs, args.weights) if hasattr(args, "inputs") else ()
            cases, notes = choose_cases(args.cases, args.config, args.assignments, args.pipeline, *user)
        if getattr(args, "name", None):
            cases = _named(cases, args.name, bool(getattr(args, "dataset", None) or args.inputs),
                           per_pipeline=bool(getattr(args, "dataset", None)))
        for case in cases:
            if args.command == "calibrate":
                budget.check_case(case, config=case.config.replace(dtype="float64"),
                                  reference_copies=CALIBRATE_RUNS_HELD)
            elif args.command == "record":
                budget.check_case(case)  # a golden is written whole
            else:  # runs go in batch chunks: what must fit is one chunk plus what the whole run holds
                budget.check_case(case, chunk_batch=_chunk_batch(case, getattr(args, "batch_chunk", None),
                                                                  getattr(args, "chunk_mb", None)))
    return cases, notes


def _named(cases, name: str, own_inputs: bool, per_pipeline: bool) -> list:
    """``--name``: the case of your own inputs under that name; a dataset's, NAME-<pipeline> (whether one
    pipeline or both run: a golden recorded with both is found by a check of one)."""
    import dataclasses

    if not own_inputs:
        raise ParityInputError("--name names a case of your own (--inputs or --dataset); built-in cases keep theirs")
    return [dataclasses.replace(case, name=f"{name}-{case.pipeline}" if per_pipeline else name) for case in cases]


def command_run(args) -> int:
    from .adapters import load_adapter
    from .workflows import run_and_write, tolerance_table

    cases, notes = _cases(args)
    tolerances = tolerance_table(args.tolerances)
    out = _output_folder(args.out)  # before the adapters load: nothing runs if reports cannot be written
    reference = load_adapter(args.reference, "cpu", _load_timeout(args))
    candidate = load_adapter(args.candidate, args.device, _load_timeout(args))
    reports, skipped = _covered(args, cases, lambda case: run_and_write(case, reference, candidate, tolerances,
                                                                         _compare_options(args), out, notes), out)
    deterministic = _repeat(args, [case for case in cases if case.name not in skipped], reports, candidate, out)
    _print(reports, args.quiet)
    for line in notes:
        print(f"note: {line}")
    _print_case_notes(reports, skip=notes)
    _print_skipped(skipped)
    print(f"reports written under {args.out}/")
    return verdict(reports, deterministic)


def _print_case_notes(reports, skip=()) -> None:
    """Each case's notes, a note shared by several cases once with their names. A knob-at-a-neutral-value note
    is left out where another case of the same pipeline in this command sets that knob otherwise (and passed)."""
    from backends.common.config import NEUTRAL_VALUES

    covered = {(report.pipeline, knob) for report in reports for knob, (value, _) in NEUTRAL_VALUES.items()
               if report.passed and report.config.get(knob, value) != value}
    cases_of: dict[str, list[str]] = {}
    for report in reports:
        for line in report.notes:
            neutral = next((knob for knob in NEUTRAL_VALUES if line.startswith(f"{knob} = ")), None)
            if line not in skip and (neutral is None or (report.pipeline, neutral) not in covered):
                cases_of.setdefault(line, []).append(report.case["name"])
    for line, names in cases_of.items():
        print(f"note: {', '.join(names)}: {line}")


def _covered(args, cases, run_one, out: Path) -> tuple[list, dict[str, PipelineNotCovered]]:
    """Reports of the cases, and those skipped because an adapter cannot run their pipeline.

    Only a run over every built-in case skips (an adapter written for one pipeline meets the others'
    cases there); a case chosen by name or pipeline that cannot run is bad usage (exit 2), as is a
    run in which no case could.
    """
    everything = not args.cases and not args.pipeline and not getattr(args, "inputs", None)
    reports, skipped = [], {}
    for case in _each_case(cases):
        try:
            reports.append(run_one(case))
        except PipelineNotCovered as error:
            if not everything:
                raise
            skipped[case.name] = error
            with contextlib.suppress(OSError):  # the case's folder, made for its log, stays only if used
                (out / case.name).rmdir()
    if skipped and not reports:
        raise PipelineNotCovered("no case could run: " + "; ".join(_skip_lines(skipped)))
    return reports, skipped


def _skip_lines(skipped: dict[str, PipelineNotCovered]) -> list[str]:
    by_reason: dict[tuple[str, str], list[str]] = {}
    for name, error in skipped.items():
        by_reason.setdefault((error.pipeline, error.why), []).append(name)
    return [f"{len(names)} {pipeline} case(s) ({', '.join(names)}): {why}"
            for (pipeline, why), names in by_reason.items()]


def _print_skipped(skipped: dict[str, PipelineNotCovered]) -> None:
    for line in _skip_lines(skipped):
        print(f"skipped {line}")
    if skipped:
        print(f"skipped {len(skipped)} case(s) of pipelines an adapter does not cover (choose cases with --pipeline "
              "or --case); the verdict is the other cases'")


def command_record(args) -> int:
    from .adapters import load_adapter
    from .workflows import goldens_folder, record_golden

    if (args.config or args.assignments or args.inputs or args.dataset) and not args.goldens:
        raise ParityInputError("--set/--config/--inputs/--dataset make cases of your own, and the shipped goldens in "
                               "fixtures/goldens must stay those of the built-in cases; record into another folder "
                               "with --goldens DIR and check with the same options and --goldens")
    cases, _ = _cases(args)
    folder = goldens_folder(args.goldens)  # refused here, before the reference is loaded or run
    reference = load_adapter(args.reference, "cpu", _load_timeout(args))
    for case in cases:
        path = record_golden(case, reference, folder, args.stage_timeout)
        print(f"recorded {case.name} ({case.hash()}) -> {path}")
    return EXIT_OK


def command_check(args) -> int:
    from .adapters import load_adapter
    from .workflows import DEFAULT_GOLDENS, check_against_golden, open_golden, tolerance_table

    cases, _ = _cases(args)
    tolerances = tolerance_table(args.tolerances)
    if args.cases:  # named cases: all of their goldens, before the first runs (over every case, a pipeline the
        _goldens_present(cases, Path(args.goldens or DEFAULT_GOLDENS))  # port does not cover is skipped instead)
    out = _output_folder(args.out)
    candidate = load_adapter(args.candidate, args.device, _load_timeout(args))
    def check_one(case):  # the candidate runs on the inputs stored in each golden
        with open_golden(case, args.goldens or DEFAULT_GOLDENS, tolerances) as opened:
            return check_against_golden(opened, candidate, tolerances, _compare_options(args), out)

    reports, skipped = _covered(args, cases, check_one, out)
    deterministic = _repeat(args, [case for case in cases if case.name not in skipped], reports, candidate, out)
    _print(reports, args.quiet)
    _print_case_notes(reports)
    _print_skipped(skipped)
    print(f"reports written under {args.out}/")
    return verdict(reports, deterministic)


def _goldens_present(cases, folder: Path) -> None:
    from .goldens import golden_path

    missing = [case.name for case in cases if not golden_path(folder, case.name).exists()]
    if missing:
        raise ParityInputError(f"{folder}: no golden file for {', '.join(missing)} (expected <case>.h5 there); "
                               f"record them with `parity record` (and --goldens {folder} for a folder of your own), "
                               "or leave those cases out")


def _repeat(args, cases, reports, candidate, out: Path) -> bool:
    """``--repeat N``: the candidate's nondeterminism check per case, noted in its report; False if any."""
    if args.repeat < 2:
        return True
    from backends.common.taps import pipeline_taps

    from .guard import AdapterFault, Guard
    from .repeat import judge_repeats, repeat_check, summary_lines
    from .report import rewrite_report

    clean = True
    for case, report in zip(cases, reports):
        if report.stop_kind is not None:  # the run itself did not finish: nothing to repeat against
            continue
        guard = Guard("candidate", None, getattr(args, "stage_timeout", None))
        try:
            found, fault = repeat_check(case, candidate, args.repeat, guard=guard), None
        except AdapterFault as error:
            found, fault = [], str(error)
        finally:
            guard.close()
        lines = summary_lines(case, found, args.repeat, fault)
        judge_repeats(report, found, lines, fault, pipeline_taps(case.pipeline, case.config))
        rewrite_report(report, out / case.name)  # report.json and its page: the verdict may have changed
        print("\n".join(lines))
        clean = clean and not found and fault is None
    return clean


def command_calibrate(args) -> int:
    from .adapters import load_adapter
    from .calibrate import calibrate, print_calibration, validate_calibration
    from .tolerances import load_tolerances
    from .workflows import DEFAULT_TOLERANCES, refuse_installed_fixtures

    factor, floor = _option_number("--factor", args.factor), _option_number("--floor", args.floor)
    validate_calibration(factor, floor)
    if args.write and not args.tolerances:
        refuse_installed_fixtures("calibrate --write", "--tolerances FILE.toml", "tolerance table",
                                  DEFAULT_TOLERANCES)
    cases, _ = _cases(args)
    load_tolerances(args.tolerances or DEFAULT_TOLERANCES)  # a bad table is refused before anything runs
    if args.write:  # and one that cannot be replaced (read-only, a folder that takes no file), before the measuring
        from .atomic_files import replaceable_file

        replaceable_file(Path(args.tolerances or DEFAULT_TOLERANCES), "tolerance table", "--tolerances")
    out = _output_folder(args.out)
    reference = load_adapter(args.reference, "cpu", _load_timeout(args))
    candidate = load_adapter(args.candidate, "cpu", _load_timeout(args)) if args.candidate else None
    result = calibrate(cases, reference, candidate, Path(args.tolerances or DEFAULT_TOLERANCES), factor=factor,
                       floor=floor, write=args.write, allow_looser=args.allow_looser, out_dir=out)
    print_calibration(result)
    return EXIT_OK


COMMANDS = {"cases": command_cases, "run": command_run, "record": command_record, "check": command_check,
            "calibrate": command_calibrate, "report": command_report, "diff": command_diff,
            "bench": command_bench, "selftest": command_selftest}


def _load_timeout(args) -> float | None:
    """Importing and building an adapter may take as long as a stage (``--stage-timeout``) before the
    watcher ends the command."""
    return getattr(args, "stage_timeout", None)
