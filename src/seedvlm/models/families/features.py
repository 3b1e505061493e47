"""The student's image features from the teacher's forward, for every family: LoRA changes the language model only,
so the vision tower's output for the clean view is the same for teacher and student. transformers returns a
forward's image features (`image_outputs.pooler_output`, one entry per image or, for SmolVLM/Idefics3, per batch
row, in batch order) and takes them back as `mm_encoder_outputs={"image": ...}` in place of the pixels; the rest of
the inputs stay (Qwen's `image_grid_thw` and `mm_token_type_ids` still give the M-RoPE positions)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch

from seedvlm.models.families.base import Family
from seedvlm.models.families.layers import inner_model


@dataclass(frozen=True)
class ImageFeatures:
    """Precomputed image features as the models read them (`.pooler_output`). A plain object, not a mapping or
    a tuple, so that DDP's input scattering passes it through as it is."""

    pooler_output: tuple[torch.Tensor, ...]

    def to_tuple(self) -> tuple:
        """What a model output's `to_tuple` asks of its `image_outputs`."""
        return (self.pooler_output,)


def clean_image_features(outputs) -> ImageFeatures | None:
    """The clean half of a [clean; noisy] forward's image features, detached (None when the output carries none).
    Both views have the same images, so the clean view's entries are the first half."""
    image = getattr(outputs, "image_outputs", None)
    feats = getattr(image, "pooler_output", None)
    if feats is None or isinstance(feats, torch.Tensor) or len(feats) % 2:
        return None
    return ImageFeatures(tuple(f.detach() for f in feats[:len(feats) // 2]))


def with_image_features(family: Family, inputs: Mapping[str, torch.Tensor], features: ImageFeatures) -> dict:
    """The model's keyword inputs with `features` in place of the pixel inputs (metadata kept)."""
    out = {k: v for k, v in inputs.items() if k not in family.pixel_keys}
    out["mm_encoder_outputs"] = {"image": features}
    return out


def reuse_blocker(model, family: Family) -> str | None:
    """Why the student cannot take the teacher's clean image features (None = it can): a part outside the language
    model (vision tower, projector/merger/connector, LLaVA-NeXT's image newline) has a parameter that requires
    grad, or dropout that would be active in the student's train-mode forward."""
    inner = inner_model(model)
    if any(p.requires_grad for p in inner.parameters(recurse=False)):
        return "a parameter outside the language model is trainable"
    vision = getattr(inner.config, "vision_config", None)
    if (getattr(vision, "attention_dropout", 0.0) or 0.0) > 0:
        return "the vision tower has attention dropout"
    for name, module in inner.named_children():
        if name == family.language_model:
            continue
        if any(p.requires_grad for p in module.parameters()):
            return f"the {name} has trainable parameters"
        if any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in module.modules()):
            return f"the {name} has dropout"
    return None
