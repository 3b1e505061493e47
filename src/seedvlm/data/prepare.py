"""LLaVA-Instruct conversations -> training records `{"id", "image", "prompt", "answer"[, "followups"]}`.

How a conversation becomes records (docs/training.md says the same), by `turns`:
- `history` (the default, as LLaVA trains): one record per conversation, id = the conversation's id, its first
  (human, gpt) pair as `prompt`/`answer` and the later pairs as `followups` [{"prompt", "answer"}, ...]; training
  renders the whole conversation as one sequence, every answer supervised with every earlier turn in context;
- `each`: one record per pair, each without the earlier turns; id = `{id}-{turn}` (turn counted from 0), so
  `000000033471-2` is the third question about image 000000033471;
- `first`: only the first pair of each conversation (id `{id}-0`).
The prompt is the human turn with every `<image>` placeholder (and the newline around it) removed, because the
chat template (`seedvlm.models.prompting`) puts exactly one `<image>` in front of the first question itself.

What is skipped (counted and reported with a few ids, never silent):
- `no_image`: the conversation has no `image` field, or no `<image>` in its first human turn (text-only data);
- `missing_image`: the image file does not exist under the image folder (the example names the path tried);
- `empty_question` / `empty_answer`: a turn whose text is empty once `<image>` is removed;
- `short_answer`: an answer with fewer than `min_answer_words` words;
- `after_skipped_turn` (history, first): the turns after a skipped one (their context would be incomplete).
A file that is not JSON, or not a list of conversations of alternating human/gpt turns, is an error that names the
file and the record (index and id); so is an image path that leaves the image folder (`../`).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seedvlm.errors import SeedVLMError
from seedvlm.io import read_json, require_dir, safe_join, write_json

HUMAN_ROLES = ("human", "user")
GPT_ROLES = ("gpt", "assistant")
IMAGE_PLACEHOLDER = "<image>"
SKIP_REASONS = ("no_image", "missing_image", "empty_question", "empty_answer", "short_answer",
                "after_skipped_turn")
TURN_MODES = ("history", "each", "first")
_PLACEHOLDER_RE = re.compile(r"\s*<image>\s*")
_EXAMPLES = 5


@dataclass
class PrepareReport:
    """Counts of what `conversations_to_records` kept and skipped, with up to 5 example ids per reason."""

    conversations: int = 0
    turns: int = 0
    kept: int = 0
    kept_turns: int = 0
    sampled: int | None = None
    skipped: dict[str, int] = field(default_factory=lambda: {r: 0 for r in SKIP_REASONS})
    examples: dict[str, list[str]] = field(default_factory=lambda: {r: [] for r in SKIP_REASONS})

    def skip(self, reason: str, ident: str, n: int = 1) -> None:
        self.skipped[reason] += n
        if len(self.examples[reason]) < _EXAMPLES:
            self.examples[reason].append(ident)

    def to_dict(self) -> dict:
        return {"conversations": self.conversations, "turns": self.turns, "kept": self.kept,
                "kept_turns": self.kept_turns,
                "sampled": self.sampled, "skipped": dict(self.skipped), "examples": dict(self.examples)}

    def summary(self) -> str:
        """Human-readable lines: totals, then one line per skip reason that occurred."""
        units = {"no_image": "conversations", "missing_image": "conversations"}
        lines = [f"{self.conversations} conversations, {self.turns} turn pairs -> {self.kept} records "
                 f"({self.kept_turns} supervised turns)"
                 + (f" ({self.sampled} sampled)" if self.sampled is not None else "")]
        for r in SKIP_REASONS:
            if self.skipped[r]:
                lines.append(f"  skipped {self.skipped[r]} {units.get(r, 'turns')}: {r} "
                             f"(e.g. {', '.join(self.examples[r])})")
        if not any(self.skipped.values()):
            lines.append("  nothing skipped")
        return "\n".join(lines)


def strip_placeholder(text: str) -> str:
    """The text with every `<image>` (and the whitespace around it) removed: "<image>\\nWhat is it?" -> "What is it?"."""
    return _PLACEHOLDER_RE.sub(" ", text).strip()


def _record_name(rec: Any, index: int) -> str:
    ident = rec.get("id") if isinstance(rec, dict) else None
    return f"record #{index}" + (f" (id {ident!r})" if ident is not None else "")


def _check_turns(conv: Any, source: str, index: int, rec: Any) -> list[tuple[str, str]]:
    """Validate one conversation's turns: a list of {"from", "value"} alternating human, gpt, human, gpt, ..."""
    where = f"{source}: {_record_name(rec, index)}"
    if not isinstance(conv, list) or not conv:
        raise SeedVLMError(f"{where}: 'conversations' must be a non-empty list of turns")
    if len(conv) % 2:
        raise SeedVLMError(f"{where}: {len(conv)} turns; expected human/gpt pairs (an even number)")
    pairs = []
    for t, turn in enumerate(conv):
        if not isinstance(turn, dict) or not isinstance(turn.get("from"), str) or not isinstance(turn.get("value"), str):
            raise SeedVLMError(f"{where}: turn {t} must be an object with string 'from' and 'value'")
        want = HUMAN_ROLES if t % 2 == 0 else GPT_ROLES
        if turn["from"].lower() not in want:
            raise SeedVLMError(f"{where}: turn {t} is from {turn['from']!r}; expected {want[0]!r} "
                               f"(turns alternate human, gpt)")
        if t % 2:
            pairs.append((conv[t - 1]["value"], turn["value"]))
    return pairs


