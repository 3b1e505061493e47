"""SEED training (and the SFT control arm) as a `transformers.Trainer` subclass.

The Trainer brings the loop: gradient accumulation, AdamW, the cosine schedule with warmup, mixed precision,
checkpoint/resume with RNG state, tqdm and TensorBoard, and `accelerate launch` for several GPUs. This class adds:
- `compute_loss`: one SEED step (DESIGN.md section 2), or plain CE for `method: sft`:
    teacher = the same peft model with its adapter disabled, no grad, on clean AND noisy pixels in one forward of
    a 2B batch (noise per sample from (seed, dataset index, global step));
    logits only at the answer positions (`logits_to_keep` = the (B, L) bool answer mask: lm_head runs on N rows);
    conf from the clean teacher -> b from `BetaSchedule` (history gathered across ranks) -> purify -> combined_loss;
- atomic checkpoints (written to `.checkpoint-N.tmp`, renamed when complete) holding the peft adapter,
  seedvlm_base.json, the config used, the b history (seedvlm_state.json) and transformers' optimizer, scheduler,
  RNG and trainer state (loaded back by transformers with `torch.load(weights_only=True)`);
- the NaN/Inf guard and the per-step metrics (see callbacks.py).

Commands (see docs/training.md):
    seedvlm train --config configs/seed_tiny.yaml --model runs/base --data train.json --images world/images/train
    seedvlm train --config configs/sft_tiny.yaml ...            # the control arm
    accelerate launch -m seedvlm train --config configs/seed_llava15_7b.yaml ...   # several GPUs
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import warnings
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from transformers import ProgressCallback, Trainer, TrainingArguments
from transformers.trainer_utils import get_last_checkpoint, rotate_checkpoints

from seedvlm import seed as S
from seedvlm.errors import SeedVLMError
from seedvlm.io import atomic_path, read_json, write_json
from seedvlm.train.callbacks import (SeedMonitor, SeedProgressCallback, StepAccumulator, load_seed_state,
                                     save_seed_state)
from seedvlm.train.config import TrainConfig
from seedvlm.train.step import confidence_from_rows, perturb_per_sample  # noqa: F401  (re-exported)
from seedvlm.train import step as _step

log = logging.getLogger("seedvlm.train")
# transformers' own Trainer calls its deprecated `is_gradient_checkpointing`; not ours to fix, and noise in every run.
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)

CONFIG_FILE = "train_config.json"
MANIFEST_FILE = "train_manifest.json"
ADAPTER_DIR = "adapter"
CHECKPOINT_PREFIX = "checkpoint"

# Referenced through the module so that tests can wrap them (e.g. to inject a NaN).
combined_loss = S.combined_loss
purify = S.purify


# --------------------------------------------------------------------------------------------------------------
# Tensor helpers
# --------------------------------------------------------------------------------------------------------------


def resolve_dtype(name: str) -> torch.dtype:
    """auto = bf16 on a GPU, fp32 on the CPU (DESIGN.md 2)."""
    if name == "auto":
        return torch.bfloat16 if torch.cuda.is_available() else torch.float32
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


# --------------------------------------------------------------------------------------------------------------
# The trainer
# --------------------------------------------------------------------------------------------------------------


class SeedTrainer(Trainer):
    """`transformers.Trainer` with the SEED step (or CE only), atomic checkpoints and the seed's logging."""

    def __init__(self, model, args: TrainingArguments, seed_config: TrainConfig, train_dataset, data_collator,
                 base_fingerprint: str, lengths: Sequence[int] | None = None, teacher_cache=None, **kwargs):
        super().__init__(model=model, args=args, train_dataset=train_dataset, data_collator=data_collator, **kwargs)
        self.cfg = seed_config
        self.base_fp = base_fingerprint
        self.lengths = list(lengths) if lengths is not None else None
        self.teacher_cache = teacher_cache  # a teacher_cache.TeacherCache: no teacher forward (seedvlm teach)
        self.loss_is_scaled_for_ga = False  # compute_loss returns a per-micro-batch mean
        self.model_accepts_loss_kwargs = False
        self.step_acc = StepAccumulator()
        self.record_step_outputs = False      # tests: keep the last step's tensors in self.last_step
        self.last_step: dict[str, Any] | None = None
        c = seed_config
        self.beta_schedule = S.BetaSchedule(
            kind=c.beta_schedule, values=c.beta_values, quantiles=c.beta_quantiles, fixed=c.beta_fixed,
            b_max=c.beta_max, tau=c.beta_tau, history_size=c.beta_history_size, min_history=c.beta_min_history,
            total_steps=max(args.max_steps, 1), b_start=c.curriculum_start, b_end=c.curriculum_end,
            warmup_fraction=c.curriculum_warmup) if c.method == "seed" else None
        self.monitor = SeedMonitor(self, c.max_consecutive_nan)
        self.add_callback(self.monitor)
        if not args.disable_tqdm:
            self.pop_callback(ProgressCallback)
            self.add_callback(SeedProgressCallback)
        base = self.accelerator.unwrap_model(model)
        self.patch_size = int(base.config.vision_config.patch_size)

    # -- data ------------------------------------------------------------------------------------------------------
    def _get_train_sampler(self, train_dataset=None):
        if self.cfg.group_by_length and self.lengths is not None:
            from seedvlm.data.dataset import LengthGroupedSampler

            return LengthGroupedSampler(self.lengths, self.args.train_batch_size * self.args.gradient_accumulation_steps,
                                        seed=self.args.data_seed if self.args.data_seed is not None else self.args.seed)
        return super()._get_train_sampler(train_dataset)

    # -- the step --------------------------------------------------------------------------------------------------
    def _unpack(self, model, inputs):
        labels = inputs["labels"]
        mask, targets = S.answer_positions(labels)
        dtype = self.accelerator.unwrap_model(model).get_input_embeddings().weight.dtype  # the base's, not LoRA's
        return labels, mask, targets, dtype

    def seed_step(self, model, inputs: dict[str, torch.Tensor]) -> dict[str, Any]:
        """One SEED micro-batch (`seedvlm.train.step.seed_step`, the code benchmarks/train_step.py times): returns
        {"loss", "parts", "student", "purified", "teacher_clean", "teacher_noisy", "beta" (B,), "conf" (B,),
        "targets" (N,)}; the tensors are (N, V) rows at the answer positions ((N, K [+1]) with a teacher cache)."""
        if self.beta_schedule.kind == "curriculum":
            self.beta_schedule.total_steps = max(int(self.state.max_steps), 1)
        return _step.seed_step(model, inputs, self.cfg, step=int(self.state.global_step),
                               beta_schedule=self.beta_schedule, teacher=self.accelerator.unwrap_model(model),
                               patch_size=self.patch_size, cache=self.teacher_cache,
                               record_conf=self._update_history, loss_fn=combined_loss, purify_fn=purify)

    def sft_step(self, model, inputs: dict[str, torch.Tensor]) -> dict[str, Any]:
        """The control arm: CE on the answer tokens, same LoRA, same logits_to_keep slicing."""
        return _step.sft_step(model, inputs, teacher=self.accelerator.unwrap_model(model))

    def _update_history(self, conf: torch.Tensor, valid: torch.Tensor) -> None:
        """Append this micro-batch's confidences of ALL ranks (accelerate gather), so every rank keeps the same
        history and picks the same thresholds."""
        vals = torch.where(valid, conf.float(), torch.full_like(conf.float(), float("nan")))
        if self.accelerator.num_processes > 1:
            vals = self.accelerator.gather(self.accelerator.pad_across_processes(vals, pad_index=float("nan")))
        self.beta_schedule.update(vals)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        out = self.seed_step(model, inputs) if self.cfg.method == "seed" else self.sft_step(model, inputs)
        loss = out["loss"]
        finite = bool(torch.isfinite(loss.detach()))
        self.step_acc.add(out["parts"], int(inputs["input_ids"].shape[0]), out["beta"], out["conf"], finite)
        if self.record_step_outputs:
            self.last_step = {k: (v.detach().clone() if isinstance(v, torch.Tensor) else v) for k, v in out.items()}
        if not finite:
            # Keep the graph (DDP needs every rank to run backward) but contribute nothing; the SeedMonitor drops
            # this step's gradients before the optimizer step.
            loss = torch.nan_to_num(out["student"], nan=0.0, posinf=0.0, neginf=0.0).sum() * 0.0
        return (loss, out) if return_outputs else loss

    # -- logging ---------------------------------------------------------------------------------------------------
    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:
            logs.update(self.monitor.log_fields())
        super().log(logs, start_time)

    # -- saving ----------------------------------------------------------------------------------------------------
    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        """Adapter only (peft's adapter_config.json + adapter_model.safetensors) + seedvlm_base.json + the config.
        No training_args.bin: nothing in a checkpoint needs unpickling beyond transformers' own weights_only loads."""
        output_dir = output_dir or self.args.output_dir
        if not self.args.should_save:
            return
        os.makedirs(output_dir, exist_ok=True)
        model = self.accelerator.unwrap_model(self.model, keep_torch_compile=False)
        model.save_pretrained(output_dir, state_dict=state_dict, safe_serialization=True)
        from seedvlm.models.loading import BASE_FINGERPRINT_FILE

        write_json(Path(output_dir) / BASE_FINGERPRINT_FILE, {"fingerprint": self.base_fp})
        write_json(Path(output_dir) / CONFIG_FILE, dataclasses.asdict(self.cfg))

    def _save_checkpoint(self, model, trial) -> None:
        """Write checkpoint-N into `.checkpoint-N.tmp`, then rename: a crash mid-save never leaves a half
        checkpoint where `--resume` would find it (the previous one stays intact)."""
        run_dir = Path(self.args.output_dir)
        name = f"{CHECKPOINT_PREFIX}-{self.state.global_step}"
        final, tmp = run_dir / name, run_dir / f".{name}.tmp"
        if self.args.should_save:
            for stale in run_dir.glob(f".{CHECKPOINT_PREFIX}-*.tmp"):  # left by a crash mid-save
                shutil.rmtree(stale, ignore_errors=True)
        self.accelerator.wait_for_everyone()
        self.store_flos()
        self.save_model(str(tmp), _internal_call=True)
        if not self.args.save_only_model:
            self._save_optimizer_and_scheduler(str(tmp))
            self._save_scaler(str(tmp))
            self._save_rng_state(str(tmp))
        if self.args.should_save:
            save_seed_state(tmp, self.beta_schedule, self.monitor)
            self.state.save_to_json(str(tmp / "trainer_state.json"))
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            if final.exists():
                old = run_dir / f".{name}.old"
                shutil.rmtree(old, ignore_errors=True)
                os.replace(final, old)
                os.replace(tmp, final)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, final)
            rotate_checkpoints(output_dir=str(run_dir), save_total_limit=self.args.save_total_limit,
                               use_mtime=False)
        self.accelerator.wait_for_everyone()

    def save_adapter(self, folder: str | Path) -> Path:
        """The final adapter (with seedvlm_base.json and the config), written atomically."""
        folder = Path(folder)
        if self.args.should_save:
            with atomic_path(folder) as tmp:
                self._save(str(tmp))
        self.accelerator.wait_for_everyone()
        return folder

    # -- resuming --------------------------------------------------------------------------------------------------
    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        check_checkpoint(resume_from_checkpoint, self.base_fp, self.cfg)
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        load_seed_state(resume_from_checkpoint, self.beta_schedule, self.monitor)


