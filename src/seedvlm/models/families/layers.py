"""The repeated blocks of a family model: the language model's decoder layers and the vision encoder's layers
(Qwen: `visual.blocks`; LLaVA-NeXT: the CLIP tower's `encoder.layers`; SmolVLM/Idefics3: the SigLIP-style
`vision_model.encoder.layers`), for regional compilation and as FSDP units."""

from __future__ import annotations

import torch

from seedvlm.models.families.base import Family


def inner_model(model):
    """The `*Model` inside a (peft-wrapped) `*ForConditionalGeneration`: vision part(s) + language model."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.model


def decoder_layers(model, family: Family) -> list[torch.nn.Module]:
    """The language model's decoder layers."""
    return list(getattr(inner_model(model), family.language_model).layers)


def vision_layers(model, family: Family) -> list[torch.nn.Module]:
    """The vision encoder's layers: the longest `layers`/`blocks` list outside the language model."""
    stacks = [m for name, child in inner_model(model).named_children() if name != family.language_model
              for n, m in child.named_modules()
              if isinstance(m, torch.nn.ModuleList) and n.rsplit(".", 1)[-1] in ("layers", "blocks")]
    return list(max(stacks, key=len)) if stacks else []


def layer_class_names(model, family: Family) -> list[str]:
    """Class names of the decoder and vision layers (the FSDP units), decoder first."""
    names: list[str] = []
    for layer in decoder_layers(model, family)[:1] + vision_layers(model, family)[:1]:
        if type(layer).__name__ not in names:
            names.append(type(layer).__name__)
    return names
