"""Text of the world: COCO-style captions, LLaVA-style detailed descriptions and multi-turn QA conversations.

All text is truthful about the scene it is given, except a description built with `inject=` (the annotator
hallucination of the training split: one absent object mentioned as if present). Words: a small fixed vocabulary
(world_vocabulary()), every word lowercase-able, punctuation only ". , ?", numbers spelled out.
"""

from __future__ import annotations

import math
import re
from collections import Counter

import numpy as np

from seedvlm.world.categories import (
    CATEGORY_NAMES,
    COLOR_NAMES,
    NUMBER_WORDS,
    SCENE_NAMES,
    SYNONYMS,
    partners_of,
    plural,
    scene_by_name,
)

# ------------------------------------------------------------------------------------------------ templates
# Every template string the generator uses lives here, so world_vocabulary() can read them all.
DETAIL_PROMPTS = [
    "Please describe this image in detail.",
    "Describe this image in detail.",
    "Can you describe this image in detail?",
    "What do you see in this image? Describe it in detail.",
]
SCENE_SENTENCES = ["This is {a_scene}.", "The image shows {a_scene}.", "This picture shows {a_scene}."]
NO_SCENE_SENTENCES = ["The image shows a few objects.", "This picture shows some objects."]
POSITIONS = ["on the left", "in the middle", "on the right"]
SINGLE_FORMS = ["There is {np} {pos}.", "{Np} is {pos}.", "I can see {np} {pos}."]
PAIR_FORM = "There is {np1} {pos1} and {np2} {pos2}."
GROUP_SAME = "There are {num} {color} {nouns}{pos}."
GROUP_MIXED = "There are {num} {nouns}, {breakdown}."
HIDDEN_SUFFIX = ", partly hidden"
GROUP_HIDDEN = ["One of them is partly hidden.", "{Num} of them are partly hidden."]
CAPTION_SCENE = [["{A_scene} with {list}.", "A view of {a_scene} with {list}."],
                 ["{List} in {a_scene}.", "{List} seen in {a_scene}."],
                 ["A picture of {list}.", "An image of {list}."]]
CAPTION_NO_SCENE = [["A picture of {list}.", "An image of {list}."],
                    ["A picture with {list}.", "{List}."],
                    ["Some objects, {list}.", "A few objects, {list}."]]
Q_EXIST = "Is there {a_name} in the image?"
Q_COUNT = "How many {names} are there?"
A_COUNT_ONE = "There is one {name}."
A_COUNT_MANY = "There are {num} {names}."
Q_COLOR = "What color is the {name}?"
A_COLOR = "The {name} is {color}."
Q_LEFT = "Is the {a} to the left of the {b}?"
YES, NO = "Yes.", "No."
_TEMPLATES = (DETAIL_PROMPTS + SCENE_SENTENCES + NO_SCENE_SENTENCES + POSITIONS + SINGLE_FORMS
              + [PAIR_FORM, GROUP_SAME, GROUP_MIXED, HIDDEN_SUFFIX, "and"] + GROUP_HIDDEN
              + [t for group in CAPTION_SCENE + CAPTION_NO_SCENE for t in group]
              + [Q_EXIST, Q_COUNT, A_COUNT_ONE, A_COUNT_MANY, Q_COLOR, A_COLOR, Q_LEFT, YES, NO, "a an"])

_WORD_RE = re.compile(r"[a-z]+|[.,?]")


def tokenize(text: str) -> list[str]:
    """Lowercase words and the punctuation marks . , ? (what world_vocabulary() lists)."""
    return _WORD_RE.findall(text.lower())


def world_vocabulary() -> list[str]:
    """Every word (lowercase) and punctuation mark (. , ?) the world's text can contain, sorted.

    The `<image>` placeholder and the newline after it are not words: the tokenizer adds `<image>` as a special
    token. Built from the template strings, category names, synonyms and their plurals, colors, number words
    and scene names, so it needs no generated files.
    """
    words: set[str] = set()
    for t in _TEMPLATES:
        words.update(tokenize(re.sub(r"\{[^}]*\}", " ", t)))
    for name in CATEGORY_NAMES:
        for syn in SYNONYMS[name]:
            words.update(tokenize(syn))
            words.update(tokenize(plural(syn)))
    for group in (COLOR_NAMES, NUMBER_WORDS, SCENE_NAMES):
        for w in group:
            words.update(tokenize(w))
    return sorted(words)


# -------------------------------------------------------------------------------------------------- helpers

def article(phrase: str) -> str:
    return "an" if phrase[:1].lower() in "aeiou" else "a"


def with_article(phrase: str) -> str:
    return f"{article(phrase)} {phrase}"


