"""`seedvlm experiment`: base, SFT and SEED variants x seeds; POPE, probes, CHAIR; operating-point sweeps; CHAIRi at
matched recall; ablations; a summary with 95% intervals and the goals of the config. Re-running the same command
resumes.

    seedvlm experiment --config configs/experiment_world.yaml                       # the full protocol
    seedvlm experiment --config configs/experiment_smoke.yaml                       # a few minutes on 2 CPU cores
    seedvlm experiment --config configs/experiment_world.yaml --dry-run             # the plan: what runs, what is done
    seedvlm experiment --config configs/experiment_world.yaml --summary-only        # summary of finished results only
    seedvlm experiment --config configs/experiment_world.yaml --seeds 0 --ablations none --out runs/exp_seed0
    seedvlm experiment --config configs/experiment_world.yaml --train-overrides '{report_to: none}'

Writes OUT/seed<S>/<arm>/... (each step with a done.json marker), OUT/seed<S>/compare/ (`seedvlm compare`),
OUT/summary.json and OUT/summary.md. docs/experiment.md: the protocol and the matched-recall method.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from seedvlm.config import add_config_arguments
    from seedvlm.experiment import ExperimentConfig

    p = sub.add_parser("experiment", help="the full base/SFT/SEED comparison over seeds, with sweeps, ablations "
                                          "and a summary (resumable)", description=__doc__, allow_abbrev=False)
    add_config_arguments(p, ExperimentConfig)
    p.add_argument("--dry-run", action="store_true", help="print the steps (run or done) and stop")
    p.add_argument("--summary-only", action="store_true",
                   help="write OUT/summary.md from steps already done, running nothing and loading no model (e.g. "
                        "results brought back from a GPU machine without the weights); fails if a step is not done")
    p.set_defaults(func=run, accepts_overrides=True)


def run(args: argparse.Namespace) -> int:
    from seedvlm.experiment import load_experiment_config, run_experiment

    cfg = load_experiment_config(args.config, args.overrides)
    result = run_experiment(cfg, dry_run=args.dry_run, summary_only=args.summary_only)
    if result["summary"] is not None:
        from pathlib import Path

        print((Path(cfg.out) / "summary.md").read_text(encoding="utf-8"), end="")
    return 0
