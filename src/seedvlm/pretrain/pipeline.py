"""`seedvlm pretrain`: build the base VLM on the embedded world in three stages, save it in llava-hf format and
print its readiness figures. Each stage's metrics and timing go to `OUT/pretrain.json`."""

from __future__ import annotations

import logging
import platform
import time
from pathlib import Path

import numpy as np
import torch

from seedvlm.config import to_dict
from seedvlm.errors import SeedVLMError
from seedvlm.io import require_dir, write_json
from seedvlm.models import (build_processor, build_word_tokenizer, load_model, load_processor, num_image_tokens,
                            preset_config, random_model, save_model, words_of)
from seedvlm.pretrain.config import PretrainConfig
from seedvlm.pretrain.data import CAPTION_PROMPT, load_split_images, scene_texts, tokenize_records, world_records
from seedvlm.pretrain.levers import degrade_batch, noisy_pixels, uninformative_pixels
from seedvlm.pretrain.readiness import readiness_report
from seedvlm.pretrain.stages import (cache_features, first_token_accuracy, standardize_projector_input,
                                     train_language, train_vision, vision_features)
from seedvlm.world import CATEGORIES, category_by_id, render_scene, sample_scene, world_vocabulary

log = logging.getLogger("seedvlm.pretrain")

EXTRA_PROMPTS = (CAPTION_PROMPT, "Please describe this image in detail. Answer yes or no.")


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SeedVLMError("--device cuda asked for, but no CUDA device is available")
    return torch.device(name)


def build_world_tokenizer(world: Path, splits=("train", "val")):
    """The word-level tokenizer of a world: every word its generator can emit plus every word in its files."""
    texts = list(EXTRA_PROMPTS)
    for split in splits:
        _, caps, inst = world_records(world, split)
        texts += [c for _, _, c in caps] + [q for _, q, _ in inst] + [a for _, _, a in inst]
    return build_word_tokenizer([*world_vocabulary(), *words_of(texts)])


def vision_corpus(n: int, size: int, seed: int, with_objects: bool = False) -> tuple:
    """Stage 1's corpus: `n` scenes whose objects are drawn uniformly over categories (no scene pairing), rendered
    in memory; returns images (n, size, size, 3) uint8, multi-hot labels (n, C), and the category id order; with
    `with_objects` also, per scene, (label column, box [x, y, w, h], visible pixels) of each object."""
    cat_ids = [c["id"] for c in CATEGORIES]
    col = {cid: i for i, cid in enumerate(cat_ids)}
    rng = np.random.default_rng(seed)
    images = np.zeros((n, size, size, 3), dtype=np.uint8)
    labels = np.zeros((n, len(cat_ids)), dtype=np.float32)
    objects = []
    for i in range(n):
        scene = sample_scene(rng, size, uniform=True)
        images[i] = render_scene(scene, size)
        for obj in scene.objects:
            labels[i, col[obj.category_id]] = 1.0
        objects.append([(col[o.category_id], list(o.bbox), int(o.area)) for o in scene.objects])
    return (images, labels, cat_ids, objects) if with_objects else (images, labels, cat_ids)


def _degrader(cfg: PretrainConfig, objects: list, patch_size: int):
    """Stage 1's degraded views (seedvlm.pretrain.levers.degrade_batch) as train_vision calls them."""
    def degrade(pix, labels, idx, rng):
        return degrade_batch(pix, labels, [objects[i] for i in idx], rng, cfg.vision_degrade,
                             tuple(cfg.vision_degrade_kinds), cfg.vision_visible_snr, patch_size)
    return degrade


