"""``parity``: a thin command line over the library (the commands are in ``parity.commands``).

Exit codes: 0 parity holds, 1 parity fails, 2 bad usage or bad input,
3 crashed (the reference raised, or a harness bug; traceback on stderr),
130 interrupted (Ctrl-C, SIGTERM).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import math
import os
import re
import sys
import traceback
import warnings
from collections.abc import Sequence

import numpy as np

from backends.common import determinism
from backends.common.determinism import allow_tf32, apply_environment

from . import budget, process_end, supervise, watcher
from .atomic_files import terminate_as_interrupt
from .capture import terminal_was_lost
from .commands import COMMANDS
from .tool_commands import BENCH_SECTIONS
from .errors import (EXIT_BAD_INPUT, EXIT_CRASHED, EXIT_INTERRUPTED, EXIT_OK, ParityInputError, ReferenceFailed,
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


MAX_REPEAT = 100  # candidate runs per case: a nondeterministic kernel shows within a few


def _repeat_count(text: str) -> int:
    value = _positive_int(text)
    if value > MAX_REPEAT:
        raise argparse.ArgumentTypeError(f"expected at most {MAX_REPEAT} runs per case, got {text!r}")
    return value


MIN_STAGE_TIMEOUT = 0.5  # seconds: a stage's progress is looked at every 0.1 s; less could never be kept


def _stage_timeout(text: str) -> float:
    value = _positive_float(text)
    if value < MIN_STAGE_TIMEOUT:
        raise argparse.ArgumentTypeError(f"expected at least {MIN_STAGE_TIMEOUT:g} seconds (a stage's progress is "
                                         f"looked at every 0.1 s), got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def _path(text: str) -> str:
    """A file or folder argument: an empty value must not fall back to the shipped fixtures (and overwrite them)."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"expected a path, got {text!r}")
    if "\0" in text:
        raise argparse.ArgumentTypeError(f"expected a path, got {text!r} (a NUL character)")
    return text


_ADAPTER = "adapter: tf, torch or a package.module:attr import path to your own (docs/adapters.md)"
_GOLDENS_HELP = ("golden folder (default: the shipped fixtures/goldens of a source checkout; an installed harness "
                 "needs a folder of your own)")


