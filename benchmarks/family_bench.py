"""What the benchmarks share for the model families other than LLaVA-1.5 (Qwen2-VL/Qwen2.5-VL, LLaVA-NeXT, SmolVLM):
a preset's model with random weights built where it runs (the meta device for a dry run), a processor for it with a
stand-in byte-level tokenizer carrying the family's special tokens (no tokenizer is downloaded; the model's special
token ids are set to the stand-in's, which changes no cost), and batches built through that processor, with labels
from the family's token accounting (`models.families.tokens`).

Processor settings: the tiny presets take the tiny folders' (tests/`models.family_folders`); the real sizes take
their published processors' (Qwen2.5-VL min/max pixels 56^2 / 28^2 * 1280; llava-v1.6 336 px tiles and its anyres
resolutions; SmolVLM 512 px tiles of images rescaled to a 2048 px longest edge)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from seedvlm.models.families.base import Family
from seedvlm.models.families.registry import get_family
from seedvlm.models.families.tokens import build_example, render, training_template
from seedvlm.models.family_folders import byte_level_bpe
from seedvlm.models.family_presets import (FAMILY_PRESET_NAMES, build_model, family_preset_config, preset_family,
                                           published_parameters)

# The presets the benchmarks take (tiny-qwen2-vl and tiny-idefics3 only re-test classes the others cover).
FAMILY_PRESETS = tuple(p for p in FAMILY_PRESET_NAMES if p not in ("tiny-qwen2-vl", "tiny-idefics3"))
TURNS = [("Is there a cat in the image?", "Yes, there is a cat."),
         ("Describe the image in detail.", "The image shows a red fork and a blue knife on a table.")]
QUESTION = "Describe the image in detail."


@dataclass
class FamilySetup:
    """A preset's family, transformers config, processor (stand-in tokenizer) and the model's image token id."""

    preset: str
    family: Family
    config: object
    processor: object
    image_token_id: int

    @property
    def merge_size(self) -> int | None:
        return getattr(self.processor.image_processor, "merge_size", None)

    def stop_token_ids(self) -> list[int]:
        return self.family.stop_token_ids(self.processor)


def _qwen(preset: str, tiny: bool):
    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor

    from seedvlm.models.families import qwen2_vl as q
    from seedvlm.models.families.processors import images_only_video_processor

    tok = byte_level_bpe(q.SPECIAL_TOKENS, eos_token=q.IM_END, pad_token=q.ENDOFTEXT)
    ids = {name: tok.convert_tokens_to_ids(t) for name, t in (
        ("image_token_id", q.IMAGE_PAD), ("video_token_id", q.VIDEO_PAD), ("vision_start_token_id", q.VISION_START),
        ("vision_end_token_id", q.VISION_END))}
    specials = {"eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id, "bos_token_id": tok.pad_token_id}
    cfg = family_preset_config(preset, vocab_size=len(tok), **ids, **specials)
    if not tiny:
        for k, v in ids.items():
            setattr(cfg, k, v)
    v = cfg.vision_config
    pixels = (56 * 56, 112 * 112) if tiny else (56 * 56, 28 * 28 * 1280)
    ip = Qwen2VLImageProcessor(min_pixels=pixels[0], max_pixels=pixels[1], patch_size=v.patch_size,
                               merge_size=v.spatial_merge_size, temporal_patch_size=v.temporal_patch_size)
    proc = Qwen2_5_VLProcessor(image_processor=ip, tokenizer=tok, video_processor=images_only_video_processor(),
                               chat_template=q.CHAT_TEMPLATE)
    return cfg, proc, ids["image_token_id"]


def _llava_next(preset: str, tiny: bool):
    from transformers import LlavaNextImageProcessor, LlavaNextProcessor

    from seedvlm.models.families.llava_next import VICUNA_TEMPLATE
    from seedvlm.models.processor import CLIP_MEAN, CLIP_STD

    tok = byte_level_bpe(("<unk>", "<s>", "</s>", "<pad>", "<image>"), unk_token="<unk>", bos_token="<s>",
                         eos_token="</s>", pad_token="<pad>")
    image = tok.convert_tokens_to_ids("<image>")
    cfg = family_preset_config(preset, vocab_size=len(tok), image_token_id=image, bos_token_id=tok.bos_token_id,
                               eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    cfg.image_token_id = image
    size = cfg.vision_config.image_size
    ip = LlavaNextImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size},
                                 image_grid_pinpoints=cfg.image_grid_pinpoints, image_mean=CLIP_MEAN,
                                 image_std=CLIP_STD)
    proc = LlavaNextProcessor(image_processor=ip, tokenizer=tok, patch_size=cfg.vision_config.patch_size,
                              vision_feature_select_strategy=cfg.vision_feature_select_strategy,
                              num_additional_image_tokens=1, chat_template=VICUNA_TEMPLATE, image_token="<image>")
    return cfg, proc, image


def _smolvlm(preset: str, tiny: bool):
    from transformers import SmolVLMImageProcessor, SmolVLMProcessor

    from seedvlm.models.families import smolvlm as s
    from seedvlm.models.families.processors import images_only_video_processor

    markers = [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]
    tok = byte_level_bpe(("<|endoftext|>", "<|im_start|>", "<|im_end|>", s.FAKE_IMAGE, s.IMAGE, s.GLOBAL_IMAGE,
                          s.END_OF_UTTERANCE, *markers), eos_token=s.END_OF_UTTERANCE, pad_token="<|endoftext|>")
    image = tok.convert_tokens_to_ids(s.IMAGE)
    cfg = family_preset_config(preset, vocab_size=len(tok), image_token_id=image, eos_token_id=tok.eos_token_id,
                               pad_token_id=tok.pad_token_id)
    cfg.image_token_id = image
    tile = cfg.vision_config.image_size
    ip = SmolVLMImageProcessor(size={"longest_edge": 2 * tile if tiny else 4 * tile},
                               max_image_size={"longest_edge": tile}, do_image_splitting=True)
    proc = SmolVLMProcessor(image_processor=ip, tokenizer=tok, video_processor=images_only_video_processor(),
                            image_seq_len=(tile // cfg.vision_config.patch_size) ** 2 // cfg.scale_factor ** 2,
                            chat_template=s.CHAT_TEMPLATE)
    return cfg, proc, image


_BUILDERS = {"qwen2_vl": _qwen, "llava_next": _llava_next, "smolvlm": _smolvlm}


def family_setup(preset: str) -> FamilySetup:
    """The preset's family, config, processor and image token id (nothing of the model is built)."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    name = preset_family(preset)
    cfg, proc, image = _BUILDERS[name](preset, preset.startswith("tiny-"))
    return FamilySetup(preset, get_family(name), cfg, proc, image)


