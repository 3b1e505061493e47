"""The official CHAIR mention extraction (`utils/chair.py` of github.com/LisaAnne/Hallucination), step by step.

1. lowercase; split sentences after '.', '?' or '!' followed by white space (what nltk's Punkt model does on these
   texts; no model download needed), and tokenize each sentence with nltk's Treebank word tokenizer, as
   `nltk.word_tokenize` does: a period is split off only at the end of a sentence, hyphenated words stay whole;
2. singularize every token with Pattern's rules (`seedvlm.eval.singularize`: "bus" -> "bu", "glasses" -> "glass");
3. one left-to-right pass over two-token windows: a pair in the phrase table becomes one word ("hot dog", "teddy
   bear", "baby dog" -> "dog", "passenger train" -> "train", "toilet seat" -> "toilet", "wine glas" -> "wine glass")
   and the window moves on by two; there are no three-word phrases ("stove top oven" never matches as a whole);
4. if the words contain "toilet" and "seat", every "seat" is dropped;
5. words in the synonym table are the mentions, each mapped to its category, repeats kept in order. The table is the
   official `synonyms.txt` read as the official code reads it: its entries " motor bike" and " cheesecake" (a
   leading space) and "iPhone" (a capital) can never equal a lowercased token, so they never match.
"""

from __future__ import annotations

import functools
import re

from seedvlm.eval.singularize import singularize
from seedvlm.eval.synonyms import SYNONYMS

# Entries of the official synonyms.txt that its parsing makes unreachable (leading space, capital letter).
UNMATCHABLE = frozenset({"motor bike", "cheesecake", "iphone"})

# word or phrase -> category, as the official code's `inverse_synonym_dict` restricted to reachable entries.
OFFICIAL_WORD_TO_CATEGORY: dict[str, str] = {
    w: cat for cat, names in SYNONYMS.items() for w in names if w not in UNMATCHABLE}

_DOUBLE_WORDS = (
    "motor bike", "motor cycle", "air plane", "traffic light", "street light", "traffic signal", "stop light",
    "fire hydrant", "stop sign", "parking meter", "suit case", "sports ball", "baseball bat", "baseball glove",
    "tennis racket", "wine glass", "hot dog", "cell phone", "mobile phone", "teddy bear", "hair drier",
    "potted plant", "bow tie", "laptop computer", "stove top oven", "home plate", "train track",
)
_ANIMALS = ("bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "animal", "cub")
_VEHICLES = ("jet", "train")


def _double_word_table() -> dict[str, str]:
    table = {w: w for w in _DOUBLE_WORDS}
    for animal in _ANIMALS:
        table[f"baby {animal}"] = animal
        table[f"adult {animal}"] = animal
    for vehicle in _VEHICLES:
        table[f"passenger {vehicle}"] = vehicle
    table.update({"bow tie": "tie", "toilet seat": "toilet", "wine glas": "wine glass"})
    return table


DOUBLE_WORDS: dict[str, str] = _double_word_table()

# Punkt's candidate sentence ends: a token ending in . ? or ! followed by punctuation or by white space and a token.
_CANDIDATE = re.compile(r"""\S*[.?!](?=(?P<after>[)";}\]*:@'({\[!?])|\s+(?P<next>\S+))""")
# Closing quotes/brackets at the start of a sentence belong to the one before (Punkt's boundary realignment).
_REALIGN = re.compile(r"""["')\]}]+?(?:\s+|(?=--)|$)""")


def parse_synonyms(text: str) -> dict[str, str]:
    """word -> category from a synonyms.txt text exactly as the official code parses it (line.strip().split(', '),
    first entry is the category, a later line overrides an earlier one)."""
    table: dict[str, str] = {}
    for line in text.splitlines(keepends=True):
        names = line.strip().split(", ")
        for name in names:
            table[name] = names[0]
    return table


@functools.lru_cache(maxsize=1)
def _word_tokenizer():
    """nltk's Treebank word tokenizer, imported on first use (importing nltk takes most of a second)."""
    from nltk.tokenize.destructive import NLTKWordTokenizer

    return NLTKWordTokenizer()


def split_sentences(text: str) -> list[str]:
    """Sentences as nltk's Punkt splits lowercased text: a break after '?', '!' or a '.' that does not end an
    ellipsis, when punctuation or white space and a token follow; closing quotes and brackets after a break move
    to the sentence before. (Punkt's learned abbreviations, "mr." or "u.s.", name no object, so they are left out.)"""
    spans: list[list[int]] = []
    start = 0
    for m in _CANDIDATE.finditer(text):
        if m.group().endswith(".."):
            continue
        spans.append([start, m.end()])
        start = m.start("next") if m.group("next") else m.end()
    spans.append([start, len(text)])
    for prev, cur in zip(spans, spans[1:]):
        moved = _REALIGN.match(text, cur[0])
        if moved:
            prev[1] = cur[0] + len(moved.group().rstrip())
            cur[0] = moved.end()
    return [text[a:b] for a, b in spans if text[a:b]]


def tokenize(caption: str) -> list[str]:
    """`nltk.word_tokenize(caption.lower())` without the Punkt download."""
    tok = _word_tokenizer()
    return [t for sentence in split_sentences(caption.lower()) for t in tok.tokenize(sentence)]


def _token_offsets(text: str, tokens: list[str]) -> list[tuple[int, int]]:
    """Character span of each token in `text`, found left to right (the tokenizer writes '"' as `` or '')."""
    spans, pos = [], 0
    for t in tokens:
        for form in ((t,) if t not in ("``", "''") else (t, '"')):
            at = text.find(form, pos)
            if at >= 0:
                spans.append((at, at + len(form)))
                pos = at + len(form)
                break
        else:
            spans.append((pos, pos))
    return spans


def official_mentions(caption: str, word_to_category: dict[str, str] | None = None
                      ) -> list[tuple[int, int, str, str]]:
    """[(start, end, word, category), ...]: the official code's `words` and `node_words`, in order with repeats,
    with the character span of each in `caption` (spans are offsets into caption.lower())."""
    table = OFFICIAL_WORD_TO_CATEGORY if word_to_category is None else word_to_category
    raw = tokenize(caption)
    spans = _token_offsets(caption.lower(), raw)
    words = [singularize(t) for t in raw]
    merged: list[tuple[int, int, str]] = []
    i = 0
    while i < len(words):
        pair = " ".join(words[i:i + 2])
        if pair in DOUBLE_WORDS:
            merged.append((spans[i][0], spans[i + 1][1], DOUBLE_WORDS[pair]))
            i += 2
        else:
            merged.append((spans[i][0], spans[i][1], words[i]))
            i += 1
    names = [w for _, _, w in merged]
    if "toilet" in names and "seat" in names:
        merged = [m for m in merged if m[2] != "seat"]
    return [(a, b, w, table[w]) for a, b, w in merged if w in table]