def _case_name(text: str) -> str:
    """A case name names files (``NAME.h5``, ``reports/NAME/``): letters, digits, '.', '_' and '-' only."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", text):
        raise argparse.ArgumentTypeError(f"expected a case name of letters, digits, '.', '_' and '-' (it names the "
                                         f"golden file and the report folder; at most 100 characters), got {text!r}")
    return text


def _add_case_options(parser: argparse.ArgumentParser, user_inputs: bool = True) -> None:
    parser.add_argument("--case", action="append", dest="cases", metavar="NAME",
                        help="built-in case or fnmatch glob, e.g. 'physics-n32-*' (repeatable; default: all; "
                             "see `parity cases`)")
    parser.add_argument("--config", metavar="FILE.toml", type=_path, help="knobs from a TOML file")
    parser.add_argument("--set", action="append", default=[], metavar="KNOB=VALUE", dest="assignments",
                        help="override one knob (repeatable)")
    parser.add_argument("--pipeline", choices=("pinn", "physics", "simulate"),
                        help="with --inputs: the pipeline; with --case: keep only this pipeline's cases")
    parser.add_argument("--max-memory", metavar="SIZE",
                        help="refuse runs estimated to need more (e.g. 8G; default: "
                             f"{budget.DEFAULT_FRACTION:g} of the available memory)")
    if user_inputs:
        parser.add_argument("--inputs", metavar="FILE.npz", type=_path, help="your own inputs (spec names as keys)")
        parser.add_argument("--weights", metavar="FILE", type=_path, help="pinn weights: .npz (canonical names), "
                            ".weights.h5 or .keras")
        parser.add_argument("--dataset", metavar="FILE.npz", type=_path,
                            help="a PtychoPINN dataset (xcoords, ycoords, diff3d, probeGuess[, objectGuess]); "
                                 "see docs/datasets.md")
        parser.add_argument("--name", metavar="NAME", type=_case_name,
                            help="with --inputs or --dataset: the case's name, which also names its golden "
                                 "(NAME.h5) and report folder (default user-<file stem>; with --dataset, NAME-<pipeline>, "
                                 "by default dataset-<stem>-<pipeline>)")


def _add_stage_timeout(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stage-timeout", type=_stage_timeout, default=DEFAULT_STAGE_TIMEOUT, metavar="SECONDS",
                        help=f"give up on a stage that runs this long without a result "
                             f"(default {DEFAULT_STAGE_TIMEOUT:g})")


def _add_compare_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mode", choices=("both", "propagated", "isolated"), default="both",
                        help="comparison mode(s) (default both)")
    parser.add_argument("--taps", action="append", metavar="GLOB", help="compare only these taps (repeatable)")
    parser.add_argument("--tolerances", metavar="FILE.toml", type=_path,
                        help="tolerance table (default: the shipped fixtures/tolerances.toml)")
    parser.add_argument("--out", default="reports", metavar="DIR", type=_path,
                        help="where report.json files go (default reports/)")
    parser.add_argument("--dump-taps", action="store_true", help="also write both backends' taps to HDF5")
    parser.add_argument("--chunk-mb", type=_positive_int, default=16, metavar="MIB",
                        help="the batch is cut so that one chunk's taps take about this many MiB per side "
                             "(default 16; more holds more memory, --batch-chunk sets samples instead)")
    parser.add_argument("--batch-chunk", type=_positive_int, default=None, metavar="N",
                        help="run N samples per call (default: as many as keep 16 MiB of taps per side; more "
                             "exercises a port's large-batch code, within --max-memory)")
    _add_stage_timeout(parser)
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
    run.add_argument("--reference", default="tf", help=f"the reference {_ADAPTER} (default tf)")
    run.add_argument("--candidate", default="torch", help=f"the candidate {_ADAPTER} (default torch)")
    run.add_argument("--device", default="cpu", help="candidate device: cpu or cuda[:N] (default cpu)")
    _add_compare_options(run)
    _add_gpu_options(run)

    record = commands.add_parser("record", help="write the reference's taps as golden HDF5 files")
    _add_case_options(record)
    record.add_argument("--reference", default="tf", help=f"the reference {_ADAPTER} (default tf)")
    _add_stage_timeout(record)
    record.add_argument("--goldens", metavar="DIR", type=_path, help=_GOLDENS_HELP)

    check = commands.add_parser("check", help="compare a candidate against recorded goldens (no TF needed)")
    _add_case_options(check)
    check.add_argument("--candidate", default="torch", help=f"the candidate {_ADAPTER} (default torch)")
    check.add_argument("--device", default="cpu", help="candidate device: cpu or cuda[:N] (default cpu)")
    check.add_argument("--goldens", metavar="DIR", type=_path, help=_GOLDENS_HELP)
    _add_compare_options(check)
    _add_gpu_options(check)

    calibrate = commands.add_parser("calibrate", help="measure noise floors and propose tolerances")
    _add_case_options(calibrate, user_inputs=False)
    calibrate.add_argument("--reference", default="tf", help=f"the reference {_ADAPTER} (default tf)")
    calibrate.add_argument("--candidate", default="torch", help=f"the candidate {_ADAPTER}, also run twice to check "
                           "run-to-run noise (default torch)")
    calibrate.add_argument("--tolerances", metavar="FILE.toml", type=_path,
                           help="the table to measure against (and to write, with --write; an installed harness "
                                "needs one of your own for that)")
    calibrate.add_argument("--factor", default="10", help="tolerance = factor x noise (>= 1, default 10)")
    calibrate.add_argument("--floor", default=None, help="smallest tolerance, > 0 and < 1 (default per dtype)")
    calibrate.add_argument("--write", action="store_true", help="write tighter tolerances into the file")
    calibrate.add_argument("--allow-looser", action="store_true", help="with --write: also write looser ones")
    calibrate.add_argument("--out", default="reports", metavar="DIR", type=_path,
                           help="where the calibration runs' reports go (default reports/)")

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
    bench.add_argument("--json", metavar="FILE", type=_path, help="also write the results as JSON")

    report = commands.add_parser("report", help="re-render report.html from a saved run (no re-run)")
    report.add_argument("folder", metavar="DIR", type=_path,
                        help="a case folder holding report.json, or an --out folder")

    diff = commands.add_parser("diff", help="compare two saved runs tap by tap; exit 1 if a tap got worse")
    diff.add_argument("run_a", metavar="RUN_A", type=_path,
                      help="the earlier run: case folder, report.json or --out folder")
    diff.add_argument("run_b", metavar="RUN_B", type=_path, help="the later run")
    diff.add_argument("--factor", type=float, default=2.0,
                      help="a failing tap got worse when its error / tolerance grew by more than this (default 2)")
    diff.add_argument("--all", action="store_true", help="list unchanged taps too")

    selftest = commands.add_parser("selftest", help="inject known port bugs into the Torch candidate and check "
                                   "that each is detected, localized and diagnosed")
    selftest.add_argument("--seeds", type=_positive_int, default=20,
                          help="seeds per built-in case for the clean candidate (default 20)")
    selftest.add_argument("--fast", action="store_true", help="one seed per built-in case (what `nox -s tests` runs)")
    selftest.add_argument("--only", action="append", metavar="GLOB",
                          help="faults/refactors whose id matches (the clean candidate's runs are then skipped)")
    selftest.add_argument("--no-clean", action="store_true", help="skip the clean candidate's runs")
    selftest.add_argument("--out", metavar="DIR", type=_path, help="also write DIR/selftest.json")
    return parser


def _add_gpu_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--allow-tf32", action="store_true",
                        help="let float32 matmuls/convolutions use TF32 on GPUs (recorded; fails tight tolerances)")
    parser.add_argument("--repeat", type=_repeat_count, default=1, metavar="N",
                        help="also run the candidate N times on each case's inputs and report every tap that is "
                             "not bitwise identical between runs (exit 1 if any)")


def _one_line(error: Exception) -> str:
    """The message on one line: a file name or a TOML error may carry newlines."""
    return " ".join(str(error).split("\n"))



def main(argv: Sequence[str] | None = None) -> int:
    try:
        apply_environment()  # before any framework import, so the determinism switch takes effect
    except ValueError as error:  # PARITY_MALLOC and the like: bad input, said before any work
        print(f"parity: error: {_one_line(error)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    args = build_parser().parse_args(argv)
    args.command_line = None if argv is None else ["parity", *map(str, argv)]
    allow_tf32(getattr(args, "allow_tf32", False))  # per command: off unless this command asks
    try:
        determinism.settings()  # PARITY_THREADS: a bad value is bad input, said before any work
        # the harness counts NaN/Inf and names overflows itself: numpy's warnings would only leak noise before
        # its messages (errstate is per thread: adapter code on its own thread keeps numpy's defaults)
        # warnings of the libraries the harness calls itself (Keras when it checks a weight mapping) are not the
        # user's to see, and PYTHONWARNINGS=error must not turn them into a crash; adapter code's own warnings
        # are captured into its log with the filter it had (parity.capture)
        # likewise matplotlib's log lines (a temporary config folder when HOME is not writable: removed at exit)
        logging.getLogger("matplotlib").setLevel(logging.ERROR)
        with terminate_as_interrupt(), np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return COMMANDS[args.command](args)
    except (ParityInputError, determinism.SettingsError) as error:
        print(f"parity: error: {_one_line(error)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (WriteRefusedError, ReferenceFailed) as error:  # disk full; the reference failed: not a verdict (exit 3)
        print(f"parity: error: {_one_line(error)}", file=sys.stderr)
        return EXIT_CRASHED
    except KeyboardInterrupt:
        print("parity: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `parity cases | head`: the reader left; say nothing more on that pipe
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        # a command with a verdict lets rich's console go quiet and finishes (report._Console); one that got
        # here stopped before its verdict, and 0 would read as "parity holds"
        return EXIT_OK if args.command in ("cases",) else EXIT_CRASHED
    except OSError as error:
        if error.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO):
            return _crashed()
        with contextlib.suppress(Exception):  # the standard output (a full disk, /dev/full) or a file refused
            print(f"parity: error: a write was refused ({error.strerror or error}); reports written before it "
                  "are intact (exit 3)", file=sys.stderr)
        return EXIT_CRASHED
    except SystemExit as ending:  # the arguments are parsed: nothing of the harness exits from here on
        with contextlib.suppress(Exception):
            print(f"parity: the run was ended by SystemExit({ending.code!r:.80}) raised in the harness's own thread, "
                  "outside any adapter call the harness made (adapter code: a signal handler it installed, an "
                  "exception sent to the main thread); this is not a parity verdict (exit 3)", file=sys.stderr)
        return EXIT_CRASHED
    except BaseException:  # not a verdict (a harness bug, or an exotic BaseException): keep exit 1 for "parity fails"
        return _crashed()


def _crashed() -> int:
    with contextlib.suppress(Exception):
        traceback.print_exc()
        print("parity: crashed (exit 3); this is not a parity verdict", file=sys.stderr)
    return EXIT_CRASHED


def _remove_matplotlib_temporaries() -> None:
    """Without a writable config or cache folder, matplotlib makes temporary ones it removes at exit; the
    command ends with ``os._exit`` (see ``run``), so they are removed here."""
    matplotlib = sys.modules.get("matplotlib")
    if matplotlib is None:
        return
    import shutil
    import tempfile

    temporary = os.path.realpath(tempfile.gettempdir())
    for where in ("get_configdir", "get_cachedir"):
        with contextlib.suppress(Exception):
            folder = os.path.realpath(getattr(matplotlib, where)())
            if os.path.dirname(folder) == temporary and os.path.basename(folder).startswith("matplotlib-"):
                shutil.rmtree(folder, ignore_errors=True)


def run() -> None:
    """Console entry point: the work runs in a supervised child (``parity.watcher``). Once the verdict is
    said, the process ends at once (``os._exit``): an adapter's thread that never returns, or its atexit
    handler (which could block, or end the process with another status), never runs after the verdict."""
    if supervise.wanted():
        sys.exit(watcher.supervise(sys.argv[1:]))
    supervise.claim()
    supervise.printable_anywhere()
    process_end.expect_verdict()  # unwatched (PARITY_SUPERVISE=0): no adapter code ends it with 0 before the verdict
    try:
        code = main()
    except SystemExit as ending:  # argparse: --help (0), a usage error (2); said to the watcher like any end
        code = ending.code if isinstance(ending.code, int) else int(ending.code is not None)
        supervise.exiting(code)
        process_end.said(code)
        raise
    if terminal_was_lost():
        supervise.terminal_lost()
    supervise.exiting(code)
    process_end.said(code)
    _remove_matplotlib_temporaries()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed or broken stream: the code still goes out
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
