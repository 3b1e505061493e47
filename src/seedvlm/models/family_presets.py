"""Model presets of the newer families as transformers configs: `tiny-*` (random weights, CPU tests and benchmarks;
token ids come from the tokenizer they are paired with) and the real sizes (`qwen2.5-vl-7b`,
`llava-v1.6-vicuna-7b`, `smolvlm-256m`, `smolvlm-500m`) for benchmarks with random weights. No weights are built
here; `build_model(config, device="meta")` counts parameters at no memory cost."""

from __future__ import annotations

import torch
from transformers import (CLIPVisionConfig, Idefics3Config, LlamaConfig, LlavaNextConfig, Qwen2_5_VLConfig,
                          Qwen2VLConfig, SmolVLMConfig)

from seedvlm.errors import SeedVLMError

# LLaVA-NeXT's anyres resolutions for a 336 px tower (llava-v1.6), and the tiny tower's scaled-down ones.
LLAVA_V16_PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
TINY_PINPOINTS = [[32, 64], [64, 32], [64, 64], [96, 32], [32, 96]]

_TINY_TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=2048)


def _tiny_qwen2_5_vl(ids: dict):
    return Qwen2_5_VLConfig(
        text_config=dict(_TINY_TEXT, vocab_size=ids["vocab_size"], rms_norm_eps=1e-6,
                         rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]},
                         bos_token_id=ids.get("bos_token_id"), eos_token_id=ids.get("eos_token_id"),
                         pad_token_id=ids.get("pad_token_id")),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=56,
                           fullatt_block_indexes=[1]),
        image_token_id=ids["image_token_id"], video_token_id=ids["video_token_id"],
        vision_start_token_id=ids["vision_start_token_id"], vision_end_token_id=ids["vision_end_token_id"],
        tie_word_embeddings=False)


def _tiny_qwen2_vl(ids: dict):
    cfg = Qwen2VLConfig(
        text_config=dict(_TINY_TEXT, vocab_size=ids["vocab_size"], rms_norm_eps=1e-6,
                         rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]},
                         bos_token_id=ids.get("bos_token_id"), eos_token_id=ids.get("eos_token_id"),
                         pad_token_id=ids.get("pad_token_id")),
        vision_config=dict(depth=2, embed_dim=32, hidden_size=64, mlp_ratio=2, num_heads=2, patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2),
        image_token_id=ids["image_token_id"], video_token_id=ids["video_token_id"],
        vision_start_token_id=ids["vision_start_token_id"], vision_end_token_id=ids["vision_end_token_id"],
        tie_word_embeddings=False)
    return cfg


def _llama(ids: dict, **kw) -> LlamaConfig:
    return LlamaConfig(**kw, vocab_size=ids["vocab_size"], bos_token_id=ids.get("bos_token_id"),
                       eos_token_id=ids.get("eos_token_id"), pad_token_id=ids.get("pad_token_id"),
                       tie_word_embeddings=False)


def _tiny_llava_next(ids: dict):
    return LlavaNextConfig(
        vision_config=CLIPVisionConfig(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64,
                                       num_hidden_layers=2, num_attention_heads=2, projection_dim=32),
        text_config=_llama(ids, **_TINY_TEXT), image_token_index=ids["image_token_id"],
        image_grid_pinpoints=TINY_PINPOINTS, vision_feature_layer=-1, vision_feature_select_strategy="default",
        image_seq_length=16, tie_word_embeddings=False)


def _tiny_smolvlm(ids: dict, config_class=SmolVLMConfig):
    return config_class(
        vision_config=dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2),
        text_config=_llama(ids, **_TINY_TEXT).to_dict(), image_token_id=ids["image_token_id"], scale_factor=2,
        tie_word_embeddings=False, pad_token_id=ids.get("pad_token_id"))


def _qwen2_5_vl_7b(ids: dict):
    return Qwen2_5_VLConfig(
        text_config=dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                         num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=128000,
                         rms_norm_eps=1e-6, bos_token_id=151643, eos_token_id=151645,
                         rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]}),
        vision_config=dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=3584,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                           fullatt_block_indexes=[7, 15, 23, 31]),
        tie_word_embeddings=False)


