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
    accelerate launch --config_file configs/accelerate/multi_gpu.yaml --num_processes 4 -m seedvlm train \
        --config configs/seed_llava15_7b.yaml ...        # several GPUs, DDP (fsdp.yaml: FSDP; docs/distributed.md)
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import warnings
from pathlib import Path
from typing import Any, Sequence

import torch
from transformers import ProgressCallback, Trainer, TrainingArguments
from transformers.trainer_utils import get_last_checkpoint, rotate_checkpoints

from seedvlm import seed as S
from seedvlm.distributed import launched_world_size
from seedvlm.errors import SeedVLMError
from seedvlm.io import atomic_path, read_json, write_json
from seedvlm.outputs import check_dir_target, commits_overwrite, guard_checkpoint_save, stash_run
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
# Data parallelism: the b history in the global sample order, the teacher forward under FSDP
# --------------------------------------------------------------------------------------------------------------


class RankOrderedBeta:
    """The b of one micro-batch as ONE process running the same batches one after another would pick it.

    accelerate deals the sampler's batches round-robin (rank r of N gets global batches r, r+N, r+2N, ...), so in
    the global order rank r's micro-batch comes right after those of ranks 0..r-1 of the same micro-step. Calling
    this object (`(conf, step) -> b`, as `seedvlm.train.step.seed_step` calls a BetaSchedule) gathers the
    micro-step's confidences of all ranks (accelerate `gather`, one collective of B floats per rank), picks b with
    the history plus the lower ranks' confidences (`BetaSchedule(..., pending=...)`), and `record` then appends all
    ranks' confidences in rank order. Every rank so holds the same history (hence the same thresholds), equal to
    that of one process running per_device_batch_size x grad_accumulation x N with grad_accumulation x N
    micro-batches. Samples without answer rows (valid False) count in neither.
    """

    def __init__(self, schedule: S.BetaSchedule, accelerator, mask: torch.Tensor) -> None:
        self.schedule, self.accelerator = schedule, accelerator
        self.valid = mask.any(dim=1)
        self.kind = schedule.kind
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

    def record(self, conf: torch.Tensor, valid: torch.Tensor) -> None:
        """Append the micro-step's confidences of all ranks (NaN = padding or no answer rows: skipped)."""
        if self.everyone is None:  # called without __call__: this rank's own values only
            self.schedule.update(conf, valid)
            return
        self.schedule.update(self.everyone)


def write_gathered_adapter(model, state_dict: dict[str, torch.Tensor], folder: str | Path) -> None:
    """peft's adapter folder (adapter_config.json + adapter_model.safetensors, the keys peft's save_pretrained
    writes) from LoRA weights gathered out of an FSDP-wrapped model. peft's own save cannot take them: it picks its
    keys from the module names, which carry FSDP's `_fsdp_wrapped_module.` inside a wrapped model."""
    import copy

    from safetensors.torch import save_file

    name = model.active_adapter
    weights = {k.replace(f".{name}.", "."): v.detach().to("cpu").contiguous()
               for k, v in state_dict.items() if "lora_" in k}
    if not weights:
        raise SeedVLMError("no LoRA weights in the gathered FSDP state dict; nothing to save")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(weights, str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})
    config = copy.deepcopy(model.peft_config[name])
    config.inference_mode = True
    config.save_pretrained(str(folder))


def _torch_optimizer(optimizer):
    """The torch optimizer inside accelerate's AcceleratedOptimizer wrapper."""
    return getattr(optimizer, "optimizer", optimizer)


