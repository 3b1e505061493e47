"""POPE scored from the official files as they are: the POPE repository's question files (both versions), LLaVA's
llava_pope_test.jsonl with LLaVA-1.5-13B's real answers (F1 as LLaVA's eval_pope.py computes it), POPE's own answer
format, and the bad inputs each format invites. The official parser against POPE's evaluate.py rule on any string."""

import gzip
import json
import random
import shutil
from pathlib import Path

import pytest

from seedvlm.cli import main
from seedvlm.errors import SeedVLMError
from seedvlm.eval.pope import score_pope
from seedvlm.eval.pope_formats import load_pope_answers, load_pope_questions, match_answers, question_key
from seedvlm.eval.pope_parsers import disagreements, parse_official, parse_strict

REFERENCE = Path(__file__).resolve().parents[2] / "../shared/reference-data/official-eval"
needs_reference = pytest.mark.skipif(not REFERENCE.is_dir(), reason=f"reference data not found at {REFERENCE} "
                                     "(the POPE/LLaVA files these tests read)")
SPLITS = ("random", "popular", "adversarial")


# ------------------------------------------------------------------------------------------- the official parser
def evaluate_py(text: str) -> str:
    """POPE's evaluate.py decision, step by step as that script writes it (the test's own reading of it)."""
    if text.find(".") != -1:
        text = text.split(".")[0]
    text = text.replace(",", "")
    words = text.split(" ")
    if "No" in words or "not" in words or "no" in words:
        return "no"
    return "yes"


HOSTILE = ["", " ", "\n", "No", "no", "NO", "Not", "not", "No\nthere is", "no\tway", "Yes, no.", "Yes. No.",
           "No,there", "no,", ",no", "...no", "no.", ".no", "Yes", "I do not know", "nope", "No!", "(no)", "  no  ",
           "Non", "não", "No\u00a0way", "Nothing", "not.", "Yes\nNo"]


@pytest.mark.parametrize("text", HOSTILE)
def test_official_parser_equals_evaluate_py(text):
    assert parse_official(text) == evaluate_py(text)


def test_official_parser_on_random_strings():
    rng = random.Random(0)
    alphabet = ["No", "no", "not", "Not", "yes", "Yes", " ", "\n", "\t", ",", ".", "x", "o", "N", "\u00e9"]
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 8))) for _ in range(5000)]
    assert [parse_official(t) for t in texts] == [evaluate_py(t) for t in texts]
    assert disagreements(texts) == sum(parse_official(t) != parse_strict(t) for t in texts) > 0


def test_where_the_parsers_differ():
    assert (parse_official(""), parse_strict("")) == ("yes", None)
    assert (parse_official("No\nthere is"), parse_strict("No\nthere is")) == ("yes", "no")
    assert disagreements(["Yes", "No", "", "No\nthere is", "no"]) == 2


# ------------------------------------------------------------------------------------------- reference files
def _llava_answers_jsonl(tmp_path: Path) -> Path:
    """LLaVA-1.5-13B's answers written as LLaVA's model_vqa_loader writes them (gzipped JSONL)."""
    out = tmp_path / "llava-v1.5-13b.jsonl.gz"
    with gzip.open(REFERENCE / "pope_llava" / "llava-v1.5-13b.answers.tsv.gz", "rt", encoding="utf-8") as f, \
            gzip.open(out, "wt", encoding="utf-8") as g:
        for line in f:
            qid, text = line.rstrip("\n").split("\t", 1)
            g.write(json.dumps({"question_id": int(qid), "prompt": "...", "text": text, "answer_id": "x",
                                "model_id": "llava-v1.5-13b", "metadata": {}}) + "\n")
    return out


def _eval_pope_py(questions_file: Path, answers: list[dict], annotation_dir: Path) -> dict[str, float]:
    """F1 per category as LLaVA's eval_pope.py computes it: answers of a category in file order, zipped with the
    labels of coco_pope_<category>.json in file order (the test's own reading of that script)."""
    with gzip.open(questions_file, "rt") as f:
        category = {q["question_id"]: q["category"] for q in map(json.loads, f)}
    out = {}
    for split in SPLITS:
        with gzip.open(annotation_dir / f"coco_pope_{split}.json.gz", "rt") as f:
            labels = [json.loads(line)["label"] for line in f]
        preds = [evaluate_py(a["text"]) for a in answers if category[a["question_id"]] == split]
        tp = sum(p == "yes" and y == "yes" for p, y in zip(preds, labels))
        fp = sum(p == "yes" and y == "no" for p, y in zip(preds, labels))
        fn = sum(p == "no" and y == "yes" for p, y in zip(preds, labels))
        precision, recall = tp / (tp + fp), tp / (tp + fn)
        out[split] = 2 * precision * recall / (precision + recall)
    return out


