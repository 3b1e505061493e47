"""`seedvlm pretrain --world DIR --preset tiny --out runs/base [--key value ...]`: build the base VLM in stages.

    seedvlm world --out worlds/main && seedvlm pretrain --world worlds/main --preset tiny --out runs/base
    seedvlm pretrain --config configs/pretrain_tiny.yaml --vision-steps 200     # YAML + overrides
"""

from __future__ import annotations

import argparse
import dataclasses

from seedvlm.errors import SeedVLMError
from seedvlm.options import Range, out_of_range


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


def _range(name: str) -> Range:
    """Where a PretrainConfig number makes sense, from its name: learning rates > 0, batch sizes and token caps
    >= 1, probabilities and fractions in [0, 1], step/epoch/image counts (0 skips a stage) and the rest >= 0."""
    if name.endswith("_lr"):
        return Range(0, lo_open=True)
    if name.endswith("_batch") or name in ("batch_size", "max_new_tokens"):
        return Range(1)
    if name.endswith(("_drop", "_fraction")):
        return Range(0, 1)
    return Range(0)


def check_ranges(cfg) -> None:
    """Refuse a numeric option outside its range before anything trains (one line naming the option)."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value not in _range(f.name):
            raise SeedVLMError(out_of_range("--" + f.name.replace("_", "-"), value, _range(f.name)))


def run(args: argparse.Namespace) -> int:
    from seedvlm.config import load_config
    from seedvlm.outputs import check_dir_target, owned_by
    from seedvlm.pretrain.config import PretrainConfig
    from seedvlm.pretrain.pipeline import pretrain
    from seedvlm.pretrain.readiness import format_readiness

    cfg = load_config(PretrainConfig, args.config, args.overrides)
    check_ranges(cfg)
    check_dir_target(cfg.out, "out", owns=owned_by("pretrain.json"))  # before any training
    summary = pretrain(cfg)
    print(f"saved base model to {cfg.out} ({summary['train_seconds']:.0f}s of training on {summary['device']})")
    if "readiness" in summary:
        print(format_readiness(summary["readiness"]))
        return 0
    return 0
