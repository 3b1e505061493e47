"""Image-prefix reuse: questions about the same image share the start of their prompt (system text, the image
tokens, "USER:"), so that part is run once per image and its KV cache is copied to each question's row.

A left-padded batch of (image, question) prompts is split per image group into a prefix (the longest token prefix
the group's prompts share, never the whole of a prompt, always holding every image token) and per-row suffixes.
The prefixes of all groups run as one batch (left-padded, pixel values of each group's image once); the cache rows
are then copied to the questions (`Cache.reorder_cache`), and the suffixes run on top, left-padded again, so a row
reads [pads | prefix | pads | suffix]. The attention mask masks both pad runs and the position ids count real
tokens only, so every real token sees the same keys at the same positions as in the plain batch: answers and
logits equal the plain path's up to float rounding. Works through the model's generic interface (input_ids,
attention_mask, position_ids, a `Cache`), for `generate` and for the contrastive decoder's fused 2B batch.
"""

from __future__ import annotations

import hashlib
import inspect
from dataclasses import dataclass
from typing import Sequence

import torch
from transformers import DynamicCache

from seedvlm.decode.runners import Fused


def image_groups(images: Sequence) -> list[int]:
    """Group index per image, equal images (same mode, size and pixels) sharing one, numbered in first-seen order."""
    seen: dict[tuple, int] = {}
    out = []
    for im in images:
        key = (im.mode, im.size, hashlib.blake2b(im.tobytes(), digest_size=16).digest())
        out.append(seen.setdefault(key, len(seen)))
    return out


def image_token_id(model) -> int | None:
    """The image placeholder id of a multimodal config (transformers' `image_token_id`, or the older name)."""
    config = getattr(model, "config", None)
    for name in ("image_token_id", "image_token_index"):
        value = getattr(config, name, None)
        if value is not None:
            return int(value)
    return None


def _forward_params(model) -> set[str]:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # a peft wrapper takes **kwargs
    return set(inspect.signature(base.forward).parameters)


def cache_kwarg(model) -> str:
    """The name the model's forward takes its KV cache under ("cache" in recent transformers, else
    "past_key_values")."""
    return "cache" if "cache" in _forward_params(model) else "past_key_values"


def positions(attention_mask: torch.Tensor, start: torch.Tensor | int = 0) -> torch.Tensor:
    """Position ids that count real tokens only: start + cumsum(mask) - 1, 0 on pads (as HF generate does)."""
    pos = attention_mask.long().cumsum(-1) - 1 + start
    return pos.masked_fill(attention_mask == 0, 0)


