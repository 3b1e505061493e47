"""`seedvlm prepare`: LLaVA-Instruct conversations -> training records {"id", "image", "prompt", "answer"}.

    seedvlm prepare --input llava_instruct_150k.json --images coco/train2014 --out runs/train.json
    seedvlm prepare --input worlds/main/instruct_train.json --images worlds/main/images/train --out runs/train.json \\
        --max-samples 2000 --min-answer-words 1 --seed 0

One record per (human, gpt) turn pair with the conversation's image; `<image>` is removed from the question (the
chat template adds it). What is skipped, and why, is printed with counts and example ids.
"""

from __future__ import annotations

import argparse

from seedvlm.options import non_negative_int, positive_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prepare", help="convert LLaVA-Instruct conversations into training records",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", required=True, help="LLaVA-Instruct JSON (a list of {id, image, conversations})")
    p.add_argument("--images", required=True, help="folder the 'image' names are relative to")
    p.add_argument("--out", required=True, help="output JSON of records (written atomically)")
    p.add_argument("--max-samples", type=positive_int, default=None,
                   help="keep at most N records, drawn at random with --seed (original order kept)")
    p.add_argument("--min-answer-words", type=non_negative_int, default=1, help="skip answers shorter than K words [1]")
    p.add_argument("--turns", choices=("all", "first"), default="all",
                   help="all turn pairs of a conversation, or only the first [all]")
    p.add_argument("--seed", type=int, default=0, help="seed of the --max-samples draw [0]")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from seedvlm.data.prepare import prepare
    from seedvlm.outputs import check_file_target

    check_file_target(args.out)
    report = prepare(args.input, args.images, args.out, max_samples=args.max_samples,
                     min_answer_words=args.min_answer_words, seed=args.seed, turns=args.turns)
    print(report.summary())
    print(f"wrote {report.sampled if report.sampled is not None else report.kept} records to {args.out}")
    return 0
