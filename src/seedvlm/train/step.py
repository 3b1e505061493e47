"""One SEED (or SFT) micro-batch as plain functions of (model, batch, config): the code that
`SeedTrainer.compute_loss` runs inside `seedvlm train` and that `benchmarks/train_step.py` times as case (c).

`seed_step(model, batch, cfg, step=..., beta_schedule=...)` does, for a micro-batch of B samples (DESIGN.md 2):
1. answer rows: `answer_positions(labels)` -> mask (B, L), N targets;
2. teacher = `model` with its LoRA disabled, eval mode, no grad: ONE forward of the 2B batch [clean; noisy]
   (noisy = image i perturbed with `per_sample_generator(cfg.seed, sample_index_i, step)`), with
   `logits_to_keep` = the bool mask repeated, so lm_head runs on the 2N answer rows only and no (B, L, V) logits
   exist; with a teacher cache (`cache=`, see teacher_cache.py) this forward is skipped;
3. conf (B,) from the clean rows, b (B,) = beta_schedule(conf, step) with the history BEFORE this batch, then the
   history gets this batch's confidences (`record_conf`, which the trainer gathers across ranks);
4. purified = purify(clean, noisy, b per row, space, plausibility);
5. student = adapters on, clean pixels, same `logits_to_keep`; loss = combined_loss(student, purified, targets, w,
   T, direction, mask_strategy, chunk_size).
Float32 copies exist only for the N answer rows (confidence, purify, KL; the KL in checkpointed chunks of
`cfg.kl_chunk_size` rows when set).

Everything the step needs comes in as arguments (no Trainer): `teacher` is the unwrapped peft model (default
`model`; under DDP or torch.compile the trainer passes the bare one), `loss_fn` / `purify_fn` default to
seedvlm.seed's and are parameters so the trainer can route them through names tests can wrap.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F

from seedvlm import seed as S
from seedvlm.errors import SeedVLMError

__all__ = ["perturb_per_sample", "confidence_from_rows", "compute_dtype", "teacher_forward", "seed_step",
           "sft_step", "noise_settings"]


def perturb_per_sample(pixel_values: torch.Tensor, sample_indices: Sequence[int] | torch.Tensor, step: int,
                       cfg, patch_size: int) -> torch.Tensor:
    """The teacher's perturbed view: image i perturbed with `per_sample_generator(cfg.seed, index_i, step)`, so
    the noise depends on (seed, sample, step) only, not on the batch, the rank or the process."""
    idx = sample_indices.tolist() if isinstance(sample_indices, torch.Tensor) else list(sample_indices)
    rows = [S.perturb(pixel_values[i:i + 1], cfg.noise, alpha=cfg.alpha, step=cfg.noise_step,
                      mask_ratio=cfg.mask_ratio, patch_size=patch_size,
                      generator=S.per_sample_generator(cfg.seed, j, step, pixel_values.device))
            for i, j in enumerate(idx)]
    return torch.cat(rows)


def noise_settings(cfg) -> dict[str, Any]:
    """The options that decide the teacher's noisy view (and so a teacher cache's content): the perturbation, its
    own parameters only (alpha for gaussian, noise_step for ddpm, mask_ratio for mask) and the noise seed."""
    out: dict[str, Any] = {"noise": cfg.noise, "seed": int(cfg.seed)}
    if cfg.noise == "gaussian":
        out["alpha"] = float(cfg.alpha)
    elif cfg.noise == "ddpm":
        out["noise_step"] = int(cfg.noise_step)
    else:
        out["mask_ratio"] = float(cfg.mask_ratio)
    return out


def confidence_from_rows(rows: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """`seed.confidence` on gathered answer rows: rows (N, V) = logits[mask] of a (B, L) mask -> (B,) float32,
    the mean over each sample's answer rows of log max softmax (0 for a sample without answer rows)."""
    r = rows.float()
    per_row = r.max(dim=-1).values - torch.logsumexp(r, dim=-1)
    owner = mask.nonzero(as_tuple=True)[0]
    b = mask.shape[0]
    sums = torch.zeros(b, dtype=torch.float32, device=rows.device).index_add_(0, owner, per_row)
    counts = mask.sum(dim=1).clamp_min(1).to(torch.float32)
    return sums / counts


def compute_dtype(model) -> torch.dtype:
    """The dtype pixels are cast to: the base embeddings' (LoRA weights may be float32 beside a bf16 base)."""
    return model.get_input_embeddings().weight.dtype


