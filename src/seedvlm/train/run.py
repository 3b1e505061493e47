"""Setting up and running one training run: output folder, data, model + LoRA, the SeedTrainer, and the final adapter.

    result = run_training(load_config(SeedConfig, "configs/seed_tiny.yaml", ["--output-dir", "runs/seed"]))

what `seedvlm train` calls (docs/training.md).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

from transformers import set_seed

from seedvlm.data.dataset import Collator, load_train_data
from seedvlm.data.image_ids import image_identity
from seedvlm.errors import SeedVLMError
from seedvlm.io import write_json
from seedvlm.models import base_fingerprint, load_model
from seedvlm.models.dtypes import resolve_dtype
from seedvlm.models.families.options import check_model_options, given_options
from seedvlm.models.families.registry import model_family
from seedvlm.outputs import check_dir_target, stash_run
from seedvlm.train.checkpoints import (ADAPTER_DIR, CHECKPOINT_PREFIX, CONFIG_FILE, MANIFEST_FILE, finished_step,
                                       resolve_resume)
from seedvlm.train.config import SeedConfig
from seedvlm.train import step as train_step
from seedvlm.train.lora import apply_lora
from seedvlm.train.teacher_cache import open_cache
from seedvlm.train.trainer import SeedTrainer

log = logging.getLogger("seedvlm.train")


def prepare_output_dir(cfg: SeedConfig, resume: str | None, is_main: bool, restart: bool = False) -> None:
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


def one_process_per_gpu(cfg: SeedConfig) -> None:
    """Without a launcher the Trainer would wrap the model in torch.nn.DataParallel over all visible GPUs; the
    teacher pass and the b history assume one process per GPU, so such a run trains on one GPU."""
    if cfg.parallel_mode.value == "not_distributed" and cfg.n_gpu > 1:
        log.warning("%d GPUs visible but one process: training on one GPU. For several, launch with "
                    "`accelerate launch --config_file configs/accelerate/multi_gpu.yaml -m seedvlm train ...` "
                    "(docs/distributed.md)", cfg.n_gpu)
        cfg._n_gpu = 1


def build_trainer(cfg: SeedConfig, resume: str | None = None, callbacks: Sequence = (),
                  restart: bool = False) -> SeedTrainer:
    """Model + LoRA + data -> a ready SeedTrainer (also writes train_config.json and train_manifest.json to
    output_dir). `restart`: see `prepare_output_dir`. Folders of other families than LLaVA-1.5 go through
    `train.family_run.build_family_trainer`."""
    cfg.require_paths()
    check_model_options(cfg.model, given_options(cfg))  # e.g. --max-pixels for a LLaVA folder: refused here
    family = model_family(cfg.model)
    if family is not None:
        from seedvlm.train import family_run

        family_run.check_family_options(cfg, family)
    one_process_per_gpu(cfg)
    prepare_output_dir(cfg, resume, cfg.should_save, restart=restart)
    if family is not None:
        return family_run.build_family_trainer(cfg, family, callbacks=callbacks)
    # The data is checked (lengths, images) before the weights load: a bad record fails in seconds, not after
    # loading 14 GB.
    processor, dataset, _ = load_train_data(cfg)
    set_seed(cfg.seed)
    model = load_model(cfg.model, device="cpu", dtype=resolve_dtype(cfg.dtype),
                       attn_implementation=cfg.attn_implementation)
    fp = base_fingerprint(model)
    cache = open_cache(cfg.teacher_cache, cfg, fp, len(dataset)) if cfg.teacher_cache else None
    model.config.use_cache = False
    model.config.text_config.use_cache = False  # else every training forward builds a KV cache (transformers 5.24)
    model = apply_lora(model, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_target_modules)
    if cfg.activation_checkpointing:
        # The Trainer turns checkpointing on (non-reentrant, see SeedConfig); input grads make the reentrant
        # variant work too when a user passes use_reentrant=True (the frozen embeddings give none).
        model.enable_input_require_grads()
    if cfg.compile_layers:
        # LM (+ vision tower) layers, dynamic shapes as the config says
        train_step.compile_layers(model, **train_step.compile_options(cfg))
    if cfg.should_save:
        write_json(Path(cfg.output_dir) / CONFIG_FILE, cfg.to_dict())
        write_json(Path(cfg.output_dir) / MANIFEST_FILE, {
            "images": dataset.image_names, "data": str(cfg.data), "images_dir": str(cfg.images),
            "n_records": len(dataset), **image_identity(dataset.image_names, cfg.images)})
    trainer = SeedTrainer(model=model, args=cfg, train_dataset=dataset,
                          data_collator=Collator(processor.tokenizer.pad_token_id), base_fingerprint=fp,
                          lengths=dataset.lengths, callbacks=list(callbacks), teacher_cache=cache)
    trainer.processor = processor
    return trainer


def run_training(cfg: SeedConfig, resume: str | None = None, callbacks: Sequence = ()) -> dict[str, Any]:
    """Train (or resume) and write the final adapter to output_dir/adapter. Returns paths and the last step."""
    restart = resume == "auto"
    resume = resolve_resume(resume, cfg.output_dir)
    trainer = build_trainer(cfg, resume=resume, callbacks=callbacks, restart=restart and resume is None)
    done = finished_step(resume, cfg.max_steps)
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
