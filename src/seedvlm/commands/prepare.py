"""`seedvlm prepare`: LLaVA-Instruct conversations -> training records {"id", "image", "prompt", "answer"}.

    seedvlm prepare --input llava_instruct_150k.json --images coco/train2017 --out runs/train.json
    seedvlm prepare --input worlds/main/instruct_train.json --images worlds/main/images/train --out runs/train.json \\
        --max-samples 2000 --min-answer-words 1 --seed 0

LLaVA-Instruct names its images as COCO train2017 does (000000033471.jpg): --images is the train2017 folder.
By default (--turns history) one record per conversation, trained as one sequence with every answer supervised and
the earlier turns in context (as LLaVA trains); --turns each makes one record per (human, gpt) pair without them.
`<image>` is removed from the question (the chat template adds it). What is skipped, and why, is printed with
counts and example ids (a missing image with the path that was tried).
"""

from __future__ import annotations

import argparse

from seedvlm.choices import PromptStyle, values
from seedvlm.options import non_negative_int, positive_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prepare", help="convert LLaVA-Instruct conversations into training records",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", required=True, help="LLaVA-Instruct JSON (a list of {id, image, conversations})")
    p.add_argument("--images", required=True,
                   help="folder the 'image' names are relative to (for LLaVA-Instruct: COCO train2017)")
    p.add_argument("--out", required=True, help="output JSON of records (written atomically)")
    p.add_argument("--max-samples", type=positive_int, default=None,
                   help="keep at most N records, drawn at random with --seed (original order kept)")
    p.add_argument("--min-answer-words", type=non_negative_int, default=1, help="skip answers shorter than K words [1]")
    p.add_argument("--turns", choices=("history", "each", "first"), default="history",
                   help="history: one record per conversation, every answer supervised with its earlier turns in "
                        "context (as LLaVA trains); each: one record per turn pair without history; first: only "
                        "the first pair [history]")
    p.add_argument("--seed", type=int, default=0, help="seed of the --max-samples draw [0]")
    p.add_argument("--prompt-style", choices=values(PromptStyle), default=None,
                   help="record the template these records are for in each record; `seedvlm train` then refuses "
                        "another --prompt-style (default: not recorded; train picks)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from seedvlm.data.prepare import prepare
    from seedvlm.outputs import check_file_target

    check_file_target(args.out)
    report = prepare(args.input, args.images, args.out, max_samples=args.max_samples,
                     min_answer_words=args.min_answer_words, seed=args.seed, turns=args.turns,
                     prompt_style=args.prompt_style)
    print(report.summary())
    print(f"wrote {report.sampled if report.sampled is not None else report.kept} records to {args.out}")
    return 0
