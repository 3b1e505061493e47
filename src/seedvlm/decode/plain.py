"""One batch through HF `generate` with the fast-evaluation options: image-prefix reuse (greedy; questions of one
image share its prefilled KV cache), the static (compiled) cache, and the first new token's logits for P(yes)."""

from __future__ import annotations

from typing import Sequence

import torch

from seedvlm.decode.prefix import prefix_generate
from seedvlm.decode.static import static_generate_kwargs


def generate_new_tokens(model, batch: dict, gen_kwargs: dict, groups: Sequence[int] | None = None,
                        static: bool = False, compile: bool | None = None, first_logits: bool = False
                        ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(new tokens (B, T), first-token logits (B, V) or None) for a left-padded processor batch.

    groups: image group per row (seedvlm.decode.prefix.image_groups) to reuse image prefixes; used for greedy
    decoding (num_beams 1, no sampling) when the batch shares something, else the plain batch runs. static: decode
    with a StaticCache (seedvlm.decode.static), compiled unless `compile` is False; not combined with
    prefix reuse. first_logits: also return the raw logits of the first new token.
    """

    kwargs = dict(gen_kwargs)
    if first_logits:
        kwargs.update(output_logits=True, return_dict_in_generate=True)
    greedy = not kwargs.get("do_sample") and kwargs.get("num_beams", 1) == 1
    result = None
    if groups is not None and greedy and len(set(groups)) < len(groups):
        pad = kwargs.pop("pad_token_id")
        result = prefix_generate(model, batch, groups, pad, **kwargs)
        kwargs["pad_token_id"] = pad
    if result is None:
        if static:
            kwargs.update(static_generate_kwargs(model, batch["input_ids"].shape[1], kwargs["max_new_tokens"],
                                                 compile))
        result = model.generate(**batch, **kwargs), batch["input_ids"].shape[1]
    out, width = result
    sequences = out.sequences if first_logits else out
    logits = out.logits[0].float() if first_logits and kwargs.get("num_beams", 1) == 1 else None
    return sequences[:, width:], logits


def decoding_options(decoding: str, options: dict) -> dict:
    """HF `generate` keywords for a decoding: greedy (no sampling, one beam), sample (do_sample with top_p and
    temperature from `options`) or beam (num_beams [3])."""
    if decoding == "greedy":
        return dict(do_sample=False, num_beams=1)
    if decoding == "sample":
        return dict(do_sample=True, top_p=options.get("top_p", 1.0), temperature=options.get("temperature", 1.0))
    if decoding == "beam":
        return dict(do_sample=False, num_beams=options.get("num_beams", 3))
    raise ValueError(f"unknown decoding {decoding!r}; use greedy, sample, beam or contrastive")