# --------------------------------------------------------------------------------------------------------------
# Building and running
# --------------------------------------------------------------------------------------------------------------


def check_checkpoint(folder: str | Path, base_fp: str, cfg: TrainConfig) -> None:
    """A checkpoint may only resume a run of the same method on the same base model."""
    from seedvlm.models.loading import BASE_FINGERPRINT_FILE

    folder = Path(folder)
    if not (folder / "trainer_state.json").is_file() or not (folder / "adapter_model.safetensors").is_file():
        raise SeedVLMError(f"not a training checkpoint (no trainer_state.json / adapter_model.safetensors): {folder}")
    fp = folder / BASE_FINGERPRINT_FILE
    if fp.is_file():
        want = read_json(fp, "checkpoint base fingerprint").get("fingerprint")
        if want != base_fp:
            raise SeedVLMError(f"checkpoint {folder} was trained on a different base model (fingerprint {want}, "
                               f"this base {base_fp}); resume with the model it was trained from")
    saved = folder / CONFIG_FILE
    if saved.is_file():
        old = read_json(saved, "checkpoint config")
        if old.get("method") != cfg.method:
            raise SeedVLMError(f"checkpoint {folder} is from a method={old.get('method')} run; this run is "
                               f"method={cfg.method}")
        now = dataclasses.asdict(cfg)
        changed = sorted(k for k in now if k in old and old[k] != now[k] and k not in ("output_dir",))
        if changed:
            log.warning("resuming with changed options (the run is no longer one uninterrupted run): %s",
                        ", ".join(f"{k}: {old[k]!r} -> {now[k]!r}" for k in changed))


