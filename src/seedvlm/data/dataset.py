"""Records -> tokenized training examples, the padding collator and a length-grouped sampler.

An example is a record's whole conversation in the prompt style (`seedvlm.models.prompting`; `hf`: "USER:
<image>\\n{prompt} ASSISTANT: {answer}</s>USER: {followup} ASSISTANT: {answer}</s>"), tokenized as one string and run
through the processor with the image (so `<image>` expands to exactly the vision tower's patch count); labels are
-100 everywhere but on every answer's tokens and its EOS.
Nothing is ever truncated: every record's length is computed up front (text only, no image decoding) and a record
longer than the context is an error naming it, before any training starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from PIL import Image
from transformers import LlavaConfig

from seedvlm.errors import SeedVLMError
from seedvlm.io import check_image, open_image, read_json, safe_join
from seedvlm.models import chat_prompt, check_model_dir, load_processor
from seedvlm.models.prompting import get_style, prepare_image, render_conversation

IGNORE_INDEX = -100
RECORD_KEYS = ("id", "image", "prompt", "answer")


def load_records(path: str | Path) -> list[dict]:
    """Read prepared records (a JSON list of {"id", "image", "prompt", "answer"[, "followups": [{"prompt", "answer"},
    ...]]}); errors name the file and record."""
    data = read_json(path, "training data file")
    if isinstance(data, list) and data and isinstance(data[0], dict) and "conversations" in data[0]:
        raise SeedVLMError(f"{path} is in LLaVA-Instruct format (it has 'conversations'); convert it first with "
                           f"`seedvlm prepare --input {path} --images DIR --out train.json`")
    if not isinstance(data, list):
        raise SeedVLMError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
    if not data:
        raise SeedVLMError(f"training data file {path} is empty (no records)")
    seen: set[str] = set()
    for i, rec in enumerate(data):
        if not isinstance(rec, dict):
            raise SeedVLMError(f"{path}: record #{i} is a {type(rec).__name__}, expected an object")
        missing = [k for k in RECORD_KEYS if not isinstance(rec.get(k), str) or not rec.get(k).strip()]
        if missing:
            raise SeedVLMError(f"{path}: record #{i} (id {rec.get('id')!r}) lacks non-empty string field(s) "
                               f"{missing}; expected {list(RECORD_KEYS)}")
        turns = rec.get("followups", [])
        if not isinstance(turns, list) or not all(
                isinstance(t, dict) and all(isinstance(t.get(k), str) and t[k].strip() for k in ("prompt", "answer"))
                for t in turns):
            raise SeedVLMError(f"{path}: record #{i} (id {rec['id']!r}): 'followups' must be a list of "
                               f"{{\"prompt\", \"answer\"}} objects with non-empty strings")
        if rec["id"] in seen:
            raise SeedVLMError(f"{path}: record #{i}: duplicate id {rec['id']!r}")
        seen.add(rec["id"])
    return data


def count_image_tokens(processor) -> int:
    """How many image tokens the processor puts in place of one `<image>` (576 for LLaVA-1.5-7B)."""
    from seedvlm.models.folders import image_token_count

    return image_token_count(processor)[0]


def model_context_length(model_config) -> int:
    """The language model's context: text_config.max_position_embeddings."""
    text = getattr(model_config, "text_config", model_config)
    n = getattr(text, "max_position_embeddings", None)
    if not n:
        raise SeedVLMError("the model config has no text_config.max_position_embeddings; set max_length")
    return int(n)


def record_turns(rec: dict) -> list[tuple[str, str]]:
    """A record's (question, answer) turns: its own prompt/answer, then its `followups` (a multi-turn record)."""
    return [(rec["prompt"], rec["answer"])] + [(t["prompt"], t["answer"]) for t in rec.get("followups", ())]


def supervised_mask(offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]]) -> list[bool]:
    """Per token: does its character range overlap an answer span? (Special tokens without text, (0, 0), never.)"""
    return [a < b and any(a < e and s < b for s, e in spans) for a, b in offsets]


