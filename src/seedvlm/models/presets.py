"""Model presets as `LlavaConfig`s: `tiny` (CPU, minutes), `small` (tens of millions of parameters, one GPU),
`llava-1.5-7b` (the exact llava-hf/llava-1.5-7b-hf architecture, for benchmarks with random weights) and
`llava-1.5-13b` (the llava-1.5-13b architecture, for the multi-GPU / FSDP benchmarks)."""

from __future__ import annotations

from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

from seedvlm.errors import SeedVLMError

# name -> (vision kwargs, text kwargs, llava kwargs, one-line description)
_PRESETS: dict[str, tuple[dict, dict, dict, str]] = {
    "tiny": (
        dict(image_size=64, patch_size=8, hidden_size=160, intermediate_size=640, num_hidden_layers=4,
             num_attention_heads=4, projection_dim=160),
        dict(hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=4,
             num_key_value_heads=4, max_position_embeddings=512),
        dict(vision_feature_layer=-1),
        "64 px, 8 px patches (64 image tokens), 4-layer CLIP tower + 4-layer Llama; trains on 2 CPU cores",
    ),
    "small": (
        dict(image_size=96, patch_size=8, hidden_size=384, intermediate_size=1536, num_hidden_layers=8,
             num_attention_heads=6, projection_dim=384),
        dict(hidden_size=512, intermediate_size=1536, num_hidden_layers=8, num_attention_heads=8,
             num_key_value_heads=8, max_position_embeddings=1024),
        dict(vision_feature_layer=-2),
        "96 px, 8 px patches (144 image tokens), 8-layer CLIP tower + 8-layer Llama (~40M params); for one GPU",
    ),
    "llava-1.5-7b": (
        dict(image_size=336, patch_size=14, hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
             num_attention_heads=16, projection_dim=768, hidden_act="quick_gelu", layer_norm_eps=1e-5),
        dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
             num_key_value_heads=32, max_position_embeddings=4096, rms_norm_eps=1e-5, vocab_size=32064,
             pad_token_id=32001, bos_token_id=1, eos_token_id=2),
        dict(vision_feature_layer=-2, image_token_index=32000),
        "exact llava-hf/llava-1.5-7b-hf architecture (576 image tokens); random weights, for benchmarks",
    ),
    "llava-1.5-13b": (
        dict(image_size=336, patch_size=14, hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
             num_attention_heads=16, projection_dim=768, hidden_act="quick_gelu", layer_norm_eps=1e-5),
        dict(hidden_size=5120, intermediate_size=13824, num_hidden_layers=40, num_attention_heads=40,
             num_key_value_heads=40, max_position_embeddings=4096, rms_norm_eps=1e-5, vocab_size=32064,
             pad_token_id=32001, bos_token_id=1, eos_token_id=2),
        dict(vision_feature_layer=-2, image_token_index=32000),
        "llava-hf/llava-1.5-13b-hf architecture (the 7B's CLIP tower, a 40-layer 5120-wide Llama); random "
        "weights, for the multi-GPU (FSDP) benchmarks",
    ),
}

PRESET_NAMES = tuple(_PRESETS)


def preset_description(name: str) -> str:
    """One line saying what a preset is for."""
    return _get(name)[3]


def _get(name: str):
    if name not in _PRESETS:
        raise SeedVLMError(f"unknown preset {name!r}; choose one of {', '.join(PRESET_NAMES)}")
    return _PRESETS[name]


def preset_config(name: str, vocab_size: int | None = None, image_token_index: int | None = None,
                  pad_token_id: int | None = None, bos_token_id: int | None = None,
                  eos_token_id: int | None = None) -> LlavaConfig:
    """A `LlavaConfig` for a preset; token ids and vocab size come from the tokenizer when given.

    No weights are built: `num_image_tokens(preset_config("llava-1.5-7b"))` is 576 at no memory cost.
    """
    vision_kw, text_kw, llava_kw, _ = _get(name)
    text_kw = dict(text_kw)
    for key, val in (("vocab_size", vocab_size), ("pad_token_id", pad_token_id),
                     ("bos_token_id", bos_token_id), ("eos_token_id", eos_token_id)):
        if val is not None:
            text_kw[key] = val
    llava_kw = dict(llava_kw)
    if image_token_index is not None:
        llava_kw["image_token_index"] = image_token_index
    vision = CLIPVisionConfig(**vision_kw)
    text = LlamaConfig(**text_kw)
    cfg = LlavaConfig(
        vision_config=vision, text_config=text, projector_hidden_act="gelu",
        vision_feature_select_strategy="default", multimodal_projector_bias=True,
        tie_word_embeddings=False, **llava_kw,
    )
    cfg.text_config.tie_word_embeddings = False
    return cfg


def num_image_tokens(config: LlavaConfig) -> int:
    """Image tokens the LM sees per image: one per patch ("default" strategy drops CLIP's CLS token)."""
    v = config.vision_config
    n = (v.image_size // v.patch_size) ** 2
    return n if config.vision_feature_select_strategy == "default" else n + 1
