"""`seedvlm compare`: one table of POPE and CHAIR metrics across runs, deltas against the base run, and plots.

    seedvlm compare --run base=runs/base --run sft=runs/sft --run seed=runs/seed --out runs/report

Each PATH is a run folder with pope/results.json and/or chair/results.json, a folder with one results.json, or a
results.json file. Deltas are against the run named `base`, else the first run. Writes REPORT/report.md,
REPORT/report.json, REPORT/pope_<split>.png and REPORT/chair_recall.png (CHAIRi versus recall; a run's
chair_sweep.json points are drawn as a curve), and prints the table.
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("compare", help="compare evaluation runs (markdown, json, plots)", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", action="append", required=True, metavar="NAME=PATH",
                   help="a run to compare (repeat; the one named base, else the first, is the reference)")
    p.add_argument("--out", required=True, help="report folder")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from seedvlm.eval.report import compare, parse_run_spec
    from seedvlm.outputs import STEP_FILES, check_dir_target, mark, only_holds

    check_dir_target(args.out, "--out", owns=only_holds("report.md", "report.json", "*.png", *STEP_FILES))
    report = compare([parse_run_spec(s) for s in args.run], args.out)
    mark(args.out)
    print(report["markdown"], end="")
    return 0
