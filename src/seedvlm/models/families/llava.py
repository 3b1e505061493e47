"""LLaVA-1.5 (llava-hf `LlavaForConditionalGeneration`): the project's original path, described here so that the
family-aware code can treat it like the others. One fixed-size image, one `<image>` token per vision patch."""

from __future__ import annotations

from seedvlm.models.families._common import eos_token, image_token, no_extra_stops, repeat_image_token, size_value
from seedvlm.models.families.base import Family


def _token_count(processor, size: tuple[int, int]) -> int:
    """Patches of the center-cropped square (independent of the image size), plus CLS unless "default" drops it."""
    ip = processor.image_processor
    h = size_value(ip.crop_size, "height")
    w = size_value(ip.crop_size, "width")
    n = (h // processor.patch_size) * (w // processor.patch_size) + processor.num_additional_image_tokens
    return n - 1 if processor.vision_feature_select_strategy == "default" else n


def _template(config: dict) -> str:
    from seedvlm.models.processor import CHAT_TEMPLATE

    return CHAT_TEMPLATE


def processor_settings(config) -> dict:
    """What a LLaVA-style processor must agree on with the model: the vision patch size and the CLS handling."""
    return {"patch_size": config.vision_config.patch_size,
            "vision_feature_select_strategy": config.vision_feature_select_strategy}


FAMILY = Family(
    name="llava",
    description="LLaVA-1.5 (CLIP ViT + Llama/Vicuna, one fixed-size image)",
    model_types=("llava",),
    architectures=("LlavaForConditionalGeneration",),
    processor_classes=("LlavaProcessor",),
    image_processor_types=("CLIPImageProcessor", "CLIPImageProcessorFast", "CLIPImageProcessorPil"),
    pixel_keys=("pixel_values",),
    metadata_keys=(),
    perturbations=("gaussian", "ddpm", "mask", "blur", "blank"),
    language_model="language_model",
    end_of_turn=eos_token,
    extra_stop_tokens=no_extra_stops,
    image_expansion=repeat_image_token(_token_count),
    image_token_count=_token_count,
    image_placeholder=image_token,
    default_template=_template,
    processor_settings=processor_settings,
)
