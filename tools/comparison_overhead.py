"""Print what the propagated statistics sink costs over a Torch forward with no sink (issue #11).

    PYTHONPATH=$PWD python tools/comparison_overhead.py [--pipeline physics pinn] [--rounds 7]
        [--device cpu|cuda] [--reference tf|torch] [--engine auto|numpy|torch] [--candidate-form tensor|numpy]
        [--share-reference no yes]

One line of JSON per (pipeline, engine, candidate form); ratios are medians over interleaved rounds.
"""

from __future__ import annotations

import argparse
import json

from parity.comparison_bench import measure_comparison_overhead


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", nargs="+", default=["physics", "pinn"], choices=["physics", "pinn"])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--reference", default="tf", choices=["tf", "torch"])
    parser.add_argument("--engine", nargs="+", default=["auto"], choices=["auto", "numpy", "torch"])
    parser.add_argument("--candidate-form", nargs="+", default=["tensor"], choices=["tensor", "numpy"])
    parser.add_argument("--share-reference", nargs="+", default=["no"], choices=["no", "yes"],
                        help="reference sides from a ReferenceCache filled before the timing (as shared by both modes)")
    args = parser.parse_args()
    for pipeline in args.pipeline:
        for form in args.candidate_form:
            for engine in args.engine:
                for share in args.share_reference:
                    result = measure_comparison_overhead(pipeline, batch=args.batch, rounds=args.rounds,
                                                         device=args.device, reference=args.reference,
                                                         candidate_form=form, engine=engine,
                                                         share_reference=share == "yes")
                    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