@needs_reference
def test_llava_test_file_and_real_answers_give_llava_f1(tmp_path):
    answers = _llava_answers_jsonl(tmp_path)
    questions = REFERENCE / "pope_llava" / "llava_pope_test.jsonl.gz"
    assert main(["score", "pope", "--questions", str(questions), "--answers", str(answers),
                 "--out", str(tmp_path / "scored")]) == 0
    res = json.loads((tmp_path / "scored" / "results.json").read_text())
    assert res["questions_format"] == "llava" and res["parser"] == "official"
    assert res["splits"] == list(SPLITS) and res["random"]["n"] == 2910 and res["popular"]["n"] == 3000
    with gzip.open(answers, "rt") as f:
        rows = [json.loads(line) for line in f]
    expected = _eval_pope_py(questions, rows, REFERENCE / "pope_llava")
    for split in SPLITS:
        assert res[split]["f1"] == pytest.approx(expected[split], abs=1e-12)
    # the figures of the published run of eval_pope.py on this answer file
    assert [round(res[s]["f1"], 4) for s in SPLITS] == [0.8714, 0.8625, 0.8446]
    assert res["parser_disagreements"] == 0  # on these answers the parsers agree


@needs_reference
def test_llava_labels_from_the_wrong_version_are_refused(tmp_path):
    answers = _llava_answers_jsonl(tmp_path)
    rc = main(["score", "pope", "--questions", str(REFERENCE / "pope_llava" / "llava_pope_test.jsonl.gz"),
               "--labels", str(REFERENCE / "pope_coco"), "--answers", str(answers), "--out", str(tmp_path / "o")])
    assert rc != 0 and not (tmp_path / "o").exists()


@needs_reference
@pytest.mark.parametrize("version", ["pope_coco", "pope_llava"])
def test_pope_repository_folder_and_single_files(version, tmp_path):
    folder = tmp_path / version
    folder.mkdir()
    for split in SPLITS:
        shutil.copyfile(REFERENCE / version / f"coco_pope_{split}.json.gz", folder / f"coco_pope_{split}.json.gz")
    questions, info = load_pope_questions(folder)
    assert info["questions_format"] == "pope"
    assert [q["split"] for q in questions[:1]] == ["random"] and len({question_key(q) for q in questions}) == \
        len(questions)
    assert {q["question_id"] for q in questions if q["split"] == "popular"} == set(range(1, 3001))
    # POPE's own answer format: {"question", "answer"} by position; "No" to every other question
    answers = tmp_path / "answers.json"
    answers.write_text("".join(json.dumps({"question": q["text"], "answer": "No" if k % 2 else "Yes, there is."})
                               + "\n" for k, q in enumerate(questions)))
    assert main(["score", "pope", "--questions", str(folder), "--answers", str(answers), "--out",
                 str(tmp_path / "out")]) == 0
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    samples = [json.loads(line) for line in (tmp_path / "out" / "samples.jsonl").read_text().splitlines()]
    assert [s["question_id"] for s in samples[:3]] == [1, 2, 3]  # the original ids, not the qualified ones
    assert sum(res[s]["n"] for s in SPLITS) == len(questions)
    # one split file alone, with LLaVA-style answers by id
    one = folder / "coco_pope_adversarial.json.gz"
    by_id = tmp_path / "by_id.jsonl"
    by_id.write_text("".join(json.dumps({"question_id": q["question_id"], "text": "No"}) + "\n"
                             for q in questions if q["split"] == "adversarial"))
    assert main(["score", "pope", "--questions", str(one), "--answers", str(by_id), "--out",
                 str(tmp_path / "one")]) == 0
    one_res = json.loads((tmp_path / "one" / "results.json").read_text())
    assert one_res["splits"] == ["adversarial"] and one_res["adversarial"]["yes_ratio"] == 0.0
    # by id against the whole folder: ids repeat across splits, so the answers must say which split
    rc = main(["score", "pope", "--questions", str(folder), "--answers", str(by_id), "--out", str(tmp_path / "x")])
    assert rc != 0 and not (tmp_path / "x").exists()


# ------------------------------------------------------------------------------------------- tiny fixtures
def _write_lines(path: Path, rows: list[dict], gz: bool = False) -> Path:
    text = "".join(json.dumps(r) + "\n" for r in rows)
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text)
    return path


def _pope_rows(n: int, split_field: str | None = None) -> list[dict]:
    rows = [{"question_id": k, "image": f"im{(k + 1) // 2}.jpg", "text": f"Is there a thing {k}?",
             "label": "yes" if k % 2 else "no"} for k in range(1, n + 1)]
    return [dict(r, split=split_field) for r in rows] if split_field else rows


