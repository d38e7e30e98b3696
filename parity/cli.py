"""``parity``: a thin command line over the library (see ``parity.workflows``).

Exit codes: 0 parity holds, 1 parity fails, 2 bad usage or bad input,
3 crashed (the reference raised, or a harness bug; traceback on stderr).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import threading
import traceback
from collections.abc import Sequence
from pathlib import Path

from backends.common import determinism
from backends.common.determinism import allow_tf32, apply_environment

from . import budget
from .atomic_files import terminate_as_interrupt
from .errors import (EXIT_BAD_INPUT, EXIT_CRASHED, EXIT_DIVERGED, EXIT_INTERRUPTED, EXIT_OK, ParityInputError,
                     WriteRefusedError)
from .guard import DEFAULT_STAGE_TIMEOUT


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


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
    while not existing.exists() and existing != existing.parent:  # nearest existing ancestor
        existing = existing.parent
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


def _add_case_options(parser: argparse.ArgumentParser, user_inputs: bool = True) -> None:
    parser.add_argument("--case", action="append", dest="cases", metavar="NAME",
                        help="built-in case (repeatable; default: all; see `parity cases`)")
    parser.add_argument("--config", metavar="FILE.toml", help="knobs from a TOML file")
    parser.add_argument("--set", action="append", default=[], metavar="KNOB=VALUE", dest="assignments",
                        help="override one knob (repeatable)")
    parser.add_argument("--pipeline", choices=("pinn", "physics", "simulate"),
                        help="with --inputs: the pipeline; with --case: keep only this pipeline's cases")
    parser.add_argument("--max-memory", metavar="SIZE",
                        help="refuse runs estimated to need more (e.g. 8G; default: "
                             f"{budget.DEFAULT_FRACTION:g} of the available memory)")
    if user_inputs:
        parser.add_argument("--inputs", metavar="FILE.npz", help="your own inputs (spec names as keys)")
        parser.add_argument("--weights", metavar="FILE", help="pinn weights: .npz (canonical names), "
                            ".weights.h5 or .keras")
        parser.add_argument("--dataset", metavar="FILE.npz",
                            help="a PtychoPINN dataset (xcoords, ycoords, diff3d, probeGuess[, objectGuess]); "
                                 "see docs/datasets.md")


def _add_compare_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mode", choices=("both", "propagated", "isolated"), default="both",
                        help="comparison mode(s) (default both)")
    parser.add_argument("--taps", action="append", metavar="GLOB", help="compare only these taps (repeatable)")
    parser.add_argument("--tolerances", metavar="FILE.toml", help="tolerance table (default fixtures/tolerances.toml)")
    parser.add_argument("--out", default="reports", metavar="DIR", help="where report.json files go (default reports/)")
    parser.add_argument("--dump-taps", action="store_true", help="also write both backends' taps to HDF5")
    parser.add_argument("--chunk-mb", type=_positive_int, default=64, help="comparison chunk size per side in MiB")
    parser.add_argument("--batch-chunk", type=_positive_int, default=None, metavar="N",
                        help="run at most N samples at a time (default: sized to keep memory bounded)")
    parser.add_argument("--stage-timeout", type=_positive_float, default=DEFAULT_STAGE_TIMEOUT, metavar="SECONDS",
                        help=f"give up on a stage that runs this long without a result "
                             f"(default {DEFAULT_STAGE_TIMEOUT:g})")
    parser.add_argument("--quiet", action="store_true", help="print only the verdict lines")
    parser.add_argument("--patch-stats-limit", type=_positive_int, default=8, metavar="K",
                        help="batches recorded per tap in patch_stats.json (default 8)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="parity", description="TF-vs-Torch forward parity for PtychoPINN")
    commands = parser.add_subparsers(dest="command", required=True)

    listing = commands.add_parser("cases", help="list the built-in cases")
    listing.add_argument("--json", action="store_true")

    run = commands.add_parser("run", help="run reference and candidate, compare every tap")
    _add_case_options(run)
    run.add_argument("--reference", default="tf", help="adapter: tf, torch or module:attr (default tf)")
    run.add_argument("--candidate", default="torch", help="adapter: tf, torch or module:attr (default torch)")
    run.add_argument("--device", default="cpu", help="candidate device: cpu or cuda[:N] (default cpu)")
    _add_compare_options(run)
    _add_gpu_options(run)

    record = commands.add_parser("record", help="write the reference's taps as golden HDF5 files")
    _add_case_options(record, user_inputs=False)
    record.add_argument("--reference", default="tf")
    record.add_argument("--goldens", metavar="DIR", help="golden folder (default fixtures/goldens)")

    check = commands.add_parser("check", help="compare a candidate against recorded goldens (no TF needed)")
    _add_case_options(check, user_inputs=False)
    check.add_argument("--candidate", default="torch")
    check.add_argument("--device", default="cpu")
    check.add_argument("--goldens", metavar="DIR", help="golden folder (default fixtures/goldens)")
    _add_compare_options(check)
    _add_gpu_options(check)

    calibrate = commands.add_parser("calibrate", help="measure noise floors and propose tolerances")
    _add_case_options(calibrate, user_inputs=False)
    calibrate.add_argument("--reference", default="tf")
    calibrate.add_argument("--candidate", default="torch", help="also run twice to check run-to-run noise")
    calibrate.add_argument("--tolerances", metavar="FILE.toml")
    calibrate.add_argument("--factor", default="10", help="tolerance = factor x noise (>= 1, default 10)")
    calibrate.add_argument("--floor", default=None, help="smallest tolerance, > 0 and < 1 (default per dtype)")
    calibrate.add_argument("--write", action="store_true", help="write tighter tolerances into the file")
    calibrate.add_argument("--allow-looser", action="store_true", help="with --write: also write looser ones")
    calibrate.add_argument("--out", default="reports", metavar="DIR")

    bench = commands.add_parser("bench", help="throughput, harness overhead, peak memory and start-up, in one run")
    bench.add_argument("--pipeline", action="append", dest="pipelines", choices=("pinn", "physics"),
                       help="pipelines of the throughput/overhead sections (default pinn and physics)")
    bench.add_argument("--batch", action="append", dest="batches", type=_positive_int,
                       help="throughput batch (repeatable; default 16 and 64)")
    bench.add_argument("--scaling-batch", action="append", dest="scaling_batches", type=_positive_int,
                       help="physics batches of the scaling section (repeatable; default 256 and 1024)")
    bench.add_argument("--overhead-batch", type=_positive_int, default=64, help="batch of the overhead section")
    bench.add_argument("--repeats", type=_positive_int, default=5, help="timed runs per variant (default 5)")
    bench.add_argument("--warmup", type=int, default=2, help="untimed runs per variant first (default 2)")
    bench.add_argument("--set", action="append", default=[], metavar="KNOB=VALUE", dest="assignments",
                       help="configuration knob (default: the defaults, N=64 gridsize 2 f=2 float32)")
    bench.add_argument("--device", action="append", dest="devices", metavar="DEVICE",
                       help="Torch device (repeatable; default cpu, plus cuda when PyTorch sees a GPU)")
    bench.add_argument("--only", action="append", choices=BENCH_SECTIONS, help="run only these sections")
    bench.add_argument("--skip", action="append", default=[], choices=BENCH_SECTIONS, help="skip a section")
    bench.add_argument("--memory-positions", type=_positive_int, default=4096,
                       help="scan positions of the simulate memory run (default 4096)")
    bench.add_argument("--memory-batch", type=_positive_int, default=1024,
                       help="batch of the physics memory run (default 1024)")
    bench.add_argument("--startup-case", default="pinn-default", help="case of the start-up section's check/run")
    bench.add_argument("--no-tf", action="store_true",
                       help="Torch rows only (GPU sessions: the CPU reference would dominate the time)")
    bench.add_argument("--json", metavar="FILE", help="also write the results as JSON")

    report = commands.add_parser("report", help="re-render report.html from a saved run (no re-run)")
    report.add_argument("folder", metavar="DIR", help="a case folder holding report.json, or an --out folder")

    diff = commands.add_parser("diff", help="compare two saved runs tap by tap; exit 1 if a tap got worse")
    diff.add_argument("run_a", metavar="RUN_A", help="the earlier run: case folder, report.json or --out folder")
    diff.add_argument("run_b", metavar="RUN_B", help="the later run")
    diff.add_argument("--factor", type=float, default=2.0,
                      help="a failing tap got worse when its error / tolerance grew by more than this (default 2)")
    diff.add_argument("--all", action="store_true", help="list unchanged taps too")

    selftest = commands.add_parser("selftest", help="inject known port bugs into the Torch candidate and check "
                                   "that each is detected, localized and diagnosed")
    selftest.add_argument("--seeds", type=_positive_int, default=20,
                          help="seeds per built-in case for the clean candidate (default 20)")
    selftest.add_argument("--fast", action="store_true", help="one seed per built-in case (what `nox -s tests` runs)")
    selftest.add_argument("--only", action="append", metavar="GLOB", help="faults/refactors whose id matches")
    selftest.add_argument("--no-clean", action="store_true", help="skip the clean candidate's runs")
    selftest.add_argument("--out", metavar="DIR", help="also write DIR/selftest.json")
    return parser


BENCH_SECTIONS = ("throughput", "scaling", "overhead", "memory", "startup")


def _add_gpu_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--allow-tf32", action="store_true",
                        help="let float32 matmuls/convolutions use TF32 on GPUs (recorded; fails tight tolerances)")
    parser.add_argument("--repeat", type=_positive_int, default=1, metavar="N",
                        help="also run the candidate N times on each case's inputs and report every tap that is "
                             "not bitwise identical between runs (exit 1 if any)")


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

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task("cases", total=len(cases))
        for case in cases:
            progress.update(task, description=f"running {case.name}")
            yield case
            progress.advance(task)


def _compare_options(args):
    from .runner import RunOptions

    from .evidence import EvidenceSettings

    return RunOptions(modes=_modes(args.mode), taps=tuple(args.taps) if args.taps else None,
                      dump_dir=Path(args.out) if args.dump_taps else None, chunk_bytes=args.chunk_mb << 20,
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
    from .cases import BUILTIN_CASES

    if args.json:
        print(json.dumps([{**case.summary(), "config": case.config.to_dict()} for case in BUILTIN_CASES.values()],
                         indent=2))
        return EXIT_OK
    width = max(len(name) for name in BUILTIN_CASES)
    for case in BUILTIN_CASES.values():
        print(f"{case.name:<{width}}  {case.pipeline:<8}  {case.description}")
    return EXIT_OK


CALIBRATE_RUNS_HELD = 5  # float32, float64, float32 again, the candidate twice


def _chunk_batch(case, limit: int | None) -> int:
    from backends.common.taps import pipeline_taps

    from .chunks import plan

    chunks = plan(case.pipeline, pipeline_taps(case.pipeline, case.config), case.config, case.batch,
                  max_samples=limit)
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
        for case in cases:
            if args.command == "calibrate":
                budget.check_case(case, config=case.config.replace(dtype="float64"),
                                  reference_copies=CALIBRATE_RUNS_HELD)
            elif args.command == "record":
                budget.check_case(case)  # a golden is written whole
            else:  # runs go in batch chunks: what must fit is one chunk plus what the whole run holds
                budget.check_case(case, chunk_batch=_chunk_batch(case, getattr(args, "batch_chunk", None)))
    return cases, notes


def command_run(args) -> int:
    from .adapters import load_adapter
    from .workflows import run_and_write, tolerance_table

    cases, notes = _cases(args)
    tolerances = tolerance_table(args.tolerances)
    out = _output_folder(args.out)  # before the adapters load: nothing runs if reports cannot be written
    reference = load_adapter(args.reference, "cpu")
    candidate = load_adapter(args.candidate, args.device)
    reports = [run_and_write(case, reference, candidate, tolerances, _compare_options(args), out, notes)
               for case in _each_case(cases)]
    deterministic = _repeat(args, cases, reports, candidate, out)
    _print(reports, args.quiet)
    for line in notes:
        print(f"note: {line}")
    print(f"reports written under {args.out}/")
    return verdict(reports, deterministic)


def command_record(args) -> int:
    from .adapters import load_adapter
    from .workflows import goldens_folder, record_golden

    if (args.config or args.assignments) and not args.goldens:
        raise ParityInputError("--set/--config change a case, and the shipped goldens in fixtures/goldens must "
                               "stay those of the built-in cases; record into another folder with --goldens DIR "
                               "and check with the same --set and --goldens")
    cases, _ = _cases(args)
    folder = goldens_folder(args.goldens)  # refused here, before the reference is loaded or run
    reference = load_adapter(args.reference, "cpu")
    for case in cases:
        path = record_golden(case, reference, folder)
        print(f"recorded {case.name} ({case.hash()}) -> {path}")
    return EXIT_OK


def command_check(args) -> int:
    from .adapters import load_adapter
    from .workflows import DEFAULT_GOLDENS, check_against_golden, open_golden, tolerance_table

    cases, _ = _cases(args)
    tolerances = tolerance_table(args.tolerances)
    out = _output_folder(args.out)
    candidate = load_adapter(args.candidate, args.device)
    reports = []
    for case in _each_case(cases):  # the candidate runs on the inputs stored in each golden
        with open_golden(case, args.goldens or DEFAULT_GOLDENS, tolerances) as opened:
            reports.append(check_against_golden(opened, candidate, tolerances, _compare_options(args), out))
    deterministic = _repeat(args, cases, reports, candidate, out)
    _print(reports, args.quiet)
    for report in reports:
        for line in report.notes:
            print(f"note: {report.case['name']}: {line}")
    print(f"reports written under {args.out}/")
    return verdict(reports, deterministic)


def _repeat(args, cases, reports, candidate, out: Path) -> bool:
    """``--repeat N``: the candidate's nondeterminism check per case, noted in its report; False if any."""
    if args.repeat < 2:
        return True
    from .repeat import repeat_check, summary_lines
    from .report import write_report

    clean = True
    for case, report in zip(cases, reports):
        found = repeat_check(case, candidate, args.repeat)
        lines = summary_lines(case, found, args.repeat)
        report.notes.extend(lines)
        write_report(report, out / case.name)
        print("\n".join(lines))
        clean = clean and not found
    return clean


