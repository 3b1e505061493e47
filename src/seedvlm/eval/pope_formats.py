"""POPE question and answer files in the formats people have: read as they are, checked, and matched.

Questions (`load_pope_questions`), a file or a folder, gzipped or not:
- "seedvlm": `seedvlm pope build` output (a folder of {split}.jsonl + meta.json; rows carry `split`);
- "pope": the POPE repository's `coco_pope_{random,popular,adversarial}.json` (JSON lines in a `.json` file, ids
  1..N in every split; the split is the file name's part after "pope_"), one file or a folder of them;
- "llava": LLaVA's `llava_pope_test.jsonl` (all splits in one file, a `category` field, no labels). Labels are joined
  from the `coco_pope_{category}.json` files of `labels` (default: the questions file's folder) the way LLaVA's
  `eval_pope.py` joins them: the k-th question of a category gets the k-th label of that category's file; counts
  and image names must agree.
Question ids need only be unique within a split: `question_key` qualifies them by split; outputs keep the originals.

Answers (`load_pope_answers`): LLaVA's `model_vqa_loader` JSONL (`question_id`, `text`, ...), seedvlm's own answers
or samples.jsonl (`question_id`, `text`, optionally `split`), or POPE's `{"question", "answer"}` lines with no id,
matched to the questions by position (the counts must be equal).
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path
from typing import Any, Iterable

from seedvlm.errors import SeedVLMError, not_utf8
from seedvlm.eval.yes_prob import answer_with_scores

OBJECT_SPLITS = ("random", "popular", "adversarial")
_SUFFIXES = (".jsonl.gz", ".json.gz", ".jsonl", ".json")
_REQUIRED = ("question_id", "image", "text")


def split_order(names: Iterable[str]) -> list[str]:
    """random, popular, adversarial first, then the other split names in their given order."""
    names = list(dict.fromkeys(names))
    return [s for s in OBJECT_SPLITS if s in names] + [s for s in names if s not in OBJECT_SPLITS]


def question_key(q: dict) -> str:
    """A question's id qualified by its split (ids repeat across the POPE repository's split files)."""
    return f"{q['split']}/{q['question_id']}"


def _stem(path: Path) -> str:
    name = path.name
    for suffix in _SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def split_of(path: Path) -> str:
    """The split a questions file holds, from its name: "random.jsonl" and "coco_pope_random.json.gz" -> random."""
    stem = _stem(path)
    return stem.rsplit("pope_", 1)[1] if "pope_" in stem else stem


def read_records(path: str | Path, what: str) -> list[dict]:
    """JSON objects from a JSON-lines file or a JSON list, gzipped or not; errors name the file and the line."""
    path = Path(path)
    if not path.is_file():
        raise SeedVLMError(f"{what} not found: {path}")
    try:
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rb") as f:
            data = f.read()
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise not_utf8(what, path, e, line=data[:e.start].count(b"\n") + 1) from None
    except (OSError, EOFError) as e:
        raise SeedVLMError(f"{what} {path} cannot be read: {e}") from None
    if text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as e:
            raise SeedVLMError(f"malformed {what} {path}: {e.msg} at line {e.lineno}") from None
        lines = list(enumerate(rows, 1))
    else:
        lines = []
        for i, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                lines.append((i, json.loads(line)))
            except json.JSONDecodeError as e:
                raise SeedVLMError(f"malformed {what} {path} line {i}: {e.msg}") from None
    for i, row in lines:
        if not isinstance(row, dict):
            raise SeedVLMError(f"{what} {path} record {i}: expected a JSON object, got {type(row).__name__}")
    return [row for _, row in lines]


def question_format(rows: list[dict], path: Path) -> str:
    """'seedvlm', 'pope' or 'llava' from the first record's fields; anything else is an error naming the file."""
    if not rows:
        raise SeedVLMError(f"questions file {path} is empty")
    first = rows[0]
    if "label" in first:
        return "seedvlm" if "split" in first else "pope"
    if "category" in first:
        return "llava"
    raise SeedVLMError(f"questions file {path} record 1: unknown format (no 'label' as in POPE question files, no "
                       "'category' as in LLaVA's llava_pope_test.jsonl)")


