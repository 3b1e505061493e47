"""`seedvlm teacher-signal`: is SEED's teacher signal there? The base model teacher-forced on a world's detailed
descriptions with the clean and the noisy image; log-probabilities, their difference, the effect of purification
and KL(clean || noisy) at the first token of every object mention, for present objects, the world's injected
absent partners and other absent objects (seedvlm.diagnostics.teacher_signal explains each column).

    seedvlm teacher-signal --model assets/base-tiny --world runs/quickstart/world \\
        --out runs/teacher_signal.json [--alpha 0.3] [--beta 0.6] [--n 400] [--within-objects] [--all-kinds]

Prints the Markdown table; --out also writes the report as JSON.
"""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("teacher-signal", help="clean vs noisy teacher at the object mentions of a world's "
                                                     "descriptions (does SEED's premise hold?)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="llava-hf base model folder (the teacher)")
    p.add_argument("--world", required=True, help="a folder written by `seedvlm world`")
    p.add_argument("--split", default="train", help="train (has the injected hallucinations) or val")
    p.add_argument("--n", type=int, default=None, help="first N detailed descriptions (default: all)")
    p.add_argument("--alpha", type=float, default=0.3,
                   help="noise level a (default 0.3, the reference implementation's)")
    p.add_argument("--beta", type=float, default=0.6, help="purification strength b (default 0.6)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0, help="random seed of the noise")
    p.add_argument("--within-objects", action="store_true",
                   help="purify only among the object words, keeping their clean total")
    p.add_argument("--all-kinds", action="store_true",
                   help="also the change under the other perturbation kinds (stronger gaussian, ddpm, mask, blur, "
                        "blank)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=None, help="write the report as JSON here")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from seedvlm.diagnostics.teacher_signal import markdown, teacher_signal
    from seedvlm.errors import SeedVLMError
    from seedvlm.io import write_json
    from seedvlm.models import load_processor
    from seedvlm.models.loading import load_model

    instruct = Path(args.world) / f"instruct_{args.split}.json"
    if not instruct.is_file():  # before the model loads
        raise SeedVLMError(f"world {args.world}: no {instruct.name} (write the world with `seedvlm world`)")
    model = load_model(args.model, device=args.device, dtype=torch.float32).eval()
    report = teacher_signal(model, load_processor(args.model), Path(args.world), args.split, args.n, args.alpha,
                            args.beta, args.batch_size, args.seed, args.within_objects, args.all_kinds)
    report["model"] = args.model
    print(markdown(report))
    if args.out:
        write_json(args.out, report)
        print(f"wrote {args.out}", file=sys.stderr)
    return 0
