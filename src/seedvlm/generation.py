"""Batched text generation for evaluation and demos: one image + one question per prompt, left padding, greedy
by default; `decoding="contrastive"` routes to `seedvlm.decode` (clean/noisy contrast at every step)."""

from __future__ import annotations

from typing import Sequence

import torch
from PIL import Image

from seedvlm.decode import contrastive_generate
from seedvlm.decode.plain import decoding_options, generate_new_tokens
from seedvlm.decode.prefix import image_groups
from seedvlm.decode.static import length_order, restore_order
from seedvlm.eval.yes_prob import scored_answers
from seedvlm.models.processor import chat_prompt
from seedvlm.models.prompting import prepare_image
from seedvlm.progress import progress as progress_reporter


def _device_of(model) -> torch.device:
    return next(model.parameters()).device


def encode_prompts(processor, images: Sequence[Image.Image], questions: Sequence[str], device=None,
                   prompt_style: str | None = None) -> dict:
    """Tokenize a batch of (image, question) in a prompt style (`seedvlm.models.prompting`: its template, and its
    image preparation), left-padded for generation."""
    tok = processor.tokenizer
    old_side = tok.padding_side
    tok.padding_side = "left"
    try:
        texts = [chat_prompt(processor, q, prompt_style) for q in questions]
        images = [prepare_image(processor, prompt_style, im) for im in images]
        batch = processor(images=images, text=texts, padding=True, return_tensors="pt")
    finally:
        tok.padding_side = old_side
    if device is not None:
        batch = {k: v.to(device) for k, v in batch.items()}
    return dict(batch)


@torch.no_grad()
def generate_texts(model, processor, images: Sequence[Image.Image], prompts: Sequence[str], max_new_tokens: int = 64,
                   batch_size: int = 16, decoding: str = "greedy", progress: bool = True, desc: str = "generate",
                   prompt_style: str | None = None, prefix_reuse: bool = False, yes_prob: bool = False,
                   static_cache: bool = False, compile: bool | None = None, **decode_kwargs) -> list[str]:
    """Answer each (image, prompt) pair; returns the decoded new text per pair, in order.

    decoding: "greedy" (HF generate, no sampling), "sample" (HF generate with do_sample), "beam" (num_beams),
    or "contrastive" (seedvlm.decode.contrastive_generate; decode_kwargs: beta, noise, alpha, plausibility, ...).
    prompt_style: "hf" (default) or "llava-1.5" (`seedvlm.models.prompting`).
    prefix_reuse: questions about the same image share one prefill of the image prefix (greedy and contrastive;
    seedvlm.decode.prefix). yes_prob: answers carry P(yes) of their first token (seedvlm.eval.yes_prob.ScoredAnswer).
    static_cache: decode with a static KV cache, prompts grouped by length, compiled unless `compile`
    is False (seedvlm.decode.static); greedy, sample, beam, and contrastive greedy/sample.
    """
    if len(images) != len(prompts):
        raise ValueError(f"{len(images)} images but {len(prompts)} prompts")
    device = _device_of(model)
    dtype = next(model.parameters()).dtype
    tok = processor.tokenizer
    out: list[str] = []
    order = _length_order(processor, prompts) if static_cache else None
    if order is not None:
        images, prompts = [images[i] for i in order], [prompts[i] for i in order]
    bar = progress_reporter(len(prompts), desc, "q", enabled=progress)
    for start in range(0, len(prompts), batch_size):
        imgs = images[start:start + batch_size]
        qs = prompts[start:start + batch_size]
        batch = encode_prompts(processor, imgs, qs, device, prompt_style=prompt_style)
        batch["pixel_values"] = batch["pixel_values"].to(dtype)
        groups = image_groups(imgs) if prefix_reuse else None
        first: list | None = [] if yes_prob else None
        if decoding == "contrastive":
            new_tokens = contrastive_generate(model, batch, max_new_tokens=max_new_tokens,
                                              eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                                              prefix_groups_=groups, first_scores_=first,
                                              static_cache_=static_cache, compile_=compile, **decode_kwargs)
        else:
            gen_kwargs = dict(max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id,
                              eos_token_id=tok.eos_token_id, **decoding_options(decoding, decode_kwargs))
            new_tokens, logits = generate_new_tokens(model, batch, gen_kwargs, groups, static_cache, compile, yes_prob)
            first = None if logits is None else [logits]
        texts = [t.strip() for t in tok.batch_decode(new_tokens, skip_special_tokens=True)]
        out.extend(scored_answers(texts, first[0], tok) if first else texts)
        bar.update(len(qs))
    bar.close()
    return out if order is None else restore_order(out, order)


def _length_order(processor, prompts: Sequence[str]) -> list[int]:
    """Prompt indices grouped by tokenized length (the static cache's batches then pad little)."""
    lengths = [len(ids) for ids in processor.tokenizer([chat_prompt(processor, q) for q in prompts])["input_ids"]]
    return length_order(lengths)
