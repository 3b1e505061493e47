"""Loading any supported family's checkpoint folder offline through transformers' Auto classes
(AutoModelForImageTextToText + AutoProcessor, local files and safetensors only, no remote code), after the
registry has checked the folder."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from seedvlm.errors import SeedVLMError
from seedvlm.models.families.base import Family
from seedvlm.models.families.registry import detect_family, processor_classes
from seedvlm.models.loading import OFFLINE_WEIGHTS


def _quiet() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()


def load_family_processor(folder: str | os.PathLike, options: dict | None = None, family: Family | None = None):
    """The folder's processor, with the family's options (e.g. Qwen's min_pixels/max_pixels) applied."""
    from transformers import AutoProcessor

    from seedvlm.models.families.processors import assemble_images_only, has_torchvision, needs_video_processor

    family = family or detect_family(folder, options)
    options = family.check_options(options)
    found = [c for c in processor_classes(Path(folder)).values() if c in family.processor_classes]
    cls = found[0] if found else None
    _quiet()
    try:
        if cls and not has_torchvision() and needs_video_processor(cls):
            return assemble_images_only(cls, Path(folder), options)
        return AutoProcessor.from_pretrained(Path(folder), local_files_only=True, trust_remote_code=False,
                                             **options)
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise SeedVLMError(f"could not load a processor from {folder}: {str(e).splitlines()[0]}") from None


def load_family_model(folder: str | os.PathLike, device: str | torch.device = "cpu",
                      dtype: torch.dtype = torch.float32, family: Family | None = None,
                      attn_implementation: str | None = None):
    """The folder's model in eval mode; the family is detected (and the folder checked) before weights load.
    attn_implementation: "sdpa", "eager", "flash_attention_2" or None (transformers' default)."""
    from transformers import AutoModelForImageTextToText

    p = Path(folder)
    family = family or detect_family(p)
    if not any(p.glob("*.safetensors")):
        raise SeedVLMError(f"no *.safetensors weights in {p} (only safetensors are loaded, never pickles)")
    _quiet()
    try:
        extra = {"attn_implementation": attn_implementation} if attn_implementation else {}
        model = AutoModelForImageTextToText.from_pretrained(
            p, dtype=dtype, **OFFLINE_WEIGHTS, **extra)
    except (OSError, ValueError, RuntimeError) as e:
        raise SeedVLMError(f"could not load a {family.name} model from {p}: {str(e).splitlines()[0]}") from None
    return model.to(device).eval()


def load_family(folder: str | os.PathLike, options: dict | None = None, device: str | torch.device = "cpu",
                dtype: torch.dtype = torch.float32):
    """(family, model, processor) of a checkpoint folder."""
    family = detect_family(folder, options)
    processor = load_family_processor(folder, options, family)
    return family, load_family_model(folder, device, dtype, family), processor
