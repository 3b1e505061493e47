"""SEED training (and the SFT control arm) as a `transformers.Trainer` subclass: the sampler, the loss, the logging.

The Trainer brings the loop: gradient accumulation, AdamW, the cosine schedule with warmup, mixed precision,
checkpoint/resume with RNG state, tqdm and TensorBoard, and `accelerate launch` for several GPUs. This class adds:
- `compute_loss`: one SEED step (`seedvlm.train.step.seed_step`), or plain CE for `method: sft`:
    teacher = the same peft model with its adapter disabled, no grad, on clean AND noisy pixels in one forward of
    a 2B batch (noise per sample from (seed, dataset index, global step));
    logits only at the answer positions (`logits_to_keep` = the (B, L) bool answer mask: lm_head runs on N rows);
    conf from the clean teacher -> b from `BetaSchedule` (history gathered across ranks) -> purify -> combined_loss;
- the length-grouped sampler over the global batch, the NaN/Inf guard and the per-step metrics (callbacks.py);
- the Trainer's save/load hooks, delegating to train/checkpoints.py (atomic checkpoints, resume checks) and
  train/fsdp.py (the adapter and its optimizer state gathered out of a sharded model).
Its arguments are a `SeedConfig` (train/config.py); train/run.py builds and runs it (see docs/training.md).
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any, Sequence

import torch
from transformers import ProgressCallback, Trainer

from seedvlm import seed as S
from seedvlm.io import atomic_path
from seedvlm.train import checkpoints as ckpt
from seedvlm.train import fsdp
from seedvlm.outputs import commits_overwrite, guard_checkpoint_save
from seedvlm.train.callbacks import (SeedMonitor, SeedProgressCallback, StepAccumulator, load_seed_state,
                                     save_seed_state)
from seedvlm.train.config import SeedConfig
from seedvlm.train.fsdp import ForwardThrough
from seedvlm.train import step as _step
from seedvlm.train.teacher import LiveTeacher, Teacher

log = logging.getLogger("seedvlm.train")
# transformers' own Trainer calls its deprecated `is_gradient_checkpointing`; not ours to fix, and noise in every run.
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)

# Referenced through the module so that tests can wrap them (e.g. to inject a NaN).
combined_loss = S.combined_loss
purify = S.purify


# --------------------------------------------------------------------------------------------------------------
# Data parallelism: the b history in the global sample order, the teacher forward under FSDP
# --------------------------------------------------------------------------------------------------------------


class RankOrderedBeta:
    """The b of one micro-batch as ONE process running the same batches one after another would pick it.

    accelerate deals the sampler's batches round-robin (rank r of N gets global batches r, r+N, r+2N, ...), so in
    the global order rank r's micro-batch comes right after those of ranks 0..r-1 of the same micro-step. Calling
    this object (`(conf, step) -> b`, as `seedvlm.train.step.seed_batch` calls a BetaSchedule) gathers the
    micro-step's confidences of all ranks (accelerate `gather`, one collective of B floats per rank), picks b with
    the history plus the lower ranks' confidences (`BetaSchedule(..., pending=...)`), and `update` then appends all
    ranks' confidences in rank order. Every rank so holds the same history (hence the same thresholds), equal to
    that of one process running per_device_batch_size x grad_accumulation x N with grad_accumulation x N
    micro-batches. Samples without answer rows (valid False) count in neither.
    """

    def __init__(self, schedule: S.BetaSchedule, accelerator, mask: torch.Tensor) -> None:
        self.schedule, self.accelerator = schedule, accelerator
        self.valid = mask.any(dim=1)
        self.everyone: torch.Tensor | None = None

    def __call__(self, conf: torch.Tensor, step: int = 0) -> torch.Tensor:
        c = conf.detach().float()
        vals = torch.where(self.valid.to(c.device), c, torch.full_like(c, float("nan")))
        n, rank = self.accelerator.num_processes, self.accelerator.process_index
        if n == 1:
            self.everyone = vals
            return self.schedule(conf, step)
        self.everyone = self.accelerator.gather(self.accelerator.pad_across_processes(vals, pad_index=float("nan")))
        pending = self.everyone.reshape(n, -1)[:rank].reshape(-1)
        return self.schedule(conf, step, pending=pending)

    def update(self, conf: torch.Tensor, valid: torch.Tensor) -> None:
        """Append the micro-step's confidences of all ranks (NaN = padding or no answer rows: skipped)."""
        if self.everyone is None:  # called without __call__: this rank's own values only
            self.schedule.update(conf, valid)
            return
        self.schedule.update(self.everyone)


# --------------------------------------------------------------------------------------------------------------
# The trainer
# --------------------------------------------------------------------------------------------------------------


