"""Pretraining data: the world's captions and instruct turns as token sequences (prompt masked), plus a pool of
uniform-category scenes rendered in memory for the vision stage."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from seedvlm.errors import SeedVLMError
from seedvlm.io import read_json
from seedvlm.models.processor import CLIP_MEAN, CLIP_STD, chat_prompt

CAPTION_PROMPT = "Describe the image briefly."


@dataclass
class TextSample:
    image_index: int     # row in the image table of its split
    input_ids: list[int]
    labels: list[int]    # -100 on the prompt


def world_records(world: Path, split: str) -> tuple[list[str], list[tuple[str, str, str]], list[tuple[str, str, str]]]:
    """(image file names, caption records, instruct records) of a world split; records are (image, prompt, answer)."""
    inst = read_json(world / f"instances_{split}.json", "instances file")
    caps = read_json(world / f"captions_{split}.json", "captions file")
    instruct = read_json(world / f"instruct_{split}.json", "instruct file")
    images = [im["file_name"] for im in inst["images"]]
    by_id = {im["id"]: im["file_name"] for im in inst["images"]}
    caption_recs = [(by_id[a["image_id"]], CAPTION_PROMPT, a["caption"]) for a in caps["annotations"]]
    instruct_recs = []
    for rec in instruct:
        conv = rec["conversations"]
        for h, g in zip(conv[0::2], conv[1::2]):
            q = h["value"].replace("<image>", "").strip()
            instruct_recs.append((rec["image"], q, g["value"].strip()))
    return images, caption_recs, instruct_recs


def tokenize_records(records, images: list[str], processor, n_image_tokens: int,
                     contexts: dict[str, str] | None = None) -> list[TextSample]:
    """Tokenize (image, prompt, answer) with the chat template; `<image>` expanded to the patch count, or, with
    `contexts`, replaced by the image's text description (text-only language pretraining)."""
    tok = processor.tokenizer
    index = {name: i for i, name in enumerate(images)}
    image_tok = tok.image_token if hasattr(tok, "image_token") else "<image>"
    cache: dict[str, list[int]] = {}
    out = []
    for image, prompt, answer in records:
        if image not in index:
            raise SeedVLMError(f"record refers to image {image!r} that is not in the split's instances")
        if contexts is not None:
            p = tok(chat_prompt(processor, prompt).replace(image_tok, contexts[image])).input_ids
        else:
            if prompt not in cache:
                text = chat_prompt(processor, prompt).replace(image_tok, image_tok * n_image_tokens)
                cache[prompt] = tok(text).input_ids
            p = cache[prompt]
        a = tok(" " + answer, add_special_tokens=False).input_ids + [tok.eos_token_id]
        out.append(TextSample(index[image], p + a, [-100] * len(p) + a))
    return out


def scene_texts(world: Path, split: str, drop: float = 0.0, seed: int = 0) -> dict[str, str]:
    """Each image's objects as text, left to right ("red fork , blue knife , green cup"): the stand-in for the image
    when the language model is pretrained on text alone (stage 0), as LLaVA starts from a pretrained LM. With
    `drop` > 0 each object is left out with that probability (seeded; perception noise: an unlisted object may still
    be there, so the LM learns to weigh co-occurrence as a VLM with an imperfect eye does)."""
    if not 0.0 <= drop < 1.0:
        raise SeedVLMError(f"text drop must be in [0, 1), got {drop}")
    inst = read_json(world / f"instances_{split}.json", "instances file")
    names = {c["id"]: c["name"] for c in inst["categories"]}
    objs: dict[int, list] = {}
    for a in inst["annotations"]:
        x = a["bbox"][0] + a["bbox"][2] / 2
        objs.setdefault(a["image_id"], []).append((x, f"{a.get('color', '')} {names[a['category_id']]}".strip()))
    rng = np.random.default_rng(seed)
    out = {}
    for im in inst["images"]:
        items = sorted(objs.get(im["id"], []))
        if drop > 0:
            keep = rng.random(len(items)) >= drop
            items = [t for t, k in zip(items, keep) if k]
        out[im["file_name"]] = " , ".join(t for _, t in items)
    return out


def collate(samples: list[TextSample], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch of token sequences."""
    L = max(len(s.input_ids) for s in samples)
    ids = torch.full((len(samples), L), pad_id, dtype=torch.long)
    labels = torch.full((len(samples), L), -100, dtype=torch.long)
    mask = torch.zeros((len(samples), L), dtype=torch.long)
    for i, s in enumerate(samples):
        n = len(s.input_ids)
        ids[i, :n] = torch.tensor(s.input_ids)
        labels[i, :n] = torch.tensor(s.labels)
        mask[i, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask,
            "image_index": torch.tensor([s.image_index for s in samples])}


def batches(samples: list[TextSample], batch_size: int, steps: int, seed: int):
    """`steps` batches drawn epoch by epoch in a seeded shuffled order; within each chunk of 50 batches the
    samples are grouped by length so padding stays small."""
    rng = random.Random(seed)
    order: list[int] = []
    made = 0
    while made < steps:
        if len(order) < batch_size:
            perm = list(range(len(samples)))
            rng.shuffle(perm)
            order.extend(perm)
        chunk_len = min(len(order), batch_size * 50)
        chunk = sorted(order[:chunk_len], key=lambda i: len(samples[i].input_ids))
        del order[:chunk_len]
        groups = [chunk[i:i + batch_size] for i in range(0, len(chunk) - batch_size + 1, batch_size)]
        order = chunk[len(groups) * batch_size:] + order
        rng.shuffle(groups)
        for g in groups:
            if made >= steps:
                return
            yield [samples[i] for i in g]
            made += 1


def normalize_images(images_uint8: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float, as the CLIP image processor does at the native size."""
    x = torch.as_tensor(images_uint8).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def load_split_images(world: Path, split: str, names: list[str], size: int) -> np.ndarray:
    """All images of a split as one uint8 array (N, size, size, 3); resized if the world was drawn at another size."""
    out = np.zeros((len(names), size, size, 3), dtype=np.uint8)
    for i, n in enumerate(names):
        p = world / "images" / split / n
        if not p.is_file():
            raise SeedVLMError(f"image missing: {p}")
        im = Image.open(p).convert("RGB")
        if im.size != (size, size):
            im = im.resize((size, size), Image.BICUBIC)
        out[i] = np.asarray(im)
    return out
