"""`seedvlm train` (SEED and SFT) on the non-LLaVA-1.5 families (Qwen2-VL/Qwen2.5-VL, LLaVA-NeXT, SmolVLM/Idefics3):
the model and processor through the family registry, the family's examples and collator (`data.family_data`), LoRA
on the language model's attention projections only, and a teacher whose clean and noisy views run as one 2B forward
(`models.families.pixels.two_view_batch`), the noise on the pixel inputs only, or a teacher cache (`seedvlm teach`).
The student takes the clean view's image features from the teacher's forward (`models.families.features`) when
`reuse_image_features` is on and nothing outside the language model trains; else it runs its own vision tower."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from transformers import set_seed

from seedvlm.data.family_data import FamilyCollator, load_family_train_data
from seedvlm.data.image_ids import image_identity
from seedvlm.errors import SeedVLMError
from seedvlm.io import write_json
from seedvlm.models.dtypes import resolve_dtype
from seedvlm.models.families.base import Family
from seedvlm.models.families.layers import layer_class_names
from seedvlm.models.fingerprint import base_fingerprint
from seedvlm.train.checkpoints import CONFIG_FILE, MANIFEST_FILE
from seedvlm.train import fsdp
from seedvlm.train.config import SeedConfig
from seedvlm.train.lora import apply_lora
from seedvlm.train.family_teacher import (FamilyTeacher, family_student_rows, family_teacher_logits, model_inputs,
                                          processor_ids)
from seedvlm.train.step import compile_layers, compile_options
from seedvlm.train.teacher import Teacher
from seedvlm.train.teacher_cache import open_cache
from seedvlm.train.trainer import SeedTrainer

__all__ = ["FamilySeedTrainer", "FamilyTeacher", "build_family_trainer", "check_family_options",
           "family_student_rows", "family_teacher_logits", "model_inputs", "processor_ids"]


class FamilySeedTrainer(SeedTrainer):
    """SeedTrainer with the family's teacher and the family's student inputs (`student_fn`)."""

    def __init__(self, *args, family: Family, processor, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.family, self.processor = family, processor
        self.student_fn = family_student_rows(family)
        if self.is_fsdp_enabled:
            fsdp.use_layer_units(self.accelerator.state.fsdp_plugin, layer_class_names(self.model, family))

    def _teacher(self, model) -> Teacher:
        if self.teacher_cache is not None:
            return self.teacher_cache
        return FamilyTeacher(self.teacher_model(model), self.cfg, self.family,
                             reuse_features=self.cfg.reuse_image_features and not self.is_fsdp_enabled,
                             **processor_ids(self.processor))


def check_family_options(cfg: SeedConfig, family: Family) -> None:
    """What these families cannot take, refused in one line before anything loads."""
    if cfg.method == "seed":
        family.check_perturbation(cfg.noise)
    if cfg.prompt_style != "hf":
        raise SeedVLMError(f"prompt_style {cfg.prompt_style!r} is for LLaVA-1.5 models; {family.name} models train "
                           f"with their own chat template (prompt_style hf)")


def build_family_trainer(cfg: SeedConfig, family: Family, callbacks: Sequence = ()) -> FamilySeedTrainer:
    """The rest of `run.build_trainer` for a non-LLaVA-1.5 folder, once its options are checked and the output
    folder prepared: data, model, LoRA -> a ready FamilySeedTrainer (also writes train_config.json and
    train_manifest.json)."""
    from seedvlm.models.families.loading import load_family_model

    processor, dataset, _ = load_family_train_data(cfg, family)
    set_seed(cfg.seed)
    model = load_family_model(cfg.model, device="cpu", dtype=resolve_dtype(cfg.dtype), family=family,
                              attn_implementation=cfg.attn_implementation)
    model.train()
    fp = base_fingerprint(model)
    cache = (open_cache(cfg.teacher_cache, cfg, fp, len(dataset), family=family.name, template=dataset.template)
             if cfg.teacher_cache else None)
    model.config.use_cache = False
    model.config.text_config.use_cache = False
    model = apply_lora(model, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_target_modules,
                       language_model=family.language_model)
    if cfg.activation_checkpointing:
        model.enable_input_require_grads()
    if cfg.compile_layers:
        compile_layers(model, family=family, **compile_options(cfg))
    if cfg.should_save:
        write_json(Path(cfg.output_dir) / CONFIG_FILE, {**cfg.to_dict(), "family": family.name})
        write_json(Path(cfg.output_dir) / MANIFEST_FILE, {
            "images": dataset.image_names, "data": str(cfg.data), "images_dir": str(cfg.images),
            "n_records": len(dataset), **image_identity(dataset.image_names, cfg.images)})
    trainer = FamilySeedTrainer(model=model, args=cfg, train_dataset=dataset,
                                data_collator=FamilyCollator(family, processor.tokenizer.pad_token_id),
                                base_fingerprint=fp, lengths=dataset.lengths, callbacks=list(callbacks),
                                family=family, processor=processor, teacher_cache=cache)
    return trainer