def teacher_forward(teacher, batch: dict[str, torch.Tensor], mask: torch.Tensor, cfg, step: int,
                    patch_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Clean and noisy teacher logits at the answer rows, (N, V) each in the model's dtype, from ONE forward of the
    2B batch with the adapter disabled, in eval mode (no dropout), without grad. `teacher` is a peft model."""
    ids, attn, pix = batch["input_ids"], batch["attention_mask"], batch["pixel_values"]
    if patch_size is None:
        patch_size = int(teacher.config.vision_config.patch_size)
    noisy = perturb_per_sample(pix.float(), batch["sample_index"], step, cfg, patch_size)
    dtype = compute_dtype(teacher)
    was_training = teacher.training
    teacher.eval()
    try:
        with torch.no_grad(), teacher.disable_adapter():
            logits = teacher(input_ids=torch.cat([ids, ids]), attention_mask=torch.cat([attn, attn]),
                             pixel_values=torch.cat([pix.float(), noisy]).to(dtype),
                             logits_to_keep=torch.cat([mask, mask]), use_cache=False).logits
    finally:
        teacher.train(was_training)
    half = logits.shape[0] // 2
    return logits[:half], logits[half:]


def _default_record(beta_schedule) -> Callable[[torch.Tensor, torch.Tensor], None]:
    def record(conf: torch.Tensor, valid: torch.Tensor) -> None:
        beta_schedule.update(conf, valid)
    return record


def seed_step(model, batch: dict[str, torch.Tensor], cfg, *, step: int, beta_schedule: S.BetaSchedule,
              teacher=None, patch_size: int | None = None, cache=None,
              record_conf: Callable[[torch.Tensor, torch.Tensor], None] | None = None,
              loss_fn: Callable | None = None, purify_fn: Callable | None = None) -> dict[str, Any]:
    """One SEED micro-batch (module docstring). Returns {"loss", "parts", "student", "purified", "teacher_clean",
    "teacher_noisy", "beta" (B,), "conf" (B,), "targets" (N,)}; the tensors are rows at the answer positions: (N, V)
    from a teacher forward, or (N, K [+1]) kept-token columns from a teacher cache (plus "kept_ids" (N, K)).

    model: the (possibly wrapped) peft model the student runs through; teacher: the bare peft model whose adapter
    is disabled for the teacher (default: model); step: the global step (seeds the noise); cache: a
    `teacher_cache.TeacherCache` (the teacher forward is skipped); record_conf(conf, valid): adds this batch's
    confidences to the b history (default: beta_schedule.update).
    """
    loss_fn = loss_fn or S.combined_loss
    purify_fn = purify_fn or S.purify
    teacher = model if teacher is None else teacher
    record_conf = record_conf or _default_record(beta_schedule)
    labels = batch["labels"]
    mask, targets = S.answer_positions(labels)
    kept_ids = None
    if cache is None:
        clean, noisy = teacher_forward(teacher, batch, mask, cfg, step, patch_size)
        conf = confidence_from_rows(clean, mask)
    else:
        rows = cache.rows(batch["sample_index"], mask, device=labels.device)
        conf = rows["conf"]
    valid = mask.any(dim=1)
    beta = beta_schedule(conf, step)
    record_conf(conf, valid)
    owner = mask.nonzero(as_tuple=True)[0]
    dtype = compute_dtype(teacher)
    student = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                    pixel_values=batch["pixel_values"].to(dtype), logits_to_keep=mask, use_cache=False).logits
    if cache is None:
        purified = purify_fn(clean, noisy, beta[owner], space=cfg.purify_space, plausibility=cfg.plausibility)
        loss, parts = loss_fn(student, purified, targets, w=cfg.distill_weight, T=cfg.temperature,
                              direction=cfg.direction, mask_strategy=cfg.mask_strategy, chunk_size=cfg.kl_chunk_size)
    else:
        from seedvlm.train.teacher_cache import cached_loss

        loss, parts, clean, noisy, purified = cached_loss(student, rows, beta[owner], targets, cfg,
                                                          purify_fn=purify_fn)
        kept_ids = rows["ids"]
    out = {"loss": loss, "parts": parts, "student": student, "purified": purified, "teacher_clean": clean,
           "teacher_noisy": noisy, "beta": beta, "conf": conf, "targets": targets}
    if kept_ids is not None:
        out["kept_ids"] = kept_ids
    return out


def sft_step(model, batch: dict[str, torch.Tensor], teacher=None) -> dict[str, Any]:
    """The control arm: CE on the answer tokens, same LoRA, same `logits_to_keep` slicing (no (B, L, V) logits)."""
    mask, targets = S.answer_positions(batch["labels"])
    dtype = compute_dtype(model if teacher is None else teacher)
    student = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                    pixel_values=batch["pixel_values"].to(dtype), logits_to_keep=mask, use_cache=False).logits
    if student.shape[0] != targets.shape[0]:
        raise SeedVLMError(f"{student.shape[0]} logit rows for {targets.shape[0]} answer tokens")
    loss = F.cross_entropy(student.float(), targets)
    ce = float(loss.detach())
    return {"loss": loss, "parts": {"loss": ce, "ce": ce}, "student": student, "targets": targets,
            "beta": None, "conf": None}


def decoder_layers(model) -> list[torch.nn.Module]:
    """The language model's decoder layers of a (peft-wrapped) LLaVA."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    lm = base.model.language_model
    return list(lm.layers)


def compile_layers(model, **compile_kwargs) -> int:
    """Regional compilation: `torch.compile` each decoder layer of the language model in place (`Module.compile`).
    The layers share one code object, so one compiled graph (per mode: teacher = eval/no-grad/adapter off, student =
    train/grad) serves all of them: compile time is that of one layer, not of the model. The rest (vision tower,
    projector, the image-token scatter, the answer-row slice before lm_head, the loss) stays eager, so the
    data-dependent shapes there (bool-mask slicing) cause no graph breaks inside the compiled region.
    Defaults: dynamic=True (batch size and sequence length vary with length-grouped batches: one graph for all
    shapes), and the embeddings' output requires grad (`enable_input_require_grads`) so the student's first layer
    sees the same kind of input as the others: three compilations in all (teacher, student, one shape
    specialization), measured on the CPU. Returns the number of layers compiled."""
    compile_kwargs.setdefault("dynamic", True)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    base.enable_input_require_grads()
    layers = decoder_layers(model)
    for layer in layers:
        layer.compile(**compile_kwargs)
    return len(layers)