def command_bench(args) -> int:
    from .bench import BenchOptions, run_bench, write_json
    from .bench_table import render
    from .inputs import resolve_knobs
    from .report import make_console

    cfg = resolve_knobs(None, args.assignments)  # validated here: a bad knob is exit 2 before anything runs
    knobs = {knob: mine for knob, (mine, _) in cfg.diff(resolve_knobs(None, [])).items()}
    defaults = BenchOptions()
    sections = tuple(name for name in (args.only or BENCH_SECTIONS) if name not in args.skip)
    options = BenchOptions(pipelines=tuple(args.pipelines or defaults.pipelines),
                           batches=tuple(args.batches or defaults.batches),
                           scaling_batches=tuple(args.scaling_batches or defaults.scaling_batches),
                           overhead_batch=args.overhead_batch, repeats=args.repeats, warmup=max(0, args.warmup),
                           knobs=knobs, devices=tuple(args.devices) if args.devices else None, sections=sections,
                           memory_positions=args.memory_positions, memory_batch=args.memory_batch,
                           startup_case=args.startup_case, tensorflow=not args.no_tf)
    document = run_bench(options, command=args.command_line or ["parity", *sys.argv[1:]])
    render(document, make_console())
    if args.json:
        print(f"bench results written to {write_json(document, args.json)}")
    return EXIT_OK


