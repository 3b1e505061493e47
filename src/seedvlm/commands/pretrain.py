"""`seedvlm pretrain --world DIR --preset tiny --out runs/base [--key value ...]`: build the base VLM in stages.

    seedvlm world --out worlds/main && seedvlm pretrain --world worlds/main --preset tiny --out runs/base
    seedvlm pretrain --config configs/pretrain_tiny.yaml --vision-steps 200     # YAML + overrides
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from seedvlm.config import add_config_arguments
    from seedvlm.pretrain.config import PretrainConfig

    p = sub.add_parser("pretrain", help="train the base VLM on the embedded world (vision, alignment, instruction)")
    add_config_arguments(p, PretrainConfig)
    p.set_defaults(func=run, accepts_overrides=True)


def run(args: argparse.Namespace) -> int:
    from seedvlm.config import load_config
    from seedvlm.pretrain.config import PretrainConfig
    from seedvlm.pretrain.pipeline import pretrain
    from seedvlm.pretrain.readiness import format_readiness

    cfg = load_config(PretrainConfig, args.config, args.overrides)
    summary = pretrain(cfg)
    print(f"saved base model to {cfg.out} ({summary['train_seconds']:.0f}s of training on {summary['device']})")
    if "readiness" in summary:
        print(format_readiness(summary["readiness"]))
        return 0
    return 0