def _llava_v16_vicuna_7b(ids: dict):
    from seedvlm.models.presets import preset_config

    base = preset_config("llava-1.5-7b")  # llava-v1.6-vicuna-7b keeps its CLIP tower and Vicuna-7B
    return LlavaNextConfig(vision_config=base.vision_config, text_config=base.text_config,
                           image_token_index=32000, image_grid_pinpoints=LLAVA_V16_PINPOINTS,
                           vision_feature_layer=-2, vision_feature_select_strategy="default",
                           image_seq_length=576, tie_word_embeddings=False)


def _smolvlm(text: dict):
    def build(ids: dict):
        return SmolVLMConfig(
            vision_config=dict(image_size=512, patch_size=16, hidden_size=768, intermediate_size=3072,
                               num_hidden_layers=12, num_attention_heads=12),
            text_config=LlamaConfig(vocab_size=49280, max_position_embeddings=8192, rope_theta=100000,
                                    tie_word_embeddings=False, **text).to_dict(),
            image_token_id=49190, scale_factor=4, tie_word_embeddings=False)
    return build


# name -> (family, builder(ids) -> config, published parameter count or None, one-line description)
_PRESETS = {
    "tiny-qwen2.5-vl": ("qwen2_vl", _tiny_qwen2_5_vl, None,
                        "2-layer Qwen2.5-VL (14 px patches, 2x2 merge), 64-wide; tests and CPU benchmarks"),
    "tiny-qwen2-vl": ("qwen2_vl", _tiny_qwen2_vl, None, "2-layer Qwen2-VL, 64-wide; tests"),
    "tiny-llava-next": ("llava_next", _tiny_llava_next, None,
                        "2-layer LLaVA-NeXT (32 px tiles, 8 px patches, anyres up to 96 px), 64-wide Llama"),
    "tiny-smolvlm": ("smolvlm", _tiny_smolvlm, None,
                     "2-layer SmolVLM (32 px tiles, 8 px patches, 2x pixel shuffle: 4 tokens a tile), 64-wide"),
    "tiny-idefics3": ("smolvlm", lambda ids: _tiny_smolvlm(ids, Idefics3Config), None,
                      "tiny-smolvlm with Idefics3's classes (as SmolVLM-256M/500M-Instruct are published)"),
    "qwen2.5-vl-7b": ("qwen2_vl", _qwen2_5_vl_7b, 8.29e9, "Qwen/Qwen2.5-VL-7B-Instruct architecture"),
    "llava-v1.6-vicuna-7b": ("llava_next", _llava_v16_vicuna_7b, 7.06e9,
                             "llava-hf/llava-v1.6-vicuna-7b-hf architecture"),
    "smolvlm-256m": ("smolvlm", _smolvlm(dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                                              num_attention_heads=9, num_key_value_heads=3)), 2.56e8,
                     "HuggingFaceTB/SmolVLM-256M-Instruct architecture"),
    "smolvlm-500m": ("smolvlm", _smolvlm(dict(hidden_size=960, intermediate_size=2560, num_hidden_layers=32,
                                              num_attention_heads=15, num_key_value_heads=5)), 5.07e8,
                     "HuggingFaceTB/SmolVLM-500M-Instruct architecture"),
}

FAMILY_PRESET_NAMES = tuple(_PRESETS)


def _get(name: str):
    if name not in _PRESETS:
        raise SeedVLMError(f"unknown preset {name!r}; choose one of {', '.join(FAMILY_PRESET_NAMES)}")
    return _PRESETS[name]


def preset_family(name: str) -> str:
    """The family a preset belongs to."""
    return _get(name)[0]


def published_parameters(name: str) -> float | None:
    """The parameter count published for the real model a preset copies (None for the tiny ones)."""
    return _get(name)[2]


def family_preset_description(name: str) -> str:
    return _get(name)[3]


def family_preset_config(name: str, **token_ids):
    """A preset's config. Tiny presets need their tokenizer's ids: vocab_size, image_token_id and, for Qwen,
    video_token_id, vision_start_token_id, vision_end_token_id (bos/eos/pad_token_id optional)."""
    return _get(name)[1](token_ids)


def build_model(config, device: str | torch.device = "cpu", seed: int = 0, dtype: torch.dtype = torch.float32):
    """A randomly initialised model of any family's config (seeded); device="meta" builds no weights."""
    from transformers import AutoModelForImageTextToText

    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForImageTextToText.from_config(config, dtype=dtype)
    return model
