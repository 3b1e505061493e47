"""MME's hallucination subsets (existence, count, position, color): questions from MME's own layout, scored as MME's
`eval_tool/calculation.py` scores them.

Layout, per subset folder under the MME root: either images plus `questions_answers_YN/<image stem>.txt`
(with the images in `images/`), or one folder of image + txt pairs (what MME ships for these four subsets). Each txt
line: "question<TAB>Yes" or "question<TAB>No"; MME asks two questions per image.

Scoring (calculation.py): an answer is lowercased; exactly "yes"/"no" is itself, else "yes" if its first four
characters contain "yes", else "no" if they contain "no", else "other" (always wrong). Per subset: accuracy over
questions, accuracy+ = images with both questions right / images, score = (accuracy + accuracy+) * 100 (0..200).
The total is the sum of the subset scores.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

from seedvlm.errors import SeedVLMError
from seedvlm.eval.pope_formats import read_records

SUBSETS = ("existence", "count", "position", "color")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def parse_mme(answer: str | None) -> str:
    """calculation.py's reading of a prediction: "yes", "no" or "other"."""
    text = (answer or "").lower()
    if text in ("yes", "no"):
        return text
    head = text[:4]
    return "yes" if "yes" in head else "no" if "no" in head else "other"


def _image_for(txt: Path, image_dir: Path) -> Path:
    for suffix in IMAGE_SUFFIXES:
        p = image_dir / (txt.stem + suffix)
        if p.is_file():
            return p
    raise SeedVLMError(f"MME file {txt}: no image {txt.stem}{{{','.join(IMAGE_SUFFIXES)}}} in {image_dir}")


def _subset_files(folder: Path) -> list[tuple[Path, Path]]:
    """(txt, image) pairs of one subset folder, in either of MME's layouts."""
    qa = folder / "questions_answers_YN"
    if qa.is_dir():
        image_dir = folder / "images" if (folder / "images").is_dir() else folder
        txts = sorted(qa.glob("*.txt"))
    else:
        image_dir = folder
        txts = sorted(folder.glob("*.txt"))
    if not txts:
        raise SeedVLMError(f"MME subset {folder}: no question files (questions_answers_YN/*.txt or *.txt beside "
                           "the images)")
    return [(t, _image_for(t, image_dir)) for t in txts]


def load_mme(root: str | Path, subsets: Sequence[str] = SUBSETS) -> list[dict]:
    """Questions of the given subsets: {question_id, subset, image (relative to root), text, label}. Errors name the
    file and the line."""
    root = Path(root)
    if not root.is_dir():
        raise SeedVLMError(f"MME folder not found: {root}")
    out: list[dict] = []
    for subset in subsets:
        folder = root / subset
        if not folder.is_dir():
            raise SeedVLMError(f"MME folder {root} has no subset {subset!r} (expected {folder})")
        for txt, image in _subset_files(folder):
            rel = image.relative_to(root).as_posix()
            try:
                lines = txt.read_text(encoding="utf-8").splitlines()
            except UnicodeDecodeError as e:
                raise SeedVLMError(f"MME file {txt} is not UTF-8 text: {e}") from None
            k = 0
            for n, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                parts = line.rstrip("\r\n").split("\t")
                if len(parts) != 2 or parts[1].strip() not in ("Yes", "No"):
                    raise SeedVLMError(f"MME file {txt} line {n}: expected 'question<TAB>Yes' or 'question<TAB>No', "
                                       f"got {line[:80]!r}")
                out.append({"question_id": f"{rel}#{k}", "subset": subset, "image": rel, "text": parts[0],
                            "label": parts[1].strip().lower()})
                k += 1
            if k != 2:
                raise SeedVLMError(f"MME file {txt}: {k} questions; MME asks two per image (its accuracy+ pairs them)")
    return out


