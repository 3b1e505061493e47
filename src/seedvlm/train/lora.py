"""LoRA on the language model's attention projections only, and merging an adapter into its base.

peft's plain `target_modules=["q_proj", ...]` would also wrap CLIP's q/k/v projections (docs/design.md section 9);
the target here is a regex anchored on `language_model`, and everything else (vision tower, projector, embeddings,
lm_head) is frozen.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from peft import LoraConfig, get_peft_model

from seedvlm.errors import SeedVLMError
from seedvlm.io import read_json
from seedvlm.models import attach_adapter, load_model, load_processor, save_model
from seedvlm.models.dtypes import TORCH_DTYPES
from seedvlm.models.families.base import lm_attention_regex
from seedvlm.models.families.registry import model_family
from seedvlm.models.llava import llava_of


def target_regex(targets: Sequence[str], language_model: str = "language_model") -> str:
    """peft full-match regex for `targets` inside the language model (the module called `language_model`), e.g.
    `.*\\blanguage_model\\..*\\.(q_proj|k_proj|v_proj|o_proj)`."""
    return lm_attention_regex(language_model, targets)


def lora_config(r: int = 64, alpha: int = 128, dropout: float = 0.05,
                targets: Sequence[str] = ("q_proj", "k_proj", "v_proj", "o_proj"),
                language_model: str = "language_model"):
    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout,
                      target_modules=target_regex(targets, language_model),
                      bias="none", task_type="CAUSAL_LM")


def lora_module_names(model) -> list[str]:
    """Names of the modules that carry LoRA weights."""
    return [n for n, m in model.named_modules() if hasattr(m, "lora_A") and len(getattr(m, "lora_A"))]


def apply_lora(model, r: int = 64, alpha: int = 128, dropout: float = 0.05,
               targets: Sequence[str] = ("q_proj", "k_proj", "v_proj", "o_proj"),
               language_model: str = "language_model"):
    """Wrap `model` (in place, as peft does) with a trainable LoRA on the LM's projections; freeze the rest.

    `language_model`: the language model's module name (a family's `language_model`, e.g. SmolVLM's `text_model`).
    Checks: at least one module wrapped, every wrapped module inside the language model, and no trainable
    parameter outside the LoRA weights (so the vision tower and the projector cannot move).
    """
    for p in model.parameters():
        p.requires_grad_(False)
    peft_model = get_peft_model(model, lora_config(r, alpha, dropout, targets, language_model))
    wrapped = lora_module_names(peft_model)
    if not wrapped:
        raise SeedVLMError(f"LoRA matched no module for targets {list(targets)} inside the language model")
    outside = [n for n in wrapped if language_model not in n]
    if outside:
        raise SeedVLMError(f"LoRA wrapped modules outside the language model: {outside[:3]}")
    bad = [n for n, p in peft_model.named_parameters() if p.requires_grad and "lora_" not in n]
    if bad:
        raise SeedVLMError(f"parameters outside LoRA are trainable: {bad[:3]}")
    return peft_model


def frozen_state(model) -> dict:
    """Copies of the vision tower's and the projector's weights (to prove they did not move)."""
    base = llava_of(model)
    inner = base.model
    return {f"{part}.{n}": p.detach().clone() for part in ("vision_tower", "multi_modal_projector")
            for n, p in getattr(inner, part).named_parameters()}


def merge(model_path: str | Path, adapter: str | Path, out: str | Path, dtype: str = "auto",
          allow_unverified: bool = False) -> Path:
    """Base + adapter -> merged folder (weights + processor), written atomically: a llava-hf folder, or for the
    other families the family's own layout with the base folder's processor, tokenizer and chat template.

    Merged in float32 on the CPU, then cast to `dtype` ("auto" = the base checkpoint's own dtype).
    The adapter must have been trained on this base (its seedvlm_base.json fingerprint is checked).
    """
    if dtype == "auto":
        cfg = read_json(Path(model_path) / "config.json", "model config")
        saved = cfg.get("dtype") or cfg.get("torch_dtype") or "float32"
        target = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}.get(saved,
                                                                                                     torch.float32)
    elif dtype in TORCH_DTYPES:
        target = TORCH_DTYPES[dtype]
    else:
        raise SeedVLMError(f"dtype must be auto, fp32, bf16 or fp16, got {dtype!r}")
    family = model_family(model_path)
    if family is None:
        model, processor = load_model(model_path, device="cpu", dtype=torch.float32), load_processor(model_path)
    else:
        from seedvlm.models.families.loading import load_family_model

        model = load_family_model(model_path, device="cpu", dtype=torch.float32, family=family)
    model = attach_adapter(model, adapter, allow_unverified=allow_unverified, model_dir=model_path)
    merged = model.merge_and_unload().to(target)
    merged.eval()
    record = {"seedvlm_merge.json": {"base": str(Path(model_path).resolve()), "adapter": str(Path(adapter).resolve()),
                                     "dtype": str(target)}}
    if family is None:
        return save_model(merged, processor, out, extra_files=record)
    from seedvlm.models.families.loading import save_family_model

    return save_family_model(merged, model_path, out, family, extra_files=record)