def _question_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise SeedVLMError(f"questions not found: {path} (expected a questions file or a folder of them)")
    files = sorted(p for p in path.iterdir() if p.is_file() and p.name != "meta.json" and p.name.endswith(_SUFFIXES))
    if not files:
        raise SeedVLMError(f"no question files (*.jsonl, *.json, gzipped or not) in {path}")
    by_split = {}
    for f in files:
        split = split_of(f)
        if split in by_split:
            raise SeedVLMError(f"questions folder {path}: {by_split[split].name} and {f.name} both hold split {split}")
        by_split[split] = f
    return [by_split[s] for s in split_order(by_split)]


def _check_question(q: dict, f: Path, k: int, need_label: bool) -> None:
    absent = [key for key in _REQUIRED + (("label",) if need_label else ()) if key not in q]
    if absent:
        raise SeedVLMError(f"questions file {f} record {k}: missing {', '.join(absent)}")
    if need_label and q["label"] not in ("yes", "no"):
        raise SeedVLMError(f"questions file {f} record {k}: label must be 'yes' or 'no', got {q['label']!r}")
    if not isinstance(q["image"], str) or not isinstance(q["text"], str):
        raise SeedVLMError(f"questions file {f} record {k}: 'image' and 'text' must be strings")


def _label_file(labels: Path, category: str, questions_file: Path) -> Path:
    for suffix in (".json", ".json.gz", ".jsonl", ".jsonl.gz"):
        p = labels / f"coco_pope_{category}{suffix}"
        if p.is_file():
            return p
    raise SeedVLMError(f"questions file {questions_file}: no labels for category {category!r}: "
                       f"{labels}/coco_pope_{category}.json not found (pass --labels, the folder LLaVA's eval_pope.py "
                       "reads as --annotation-dir)")


def _join_llava_labels(rows: list[dict], f: Path, labels: Path) -> list[dict]:
    """LLaVA's join: the k-th question of each category gets the k-th row of coco_pope_{category}.json."""
    by_cat: dict[str, list[tuple[int, dict]]] = {}
    for k, q in enumerate(rows, 1):
        _check_question(q, f, k, need_label=False)
        if not isinstance(q.get("category"), str):
            raise SeedVLMError(f"questions file {f} record {k}: no 'category' (mixed formats in one file)")
        by_cat.setdefault(q["category"], []).append((k, q))
    label_of: dict[int, str] = {}
    for cat, items in by_cat.items():
        lf = _label_file(labels, cat, f)
        label_rows = read_records(lf, "labels file")
        if len(label_rows) != len(items):
            raise SeedVLMError(f"labels file {lf} has {len(label_rows)} questions but {f} has {len(items)} of "
                               f"category {cat!r}: not the question set LLaVA's file was built from")
        for j, ((k, q), lab) in enumerate(zip(items, label_rows), 1):
            _check_question(lab, lf, j, need_label=True)
            if lab["image"] != q["image"]:
                raise SeedVLMError(f"labels file {lf} record {j}: image {lab['image']} but {f} record {k} (the "
                                   f"{j}th of {cat!r}) asks about {q['image']}")
            label_of[k] = lab["label"]
    return [dict(q, split=q["category"], label=label_of[k]) for k, q in enumerate(rows, 1)]


def load_pope_questions(path: str | Path, limit: int | None = None,
                        labels: str | Path | None = None) -> tuple[list[dict], dict]:
    """(questions, info) from any supported questions file or folder. Each question keeps its original
    question_id and has `split` and `label`; info: {"questions_format", "labels"?}. `limit`: the first N questions
    of each split. Errors name the file and the record."""
    path = Path(path)
    files = _question_files(path)
    loaded = [(f, read_records(f, "questions file")) for f in files]
    formats = {f: question_format(rows, f) for f, rows in loaded}
    if len(set(formats.values())) > 1:
        listing = ", ".join(f"{f.name} ({fmt})" for f, fmt in formats.items())
        raise SeedVLMError(f"questions folder {path} mixes formats: {listing}; pass one file or a folder of one kind")
    fmt = next(iter(formats.values()))
    info: dict[str, Any] = {"questions_format": fmt}
    out: list[dict] = []
    where: list[str] = []  # "file record k" of each question, for errors
    for f, rows in loaded:
        if fmt == "llava":
            label_dir = Path(labels) if labels is not None else f.parent
            rows = _join_llava_labels(rows, f, label_dir)
            info["labels"] = str(label_dir)
        else:
            for k, q in enumerate(rows, 1):
                _check_question(q, f, k, need_label=True)
            rows = [dict(q, split=str(q.get("split") or split_of(f))) for q in rows]
        out.extend(rows)
        where += [f"{f} record {k}" for k in range(1, len(rows) + 1)]
    seen: dict[str, int] = {}
    per_split: Counter = Counter()
    kept = []
    for k, q in enumerate(out, 1):
        key = question_key(q)
        if key in seen:
            raise SeedVLMError(f"questions file {where[k - 1]}: duplicate question_id {q['question_id']} in split "
                               f"{q['split']} (also {where[seen[key] - 1]})")
        seen[key] = k
        per_split[q["split"]] += 1
        if limit is None or per_split[q["split"]] <= limit:
            kept.append(q)
    return kept, info


