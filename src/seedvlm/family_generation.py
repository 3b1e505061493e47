"""Generation for evaluation on the non-LLaVA-1.5 families (Qwen2-VL/Qwen2.5-VL, LLaVA-NeXT, SmolVLM/Idefics3): a
folder (and adapter) loaded through the family registry, each (image, question) rendered through the family's chat
template with its generation prompt, left-padded, and decoded (greedy, sample, beam or contrastive) until the
family's end-of-turn token."""

from __future__ import annotations

import os
from typing import Sequence

import torch
from PIL import Image

from seedvlm.decode.family import family_contrastive_generate
from seedvlm.decode.plain import decoding_options, generate_new_tokens
from seedvlm.errors import SeedVLMError
from seedvlm.eval.yes_prob import scored_answers
from seedvlm.models.families.base import Family
from seedvlm.models.families.registry import family_for_config
from seedvlm.models.families.tokens import render, training_template
from seedvlm.progress import progress as progress_reporter


def load_family_for_inference(model_path: str | os.PathLike, family: Family, adapter: str | os.PathLike | None = None,
                              device: str | torch.device | None = None, dtype: torch.dtype | None = None,
                              allow_unverified_adapter: bool = False, options: dict | None = None):
    """(model, processor) of a family folder, in eval mode, with the adapter attached (and verified) if given and
    the family's processor `options` (e.g. min/max pixels) applied."""
    from seedvlm.models.families.loading import load_family_model, load_family_processor
    from seedvlm.models.loading import attach_adapter, default_dtype, resolve_device

    dev = resolve_device(device)
    processor = load_family_processor(model_path, options, family=family)
    model = load_family_model(model_path, dev, dtype or default_dtype(dev), family)
    if adapter:
        model = attach_adapter(model, adapter, allow_unverified=allow_unverified_adapter, model_dir=model_path)
    model.eval()
    return model, processor


def model_family_of(model) -> Family | None:
    """The family of a loaded model other than LLaVA-1.5 (from its config), else None."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if not isinstance(model_type, str) or model_type == "llava":
        return None
    return family_for_config(config.to_dict())


def family_prompts(family: Family, processor, config: dict, questions: Sequence[str]) -> list[str]:
    """Each question after one image, as the user turn, rendered with the family's generation prompt."""
    template = training_template(family, processor, config)
    return [render(processor, [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": q}]}],
                   template, add_generation_prompt=True) for q in questions]


@torch.no_grad()
def generate_family_texts(model, processor, family: Family, images: Sequence[Image.Image], prompts: Sequence[str],
                          max_new_tokens: int = 64, batch_size: int = 16, decoding: str = "greedy",
                          progress: bool = True, desc: str = "generate", prompt_style: str | None = None,
                          prefix_reuse: bool = False, yes_prob: bool = False, static_cache: bool = False,
                          **decode_kwargs) -> list[str]:
    """`generation.generate_texts` for a family model, stopping at the family's stop tokens (the end-of-turn token
    first): greedy, sample and beam through HF `generate` with LLaVA-1.5's options, contrastive through
    `seedvlm.decode.family.family_contrastive_generate` (same options; the noise kinds the family takes).
    prefix_reuse is an exact speed option and is not applied here; static_cache and prompt styles other than the
    model's own chat template are refused in one line."""
    if static_cache or prompt_style not in (None, "hf"):
        raise SeedVLMError(f"{family.name} models decode with the model's own chat template (prompt style hf) and "
                           f"without the static cache")
    if len(images) != len(prompts):
        raise ValueError(f"{len(images)} images but {len(prompts)} prompts")
    contrastive = decoding == "contrastive"
    if contrastive:
        family.check_perturbation(decode_kwargs.get("noise", "gaussian"))
        hf_options = {}
    else:
        hf_options = decoding_options(decoding, decode_kwargs)
    param = next(model.parameters())
    tok = processor.tokenizer
    stop = family.stop_token_ids(processor)
    texts_in = family_prompts(family, processor, model.config.to_dict(), prompts)
    out: list[str] = []
    bar = progress_reporter(len(prompts), desc, "q", enabled=progress)
    for start in range(0, len(prompts), batch_size):
        imgs = [[im] for im in images[start:start + batch_size]]
        old_side, tok.padding_side = tok.padding_side, "left"
        try:
            batch = dict(processor(text=texts_in[start:start + batch_size], images=imgs, padding=True,
                                   return_tensors="pt"))
        finally:
            tok.padding_side = old_side
        batch = {k: v.to(param.device) for k, v in batch.items()}
        for k in family.pixel_keys:
            batch[k] = batch[k].to(param.dtype)
        if contrastive:
            first: list | None = [] if yes_prob else None
            new_tokens = family_contrastive_generate(model, family, batch, max_new_tokens=max_new_tokens,
                                                     eos_token_id=stop, pad_token_id=tok.pad_token_id,
                                                     first_scores_=first, **decode_kwargs)
            logits = first[0] if first else None
        else:
            gen_kwargs = dict(max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id, eos_token_id=stop,
                              **hf_options)
            new_tokens, logits = generate_new_tokens(model, batch, gen_kwargs, first_logits=yes_prob)
        texts = [t.strip() for t in tok.batch_decode(new_tokens, skip_special_tokens=True)]
        out.extend(scored_answers(texts, logits, tok) if logits is not None else texts)
        bar.update(len(imgs))
    bar.close()
    return out
