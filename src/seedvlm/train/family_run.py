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
from accelerate.utils.environment import parse_flag_from_env
from transformers import set_seed

from seedvlm import seed as S
from seedvlm.data.family_data import TOKEN_KEYS, FamilyCollator, load_family_train_data
from seedvlm.data.image_ids import image_identity
from seedvlm.errors import SeedVLMError
from seedvlm.io import write_json
from seedvlm.models.dtypes import compute_dtype, resolve_dtype
from seedvlm.models.families.base import Family
from seedvlm.models.families.features import clean_image_features, reuse_blocker, with_image_features
from seedvlm.models.families.pixels import perturb_pixel_inputs, two_view_batch
from seedvlm.models.fingerprint import base_fingerprint
from seedvlm.train.checkpoints import CONFIG_FILE, MANIFEST_FILE
from seedvlm.train.config import SeedConfig
from seedvlm.train.lora import apply_lora
from seedvlm.train.step import compile_layers, compile_options
from seedvlm.train.teacher import Teacher, TeacherRows
from seedvlm.train.teacher_cache import open_cache
from seedvlm.train.trainer import SeedTrainer


def model_inputs(family: Family, batch: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The model's keyword inputs from a collated batch: ids, attention mask, per-token inputs, the pixel inputs
    in the model's dtype and the metadata (grids, image sizes) as they are."""
    out = {k: batch[k] for k in ("input_ids", "attention_mask", *TOKEN_KEYS, *family.metadata_keys) if k in batch}
    out.update({k: batch[k].to(dtype) for k in family.pixel_keys})
    return out


def family_student_rows(family: Family):
    """`step.student_rows` for a family: the student's logits at the answer rows (N, V), from its own pixels, or with
    `features` (the teacher's clean image features) in their place."""
    def rows(model, batch, mask, features=None, base=None) -> torch.Tensor:
        inputs = model_inputs(family, batch, compute_dtype(model if base is None else base))
        if features is not None:
            inputs = with_image_features(family, inputs, features)
        return model(**inputs, logits_to_keep=mask, use_cache=False).logits
    return rows


def family_teacher_logits(model, family: Family, batch: dict[str, torch.Tensor], mask: torch.Tensor, cfg, step: int,
                          image_token_id: int, merge_size: int | None, keep_features: bool = False):
    """(clean, noisy, clean image features or None): the teacher's logits at the answer rows, (N, V) each, from ONE
    forward of [clean; noisy] (2B rows) without grad, sample i's pixels perturbed with
    `per_sample_generator(cfg.seed, sample_index_i, step)`; lm_head on the 2N answer rows only. The caller picks
    the mode (eval) and, for a peft model, disables the adapter."""
    index = batch["sample_index"].tolist()
    patch_size = int(model.config.vision_config.patch_size)

    def noise(x: torch.Tensor, i: int) -> torch.Tensor:
        g = S.per_sample_generator(cfg.seed, int(index[i]), step, device=x.device)
        return S.perturb(x.float(), cfg.noise, alpha=cfg.alpha, step=cfg.noise_step, mask_ratio=cfg.mask_ratio,
                         patch_size=patch_size, blur_sigma=cfg.blur_sigma, generator=g).to(x.dtype)

    clean = model_inputs(family, batch, compute_dtype(model))
    noisy = perturb_pixel_inputs(family, clean, cfg.noise, noise, image_token_id=image_token_id,
                                 merge_size=merge_size)
    with torch.no_grad():
        out = model(**two_view_batch(clean, noisy), logits_to_keep=torch.cat([mask, mask]), use_cache=False)
    half = out.logits.shape[0] // 2
    features = clean_image_features(out) if keep_features else None
    return out.logits[:half], out.logits[half:], features


def processor_ids(processor) -> dict[str, int | None]:
    """`family_teacher_logits`' image_token_id and merge_size from the family's processor."""
    return {"image_token_id": int(processor.image_token_id),
            "merge_size": getattr(processor.image_processor, "merge_size", None)}


class FamilyTeacher:
    """The peft model with its adapter disabled, in eval mode (`family_teacher_logits`). reuse_features: hand the
    clean view's image features to the student, unless `features.reuse_blocker` names a reason."""

    def __init__(self, model, cfg, family: Family, image_token_id: int, merge_size: int | None,
                 reuse_features: bool = False) -> None:
        self.model, self.cfg, self.family = model, cfg, family
        self.image_token_id, self.merge_size = image_token_id, merge_size
        self.reuse_features = bool(reuse_features)

    def answer_rows(self, batch: dict[str, torch.Tensor], mask: torch.Tensor, step: int) -> TeacherRows:
        reuse = self.reuse_features and reuse_blocker(self.model, self.family) is None
        was_training = self.model.training
        self.model.eval()
        try:
            with self.model.disable_adapter():
                clean, noisy, features = family_teacher_logits(
                    self.model, self.family, batch, mask, self.cfg, step, self.image_token_id, self.merge_size,
                    keep_features=reuse)
        finally:
            self.model.train(was_training)
        return TeacherRows(clean, noisy, S.confidence(clean, mask), features)


class FamilySeedTrainer(SeedTrainer):
    """SeedTrainer with the family's teacher and the family's student inputs (`student_fn`)."""

    def __init__(self, *args, family: Family, processor, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.family, self.processor = family, processor
        self.student_fn = family_student_rows(family)

    def _teacher(self, model) -> Teacher:
        if self.teacher_cache is not None:
            return self.teacher_cache
        return FamilyTeacher(self.accelerator.unwrap_model(model), self.cfg, self.family,
                             reuse_features=self.cfg.reuse_image_features, **processor_ids(self.processor))


def check_family_options(cfg: SeedConfig, family: Family) -> None:
    """What these families do not take yet, refused in one line before anything loads."""
    if cfg.method == "seed":
        family.check_perturbation(cfg.noise)
    if cfg.prompt_style != "hf":
        raise SeedVLMError(f"prompt_style {cfg.prompt_style!r} is for LLaVA-1.5 models; {family.name} models train "
                           f"with their own chat template (prompt_style hf)")
    if cfg.fsdp or parse_flag_from_env("ACCELERATE_USE_FSDP"):  # --fsdp, or accelerate launch with an FSDP config
        raise SeedVLMError(f"fsdp is not available for {family.name} models yet; train them with one process per "
                           f"GPU (DDP)")


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