def resolve_resume(resume: str | None, output_dir: str | Path) -> str | None:
    """`--resume DIR` -> DIR (must be a checkpoint); `--resume auto` -> the latest checkpoint-N in output_dir, or
    None (a fresh start) when there is none yet."""
    if not resume:
        return None
    if resume == "auto":
        out = Path(output_dir)
        last = get_last_checkpoint(str(out)) if out.is_dir() else None
        if last is None:
            log.info("--resume auto: no checkpoint in %s yet; starting from step 0", out)
        return last
    p = Path(resume)
    if not p.is_dir():
        raise SeedVLMError(f"--resume: checkpoint folder not found: {p}")
    return str(p)


def build_training_args(cfg: TrainConfig, **overrides) -> TrainingArguments:
    """TrainConfig -> transformers TrainingArguments (the parts the Trainer's own loop uses)."""
    from transformers.integrations import is_tensorboard_available

    cuda = torch.cuda.is_available()
    dtype = resolve_dtype(cfg.dtype)
    report = cfg.report_to
    if report == "auto":
        report = "tensorboard" if is_tensorboard_available() else "none"
    kw = dict(
        output_dir=cfg.output_dir,
        per_device_train_batch_size=cfg.per_device_batch_size,
        gradient_accumulation_steps=cfg.grad_accumulation,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=cfg.warmup_steps if cfg.warmup_steps > 0 else cfg.warmup_ratio,
        num_train_epochs=cfg.num_epochs,
        max_steps=cfg.max_steps,
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        optim="adamw_torch_fused" if cuda else "adamw_torch",
        seed=cfg.seed,
        data_seed=cfg.seed,
        bf16=dtype == torch.bfloat16,
        fp16=dtype == torch.float16,
        use_cpu=not cuda,
        activation_checkpointing=cfg.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if cfg.gradient_checkpointing else None,
        logging_steps=cfg.logging_steps,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        report_to=report,
        remove_unused_columns=False,
        dataloader_num_workers=cfg.num_workers,
        dataloader_pin_memory=cuda,
        logging_nan_inf_filter=False,
        disable_tqdm=False,
    )
    kw.update(overrides)
    return TrainingArguments(**kw)