def test_llava_join_by_order_within_category(tmp_path):
    for split in ("random", "popular"):
        _write_lines(tmp_path / f"coco_pope_{split}.json", _pope_rows(4))
    # LLaVA's file interleaves categories and numbers questions across them
    llava = [{"question_id": 100 + k, "image": f"im{(j + 2) // 2}.jpg", "text": "Q\nAnswer briefly.",
              "category": cat} for k, (j, cat) in enumerate((j, c) for j in range(4) for c in ("popular", "random"))]
    _write_lines(tmp_path / "llava_pope_test.jsonl", llava)
    questions, info = load_pope_questions(tmp_path / "llava_pope_test.jsonl")
    assert info == {"questions_format": "llava", "labels": str(tmp_path)}
    labels = {(q["split"], q["question_id"]): q["label"] for q in questions}
    assert [labels[("random", 101 + 2 * j)] for j in range(4)] == ["yes", "no", "yes", "no"]
    assert [labels[("popular", 100 + 2 * j)] for j in range(4)] == ["yes", "no", "yes", "no"]
    # a count that disagrees is an error naming both files
    _write_lines(tmp_path / "coco_pope_random.json", _pope_rows(3))
    with pytest.raises(SeedVLMError, match=r"coco_pope_random.json has 3 questions but .*llava_pope_test.jsonl has 4"):
        load_pope_questions(tmp_path / "llava_pope_test.jsonl")


def test_gzip_and_seedvlm_folders(tmp_path):
    folder = tmp_path / "p"
    folder.mkdir()
    _write_lines(folder / "random.jsonl.gz", _pope_rows(4, "random"), gz=True)
    _write_lines(folder / "popular.jsonl", _pope_rows(4, "popular"))
    questions, info = load_pope_questions(folder, limit=2)
    assert info["questions_format"] == "seedvlm" and [q["split"] for q in questions] == ["random"] * 2 + \
        ["popular"] * 2
    rows, fmt = load_pope_answers(_write_lines(tmp_path / "a.jsonl", [
        {"question_id": q["question_id"], "split": q["split"], "text": "No"} for q in questions]))
    answers = match_answers(questions, rows, fmt, "answers")
    metrics, _ = score_pope(questions, answers)
    assert metrics["random"]["yes_ratio"] == 0.0 and metrics["mean"]["n"] == 4


@pytest.mark.parametrize("case, message", [
    ("unknown", "unknown format"),
    ("mixed", "mixes formats"),
    ("label", "label must be 'yes' or 'no'"),
    ("duplicate", "duplicate question_id 2 in split random"),
    ("count", "3 answers for 4 questions"),
    ("mixed_answers", "record 2: no question_id"),
])
def test_bad_input_is_one_clear_line_and_nothing_written(case, message, tmp_path, capsys):
    q = tmp_path / "q"
    q.mkdir()
    rows = _pope_rows(4)
    answers = [{"question": r["text"], "answer": "yes"} for r in rows]
    if case == "unknown":
        rows = [{"question_id": 1, "image": "a.jpg", "text": "?"}]
    elif case == "mixed":
        _write_lines(q / "llava_pope_test.jsonl", [{"question_id": 1, "image": "a", "text": "t", "category": "x"}])
    elif case == "label":
        rows[2]["label"] = "maybe"
    elif case == "duplicate":
        rows[2]["question_id"] = 2
    elif case == "count":
        answers = answers[:3]
    elif case == "mixed_answers":
        answers[0]["question_id"] = 1
    _write_lines(q / "coco_pope_random.json", rows)
    a = _write_lines(tmp_path / "answers.json", answers)
    assert main(["score", "pope", "--questions", str(q), "--answers", str(a), "--out", str(tmp_path / "out")]) != 0
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_eval_pope_on_pope_files_with_repeated_ids(tmp_path, monkeypatch):
    from PIL import Image

    from seedvlm.eval import runner

    images = tmp_path / "images"
    images.mkdir()
    for k in (1, 2):
        Image.new("RGB", (4, 4)).save(images / f"im{k}.jpg")
    folder = tmp_path / "coco"
    folder.mkdir()
    for split in ("random", "adversarial"):
        _write_lines(folder / f"coco_pope_{split}.json", _pope_rows(4))  # ids 1..4 in both splits
    monkeypatch.setattr(runner, "load_model", lambda path, adapter=None, device=None: ("fake", "proc"))
    monkeypatch.setattr(runner, "generate", lambda model, processor, imgs, prompts, **kw:
                        ["No" if "2" in p or "4" in p else "" for p in prompts])
    assert main(["eval", "pope", "--model", "m", "--questions", str(folder), "--images", str(images),
                 "--out", str(tmp_path / "run"), "--batch-size", "3"]) == 0
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    samples = [json.loads(line) for line in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    assert [(s["split"], s["question_id"]) for s in samples] == [(sp, k) for sp in ("random", "adversarial")
                                                                 for k in range(1, 5)]
    assert res["splits"] == ["random", "adversarial"] and res["random"]["accuracy"] == 1.0  # empty -> yes
    assert res["parser_disagreements"] == 4 and res["questions_format"] == "pope"