def command_calibrate(args) -> int:
    from .adapters import load_adapter
    from .calibrate import calibrate, print_calibration, validate_calibration
    from .tolerances import load_tolerances
    from .workflows import DEFAULT_TOLERANCES

    factor, floor = _option_number("--factor", args.factor), _option_number("--floor", args.floor)
    validate_calibration(factor, floor)
    cases, _ = _cases(args)
    load_tolerances(args.tolerances or DEFAULT_TOLERANCES)  # a bad table is refused before anything runs
    out = _output_folder(args.out)
    reference = load_adapter(args.reference, "cpu")
    candidate = load_adapter(args.candidate, "cpu") if args.candidate else None
    result = calibrate(cases, reference, candidate, Path(args.tolerances or DEFAULT_TOLERANCES), factor=factor,
                       floor=floor, write=args.write, allow_looser=args.allow_looser, out_dir=out)
    print_calibration(result)
    return EXIT_OK


def _one_line(error: Exception) -> str:
    """The message on one line: a file name or a TOML error may carry newlines."""
    return " ".join(str(error).split("\n"))



def command_report(args) -> int:
    from .html import write_html
    from .report import load_report

    folder = Path(args.folder)
    folders = [folder] if (folder / "report.json").exists() else sorted(
        child for child in folder.glob("*") if (child / "report.json").exists())
    if not folders:
        raise ParityInputError(f"{folder}: no report.json here nor in any subfolder")
    for case_dir in folders:
        print(f"wrote {write_html(load_report(case_dir), case_dir)}")
    return EXIT_OK


