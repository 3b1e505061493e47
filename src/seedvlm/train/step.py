"""One SEED (or SFT) micro-batch: the code `SeedTrainer.compute_loss` runs inside `seedvlm train` and
`benchmarks/train_step.py` times as case (c).

`seed_batch(model, batch, cfg, teacher=..., step=..., beta_schedule=...)` does, for a micro-batch of B samples
(docs/design.md section 2):
1. answer rows: `answer_positions(labels)` -> mask (B, L), N targets (once per step);
2. teacher rows: `teacher.answer_rows(batch, mask, step)` (train/teacher.py: a live model with its adapter disabled,
   one forward of the 2B batch [clean; noisy] with lm_head on the 2N answer rows only, or a teacher cache);
3. b (B,) = beta_schedule(conf, step) with the history BEFORE this batch, then the history gets this batch's
   confidences (`record_conf`, which the trainer gathers across ranks);
4. student rows: adapters on, through `model` (so DDP's hooks run), `logits_to_keep` = the mask, on the teacher's
   clean image features when it handed them over (the vision tower then runs twice per sample, not three times);
5. `seed_step(student, teacher rows, targets, b, mask, cfg)`: purify with each row's b, the plausibility mask,
   combined_loss (w, T, direction, mask_strategy, chunk_size). A pure function of its tensors and the options.
Float32 copies exist only for the N answer rows (confidence, purify, KL; the KL in checkpointed chunks of
`cfg.kl_chunk_size` rows when set). Both student paths (pixels or reused features) give the same loss and gradients
(tests/train/test_step_levers.py).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import torch
import torch.nn.functional as F

from seedvlm import seed as S
from seedvlm.errors import SeedVLMError
from seedvlm.models.dtypes import compute_dtype
from seedvlm.models.llava import decoder_layers, embed_images, llava_of, vision_layers
from seedvlm.train.teacher import Teacher, TeacherRows

__all__ = ["StepOutput", "seed_step", "seed_batch", "student_rows", "sft_step", "compile_layers", "compile_options"]


@dataclasses.dataclass
class StepOutput:
    """One micro-batch's loss and the tensors behind it (rows at the answer positions).

    parts: {"loss", "distill", "ce"} (SFT: {"loss", "ce"}) as detached floats; student (N, V); targets (N,);
    teacher: the teacher's rows (None for SFT); purified: the target in the teacher's columns; beta, conf: (B,)."""

    loss: torch.Tensor
    parts: dict[str, float]
    student: torch.Tensor
    targets: torch.Tensor
    teacher: TeacherRows | None = None
    purified: torch.Tensor | None = None
    beta: torch.Tensor | None = None
    conf: torch.Tensor | None = None

    @property
    def reused_features(self) -> bool:
        """Whether the student ran on the teacher's clean image features."""
        return self.teacher is not None and self.teacher.features is not None


def seed_step(student: torch.Tensor, teacher: TeacherRows, targets: torch.Tensor, beta: torch.Tensor,
              mask: torch.Tensor, cfg, *, loss_fn: Callable = S.combined_loss,
              purify_fn: Callable = S.purify) -> StepOutput:
    """The SEED loss of one micro-batch from its rows: purified = purify(clean, noisy, b of each row's sample,
    cfg.purify_space) with the columns `teacher.implausible(cfg.plausibility)` set to -inf, then
    loss_fn(student, purified, targets, w, T, direction, mask_strategy, chunk_size) with the KL on the student's
    rows in the teacher's columns. student (N, V); beta, conf (B,); mask (B, L) says which sample owns each row.
    `loss_fn` / `purify_fn` are parameters so the trainer can route them through names tests can wrap."""
    beta_rows = beta[mask.nonzero(as_tuple=True)[0]]
    purified = purify_fn(teacher.clean, teacher.noisy, beta_rows, space=cfg.purify_space, plausibility=None)
    if cfg.plausibility:
        purified = purified.masked_fill(teacher.implausible(cfg.plausibility), float("-inf"))
    loss, parts = loss_fn(student, purified, targets, w=cfg.distill_weight, T=cfg.temperature,
                          direction=cfg.direction, mask_strategy=cfg.mask_strategy, chunk_size=cfg.kl_chunk_size,
                          kl_student=teacher.student_columns(student))
    return StepOutput(loss, parts, student, targets, teacher=teacher, purified=purified, beta=beta,
                      conf=teacher.conf)


