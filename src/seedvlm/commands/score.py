"""`seedvlm score pope|chair`: score answers or captions produced elsewhere, without loading any model.

    seedvlm score pope --questions pope/coco --answers answers.jsonl --out scored/pope
    seedvlm score chair --captions captions.jsonl --instances instances_val2014.json \\
        --references captions_val2014.json --out scored/chair

Answers JSONL: {"question_id", "text"} per line (LLaVA's answer files; "answer" is accepted for "text").
Captions JSONL: {"image_id", "caption"} per line. An eval run's samples.jsonl is valid input for both, and
re-scoring it gives the numbers eval wrote. Output: OUT/results.json and OUT/samples.jsonl, as `seedvlm eval`.
"""

from __future__ import annotations

import argparse

from seedvlm.options import positive_int


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("score", help="score POPE answers or CHAIR captions without a model",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="score_task", metavar="TASK", required=True)

    p = sub.add_parser("pope", help="score a POPE answers file", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--questions", required=True, help="POPE folder or one questions .jsonl")
    p.add_argument("--answers", required=True, help="answers JSONL: question_id, text")
    p.add_argument("--out", required=True, help="output folder for results.json and samples.jsonl")
    p.add_argument("--limit", type=positive_int, default=None,
                   help="only the first N questions of each split (as `eval pope --limit`)")
    p.set_defaults(func=run_pope)

    c = sub.add_parser("chair", help="score a captions file with CHAIR", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("--captions", required=True, help="captions JSONL: image_id, caption")
    c.add_argument("--instances", required=True, help="COCO-format instances JSON")
    c.add_argument("--references", required=True, help="COCO-format reference captions JSON")
    c.add_argument("--out", required=True, help="output folder for results.json and samples.jsonl")
    c.set_defaults(func=run_chair)


def run_pope(args: argparse.Namespace) -> int:
    from seedvlm.eval.pope import load_answers, load_questions, questions_provenance, score_pope
    from seedvlm.eval.report import pope_table
    from seedvlm.eval.results import args_config, check_results_dir, write_results

    check_results_dir(args.out)
    questions = load_questions(args.questions, limit=args.limit)
    answers = load_answers(args.answers)
    metrics, samples = score_pope(questions, answers, answers_source=f"answers file {args.answers}")
    metrics.update(questions_provenance(args.questions))
    write_results(args.out, "pope", metrics, samples, config=args_config(args))
    print(pope_table(metrics))
    return 0


def run_chair(args: argparse.Namespace) -> int:
    from seedvlm.errors import SeedVLMError, empty_file
    from seedvlm.eval.chair import CHAIR
    from seedvlm.eval.report import chair_table
    from seedvlm.eval.results import args_config, check_results_dir, write_results
    from seedvlm.io import duplicates, read_jsonl

    check_results_dir(args.out)
    records = read_jsonl(args.captions, "captions file")
    if not records:
        raise empty_file("captions file", args.captions)
    for k, r in enumerate(records, 1):
        if "image_id" not in r or not isinstance(r.get("caption"), str):
            raise SeedVLMError(f"captions file {args.captions} record {k}: needs 'image_id' and a string 'caption'")
    repeated = duplicates(str(r["image_id"]) for r in records)
    if repeated:  # each would be counted again in every CHAIR figure
        raise SeedVLMError(f"captions file {args.captions}: duplicate image_ids, e.g. {', '.join(repeated[:5])}; "
                           f"give one caption per image")
    chair = CHAIR(args.instances, args.references)
    unknown = [str(r["image_id"]) for r in records if str(r["image_id"]) not in chair.image_ids]
    if unknown:
        raise SeedVLMError(f"captions file {args.captions}: {len(unknown)} image_ids are not in "
                           f"{chair.instances_source}, e.g. {', '.join(unknown[:5])}")
    metrics, samples = chair.evaluate({"image_id": r["image_id"], "caption": r["caption"]} for r in records)
    write_results(args.out, "chair", metrics, samples, config=args_config(args))
    print(chair_table(metrics))
    return 0