def score_mme(questions: Sequence[dict], answers: dict[str, str], answers_source: str = "answers"
              ) -> tuple[dict, list[dict]]:
    """(metrics, samples). metrics: {"subsets": [...], <subset>: {accuracy, accuracy_plus, score, n, n_images,
    other}, "score": sum of subset scores}."""
    missing = [q["question_id"] for q in questions if q["question_id"] not in answers]
    if missing:
        raise SeedVLMError(f"{answers_source}: no answer for {len(missing)} of {len(questions)} questions, e.g. "
                           f"{', '.join(missing[:5])}")
    unknown = sorted(set(answers) - {q["question_id"] for q in questions})
    if unknown:
        raise SeedVLMError(f"{answers_source}: {len(unknown)} answers are to no question, e.g. "
                           f"{', '.join(unknown[:5])}")
    samples = []
    for q in questions:
        parsed = parse_mme(answers[q["question_id"]])
        samples.append({"question_id": q["question_id"], "subset": q["subset"], "image": q["image"],
                        "question": q["text"], "text": answers[q["question_id"]], "parsed": parsed,
                        "label": q["label"], "correct": parsed == q["label"]})
    order = list(dict.fromkeys(s["subset"] for s in samples))
    metrics: dict[str, Any] = {"subsets": order}
    for subset in order:
        rows = [s for s in samples if s["subset"] == subset]
        by_image: dict[str, list[bool]] = defaultdict(list)
        for s in rows:
            by_image[s["image"]].append(s["correct"])
        accuracy = sum(s["correct"] for s in rows) / len(rows)
        plus = sum(all(v) for v in by_image.values()) / len(by_image)
        metrics[subset] = {"accuracy": accuracy, "accuracy_plus": plus, "score": (accuracy + plus) * 100,
                           "n": len(rows), "n_images": len(by_image),
                           "other": sum(s["parsed"] == "other" for s in rows)}
    metrics["score"] = sum(metrics[s]["score"] for s in order)
    return metrics, samples


def load_mme_answers(path: str | Path, questions: Sequence[dict]) -> dict[str, str]:
    """{question_id: answer}: from a JSONL file ({"question_id", "text"}, e.g. an eval run's samples.jsonl) or from
    a folder of MME eval_tool result files ({subset}.txt, "image<TAB>question<TAB>truth<TAB>answer" per line),
    matched to the questions by (subset, image name, question)."""
    path = Path(path)
    if path.is_file():
        out: dict[str, str] = {}
        for k, row in enumerate(read_records(path, "answers file"), 1):
            if "question_id" not in row or not isinstance(row.get("text"), (str, type(None))):
                raise SeedVLMError(f"answers file {path} record {k}: needs 'question_id' and a string 'text'")
            if str(row["question_id"]) in out:
                raise SeedVLMError(f"answers file {path} record {k}: duplicate question_id {row['question_id']}")
            out[str(row["question_id"])] = row.get("text") or ""
        return out
    if not path.is_dir():
        raise SeedVLMError(f"answers not found: {path} (a JSONL file or a folder of MME result files)")
    by_text = {(q["subset"], Path(q["image"]).name, q["text"]): q["question_id"] for q in questions}
    out = {}
    for subset in dict.fromkeys(q["subset"] for q in questions):
        f = path / f"{subset}.txt"
        if not f.is_file():
            raise SeedVLMError(f"MME results folder {path} has no {subset}.txt")
        for n, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            parts = line.split("\t")
            if len(parts) != 4:
                raise SeedVLMError(f"MME results file {f} line {n}: expected image, question, truth and answer "
                                   f"separated by tabs, got {len(parts)} fields")
            qid = by_text.get((subset, parts[0], parts[1]))
            if qid is None:
                raise SeedVLMError(f"MME results file {f} line {n}: no question {parts[1][:60]!r} about {parts[0]}")
            if qid in out:
                raise SeedVLMError(f"MME results file {f} line {n}: a second answer to {qid}")
            out[qid] = parts[3]
    return out