def student_rows(model, batch: dict[str, torch.Tensor], mask: torch.Tensor, features: torch.Tensor | None = None,
                 base=None) -> torch.Tensor:
    """The student's logits at the answer rows (N, V): adapters on, through `model` (the DDP/compiled wrapper),
    `logits_to_keep` = the mask. With `features` (the teacher's clean image features) its `inputs_embeds` are built
    from them with the embeddings of `base` (the bare peft model; default `model`), else from `pixel_values`."""
    base = model if base is None else base
    if features is not None:
        return model(inputs_embeds=embed_images(base, batch["input_ids"], features),
                     attention_mask=batch["attention_mask"], logits_to_keep=mask, use_cache=False).logits
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                 pixel_values=batch["pixel_values"].to(compute_dtype(base)), logits_to_keep=mask,
                 use_cache=False).logits


def seed_batch(model, batch: dict[str, torch.Tensor], cfg, *, teacher: Teacher, step: int, beta_schedule,
               base=None, answers: tuple[torch.Tensor, torch.Tensor] | None = None,
               record_conf: Callable[[torch.Tensor, torch.Tensor], None] | None = None,
               loss_fn: Callable = S.combined_loss, purify_fn: Callable = S.purify,
               student_fn: Callable = student_rows) -> StepOutput:
    """One SEED micro-batch (module docstring). model: the (possibly wrapped) peft model the student runs through;
    base: the bare peft model (default `model`); step: the global step (seeds the noise); beta_schedule:
    `(conf, step) -> b` (a `seed.BetaSchedule`); answers: `answer_positions(labels)` when the caller has it;
    record_conf(conf, valid): adds this batch's confidences to the b history (default: beta_schedule.update);
    student_fn: `student_rows` or a model family's own (same arguments)."""
    mask, targets = S.answer_positions(batch["labels"]) if answers is None else answers
    rows = teacher.answer_rows(batch, mask, step)
    beta = beta_schedule(rows.conf, step)
    (record_conf or beta_schedule.update)(rows.conf, mask.any(dim=1))
    student = student_fn(model, batch, mask, rows.features, base)
    return seed_step(student, rows, targets, beta, mask, cfg, loss_fn=loss_fn, purify_fn=purify_fn)


def sft_step(model, batch: dict[str, torch.Tensor], base=None, student_fn: Callable = student_rows) -> StepOutput:
    """The control arm: CE on the answer tokens, same LoRA, same `logits_to_keep` slicing (no (B, L, V) logits).
    base: the bare peft model, for the pixels' dtype (default `model`); student_fn: as in `seed_batch`."""
    mask, targets = S.answer_positions(batch["labels"])
    student = student_fn(model, batch, mask, base=base)
    if student.shape[0] != targets.shape[0]:
        raise SeedVLMError(f"{student.shape[0]} logit rows for {targets.shape[0]} answer tokens")
    loss = F.cross_entropy(student.float(), targets)
    ce = float(loss.detach())
    return StepOutput(loss, {"loss": ce, "ce": ce}, student, targets)


def compile_layers(model, *, vision: bool = False, family=None, **compile_kwargs) -> int:
    """Regional compilation: `torch.compile` each LM decoder layer (and with `vision`, each vision encoder layer)
    in place, one shared graph per stack, dynamic shapes by default; returns the number of layers compiled.
    family: the `models.families` Family of another model family than LLaVA-1.5 (its layer stacks).
    Why layers and not the model, and what it costs: docs/performance.md ("Regional compilation")."""
    compile_kwargs.setdefault("dynamic", True)
    base = llava_of(model)
    # the student's first layer then sees an input that requires grad, as the other layers do
    base.enable_input_require_grads()
    if family is None:
        layers = decoder_layers(model) + (vision_layers(model) if vision else [])
    else:
        from seedvlm.models.families import layers as stacks

        layers = stacks.decoder_layers(model, family) + (stacks.vision_layers(model, family) if vision else [])
    for layer in layers:
        layer.compile(**compile_kwargs)
    return len(layers)


DYNAMIC = {"true": True, "false": False, "auto": None}


def compile_options(cfg) -> dict[str, Any]:
    """compile_layers' keyword arguments from a TrainConfig (which validated them): vision = `torch_compile_vision`,
    dynamic = `torch_compile_dynamic` (true / false / auto -> True / False / None)."""
    return {"vision": bool(cfg.torch_compile_vision), "dynamic": DYNAMIC[cfg.torch_compile_dynamic]}
