"""CHAIR (Rohrbach et al. 2018): object hallucination in image descriptions, scored against COCO-format annotations.

Two protocols read the objects a description names:
- "official" (the default) gives, caption by caption, the same words and objects as the authors' `utils/chair.py`
  (github.com/LisaAnne/Hallucination) with its `synonyms.txt`: see `seedvlm.eval.chair_official`. Use it to put a
  number beside a published one.
- "corrected" fixes the official reading where it is plainly wrong:
  1. lowercase, tokenize (runs of letters and digits, any script: "catégorie" is one word, no "cat"), singularize
     each word with lemminflect (packaged data, no downloads) unless the word is already in the synonym table
     ("skis", "people", "children", "oxen" stay; "bus" stays a bus, "glasses" become "glass");
  2. merge phrases FIRST, longest first (up to 3 words), matching the raw or the singular words: "hot dog(s)" is a
     hot dog and no dog, "teddy bear" no bear, "baby elephant" an elephant and no person, "passenger train" a train,
     "bow tie" a tie, "toilet seat" a toilet, "home plate"/"train track" nothing;
  3. a caption that names a toilet drops its "seat" words (the seat of a toilet is no chair);
  4. every remaining word in the synonym table is a mention of its category (" motor bike", "cheesecake" and
     "iphone" count, which the official parsing of its own table misses).

Ground truth of an image = categories of its instance annotations + categories mentioned in its reference captions
(read with the same protocol). Per caption: mentioned (unique categories, in order), hallucinated = mentioned but not
in the ground truth.
- chair_i = hallucinated mentions / all mentions, over the whole set, every mention counted (a caption saying
  "a dog ... the dog" has two dog mentions) exactly as the original's `coco_word_count += len(node_words)`;
- chair_i_unique = the same with each category counted once per caption;
- chair_s = captions with >= 1 hallucinated object / all captions (captions without any object count, as originally);
- recall = annotated categories mentioned / annotated categories, summed over captions (instance annotations only:
  caption-derived objects are often not visible enough to demand a mention);
- recall_augmented = ground-truth categories mentioned / ground-truth categories, summed over captions: the recall
  that OPERA's CHAIR script reports (ground truth with the caption-derived objects);
- mean_words = mean whitespace-separated words per caption.
"""

from __future__ import annotations

import functools
import re
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable

from seedvlm.errors import SeedVLMError
from seedvlm.eval.chair_official import OFFICIAL_WORD_TO_CATEGORY, official_mentions
from seedvlm.eval.synonyms import PHRASES, WORD_TO_CATEGORY
from seedvlm.io import duplicates, read_json

PROTOCOLS = ("official", "corrected")
_WORD = re.compile(r"[^\W_]+")


@functools.lru_cache(maxsize=65536)
def singularize(word: str) -> str:
    """Singular of a noun with lemminflect's packaged tables ("mice" -> "mouse", "men" -> "man")."""
    from lemminflect import getLemma

    lemmas = getLemma(word, upos="NOUN")
    return lemmas[0] if lemmas else word


def _load(obj: str | Path | dict | list, what: str) -> tuple[Any, str]:
    if isinstance(obj, (dict, list)):
        return obj, what
    return read_json(obj, what), f"{what} {obj}"


def load_instances(instances: str | Path | dict) -> tuple[dict, str]:
    """(COCO instances dict, a name for error messages) from a path or a loaded dict, checked for its three lists."""
    data, source = _load(instances, "instances file")
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in
                                             ("images", "annotations", "categories")):
        raise SeedVLMError(f"{source}: not a COCO instances file (needs lists 'images', 'annotations', "
                           "'categories')")
    return data, source


