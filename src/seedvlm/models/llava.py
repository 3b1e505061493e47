"""The parts of a (peft-wrapped) LLaVA that training and decoding reach into: the bare model, its image tokens,
image features and embeddings, and its layer stacks."""

from __future__ import annotations

from typing import Sequence

import torch

from seedvlm.errors import SeedVLMError


def llava_of(model):
    """The LlavaForConditionalGeneration inside a peft model (or `model` itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def image_token_id(config) -> int:
    """The image placeholder id (`image_token_id` in transformers 5, `image_token_index` before)."""
    tid = getattr(config, "image_token_id", None)
    return int(config.image_token_index if tid is None else tid)


def image_features(model, pixel_values: torch.Tensor) -> list[torch.Tensor]:
    """The projected image features the language model gets at the image tokens, one (tokens, hidden) tensor per
    image: the bare LLaVA's own `get_image_features` with the config's `vision_feature_layer` and
    `vision_feature_select_strategy` (what LlavaModel.forward computes from `pixel_values`). Gradients follow torch's
    grad mode (the caller wraps it in no_grad)."""
    llava = llava_of(model)
    cfg = llava.config
    out = llava.get_image_features(pixel_values=pixel_values, vision_feature_layer=cfg.vision_feature_layer,
                                   vision_feature_select_strategy=cfg.vision_feature_select_strategy)
    feats = getattr(out, "pooler_output", out)  # transformers 5: a ModelOutput; 4.x: the features themselves
    return list(feats)  # a (n, tokens, hidden) tensor or a list/tuple per image -> one tensor per image


def embed_images(model, input_ids: torch.Tensor, features: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """`inputs_embeds` (B, L, hidden) as LlavaModel.forward builds them: the input embeddings of `input_ids`
    (through the embedding module, so hooks such as `enable_input_require_grads`' run), the image-token positions
    filled in order with `features` (one (tokens, hidden) tensor per image, or their concatenation) by
    masked_scatter."""
    llava = llava_of(model)
    embeds = llava.get_input_embeddings()(input_ids)
    feats = features if isinstance(features, torch.Tensor) else torch.cat(list(features))
    feats = feats.to(embeds.device, embeds.dtype)
    slots = (input_ids == image_token_id(llava.config)).unsqueeze(-1).expand_as(embeds)
    n_slots = int(slots.sum())
    if n_slots != feats.numel():
        raise SeedVLMError(f"image features do not match the image tokens: {n_slots // embeds.shape[-1]} image "
                           f"tokens, {feats.numel() // max(embeds.shape[-1], 1)} feature rows")
    return embeds.masked_scatter(slots, feats)


def reuse_blocker(model) -> str | None:
    """Why the student cannot take the teacher's clean image features (None = it can): the vision tower or the
    projector has a parameter that requires grad, or active dropout (the student's forward runs in train mode, the
    teacher's in eval mode)."""
    inner = llava_of(model).model
    for part in ("vision_tower", "multi_modal_projector"):
        module = getattr(inner, part)
        if any(p.requires_grad for p in module.parameters()):
            return f"the {part} has trainable parameters"
        drop = getattr(getattr(module, "config", None), "attention_dropout", 0.0) or 0.0
        if drop > 0 or any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in module.modules()):
            return f"the {part} has dropout"
    return None


def decoder_layers(model) -> list[torch.nn.Module]:
    """The language model's decoder layers of a (peft-wrapped) LLaVA."""
    return list(llava_of(model).model.language_model.layers)


def vision_layers(model) -> list[torch.nn.Module]:
    """The vision tower's encoder layers (CLIPEncoderLayer) of a (peft-wrapped) LLaVA."""
    tower = llava_of(model).model.vision_tower
    tower = getattr(tower, "vision_model", tower)  # transformers < 5 nest the encoder in CLIPVisionModel.vision_model
    return list(tower.encoder.layers)
