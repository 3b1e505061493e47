"""`seedvlm demo`: base greedy, SEED greedy and SEED + contrastive decoding side by side on a few images.

    seedvlm demo --model runs/base --adapter runs/seed/adapter --image a.png --image b.png \\
        --instances world/instances_val.json --html demo.html
    seedvlm demo --model runs/base --image a.png --beta 1.0 --max-new-tokens 64   # base vs base + contrastive

With --instances (COCO instances JSON; each image matched by its file name) the objects an answer names that are not
annotated in the image are highlighted (CHAIR's reading of the text). --html writes a self-contained page.
"""

from __future__ import annotations

import argparse

from seedvlm.choices import PromptStyle, values
from seedvlm.models.families.options import add_family_options, given_options
from seedvlm.options import bounded, check_prompt, non_negative_int, positive_int


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("demo", help="compare base, SEED and SEED + contrastive decoding on images",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True,
                   help="model folder (the base): llava-hf LLaVA-1.5, or a Qwen2-VL, LLaVA-NeXT or SmolVLM folder")
    p.add_argument("--adapter", default=None, help="SEED peft adapter folder; without it: base vs base + contrastive")
    p.add_argument("--image", action="append", required=True, metavar="PATH",
                   help="an image (repeat for several: one row each)")
    p.add_argument("--question", default="Please describe this image in detail.", help="the prompt for every image")
    p.add_argument("--instances", default=None,
                   help="COCO instances JSON: mark named objects that are not annotated in the image")
    p.add_argument("--beta", type=bounded(float, 0), default=1.0,
                   help="contrast strength b >= 0 (default 1.0, VCD's)")
    p.add_argument("--noise", choices=("gaussian", "ddpm", "mask"), default="gaussian",
                   help="perturbation of the noisy pass (default gaussian, a=0.3; ddpm = VCD's step 500)")
    p.add_argument("--alpha", type=bounded(float, 0, 1, lo_open=True), default=None,
                   help="noise level a in (0, 1] (default 0.3 gaussian, 0.745 ddpm)")
    p.add_argument("--plausibility", type=bounded(float, 0, 1, hi_open=True), default=0.1,
                   help="plausibility cut g in [0, 1) (default 0.1, VCD's); 0 disables it")
    p.add_argument("--max-new-tokens", type=positive_int, default=64, help="new tokens per answer, >= 1 (default 64)")
    p.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--threads", type=non_negative_int, default=0,
                   help="torch CPU threads (default 0 = torch's choice; 1 is steadier on a busy shared CPU)")
    p.add_argument("--prompt-style", choices=values(PromptStyle), default="hf",
                   help="hf: the folder's chat template and processor (default); llava-1.5: LLaVA-1.5's Vicuna v1 "
                        "prompt and pad-to-square images (use the style the model was trained with)")
    p.add_argument("--allow-unverified-adapter", action="store_true",
                   help="load an adapter without seedvlm_base.json (its base cannot be checked)")
    p.add_argument("--static-cache", action="store_true",
                   help="decode with a static KV cache and a compiled decode step (docs/evaluation.md)")
    p.add_argument("--html", default=None, metavar="OUT.html", help="also write a self-contained HTML page")
    p.add_argument("--color", choices=("auto", "always", "never"), default="auto",
                   help="ANSI colors in the terminal (default auto: only on a terminal, and not with NO_COLOR)")
    add_family_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from seedvlm.demo import render_html, render_terminal, run_demo, use_color
    from seedvlm.io import write_text
    from seedvlm.outputs import check_file_target

    if args.html:
        check_file_target(args.html, "--html")  # before any model loads
    check_prompt(args.question, "--question")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    result = run_demo(args.model, args.image, adapter=args.adapter, question=args.question,
                      instances=args.instances, beta=args.beta, max_new_tokens=args.max_new_tokens,
                      device=args.device, noise=args.noise, alpha=args.alpha,
                      plausibility=args.plausibility or None, seed=args.seed, prompt_style=args.prompt_style,
                      allow_unverified_adapter=args.allow_unverified_adapter, static_cache=args.static_cache,
                      options=given_options(args))
    print(render_terminal(result, color=use_color(args.color)), end="")
    if args.html:
        write_text(args.html, render_html(result))
        print(f"wrote {args.html}")
    return 0
