"""The SEED teacher: its clean and noisy logits at the answer rows, from a live model or from a teacher cache.

A `Teacher` answers `answer_rows(batch, mask, step)` with `TeacherRows`; the SEED step needs nothing else from it.
`LiveTeacher` runs the peft model with its adapter disabled (one forward of the 2B batch [clean; noisy]);
`seedvlm.train.teacher_cache.TeacherCache` reads the rows `seedvlm teach` stored. The teacher's noisy view is
`noisy_view`: image i perturbed with `per_sample_generator(cfg.seed, sample_index_i, step)`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol, Sequence

import torch
import torch.nn.functional as F

from seedvlm import seed as S
from seedvlm.models.dtypes import compute_dtype
from seedvlm.models.llava import embed_images, image_features, reuse_blocker

__all__ = ["Teacher", "TeacherRows", "LiveTeacher", "noise_settings", "noisy_view", "teacher_logits"]


@dataclasses.dataclass
class TeacherRows:
    """The teacher at the answer rows of a batch, in the row order of `logits[mask]`.

    clean, noisy: (N, V) logits for the clean and the perturbed image; conf: (B,) float32 confidence of the clean
    teacher (`seed.confidence`); features: the clean images' features (B x tokens, hidden), detached, when the
    student may take them instead of running the vision tower again (else None)."""

    clean: torch.Tensor
    noisy: torch.Tensor
    conf: torch.Tensor
    features: torch.Tensor | None = None

    def student_columns(self, student: torch.Tensor) -> torch.Tensor:
        """The student's rows (N, V) in the columns of `clean`/`noisy` (all of them here)."""
        return student

    def implausible(self, g: float) -> torch.Tensor:
        """True where VCD's plausibility constraint at g drops a column of the target (`seed.implausible`)."""
        return S.implausible(F.log_softmax(S.upcast(self.clean), dim=-1), g)


class Teacher(Protocol):
    def answer_rows(self, batch: dict[str, torch.Tensor], mask: torch.Tensor, step: int) -> TeacherRows:
        """The teacher's rows for `batch` at the (B, L) answer mask, with the noise of global step `step`."""
        ...


def noise_settings(cfg) -> dict[str, Any]:
    """The options that decide the teacher's noisy view (and so a teacher cache's content): the perturbation, its
    own parameters only (alpha for gaussian, noise_step for ddpm, mask_ratio for mask, blur_sigma for blur; blank
    has none) and the noise seed."""
    out: dict[str, Any] = {"noise": cfg.noise, "seed": int(cfg.seed)}
    if cfg.noise == "gaussian":
        out["alpha"] = float(cfg.alpha)
    elif cfg.noise == "ddpm":
        out["noise_step"] = int(cfg.noise_step)
    elif cfg.noise == "mask":
        out["mask_ratio"] = float(cfg.mask_ratio)
    elif cfg.noise == "blur":
        out["blur_sigma"] = float(cfg.blur_sigma)
    return out


def noisy_view(pixel_values: torch.Tensor, sample_indices: Sequence[int] | torch.Tensor, step: int, cfg,
               patch_size: int) -> torch.Tensor:
    """The teacher's perturbed view: image i perturbed with `per_sample_generator(cfg.seed, index_i, step)`, so
    the noise depends on (seed, sample, step) only, not on the batch, the rank or the process."""
    idx = sample_indices.tolist() if isinstance(sample_indices, torch.Tensor) else list(sample_indices)
    return S.perturb_per_sample(pixel_values, [(j, step) for j in idx], cfg.noise, seed=cfg.seed, alpha=cfg.alpha,
                                step=cfg.noise_step, mask_ratio=cfg.mask_ratio, patch_size=patch_size,
                                blur_sigma=cfg.blur_sigma)


def teacher_logits(teacher, batch: dict[str, torch.Tensor], mask: torch.Tensor, cfg, step: int,
                   patch_size: int | None = None, *, keep_features: bool = False):
    """Clean and noisy teacher logits at the answer rows, (N, V) each in the model's dtype, from ONE forward of the
    2B batch with the adapter disabled, in eval mode (no dropout), without grad. `teacher` is a peft model.

    `logits_to_keep` = the mask repeated, so lm_head runs on the 2N answer rows only. keep_features: compute the 2B
    images' features first (`image_features`), run the forward on `inputs_embeds` (`embed_images`), and return
    (clean, noisy, clean image features (B x tokens, hidden), detached) for the student; the logits are the same as
    from `pixel_values`."""
    ids, attn, pix = batch["input_ids"], batch["attention_mask"], batch["pixel_values"]
    if patch_size is None:
        patch_size = int(teacher.config.vision_config.patch_size)
    noisy = noisy_view(pix.float(), batch["sample_index"], step, cfg, patch_size)
    pixels = torch.cat([pix.float(), noisy]).to(compute_dtype(teacher))
    ids2, attn2, keep2 = torch.cat([ids, ids]), torch.cat([attn, attn]), torch.cat([mask, mask])
    clean_feats = None
    was_training = teacher.training
    teacher.eval()
    try:
        with torch.no_grad(), teacher.disable_adapter():
            if keep_features:
                feats = image_features(teacher, pixels)
                logits = teacher(inputs_embeds=embed_images(teacher, ids2, feats), attention_mask=attn2,
                                 logits_to_keep=keep2, use_cache=False).logits
                clean_feats = torch.cat(feats[:pix.shape[0]])
            else:
                logits = teacher(input_ids=ids2, attention_mask=attn2, pixel_values=pixels, logits_to_keep=keep2,
                                 use_cache=False).logits
    finally:
        teacher.train(was_training)
    half = logits.shape[0] // 2
    if keep_features:
        return logits[:half], logits[half:], clean_feats
    return logits[:half], logits[half:]


class LiveTeacher:
    """The teacher as the peft model `model` with its adapter disabled (`teacher_logits`).

    reuse_features: hand the clean image features to the student (the vision tower then runs twice per sample,
    not three times); refused by itself when `reuse_blocker(model)` names a reason."""

    def __init__(self, model, cfg, patch_size: int | None = None, reuse_features: bool = True) -> None:
        self.model, self.cfg, self.patch_size, self.reuse_features = model, cfg, patch_size, bool(reuse_features)

    def answer_rows(self, batch: dict[str, torch.Tensor], mask: torch.Tensor, step: int) -> TeacherRows:
        reuse = self.reuse_features and reuse_blocker(self.model) is None
        clean, noisy, *feats = teacher_logits(self.model, batch, mask, self.cfg, step, self.patch_size,
                                              keep_features=reuse)
        return TeacherRows(clean, noisy, S.confidence(clean, mask), feats[0] if feats else None)