class InstructDataset(torch.utils.data.Dataset):
    """Tokenized examples over prepared records; item i = {"input_ids", "labels", "pixel_values", "sample_index"}.

    Each record's whole conversation is rendered in the prompt style (`seedvlm.models.prompting`) and tokenized as
    one string, so the input ids are exactly that string's tokenization (the one `<image>` expanded by the
    processor); labels are the ids of every answer and its EOS, -100 elsewhere. `lengths[i]` is example i's token
    count (known without decoding its image); `image_names` lists the images.
    """

    def __init__(self, records: Sequence[dict], processor, images_dir: str | Path, max_length: int,
                 source: str = "data", prompt_style: str | None = None):
        if not records:
            raise SeedVLMError(f"{source}: no records to train on")
        self.records = list(records)
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.images_dir = Path(images_dir)
        self.max_length = int(max_length)
        self.source = source
        self.style = get_style(prompt_style)
        other = sorted({r["prompt_style"] for r in self.records if r.get("prompt_style", self.style.name)
                        != self.style.name})
        if other:
            raise SeedVLMError(f"{source}: records prepared for prompt style {other[0]!r} (seedvlm prepare "
                               f"--prompt-style), this run uses {self.style.name!r}; pass --prompt-style {other[0]}")
        tok = self.tokenizer
        if tok.eos_token_id is None:
            raise SeedVLMError("the tokenizer has no EOS token; answers must end with one")
        self.image_token_id = processor.image_token_id
        self.num_image_tokens = count_image_tokens(processor)
        rendered = [render_conversation(processor, self.style, record_turns(r)) for r in self.records]
        self.texts = [text for text, _ in rendered]
        enc = tok(self.texts, return_offsets_mapping=True)
        self.text_ids: list[list[int]] = enc["input_ids"]
        self.text_labels: list[list[int]] = []
        self.lengths: list[int] = []
        self.paths: list[Path] = []
        for i, rec in enumerate(self.records):
            where = f"{source}: record {rec['id']!r} (#{i})"
            ids = self.text_ids[i]
            n_placeholders = sum(1 for t in ids if t == self.image_token_id)
            if n_placeholders != 1:
                raise SeedVLMError(f"{where}: its text holds {n_placeholders} <image> placeholders after the chat "
                                   f"template; expected exactly 1 (remove <image> from the prompt text: the template "
                                   f"adds it)")
            keep = supervised_mask(enc["offset_mapping"][i], rendered[i][1])
            labels = [t if k else IGNORE_INDEX for t, k in zip(ids, keep)]
            if labels.count(tok.eos_token_id) != len(rendered[i][1]):
                raise SeedVLMError(f"{where}: {len(rendered[i][1])} answers but {labels.count(tok.eos_token_id)} EOS "
                                   f"tokens among their labels: the tokenizer does not read {tok.eos_token!r} in text "
                                   f"as its EOS token")
            n_answer = sum(keep)
            total = len(ids) - 1 + self.num_image_tokens
            if total > self.max_length:
                raise SeedVLMError(
                    f"{where} is {total} tokens ({self.num_image_tokens} image tokens, {n_answer} answer tokens), "
                    f"longer than the context of {self.max_length}; tokenization never truncates: shorten or drop "
                    f"this record, or raise max_length if the model allows it")
            try:
                path = safe_join(self.images_dir, rec["image"])
            except SeedVLMError as e:
                raise SeedVLMError(f"{where}: {e}") from None
            if not path.is_file():
                raise SeedVLMError(f"{where}: image not found: {path}")
            try:  # the header only: an unreadable or oversized image fails here, before training starts
                check_image(path)
            except SeedVLMError as e:
                raise SeedVLMError(f"{where}: {e}") from None
            self.text_labels.append(labels)
            self.lengths.append(total)
            self.paths.append(path)

    def __len__(self) -> int:
        return len(self.records)

    @property
    def image_names(self) -> list[str]:
        """The distinct image file names (relative to the image folder), sorted."""
        return sorted({r["image"] for r in self.records})

    def load_image(self, i: int) -> Image.Image:
        try:
            image = open_image(self.paths[i])
        except SeedVLMError as e:
            raise SeedVLMError(f"{self.source}: record {self.records[i]['id']!r}: {e}") from None
        return prepare_image(self.processor, self.style, image)

    def _expand(self, values: list[int], i: int, fill: int) -> torch.Tensor:
        """The text-level sequence with the one `<image>` position repeated to the image token count."""
        p = self.text_ids[i].index(self.image_token_id)
        return torch.tensor(values[:p] + [fill] * self.num_image_tokens + values[p + 1:], dtype=torch.long)

    def __getitem__(self, i: int) -> dict[str, Any]:
        rec = self.records[i]
        enc = self.processor(images=[self.load_image(i)], text=[self.texts[i]], return_tensors="pt")
        ids = enc["input_ids"][0]
        want = self._expand(self.text_ids[i], i, self.image_token_id)
        if not torch.equal(ids, want):
            raise SeedVLMError(f"{self.source}: record {rec['id']!r}: the processor gave "
                               f"{int((ids == self.image_token_id).sum())} image tokens and {ids.numel()} tokens, "
                               f"expected {self.num_image_tokens} and {want.numel()} (the text's own tokenization)")
        return {
            "input_ids": ids,
            "labels": self._expand(self.text_labels[i], i, IGNORE_INDEX),
            "pixel_values": enc["pixel_values"][0],
            "sample_index": i,
        }