class SeedTrainer(Trainer):
    """`transformers.Trainer` with the SEED step (or CE only), atomic checkpoints and the reference implementation's
    log line."""

    # the student's answer-row logits from a batch (`step.student_rows`; a model family may bring its own)
    student_fn = staticmethod(_step.student_rows)

    def __init__(self, model, args: SeedConfig, train_dataset, data_collator, base_fingerprint: str,
                 lengths: Sequence[int] | None = None, teacher_cache=None, **kwargs):
        super().__init__(model=model, args=args, train_dataset=train_dataset, data_collator=data_collator, **kwargs)
        self.cfg = args
        self.base_fp = base_fingerprint
        self.lengths = list(lengths) if lengths is not None else None
        self.teacher_cache = teacher_cache  # a teacher_cache.TeacherCache: no teacher forward (seedvlm teach)
        self.loss_is_scaled_for_ga = False  # compute_loss returns a per-micro-batch mean
        self.model_accepts_loss_kwargs = False
        self.step_acc = StepAccumulator()
        c = args
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
        if self.args.train_sampling_strategy == "group_by_length" and self.lengths is not None:
            from seedvlm.data.dataset import LengthGroupedSampler

            # Megabatches of the GLOBAL batch: the sampler yields one order that accelerate deals out to the ranks,
            # so the order (and each optimizer step's samples) is the same on any number of processes.
            global_batch = self.args.train_batch_size * self.args.gradient_accumulation_steps * self.args.world_size
            return LengthGroupedSampler(self.lengths, global_batch,
                                        seed=self.args.data_seed if self.args.data_seed is not None else self.args.seed)
        return super()._get_train_sampler(train_dataset)

    def _get_grad_norm(self, model, grad_norm=None):
        # transformers computes the global gradient norm before every optimizer step (clipping or not); the NaN
        # guard reads it (SeedMonitor.on_pre_optimizer_step) instead of scanning every gradient again
        self.last_grad_norm = super()._get_grad_norm(model, grad_norm=grad_norm)
        return self.last_grad_norm

    # -- the step --------------------------------------------------------------------------------------------------
    def seed_step(self, model, inputs: dict[str, torch.Tensor]) -> _step.StepOutput:
        """One SEED micro-batch (`seedvlm.train.step.seed_batch`, the code benchmarks/train_step.py times), with b
        picked in the global sample order across ranks (`RankOrderedBeta`)."""
        if self.beta_schedule.kind == "curriculum":
            self.beta_schedule.total_steps = max(int(self.state.max_steps), 1)
        answers = S.answer_positions(inputs["labels"])
        ordered = RankOrderedBeta(self.beta_schedule, self.accelerator, answers[0])
        return _step.seed_batch(model, inputs, self.cfg, teacher=self._teacher(model),
                                step=int(self.state.global_step), beta_schedule=ordered,
                                base=self.accelerator.unwrap_model(model), answers=answers,
                                loss_fn=combined_loss, purify_fn=purify, student_fn=self.student_fn)

    def _teacher(self, model) -> Teacher:
        """The teacher cache when there is one, else the bare peft model with its adapter disabled (`LiveTeacher`).
        Under FSDP1 the bare module's parameters are shards and only the FSDP wrapper's forward gathers them, so
        there the forward goes through the wrapper (`ForwardThrough`) and the student runs its own vision tower
        (the bare module's features would come from shards); under DDP the bare module is enough (no gradient, so
        no DDP hook is needed) and skips DDP's per-forward work. FSDP2 shards in place (the bare module is the
        wrapped one)."""
        if self.teacher_cache is not None:
            return self.teacher_cache
        return LiveTeacher(self.teacher_model(model), self.cfg, patch_size=self.patch_size,
                           reuse_features=self.cfg.reuse_image_features and not self.is_fsdp_enabled)

    def teacher_model(self, model):
        """The model the teacher runs: the bare peft model, or under FSDP1 one whose forward goes through the
        wrapper (`_teacher`)."""
        bare = self.accelerator.unwrap_model(model)
        if self.is_fsdp_enabled and bare is not model:
            bare = ForwardThrough(bare, model)
        return bare

    def sft_step(self, model, inputs: dict[str, torch.Tensor]) -> _step.StepOutput:
        """The control arm: CE on the answer tokens, same LoRA, same logits_to_keep slicing."""
        return _step.sft_step(model, inputs, base=self.accelerator.unwrap_model(model), student_fn=self.student_fn)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        out = self.seed_step(model, inputs) if self.cfg.method == "seed" else self.sft_step(model, inputs)
        loss = out.loss
        finite = bool(torch.isfinite(loss.detach()))
        self.step_acc.add(out.parts, int(inputs["input_ids"].shape[0]), out.beta, out.conf, finite)
        if not finite:
            # Keep the graph (DDP needs every rank to run backward) but contribute nothing; the SeedMonitor drops
            # this step's gradients before the optimizer step.
            loss = torch.nan_to_num(out.student, nan=0.0, posinf=0.0, neginf=0.0).sum() * 0.0
        return (loss, out) if return_outputs else loss

    # -- logging ---------------------------------------------------------------------------------------------------
    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:
            logs.update(self.monitor.log_fields())
        super().log(logs, start_time)

    # -- saving and resuming (the files: train/checkpoints.py; under FSDP: train/fsdp.py) --------------------------
    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        """Adapter only (peft's adapter_config.json + adapter_model.safetensors) + seedvlm_base.json + the config.
        No training_args.bin: nothing in a checkpoint needs unpickling beyond transformers' own weights_only loads."""
        output_dir = output_dir or self.args.output_dir
        if not self.args.should_save:
            return
        os.makedirs(output_dir, exist_ok=True)
        model = self.accelerator.unwrap_model(self.model, keep_torch_compile=False)
        if self.is_fsdp_enabled and state_dict is not None:
            fsdp.write_gathered_adapter(model, state_dict, output_dir)
        else:
            model.save_pretrained(output_dir, state_dict=state_dict, safe_serialization=True)
        ckpt.write_adapter_extras(output_dir, self.base_fp, self.cfg.to_dict())

    @guard_checkpoint_save
    def _save_checkpoint(self, model, trial) -> None:
        """Write checkpoint-N into `.checkpoint-N.tmp`, then rename: a crash mid-save never leaves a half
        checkpoint where `--resume` would find it (the previous one stays intact)."""
        run_dir = Path(self.args.output_dir)
        name = f"{ckpt.CHECKPOINT_PREFIX}-{self.state.global_step}"
        final, tmp = run_dir / name, run_dir / f".{name}.tmp"
        if self.args.should_save:
            ckpt.remove_stale(run_dir)
        self.accelerator.wait_for_everyone()
        self.store_flos()
        self.save_model(str(tmp), _internal_call=True)
        if not self.args.save_only_model:
            self._save_optimizer_and_scheduler(str(tmp))
            self._save_scaler(str(tmp))
            self._save_rng_state(str(tmp))
        if self.args.should_save:
            save_seed_state(tmp, self.beta_schedule, self.monitor, data=self.data_position())
            self.state.save_to_json(str(tmp / "trainer_state.json"))
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            ckpt.swap_in(tmp, final, self.args.save_total_limit)
        self.accelerator.wait_for_everyone()

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Under FSDP: every rank joins the gather of the adapter's weights (LoRA only), rank 0 writes them
        (transformers' own FSDP path writes nothing here with SHARDED_STATE_DICT, or the whole base with
        FULL_STATE_DICT). Otherwise transformers' save_model (-> `_save` on rank 0)."""
        if self.is_fsdp_enabled:
            self._save(output_dir or self.args.output_dir, state_dict=self._sharded_adapter_state())
            return
        super().save_model(output_dir, _internal_call)

    def _sharded_adapter_state(self) -> dict[str, torch.Tensor] | None:
        """The gathered LoRA weights of an FSDP-wrapped model (every rank calls it); None when not sharded."""
        if not self.is_fsdp_enabled:
            return None
        return fsdp.gather_adapter_state(self.model_wrapped, on_cpu=self.args.device.type == "cpu")

    @commits_overwrite
    def save_adapter(self, folder: str | Path) -> Path:
        """The final adapter (with seedvlm_base.json and the config), written atomically. Every rank calls it (under
        FSDP the weights are gathered first); rank 0 writes."""
        folder = Path(folder)
        state_dict = self._sharded_adapter_state()
        if self.args.should_save:
            with atomic_path(folder) as tmp:
                self._save(str(tmp), state_dict=state_dict)
        self.accelerator.wait_for_everyone()
        return folder

    def data_position(self) -> dict[str, int]:
        """Where the run is in its data (`checkpoints.data_position`)."""
        return ckpt.data_position(self.args, self.state.global_step)

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        """Under FSDP: the AdamW state of the LoRA weights gathered in full (`fsdp.save_optimizer_state`)."""
        if not self.is_fsdp_enabled:
            super()._save_optimizer_and_scheduler(output_dir)
            return
        fsdp.save_optimizer_state(self.model_wrapped, self.optimizer, self.lr_scheduler, output_dir,
                                  on_cpu=self.args.device.type == "cpu", write=self.args.should_save)

    def _load_optimizer_and_scheduler(self, checkpoint) -> None:
        """Under FSDP: what `_save_optimizer_and_scheduler` wrote (`fsdp.load_optimizer_state`)."""
        if not self.is_fsdp_enabled or checkpoint is None:
            super()._load_optimizer_and_scheduler(checkpoint)
            return
        fsdp.load_optimizer_state(self.model_wrapped, self.optimizer, self.lr_scheduler, checkpoint)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        ckpt.check_checkpoint(resume_from_checkpoint, self.base_fp, self.cfg)
        ckpt.check_data_position(resume_from_checkpoint, self.data_position()["global_batch_size"],
                                 self.args.world_size)
        if self.is_fsdp_enabled:
            wrapped = model if model is not None else self.model_wrapped
            fsdp.load_sharded_adapter(wrapped, self.accelerator.unwrap_model(wrapped).active_adapter,
                                      resume_from_checkpoint)
        else:
            super()._load_from_checkpoint(resume_from_checkpoint, model)
        load_seed_state(resume_from_checkpoint, self.beta_schedule, self.monitor)
