"""`seedvlm score pope|chair|mme`: score answers or captions produced elsewhere, without loading any model.

    seedvlm score pope --questions pope/coco --answers answers.jsonl --out scored/pope
    seedvlm score pope --questions POPE/output/coco --answers answers.jsonl --parser official --out scored/pope
    seedvlm score pope --questions llava_pope_test.jsonl --labels pope/coco --answers llava-v1.5-13b.jsonl --out s
    seedvlm score chair --captions captions.jsonl --instances instances_val2014.json \\
        --references captions_val2014.json --protocol official --out scored/chair
    seedvlm score mme --questions MME_Benchmark_release_version --answers answers.jsonl --out scored/mme

Questions: a `seedvlm pope build` folder, the POPE repository's coco_pope_*.json files (one or a folder of them), or
LLaVA's llava_pope_test.jsonl (labels joined from --labels, default its own folder); gzipped files are read as they
are. Answers: LLaVA's answer JSONL ({"question_id", "text", ...}), seedvlm's, or POPE's {"question", "answer"} lines
(matched by position). Captions JSONL: {"image_id", "caption"} per line, one per image. An eval run's samples.jsonl
is valid input for all of them, and re-scoring it gives the numbers eval wrote. Output: OUT/results.json and
OUT/samples.jsonl, as `seedvlm eval`.
"""

from __future__ import annotations

import argparse

from seedvlm.options import add_pope_answer_options, positive_int


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("score", help="score POPE/MME answers or CHAIR captions without a model",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="score_task", metavar="TASK", required=True)

    p = sub.add_parser("pope", help="score a POPE answers file", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--questions", required=True,
                   help="POPE questions: a folder or file in seedvlm's, POPE's or LLaVA's format (.gz too)")
    p.add_argument("--answers", required=True,
                   help="answers: LLaVA/seedvlm JSONL (question_id, text) or POPE's {question, answer} lines")
    add_pope_answer_options(p)
    p.add_argument("--out", required=True, help="output folder for results.json and samples.jsonl")
    p.add_argument("--limit", type=positive_int, default=None,
                   help="only the first N questions of each split (as `eval pope --limit`)")
    p.set_defaults(func=run_pope)

    c = sub.add_parser("chair", help="score a captions file with CHAIR", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("--captions", required=True, help="captions JSONL (gzipped too): image_id, caption")
    c.add_argument("--instances", required=True, help="COCO-format instances JSON")
    c.add_argument("--references", required=True, help="COCO-format reference captions JSON")
    c.add_argument("--protocol", choices=("official", "corrected"), default="official",
                   help="official: the authors' chair.py word for word (default); corrected: seedvlm's fixes")
    c.add_argument("--out", required=True, help="output folder for results.json and samples.jsonl")
    c.set_defaults(func=run_chair)

    m = sub.add_parser("mme", help="score answers to MME's existence/count/position/color questions",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    m.add_argument("--questions", required=True, help="MME folder: one subfolder per subset in MME's layout")
    m.add_argument("--subsets", default="existence,count,position,color",
                   help="comma-separated subsets (default existence,count,position,color)")
    m.add_argument("--answers", required=True,
                   help="answers JSONL (question_id, text; an eval run's samples.jsonl) or a folder of MME "
                        "eval_tool result files ({subset}.txt: image, question, truth, answer per line)")
    m.add_argument("--out", required=True, help="output folder for results.json and samples.jsonl")
    m.set_defaults(func=run_mme)


def run_pope(args: argparse.Namespace) -> int:
    from seedvlm.eval.pope import questions_provenance, score_pope
    from seedvlm.eval.pope_formats import load_pope_answers, load_pope_questions, match_answers
    from seedvlm.eval.report import pope_table
    from seedvlm.eval.results import args_config, check_results_dir, write_results

    check_results_dir(args.out)
    questions, formats = load_pope_questions(args.questions, limit=args.limit, labels=args.labels)
    rows, fmt = load_pope_answers(args.answers)
    answers = match_answers(questions, rows, fmt, f"answers file {args.answers}")
    metrics, samples = score_pope(questions, answers, answers_source=f"answers file {args.answers}",
                                  parser=args.parser)
    metrics.update(questions_provenance(args.questions, formats))
    write_results(args.out, "pope", metrics, samples, config=args_config(args))
    print(pope_table(metrics))
    return 0


def run_chair(args: argparse.Namespace) -> int:
    from seedvlm.errors import SeedVLMError, empty_file
    from seedvlm.eval.chair import CHAIR
    from seedvlm.eval.report import chair_table
    from seedvlm.eval.results import args_config, check_results_dir, write_results
    from seedvlm.eval.pope_formats import read_records

    check_results_dir(args.out)
    records = read_records(args.captions, "captions file")  # gzip too; a repeated image is refused by CHAIR.evaluate
    if not records:
        raise empty_file("captions file", args.captions)
    for k, r in enumerate(records, 1):
        if "image_id" not in r or not isinstance(r.get("caption"), str):
            raise SeedVLMError(f"captions file {args.captions} record {k}: needs 'image_id' and a string 'caption'")
    chair = CHAIR(args.instances, args.references, protocol=args.protocol)
    unknown = [str(r["image_id"]) for r in records if str(r["image_id"]) not in chair.image_ids]
    if unknown:
        raise SeedVLMError(f"captions file {args.captions}: {len(unknown)} image_ids are not in "
                           f"{chair.instances_source}, e.g. {', '.join(unknown[:5])}")
    metrics, samples = chair.evaluate(({"image_id": r["image_id"], "caption": r["caption"]} for r in records),
                                      source=f"captions file {args.captions}")
    write_results(args.out, "chair", metrics, samples, config=args_config(args))
    print(chair_table(metrics))
    return 0


def run_mme(args: argparse.Namespace) -> int:
    from seedvlm.eval.mme import load_mme, load_mme_answers, score_mme
    from seedvlm.eval.report import mme_table
    from seedvlm.eval.results import args_config, write_results

    questions = load_mme(args.questions, [s for s in args.subsets.split(",") if s])
    answers = load_mme_answers(args.answers, questions)
    metrics, samples = score_mme(questions, answers, answers_source=f"answers {args.answers}")
    metrics["questions"] = str(args.questions)
    write_results(args.out, "mme", metrics, samples, config=args_config(args))
    print(mme_table(metrics))
    return 0