def _prepare_output_dir(cfg: TrainConfig, resume: str | None, is_main: bool) -> None:
    """A fresh run refuses an output_dir that holds an earlier run (every rank checks; rank 0 clears it when
    overwrite_output_dir is set)."""
    out = Path(cfg.output_dir)
    if resume is not None or not out.is_dir():
        return
    old = sorted(p for p in out.iterdir() if p.name.startswith(f"{CHECKPOINT_PREFIX}-") or p.name == "metrics.jsonl")
    if not old:
        return
    if not cfg.overwrite_output_dir:
        raise SeedVLMError(f"output_dir {out} already holds a run ({old[0].name}, ...); continue it with "
                           f"--resume auto, or start afresh with --overwrite-output-dir true or another output_dir")
    if is_main:
        for p in old:
            shutil.rmtree(p) if p.is_dir() else p.unlink()


def build_trainer(cfg: TrainConfig, resume: str | None = None, callbacks: Sequence = (),
                  **arg_overrides) -> SeedTrainer:
    """Model + LoRA + data + TrainingArguments -> a ready SeedTrainer (also writes train_config.json and
    train_manifest.json to output_dir)."""
    from transformers import LlavaConfig, set_seed

    from seedvlm.data.dataset import Collator, InstructDataset, load_records, model_context_length
    from seedvlm.models import base_fingerprint, check_model_dir, load_model, load_processor
    from seedvlm.train.lora import apply_lora

    cfg.require_paths()
    args = build_training_args(cfg, **arg_overrides)
    _prepare_output_dir(cfg, resume, args.should_save)
    # The data is checked (lengths, images) before the weights load: a bad record fails in seconds, not after
    # loading 14 GB.
    check_model_dir(cfg.model)
    processor = load_processor(cfg.model)
    context = model_context_length(LlavaConfig.from_pretrained(cfg.model, local_files_only=True))
    max_length = cfg.max_length or context
    if max_length > context:
        raise SeedVLMError(f"max_length {max_length} exceeds the model's context ({context} positions)")
    records = load_records(cfg.data)
    if cfg.max_samples is not None:
        records = records[: cfg.max_samples]
    dataset = InstructDataset(records, processor, cfg.images, max_length, source=str(cfg.data))
    set_seed(cfg.seed)
    model = load_model(cfg.model, device="cpu", dtype=resolve_dtype(cfg.dtype),
                       attn_implementation=cfg.attn_implementation)
    fp = base_fingerprint(model)
    cache = None
    if cfg.teacher_cache:
        from seedvlm.train.teacher_cache import open_cache

        cache = open_cache(cfg.teacher_cache, cfg, fp, len(dataset))
    model.config.use_cache = False
    model.config.text_config.use_cache = False  # else every training forward builds a KV cache (transformers 5.24)
    model = apply_lora(model, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_targets)
    if cfg.gradient_checkpointing:
        # The Trainer turns checkpointing on (non-reentrant, see build_training_args); input grads make the
        # reentrant variant work too when a user passes use_reentrant=True (the frozen embeddings give none).
        model.enable_input_require_grads()
    if cfg.torch_compile:
        from seedvlm.train.step import compile_layers

        compile_layers(model)
    if args.should_save:
        write_json(Path(cfg.output_dir) / CONFIG_FILE, dataclasses.asdict(cfg))
        write_json(Path(cfg.output_dir) / MANIFEST_FILE, {
            "images": dataset.image_names, "data": str(cfg.data), "images_dir": str(cfg.images),
            "n_records": len(dataset)})
    trainer = SeedTrainer(model=model, args=args, seed_config=cfg, train_dataset=dataset,
                          data_collator=Collator(processor.tokenizer.pad_token_id), base_fingerprint=fp,
                          lengths=dataset.lengths, callbacks=list(callbacks), teacher_cache=cache)
    trainer.processor = processor
    return trainer


def run_training(cfg: TrainConfig, resume: str | None = None, callbacks: Sequence = (),
                 **arg_overrides) -> dict[str, Any]:
    """Train (or resume) and write the final adapter to output_dir/adapter. Returns paths and the last step."""
    resume = resolve_resume(resume, cfg.output_dir)
    trainer = build_trainer(cfg, resume=resume, callbacks=callbacks, **arg_overrides)
    trainer.train(resume_from_checkpoint=resume)
    out = Path(cfg.output_dir)
    adapter = trainer.save_adapter(out / ADAPTER_DIR)
    return {"adapter": str(adapter), "metrics": str(out / "metrics.jsonl"), "global_step": trainer.state.global_step,
            "nan_steps": trainer.monitor.nan_steps, "trainer": trainer}