def command_diff(args) -> int:
    from .report import make_console
    from .rundiff import diff_runs, diff_table

    changes, notes = diff_runs(args.run_a, args.run_b, args.factor)
    console = make_console()
    console.print(diff_table(changes, args.all))
    for note in notes:
        print(f"note: {note}")
    worse = [change for change in changes if change.worse]
    counts = {verdict: sum(c.verdict == verdict for c in changes) for verdict in ("worse", "gone", "fixed", "better")}
    print(", ".join(f"{n} {verdict}" for verdict, n in counts.items()) + f" of {len(changes)} tap results")
    return EXIT_DIVERGED if worse else EXIT_OK


def command_selftest(args) -> int:
    from .report import make_console, write_json_atomic
    from .selftest import run_selftest

    console = make_console()
    result = run_selftest(seeds=1 if args.fast else args.seeds, only=args.only, clean=not args.no_clean,
                          progress=lambda row: console.print(f"  {row.status:>7}  {row.kind:<8} {row.id} "
                                                             f"({row.case}, {row.seconds:.1f} s)", highlight=False))
    console.print(result.table())
    for line in result.summary_lines():
        console.print(line, style="green" if line.endswith("PASS") else ("red" if "FAIL" in line else ""),
                      highlight=False)
    if args.out:
        print(f"written {write_json_atomic(Path(args.out) / 'selftest.json', result.to_dict())}")
    return EXIT_OK if result.passed else EXIT_DIVERGED



