"""Tiny checkpoint folders laid out like the hub's, one per family, with random weights: a Qwen2.5-VL (or Qwen2-VL)
folder with a byte-level BPE tokenizer carrying Qwen2's special tokens and its published chat template, a
LLaVA-NeXT (Vicuna) folder with a real Llama-2 `tokenizer.model`, and a SmolVLM folder with a byte-level BPE
carrying SmolVLM's image and turn tokens. For tests and CPU benchmarks; nothing is downloaded."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

from seedvlm.io import atomic_path

# Qwen2's pre-tokenization split (digits one by one, letters with one leading non-letter, punctuation runs).
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
               r"\s*[\r\n]+|\s+(?!\S)|\s+")

CORPUS = (
    "You are a helpful assistant.", "system user assistant User Assistant", "Is there a cat in the image?",
    "Yes, there is a cat.", "No, there is no dog in the image.", "Describe the image in detail.",
    "The image shows a red fork and a blue knife on a table.", "Please answer yes or no.",
    "What color is the cup? It is red.", "two cats and three dogs", "1 2 3 4 5 6 7 8 9 0",
)


def byte_level_bpe(specials: Sequence[str], corpus: Iterable[str] = CORPUS, vocab_size: int = 512, **tokens):
    """A byte-level BPE (Qwen2's split, NFC, byte-level decoding) trained on `corpus`, `specials` first in the
    vocabulary, as a transformers fast tokenizer with `tokens` (eos_token=..., pad_token=...) set."""
    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, trainers
    from tokenizers.models import BPE
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(BPE(unk_token=None))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(specials), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(list(corpus) * 4, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, clean_up_tokenization_spaces=False,
                                   model_max_length=32768, **tokens)


def _save(out: Path, model, write_processor) -> Path:
    with atomic_path(out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        write_processor(tmp)
    return out


def build_qwen_folder(out: str | os.PathLike, preset: str = "tiny-qwen2.5-vl", seed: int = 0,
                      min_pixels: int = 56 * 56, max_pixels: int = 112 * 112) -> Path:
    """A tiny Qwen2.5-VL (or, with preset="tiny-qwen2-vl", Qwen2-VL) folder: config, safetensors, processor."""
    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLProcessor

    from seedvlm.models.families import qwen2_vl as q
    from seedvlm.models.families.processors import images_only_video_processor, save_images_only
    from seedvlm.models.family_presets import build_model, family_preset_config

    tok = byte_level_bpe(q.SPECIAL_TOKENS, eos_token=q.IM_END, pad_token=q.ENDOFTEXT)
    ids = {name: tok.convert_tokens_to_ids(t) for name, t in (
        ("image_token_id", q.IMAGE_PAD), ("video_token_id", q.VIDEO_PAD), ("vision_start_token_id", q.VISION_START),
        ("vision_end_token_id", q.VISION_END), ("eos_token_id", q.IM_END), ("pad_token_id", q.ENDOFTEXT),
        ("bos_token_id", q.ENDOFTEXT))}
    cfg = family_preset_config(preset, vocab_size=len(tok), **ids)
    cls, name = ((Qwen2_5_VLProcessor, "Qwen2_5_VLProcessor") if preset == "tiny-qwen2.5-vl"
                 else (Qwen2VLProcessor, "Qwen2VLProcessor"))
    vision = cfg.vision_config
    image_processor = Qwen2VLImageProcessor(min_pixels=min_pixels, max_pixels=max_pixels,
                                            patch_size=vision.patch_size, merge_size=vision.spatial_merge_size,
                                            temporal_patch_size=vision.temporal_patch_size)
    proc = cls(image_processor=image_processor, tokenizer=tok, video_processor=images_only_video_processor(),
               chat_template=q.CHAT_TEMPLATE)
    return _save(Path(out), build_model(cfg, seed=seed), lambda d: save_images_only(proc, d, name))


def build_llava_next_folder(out: str | os.PathLike, tokenizer_model: str | os.PathLike, seed: int = 0) -> Path:
    """A tiny LLaVA-NeXT (Vicuna) folder with the Llama-2 sentencepiece `tokenizer_model`, "<image>" and "<pad>"
    added as llava-hf's tokenizers add them."""
    from transformers import LlamaTokenizer, LlavaNextImageProcessor, LlavaNextProcessor

    from seedvlm.models.families.llava_next import VICUNA_TEMPLATE
    from seedvlm.models.family_presets import build_model, family_preset_config
    from seedvlm.models.processor import CLIP_MEAN, CLIP_STD

    with tempfile.TemporaryDirectory() as spm:  # transformers reads a sentencepiece model from a folder
        shutil.copyfile(tokenizer_model, Path(spm) / "tokenizer.model")
        tok = LlamaTokenizer.from_pretrained(spm, legacy=False, add_bos_token=True, add_eos_token=False)
    tok.add_special_tokens({"pad_token": "<pad>"})
    tok.add_tokens(["<image>"], special_tokens=True)
    cfg = family_preset_config("tiny-llava-next", vocab_size=len(tok), image_token_id=tok.convert_tokens_to_ids(
        "<image>"), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    size = cfg.vision_config.image_size
    image_processor = LlavaNextImageProcessor(
        size={"shortest_edge": size}, crop_size={"height": size, "width": size},
        image_grid_pinpoints=cfg.image_grid_pinpoints, image_mean=CLIP_MEAN, image_std=CLIP_STD)
    proc = LlavaNextProcessor(image_processor=image_processor, tokenizer=tok,
                              patch_size=cfg.vision_config.patch_size,
                              vision_feature_select_strategy=cfg.vision_feature_select_strategy,
                              num_additional_image_tokens=1, chat_template=VICUNA_TEMPLATE, image_token="<image>")

    def write(d: Path) -> None:
        proc.save_pretrained(d)
        shutil.copyfile(tokenizer_model, d / "tokenizer.model")  # the hub's folders carry it beside tokenizer.json

    return _save(Path(out), build_model(cfg, seed=seed), write)


def build_smolvlm_folder(out: str | os.PathLike, seed: int = 0, longest_edge: int = 64,
                         idefics3: bool = False) -> Path:
    """A tiny SmolVLM folder: byte-level BPE with SmolVLM's image, tile-marker and turn tokens; images resized to
    at most `longest_edge` and split into tiles of the vision tower's size plus a global view. idefics3=True uses
    Idefics3's model and processor classes, as the SmolVLM-256M/500M-Instruct folders do."""
    from transformers import Idefics3ImageProcessor, Idefics3Processor, SmolVLMImageProcessor, SmolVLMProcessor

    from seedvlm.models.families import smolvlm as s
    from seedvlm.models.families.processors import images_only_video_processor, save_images_only
    from seedvlm.models.family_presets import build_model, family_preset_config

    markers = [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]
    specials = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", s.FAKE_IMAGE, s.IMAGE, s.GLOBAL_IMAGE,
                s.END_OF_UTTERANCE, *markers)
    tok = byte_level_bpe(specials, eos_token=s.END_OF_UTTERANCE, pad_token="<|endoftext|>")
    cfg = family_preset_config("tiny-idefics3" if idefics3 else "tiny-smolvlm", vocab_size=len(tok),
                               image_token_id=tok.convert_tokens_to_ids(s.IMAGE), eos_token_id=tok.eos_token_id,
                               pad_token_id=tok.pad_token_id)
    tile = cfg.vision_config.image_size
    sizes = dict(size={"longest_edge": longest_edge}, max_image_size={"longest_edge": tile}, do_image_splitting=True)
    seq_len = (tile // cfg.vision_config.patch_size) ** 2 // cfg.scale_factor ** 2
    model = build_model(cfg, seed=seed)
    if idefics3:  # Idefics3's processor holds no video processor: saved and loaded whole
        proc = Idefics3Processor(image_processor=Idefics3ImageProcessor(**sizes), tokenizer=tok,
                                 image_seq_len=seq_len, chat_template=s.CHAT_TEMPLATE)
        return _save(Path(out), model, proc.save_pretrained)
    proc = SmolVLMProcessor(image_processor=SmolVLMImageProcessor(**sizes), tokenizer=tok,
                            video_processor=images_only_video_processor(), image_seq_len=seq_len,
                            chat_template=s.CHAT_TEMPLATE)
    return _save(Path(out), model, lambda d: save_images_only(proc, d, "SmolVLMProcessor", {"image_seq_len": seq_len}))


def build_family_folders(root: Path, llama2_tokenizer: Path | None = None) -> dict[str, Path]:
    """name -> a tiny folder of each family under root: Qwen2.5-VL, Qwen2-VL, SmolVLM with its own and with
    Idefics3's classes, and LLaVA-NeXT when a Llama-2 tokenizer.model is given."""
    root = Path(root)
    out = {"qwen2.5-vl": build_qwen_folder(root / "qwen2.5-vl"),
           "qwen2-vl": build_qwen_folder(root / "qwen2-vl", preset="tiny-qwen2-vl"),
           "smolvlm": build_smolvlm_folder(root / "smolvlm"),
           "idefics3": build_smolvlm_folder(root / "idefics3", idefics3=True)}
    if llama2_tokenizer is not None:
        out["llava-next"] = build_llava_next_folder(root / "llava-next", llama2_tokenizer)
    return out
