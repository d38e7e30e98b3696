"""``parity``: a thin command line over the library (see ``parity.workflows``).

Exit codes: 0 parity holds, 1 parity fails, 2 bad usage or bad input,
3 crashed (the reference raised, or a harness bug; traceback on stderr).
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from backends.common.determinism import apply_environment

from .errors import EXIT_BAD_INPUT, EXIT_CRASHED, EXIT_DIVERGED, EXIT_OK, ParityInputError


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _output_folder(path: str) -> Path:
    """The --out folder, refused up front if it cannot be one (before any comparison runs)."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise ParityInputError(f"--out {path}: exists and is not a folder")
    return folder


def _add_case_options(parser: argparse.ArgumentParser, user_inputs: bool = True) -> None:
    parser.add_argument("--case", action="append", dest="cases", metavar="NAME",
                        help="built-in case (repeatable; default: all; see `parity cases`)")
    parser.add_argument("--config", metavar="FILE.toml", help="knobs from a TOML file")
    parser.add_argument("--set", action="append", default=[], metavar="KNOB=VALUE", dest="assignments",
                        help="override one knob (repeatable)")
    parser.add_argument("--pipeline", choices=("pinn", "physics", "simulate"),
                        help="with --inputs: the pipeline; with --case: keep only this pipeline's cases")
    if user_inputs:
        parser.add_argument("--inputs", metavar="FILE.npz", help="your own inputs (spec names as keys)")
        parser.add_argument("--weights", metavar="FILE", help="pinn weights: .npz (canonical names), "
                            ".weights.h5 or .keras")


def _add_compare_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mode", choices=("both", "propagated", "isolated"), default="both",
                        help="comparison mode(s) (default both)")
    parser.add_argument("--taps", action="append", metavar="GLOB", help="compare only these taps (repeatable)")
    parser.add_argument("--tolerances", metavar="FILE.toml", help="tolerance table (default fixtures/tolerances.toml)")
    parser.add_argument("--out", default="reports", metavar="DIR", help="where report.json files go (default reports/)")
    parser.add_argument("--dump-taps", action="store_true", help="also write both backends' taps to HDF5")
    parser.add_argument("--chunk-mb", type=_positive_int, default=64, help="comparison chunk size per side in MiB")
    parser.add_argument("--quiet", action="store_true", help="print only the verdict lines")


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

    calibrate = commands.add_parser("calibrate", help="measure noise floors and propose tolerances")
    _add_case_options(calibrate, user_inputs=False)
    calibrate.add_argument("--reference", default="tf")
    calibrate.add_argument("--candidate", default="torch", help="also run twice to check run-to-run noise")
    calibrate.add_argument("--tolerances", metavar="FILE.toml")
    calibrate.add_argument("--factor", type=float, default=10.0, help="tolerance = factor x noise (default 10)")
    calibrate.add_argument("--floor", type=float, default=None, help="smallest tolerance (default per dtype)")
    calibrate.add_argument("--write", action="store_true", help="write tighter tolerances into the file")
    calibrate.add_argument("--allow-looser", action="store_true", help="with --write: also write looser ones")
    calibrate.add_argument("--out", default="reports", metavar="DIR")

    selftest = commands.add_parser("selftest", help="inject known port bugs into the Torch candidate and check "
                                   "that each is detected, localized and diagnosed")
    selftest.add_argument("--seeds", type=_positive_int, default=20,
                          help="seeds per built-in case for the clean candidate (default 20)")
    selftest.add_argument("--fast", action="store_true", help="one seed per built-in case (what `nox -s tests` runs)")
    selftest.add_argument("--only", action="append", metavar="GLOB", help="faults/refactors whose id matches")
    selftest.add_argument("--no-clean", action="store_true", help="skip the clean candidate's runs")
    selftest.add_argument("--out", metavar="DIR", help="also write DIR/selftest.json")
    return parser


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


def _compare_options(args):
    from .runner import RunOptions

    return RunOptions(modes=_modes(args.mode), taps=tuple(args.taps) if args.taps else None,
                      dump_dir=Path(args.out) if args.dump_taps else None, chunk_bytes=args.chunk_mb << 20)


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


def command_run(args) -> int:
    from .adapters import load_adapter
    from .workflows import choose_cases, run_and_write, tolerance_table

    cases, notes = choose_cases(args.cases, args.config, args.assignments, args.pipeline, args.inputs, args.weights)
    tolerances = tolerance_table(args.tolerances)
    reference = load_adapter(args.reference, "cpu")
    candidate = load_adapter(args.candidate, args.device)
    out = _output_folder(args.out)
    reports = [run_and_write(case, reference, candidate, tolerances, _compare_options(args), out, notes)
               for case in cases]
    _print(reports, args.quiet)
    for line in notes:
        print(f"note: {line}")
    print(f"reports written under {args.out}/")
    return EXIT_OK if all(report.passed for report in reports) else EXIT_DIVERGED


def command_record(args) -> int:
    from .adapters import load_adapter
    from .workflows import DEFAULT_GOLDENS, choose_cases, record_golden

    if (args.config or args.assignments) and not args.goldens:
        raise ParityInputError("--set/--config change a case, and the shipped goldens in fixtures/goldens must "
                               "stay those of the built-in cases; record into another folder with --goldens DIR "
                               "and check with the same --set and --goldens")
    cases, _ = choose_cases(args.cases, args.config, args.assignments, args.pipeline)
    reference = load_adapter(args.reference, "cpu")
    for case in cases:
        path = record_golden(case, reference, args.goldens or DEFAULT_GOLDENS)
        print(f"recorded {case.name} ({case.hash()}) -> {path}")
    return EXIT_OK


def command_check(args) -> int:
    from .adapters import load_adapter
    from .workflows import DEFAULT_GOLDENS, choose_cases, open_golden, run_and_write, tolerance_table

    cases, _ = choose_cases(args.cases, args.config, args.assignments, args.pipeline)
    tolerances = tolerance_table(args.tolerances)
    candidate = load_adapter(args.candidate, args.device)
    out = _output_folder(args.out)
    reports = []
    for case in cases:
        with open_golden(case, args.goldens or DEFAULT_GOLDENS) as golden:
            reports.append(run_and_write(case, golden, candidate, tolerances, _compare_options(args), out))
    _print(reports, args.quiet)
    print(f"reports written under {args.out}/")
    return EXIT_OK if all(report.passed for report in reports) else EXIT_DIVERGED


def command_calibrate(args) -> int:
    from .adapters import load_adapter
    from .calibrate import calibrate, print_calibration
    from .workflows import DEFAULT_TOLERANCES, choose_cases

    cases, _ = choose_cases(args.cases, args.config, args.assignments, args.pipeline)
    reference = load_adapter(args.reference, "cpu")
    candidate = load_adapter(args.candidate, "cpu") if args.candidate else None
    result = calibrate(cases, reference, candidate, Path(args.tolerances or DEFAULT_TOLERANCES), factor=args.factor,
                       floor=args.floor, write=args.write, allow_looser=args.allow_looser, out_dir=Path(args.out))
    print_calibration(result)
    return EXIT_OK


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
            "calibrate": command_calibrate, "selftest": command_selftest}


def main(argv: Sequence[str] | None = None) -> int:
    apply_environment()  # before any framework import, so the determinism switch takes effect
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except ParityInputError as error:
        print(f"parity: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception:  # not a verdict: keep exit 1 for "parity fails" only
        traceback.print_exc()
        print("parity: crashed (exit 3); this is not a parity verdict", file=sys.stderr)
        return EXIT_CRASHED


if __name__ == "__main__":
    sys.exit(main())
