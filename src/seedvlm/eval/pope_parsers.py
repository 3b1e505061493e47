"""POPE answer parsers: the official decision (POPE's `evaluate.py`, identical in LLaVA's `eval_pope.py`) and a
strict variant.

official: the text before the first '.', commas deleted, split on ' ' only; "no" when a word is 'No', 'not' or 'no',
else "yes". Every string gets a decision: an empty answer is "yes", "NO" and "Not" are "yes" (case matters), and
"No\\nthere is" is "yes" (the newline glues "No" to the next word).
strict: the same, but words split on any white space ("No\\nthere is" is "no") and an empty or white-space-only
answer is unparsed (None), which the metrics count as wrong.
"""

from __future__ import annotations

from typing import Callable, Iterable

_NO_WORDS = frozenset({"No", "not", "no"})


def _first_sentence(text: str) -> str:
    return text.split(".")[0].replace(",", "")


def parse_official(text: str | None) -> str:
    """POPE's `evaluate.py` decision for any string ("yes" or "no"; None reads as the empty answer)."""
    words = _first_sentence(text or "").split(" ")
    return "no" if _NO_WORDS.intersection(words) else "yes"


def parse_strict(text: str | None) -> str | None:
    """The official rule with words split on any white space; None (unparsed) for an empty answer."""
    if text is None or not str(text).strip():
        return None
    return "no" if _NO_WORDS.intersection(_first_sentence(str(text)).split()) else "yes"


PARSERS: dict[str, Callable[[str | None], str | None]] = {"official": parse_official, "strict": parse_strict}


def disagreements(texts: Iterable[str | None]) -> int:
    """How many answers the official and the strict parser decide differently."""
    return sum(parse_official(t) != parse_strict(t) for t in texts)
