"""`seedvlm readiness --model M --world DIR [--n 200]`: is a base model ready for SEED? (sees, yet hallucinates)

    seedvlm readiness --model assets/base-tiny --world runs/quickstart/world --n 150

The model describes the first N val images of the world (greedy) and answers three yes/no probes per image (a
present object, a random absent one, a co-occurring absent one), and is teacher-forced on held-out descriptions of
up to N val images, clean and perturbed. It is READY when all seven checks pass:
"""

from __future__ import annotations

import argparse

from seedvlm.options import HelpFormatter, positive_int


def register(sub: argparse._SubParsersAction) -> None:
    from seedvlm.pretrain.readiness import explain_checks

    p = sub.add_parser("readiness", help="check that a base model sees objects and still hallucinates like a VLM",
                       description=__doc__ + explain_checks(), formatter_class=HelpFormatter)
    p.add_argument("--model", required=True, help="llava-hf model folder")
    p.add_argument("--world", required=True, help="world folder (its val split is used)")
    p.add_argument("--n", type=positive_int, default=200, help="val images to describe and probe (>= 1)")
    p.add_argument("--max-new-tokens", type=positive_int, default=128, help="description length cap (>= 1)")
    p.add_argument("--batch-size", type=positive_int, default=32, help="generation batch size (>= 1)")
    p.add_argument("--seed", type=int, default=0, help="seed for picking the yes/no probe objects")
    p.add_argument("--device", default=None, help="cpu | cuda (default: cuda if available)")
    p.add_argument("--out", default=None, help="write the figures to this JSON file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from seedvlm.io import require_dir, write_json
    from seedvlm.models import load_for_inference
    from seedvlm.outputs import check_file_target
    from seedvlm.pretrain.readiness import format_readiness, readiness_report

    world = require_dir(args.world, "world folder")
    if args.out:
        check_file_target(args.out)  # before any model loads
    model, processor = load_for_inference(args.model, device=args.device)
    rep = readiness_report(model, processor, world, n_images=args.n, max_new_tokens=args.max_new_tokens,
                           seed=args.seed, batch_size=args.batch_size)
    print(format_readiness(rep))
    if args.out:
        write_json(args.out, rep)
    return 0
