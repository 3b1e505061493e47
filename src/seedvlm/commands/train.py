"""`seedvlm train`: SEED (purified-teacher distillation) or the SFT control arm, LoRA on a llava-hf model.

    seedvlm train --config configs/seed_tiny.yaml --model runs/base --data runs/train.json \\
        --images worlds/main/images/train --output-dir runs/seed
    seedvlm train --config configs/sft_tiny.yaml ... --output-dir runs/sft        # the control arm
    seedvlm train --config configs/seed_tiny.yaml ... --resume auto               # continue the latest checkpoint
    accelerate launch --config_file configs/accelerate/multi_gpu.yaml --num_processes 4 \\
        -m seedvlm train --config configs/seed_llava15_7b.yaml ...                 # several GPUs (DDP)
    accelerate launch --config_file configs/accelerate/fsdp.yaml --num_processes 4 \\
        -m seedvlm train ...                                                       # FSDP

Options come from the YAML and `--key value` overrides (the command line wins). Without --config the defaults are
the reference implementation's recipe for LLaVA-1.5-7B (lr 2e-6, LoRA r 64, 3 epochs; configs/seed_llava15_7b.yaml
adds its speed settings): too gentle for the tiny preset, which has configs/seed_tiny.yaml. The options are
transformers' TrainingArguments plus SEED's own; --help lists the common ones, --help-all every one.
docs/training.md says where each default comes from.
"""

from __future__ import annotations

import argparse
import logging
import sys

log = logging.getLogger("seedvlm.train")

NO_CONFIG = ("no --config: using the built-in defaults, the reference implementation's recipe for LLaVA-1.5-7B "
             "(learning_rate 2e-6, lora_r 64, 3 epochs); for the tiny preset use --config configs/seed_tiny.yaml")


def _help_epilog(every: bool = False) -> str:
    from seedvlm.config import config_help
    from seedvlm.train.config import HELP_GROUPS, SeedConfig

    if every:
        return "every option (set in the YAML or override with --key value):\n" + config_help(SeedConfig)
    return ("options (set in the YAML or override with --key value):\n" + config_help(SeedConfig, HELP_GROUPS)
            + "\n\nEvery other transformers TrainingArguments option is accepted too; `seedvlm train --help-all` "
              "lists them all.")


def register(sub: argparse._SubParsersAction) -> None:
    from seedvlm.config import LazyHelp

    p = sub.add_parser("train", help="SEED or SFT LoRA training (transformers Trainer)", description=__doc__,
                       allow_abbrev=False, add_help=False, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-h", "--help", action=LazyHelp, epilog=_help_epilog)
    p.add_argument("--help-all", action=LazyHelp, epilog=lambda: _help_epilog(every=True),
                   help="show every option, transformers' TrainingArguments included, and exit")
    p.add_argument("--config", default=None, help="YAML file of options (see configs/)")
    p.add_argument("--resume", default=None, metavar="DIR|auto",
                   help="continue from a checkpoint folder, or 'auto' = the latest checkpoint-N in output_dir")
    p.set_defaults(func=run, accepts_overrides=True)


def run(args: argparse.Namespace) -> int:
    from seedvlm.config import load_config
    from seedvlm.distributed import end_process_group
    from seedvlm.errors import SeedVLMError
    from seedvlm.train.config import SeedConfig
    from seedvlm.train.run import run_training

    if not args.config:
        log.warning(NO_CONFIG)
    try:
        try:  # bad options are bad input: one line, exit 2, before anything loads
            cfg = load_config(SeedConfig, args.config, args.overrides)
            cfg.require_paths()
        except SeedVLMError as e:
            print(f"seedvlm train: error: {e}", file=sys.stderr)
            return 2
        result = run_training(cfg, resume=args.resume)
    finally:
        end_process_group()
    print(f"{cfg.method}: {result['global_step']} steps ({result['nan_steps']} skipped as non-finite); "
          f"adapter: {result['adapter']}; metrics: {result['metrics']}")
    return 0