class ForwardThrough:
    """A peft model for everything (disable_adapter, eval/train, config, embeddings) except the forward itself,
    which runs through `wrapper` (an FSDP1 wrapper around it: only its forward gathers the sharded weights)."""

    def __init__(self, bare, wrapper) -> None:
        self._bare, self._wrapper = bare, wrapper

    def __call__(self, *args, **kwargs):
        return self._wrapper(*args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self._bare, name)


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
        ordered = RankOrderedBeta(self.beta_schedule, self.accelerator, S.answer_positions(inputs["labels"])[0])
        return _step.seed_step(model, inputs, self.cfg, step=int(self.state.global_step),
                               beta_schedule=ordered, teacher=self._teacher(model),
                               patch_size=self.patch_size, cache=self.teacher_cache,
                               record_conf=ordered.record, loss_fn=combined_loss, purify_fn=purify,
                               # FSDP: the bare module's parameters are shards outside the wrapper's forward
                               reuse_features=self.cfg.reuse_image_features and not self.is_fsdp_enabled)

    def _teacher(self, model):
        """The model the teacher pass runs through: the bare peft model (its adapter is what gets disabled).
        Under FSDP1 the bare module's parameters are shards and only the FSDP wrapper's forward gathers them, so
        there the forward goes through the wrapper (`ForwardThrough`); under DDP the bare module is enough (no
        gradient, so no DDP hook is needed) and skips DDP's per-forward work. FSDP2 shards in place (the bare
        module is the wrapped one)."""
        bare = self.accelerator.unwrap_model(model)
        if self.is_fsdp_enabled and bare is not model:
            return ForwardThrough(bare, model)
        return bare

    def sft_step(self, model, inputs: dict[str, torch.Tensor]) -> dict[str, Any]:
        """The control arm: CE on the answer tokens, same LoRA, same logits_to_keep slicing."""
        return _step.sft_step(model, inputs, teacher=self.accelerator.unwrap_model(model))

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
        if self.is_fsdp_enabled and state_dict is not None:
            write_gathered_adapter(model, state_dict, output_dir)
        else:
            model.save_pretrained(output_dir, state_dict=state_dict, safe_serialization=True)
        from seedvlm.models.loading import BASE_FINGERPRINT_FILE

        write_json(Path(output_dir) / BASE_FINGERPRINT_FILE, {"fingerprint": self.base_fp})
        write_json(Path(output_dir) / CONFIG_FILE, dataclasses.asdict(self.cfg))

    @guard_checkpoint_save
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
            save_seed_state(tmp, self.beta_schedule, self.monitor, data=self.data_position())
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

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Under FSDP: every rank joins the gather of the adapter's weights (LoRA only), rank 0 writes them
        (transformers' own FSDP path writes nothing here with SHARDED_STATE_DICT, or the whole base with
        FULL_STATE_DICT). Otherwise transformers' save_model (-> `_save` on rank 0)."""
        if self.is_fsdp_enabled:
            self._save(output_dir or self.args.output_dir, state_dict=self._sharded_adapter_state())
            return
        super().save_model(output_dir, _internal_call)

    def _sharded_adapter_state(self) -> dict[str, torch.Tensor] | None:
        """The trainable weights of an FSDP-wrapped model, gathered (a collective: every rank calls it); None when
        the model is not sharded. The frozen base is skipped (`ignore_frozen_params`)."""
        if not self.is_fsdp_enabled:
            return None
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        # cpu_offload (full tensors on rank 0's CPU only) is for GPUs; FSDP on the CPU (tests) keeps them in place.
        options = StateDictOptions(full_state_dict=True, ignore_frozen_params=True,
                                   cpu_offload=self.args.device.type != "cpu")
        return get_model_state_dict(self.model_wrapped, options=options)

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

    # -- resuming --------------------------------------------------------------------------------------------------
    def data_position(self) -> dict[str, int]:
        """Where the run is in its data, in samples: global_step x the global batch (per_device_batch_size x
        grad_accumulation x processes). transformers resumes by optimizer steps (each rank skips
        step x grad_accumulation of its batches), which lands on the same sample on any number of processes as
        long as the global batch is the same; `check_data_position` refuses a resume that changes it."""
        a = self.args
        global_batch = a.per_device_train_batch_size * a.gradient_accumulation_steps * a.world_size
        return {"global_batch_size": global_batch, "per_device_batch_size": a.per_device_train_batch_size,
                "grad_accumulation": a.gradient_accumulation_steps, "processes": a.world_size,
                "global_step": int(self.state.global_step), "samples": int(self.state.global_step) * global_batch}

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        """Under FSDP: the AdamW state gathered in full (torch's `get_optimizer_state_dict`: the moments of the LoRA
        weights only, ~0.8 GB at 13B with r=64) into optimizer.pt by rank 0, and the LR schedule; not transformers'
        sharded copy of the whole model (its only trainable part, the adapter, is what `save_model` wrote; the
        frozen base would add ~26 GB at 13B to every checkpoint). A full state loads on any number of processes."""
        if not self.is_fsdp_enabled:
            super()._save_optimizer_and_scheduler(output_dir)
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict
        from transformers.trainer import OPTIMIZER_NAME, SCHEDULER_NAME

        options = StateDictOptions(full_state_dict=True, cpu_offload=self.args.device.type != "cpu")
        state = get_optimizer_state_dict(self.model_wrapped, _torch_optimizer(self.optimizer), options=options)
        if self.args.should_save:
            torch.save(state, os.path.join(output_dir, OPTIMIZER_NAME))
            torch.save(self.lr_scheduler.state_dict(), os.path.join(output_dir, SCHEDULER_NAME))

    def _load_optimizer_and_scheduler(self, checkpoint) -> None:
        """Under FSDP: what `_save_optimizer_and_scheduler` wrote, read with `torch.load(weights_only=True)` by every
        rank and put in place by torch's `set_optimizer_state_dict`."""
        if not self.is_fsdp_enabled or checkpoint is None:
            super()._load_optimizer_and_scheduler(checkpoint)
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict
        from transformers.trainer import OPTIMIZER_NAME, SCHEDULER_NAME

        folder = Path(checkpoint)
        if not (folder / OPTIMIZER_NAME).is_file():
            raise SeedVLMError(f"checkpoint {folder} has no {OPTIMIZER_NAME}: not written by an FSDP run of seedvlm")
        state = torch.load(folder / OPTIMIZER_NAME, map_location="cpu", weights_only=True)
        set_optimizer_state_dict(self.model_wrapped, _torch_optimizer(self.optimizer), state,
                                 options=StateDictOptions(full_state_dict=True))
        self.lr_scheduler.load_state_dict(torch.load(folder / SCHEDULER_NAME, map_location="cpu", weights_only=True))

    def _load_sharded_adapter(self, folder: str | Path, wrapped) -> None:
        """Under FSDP: the checkpoint's adapter_model.safetensors into the sharded LoRA weights (every rank reads
        the file; torch's `set_model_state_dict` puts each rank's shard in place)."""
        import re

        from safetensors.torch import load_file
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        name = self.accelerator.unwrap_model(wrapped).active_adapter
        saved = load_file(str(Path(folder) / "adapter_model.safetensors"))
        # peft's files drop the adapter name: X.lora_A.weight -> X.lora_A.<name>.weight in the model
        state = {re.sub(r"\.(lora_[A-Za-z_]+)\.", rf".\1.{name}.", k, count=1): v for k, v in saved.items()}
        n_saved, trainable = len(state), sum(1 for p in wrapped.parameters() if p.requires_grad)
        result = set_model_state_dict(wrapped, state, options=StateDictOptions(full_state_dict=True, strict=False))
        unexpected = list(getattr(result, "unexpected_keys", []) or [])
        if unexpected or n_saved != trainable:
            raise SeedVLMError(f"checkpoint {folder}: its adapter ({n_saved} tensors) does not fit this model's "
                               f"{trainable} LoRA weights (unexpected: {unexpected[:3]})")

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        check_checkpoint(resume_from_checkpoint, self.base_fp, self.cfg)
        check_data_position(resume_from_checkpoint, self.data_position()["global_batch_size"], self.args.world_size)
        if self.is_fsdp_enabled:
            self._load_sharded_adapter(resume_from_checkpoint, model if model is not None else self.model_wrapped)
        else:
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