def load_pope_answers(path: str | Path) -> tuple[list[dict], str]:
    """(rows, format): rows {"key" | "position", "text"}; format "by_id" (LLaVA's and seedvlm's answer files) or
    "by_position" (POPE's {"question", "answer"} lines)."""
    path = Path(path)
    rows = read_records(path, "answers file")
    if not rows:
        raise SeedVLMError(f"answers file {path} is empty")
    by_id = "question_id" in rows[0]
    out = []
    seen: dict[str, int] = {}
    for k, row in enumerate(rows, 1):
        if ("question_id" in row) != by_id:
            raise SeedVLMError(f"answers file {path} record {k}: {'no' if by_id else 'a'} question_id, unlike record "
                               "1 (mixed formats in one file)")
        field = "text" if "text" in row else "answer"
        if field not in row or (not by_id and "answer" not in row):
            need = "'question_id' and 'text'" if by_id else "'answer'"
            raise SeedVLMError(f"answers file {path} record {k}: needs {need}")
        text = row[field]
        if text is not None and not isinstance(text, str):
            raise SeedVLMError(f"answers file {path} record {k}: '{field}' must be a string")
        if by_id:
            split = row.get("split") or row.get("category")
            key = f"{split}/{row['question_id']}" if split else str(row["question_id"])
            if key in seen:
                raise SeedVLMError(f"answers file {path} record {k}: duplicate question_id {row['question_id']}"
                                   f"{' in split ' + str(split) if split else ''} (also record {seen[key]})")
            seen[key] = k
        # the text carries P(yes) when the file has it (answers written by `seedvlm eval pope`)
        text = answer_with_scores(text or "", row.get("p_yes"), row.get("yes_no_mass"),
                                  where=f"answers file {path} record {k}")
        if by_id:
            out.append({"key": key, "text": text, "record": k})
        else:
            out.append({"position": k - 1, "text": text, "record": k})
    return out, "by_id" if by_id else "by_position"


def match_answers(questions: list[dict], rows: list[dict], fmt: str, source: str) -> dict[str, str]:
    """{question_key: answer text} for every question. By id: a plain id must name one question (ids that repeat
    across splits need a `split` field); by position: as many answers as questions."""
    if fmt == "by_position":
        if len(rows) != len(questions):
            raise SeedVLMError(f"{source}: {len(rows)} answers for {len(questions)} questions (answers without "
                               "question_id are matched by position, so the counts must be equal)")
        return {question_key(q): r["text"] for q, r in zip(questions, rows)}
    keys = {question_key(q) for q in questions}
    plain: dict[str, list[str]] = {}
    for q in questions:
        plain.setdefault(str(q["question_id"]), []).append(question_key(q))
    out: dict[str, str] = {}
    for r in rows:
        key = r["key"]
        if key not in keys:
            owners = plain.get(key, [])
            if len(owners) > 1:
                raise SeedVLMError(f"{source} record {r['record']}: question_id {key} is in several splits "
                                   f"({', '.join(o.split('/')[0] for o in owners)}); give answers with a 'split' "
                                   "field or score one split at a time")
            if not owners:
                continue  # reported below with the others
            key = owners[0]
        if key in out:
            raise SeedVLMError(f"{source} record {r['record']}: a second answer to question {key}")
        out[key] = r["text"]
    unknown = [r["key"] for r in rows if r["key"] not in keys and len(plain.get(r["key"], ())) != 1]
    if unknown:
        raise SeedVLMError(f"{source}: {len(unknown)} answers have question_ids that are not in the questions, "
                           f"e.g. {', '.join(unknown[:5])}")
    return out