def _usable_turns(pairs: list[tuple[str, str]], ident: str, min_answer_words: int, report: PrepareReport,
                  independent: bool) -> list[tuple[int, str, str]]:
    """(turn, question, answer) of the usable turns, each unusable one reported with its reason: with `independent`
    turns all usable ones; otherwise only those before the first unusable one (history needs every earlier turn;
    the rest are reported as `after_skipped_turn`)."""
    kept = []
    for t, (question, answer) in enumerate(pairs):
        rid = f"{ident}-{t}"
        q, a = strip_placeholder(question), answer.strip()
        reason = ("empty_question" if not q else "empty_answer" if not a
                  else "short_answer" if len(a.split()) < min_answer_words else None)
        if reason is None:
            kept.append((t, q, a))
            continue
        report.skip(reason, rid)
        if not independent:
            if t + 1 < len(pairs):
                report.skip("after_skipped_turn", f"{ident}-{t + 1}", len(pairs) - t - 1)
            break
    return kept


def conversations_to_records(data: Any, images_dir: str | Path, source: str = "input",
                             min_answer_words: int = 1, turns: str = "history") -> tuple[list[dict], PrepareReport]:
    """Turn a LLaVA-Instruct list (already parsed JSON) into records; see the module docstring for the rules."""
    if turns not in TURN_MODES:
        raise SeedVLMError(f"turns must be one of {', '.join(TURN_MODES)}, got {turns!r}")
    if not isinstance(data, list):
        raise SeedVLMError(f"{source}: expected a JSON list of conversations (LLaVA-Instruct format), "
                           f"got {type(data).__name__}")
    images_dir = Path(images_dir)
    report = PrepareReport()
    records: list[dict] = []
    seen_ids: set[str] = set()
    for i, rec in enumerate(data):
        if not isinstance(rec, dict):
            raise SeedVLMError(f"{source}: record #{i} is a {type(rec).__name__}, expected an object")
        if "conversations" not in rec:
            raise SeedVLMError(f"{source}: {_record_name(rec, i)} has no 'conversations'")
        ident = str(rec.get("id", i))
        pairs = _check_turns(rec["conversations"], source, i, rec)
        report.conversations += 1
        report.turns += len(pairs)
        image = rec.get("image")
        if image is not None and not isinstance(image, str):
            raise SeedVLMError(f"{source}: {_record_name(rec, i)}: 'image' must be a file name, got {image!r}")
        for t, (question, _) in enumerate(pairs):  # one image per prompt: merging several tags would misplace them
            if question.count(IMAGE_PLACEHOLDER) > 1:
                raise SeedVLMError(f"{source}: {_record_name(rec, i)}: turn {2 * t} holds "
                                   f"{question.count(IMAGE_PLACEHOLDER)} {IMAGE_PLACEHOLDER} tags; the model takes "
                                   f"exactly one image per prompt")
        if not image or IMAGE_PLACEHOLDER not in pairs[0][0]:
            report.skip("no_image", ident, 1)
            continue
        try:
            path = safe_join(images_dir, image)
        except SeedVLMError as e:
            raise SeedVLMError(f"{source}: {_record_name(rec, i)}: {e}") from None
        if not path.is_file():
            report.skip("missing_image", f"{ident}: {path} not found", 1)
            continue
        usable = _usable_turns(pairs[:1] if turns == "first" else pairs, ident, min_answer_words, report,
                               independent=turns == "each")
        if turns == "history" and usable:
            (_, q, a), rest = usable[0], usable[1:]
            new = [{"id": ident, "image": image, "prompt": q, "answer": a}]
            if rest:
                new[0]["followups"] = [{"prompt": fq, "answer": fa} for _, fq, fa in rest]
        else:
            new = [{"id": f"{ident}-{t}", "image": image, "prompt": q, "answer": a} for t, q, a in usable]
        for r in new:
            if r["id"] in seen_ids:
                raise SeedVLMError(f"{source}: {_record_name(rec, i)}: duplicate record id {r['id']!r} "
                                   f"(conversation ids must be unique)")
            seen_ids.add(r["id"])
            report.kept_turns += 1 + len(r.get("followups", ()))
        records.extend(new)
    report.kept = len(records)
    return records, report


def sample_records(records: list[dict], max_samples: int | None, seed: int = 0) -> list[dict]:
    """At most `max_samples` records drawn uniformly with `random.Random(seed)`, kept in their original order."""
    if max_samples is None or max_samples >= len(records):
        return records
    if max_samples < 0:
        raise SeedVLMError(f"max_samples must be >= 0, got {max_samples}")
    keep = sorted(random.Random(seed).sample(range(len(records)), max_samples))
    return [records[k] for k in keep]


def prepare(input_path: str | Path, images_dir: str | Path, out: str | Path, max_samples: int | None = None,
            min_answer_words: int = 1, seed: int = 0, turns: str = "history",
            prompt_style: str | None = None) -> PrepareReport:
    """Read a LLaVA-Instruct file, convert, optionally subsample, and write the records atomically to `out`
    (each with `prompt_style` when one is given, so training cannot use another template)."""
    require_dir(images_dir, "image folder")
    data = read_json(input_path, "instruction file")
    records, report = conversations_to_records(data, images_dir, source=str(input_path),
                                               min_answer_words=min_answer_words, turns=turns)
    if not records:
        raise SeedVLMError(f"{input_path}: no usable records\n{report.summary()}")
    if max_samples is not None:
        records = sample_records(records, max_samples, seed)
        report.sampled = len(records)
    if prompt_style is not None:
        records = [dict(r, prompt_style=prompt_style) for r in records]
    write_json(out, records, indent=1)
    return report
