"""`seedvlm train` (SEED and SFT) on the non-LLaVA-1.5 families (Qwen2-VL/Qwen2.5-VL, LLaVA-NeXT): the model and
processor through the family registry, the family's examples and collator (`data.family_data`), LoRA on the
language model's attention projections only, and a teacher whose clean and noisy views run as one 2B forward
(`models.families.pixels.two_view_batch`), the noise on the pixel inputs only. The student always runs its own
vision tower (no image-feature reuse for these families)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from transformers import set_seed

from seedvlm import seed as S
from seedvlm.data.family_data import TOKEN_KEYS, FamilyCollator, load_family_train_data
from seedvlm.data.image_ids import image_identity
from seedvlm.errors import SeedVLMError
from seedvlm.io import write_json
from seedvlm.models.dtypes import compute_dtype, resolve_dtype
from seedvlm.models.families.base import Family
from seedvlm.models.families.pixels import perturb_pixel_inputs, two_view_batch
from seedvlm.models.fingerprint import base_fingerprint
from seedvlm.train.checkpoints import CONFIG_FILE, MANIFEST_FILE
from seedvlm.train.config import SeedConfig
from seedvlm.train.lora import apply_lora
from seedvlm.train.teacher import TeacherRows
from seedvlm.train.trainer import SeedTrainer


def model_inputs(family: Family, batch: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The model's keyword inputs from a collated batch: ids, attention mask, per-token inputs, the pixel inputs
    in the model's dtype and the metadata (grids, image sizes) as they are."""
    out = {k: batch[k] for k in ("input_ids", "attention_mask", *TOKEN_KEYS, *family.metadata_keys) if k in batch}
    out.update({k: batch[k].to(dtype) for k in family.pixel_keys})
    return out


def family_student_rows(family: Family):
    """`step.student_rows` for a family: the student's logits at the answer rows (N, V) from its own pixels."""
    def rows(model, batch, mask, features=None, base=None) -> torch.Tensor:
        dtype = compute_dtype(model if base is None else base)
        return model(**model_inputs(family, batch, dtype), logits_to_keep=mask, use_cache=False).logits
    return rows


class FamilyTeacher:
    """The peft model with its adapter disabled, in eval mode, without grad: ONE forward of [clean; noisy] (2B
    rows), sample i's pixels perturbed with `per_sample_generator(cfg.seed, sample_index_i, step)`; lm_head on the
    2N answer rows only."""

    def __init__(self, model, cfg, family: Family, image_token_id: int, merge_size: int | None) -> None:
        self.model, self.cfg, self.family = model, cfg, family
        self.image_token_id, self.merge_size = image_token_id, merge_size

    def answer_rows(self, batch: dict[str, torch.Tensor], mask: torch.Tensor, step: int) -> TeacherRows:
        cfg, index = self.cfg, batch["sample_index"].tolist()

        def noise(x: torch.Tensor, i: int) -> torch.Tensor:
            g = S.per_sample_generator(cfg.seed, int(index[i]), step, device=x.device)
            return S.perturb(x.float(), cfg.noise, alpha=cfg.alpha, step=cfg.noise_step, mask_ratio=cfg.mask_ratio,
                             patch_size=int(self.model.config.vision_config.patch_size), blur_sigma=cfg.blur_sigma,
                             generator=g).to(x.dtype)

        clean = model_inputs(self.family, batch, compute_dtype(self.model))
        noisy = perturb_pixel_inputs(self.family, clean, cfg.noise, noise, image_token_id=self.image_token_id,
                                     merge_size=self.merge_size)
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad(), self.model.disable_adapter():
                logits = self.model(**two_view_batch(clean, noisy), logits_to_keep=torch.cat([mask, mask]),
                                    use_cache=False).logits
        finally:
            self.model.train(was_training)
        half = logits.shape[0] // 2
        return TeacherRows(logits[:half], logits[half:], S.confidence(logits[:half], mask))


class FamilySeedTrainer(SeedTrainer):
    """SeedTrainer with the family's teacher and the family's student inputs (`student_fn`)."""

    def __init__(self, *args, family: Family, processor, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.family, self.processor = family, processor
        self.student_fn = family_student_rows(family)

    def _teacher(self, model) -> FamilyTeacher:
        return FamilyTeacher(self.accelerator.unwrap_model(model), self.cfg, self.family,
                             image_token_id=int(self.processor.image_token_id),
                             merge_size=getattr(self.processor.image_processor, "merge_size", None))


def check_family_options(cfg: SeedConfig, family: Family) -> None:
    """What these families do not take yet, refused in one line before anything loads."""
    if cfg.method == "seed":
        family.check_perturbation(cfg.noise)
    if cfg.prompt_style != "hf":
        raise SeedVLMError(f"prompt_style {cfg.prompt_style!r} is for LLaVA-1.5 models; {family.name} models train "
                           f"with their own chat template (prompt_style hf)")
    for name, on in (("teacher_cache", cfg.teacher_cache), ("compile_layers", cfg.compile_layers),
                     ("fsdp", bool(cfg.fsdp))):
        if on:
            raise SeedVLMError(f"{name} is not available for {family.name} models yet")


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
    model.config.use_cache = False
    model.config.text_config.use_cache = False
    model = apply_lora(model, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_target_modules,
                       language_model=family.language_model)
    if cfg.activation_checkpointing:
        model.enable_input_require_grads()
    if cfg.should_save:
        write_json(Path(cfg.output_dir) / CONFIG_FILE, {**cfg.to_dict(), "family": family.name})
        write_json(Path(cfg.output_dir) / MANIFEST_FILE, {
            "images": dataset.image_names, "data": str(cfg.data), "images_dir": str(cfg.images),
            "n_records": len(dataset), **image_identity(dataset.image_names, cfg.images)})
    trainer = FamilySeedTrainer(model=model, args=cfg, train_dataset=dataset,
                                data_collator=FamilyCollator(family, processor.tokenizer.pad_token_id),
                                base_fingerprint=fp, lengths=dataset.lengths, callbacks=list(callbacks),
                                family=family, processor=processor)
    return trainer
