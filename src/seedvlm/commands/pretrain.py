"""`seedvlm pretrain --world DIR --preset tiny --out runs/base [--key value ...]`: build the base VLM in stages.

    seedvlm world --out worlds/main && seedvlm pretrain --world worlds/main --preset tiny --out runs/base
    seedvlm pretrain --config configs/pretrain_tiny.yaml --vision-steps 200     # YAML + overrides
"""

from __future__ import annotations

import argparse


_STAGES = """
Stages, in order (a stage with 0 steps or epochs is skipped): 0 text (language pretraining on the instruct turns,
the image given as text), 1 vision (the vision tower learns the world's objects), 2 alignment (the projector maps
image features into the language model, on captions), 3 instruction (all instruct turns). Then, unless
readiness_images is 0, the readiness checks (`seedvlm readiness --help` explains them) run on the val split.
Options come from --config (YAML) and `--key value` overrides; all of them are listed below.
"""


def register(sub: argparse._SubParsersAction) -> None:
    from seedvlm.config import add_config_arguments
    from seedvlm.pretrain.config import PretrainConfig

    p = sub.add_parser("pretrain", help="train the base VLM on the embedded world (vision, alignment, instruction)",
                       description=__doc__ + _STAGES)
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