def build_family_model(setup: FamilySetup, device: torch.device | str, dtype: torch.dtype, train: bool):
    """The preset's model with random weights built directly on `device` in `dtype` ("meta": no weights)."""
    model = build_model(setup.config, device=device, dtype=dtype)
    if train:
        model.config.use_cache = False
        model.config.text_config.use_cache = False
    return model


def parameter_counts(model) -> dict:
    """Total and trainable parameters, in millions."""
    return {"params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
            "trainable_params_m": round(sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6, 2)}


def published_params_m(preset: str) -> float | None:
    n = published_parameters(preset)
    return None if n is None else round(n / 1e6, 1)


def image(size: tuple[int, int], seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(1, 255, (*size, 3), dtype=np.uint8))


def make_batch(family: Family, processor, n: int, sizes: list[tuple[int, int]]) -> dict:
    """n samples: one image each (sizes cycled), two question/answer turns (TURNS), right padded; labels on the
    answers and their end-of-turn tokens from the family's token accounting."""
    template = training_template(family, processor)
    texts, images, labels = [], [], []
    for i in range(n):
        size = sizes[i % len(sizes)]
        messages = []
        for k, (q, a) in enumerate(TURNS):
            content = ([{"type": "image"}] if k == 0 else []) + [{"type": "text", "text": q}]
            messages += [{"role": "user", "content": content},
                         {"role": "assistant", "content": [{"type": "text", "text": a}]}]
        texts.append(render(processor, messages, template))
        images.append([image(size, i)])
        labels.append(build_example(family, processor, messages, [size]).labels)
    processor.tokenizer.padding_side = "right"
    batch = dict(processor(text=texts, images=images, return_tensors="pt", padding=True))
    width = batch["input_ids"].shape[1]
    batch["labels"] = torch.tensor([row + [-100] * (width - len(row)) for row in labels])
    return batch


def prompt_batch(setup: FamilySetup, n: int, size: tuple[int, int]) -> dict:
    """n identical prompts for generation: one image and QUESTION in the user turn, the generation prompt after it
    (left padded, as evaluation batches are)."""
    template = training_template(setup.family, setup.processor)
    text = render(setup.processor, [{"role": "user", "content": [{"type": "image"}, {"type": "text",
                                                                                    "text": QUESTION}]}],
                  template, add_generation_prompt=True)
    setup.processor.tokenizer.padding_side = "left"
    return dict(setup.processor(text=[text] * n, images=[[image(size, i)] for i in range(n)], return_tensors="pt",
                                padding=True))


def batch_shape(batch: dict, image_token_id: int) -> dict:
    """Tokens per sample, image tokens per sample and answer (labelled) tokens per sample of a batch (the first
    sample's; every sample of these benchmarks has the same image size)."""
    ids = batch["input_ids"][0]
    out = {"tokens_per_sample": int(batch["attention_mask"][0].sum()),
           "image_tokens": int((ids == image_token_id).sum())}
    if "labels" in batch:
        out["answer_tokens"] = int((batch["labels"][0] != -100).sum())
    return out
