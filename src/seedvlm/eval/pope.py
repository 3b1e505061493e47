"""POPE (Li et al. 2023): building the question files, the official answer parser, and the metrics.

Building follows the official code (github.com/AoiDragon/POPE, utils.py): images with >= 3 annotated categories,
3 positives per image, each paired with one negative of the split's strategy:
- random: a category of the category list absent from the image, drawn with the seed;
- popular: the most frequent categories (number of images that contain them, over the whole instances file) absent
  from the image, in frequency order;
- adversarial: for each positive, the category that co-occurs most often with it (images containing both), absent
  from the image and not used yet; random if none is left.
Differences from the official code, all deliberate: the images and the 3 positives are drawn with a seed (the
official takes a pre-made list and its first 3 objects), the positives are the same in all three splits, and ties in
frequency or co-occurrence break by category order so that equal inputs give equal files.
Building, parsing and scoring stay together (a little over 400 lines) because each split's metrics are defined by
how its questions were built; the file formats and the parsers live in pope_formats.py and pope_parsers.py.

Parsing (`seedvlm.eval.pope_parsers`): "official" is POPE's `evaluate.py` decision for any string (the default);
"strict" splits words on any white space and leaves an empty answer unparsed (counted, and always wrong: see
`pope_metrics`). Every result records how many answers the two would decide differently.
Question and answer files in seedvlm's, POPE's and LLaVA's formats: `seedvlm.eval.pope_formats`.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Iterable, Sequence

from seedvlm.errors import SeedVLMError
from seedvlm.eval.chair import load_instances
from seedvlm.eval.pope_formats import (OBJECT_SPLITS, load_pope_answers, load_pope_questions, match_answers,
                                       question_key, split_order)
from seedvlm.eval.pope_parsers import PARSERS, disagreements, parse_strict
from seedvlm.eval.yes_prob import answer_scores, mean_yes_prob_metrics, yes_prob_metrics
from seedvlm.io import duplicates, read_json

log = logging.getLogger(__name__)

KINDS = ("object", "color", "count", "relation")
METRIC_KEYS = ("accuracy", "precision", "recall", "f1", "yes_ratio")
PAIRS_PER_IMAGE = 3

# Canonical wording first; the others are the rewordings that --paraphrases adds (same group_id).
TEMPLATES = {
    "object": ("Is there {a} {o} in the image?", "Can you see {a} {o} in the image?",
               "Does the image contain {a} {o}?"),
    "color": ("Is the {o} {c}?", "Is the color of the {o} {c}?", "Does the {o} look {c}?"),
    "count": ("Are there {n} {p} in the image?", "Does the image show {n} {p}?", "Can you see {n} {p} in the image?"),
    "count1": ("Is there {n} {o} in the image?", "Does the image show {n} {o}?", "Can you see {n} {o} in the image?"),
    "relation": ("Is the {o} to the left of the {b}?", "Is the {o} on the left side of the {b}?",
                 "Does the {o} appear to the left of the {b}?"),
}

_NUMBER_WORDS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
                 "sixteen seventeen eighteen nineteen twenty").split()
_PLURAL_OVERRIDES = {"person": "people", "skis": "skis", "scissors": "scissors", "sheep": "sheep"}


# ----------------------------------------------------------------------------------------------- wording helpers
def article(name: str) -> str:
    """'an' before a vowel letter, else 'a' (the official rule: "an apple", "an umbrella", "a zebra")."""
    return "an" if name[:1].lower() in "aeiou" else "a"


def plural(name: str) -> str:
    """Plural of a category name; the last word of a phrase is inflected ("wine glass" -> "wine glasses")."""
    if name in _PLURAL_OVERRIDES:
        return _PLURAL_OVERRIDES[name]
    from lemminflect import getInflection

    head, _, last = name.rpartition(" ")
    forms = getInflection(last, tag="NNS")
    last = forms[0] if forms else last + "s"
    return f"{head} {last}" if head else last


def number_word(n: int) -> str:
    return _NUMBER_WORDS[n] if 0 <= n < len(_NUMBER_WORDS) else str(n)


def question_texts(kind: str, obj: str, **kw: Any) -> tuple[str, ...]:
    """All wordings of one question (canonical first). kw: color=, count=, other= (for relation)."""
    if kind == "object":
        return tuple(t.format(a=article(obj), o=obj) for t in TEMPLATES["object"])
    if kind == "color":
        return tuple(t.format(o=obj, c=kw["color"]) for t in TEMPLATES["color"])
    if kind == "count":
        n = kw["count"]
        templates = TEMPLATES["count1"] if n == 1 else TEMPLATES["count"]
        return tuple(t.format(n=number_word(n), o=obj, p=plural(obj)) for t in templates)
    if kind == "relation":
        return tuple(t.format(o=obj, b=kw["other"]) for t in TEMPLATES["relation"])
    raise SeedVLMError(f"unknown question kind {kind!r}; use one of {', '.join(KINDS)}")


# ----------------------------------------------------------------------------------------------- instances index
class _Instances:
    """The parts of a COCO-format instances file that POPE needs, validated with errors that name the file."""

    def __init__(self, data: dict, source: str):
        try:
            self.cat_name = {c["id"]: c["name"] for c in data["categories"]}
            self.images = {im["id"]: im for im in data["images"]}
        except (KeyError, TypeError) as e:
            raise SeedVLMError(f"{source}: category or image entry without {e}") from None
        for what, ids in (("image", [im["id"] for im in data["images"]]),
                          ("category", [c["id"] for c in data["categories"]])):
            repeated = duplicates(ids)
            if repeated:
                raise SeedVLMError(f"{source}: duplicate {what} ids, e.g. {', '.join(map(str, repeated[:5]))}")
        unnamed = [str(i) for i, im in self.images.items() if not isinstance(im.get("file_name"), str)]
        if unnamed:
            raise SeedVLMError(f"{source}: images without a file_name, e.g. ids {', '.join(unnamed[:5])}")
        self.order = {name: i for i, name in enumerate(self.cat_name[k] for k in sorted(self.cat_name))}
        self.categories = sorted(self.order, key=self.order.get)
        self.anns: dict[Any, list[dict]] = defaultdict(list)
        for a in data["annotations"]:
            if not isinstance(a, dict) or "image_id" not in a or "category_id" not in a:
                raise SeedVLMError(f"{source}: annotation without image_id/category_id: {str(a)[:120]}")
            if a["category_id"] not in self.cat_name:
                raise SeedVLMError(f"{source}: annotation {a.get('id')} has unknown category_id {a['category_id']}")
            if a["image_id"] not in self.images:
                raise SeedVLMError(f"{source}: annotation {a.get('id')} refers to unknown image_id {a['image_id']}")
            self.anns[a["image_id"]].append(a)
        self.objects = {i: {self.cat_name[a["category_id"]] for a in self.anns.get(i, ())} for i in self.images}
        self.freq: Counter = Counter()
        self.co: dict[str, Counter] = defaultdict(Counter)
        for objs in self.objects.values():
            self.freq.update(objs)
            for o in objs:
                self.co[o].update(objs - {o})

    def sort_cats(self, cats: Iterable[str]) -> list[str]:
        return sorted(cats, key=self.order.get)


def _load_instances(instances: str | Path | dict) -> tuple[_Instances, str | None, str | None]:
    """(index, source path or None, sha256 of the file or None)."""
    data, source = load_instances(instances)
    if isinstance(instances, dict):
        return _Instances(data, source), None, None
    h = hashlib.sha256()
    with Path(instances).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return _Instances(data, source), str(instances), h.hexdigest()


# ----------------------------------------------------------------------------------------------- building
def _pick_negative(candidates: Sequence[str], taken: set[str], rng: random.Random | None) -> str | None:
    """First candidate not taken (ranked lists), or a seeded random one (rng given)."""
    free = [c for c in candidates if c not in taken]
    if not free:
        return None
    return rng.choice(free) if rng is not None else free[0]


def _object_pairs(idx: _Instances, image_ids: list, seed: int) -> dict[str, list[tuple[Any, list[tuple]]]]:
    """Per split, per image: [(object, label), ...] as positive/negative pairs."""
    pos_rng = random.Random(f"{seed}:positives")
    positives = {i: pos_rng.sample(idx.sort_cats(idx.objects[i]), PAIRS_PER_IMAGE) for i in image_ids}
    popular = sorted(idx.categories, key=lambda c: (-idx.freq[c], idx.order[c]))
    out: dict[str, list] = {}
    for split in OBJECT_SPLITS:
        rng = random.Random(f"{seed}:{split}")
        rows = []
        for i in image_ids:
            taken = set(idx.objects[i])
            pairs = []
            for p in positives[i]:
                if split == "random":
                    neg = _pick_negative(idx.categories, taken, rng)
                elif split == "popular":
                    neg = _pick_negative(popular, taken, None) or _pick_negative(idx.categories, taken, rng)
                else:
                    partners = [c for c in sorted(idx.co[p], key=lambda c: (-idx.co[p][c], -idx.freq[c],
                                                                             idx.order[c])) if idx.co[p][c] > 0]
                    neg = _pick_negative(partners, taken, None) or _pick_negative(idx.categories, taken, rng)
                pairs.append((p, "yes", {}))
                if neg is not None:
                    taken.add(neg)
                    pairs.append((neg, "no", {}))
            rows.append((i, pairs))
        out[split] = rows
    return out


def _unique_color(anns: list[dict]) -> str | None:
    colors = {a.get("color") for a in anns}
    return next(iter(colors)) if len(colors) == 1 and None not in colors else None


def _attribute_pairs(idx: _Instances, kind: str, image_ids: list, rng: random.Random, palette: list[str]):
    rows = []
    for i in image_ids:
        by_cat: dict[str, list[dict]] = defaultdict(list)
        for a in idx.anns.get(i, ()):
            by_cat[idx.cat_name[a["category_id"]]].append(a)
        pairs: list[tuple] = []
        if kind == "color":
            usable = [c for c in idx.sort_cats(by_cat) if _unique_color(by_cat[c])]
            for c in rng.sample(usable, min(PAIRS_PER_IMAGE, len(usable))):
                true = _unique_color(by_cat[c])
                pairs += [(c, "yes", {"color": true}), (c, "no", {"color": rng.choice([p for p in palette
                                                                                        if p != true])})]
        elif kind == "count":
            cats = idx.sort_cats(by_cat)
            for c in rng.sample(cats, min(PAIRS_PER_IMAGE, len(cats))):
                n = len(by_cat[c])
                wrong = rng.choice([n + d for d in (-2, -1, 1, 2) if n + d >= 1])
                pairs += [(c, "yes", {"count": n}), (c, "no", {"count": wrong})]
        else:  # relation: categories with one boxed instance; a left of b when centers differ by >= 10% width
            single = [c for c in idx.sort_cats(by_cat) if len(by_cat[c]) == 1 and by_cat[c][0].get("bbox")]
            width = idx.images[i].get("width") or 0
            cx = {c: by_cat[c][0]["bbox"][0] + by_cat[c][0]["bbox"][2] / 2 for c in single}
            left_of = [(a, b) for a in single for b in single if cx[b] - cx[a] >= max(0.1 * width, 1e-9)]
            for a, b in rng.sample(left_of, min(PAIRS_PER_IMAGE, len(left_of))):
                pairs += [(a, "yes", {"other": b}), (b, "no", {"other": a})]
        rows.append((i, pairs))
    return rows


def _eligible(idx: _Instances, kind: str) -> list:
    if kind == "object":
        return [i for i in sorted(idx.images) if len(idx.objects[i]) >= PAIRS_PER_IMAGE]
    if kind == "color":
        return [i for i in sorted(idx.images) if any(a.get("color") for a in idx.anns.get(i, ()))]
    if kind == "count":
        return [i for i in sorted(idx.images) if idx.anns.get(i)]
    return [i for i in sorted(idx.images) if sum(1 for c in Counter(idx.cat_name[a["category_id"]] for a in
                                                                     idx.anns.get(i, ())).values() if c == 1) >= 2]


def build_pope(instances: str | Path | dict, n_images: int = 500, seed: int = 0, kind: str = "object",
               paraphrases: bool = False) -> tuple[dict[str, list[dict]], dict]:
    """Build POPE question files. Returns ({split: [question, ...]}, meta).

    kind "object" gives the splits random/popular/adversarial; "color", "count", "relation" give one split named
    after the kind (yes/no balanced). Each question: question_id, image, image_id, text, label, object, split (plus
    color/count/other for the attribute kinds, and group_id/paraphrase with `paraphrases`).
    """
    if kind not in KINDS:
        raise SeedVLMError(f"unknown question kind {kind!r}; use one of {', '.join(KINDS)}")
    if n_images < 1:
        raise SeedVLMError(f"--n-images must be at least 1, got {n_images}")
    idx, source, sha = _load_instances(instances)
    where = source or "the instances"
    palette: list[str] = []
    if kind == "color":
        palette = sorted({a["color"] for anns in idx.anns.values() for a in anns if a.get("color")})
        if len(palette) < 2:
            raise SeedVLMError(f"{where}: --kind color needs annotations with a 'color' field and at least two "
                               f"colors (found {palette or 'none'}); the embedded world's instances have them")
    pool = _eligible(idx, kind)
    if not pool:
        need = {"object": f"at least {PAIRS_PER_IMAGE} annotated categories", "color": "colored annotations",
                "count": "annotations", "relation": "two categories with one boxed instance each"}[kind]
        raise SeedVLMError(f"{where}: no image has {need}; cannot build POPE kind {kind!r}")
    rng = random.Random(f"{seed}:images")
    if len(pool) < n_images:
        log.warning("only %d eligible images in %s (asked for %d); using all of them", len(pool), where, n_images)
        chosen = list(pool)
    else:
        chosen = sorted(rng.sample(pool, n_images))
    if kind == "object":
        per_split = _object_pairs(idx, chosen, seed)
    else:
        per_split = {kind: _attribute_pairs(idx, kind, chosen, random.Random(f"{seed}:{kind}"), palette)}

    splits: dict[str, list[dict]] = {}
    for split, rows in per_split.items():
        questions = []
        k = 0
        for image_id, pairs in rows:
            for obj, label, extra in pairs:
                k += 1
                qid = f"{split}-{k:05d}"
                texts = question_texts(kind, obj, **extra)
                base = {"question_id": qid, "image": idx.images[image_id]["file_name"], "image_id": image_id,
                        "text": texts[0], "label": label, "object": obj, "split": split, **extra}
                if not paraphrases:
                    questions.append(base)
                    continue
                for j, text in enumerate(texts):
                    q = dict(base, text=text, group_id=qid, paraphrase=j)
                    if j:
                        q["question_id"] = f"{qid}-p{j}"
                    questions.append(q)
        splits[split] = questions
    meta = {
        "source": source, "sha256": sha, "seed": seed, "kind": kind, "paraphrases": paraphrases,
        "n_images_requested": n_images, "n_images": len(chosen), "image_ids": chosen,
        "images": [idx.images[i]["file_name"] for i in chosen],
        "counts": {s: {"questions": len(q), "yes": sum(x["label"] == "yes" for x in q),
                       "no": sum(x["label"] == "no" for x in q)} for s, q in splits.items()},
    }
    return splits, meta


# ----------------------------------------------------------------------------------------------- parsing & metrics
def parse_answer(text: str | None) -> str | None:
    """The strict parser ("yes", "no", or None for an empty answer); see `seedvlm.eval.pope_parsers`."""
    return parse_strict(text)


def pope_metrics(preds: Sequence[str | None], labels: Sequence[str]) -> dict:
    """accuracy, precision, recall, f1, yes_ratio, n, unparsed (+ tp/fp/tn/fn) of parsed predictions vs labels.

    yes_ratio is the fraction of PREDICTIONS that are "yes" (lmms-eval reports the fraction of labels instead).
    An unparsed prediction (None) is always wrong: it is no "yes" (so it never adds to precision or yes_ratio),
    a missed positive (false negative) when the label is yes, and no true negative when the label is no.
    Fractions with an empty denominator are 0.
    """
    if len(preds) != len(labels):
        raise ValueError(f"{len(preds)} predictions but {len(labels)} labels")
    tp = sum(p == "yes" and y == "yes" for p, y in zip(preds, labels))
    fp = sum(p == "yes" and y == "no" for p, y in zip(preds, labels))
    tn = sum(p == "no" and y == "no" for p, y in zip(preds, labels))
    fn = sum(p != "yes" and y == "yes" for p, y in zip(preds, labels))
    n = len(labels)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return {
        "accuracy": (tp + tn) / n if n else 0.0,
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "yes_ratio": sum(p == "yes" for p in preds) / n if n else 0.0,
        "n": n,
        "unparsed": sum(p is None for p in preds),
        "tp": tp, "fp": fp, "tn": tn, "fn": fn,
    }


def consistency(samples: Iterable[dict]) -> float | None:
    """Fraction of paraphrase groups (>= 2 answered wordings) whose parsed answers are all the same."""
    groups: dict[str, list] = defaultdict(list)
    for s in samples:
        if s.get("group_id") is not None:
            groups[str(s["group_id"])].append(s["parsed"])
    groups = {g: v for g, v in groups.items() if len(v) >= 2}
    if not groups:
        return None
    return sum(len(set(v)) == 1 for v in groups.values()) / len(groups)


def mean_over_splits(per_split: dict[str, dict]) -> dict:
    """Mean of each fraction over splits; n and unparsed summed."""
    vals = list(per_split.values())
    out = {k: sum(v[k] for v in vals) / len(vals) for k in METRIC_KEYS}
    out["n"] = sum(v["n"] for v in vals)
    out["unparsed"] = sum(v["unparsed"] for v in vals)
    out.update(mean_yes_prob_metrics(vals))
    cons = [v["consistency"] for v in vals if v.get("consistency") is not None]
    if cons:
        out["consistency"] = sum(cons) / len(cons)
    return out


def _answer_for(q: dict, answers: dict[str, str], plain_ids: Counter) -> str | None:
    """The answer to q: under its split-qualified key, or under its plain id when no other split has that id."""
    key = question_key(q)
    if key in answers:
        return answers[key]
    qid = str(q["question_id"])
    return answers.get(qid) if plain_ids[qid] == 1 else None


def score_pope(questions: Sequence[dict], answers: dict[str, str], answers_source: str = "answers",
               parser: str = "official") -> tuple[dict, list]:
    """Score answers {question key or question_id: raw text} against questions. Returns (metrics, samples).

    metrics: {"splits": [...], <split>: {accuracy, precision, recall, f1, yes_ratio, n, unparsed, ...,
    consistency?}, "mean": {...}, "parser", "parser_disagreements"}. Metrics count the canonical wording only
    (paraphrase 0), so a file built with --paraphrases scores like one without; the rewordings feed `consistency`.
    Every question needs an answer and every answer a question: anything else is an error naming `answers_source`.
    `parser_disagreements`: answers that the official and the strict parser decide differently.
    """
    if parser not in PARSERS:
        raise SeedVLMError(f"unknown POPE parser {parser!r}; use one of {', '.join(PARSERS)}")
    parse = PARSERS[parser]
    plain_ids = Counter(str(q["question_id"]) for q in questions)
    texts = [_answer_for(q, answers, plain_ids) for q in questions]
    missing = [question_key(q) for q, t in zip(questions, texts) if t is None]
    if missing:
        raise SeedVLMError(f"{answers_source}: no answer for {len(missing)} of {len(questions)} questions, e.g. "
                           f"{', '.join(missing[:5])}")
    known = {question_key(q) for q in questions} | {k for k, n in plain_ids.items() if n == 1}
    unknown = sorted(set(answers) - known)
    if unknown:
        raise SeedVLMError(f"{answers_source}: {len(unknown)} answers have question_ids that are not in the "
                           f"questions, e.g. {', '.join(unknown[:5])}")
    samples = []
    for q, text in zip(questions, texts):
        parsed = parse(text)
        s = {"question_id": q["question_id"], "split": q["split"], "image": q["image"], "question": q["text"],
             "text": text, "parsed": parsed, "label": q["label"], "correct": parsed == q["label"]}
        s.update(answer_scores(text))
        if q.get("group_id") is not None:
            s["group_id"] = q["group_id"]
            s["paraphrase"] = q.get("paraphrase", 0)
        samples.append(s)
    order = split_order(s["split"] for s in samples)
    metrics: dict[str, Any] = {"splits": order}
    for split in order:
        rows = [s for s in samples if s["split"] == split]
        canon = [s for s in rows if not s.get("paraphrase")]
        m = pope_metrics([s["parsed"] for s in canon], [s["label"] for s in canon])
        m.update(yes_prob_metrics(canon))
        c = consistency(rows)
        if c is not None:
            m["consistency"] = c
        metrics[split] = m
    metrics["mean"] = mean_over_splits({s: metrics[s] for s in order})
    metrics["parser"] = parser
    metrics["parser_disagreements"] = disagreements(texts)
    return metrics, samples


# ----------------------------------------------------------------------------------------------- files
def load_questions(path: str | Path, limit: int | None = None, labels: str | Path | None = None) -> list[dict]:
    """Questions from any supported file or folder (`seedvlm.eval.pope_formats.load_pope_questions`)."""
    return load_pope_questions(path, limit=limit, labels=labels)[0]


def questions_provenance(path: str | Path, formats: dict | None = None) -> dict:
    """Where questions came from, for results.json: the path, `formats` (the info of `load_pope_questions`) and,
    for a POPE folder built by seedvlm, its meta.json essentials."""
    info: dict[str, Any] = {"questions": str(path), **(formats or {})}
    meta_path = Path(path) / "meta.json"
    if meta_path.is_file():
        meta = read_json(meta_path, "POPE meta file")
        if isinstance(meta, dict):
            info["questions_meta"] = {k: meta.get(k) for k in ("source", "sha256", "seed", "kind", "n_images",
                                                               "paraphrases")}
    return info


def load_answers(path: str | Path, questions: Sequence[dict] | None = None) -> dict[str, str]:
    """Answers file -> {question key or question_id: text}. Files without question_id (POPE's {"question",
    "answer"} lines) need `questions`, matched by position."""
    rows, fmt = load_pope_answers(path)
    if fmt == "by_position" and questions is None:
        raise SeedVLMError(f"answers file {path} has no question_id: it can only be matched to questions by position")
    if questions is None:
        return {r["key"]: r["text"] for r in rows}
    return match_answers(list(questions), rows, fmt, f"answers file {path}")
