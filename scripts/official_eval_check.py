"""Check seedvlm's official evaluation modes against the official codes' outputs on real files, and write the
figures that docs/evaluation.md quotes.

    python scripts/official_eval_check.py --reference REFERENCE \\
        --out docs/results/2026-12-05-official-eval-check/official_eval_check.json

REFERENCE is the folder that tests/eval/test_official_eval.py and tests/eval/test_chair.py read (they assert the same
things). It holds:
- llava15_greedy_500_official_mentions.jsonl: 500 LLaVA-1.5 descriptions with the words and objects that the
  official CHAIR code (LisaAnne/Hallucination utils/chair.py) extracts;
- pope_llava/: LLaVA's llava_pope_test.jsonl, the POPE label files it was built from, and LLaVA-1.5-13B's answers
  (question_id<TAB>text per line).
Writes: CHAIR mention agreement of both protocols with the official code (words and objects, or objects only: the
corrected protocol names a phrase by its full form, "dining table" where the official word is "table"); POPE
metrics of the 13B answers with both parsers and the number of answers the parsers decide differently.
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path


def chair_agreement(path: Path) -> dict:
    from seedvlm.eval.chair import CHAIR
    from seedvlm.eval.synonyms import COCO_CATEGORIES

    rows = [json.loads(line) for line in path.open(encoding="utf-8")]
    instances = {"images": [], "annotations": [], "categories": [{"id": k, "name": c}
                                                                 for k, c in enumerate(COCO_CATEGORIES, 1)]}
    out = {"captions": len(rows), "official_mentions": sum(len(r["official_objects"]) for r in rows)}
    for protocol in ("official", "corrected"):
        chair = CHAIR(instances, protocol=protocol)
        mentions = [chair.mentions(r["caption"]) for r in rows]
        words = sum(m == list(zip(r["official_words"], r["official_objects"])) for m, r in zip(mentions, rows))
        objects = sum([c for _, c in m] == r["official_objects"] for m, r in zip(mentions, rows))
        out[protocol] = {"captions_with_official_words_and_objects": words,
                         "captions_with_official_objects": objects, "mentions": sum(len(m) for m in mentions)}
    return out


def pope_llava(folder: Path) -> dict:
    from seedvlm.eval.pope import score_pope
    from seedvlm.eval.pope_formats import load_pope_questions, question_key

    questions, info = load_pope_questions(folder / "llava_pope_test.jsonl.gz")
    with gzip.open(folder / "llava-v1.5-13b.answers.tsv.gz", "rt", encoding="utf-8") as f:
        text = dict(line.rstrip("\n").split("\t", 1) for line in f)
    answers = {question_key(q): text[str(q["question_id"])] for q in questions}
    out = {"questions_format": info["questions_format"], "questions": len(questions)}
    for parser in ("official", "strict"):
        metrics, _ = score_pope(questions, answers, parser=parser)
        out[parser] = {s: {k: metrics[s][k] for k in ("accuracy", "precision", "recall", "f1", "yes_ratio", "n",
                                                      "unparsed")} for s in metrics["splits"]}
        out["parser_disagreements"] = metrics["parser_disagreements"]
    return out


def main() -> None:
    from seedvlm.io import write_json

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reference", required=True, help="the official-eval reference folder")
    ap.add_argument("--out", required=True, help="JSON file to write")
    args = ap.parse_args()
    ref = Path(args.reference)
    result = {"chair_llava15_greedy_500": chair_agreement(ref / "llava15_greedy_500_official_mentions.jsonl"),
              "pope_llava_v1.5_13b": pope_llava(ref / "pope_llava")}
    write_json(args.out, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
