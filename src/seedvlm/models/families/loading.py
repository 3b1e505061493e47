"""Loading any supported family's checkpoint folder offline through transformers' Auto classes
(AutoModelForImageTextToText + AutoProcessor, local files and safetensors only, no remote code), after the
registry has checked the folder; and saving a model (e.g. merged with an adapter) beside its base's processor."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from seedvlm.errors import SeedVLMError
from seedvlm.io import atomic_path
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


# the files of a checkpoint folder that are the model's own (weights, their index, the configs save_pretrained
# writes) or seedvlm's records about it; every other top-level file belongs to the processor / tokenizer / template
_MODEL_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".msgpack", ".h5", ".gguf", ".onnx", ".index.json")
_MODEL_FILES = ("config.json", "generation_config.json")


def processor_files(folder: str | os.PathLike) -> list[Path]:
    """The top-level files of a checkpoint folder that are not the model's (processor and tokenizer configs,
    tokenizer.model/json, vocab/merges, chat template), plus an `additional_chat_templates` folder."""
    p = Path(folder)
    out = [f for f in sorted(p.iterdir()) if f.is_file() and not f.name.endswith(_MODEL_SUFFIXES)
           and f.name not in _MODEL_FILES and not f.name.startswith("seedvlm_")]
    extra = p / "additional_chat_templates"
    return out + ([extra] if extra.is_dir() else [])


def save_family_model(model, source: str | os.PathLike, out: str | os.PathLike, family: Family,
                      extra_files: dict[str, dict] | None = None) -> Path:
    """Write `model` (save_pretrained) with the processor, tokenizer and chat template of the folder `source`
    copied as they are (so the new folder renders, tokenizes and expands images exactly as `source` does),
    atomically; the folder is checked to load as a `family` folder before it takes the place of `out`."""
    import json
    import shutil

    out = Path(out)
    with atomic_path(out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        for f in processor_files(source):
            (shutil.copytree if f.is_dir() else shutil.copyfile)(f, tmp / f.name)
        for name, obj in (extra_files or {}).items():
            (tmp / name).write_text(json.dumps(obj, indent=2) + "\n")
        found = detect_family(tmp)
        if found.name != family.name:
            raise SeedVLMError(f"{out}: the saved folder reads as a {found.name} model, not {family.name}")
        load_family_processor(tmp, family=family)
    return out
