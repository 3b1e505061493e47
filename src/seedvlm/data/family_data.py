"""Training examples for the non-LLaVA-1.5 families (Qwen2-VL/Qwen2.5-VL, LLaVA-NeXT, SmolVLM): each record's
conversation rendered through the family's training template, its ids and labels from the family's token accounting
(`models.families.tokens.build_example`: labels = every answer and its end-of-turn token), its exact length known
from the image size alone before training (never truncated), and a collator that batches each family's pixel inputs
and metadata (Qwen: concatenated patch rows + image_grid_thw; tiled layouts: tiles padded with zeros + image_sizes /
pixel_attention_mask)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from PIL import Image

from seedvlm.data.dataset import IGNORE_INDEX, model_context_length, record_turns, run_records
from seedvlm.errors import SeedVLMError
from seedvlm.io import open_image, read_json, safe_join
from seedvlm.models.families.base import Family
from seedvlm.models.families.tokens import build_example, render, training_template

# per-token inputs some processors add besides input_ids/attention_mask (Qwen's image-token type ids); padded with 0
TOKEN_KEYS = ("mm_token_type_ids",)


def record_messages(rec: dict) -> list[dict]:
    """A record's turns as chat messages, its one image in the first user turn."""
    out = []
    for k, (question, answer) in enumerate(record_turns(rec)):
        content = ([{"type": "image"}] if k == 0 else []) + [{"type": "text", "text": question}]
        out += [{"role": "user", "content": content},
                {"role": "assistant", "content": [{"type": "text", "text": answer}]}]
    return out


class FamilyDataset(torch.utils.data.Dataset):
    """Item i = {"input_ids", "labels", the family's pixel and metadata inputs (leading dim: this sample's images),
    any per-token inputs, "sample_index"}; `lengths[i]` is its exact token count, computed before training."""

    def __init__(self, records: Sequence[dict], family: Family, processor, images_dir: str | Path, max_length: int,
                 template: str, source: str = "data"):
        if not records:
            raise SeedVLMError(f"{source}: no records to train on")
        self.records, self.family, self.processor = list(records), family, processor
        self.template, self.source = template, source
        self.images_dir = Path(images_dir)
        self.paths: list[Path] = []
        self.texts: list[str] = []
        self.examples = []
        for i, rec in enumerate(self.records):
            where = f"{source}: record {rec['id']!r} (#{i})"
            try:
                path = safe_join(self.images_dir, rec["image"])
                if not path.is_file():
                    raise SeedVLMError(f"image not found: {path}")
                open_image(path, decode=False)  # the header only: unreadable or oversized images fail here
                with Image.open(path) as im:
                    width, height = im.size
                messages = record_messages(rec)
                example = build_example(family, processor, messages, [(height, width)], template)
            except SeedVLMError as e:
                raise SeedVLMError(f"{where}: {e}") from None
            if len(example) > max_length:
                raise SeedVLMError(f"{where} is {len(example)} tokens, longer than the context of {max_length}; "
                                   f"tokenization never truncates: shorten or drop this record")
            self.paths.append(path)
            self.texts.append(render(processor, messages, template))
            self.examples.append(example)
        self.lengths = [len(e) for e in self.examples]

    def __len__(self) -> int:
        return len(self.records)

    @property
    def image_names(self) -> list[str]:
        """The distinct image file names (relative to the image folder), sorted."""
        return sorted({r["image"] for r in self.records})

    def __getitem__(self, i: int) -> dict[str, Any]:
        try:
            image = open_image(self.paths[i])
        except SeedVLMError as e:
            raise SeedVLMError(f"{self.source}: record {self.records[i]['id']!r}: {e}") from None
        enc = self.processor(text=[self.texts[i]], images=[image], return_tensors="pt")
        ids = enc["input_ids"][0]
        example = self.examples[i]
        if ids.tolist() != example.input_ids:
            raise SeedVLMError(f"{self.source}: record {self.records[i]['id']!r}: the processor gave {ids.numel()} "
                               f"tokens, the token accounting {len(example)}")
        item = {"input_ids": ids, "labels": torch.tensor(example.labels, dtype=torch.long), "sample_index": i}
        for key in (*self.family.pixel_keys, *self.family.metadata_keys):
            item[key] = enc[key]
        for key in TOKEN_KEYS:
            if key in enc:
                item[key] = enc[key][0]
        return item


def _cat_padded(values: Sequence[torch.Tensor]) -> torch.Tensor:
    """Per-sample tensors (images, ...) concatenated along dim 0; where their dim 1 differs (tiles per image) the
    shorter ones are padded with zeros, the padding the families' models drop."""
    if values[0].dim() > 1 and len({v.shape[1] for v in values}) > 1:
        n = max(v.shape[1] for v in values)
        values = [F.pad(v, (0, 0) * (v.dim() - 2) + (0, n - v.shape[1])) for v in values]
    return torch.cat(list(values), dim=0)


class FamilyCollator:
    """Pads ids (pad id), labels (-100), attention mask and per-token inputs (0) on the right; batches the family's
    pixel inputs and metadata in sample order; carries the sample indices."""

    def __init__(self, family: Family, pad_token_id: int | None):
        if pad_token_id is None:
            raise SeedVLMError("the tokenizer has no pad token; set one before training")
        self.family, self.pad_token_id = family, int(pad_token_id)

    def __call__(self, features: Sequence[dict]) -> dict[str, torch.Tensor]:
        n = max(f["input_ids"].numel() for f in features)

        def pad(key: str, fill: int) -> torch.Tensor:
            return torch.stack([F.pad(f[key], (0, n - f[key].numel()), value=fill) for f in features])

        out = {"input_ids": pad("input_ids", self.pad_token_id), "labels": pad("labels", IGNORE_INDEX),
               "attention_mask": torch.stack([F.pad(torch.ones(f["input_ids"].numel(), dtype=torch.long),
                                                    (0, n - f["input_ids"].numel())) for f in features])}
        for key in TOKEN_KEYS:
            if key in features[0]:
                out[key] = pad(key, 0)
        for key in (*self.family.pixel_keys, *self.family.metadata_keys):
            out[key] = _cat_padded([f[key] for f in features])
        out["sample_index"] = torch.tensor([int(f["sample_index"]) for f in features], dtype=torch.long)
        return out


def load_family_train_data(cfg, family: Family) -> tuple[Any, FamilyDataset, int]:
    """(processor, dataset, max_length) for a TrainConfig on a non-LLaVA-1.5 folder: the family's processor, the
    records (at most cfg.max_samples) as examples of exact length, counted under the config's family options (e.g.
    min/max pixels) as the processor will encode them; fails here, before any weights load."""
    from seedvlm.models.families.loading import load_family_processor
    from seedvlm.models.families.options import given_options

    config = read_json(Path(cfg.model) / "config.json", "model config")
    processor = load_family_processor(cfg.model, given_options(cfg), family=family)
    records, max_length = run_records(cfg, model_context_length(_Config(config.get("text_config") or config)))
    template = training_template(family, processor, config)
    return processor, FamilyDataset(records, family, processor, cfg.images, max_length, template,
                                    source=str(cfg.data)), max_length


class _Config:
    """A config dict read as attributes (for `model_context_length`)."""

    def __init__(self, d: dict):
        self.__dict__.update(d)


__all__ = ["FamilyCollator", "FamilyDataset", "load_family_train_data", "record_messages"]
