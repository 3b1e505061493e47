"""`seedvlm train`: SEED (purified-teacher distillation) or the SFT control arm, LoRA on a llava-hf model.

    seedvlm train --config configs/seed_tiny.yaml --model runs/base --data runs/train.json \\
        --images worlds/main/images/train --output-dir runs/seed
    seedvlm train --config configs/sft_tiny.yaml ... --output-dir runs/sft        # the control arm
    seedvlm train --config configs/seed_tiny.yaml ... --resume auto               # continue the latest checkpoint
    accelerate launch --config_file configs/accelerate/multi_gpu.yaml --num_processes 4 -m seedvlm train \
        --config configs/seed_llava15_7b.yaml ...                                 # several GPUs (DDP)
    accelerate launch --config_file configs/accelerate/fsdp.yaml --num_processes 4 -m seedvlm train ...   # FSDP

Every option of TrainConfig can be set in the YAML or overridden as --key value (listed below); docs/training.md
says where each default comes from.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from seedvlm.config import add_config_arguments
    from seedvlm.train.config import TrainConfig

    p = sub.add_parser("train", help="SEED or SFT LoRA training (transformers Trainer)", description=__doc__,
                       allow_abbrev=False)
    add_config_arguments(p, TrainConfig)
    p.add_argument("--resume", default=None, metavar="DIR|auto",
                   help="continue from a checkpoint folder, or 'auto' = the latest checkpoint-N in output_dir")
    p.set_defaults(func=run, accepts_overrides=True)


def run(args: argparse.Namespace) -> int:
    from seedvlm.config import load_config
    from seedvlm.distributed import end_process_group
    from seedvlm.train.config import TrainConfig
    from seedvlm.train.trainer import run_training

    cfg = load_config(TrainConfig, args.config, args.overrides)
    try:
        result = run_training(cfg, resume=args.resume)
    finally:
        end_process_group()
    print(f"{cfg.method}: {result['global_step']} steps ({result['nan_steps']} skipped as non-finite); "
          f"adapter: {result['adapter']}; metrics: {result['metrics']}")
    return 0
