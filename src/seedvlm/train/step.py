"""One SEED (or SFT) micro-batch as plain functions of (model, batch, config): the code that
`SeedTrainer.compute_loss` runs inside `seedvlm train` and that `benchmarks/train_step.py` times as case (c).

`seed_step(model, batch, cfg, step=..., beta_schedule=...)` does, for a micro-batch of B samples (DESIGN.md 2):
1. answer rows: `answer_positions(labels)` -> mask (B, L), N targets;
2. teacher = `model` with its LoRA disabled, eval mode, no grad: the frozen vision tower + projector run ONCE on the
   2B images [clean; noisy] (noisy = image i perturbed with `per_sample_generator(cfg.seed, sample_index_i, step)`;
   the bare LLaVA's own `get_image_features`), the image tokens' input embeddings are filled with those features
   as LlavaModel does (`embed_images`), then ONE language-model forward of the 2B batch, with `logits_to_keep` =
   the bool mask repeated, so lm_head runs on the 2N answer rows only and no (B, L, V) logits exist; with a teacher
   cache (`cache=`, see teacher_cache.py) this forward is skipped;
3. conf (B,) from the clean rows, b (B,) = beta_schedule(conf, step) with the history BEFORE this batch, then the
   history gets this batch's confidences (`record_conf`, which the trainer gathers across ranks);
4. purified = purify(clean, noisy, b per row, space, plausibility);
5. student = adapters on, through `model` (so DDP's hooks run), same `logits_to_keep`, its `inputs_embeds` built
   from the teacher's CLEAN image features (detached; the LoRA is on the language model only, so the student's
   features are the teacher's): the vision tower runs twice per sample, not three times;
   loss = combined_loss(student, purified, targets, w, T, direction, mask_strategy, chunk_size).
Float32 copies exist only for the N answer rows (confidence, purify, KL; the KL in checkpointed chunks of
`cfg.kl_chunk_size` rows when set).

Feature reuse (`cfg.reuse_image_features`, default on) falls back to the earlier path (pixels into every forward:
the vision tower runs in the teacher's 2B forward and again in the student's) when it is off, with a teacher cache
(no teacher forward to take features from), or when the vision tower or the projector has a trainable parameter or
active dropout (`reuse_blocker`); the trainer also turns it off under FSDP (the bare module holds shards there).
Both paths give the same loss and gradients (tests/test_step_levers.py).

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
           "sft_step", "noise_settings", "image_features", "embed_images", "reuse_blocker", "decoder_layers",
           "vision_layers", "compile_layers", "compile_options"]


def perturb_per_sample(pixel_values: torch.Tensor, sample_indices: Sequence[int] | torch.Tensor, step: int,
                       cfg, patch_size: int) -> torch.Tensor:
    """The teacher's perturbed view: image i perturbed with `per_sample_generator(cfg.seed, index_i, step)`, so
    the noise depends on (seed, sample, step) only, not on the batch, the rank or the process."""
    idx = sample_indices.tolist() if isinstance(sample_indices, torch.Tensor) else list(sample_indices)
    rows = [S.perturb(pixel_values[i:i + 1], cfg.noise, alpha=cfg.alpha, step=cfg.noise_step,
                      mask_ratio=cfg.mask_ratio, patch_size=patch_size, blur_sigma=cfg.blur_sigma,
                      generator=S.per_sample_generator(cfg.seed, j, step, pixel_values.device))
            for i, j in enumerate(idx)]
    return torch.cat(rows)


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


def llava_of(model):
    """The LlavaForConditionalGeneration inside a peft model (or `model` itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def image_token_id(config) -> int:
    """The image placeholder id (`image_token_id` in transformers 5, `image_token_index` before)."""
    tid = getattr(config, "image_token_id", None)
    return int(config.image_token_index if tid is None else tid)


def image_features(model, pixel_values: torch.Tensor) -> list[torch.Tensor]:
    """The projected image features the language model gets at the image tokens, one (tokens, hidden) tensor per
    image: the bare LLaVA's own `get_image_features` with the config's `vision_feature_layer` and
    `vision_feature_select_strategy` (what LlavaModel.forward computes from `pixel_values`). Gradients follow torch's
    grad mode (the caller wraps it in no_grad)."""
    llava = llava_of(model)
    cfg = llava.config
    out = llava.get_image_features(pixel_values=pixel_values, vision_feature_layer=cfg.vision_feature_layer,
                                   vision_feature_select_strategy=cfg.vision_feature_select_strategy)
    feats = getattr(out, "pooler_output", out)  # transformers 5: a ModelOutput; 4.x: the features themselves
    return list(feats)  # a (n, tokens, hidden) tensor or a list/tuple per image -> one tensor per image


def embed_images(model, input_ids: torch.Tensor, features: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """`inputs_embeds` (B, L, hidden) as LlavaModel.forward builds them: the input embeddings of `input_ids`
    (through the embedding module, so hooks such as `enable_input_require_grads`' run), the image-token positions
    filled in order with `features` (one (tokens, hidden) tensor per image, or their concatenation) by
    masked_scatter."""
    llava = llava_of(model)
    embeds = llava.get_input_embeddings()(input_ids)
    feats = features if isinstance(features, torch.Tensor) else torch.cat(list(features))
    feats = feats.to(embeds.device, embeds.dtype)
    slots = (input_ids == image_token_id(llava.config)).unsqueeze(-1).expand_as(embeds)
    n_slots = int(slots.sum())
    if n_slots != feats.numel():
        raise SeedVLMError(f"image features do not match the image tokens: {n_slots // embeds.shape[-1]} image "
                           f"tokens, {feats.numel() // max(embeds.shape[-1], 1)} feature rows")
    return embeds.masked_scatter(slots, feats)


def reuse_blocker(model) -> str | None:
    """Why the student cannot take the teacher's clean image features (None = it can): the vision tower or the
    projector has a parameter that requires grad, or active dropout (the student's forward runs in train mode, the
    teacher's in eval mode)."""
    inner = llava_of(model).model
    for part in ("vision_tower", "multi_modal_projector"):
        module = getattr(inner, part)
        if any(p.requires_grad for p in module.parameters()):
            return f"the {part} has trainable parameters"
        drop = getattr(getattr(module, "config", None), "attention_dropout", 0.0) or 0.0
        if drop > 0 or any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in module.modules()):
            return f"the {part} has dropout"
    return None


def teacher_forward(teacher, batch: dict[str, torch.Tensor], mask: torch.Tensor, cfg, step: int,
                    patch_size: int | None = None, *, keep_features: bool = False):
    """Clean and noisy teacher logits at the answer rows, (N, V) each in the model's dtype, from ONE forward of the
    2B batch with the adapter disabled, in eval mode (no dropout), without grad. `teacher` is a peft model.

    keep_features: compute the 2B images' features first (`image_features`), run the forward on `inputs_embeds`
    (`embed_images`), and return (clean, noisy, clean image features (B x tokens, hidden), detached) for the
    student; the logits are the same as from `pixel_values`."""
    ids, attn, pix = batch["input_ids"], batch["attention_mask"], batch["pixel_values"]
    if patch_size is None:
        patch_size = int(teacher.config.vision_config.patch_size)
    noisy = perturb_per_sample(pix.float(), batch["sample_index"], step, cfg, patch_size)
    dtype = compute_dtype(teacher)
    pixels = torch.cat([pix.float(), noisy]).to(dtype)
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


def _default_record(beta_schedule) -> Callable[[torch.Tensor, torch.Tensor], None]:
    def record(conf: torch.Tensor, valid: torch.Tensor) -> None:
        beta_schedule.update(conf, valid)
    return record


def seed_step(model, batch: dict[str, torch.Tensor], cfg, *, step: int, beta_schedule: S.BetaSchedule,
              teacher=None, patch_size: int | None = None, cache=None,
              record_conf: Callable[[torch.Tensor, torch.Tensor], None] | None = None,
              loss_fn: Callable | None = None, purify_fn: Callable | None = None,
              reuse_features: bool | None = None) -> dict[str, Any]:
    """One SEED micro-batch (module docstring). Returns {"loss", "parts", "student", "purified", "teacher_clean",
    "teacher_noisy", "beta" (B,), "conf" (B,), "targets" (N,), "reused_features" (bool)}; the tensors are rows at
    the answer positions: (N, V) from a teacher forward, or (N, K [+1]) kept-token columns from a teacher cache
    (plus "kept_ids" (N, K)).

    model: the (possibly wrapped) peft model the student runs through; teacher: the bare peft model whose adapter
    is disabled for the teacher (default: model); step: the global step (seeds the noise); cache: a
    `teacher_cache.TeacherCache` (the teacher forward is skipped); record_conf(conf, valid): adds this batch's
    confidences to the b history (default: beta_schedule.update); reuse_features: the student takes the teacher's
    clean image features (default: `cfg.reuse_image_features`, True when cfg lacks it); off by itself with a cache
    or when `reuse_blocker(teacher)` names a reason.
    """
    loss_fn = loss_fn or S.combined_loss
    purify_fn = purify_fn or S.purify
    teacher = model if teacher is None else teacher
    record_conf = record_conf or _default_record(beta_schedule)
    labels = batch["labels"]
    mask, targets = S.answer_positions(labels)
    kept_ids = None
    reuse = getattr(cfg, "reuse_image_features", True) if reuse_features is None else reuse_features
    reuse = bool(reuse) and cache is None and reuse_blocker(teacher) is None
    if cache is None:
        clean, noisy, *feats = teacher_forward(teacher, batch, mask, cfg, step, patch_size, keep_features=reuse)
        conf = confidence_from_rows(clean, mask)
    else:
        rows = cache.rows(batch["sample_index"], mask, device=labels.device)
        conf = rows["conf"]
    valid = mask.any(dim=1)
    beta = beta_schedule(conf, step)
    record_conf(conf, valid)
    owner = mask.nonzero(as_tuple=True)[0]
    if reuse:  # through `model` (the DDP/compiled wrapper), the embeddings of the bare one
        student = model(inputs_embeds=embed_images(teacher, batch["input_ids"], feats[0]),
                        attention_mask=batch["attention_mask"], logits_to_keep=mask, use_cache=False).logits
        del feats
    else:
        student = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                        pixel_values=batch["pixel_values"].to(compute_dtype(teacher)), logits_to_keep=mask,
                        use_cache=False).logits
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
           "teacher_noisy": noisy, "beta": beta, "conf": conf, "targets": targets, "reused_features": reuse}
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


