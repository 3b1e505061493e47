"""`seedvlm merge`: fold a LoRA adapter into its base model and write a plain checkpoint folder.

    seedvlm merge --model runs/base --adapter runs/seed/adapter --out runs/seed_merged [--dtype auto]

The adapter must come from this base (its seedvlm_base.json fingerprint is checked); the output (weights +
processor) is written atomically and loads with LlavaForConditionalGeneration.from_pretrained, or for the other
families (Qwen2-VL/Qwen2.5-VL, LLaVA-NeXT, SmolVLM/Idefics3) with their own class, the base folder's processor,
tokenizer and chat template copied beside the weights.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("merge", help="merge a LoRA adapter into its base model (merge_and_unload)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="base model folder (llava-hf or another family's)")
    p.add_argument("--adapter", required=True, help="peft adapter folder (e.g. runs/seed/adapter)")
    p.add_argument("--out", required=True,
                   help="output folder for the merged model: new, empty, or an earlier merge (which is replaced)")
    p.add_argument("--dtype", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                   help="dtype of the saved weights; auto = the base checkpoint's [auto]")
    p.add_argument("--allow-unverified-adapter", action="store_true",
                   help="merge an adapter that has no seedvlm_base.json (its base cannot be checked)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from seedvlm.outputs import check_dir_target, owned_by
    from seedvlm.train.lora import merge

    check_dir_target(args.out, "--out", owns=owned_by("seedvlm_merge.json"))  # before any weights load
    out = merge(args.model, args.adapter, args.out, dtype=args.dtype, allow_unverified=args.allow_unverified_adapter)
    print(f"wrote merged model to {out}")
    return 0