def pretrain(cfg: PretrainConfig) -> dict:
    """Run all stages and the readiness check; returns the summary written to OUT/pretrain.json."""
    if not cfg.world:
        raise SeedVLMError("--world is required: a folder written by `seedvlm world`")
    world = require_dir(cfg.world, "world folder")
    if not cfg.init:
        preset_config(cfg.preset)  # an unknown preset fails here, before any work
    device = _device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(cfg.seed)
    t_start = time.time()
    summary: dict = {"config": to_dict(cfg), "device": _device_name(device), "torch": torch.__version__,
                     "threads": torch.get_num_threads(), "stages": {}}

    if cfg.init:
        processor = load_processor(cfg.init)
        tokenizer = processor.tokenizer
        model = load_model(cfg.init, device=device, dtype=torch.float32)
        config = model.config
    else:
        tokenizer = build_world_tokenizer(world)
        config = preset_config(cfg.preset, vocab_size=len(tokenizer), image_token_index=tokenizer.image_token_id,
                               pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                               eos_token_id=tokenizer.eos_token_id)
        processor = build_processor(tokenizer, config)
        model = random_model(config, seed=cfg.seed).to(device)
    if cfg.init_vision:
        donor = load_model(cfg.init_vision, device=device, dtype=torch.float32)
        if donor.config.vision_config.to_dict() != config.vision_config.to_dict():
            raise SeedVLMError(f"--init-vision {cfg.init_vision}: its vision tower differs from this model's")
        model.model.vision_tower.load_state_dict(donor.model.vision_tower.state_dict())
        fresh = random_model(config, seed=cfg.seed + 7).model.multi_modal_projector
        model.model.multi_modal_projector.load_state_dict(fresh.state_dict())
        del donor, fresh
    size = config.vision_config.image_size
    n_params = sum(p.numel() for p in model.parameters())
    log.info(f"pretrain: preset {cfg.preset} ({n_params / 1e6:.1f}M params), vocab {len(tokenizer)}, "
             f"{num_image_tokens(config)} image tokens, device {summary['device']}")

    names, caps, inst = world_records(world, "train")
    n_tok = num_image_tokens(config)
    yes_no = [r for r in inst if r[2] in ("Yes.", "No.") and r[1].startswith("Is there")]
    common = dict(image_token_id=config.image_token_index, pad_id=tokenizer.pad_token_id,
                  warmup_fraction=cfg.warmup_fraction, weight_decay=cfg.weight_decay, device=device, seed=cfg.seed)

    # Stage 0: the language model on text, each image given as its object list.
    if cfg.text_steps > 0:
        contexts = scene_texts(world, "train", drop=cfg.text_drop, seed=cfg.seed)
        text_samples = tokenize_records(inst + caps, names, processor, n_tok, contexts=contexts)
        s0 = train_language(model, text_samples, None, epochs=0, lr=cfg.text_lr, per_sample=True,
                            desc="stage 0 text", steps=cfg.text_steps, batch_size=cfg.text_batch, **common)
        val_names, _, val_inst = world_records(world, "val")
        val_yn = [r for r in val_inst if r[2] in ("Yes.", "No.") and r[1].startswith("Is there")][:1000]
        s0["yesno_acc_val_text"] = first_token_accuracy(
            model, tokenize_records(val_yn, val_names, processor, n_tok, contexts=scene_texts(world, "val")),
            None, config.image_token_index, tokenizer.pad_token_id, device)
        summary["stages"]["text"] = s0
        log.info(f"stage 0 (text): loss {s0['loss']:.3f}, yes/no from text on val {s0['yesno_acc_val_text']:.3f}, "
                 f"{s0['seconds']:.0f}s")

    # Stage 1: vision tower on unpaired scenes.
    if cfg.vision_steps > 0:
        t = time.time()
        pool, pool_labels, cat_ids, objects = vision_corpus(cfg.vision_pool, size, cfg.seed + 1, with_objects=True)
        summary["stages"]["vision_corpus_seconds"] = time.time() - t
        word_ids = None
        if cfg.vision_head == "words":
            word_ids = [tokenizer(category_by_id(c)["name"], add_special_tokens=False).input_ids for c in cat_ids]
        elif cfg.vision_head != "linear":
            raise SeedVLMError(f"vision_head must be 'words' or 'linear', got {cfg.vision_head!r}")
        degrade = None
        if cfg.vision_degrade > 0:
            degrade = _degrader(cfg, objects, config.vision_config.patch_size)
        s1 = train_vision(model, pool, pool_labels, cfg.vision_steps, cfg.vision_batch, cfg.vision_lr,
                          cfg.warmup_fraction, cfg.weight_decay, device, cfg.seed, class_word_ids=word_ids,
                          train_word_embeddings=_train_words(cfg), degrade=degrade)
        summary["stages"]["vision"] = s1
        log.info(f"stage 1 (vision): loss {s1['loss']:.4f}, held-out mAP {s1['mAP']:.3f}, {s1['seconds']:.0f}s")
        del pool, pool_labels, objects

    # Stages 2 and 3: language on cached features of the world's train images.
    images = load_split_images(world, "train", names, size)
    feats = cache_features(model, images, device)
    if (cfg.vision_head == "linear" or cfg.vision_steps == 0) and (not cfg.init or cfg.init_vision):
        standardize_projector_input(model, feats)  # the projector is still random: give it standardized inputs
    if cfg.noisy_views > 0:  # each image's noisy view, rows N .. 2N - 1
        common["noisy"] = (cfg.noisy_views, len(feats))
        feats = torch.cat([feats, cache_features(model, images, device, view=lambda pix, start: noisy_pixels(
            pix, cfg.noisy_alpha, cfg.seed + 5 + start)[0])])
    if cfg.uninformative > 0:  # blank / pure-noise rows after the split's own
        pix = uninformative_pixels(cfg.uninformative_images, size, cfg.seed + 3).to(device, model.dtype)
        with torch.no_grad():
            common["uninformative"] = (cfg.uninformative, len(feats), cfg.uninformative_images)
            feats = torch.cat([feats, vision_features(model, pix)])
    tok_caps = tokenize_records(caps, names, processor, n_tok)
    descriptions = [r for r in inst if len(r[2].split()) > 8]
    tok_desc = tokenize_records(descriptions, names, processor, n_tok)
    tok_inst = tokenize_records(inst, names, processor, n_tok)
    longest = max(len(s.input_ids) for s in tok_inst + tok_caps)
    if longest > config.text_config.max_position_embeddings:
        raise SeedVLMError(f"a world sample has {longest} tokens, more than the preset's context "
                           f"{config.text_config.max_position_embeddings}")
    common["batch_size"] = cfg.batch_size
    if cfg.align_epochs > 0:
        s2 = train_language(model, tok_caps + tok_desc, feats, epochs=cfg.align_epochs, lr=cfg.align_lr,
                            per_sample=False, desc="stage 2 align", projector_only=bool(cfg.init_vision), **common)
        summary["stages"]["align"] = s2
        log.info(f"stage 2 (alignment): loss {s2['loss']:.3f}, {s2['steps']} steps, {s2['seconds']:.0f}s")
    s3 = {"steps": 0}
    if cfg.instruct_epochs > 0:
        s3 = train_language(model, tok_inst, feats, epochs=cfg.instruct_epochs, lr=cfg.instruct_lr,
                            per_sample=True, desc="stage 3 instruct", **common)
    summary["stages"]["instruct"] = s3
    s3["yesno_acc_train_subset"] = first_token_accuracy(
        model, tokenize_records(yes_no[:1000], names, processor, n_tok), feats, config.image_token_index,
        tokenizer.pad_token_id, device)
    log.info(f"stage 3 (instruction, per-sample loss): loss {s3.get('loss', float('nan')):.3f}, {s3['steps']} "
             f"steps, {s3.get('seconds', 0):.0f}s, yes/no on train images {s3['yesno_acc_train_subset']:.3f}")
    del feats, images
    summary["train_seconds"] = time.time() - t_start

    # Save in llava-hf format (small dtype for the shipped tiny base), then check readiness from the saved copy.
    save_dtype = getattr(torch, cfg.save_dtype)
    out = Path(cfg.out)
    model_cpu = model.to("cpu", save_dtype)
    save_model(model_cpu, processor, out)
    model = model_cpu.to(device, torch.float32 if device.type == "cpu" else torch.bfloat16)
    if cfg.readiness_images > 0:
        rep = readiness_report(model, processor, world, n_images=cfg.readiness_images,
                               max_new_tokens=cfg.max_new_tokens, seed=cfg.seed)
        summary["readiness"] = rep
    summary["total_seconds"] = time.time() - t_start
    write_json(out / "pretrain.json", summary)
    return summary


def _train_words(cfg: PretrainConfig) -> bool:
    """Whether stage 1 also trains the word embeddings it aligns vision to (not once the LM was pretrained)."""
    if cfg.vision_words == "auto":
        return cfg.text_steps == 0 and not cfg.init
    if cfg.vision_words not in ("frozen", "trained"):
        raise SeedVLMError(f"vision_words must be auto, frozen or trained, got {cfg.vision_words!r}")
    return cfg.vision_words == "trained"


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()})"
