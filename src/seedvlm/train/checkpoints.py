"""A training run's files: atomic checkpoints, the adapter folder, and the checks before a resume (same method, same
base model, same global batch).

A checkpoint is written into `.checkpoint-N.tmp` and renamed when complete, so `--resume` never finds half of one;
it holds the peft adapter, seedvlm_base.json, the config used, seedvlm_state.json (the b history and the data
position) and transformers' optimizer, scheduler, RNG and trainer state.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

from transformers.trainer_utils import get_last_checkpoint, rotate_checkpoints

from seedvlm.errors import SeedVLMError
from seedvlm.io import read_json, write_json
from seedvlm.models.loading import BASE_FINGERPRINT_FILE
from seedvlm.train.callbacks import SEED_STATE_FILE

log = logging.getLogger("seedvlm.train")

CONFIG_FILE = "train_config.json"
MANIFEST_FILE = "train_manifest.json"
ADAPTER_DIR = "adapter"
CHECKPOINT_PREFIX = "checkpoint"

# options that may differ between an interrupted run and its resume without changing what it trains
_PER_LAUNCH = ("output_dir", "logging_dir", "run_name", "local_rank", "gradient_accumulation_steps", "report_to")


def write_adapter_extras(folder: str | Path, base_fp: str, config: dict) -> None:
    """Beside a saved adapter: the base model's fingerprint (an adapter refuses another base) and the config used."""
    write_json(Path(folder) / BASE_FINGERPRINT_FILE, {"fingerprint": base_fp})
    write_json(Path(folder) / CONFIG_FILE, config)


def remove_stale(run_dir: Path) -> None:
    """Temporary checkpoint folders left by a crash mid-save."""
    for stale in run_dir.glob(f".{CHECKPOINT_PREFIX}-*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)


def swap_in(tmp: Path, final: Path, save_total_limit: int | None) -> None:
    """A complete checkpoint folder renamed into place (replacing one of the same step), then the oldest ones
    beyond save_total_limit removed."""
    if final.exists():
        old = final.parent / f".{final.name}.old"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    rotate_checkpoints(output_dir=str(final.parent), save_total_limit=save_total_limit, use_mtime=False)


def data_position(args, global_step: int) -> dict[str, int]:
    """Where the run is in its data, in samples: global_step x the global batch (per-device batch x accumulation x
    processes). transformers resumes by optimizer steps (each rank skips step x accumulation of its batches), which
    lands on the same sample on any number of processes as long as the global batch is the same;
    `check_data_position` refuses a resume that changes it."""
    global_batch = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
    return {"global_batch_size": global_batch, "per_device_batch_size": args.per_device_train_batch_size,
            "grad_accumulation": args.gradient_accumulation_steps, "processes": args.world_size,
            "global_step": int(global_step), "samples": int(global_step) * global_batch}


def check_checkpoint(folder: str | Path, base_fp: str, cfg) -> None:
    """A checkpoint may only resume a run of the same method on the same base model."""
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
        old = cfg.migrate(old, str(saved), notify=False)  # a checkpoint of the previous release: its names
        now = cfg.to_dict()
        changed = sorted(k for k in now if k in old and old[k] != now[k] and k not in _PER_LAUNCH)
        if changed:
            log.warning("resuming with changed options (the run is no longer one uninterrupted run): %s",
                        ", ".join(f"{k}: {old[k]!r} -> {now[k]!r}" for k in changed))


def check_data_position(folder: str | Path, global_batch: int, processes: int) -> None:
    """A resume must keep the global batch (transformers counts its data position in optimizer steps); the number
    of processes may change (set global_batch_size, and the accumulation follows)."""
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


def finished_step(resume: str | None, max_steps: int) -> int | None:
    """The checkpoint's step if it already reached `max_steps` (a finished run resumed), else None."""
    if not resume or max_steps <= 0:
        return None
    state = Path(resume) / "trainer_state.json"
    if not state.is_file():
        return None
    step = int(json.loads(state.read_text()).get("global_step", 0))
    return step if step >= max_steps else None