COMMANDS = {"cases": command_cases, "run": command_run, "record": command_record, "check": command_check,
            "calibrate": command_calibrate, "report": command_report, "diff": command_diff,
            "bench": command_bench, "selftest": command_selftest}


def main(argv: Sequence[str] | None = None) -> int:
    apply_environment()  # before any framework import, so the determinism switch takes effect
    args = build_parser().parse_args(argv)
    args.command_line = None if argv is None else ["parity", *map(str, argv)]
    allow_tf32(getattr(args, "allow_tf32", False))  # per command: off unless this command asks
    try:
        determinism.settings()  # PARITY_THREADS: a bad value is bad input, said before any work
        with terminate_as_interrupt():  # SIGTERM / SIGHUP: cleaned up like Ctrl-C, then died of
            return COMMANDS[args.command](args)
    except (ParityInputError, determinism.SettingsError) as error:
        print(f"parity: error: {_one_line(error)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except WriteRefusedError as error:  # disk full or file too large: not a verdict, not bad input
        print(f"parity: error: {error}", file=sys.stderr)
        return EXIT_CRASHED
    except KeyboardInterrupt:
        print("parity: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception:  # not a verdict: keep exit 1 for "parity fails" only
        traceback.print_exc()
        print("parity: crashed (exit 3); this is not a parity verdict", file=sys.stderr)
        return EXIT_CRASHED


def run() -> None:
    """Console entry point: exits without waiting for an adapter thread that never returned."""
    code = main()
    if any(thread.name.startswith("parity-") and thread.is_alive() for thread in threading.enumerate()):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    run()