def check_data_position(folder: str | Path, global_batch: int, processes: int) -> None:
    """A resume must keep the global batch (transformers counts its data position in optimizer steps); the number
    of processes may change (set global_batch_size, and grad_accumulation follows)."""
    from seedvlm.train.callbacks import SEED_STATE_FILE

    p = Path(folder) / SEED_STATE_FILE
    data = read_json(p, "seedvlm checkpoint state").get("data") if p.is_file() else None
    if not isinstance(data, dict) or "global_batch_size" not in data:
        return  # a checkpoint written before the data position was recorded
    old = int(data["global_batch_size"])
    if old != global_batch:
        raise SeedVLMError(
            f"checkpoint {folder} was trained with a global batch of {old} samples per optimizer step "
            f"({data.get('per_device_batch_size')} per device x {data.get('grad_accumulation')} accumulation x "
            f"{data.get('processes')} processes); this run has {global_batch}. The data position and the LR schedule "
            f"count optimizer steps, so resume with the same global batch: --global-batch-size {old}")
    if int(data.get("processes", processes)) != processes:
        log.info("resuming a %s-process run on %d processes: same global batch %d, data position %s samples "
                 "(step %s); RNG states (LoRA dropout only) are not carried over", data.get("processes"), processes,
                 global_batch, data.get("samples"), data.get("global_step"))


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
        gradient_accumulation_steps=resolve_grad_accumulation(cfg, launched_world_size()),
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
        # DDP: every LoRA weight gets a gradient at every step, so no unused-parameter search after each backward.
        ddp_find_unused_parameters=False,
    )
    kw.update(overrides)
    args = TrainingArguments(**kw)
    if args.parallel_mode.value == "not_distributed" and args.n_gpu > 1:
        # Without a launcher the Trainer would wrap the model in torch.nn.DataParallel over all visible GPUs; the
        # teacher pass and the b history assume one process per GPU.
        log.warning("%d GPUs visible but one process: training on one GPU. For several, launch with "
                    "`accelerate launch --config_file configs/accelerate/multi_gpu.yaml -m seedvlm train ...` "
                    "(docs/distributed.md)", args.n_gpu)
        args._n_gpu = 1
    return args


