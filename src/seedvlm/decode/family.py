"""Contrastive decoding for the non-LLaVA-1.5 families (Qwen2-VL/Qwen2.5-VL, LLaVA-NeXT, SmolVLM/Idefics3):
`seedvlm.decode.contrastive_generate` with the family's noisy view and positions. The noise acts on the pixel
inputs only (`models.families.pixels.perturb_pixel_inputs`, the kinds the family takes), image by image keyed by a
hash of its pixels; metadata (image_grid_thw, image_sizes, pixel_attention_mask, mm_token_type_ids) is stacked
twice with the rows, so the clean and noisy views run as one 2B forward with one cache. Qwen's M-RoPE positions
come from the model's own `get_rope_index` at prefill; other families use 1-D positions."""

from __future__ import annotations

from typing import Callable

import torch

from seedvlm.decode.contrastive import DEFAULT_DDPM_STEP, contrastive_generate, noisy_pixel_values
from seedvlm.errors import SeedVLMError
from seedvlm.models.families.base import Family
from seedvlm.models.families.pixels import perturb_pixel_inputs
from seedvlm.models.llava import image_token_id, llava_of

__all__ = ["family_contrastive_generate", "family_noisy_pixels", "mrope_positions"]


def family_noisy_pixels(model, family: Family, batch: dict, noise: str = "gaussian", alpha: float | None = None,
                        noise_step: int = DEFAULT_DDPM_STEP, seed: int = 0) -> torch.Tensor:
    """The noisy copy of the batch's pixel_values, sample by sample (`perturb_pixel_inputs`): flattened patch rows
    (Qwen) as one image, tiles (LLaVA-NeXT, SmolVLM) tile by tile, each keyed by a hash of its own pixels
    (`noisy_pixel_values`), so an image gets the same noise in any batch. A kind the family cannot take is one line."""
    config = llava_of(model).config
    vision = config.vision_config
    flat = family.flattened_patches

    def sample_noise(x: torch.Tensor, i: int) -> torch.Tensor:
        images = x[None] if flat else x
        y = noisy_pixel_values(images, noise=noise, alpha=alpha, noise_step=noise_step, seed=seed,
                               patch_size=int(getattr(vision, "patch_size", 14)))
        return y.reshape(x.shape).to(x.dtype)

    merge = getattr(vision, "spatial_merge_size", None) if flat else None
    token = image_token_id(config) if flat else None
    return perturb_pixel_inputs(family, batch, noise, sample_noise, image_token_id=token,
                                merge_size=merge)["pixel_values"]


def mrope_positions(model) -> Callable | None:
    """For models with M-RoPE (Qwen2-VL, Qwen2.5-VL): (input_ids, attention_mask, extra) -> (3, R, L) prefill
    positions from the model's own `get_rope_index` (the image's grid positions, text after it one by one, 0 on
    left pads); None for 1-D positions."""
    inner = getattr(llava_of(model), "model", None)
    rope_index = getattr(inner, "get_rope_index", None)
    if rope_index is None:
        return None

    def positions(input_ids: torch.Tensor, attention_mask: torch.Tensor, extra: dict) -> torch.Tensor:
        if "mm_token_type_ids" not in extra:
            raise SeedVLMError("M-RoPE positions need the processor's mm_token_type_ids in the batch")
        pos, _ = rope_index(input_ids, mm_token_type_ids=extra["mm_token_type_ids"],
                            image_grid_thw=extra.get("image_grid_thw"), attention_mask=attention_mask)
        return pos
    return positions


@torch.no_grad()
def family_contrastive_generate(model, family: Family, batch: dict, max_new_tokens: int, eos_token_id,
                                pad_token_id: int, noise: str = "gaussian", alpha: float | None = None,
                                noise_step: int = DEFAULT_DDPM_STEP, seed: int = 0, **kwargs) -> torch.LongTensor:
    """`contrastive_generate` (same options: beta, plausibility, strategy, num_beams, temperature, top_k, top_p,
    length_penalty, min_new_tokens, fused, first_scores_) on a family's processor batch, one image per row,
    left-padded, pixel inputs in the model's dtype; (B, T_new) new tokens, pad_token_id after a row's stop token.
    The static cache and image-prefix reuse are LLaVA-1.5 only."""
    if tuple(family.pixel_keys) != ("pixel_values",):
        raise SeedVLMError(f"{family.name} models: contrastive decoding needs the pixels in pixel_values")
    for key in ("static_cache_", "prefix_groups_"):
        if kwargs.get(key):
            raise SeedVLMError(f"{family.name} models: {key.rstrip('_')} is not available with contrastive decoding")
    noisy = kwargs.pop("noisy_pixel_values_", None)
    if noisy is None:
        family.check_perturbation(noise)
        noisy = family_noisy_pixels(model, family, batch, noise, alpha, noise_step, seed)
    return contrastive_generate(model, batch, max_new_tokens=max_new_tokens, eos_token_id=eos_token_id,
                                pad_token_id=pad_token_id, noise=noise, alpha=alpha, noise_step=noise_step,
                                seed=seed, noisy_pixel_values_=noisy, positions_=mrope_positions(model), **kwargs)