class Collator:
    """Pads right with the tokenizer's pad id (labels with -100), stacks pixel values, carries sample indices."""

    def __init__(self, pad_token_id: int):
        if pad_token_id is None:
            raise SeedVLMError("the tokenizer has no pad token; set one before training")
        self.pad_token_id = int(pad_token_id)

    def __call__(self, features: Sequence[dict]) -> dict[str, torch.Tensor]:
        n = max(f["input_ids"].numel() for f in features)
        ids = torch.full((len(features), n), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(features), n), IGNORE_INDEX, dtype=torch.long)
        attn = torch.zeros((len(features), n), dtype=torch.long)
        for b, f in enumerate(features):
            k = f["input_ids"].numel()
            ids[b, :k], labels[b, :k], attn[b, :k] = f["input_ids"], f["labels"], 1
        return {
            "input_ids": ids,
            "attention_mask": attn,
            "labels": labels,
            "pixel_values": torch.stack([f["pixel_values"] for f in features]),
            "sample_index": torch.tensor([int(f["sample_index"]) for f in features], dtype=torch.long),
        }


def length_grouped_indices(lengths: Sequence[int], batch_size: int, generator: torch.Generator,
                           megabatch_mult: int = 50) -> list[int]:
    """A random permutation cut into megabatches of `megabatch_mult * batch_size`, each sorted by length
    (longest first), so consecutive batches hold similar lengths and waste little on padding while the order
    stays random across megabatches (the scheme of transformers' LengthGroupedSampler). The first batch holds
    the longest example, so an out-of-memory shows at step 1."""
    perm = torch.randperm(len(lengths), generator=generator).tolist()
    size = max(1, megabatch_mult * batch_size)
    megas = [sorted(perm[i:i + size], key=lambda j: -lengths[j]) for i in range(0, len(perm), size)]
    if megas and megas[0]:
        longest = max(range(len(megas)), key=lambda m: lengths[megas[m][0]])
        megas[0][0], megas[longest][0] = megas[longest][0], megas[0][0]
    return [j for m in megas for j in m]


class LengthGroupedSampler(torch.utils.data.Sampler):
    """Length-grouped random order, seeded by (seed, epoch) only, so a resumed run sees the same order."""

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int = 0, megabatch_mult: int = 50):
        self.lengths = list(lengths)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.megabatch_mult = int(megabatch_mult)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        g = torch.Generator()
        g.manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(length_grouped_indices(self.lengths, self.batch_size, g, self.megabatch_mult))


def padding_fraction(lengths: Sequence[int], order: Sequence[int], batch_size: int) -> float:
    """Share of padded positions when `order` is cut into batches of `batch_size` (for docs and tests)."""
    pad = total = 0
    for s in range(0, len(order), batch_size):
        b = [lengths[j] for j in order[s:s + batch_size]]
        total += max(b) * len(b)
        pad += max(b) * len(b) - sum(b)
    return pad / total if total else 0.0


def run_records(cfg, context: int) -> tuple[list[dict], int]:
    """(records, max_length) of a TrainConfig: at most cfg.max_samples records, and a max_length (default: the
    model's `context`) that may not exceed the context."""
    max_length = cfg.max_length or context
    if max_length > context:
        raise SeedVLMError(f"max_length {max_length} exceeds the model's context ({context} positions)")
    records = load_records(cfg.data)
    if cfg.max_samples is not None:
        records = records[: cfg.max_samples]
    return records, max_length


def load_train_data(cfg) -> tuple[Any, "InstructDataset", int]:
    """(processor, dataset, max_length) for a TrainConfig: the model folder checked, its processor, the records
    (at most cfg.max_samples) tokenized without truncation, with a max_length that may not exceed the model's
    context. Shared by training and the teacher cache; the data fails here, before any weights load (so do family
    options such as --max-pixels, which LLaVA-1.5 folders do not take)."""
    from seedvlm.models.families.options import check_model_options, given_options

    check_model_options(cfg.model, given_options(cfg))
    check_model_dir(cfg.model)
    processor = load_processor(cfg.model)
    context = model_context_length(LlavaConfig.from_pretrained(cfg.model, local_files_only=True))
    records, max_length = run_records(cfg, context)
    return processor, InstructDataset(records, processor, cfg.images, max_length, source=str(cfg.data),
                                      prompt_style=cfg.prompt_style), max_length