class CHAIR:
    """CHAIR scorer over one instances file (COCO format) and its reference captions.

    instances: path or loaded dict ({"images", "annotations", "categories"}); the category names come from it and
    any name outside the 80 COCO categories becomes its own category. references: path or loaded COCO captions
    dict ({"annotations": [{"image_id", "caption"}]}) or a list of such records; None to use annotations only.
    protocol: "official" (the authors' code, word for word) or "corrected" (see the module docstring).
    """

    def __init__(self, instances: str | Path | dict, references: str | Path | dict | list | None = None,
                 protocol: str = "official"):
        if protocol not in PROTOCOLS:
            raise SeedVLMError(f"unknown CHAIR protocol {protocol!r}; use one of {', '.join(PROTOCOLS)}")
        self.protocol = protocol
        data, self.instances_source = load_instances(instances)
        self.word_to_category = dict(OFFICIAL_WORD_TO_CATEGORY if protocol == "official" else WORD_TO_CATEGORY)
        self.phrases = dict(PHRASES)
        try:
            cat_name = {c["id"]: c["name"].lower() for c in data["categories"]}
            self.image_ids = {str(im["id"]): im["id"] for im in data["images"]}
            annotated: dict[str, set[str]] = defaultdict(set)
            for a in data["annotations"]:
                annotated[str(a["image_id"])].add(cat_name[a["category_id"]])
        except (KeyError, TypeError) as e:
            raise SeedVLMError(f"{self.instances_source}: malformed entry (missing or unknown {e})") from None
        repeated = duplicates(str(im["id"]) for im in data["images"])
        if repeated:
            raise SeedVLMError(f"{self.instances_source}: duplicate image ids, e.g. {', '.join(repeated[:5])}")
        self.images: list[dict] = data["images"]
        self.categories = [cat_name[k] for k in sorted(cat_name)]
        for name in self.categories:  # a category outside the 80 is its own synonym
            if name not in self.word_to_category.values():
                self.word_to_category.setdefault(name, name)
                if " " in name:
                    self.phrases.setdefault(tuple(name.split()), name)
        self.vocab = {w for s in self.word_to_category for w in s.split()} | {w for p in self.phrases for w in p}
        self._annotated = annotated
        self._references: dict[str, list[str]] = defaultdict(list)
        self.references_source = None
        if references is not None:
            refs, self.references_source = _load(references, "references file")
            rows = refs.get("annotations") if isinstance(refs, dict) else refs
            if not isinstance(rows, list):
                raise SeedVLMError(f"{self.references_source}: expected COCO captions ({{'annotations': [...]}})")
            for r in rows:
                if not isinstance(r, dict) or "image_id" not in r or not isinstance(r.get("caption"), str):
                    raise SeedVLMError(f"{self.references_source}: caption entry without image_id/caption: "
                                       f"{str(r)[:120]}")
                self._references[str(r["image_id"])].append(r["caption"])
        self._gt: dict[str, frozenset[str]] = {}

    # ------------------------------------------------------------------------------------------- text -> objects
    def mention_spans(self, caption: str) -> list[tuple[int, int, str, str]]:
        """[(start, end, word, category), ...] in caption order: character offsets of each object mention, its
        normalized word or phrase ("hot dog", "mouse" for "mice") and its category."""
        if self.protocol == "official":
            return official_mentions(caption, self.word_to_category)
        toks = list(_WORD.finditer(caption.lower()))
        raw = [t.group() for t in toks]
        sing = [w if w in self.vocab else singularize(w) for w in raw]
        words: list[tuple[int, int, str]] = []  # (first token, last token, word)
        i = 0
        while i < len(raw):
            for n in (3, 2):
                if i + n <= len(raw):
                    cands = (tuple(raw[i:i + n]), tuple(raw[i:i + n - 1]) + (sing[i + n - 1],), tuple(sing[i:i + n]))
                    hit = next((self.phrases[c] for c in cands if c in self.phrases), None)
                    if hit is not None:
                        words.append((i, i + n - 1, hit))
                        i += n
                        break
            else:
                words.append((i, i, sing[i]))
                i += 1
        if any(self.word_to_category.get(w) == "toilet" for _, _, w in words):
            words = [x for x in words if x[2] != "seat"]
        return [(toks[a].start(), toks[b].end(), w, self.word_to_category[w]) for a, b, w in words
                if w in self.word_to_category]

    def mentions(self, caption: str) -> list[tuple[str, str]]:
        """[(normalized word or phrase, category), ...] in caption order."""
        return [(w, c) for _, _, w, c in self.mention_spans(caption)]

    def objects(self, caption: str) -> list[str]:
        """Unique categories mentioned in a caption, in order of first mention."""
        return list(dict.fromkeys(c for _, c in self.mentions(caption)))

    # ------------------------------------------------------------------------------------------- ground truth
    def _key(self, image_id: Any) -> str:
        key = str(image_id)
        if key not in self.image_ids:
            raise SeedVLMError(f"image_id {image_id!r} is not an image of {self.instances_source}")
        return key

    def annotated(self, image_id: Any) -> frozenset[str]:
        return frozenset(self._annotated.get(self._key(image_id), ()))

    def ground_truth(self, image_id: Any) -> frozenset[str]:
        """Annotated categories plus the categories its reference captions mention."""
        key = self._key(image_id)
        if key not in self._gt:
            gt = set(self._annotated.get(key, ()))
            for ref in self._references.get(key, ()):
                gt.update(c for _, c in self.mentions(ref))
            self._gt[key] = frozenset(gt)
        return self._gt[key]

    # ------------------------------------------------------------------------------------------- scoring
    def score(self, image_id: Any, caption: str) -> dict:
        """One caption: its mentions, mentioned/hallucinated categories, ground truth and per-caption counts."""
        if not isinstance(caption, str):
            raise SeedVLMError(f"caption for image_id {image_id!r} must be a string, got {type(caption).__name__}")
        gt = self.ground_truth(image_id)
        annotated = self.annotated(image_id)
        mentions = self.mentions(caption)
        mentioned = list(dict.fromkeys(c for _, c in mentions))
        hallucinated = [c for c in mentioned if c not in gt]
        return {
            "image_id": self.image_ids[str(image_id)],
            "caption": caption,
            "mentioned": mentioned,
            "hallucinated": hallucinated,
            "mentions": [list(m) for m in mentions],
            "n_mentions": len(mentions),
            "n_hallucinated_mentions": sum(c not in gt for _, c in mentions),
            "recalled": [c for c in mentioned if c in annotated],
            "recalled_augmented": [c for c in mentioned if c in gt],
            "annotated": sorted(annotated),
            "ground_truth": sorted(gt),
            "n_words": len(caption.split()),
        }

    def score_all(self, records: Iterable[dict], source: str = "captions") -> list[dict]:
        """Per-caption results; a record without image_id/caption or a second caption of one image is an error
        naming `source` and the record (a repeated image would weigh several times in every metric)."""
        out = []
        seen: dict[str, int] = {}
        for k, r in enumerate(records, 1):
            if not isinstance(r, dict) or "image_id" not in r or "caption" not in r:
                raise SeedVLMError(f"{source} record {k}: needs 'image_id' and 'caption'")
            key = str(r["image_id"])
            if key in seen:
                raise SeedVLMError(f"{source} record {k}: duplicate image_id {key} (also record "
                                   f"{seen[key]}); give one caption per image")
            seen[key] = k
            out.append(self.score(r["image_id"], r["caption"]))
        return out

    def evaluate(self, records: Iterable[dict], source: str = "captions") -> tuple[dict, list[dict]]:
        """(metrics, per-caption samples): what `seedvlm eval chair` and `seedvlm score chair` both write."""
        samples = self.score_all(records, source)
        return dict(aggregate(samples), protocol=self.protocol), samples

    def compute(self, records: Iterable[dict]) -> dict:
        """Metrics over records ({"image_id", "caption"}): chair_s, chair_i, chair_i_unique, recall,
        recall_augmented, mean_words, n, n_mentions, image_ids, protocol."""
        return self.evaluate(records)[0]


def aggregate(samples: list[dict]) -> dict:
    """Set-level CHAIR metrics from per-caption `CHAIR.score` results."""
    if not samples:
        raise SeedVLMError("no captions to score")
    n = len(samples)
    mentions = sum(s["n_mentions"] for s in samples)
    unique = sum(len(s["mentioned"]) for s in samples)
    annotated = sum(len(s["annotated"]) for s in samples)
    truth = sum(len(s["ground_truth"]) for s in samples)
    return {
        "chair_s": sum(bool(s["hallucinated"]) for s in samples) / n,
        "chair_i": sum(s["n_hallucinated_mentions"] for s in samples) / mentions if mentions else 0.0,
        "chair_i_unique": sum(len(s["hallucinated"]) for s in samples) / unique if unique else 0.0,
        "recall": sum(len(s["recalled"]) for s in samples) / annotated if annotated else 0.0,
        "recall_augmented": sum(len(s["recalled_augmented"]) for s in samples) / truth if truth else 0.0,
        "mean_words": sum(s["n_words"] for s in samples) / n,
        "n": n,
        "n_mentions": mentions,
        "image_ids": [s["image_id"] for s in samples],
    }
