"""Yes-probability scoring of yes/no answers: P(yes) from the first-token distribution, AUROC and average precision.

Parsed POPE metrics depend on where a model puts its yes/no threshold (a method can gain F1 by saying "yes" more
often); P(yes) ranks the questions without a threshold, so AUROC and average precision show whether the model got
better at telling present from absent. P(yes) is the softmax mass of the tokenizer's "yes" variants divided by the
mass of its "yes" and "no" variants ("yes", "Yes", "▁Yes", "ĠYES", ...), read from the first new token's
distribution; `yes_no_mass` (the unnormalized mass) says how much of the distribution those variants hold.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import torch

from seedvlm.errors import SeedVLMError
from seedvlm.eval.statistics import average_ranks

_MARKERS = ("▁", "Ġ")  # SentencePiece's and byte-level BPE's word-start marks


class ScoredAnswer(str):
    """An answer text that also carries P(yes) of its first token (and the yes+no mass); behaves as the plain
    string everywhere else (parsing, JSON), so it passes through code written for text answers."""

    p_yes: float | None
    yes_no_mass: float | None

    def __new__(cls, text: str, p_yes: float | None = None, yes_no_mass: float | None = None):
        obj = super().__new__(cls, text)
        obj.p_yes = None if p_yes is None else float(p_yes)
        obj.yes_no_mass = None if yes_no_mass is None else float(yes_no_mass)
        return obj

    def __reduce__(self):  # pickling (answers gathered across processes) keeps the scores
        return (ScoredAnswer, (str(self), self.p_yes, self.yes_no_mass))


def answer_with_scores(text: str, p_yes: float | None = None, yes_no_mass: float | None = None,
                       where: str = "answer") -> str:
    """`text` as a ScoredAnswer when P(yes) is known, else the plain text; a P(yes) that is no number in [0, 1]
    is an error naming `where`."""
    if p_yes is None:
        return text
    if isinstance(p_yes, bool) or not isinstance(p_yes, (int, float)) or not 0.0 <= p_yes <= 1.0:
        raise SeedVLMError(f"{where}: p_yes must be a number in [0, 1], got {p_yes!r}")
    return ScoredAnswer(text, p_yes, yes_no_mass if isinstance(yes_no_mass, (int, float)) else None)


def answer_scores(text: str) -> dict:
    """{"p_yes", "yes_no_mass"} of a ScoredAnswer for its sample row; {} for a plain text."""
    p = getattr(text, "p_yes", None)
    return {} if p is None else {"p_yes": p, "yes_no_mass": getattr(text, "yes_no_mass", None)}


def _normal(token: str) -> str:
    for m in _MARKERS:
        token = token.replace(m, " ")
    return token.strip().lower()


def yes_no_token_ids(tokenizer) -> tuple[list[int], list[int]]:
    """(yes ids, no ids): every non-special vocabulary entry that reads "yes" / "no" in any case, with or without a
    word-start mark. Cached on the tokenizer object (the scan reads the whole vocabulary once)."""
    cached = getattr(tokenizer, "_seedvlm_yes_no_ids", None)
    if cached is not None:
        return cached
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    yes, no = [], []
    for token, idx in tokenizer.get_vocab().items():
        if idx in special:
            continue
        word = _normal(token)
        if word == "yes":
            yes.append(idx)
        elif word == "no":
            no.append(idx)
    result = (sorted(yes), sorted(no))
    if not result[0] or not result[1]:
        raise ValueError(f"the tokenizer has no 'yes' or no 'no' token (found {len(yes)} and {len(no)})")
    try:
        tokenizer._seedvlm_yes_no_ids = result
    except AttributeError:
        pass
    return result


def yes_probability(logits: torch.Tensor, yes_ids: Sequence[int], no_ids: Sequence[int]
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """(P(yes), yes+no mass) per row of first-token logits (..., V): softmax over the vocabulary, yes mass over the
    yes+no mass. -inf logits (masked tokens) have probability 0; a row with no yes/no mass gets P(yes) = 0.5."""
    probs = torch.softmax(logits.float(), dim=-1)
    p_y = probs[..., list(yes_ids)].sum(-1)
    p_n = probs[..., list(no_ids)].sum(-1)
    mass = p_y + p_n
    p = torch.where(mass > 0, p_y / mass.clamp_min(torch.finfo(mass.dtype).tiny), torch.full_like(mass, 0.5))
    return p, mass


def scored_answers(texts: Sequence[str], first_logits: torch.Tensor, tokenizer) -> list[str]:
    """Answers with P(yes) and the yes+no mass of each row's first-token logits (B, V)."""
    p, mass = yes_probability(first_logits, *yes_no_token_ids(tokenizer))
    return [ScoredAnswer(t, a, m) for t, a, m in zip(texts, p.tolist(), mass.tolist())]


# ------------------------------------------------------------------------------------------- threshold-free metrics
def _check(scores: Sequence[float], labels: Sequence[int]) -> tuple[list[float], list[int]]:
    if len(scores) != len(labels):
        raise ValueError(f"{len(scores)} scores but {len(labels)} labels")
    return [float(s) for s in scores], [1 if y else 0 for y in labels]


def auroc(scores: Sequence[float], labels: Sequence[int]) -> float | None:
    """Area under the ROC curve: the probability that a random positive scores above a random negative, ties
    counting one half (Mann-Whitney U / (n+ n-), with average ranks). None without both classes."""
    s, y = _check(scores, labels)
    n_pos = sum(y)
    n_neg = len(y) - n_pos
    if not n_pos or not n_neg:
        return None
    rank_sum = sum(r for r, t in zip(average_ranks(s), y) if t)
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def average_precision(scores: Sequence[float], labels: Sequence[int]) -> float | None:
    """Average precision: sum over distinct score thresholds (descending) of (recall gain) x (precision there);
    tied scores enter together (scikit-learn's definition, no interpolation). None without a positive."""
    s, y = _check(scores, labels)
    n_pos = sum(y)
    if not n_pos:
        return None
    order = sorted(range(len(s)), key=lambda i: -s[i])
    ap, tp, seen, i = 0.0, 0, 0, 0
    while i < len(order):
        j = i
        while j < len(order) and s[order[j]] == s[order[i]]:
            j += 1
        gained = sum(y[order[k]] for k in range(i, j))
        tp += gained
        seen = j
        ap += (gained / n_pos) * (tp / seen)
        i = j
    return ap


def yes_prob_metrics(samples: Iterable[dict]) -> dict:
    """{"auroc", "average_precision", "mean_yes_no_mass"} of samples with "p_yes" and "label" ("yes" positive);
    empty when any sample lacks p_yes (e.g. answers scored from text alone)."""
    rows = list(samples)
    if not rows or any(r.get("p_yes") is None for r in rows):
        return {}
    scores = [r["p_yes"] for r in rows]
    labels = [r["label"] == "yes" for r in rows]
    out = {"auroc": auroc(scores, labels), "average_precision": average_precision(scores, labels)}
    masses = [r["yes_no_mass"] for r in rows if r.get("yes_no_mass") is not None]
    if masses:
        out["mean_yes_no_mass"] = sum(masses) / len(masses)
    return out


YES_PROB_KEYS = ("auroc", "average_precision", "mean_yes_no_mass")


def mean_yes_prob_metrics(per_split: Sequence[dict]) -> dict:
    """Mean of each yes-probability metric over splits, when every split has it."""
    out = {}
    for k in YES_PROB_KEYS:
        vals = [m.get(k) for m in per_split]
        if vals and all(v is not None for v in vals):
            out[k] = sum(vals) / len(vals)
    return out
