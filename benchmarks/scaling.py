"""Multi-GPU scaling of `seedvlm train` (SEED): samples/s on 1, 2, 4, ... GPUs, DDP or FSDP, random weights.

What runs is the real training path: `SeedTrainer` (compute_loss = the SEED step, the b history gathered across
ranks, the NaN guard, metrics) inside transformers' loop, wrapped by accelerate as the launcher's config says
(configs/accelerate/multi_gpu.yaml = DDP, fsdp.yaml = FSDP FULL_SHARD). Only the inputs are synthetic: every rank
builds the same random-weight model of a preset directly on its GPU in bf16 (seeded; no checkpoint on disk), a word
tokenizer, and synthetic records (a random 336 px image, an 18-word prompt, a 59-word answer + EOS: 576 image tokens
+ ~80 text tokens, train_step.py's sample) decoded by the same dataset/collator as training. No checkpoints are
written. Each rank times its optimizer steps (after --warmup steps) and reports; rank 0 prints one Markdown table row
and appends one JSON line to --out (every rank's numbers, the config, the GPUs, versions, git hash). Global
samples/s = global batch / median step time of rank 0 (the ranks wait for each other at every gradient all-reduce).
Scaling efficiency = samples/s on N GPUs / (N x samples/s on 1 GPU) when --out already holds the 1-GPU row of the
same preset, mode and micro-batch.

    # the table of docs/performance.md "Multi-GPU" (one H100/H200 node; each run < 4 min):
    accelerate launch --config_file configs/accelerate/single_gpu.yaml benchmarks/scaling.py --preset llava-1.5-7b --out runs/bench/scaling.jsonl
    accelerate launch --config_file configs/accelerate/multi_gpu.yaml --num_processes 2 benchmarks/scaling.py --preset llava-1.5-7b --out runs/bench/scaling.jsonl
    accelerate launch --config_file configs/accelerate/multi_gpu.yaml --num_processes 4 benchmarks/scaling.py --preset llava-1.5-7b --out runs/bench/scaling.jsonl
    # FSDP (FULL_SHARD) with the 13B architecture, micro-batch 8: too big for DDP on 80 GB cards
    accelerate launch --config_file configs/accelerate/fsdp.yaml --num_processes 4 benchmarks/scaling.py --preset llava-1.5-13b --out runs/bench/scaling.jsonl
    # CPU smoke test (2 gloo processes, tiny preset, ~1 min on 2 cores):
    OMP_NUM_THREADS=1 torchrun --standalone --nproc_per_node 2 benchmarks/scaling.py --preset tiny --batch-size 2 --steps 4 --warmup 1 --out /tmp/scaling_cpu.jsonl
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

from common import device_name, git_hash, random_llava
from seedvlm import distributed
from seedvlm.models import build_processor, build_word_tokenizer, num_image_tokens, preset_config
from seedvlm.train.config import TrainConfig

WORDS = [f"w{i}" for i in range(400)]
PROMPT_WORDS, ANSWER_WORDS = 18, 59  # + template + EOS: ~80 text tokens beside the image tokens, 60 answer tokens


class StepTimer(TrainerCallback):
    """Wall time of every optimizer step (the metrics' host sync each step makes it the GPU time too)."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.last: float | None = None

    def on_step_begin(self, args, state, control, **kwargs):
        if self.last is None:
            self.last = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        now = time.perf_counter()
        self.times.append(now - self.last)
        self.last = now


def build_model(preset: str, tokenizer, device: torch.device, dtype: torch.dtype, seed: int):
    """A random-weight LLaVA of the preset built directly on `device` in `dtype` (no fp32 copy: the 13B fits one
    card before FSDP shards it). Vocabulary size and layers are the preset's; the image token is the tokenizer's."""
    ids = dict(image_token_index=tokenizer.image_token_id, pad_token_id=tokenizer.pad_token_id,
               bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    if preset in ("tiny", "small"):
        ids["vocab_size"] = len(tokenizer)
    config = preset_config(preset, **ids)
    config._attn_implementation = "sdpa"
    config.use_cache = False
    return random_llava(config, device, dtype, seed), config


def write_data(folder: Path, image_size: int, n_records: int, n_images: int = 32) -> list[dict]:
    """n_images random PNGs and n_records records cycling over them (random words, fixed lengths)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n_images):
        Image.fromarray(rng.integers(0, 255, (image_size, image_size, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    words = np.array(WORDS)
    return [{"id": f"s{j}", "image": f"{j % n_images}.png",
             "prompt": " ".join(rng.choice(words, PROMPT_WORDS)), "answer": " ".join(rng.choice(words, ANSWER_WORDS))}
            for j in range(n_records)]


def baseline(out: Path, row: dict) -> float | None:
    """samples/s of the 1-GPU row with the same preset, mode, micro-batch and GPU name in `out`, if any."""
    if not out.is_file():
        return None
    best = None
    for line in out.read_text().splitlines():
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue
        if (r.get("processes") == 1 and r.get("preset") == row["preset"] and r.get("batch_size") == row["batch_size"]
                and r.get("gpu") == row["gpu"] and r.get("samples_per_s")):
            best = r["samples_per_s"]
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="llava-1.5-7b", help="tiny, small, llava-1.5-7b, llava-1.5-13b")
    ap.add_argument("--batch-size", type=int, default=8, help="micro-batch per GPU (default 8)")
    ap.add_argument("--grad-accumulation", type=int, default=1, help="micro-batches per step (default 1)")
    ap.add_argument("--steps", type=int, default=20, help="timed optimizer steps (default 20)")
    ap.add_argument("--warmup", type=int, default=4, help="untimed first steps (default 4)")
    ap.add_argument("--lora-r", type=int, default=64)
    ap.add_argument("--kl-chunk-size", type=int, default=512)
    ap.add_argument("--gradient-checkpointing", action="store_true")
    ap.add_argument("--num-workers", type=int, default=4, help="DataLoader workers per process (default 4)")
    ap.add_argument("--ddp-timeout", type=int, default=180,
                    help="seconds before a rank waiting on a dead peer (e.g. an OOM) gives up (default 180)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/bench/scaling.jsonl", help="JSON lines file to append to (rank 0)")
    ap.add_argument("--workdir", default=None, help="where the synthetic images go (default: a temp folder)")
    a = ap.parse_args(argv)

    from seedvlm.data.dataset import Collator, InstructDataset
    from seedvlm.train.lora import apply_lora
    from seedvlm.train.trainer import SeedTrainer

    rank, world = distributed.rank_world()
    cuda = torch.cuda.is_available()
    dtype = torch.bfloat16 if cuda else torch.float32
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}") if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    steps = a.warmup + a.steps
    global_batch = a.batch_size * a.grad_accumulation * world

    tok = build_word_tokenizer(WORDS, model_max_length=4096)
    t0 = time.perf_counter()
    model, config = build_model(a.preset, tok, device, dtype, a.seed)
    build_s = time.perf_counter() - t0
    processor = build_processor(tok, config)
    work = Path(a.workdir) if a.workdir else Path(tempfile.gettempdir()) / f"seedvlm_scaling_{os.getpid()}"
    records = write_data(work / f"images_rank{rank}", config.vision_config.image_size, global_batch * steps)
    dataset = InstructDataset(records, processor, work / f"images_rank{rank}",
                              config.text_config.max_position_embeddings, source="synthetic")

    cfg = TrainConfig(model="random", data="synthetic", images=str(work), output_dir=str(work / "run"),
                      overwrite_output_dir=True, method="seed", per_device_train_batch_size=a.batch_size,
                      gradient_accumulation_steps=a.grad_accumulation, max_steps=steps, learning_rate=2e-6,
                      lora_r=a.lora_r, lora_alpha=2 * a.lora_r, kl_chunk_size=a.kl_chunk_size,
                      activation_checkpointing=a.gradient_checkpointing, dtype="bf16" if cuda else "fp32",
                      logging_steps=10 ** 6, save_steps=10 ** 6, report_to="none",
                      dataloader_num_workers=a.num_workers, seed=a.seed, save_strategy="no",
                      ddp_timeout=a.ddp_timeout, disable_tqdm=rank != 0)
    model.config.use_cache = False
    n_params = sum(p.numel() for p in model.parameters())
    model = apply_lora(model, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_target_modules)
    timer = StepTimer()
    trainer = SeedTrainer(model=model, args=cfg, train_dataset=dataset,
                          data_collator=Collator(tok.pad_token_id), base_fingerprint="random",
                          lengths=dataset.lengths, callbacks=[timer])
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    trainer.train()
    times = timer.times[a.warmup:] or timer.times
    median = statistics.median(times)
    mine = {"rank": rank, "median_step_s": median, "samples_per_s": a.batch_size * a.grad_accumulation / median,
            "peak_gb": torch.cuda.max_memory_allocated(device) / 2 ** 30 if cuda else None,
            "steps_timed": len(times), "nan_steps": trainer.monitor.nan_steps}
    everyone = distributed.gather_lists([mine])
    if rank != 0:
        return 0

    mode = "fsdp" if trainer.is_fsdp_enabled else ("ddp" if world > 1 else "single")
    row = {"preset": a.preset, "mode": mode, "processes": world, "batch_size": a.batch_size,
           "grad_accumulation": a.grad_accumulation, "global_batch": global_batch,
           "samples_per_s": global_batch / median, "median_step_s": median,
           "peak_gb_max": max((r["peak_gb"] or 0.0) for r in everyone) if cuda else None,
           "ranks": everyone, "gpu": device_name(torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")), "image_tokens": num_image_tokens(config),
           "sample_tokens": int(statistics.mean(dataset.lengths)), "answer_tokens": ANSWER_WORDS + 1,
           "lora_r": a.lora_r, "gradient_checkpointing": a.gradient_checkpointing, "build_s": round(build_s, 1),
           "params_b": round(n_params / 1e9, 2),
           "torch": torch.__version__, "git": git_hash(),
           "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    out = Path(a.out)
    base = baseline(out, row)
    row["scaling_efficiency"] = (row["samples_per_s"] / (world * base)) if base and world > 1 else None
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
    eff = f"{row['scaling_efficiency']:.2f}" if row["scaling_efficiency"] is not None else "-"
    peak = f"{row['peak_gb_max']:.1f}" if row["peak_gb_max"] is not None else "-"
    print("| preset | mode | GPUs | micro-batch | global batch | samples/s | per GPU | efficiency | peak GB | GPU |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print(f"| {a.preset} | {mode} | {world} | {a.batch_size} | {global_batch} | {row['samples_per_s']:.2f} | "
          f"{row['samples_per_s'] / world:.2f} | {eff} | {peak} | {row['gpu']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