def resolve_grad_accumulation(cfg: TrainConfig, world_size: int) -> int:
    """grad_accumulation, or with `global_batch_size` set: global_batch_size / (per_device_batch_size x
    world_size), which must divide exactly (so 1 and N processes take the same optimizer steps)."""
    if cfg.global_batch_size is None:
        return cfg.grad_accumulation
    per_micro_step = cfg.per_device_batch_size * world_size
    if cfg.global_batch_size % per_micro_step:
        raise SeedVLMError(f"global_batch_size {cfg.global_batch_size} is not a multiple of per_device_batch_size "
                           f"{cfg.per_device_batch_size} x {world_size} processes; choose a global batch or a "
                           f"per-device batch that divides it")
    accumulation = cfg.global_batch_size // per_micro_step
    if accumulation != cfg.grad_accumulation:
        log.info("global_batch_size %d = %d per device x %d processes x grad_accumulation %d (the config's "
                 "grad_accumulation %d is not used)", cfg.global_batch_size, cfg.per_device_batch_size, world_size,
                 accumulation, cfg.grad_accumulation)
    return accumulation


def _prepare_output_dir(cfg: TrainConfig, resume: str | None, is_main: bool, restart: bool = False) -> None:
    """A fresh run refuses an output_dir that holds an earlier run (every rank checks; rank 0 clears it when
    overwrite_output_dir is set). `restart`: `--resume auto` found no checkpoint, so a run stopped before its first
    one left only metrics behind: they are cleared and it starts again, as the user asked to continue it."""
    out = check_dir_target(cfg.output_dir, "output_dir", owns=lambda folder: True)
    if resume is not None or not out.is_dir():
        return
    old = sorted(p for p in out.iterdir() if p.name.startswith(f"{CHECKPOINT_PREFIX}-") or p.name == "metrics.jsonl")
    if not old:
        return
    if restart and not any(p.name.startswith(f"{CHECKPOINT_PREFIX}-") for p in old):
        log.info("--resume auto: the run in %s stopped before its first checkpoint; starting it again", out)
    elif not cfg.overwrite_output_dir:
        raise SeedVLMError(f"output_dir {out} already holds a run ({old[0].name}, ...); continue it with "
                           f"--resume auto, or start afresh with --overwrite-output-dir true or another output_dir")
    if is_main:
        stash_run(out)  # kept until the new run's first checkpoint; put back if it fails before


def build_trainer(cfg: TrainConfig, resume: str | None = None, callbacks: Sequence = (), restart: bool = False,
                  **arg_overrides) -> SeedTrainer:
    """Model + LoRA + data + TrainingArguments -> a ready SeedTrainer (also writes train_config.json and
    train_manifest.json to output_dir). `restart`: see `_prepare_output_dir`."""
    from transformers import set_seed

    from seedvlm.data.dataset import Collator, load_train_data
    from seedvlm.models import base_fingerprint, load_model
    from seedvlm.train.lora import apply_lora

    cfg.require_paths()
    args = build_training_args(cfg, **arg_overrides)
    _prepare_output_dir(cfg, resume, args.should_save, restart=restart)
    # The data is checked (lengths, images) before the weights load: a bad record fails in seconds, not after
    # loading 14 GB.
    processor, dataset, _ = load_train_data(cfg)
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
        from seedvlm.train.step import compile_layers, compile_options

        compile_layers(model, **compile_options(cfg))  # LM (+ vision tower) layers; dynamic from the config
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


def _finished_step(resume: str | None, cfg: TrainConfig) -> int | None:
    """The checkpoint's step if it already reached `max_steps` (a finished run resumed), else None."""
    if not resume or not cfg.max_steps or cfg.max_steps <= 0:
        return None
    state = Path(resume) / "trainer_state.json"
    if not state.is_file():
        return None
    step = int(json.loads(state.read_text()).get("global_step", 0))
    return step if step >= cfg.max_steps else None


def run_training(cfg: TrainConfig, resume: str | None = None, callbacks: Sequence = (),
                 **arg_overrides) -> dict[str, Any]:
    """Train (or resume) and write the final adapter to output_dir/adapter. Returns paths and the last step."""
    restart = resume == "auto"
    resume = resolve_resume(resume, cfg.output_dir)
    trainer = build_trainer(cfg, resume=resume, callbacks=callbacks, restart=restart and resume is None,
                            **arg_overrides)
    done = _finished_step(resume, cfg)
    if done is not None:
        # transformers' loop would run one more step from a checkpoint already at max_steps: load it and stop
        log.info("%s is already at step %d of %d: nothing left to train", resume, done, cfg.max_steps)
        trainer._load_from_checkpoint(resume)
        trainer.state.global_step = done
    else:
        trainer.train(resume_from_checkpoint=resume)
    out = Path(cfg.output_dir)
    adapter = trainer.save_adapter(out / ADAPTER_DIR)
    return {"adapter": str(adapter), "metrics": str(out / "metrics.jsonl"), "global_step": trainer.state.global_step,
            "nan_steps": trainer.monitor.nan_steps, "trainer": trainer}
