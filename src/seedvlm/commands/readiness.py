"""`seedvlm readiness --model M --world DIR [--n 200]`: is a base model ready for SEED? (sees, yet hallucinates)

    seedvlm readiness --model assets/base-tiny --world runs/quickstart/world --n 150
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("readiness", help="check that a base model sees objects and still hallucinates like a VLM")
    p.add_argument("--model", required=True, help="llava-hf model folder")
    p.add_argument("--world", required=True, help="world folder (its val split is used)")
    p.add_argument("--n", type=int, default=200, help="val images to describe and probe")
    p.add_argument("--max-new-tokens", type=int, default=128, help="description length cap")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0, help="seed for picking the yes/no probe objects")
    p.add_argument("--device", default=None, help="cpu | cuda (default: cuda if available)")
    p.add_argument("--out", default=None, help="write the figures to this JSON file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from seedvlm.io import require_dir, write_json
    from seedvlm.models import load_for_inference
    from seedvlm.pretrain.readiness import format_readiness, readiness_report

    world = require_dir(args.world, "world folder")
    model, processor = load_for_inference(args.model, device=args.device)
    rep = readiness_report(model, processor, world, n_images=args.n, max_new_tokens=args.max_new_tokens,
                           seed=args.seed, batch_size=args.batch_size)
    print(format_readiness(rep))
    if args.out:
        write_json(args.out, rep)
    return 0
