"""LLaVA-NeXT (llava-v1.6, `LlavaNextForConditionalGeneration`): anyres tiling. Each image is resized to the best
of `image_grid_pinpoints`, cut into base-size tiles plus one whole-image view (pixel_values (B, tiles, C, H, W),
the real tile count per image given by `image_sizes`); its token count depends on the image's size.

Chat variants follow the language model: Vicuna ("USER: <image>\\nQ ASSISTANT: A</s>") for a Llama text model,
Mistral ("[INST] <image>\\nQ [/INST] A</s>") for a Mistral one; both end a turn with </s>. In training the student
takes the teacher's packed image features (newline features included) exactly (`features`)."""

from __future__ import annotations

from seedvlm.errors import SeedVLMError
from seedvlm.models.families._common import eos_token, image_token, no_extra_stops, repeat_image_token, size_value
from seedvlm.models.families.base import Family
from seedvlm.models.families.llava import processor_settings as _llava_settings

# Jinja pieces shared by both variants: all images of a message first, then its text (as llava-hf's templates do).
_IMAGES = "{% if message['content'] is not string %}{% for part in message['content'] %}" \
          "{% if part['type'] == 'image' %}{{ '<image>\n' }}{% endif %}{% endfor %}{% endif %}"
_TEXT = "{% if message['content'] is string %}{{ message['content'] }}{% else %}" \
        "{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}" \
        "{% endfor %}{% endif %}"

VICUNA_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}" + _TEXT + "{{ ' ' }}"
    "{% elif message['role'] == 'user' %}{{ 'USER: ' }}" + _IMAGES + _TEXT + "{{ ' ' }}"
    "{% else %}{{ 'ASSISTANT: ' }}" + _TEXT + "{{ eos_token }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)

MISTRAL_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' }}" + _IMAGES + _TEXT + "{{ ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' ' }}" + _TEXT + "{{ eos_token }}"
    "{% else %}" + _TEXT + "{{ ' ' }}{% endif %}"
    "{% endfor %}"
)

_VARIANTS = {"llama": ("vicuna", VICUNA_TEMPLATE), "mistral": ("mistral", MISTRAL_TEMPLATE)}


def variant(config: dict) -> str:
    """"vicuna" or "mistral", from the text model's type (no flag needed)."""
    return _VARIANTS[_text_type(config)][0]


def _text_type(config: dict) -> str:
    return (config.get("text_config") or {}).get("model_type", "llama")


def _check_config(config: dict, where: str) -> None:
    t = _text_type(config)
    if t not in _VARIANTS:
        raise SeedVLMError(f"{where}: LLaVA-NeXT with a {t!r} language model is not supported (supported: the "
                           f"Vicuna (llama) and Mistral variants)")


def _template(config: dict) -> str:
    return _VARIANTS[_text_type(config)][1]


def anyres_feature_count(orig_h: int, orig_w: int, tile_h: int, tile_w: int, patch: int,
                         best_h: int, best_w: int) -> int:
    """Image features of one anyres image (before the CLS adjustment): the base tile's patches, plus the tiled
    view's patch grid with the letterbox padding removed, plus one newline feature per remaining row.

        grid (gh, gw) = (tile_h / p * best_h / tile_h, tile_w / p * best_w / tile_w)
        the side the image does not fill loses 2 * floor((g - round(g_other * side / other_side)) / 2) rows/cols
        features = tile_h/p * tile_w/p + gh' * gw' + gh'
    """
    ph, pw = tile_h // patch, tile_w // patch
    gh, gw = ph * (best_h // tile_h), pw * (best_w // tile_w)
    if orig_w / orig_h > gw / gh:
        new_h = int(round(orig_h * (gw / orig_w), 7))
        gh -= 2 * ((gh - new_h) // 2)
    else:
        new_w = int(round(orig_w * (gh / orig_h), 7))
        gw -= 2 * ((gw - new_w) // 2)
    return ph * pw + gh * gw + gh


def _token_count(processor, size: tuple[int, int]) -> int:
    from transformers.image_processing_utils import select_best_resolution

    ip = processor.image_processor
    tile_h, tile_w = size_value(ip.crop_size, "height"), size_value(ip.crop_size, "width")
    best_h, best_w = select_best_resolution(list(size), ip.image_grid_pinpoints)
    n = anyres_feature_count(size[0], size[1], tile_h, tile_w, processor.patch_size, best_h, best_w)
    n += processor.num_additional_image_tokens
    return n - 1 if processor.vision_feature_select_strategy == "default" else n


def _settings(config) -> dict:
    return {**_llava_settings(config), "image_grid_pinpoints": [list(p) for p in config.image_grid_pinpoints]}


FAMILY = Family(
    name="llava_next",
    description="LLaVA-NeXT / llava-v1.6 (anyres tiling; Vicuna and Mistral variants)",
    model_types=("llava_next",),
    architectures=("LlavaNextForConditionalGeneration",),
    processor_classes=("LlavaNextProcessor",),
    image_processor_types=("LlavaNextImageProcessor", "LlavaNextImageProcessorFast", "LlavaNextImageProcessorPil"),
    pixel_keys=("pixel_values",),
    metadata_keys=("image_sizes",),
    perturbations=("gaussian", "ddpm", "mask"),
    language_model="language_model",
    end_of_turn=eos_token,
    extra_stop_tokens=no_extra_stops,
    image_expansion=repeat_image_token(_token_count),
    image_token_count=_token_count,
    image_placeholder=image_token,
    default_template=_template,
    check_config=_check_config,
    processor_settings=_settings,
    perturbation_note="every tile is a (C, H, W) image; padding tiles beyond image_sizes are dropped by the model",
)
