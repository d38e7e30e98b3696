#!/usr/bin/env python
"""Worst TF-vs-Torch error per tap and dtype over the parity test matrix (CPU).

Runs every case of ``tests/matrix.py`` through every pipeline twice:

* propagated: each backend runs the whole pipeline on the same inputs/weights;
* isolated: the Torch stage runs on the TF run's recorded inputs.

and prints, per (mode, pipeline, tap) and per dtype, the worst
max|a - b| / max|a| over the matrix, the configuration that produced it and
the bound the tests hold it to (``matrix.bound``). A shape or dtype mismatch
counts as a failure. Exit status: 0 if everything is within bounds, 1 if not.

    python -m tests.matrix_report                        # markdown table
    python -m tests.matrix_report --json out.json        # plus every measurement
    python -m tests.matrix_report --case default --pipeline pinn
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DTYPES = ("float32", "float64")
MODES = ("propagated", "isolated")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", action="append", default=None, help="only this case id (repeatable)")
    parser.add_argument("--pipeline", action="append", default=None, help="only this pipeline (repeatable)")
    parser.add_argument("--mode", action="append", choices=MODES, default=None, help="only this mode (repeatable)")
    parser.add_argument("--json", type=Path, default=None, help="also write every measurement here")
    parser.add_argument("--list", action="store_true", help="list the matrix's cases and exit")
    return parser.parse_args(argv)


def _fmt(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if value == 0:
        return "0"
    return f"{value:.2e}"


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    from tests import matrix  # the suite's own matrix: this report lives beside it

    if args.list:
        for case in matrix.CASES:
            print(matrix.describe_case(case))
        return 0

    from backends.common.taps import PIPELINES, pipeline_taps
    from backends.tf import TensorFlowBackend  # sets determinism before TF loads
    from backends.torch import TorchBackend

    unknown = sorted(set(args.case or ()) - set(matrix.CASE_BY_ID))
    if unknown:
        print(f"unknown case(s) {unknown}; --list shows them", file=sys.stderr)
        return 2
    cases = [matrix.CASE_BY_ID[name] for name in args.case] if args.case else matrix.CASES
    pipelines = args.pipeline or list(PIPELINES)
    modes = args.mode or list(MODES)

    reference, candidate = TensorFlowBackend(), TorchBackend()
    runs = matrix.RunCache(reference, candidate)
    started = time.perf_counter()
    measurements = []
    for case in cases:
        for pipeline in pipelines:
            for mode in modes:
                for spec in pipeline_taps(pipeline, case.cfg):
                    measurements.append(runs.measure(case, pipeline, mode, spec.name))
    elapsed = time.perf_counter() - started

    # row order: registry order, from the deepest network among the cases
    order: list[tuple[str, str, str]] = []
    for mode in modes:
        for pipeline in pipelines:
            deepest = max(cases, key=lambda case: case.cfg.depth)
            names = [spec.name for spec in pipeline_taps(pipeline, deepest.cfg)]
            order += [(mode, pipeline, name) for name in names]
    worst: dict[tuple[str, str, str, str], matrix.Measurement] = {}
    for m in measurements:
        key = (m.mode, m.pipeline, m.tap, m.dtype)
        held = worst.get(key)
        # a failure outranks a pass; then the larger value (NaN counts as the largest)
        rank = (not m.ok, math.inf if math.isnan(m.value) else m.value)
        if held is None or rank > (not held.ok, math.inf if math.isnan(held.value) else held.value):
            worst[key] = m

    versions = {**reference.versions(), **candidate.versions()}
    print("# TF vs Torch forward parity over the test matrix (CPU)\n")
    print(f"{len(cases)} cases x {len(pipelines)} pipelines x {len(modes)} modes = {len(measurements)} tap "
          f"comparisons in {elapsed:.1f} s; batch {matrix.BATCH} (simulate: {matrix.SCAN_POSITIONS} scan "
          f"positions); " + ", ".join(f"{key} {value}" for key, value in sorted(versions.items())))
    print("metric: max|a-b| / max|a| (a = TF reference, b = Torch); '!' marks a value over its bound or a "
          "shape/dtype mismatch\n")
    header = "| mode | pipeline | tap | f32 worst | f32 bound | f32 config | f64 worst | f64 bound | f64 config |"
    print(header)
    print("|" + "---|" * header.count(" | ") + "---|")
    for mode, pipeline, tap in order:
        cells = []
        for dtype in DTYPES:
            m = worst.get((mode, pipeline, tap, dtype))
            if m is None:
                cells += ["-", "-", "-"]
                continue
            value = _fmt(m.value) + ("" if m.ok else " !")
            if not m.layout_ok:
                value += f" (shape/dtype {m.candidate_shape} {m.candidate_dtype} vs {m.reference_shape} " \
                         f"{m.reference_dtype})"
            cells += [value, f"{m.bound:.0e}", "(all exact)" if m.value == 0 and m.ok else m.case]
        print(f"| {mode} | {pipeline} | {tap} | " + " | ".join(cells) + " |")

    failures = [m for m in measurements if not m.ok]
    print()
    for dtype in DTYPES:
        for mode in modes:
            chosen = [m for m in measurements if m.dtype == dtype and m.mode == mode]
            if chosen:
                top = max(chosen, key=lambda m: (not m.ok, math.inf if math.isnan(m.value) else m.value / m.bound))
                print(f"{dtype} {mode}: worst relative to its bound: {top.pipeline} {top.tap} {_fmt(top.value)} "
                      f"(bound {top.bound:.0e}, {top.value / top.bound:.2g} of it) under {top.case}")
    print(f"\n{len(failures)} of {len(measurements)} comparisons over their bound.")
    for m in failures[:20]:
        print(f"  FAIL {m.mode} {m.pipeline} {m.tap} under {m.case}: {_fmt(m.value)} > {m.bound:.0e}"
              + ("" if m.layout_ok else f" (shape/dtype {m.candidate_shape} {m.candidate_dtype} vs "
                                        f"{m.reference_shape} {m.reference_dtype})"))

    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {"versions": versions, "elapsed_s": elapsed,
                   "cases": {case.id: case.cfg.to_dict() for case in cases},
                   "measurements": [dataclasses.asdict(m) | {"ok": m.ok} for m in measurements]}
        args.json.write_text(json.dumps(payload, indent=1, default=str))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