def _left_pad(rows: list[torch.Tensor], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = rows[0].new_full((len(rows), width), pad)
    mask = rows[0].new_zeros((len(rows), width))
    for i, r in enumerate(rows):
        if len(r):
            ids[i, width - len(r):] = r
            mask[i, width - len(r):] = 1
    return ids, mask


@dataclass
class PrefixSplit:
    """One batch split into per-group prefixes (G rows) and per-question suffixes (Q rows), both left-padded."""

    prefix_ids: torch.Tensor
    prefix_mask: torch.Tensor
    suffix_ids: torch.Tensor
    suffix_mask: torch.Tensor
    rows: torch.Tensor  # (Q,) group of each question
    first: torch.Tensor  # (G,) first question of each group (its image and other per-row inputs feed the prefix)

    def full(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(input_ids, attention_mask) of the questions as [pads | prefix | pads | suffix] rows."""
        ids = torch.cat([self.prefix_ids[self.rows], self.suffix_ids], dim=1)
        return ids, torch.cat([self.prefix_mask[self.rows], self.suffix_mask], dim=1)


def split_prefixes(input_ids: torch.Tensor, attention_mask: torch.Tensor, groups: Sequence[int],
                   image_token: int | None, pad_token_id: int) -> PrefixSplit | None:
    """Split a padded batch by image group; None when reuse does not apply (no image token id known, a group whose
    shared prefix does not hold all image tokens, or nothing shared at all)."""
    if image_token is None or len(groups) != input_ids.shape[0] or not len(groups):
        return None
    real = [ids[m.bool()] for ids, m in zip(input_ids, attention_mask)]
    order = list(dict.fromkeys(groups))
    members = {g: [i for i, x in enumerate(groups) if x == g] for g in order}
    cut: dict[int, int] = {}
    for g, rows in members.items():
        ref = real[rows[0]]
        n = min(len(real[i]) for i in rows) - 1  # each question keeps at least one token of its own
        for i in rows[1:]:
            diff = (real[i][:n] != ref[:n]).nonzero()
            n = int(diff[0]) if len(diff) else n
        if n < 1 or any(bool((real[i][n:] == image_token).any()) for i in rows):
            return None
        cut[g] = n
    prefix_ids, prefix_mask = _left_pad([real[members[g][0]][:cut[g]] for g in order], pad_token_id)
    index = {g: k for k, g in enumerate(order)}
    suffix_ids, suffix_mask = _left_pad([real[i][cut[g]:] for i, g in enumerate(groups)], pad_token_id)
    device = input_ids.device
    return PrefixSplit(prefix_ids, prefix_mask, suffix_ids, suffix_mask,
                       rows=torch.tensor([index[g] for g in groups], dtype=torch.long, device=device),
                       first=torch.tensor([members[g][0] for g in order], dtype=torch.long, device=device))


def prefill(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, extra: dict):
    """Run prompts (with their images in `extra`) and return the filled DynamicCache."""

    kwargs = dict(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions(attention_mask),
                  use_cache=True, **extra)
    kwargs[cache_kwarg(model)] = DynamicCache(config=model.config)
    if "logits_to_keep" in _forward_params(model):
        kwargs["logits_to_keep"] = 1
    out = model(**kwargs)
    return out.cache if hasattr(out, "cache") else out.past_key_values


def per_row_inputs(batch: dict, n: int, skip: Sequence[str] = ("input_ids", "attention_mask")) -> dict:
    """The batch's other per-row tensors (pixel_values, image_sizes, ...)."""
    return {k: v for k, v in batch.items() if k not in skip and isinstance(v, torch.Tensor) and v.shape[:1] == (n,)}


@torch.no_grad()
def prefix_generate(model, batch: dict, groups: Sequence[int], pad_token_id: int, **generate_kwargs):
    """`model.generate` on a processor batch with the image prefixes run once per group; None when reuse does not
    apply (the caller runs the plain batch). Returns generate's output; its sequences hold the [pads | prefix |
    pads | suffix] prompt, so new tokens start at `result[1]` (the prompt width): (output, prompt width)."""
    split = split_prefixes(batch["input_ids"], batch["attention_mask"], groups, image_token_id(model), pad_token_id)
    if split is None:
        return None
    extra = {k: v[split.first] for k, v in per_row_inputs(batch, len(groups)).items()}
    cache = prefill(model, split.prefix_ids, split.prefix_mask, extra)
    cache.reorder_cache(split.rows)
    ids, mask = split.full()
    out = model.generate(input_ids=ids, attention_mask=mask, pad_token_id=pad_token_id,
                         **{cache_kwarg(model): cache}, **generate_kwargs)
    return out, ids.shape[1]


class PrefixFused(Fused):
    """The contrastive decoder's fused runner (clean rows [0, Q), noisy rows [Q, 2Q), one cache) with both views'
    image prefixes run once per group: 2G prefix rows, copied to 2Q question rows, then the suffixes."""

    def __init__(self, model, split: PrefixSplit):
        super().__init__(model)
        self.split = split

    def prefill(self, input_ids, attention_mask, pixels, noisy, extra):
        sp, s = self.split, self.s
        g = sp.prefix_ids.shape[0]
        two = {k: torch.cat([v[sp.first], v[sp.first]]) for k, v in extra.items()}
        two["pixel_values"] = torch.cat([pixels[sp.first], noisy[sp.first]])
        s.prefill(torch.cat([sp.prefix_ids, sp.prefix_ids]), torch.cat([sp.prefix_mask, sp.prefix_mask]), two)
        s.reorder(torch.cat([sp.rows, sp.rows + g]))
        suffix_mask = torch.cat([sp.suffix_mask, sp.suffix_mask])
        s.position_ids = positions(suffix_mask, start=s.position_ids[:, -1:] + 1)
        s.attention_mask = torch.cat([s.attention_mask, suffix_mask], dim=-1)
        return s._forward(torch.cat([sp.suffix_ids, sp.suffix_ids]), s.position_ids, {})


def prefix_runner(model, batch: dict, groups: Sequence[int], pad_token_id: int) -> PrefixFused | None:
    """A PrefixFused runner for a contrastive batch, or None when reuse does not apply or no image is shared."""
    if len(set(groups)) == len(groups):
        return None
    split = split_prefixes(batch["input_ids"], batch["attention_mask"], groups, image_token_id(model), pad_token_id)
    return None if split is None else PrefixFused(model, split)