def vision_layers(model) -> list[torch.nn.Module]:
    """The vision tower's encoder layers (CLIPEncoderLayer) of a (peft-wrapped) LLaVA."""
    tower = llava_of(model).model.vision_tower
    tower = getattr(tower, "vision_model", tower)  # transformers < 5 nest the encoder in CLIPVisionModel.vision_model
    return list(tower.encoder.layers)


def compile_layers(model, *, vision: bool = False, **compile_kwargs) -> int:
    """Regional compilation: `torch.compile` each decoder layer of the language model in place (`Module.compile`),
    and with `vision=True` each encoder layer of the vision tower too (`vision_layers`).
    The layers of a stack share one code object, so one compiled graph (per mode: teacher = eval/no-grad/adapter off,
    student = train/grad) serves all of them: compile time is that of one layer, not of the model. The rest (the
    tower's patch embeddings, the projector, the image-token scatter, the answer-row slice before lm_head, the loss)
    stays eager, so the data-dependent shapes there (bool-mask slicing) cause no graph breaks inside the compiled
    region.
    Defaults: dynamic=True (batch size and sequence length vary with length-grouped batches: one graph for all
    shapes; None = torch's automatic dynamic shapes: static first, recompiled with dynamic sizes when a shape
    changes; False = a graph per shape, and past dynamo's recompile limit (8 entries per code object, shared by both
    stacks) new shapes run eagerly), and the embeddings' output requires grad (`enable_input_require_grads`) so
    the student's first layer sees the same kind of input as the others (`embed_images` calls the same embedding
    module, so this holds with feature reuse too): LM only, three compilations in all (teacher, student, one
    batch-1 specialization), measured on the CPU.
    The vision layers: transformers 5's hidden-state capture (which `get_image_features` uses to pick
    `vision_feature_layer`) reads a ContextVar in a hook on each CLIP attention module, which dynamo cannot trace,
    so each compiled CLIP layer runs as 3 graphs (norm, attention, residual + MLP), same values. With feature reuse
    the tower runs only in the teacher (no grad): one mode, 4 cache entries in all with the LM's (measured on the
    CPU); without it the student's tower forward adds its own (grad mode: transformers' enable_input_require_grads
    also hooks the tower's patch embeddings, so that forward builds a graph and backward runs through the tower).
    Returns the number of layers compiled."""
    compile_kwargs.setdefault("dynamic", True)
    base = llava_of(model)
    base.enable_input_require_grads()
    layers = decoder_layers(model) + (vision_layers(model) if vision else [])
    for layer in layers:
        layer.compile(**compile_kwargs)
    return len(layers)


DYNAMIC = {"true": True, "false": False, "auto": None}


def compile_options(cfg) -> dict[str, Any]:
    """compile_layers' keyword arguments from a TrainConfig (which validated them): vision = `torch_compile_vision`,
    dynamic = `torch_compile_dynamic` (true / false / auto -> True / False / None)."""
    return {"vision": bool(cfg.torch_compile_vision), "dynamic": DYNAMIC[cfg.torch_compile_dynamic]}
