"""The SEED step's model-facing pieces for the non-LLaVA-1.5 families: the model's inputs from a collated batch, the
student's answer rows (from its own pixels or the teacher's clean image features), and the teacher's clean and
noisy rows from ONE forward of the 2B batch [clean; noisy], the noise on the pixel inputs only
(`models.families.pixels`). Used by training (`train.family_run`) and by `seedvlm teach` (`train.teacher_cache`)."""

from __future__ import annotations

import torch

from seedvlm import seed as S
from seedvlm.data.family_data import TOKEN_KEYS
from seedvlm.models.dtypes import compute_dtype
from seedvlm.models.families.base import Family
from seedvlm.models.families.features import clean_image_features, reuse_blocker, with_image_features
from seedvlm.models.families.pixels import perturb_pixel_inputs, two_view_batch
from seedvlm.train.teacher import TeacherRows


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
