"""Batched text generation for evaluation and demos: one image + one question per prompt, left padding, greedy
by default; `decoding="contrastive"` routes to `seedvlm.decode` (clean/noisy contrast at every step)."""

from __future__ import annotations

from typing import Sequence

import torch
from PIL import Image

from seedvlm.models.processor import chat_prompt
from seedvlm.progress import progress as progress_reporter


def _device_of(model) -> torch.device:
    return next(model.parameters()).device


def encode_prompts(processor, images: Sequence[Image.Image], questions: Sequence[str], device=None) -> dict:
    """Tokenize a batch of (image, question) with the chat template, left-padded for generation."""
    tok = processor.tokenizer
    old_side = tok.padding_side
    tok.padding_side = "left"
    try:
        texts = [chat_prompt(processor, q) for q in questions]
        batch = processor(images=list(images), text=texts, padding=True, return_tensors="pt")
    finally:
        tok.padding_side = old_side
    if device is not None:
        batch = {k: v.to(device) for k, v in batch.items()}
    return dict(batch)


@torch.no_grad()
def generate_texts(model, processor, images: Sequence[Image.Image], prompts: Sequence[str], max_new_tokens: int = 64,
                   batch_size: int = 16, decoding: str = "greedy", progress: bool = True, desc: str = "generate",
                   **decode_kwargs) -> list[str]:
    """Answer each (image, prompt) pair; returns the decoded new text per pair, in order.

    decoding: "greedy" (HF generate, no sampling), "sample" (HF generate with do_sample), "beam" (num_beams),
    or "contrastive" (seedvlm.decode.contrastive_generate; decode_kwargs: beta, noise, alpha, plausibility, ...).
    """
    if len(images) != len(prompts):
        raise ValueError(f"{len(images)} images but {len(prompts)} prompts")
    device = _device_of(model)
    dtype = next(model.parameters()).dtype
    tok = processor.tokenizer
    out: list[str] = []
    bar = progress_reporter(len(prompts), desc, "q", enabled=progress)
    for start in range(0, len(prompts), batch_size):
        imgs = images[start:start + batch_size]
        qs = prompts[start:start + batch_size]
        batch = encode_prompts(processor, imgs, qs, device)
        batch["pixel_values"] = batch["pixel_values"].to(dtype)
        if decoding == "contrastive":
            from seedvlm.decode import contrastive_generate

            new_tokens = contrastive_generate(model, batch, max_new_tokens=max_new_tokens,
                                              eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                                              **decode_kwargs)
        else:
            gen_kwargs = dict(max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id,
                              eos_token_id=tok.eos_token_id)
            if decoding == "greedy":
                gen_kwargs.update(do_sample=False, num_beams=1)
            elif decoding == "sample":
                gen_kwargs.update(do_sample=True, top_p=decode_kwargs.get("top_p", 1.0),
                                  temperature=decode_kwargs.get("temperature", 1.0))
            elif decoding == "beam":
                gen_kwargs.update(do_sample=False, num_beams=decode_kwargs.get("num_beams", 3))
            else:
                raise ValueError(f"unknown decoding {decoding!r}; use greedy, sample, beam or contrastive")
            seqs = model.generate(**batch, **gen_kwargs)
            new_tokens = seqs[:, batch["input_ids"].shape[1]:]
        out.extend(t.strip() for t in tok.batch_decode(new_tokens, skip_special_tokens=True))
        bar.update(len(qs))
    bar.close()
    return out