def number_word(n: int) -> str:
    return NUMBER_WORDS[n] if 0 <= n < len(NUMBER_WORDS) else "many"


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def join_list(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def position_phrase(cx: float, size: int) -> str:
    """Horizontal thirds of the image."""
    if cx < size / 3.0:
        return POSITIONS[0]
    if cx >= 2.0 * size / 3.0:
        return POSITIONS[2]
    return POSITIONS[1]


def pick_synonym(rng: np.random.Generator, name: str) -> str:
    """The COCO name half of the time, else one of its CHAIR synonyms."""
    syns = SYNONYMS[name]
    if len(syns) == 1 or rng.random() < 0.5:
        return syns[0]
    return syns[1 + int(rng.integers(0, len(syns) - 1))]


def _groups(scene) -> list[tuple[str, list]]:
    """Objects grouped by category, groups ordered left to right by their leftmost member."""
    by: dict[str, list] = {}
    for o in sorted(scene.objects, key=lambda o: o.center_x):
        by.setdefault(o.name, []).append(o)
    return list(by.items())


def _single_np(color: str, noun: str) -> str:
    return with_article(f"{color} {noun}")


# ------------------------------------------------------------------------------------------------ descriptions

def describe(scene, rng: np.random.Generator, inject: str | None = None) -> str:
    """A detailed description naming every object (color, position; synonyms), or with `inject` = an absent
    category name that is mentioned once as if present (annotator hallucination)."""
    size = scene.size
    first = (SCENE_SENTENCES[int(rng.integers(0, len(SCENE_SENTENCES)))].format(
        a_scene=with_article(scene.scene_type)) if scene.scene_type
        else NO_SCENE_SENTENCES[int(rng.integers(0, len(NO_SCENE_SENTENCES)))])
    sentences: list[str] = []
    pending: tuple[str, str] | None = None  # a plain single waiting to be joined with the next one

    def flush():
        nonlocal pending
        if pending is not None:
            sentences.append(_single_sentence(rng, pending[0], pending[1], False))
            pending = None

    for name, objs in _groups(scene):
        noun = pick_synonym(rng, name)
        if len(objs) == 1:
            o = objs[0]
            np_ = _single_np(o.color, noun)
            pos = position_phrase(o.center_x, size)
            if o.occluded:
                flush()
                sentences.append(_single_sentence(rng, np_, pos, True))
            elif pending is not None and rng.random() < 0.5:
                sentences.append(PAIR_FORM.format(np1=pending[0], pos1=pending[1], np2=np_, pos2=pos))
                pending = None
            else:
                flush()
                pending = (np_, pos)
            continue
        flush()
        n = len(objs)
        nouns = plural(noun)
        colors = Counter(o.color for o in objs)
        positions = {position_phrase(o.center_x, size) for o in objs}
        if len(colors) == 1:
            pos = f" {next(iter(positions))}" if len(positions) == 1 else ""
            sentences.append(GROUP_SAME.format(num=number_word(n), color=objs[0].color, nouns=nouns, pos=pos))
        else:
            order = list(dict.fromkeys(o.color for o in objs))
            breakdown = join_list([f"{number_word(colors[c])} {c}" for c in order])
            sentences.append(GROUP_MIXED.format(num=number_word(n), nouns=nouns, breakdown=breakdown))
        hidden = sum(o.occluded for o in objs)
        if hidden == 1:
            sentences.append(GROUP_HIDDEN[0])
        elif hidden > 1:
            sentences.append(GROUP_HIDDEN[1].format(Num=_cap(number_word(hidden))))
    flush()
    if inject is not None:
        color = COLOR_NAMES[int(rng.integers(0, len(COLOR_NAMES)))]
        pos = POSITIONS[int(rng.integers(0, len(POSITIONS)))]
        fake = _single_sentence(rng, _single_np(color, pick_synonym(rng, inject)), pos, False)
        sentences.insert(int(rng.integers(0, len(sentences) + 1)), fake)
    return " ".join([first] + sentences)


def _single_sentence(rng, np_: str, pos: str, hidden: bool) -> str:
    form = SINGLE_FORMS[int(rng.integers(0, len(SINGLE_FORMS)))]
    s = form.format(np=np_, Np=_cap(np_), pos=pos)
    if hidden:
        s = s[:-1] + HIDDEN_SUFFIX + "."
    return s


# --------------------------------------------------------------------------------------------------- captions

def captions(scene, rng: np.random.Generator) -> list[str]:
    """Three short reference captions naming every object (with counts, sometimes synonyms); always true."""
    out = []
    kinds = CAPTION_SCENE if scene.scene_type else CAPTION_NO_SCENE
    for k, variants in enumerate(kinds):
        items = []
        for name, objs in _groups(scene):
            noun = pick_synonym(rng, name)
            if len(objs) == 1:
                items.append(_single_np(objs[0].color, noun) if k == 1 else with_article(noun))
            else:
                items.append(f"{number_word(len(objs))} {plural(noun)}")
        lst = join_list(items)
        t = variants[int(rng.integers(0, len(variants)))]
        a_scene = with_article(scene.scene_type) if scene.scene_type else ""
        out.append(_cap(t.format(a_scene=a_scene, A_scene=_cap(a_scene), list=lst, List=_cap(lst))))
    return out


# ------------------------------------------------------------------------------------------------ conversations

def absent_partners(scene) -> list[str]:
    """Strong-pair partners of the present objects that are absent from the scene (sorted, unique)."""
    present = scene.names
    out = {p for n in present for p in partners_of(n) if p not in present}
    return sorted(out)


def cooccurring_absent(scene) -> list[str]:
    """Absent categories that co-occur with the present ones: absent partners first, else the absent objects of
    the scene type's list (empty for the uniform sampler when no partner is absent)."""
    ap = absent_partners(scene)
    if ap:
        return ap
    if scene.scene_type:
        present = scene.names
        return [n for n in scene_by_name(scene.scene_type).objects if n not in present]
    return []


def qa_turns(scene, rng: np.random.Generator, hard_negatives: float = 0.1) -> list[tuple[str, str]]:
    """Question-answer pairs about the scene, all true: balanced yes/no existence questions, a count, a color and a
    left/right relation. Of the yes/no negatives a fraction `hard_negatives` (in expectation) asks about a
    co-occurring absent object, the rest about a random absent one (0.5: one of the two negatives, as real
    hallucination benchmarks mix them; real instruct data has almost none, so a low value trains a model that is
    weaker on co-occurring negatives)."""
    present = sorted(scene.names)
    absent = [c for c in CATEGORY_NAMES if c not in scene.names]
    turns: list[tuple[str, str]] = []
    n_pos = min(2, len(present))
    pos_names = [present[int(i)] for i in rng.permutation(len(present))[:n_pos]]
    negs: list[str] = []
    co = cooccurring_absent(scene)
    expected = n_pos * hard_negatives
    n_co = int(math.floor(expected + 1e-9))
    if expected - n_co > 1e-9:  # no draw when the count is whole (0.5 with two negatives: exactly one)
        n_co += int(rng.random() < expected - n_co)
    for _ in range(n_co):
        left = [c for c in co if c not in negs]
        if not left:
            break
        negs.append(left[int(rng.integers(0, len(left)))])
    while len(negs) < n_pos:
        rest = [c for c in absent if c not in negs]
        negs.append(rest[int(rng.integers(0, len(rest)))])
    for n in pos_names:
        turns.append((Q_EXIST.format(a_name=with_article(n)), YES))
    for n in negs:
        turns.append((Q_EXIST.format(a_name=with_article(n)), NO))

    counts = Counter(o.name for o in scene.objects)
    c = present[int(rng.integers(0, len(present)))]
    k = counts[c]
    turns.append((Q_COUNT.format(names=plural(c)),
                  A_COUNT_ONE.format(name=c) if k == 1 else A_COUNT_MANY.format(num=number_word(k), names=plural(c))))

    singles = [o for o in scene.objects if counts[o.name] == 1]
    if singles:
        o = singles[int(rng.integers(0, len(singles)))]
        turns.append((Q_COLOR.format(name=o.name), A_COLOR.format(name=o.name, color=o.color)))

    margin = max(2.0, scene.size / 16.0)
    pairs = [(a, b) for i, a in enumerate(singles) for b in singles[i + 1:]
             if abs(a.center_x - b.center_x) >= margin]
    if pairs:
        a, b = pairs[int(rng.integers(0, len(pairs)))]
        if rng.random() < 0.5:
            a, b = b, a
        turns.append((Q_LEFT.format(a=a.name, b=b.name), YES if a.center_x < b.center_x else NO))
    order = rng.permutation(len(turns))
    return [turns[int(i)] for i in order]


def conversation(turns: list[tuple[str, str]]) -> list[dict]:
    """LLaVA conversation list; `<image>\\n` starts the first human turn only."""
    conv = []
    for i, (q, a) in enumerate(turns):
        conv.append({"from": "human", "value": ("<image>\n" + q) if i == 0 else q})
        conv.append({"from": "gpt", "value": a})
    return conv


def detail_prompt(rng: np.random.Generator) -> str:
    return DETAIL_PROMPTS[int(rng.integers(0, len(DETAIL_PROMPTS)))]
