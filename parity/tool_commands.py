"""The commands beside a comparison of cases: ``bench``, ``report`` and ``diff`` of saved runs, ``selftest``.

Like ``parity.commands``, each calls the library on parsed arguments and returns an exit code.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

from .errors import EXIT_DIVERGED, EXIT_OK, ParityInputError

BENCH_SECTIONS = ("throughput", "scaling", "overhead", "memory", "startup")


def command_bench(args) -> int:
    from .bench import BenchOptions, run_bench, write_json
    from .bench_table import render
    from .inputs import resolve_knobs
    from .report import make_console

    cfg = resolve_knobs(None, args.assignments)  # validated here: a bad knob is exit 2 before anything runs
    if args.json:  # proven writable before minutes of measuring, not after
        from .atomic_files import writable_folder

        if Path(args.json).is_dir():
            raise ParityInputError(f"--json {args.json}: is a folder; expected a file name")
        writable_folder(Path(args.json).parent, "folder of the JSON file", "--json")
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


def command_report(args) -> int:
    from .html import write_html
    from .report import load_report

    folder = Path(args.folder)
    folders = [folder] if (folder / "report.json").exists() else sorted(
        child for child in folder.glob("*") if (child / "report.json").exists())
    if not folders:
        raise ParityInputError(f"{folder}: no report.json here nor in any subfolder")
    for case_dir in folders:
        with _saved_report(case_dir):
            try:
                written = write_html(load_report(case_dir), case_dir)
            except OSError as error:  # a read-only folder of saved runs, a full disk: say where, change nothing
                raise ParityInputError(f"{case_dir}: cannot write report.html there "
                                       f"({error.strerror or type(error).__name__})") from None
        print(f"wrote {written}")
    return EXIT_OK


@contextlib.contextmanager
def _saved_report(where):
    """A saved report whose fields are not of the types this harness writes is bad input, not a crash."""
    try:
        yield
    except (AttributeError, TypeError, KeyError, IndexError, ValueError) as error:
        raise ParityInputError(f"{where}: report.json is not a report this harness wrote ({type(error).__name__}: "
                               f"{str(error)[:160]})") from None


def command_diff(args) -> int:
    from .report import make_console
    from .rundiff import diff_runs, diff_table

    with _saved_report(f"{args.run_a} or {args.run_b}"):
        changes, notes = diff_runs(args.run_a, args.run_b, args.factor)
        console = make_console()
        console.print(diff_table(changes, args.all))
    for note in notes:
        print(f"note: {note}")
    worse = [change for change in changes if change.worse]
    counts = {verdict: sum(c.verdict == verdict for c in changes) for verdict in ("worse", "gone", "fixed", "better")}
    retyped = sum(c.verdict == "retyped" for c in changes)
    print(", ".join(f"{n} {verdict}" for verdict, n in counts.items()) + f" of {len(changes)} tap results"
          + (f"; {retyped} in another dtype (errors of different precisions: not compared)" if retyped else ""))
    return EXIT_DIVERGED if worse else EXIT_OK


def command_selftest(args) -> int:
    from .report import make_console, write_json_atomic
    from .selftest import run_selftest

    console = make_console()
    # --only looks at a few faults: the clean sweep (a run per seed and built-in case) is not what was asked
    result = run_selftest(seeds=1 if args.fast else args.seeds, only=args.only, clean=not (args.no_clean or args.only),
                          progress=lambda row: console.print(f"  {row.status:>7}  {row.kind:<8} {row.id} "
                                                             f"({row.case}, {row.seconds:.1f} s)", highlight=False))
    console.print(result.table())
    for line in result.summary_lines():
        console.print(line, style="green" if line.endswith("PASS") else ("red" if "FAIL" in line else ""),
                      highlight=False)
    if args.out:
        print(f"written {write_json_atomic(Path(args.out) / 'selftest.json', result.to_dict())}")
    return EXIT_OK if result.passed else EXIT_DIVERGED
