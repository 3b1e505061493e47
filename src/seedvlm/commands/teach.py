"""`seedvlm teach`: run the frozen teacher (the base model, no adapter) once over the prepared data and store its
top-k answer-row logits, clean and noisy, as a teacher cache for `seedvlm train --teacher-cache`.

    seedvlm teach --config configs/seed_tiny.yaml --out runs/teacher_cache [--top-k 64]
    seedvlm train --config configs/seed_tiny.yaml --teacher-cache runs/teacher_cache
    seedvlm teach --config configs/seed_llava15_7b.yaml --model /models/llava-1.5-7b-hf \\
        --data runs/llava_train.json --images coco/train2017 --out runs/llava_teacher --batch-size 8

Reads the training config (any option a training YAML holds is accepted) but uses only the options listed below
(another training option on its command line is ignored with a notice), so the cache matches the run that will
use it; the
noisy view of sample i is drawn with per_sample_generator(seed, i, step=0), the same in every epoch. Writes
CACHE/shard-NNNNN.safetensors + CACHE/index.json atomically (nothing at CACHE until complete). Training refuses a
cache made for another data file, base model, noise setting, prompt style or (other families than LLaVA-1.5:
Qwen2-VL/Qwen2.5-VL, LLaVA-NeXT, SmolVLM/Idefics3) chat template. docs/performance.md: what is kept, the
approximation, the storage per sample. Several GPUs: `accelerate launch --num_processes N -m seedvlm teach ...`
(rank r writes shards r, r+N, ...; the same cache as one process when the shards are the same size).
"""

from __future__ import annotations

import argparse
import logging
import sys


def _help_epilog() -> str:
    from seedvlm.config import config_help
    from seedvlm.train.config import TEACH_FIELDS, SeedConfig

    return ("options it reads from the training config (override with --key value):\n"
            + config_help(SeedConfig, {"": TEACH_FIELDS}))


def register(sub: argparse._SubParsersAction) -> None:
    from seedvlm.config import LazyHelp

    p = sub.add_parser("teach", help="store the frozen teacher's top-k logits once (a teacher cache for train)",
                       description=__doc__, allow_abbrev=False, add_help=False,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-h", "--help", action=LazyHelp, epilog=_help_epilog)
    p.add_argument("--config", default=None, help="the training YAML of the run that will use the cache")
    p.add_argument("--out", required=True, metavar="CACHE", help="cache folder to write (replaced when complete)")
    p.add_argument("--top-k", type=int, default=64,
                   help="kept tokens per answer row: clean top-k + noisy top-k (filled with the next clean tokens "
                        "to 2k); default 64")
    p.add_argument("--batch-size", type=int, default=None, help="samples per forward (default: the config's "
                                                                  "per_device_train_batch_size)")
    p.add_argument("--value-dtype", default="float16", choices=("float16", "bfloat16", "float32"),
                   help="storage of the kept logits (default float16)")
    p.add_argument("--shard-samples", type=int, default=4096, help="samples per shard file (default 4096)")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    p.set_defaults(func=run, accepts_overrides=True)


def run(args: argparse.Namespace) -> int:
    from seedvlm import distributed
    from seedvlm.config import load_config, parse_overrides
    from seedvlm.errors import SeedVLMError
    from seedvlm.models.families.registry import model_family
    from seedvlm.outputs import check_dir_target, owned_by
    from seedvlm.train.config import DEPRECATED_KEYS, TEACH_FIELDS, SeedConfig
    from seedvlm.train.family_run import check_family_options
    from seedvlm.train.teacher_cache import teach

    try:  # bad options are bad input: one line, exit 2, before the model loads
        cfg = load_config(SeedConfig, args.config, args.overrides)
        cfg.require_paths()
        family = model_family(cfg.model)
        if family is not None:
            check_family_options(cfg, family)
        check_dir_target(args.out, "--out", owns=owned_by("index.json"))  # before the teacher runs
    except SeedVLMError as e:
        print(f"seedvlm teach: error: {e}", file=sys.stderr)
        return 2
    unused = [k for k in parse_overrides(args.overrides) if DEPRECATED_KEYS.get(k, k) not in TEACH_FIELDS]
    if unused:  # training options, valid but without effect on the cache
        logging.getLogger("seedvlm.train").warning("teach does not use %s (ignored; `seedvlm teach --help` lists "
                                                   "what it reads)", ", ".join("--" + k.replace("_", "-")
                                                                               for k in unused))
    index = teach(cfg, args.out, top_k=args.top_k, batch_size=args.batch_size, value_dtype=args.value_dtype,
                  shard_samples=args.shard_samples, device=args.device)
    if not distributed.is_main():
        return 0
    print(f"teacher cache {args.out}: {index['n_samples']} samples, {index['n_rows']} answer rows, "
          f"{index['kept_per_row']} kept tokens per row, {index['bytes'] / 1e6:.1f} MB "
          f"({index['bytes_per_sample'] / 1e3:.1f} kB per sample, {index['bytes_per_row']:.0f} B per row), "
          f"{index['seconds']:.0f} s")
    return 0
