"""The training tests' tiny environment: a saved 2-layer random LLaVA, small images and records, and the configs the
train, teacher-cache, distributed and error tests build on it (shared here so that no test module imports another)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

WORDS = "a red blue green cat dog fork knife there is are two one what color the in image yes no with".split()
COLORS = {"red": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 200, 30)}


def build_env(root: Path, seed: int = 0, n: int = 16, fork_period: int = 4) -> dict:
    """A saved tiny LLaVA (2+2 layers, 32 px, 16 image tokens, context 128) and n records with small PNGs; record i's
    answer repeats a sentence i % fork_period times, so answer lengths vary."""
    from seedvlm.models import build_processor, build_word_tokenizer, preset_config, random_model, save_model

    tok = build_word_tokenizer(WORDS)
    cfg = preset_config("tiny", vocab_size=len(tok), image_token_index=tok.image_token_id,
                        pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    v, t = cfg.vision_config, cfg.text_config
    v.num_hidden_layers = t.num_hidden_layers = 2
    v.hidden_size = v.projection_dim = 64
    v.intermediate_size = 128
    v.image_size = 32
    t.hidden_size, t.intermediate_size, t.max_position_embeddings = 64, 128, 128
    save_model(random_model(cfg, seed=seed), build_processor(tok, cfg), root / "model")
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(n):
        color, obj = list(COLORS)[i % 3], ["cat", "dog"][i % 2]
        a = np.zeros((32, 32, 3), np.uint8)
        a[:] = COLORS[color]
        a[8:24, 8:24] = (255, 255, 255) if obj == "cat" else (0, 0, 0)
        Image.fromarray(a).save(images / f"img{i}.png")
        answer = f"the image is {color} with a {obj} ." + (" there is one red fork ." * (i % fork_period))
        records.append({"id": f"r{i}", "image": f"img{i}.png", "prompt": "what color is the image ?",
                        "answer": answer})
    (root / "train.json").write_text(json.dumps(records))
    return {"model": root / "model", "images": images, "data": root / "train.json", "records": records}


def launch_two(*args: str, timeout: int = 240) -> None:
    """`python -m torch.distributed.run --standalone --nproc_per_node 2 ARGS` (a free port, gloo on the CPU)."""
    import os
    import subprocess
    import sys

    import pytest

    root = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               PYTHONPATH=os.pathsep.join([str(root / "src"), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-60:])
        pytest.fail(f"{' '.join(cmd[3:])} failed ({proc.returncode}):\n{tail}")


def cfg_kwargs(env, out: Path, **kw) -> dict:
    """SeedConfig's keyword arguments for the tiny env; `kw` may use an earlier release's option names (read as the
    command line reads them)."""
    from seedvlm.train.config import SeedConfig

    base = dict(model=str(env["model"]), data=str(env["data"]), images=str(env["images"]), output_dir=str(out),
                lora_r=8, lora_alpha=16, learning_rate=2e-3, max_steps=6, per_device_train_batch_size=2,
                gradient_accumulation_steps=1, logging_steps=3, save_steps=100, warmup_steps=1, report_to="none",
                beta_min_history=4)
    base.update(SeedConfig.migrate(kw, "make_cfg"))
    return base


def make_cfg(env, out: Path, **kw):
    from seedvlm.train.config import SeedConfig

    return SeedConfig(**cfg_kwargs(env, out, **kw))


def read_metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def build_cache_env(root: Path, seed: int = 0, n: int = 12) -> dict:
    """build_env's environment with 12 records whose answers repeat a sentence 0-2 times."""
    return build_env(root, seed=seed, n=n, fork_period=3)


def make_cache_cfg(env, out: Path, **kw):
    """make_cfg's config with 3 steps of batch 3."""
    return make_cfg(env, out, **{"max_steps": 3, "per_device_batch_size": 3, **kw})


def randomize_lora(model, seed: int = 0) -> None:
    """LoRA B starts at zero (student = teacher); give it values so the student differs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)


# ---- the other model families (tests/train/test_family_*.py) ---------------------------------------------------
LLAMA2_TOKENIZER = Path(__file__).resolve().parents[1] / ".." / "shared" / "reference-data" / "tokenizers" / "llama2" / \
    "tokenizer.model"
SIZES = [(40, 60), (70, 30), (50, 50), (30, 70)]  # (height, width): different token counts per image
NAMES = ["qwen2.5-vl", "qwen2-vl", "llava-next", "smolvlm", "idefics3"]


def family_train_data(root: Path) -> tuple[Path, Path]:
    """Four records with images of the SIZES (odd ones with a follow-up turn): (train.json, image folder)."""
    images = root / "images"
    images.mkdir(parents=True)
    records = []
    for i, (h, w) in enumerate(SIZES):
        rng = np.random.default_rng(i)
        Image.fromarray(rng.integers(1, 255, (h, w, 3), dtype=np.uint8)).save(images / f"img{i}.png")
        rec = {"id": f"r{i}", "image": f"img{i}.png", "prompt": "Is there a cat in the image?",
               "answer": ["Yes, there is a cat.", "No, there is no dog in the image."][i % 2]}
        if i % 2:
            rec["followups"] = [{"prompt": "What color is the cup?", "answer": "It is red."}]
        records.append(rec)
    (root / "train.json").write_text(json.dumps(records))
    return root / "train.json", images


def build_family_env(root: Path) -> tuple[dict[str, Path], Path, Path]:
    """(name -> tiny folder of each family, train.json, image folder); LLaVA-NeXT only with the Llama-2 tokenizer."""
    from seedvlm.models.family_folders import build_family_folders

    out = build_family_folders(root, LLAMA2_TOKENIZER if LLAMA2_TOKENIZER.is_file() else None)
    data, images = family_train_data(root)
    return out, data, images


def family_folder(env, name: str) -> tuple[Path, Path, Path]:
    """(model folder, data, images) of one family, or a skip naming what is missing."""
    import pytest

    found, data, images = env
    if name not in found:
        pytest.skip(f"no Llama-2 tokenizer.model at {LLAMA2_TOKENIZER} (the LLaVA-NeXT folder needs it)")
    return found[name], data, images
