"""Qwen2-VL and Qwen2.5-VL (`Qwen2VLForConditionalGeneration`, `Qwen2_5_VLForConditionalGeneration`): dynamic
resolution. An image is resized to multiples of patch * merge within [min_pixels, max_pixels] and flattened into
patch rows (pixel_values (sum of t*h*w over images, C * temporal_patch * patch^2), `image_grid_thw` (images, 3));
the language model sees t*h*w / merge^2 `<|image_pad|>` tokens per image, with M-RoPE positions computed by the
model from the grids. Turns are ChatML: "<|im_start|>role\\n...<|im_end|>\\n". In training the student takes the
teacher's image features exactly (`features`): the grids and `mm_token_type_ids` stay in its inputs, so its M-RoPE
positions are the pixel path's."""

from __future__ import annotations

from seedvlm.models.families._common import size_value
from seedvlm.models.families.base import ELEMENTWISE_PERTURBATIONS, Family, FamilyOption
from seedvlm.options import positive_int

IM_START, IM_END, ENDOFTEXT = "<|im_start|>", "<|im_end|>", "<|endoftext|>"
VISION_START, VISION_END, IMAGE_PAD, VIDEO_PAD = "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"

# Qwen2's special tokens in their published order (ids 151643.. in the real vocabulary).
SPECIAL_TOKENS = (
    ENDOFTEXT, IM_START, IM_END, "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>", "<|box_end|>",
    "<|quad_start|>", "<|quad_end|>", VISION_START, VISION_END, "<|vision_pad|>", IMAGE_PAD, VIDEO_PAD,
)

# The chat template published with Qwen2-VL-Instruct and Qwen2.5-VL-Instruct.
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def grid_thw(height: int, width: int, patch: int, merge: int, min_pixels: int, max_pixels: int,
             temporal: int = 1) -> tuple[int, int, int]:
    """The (t, h, w) patch grid of one image: smart_resize to multiples of patch * merge inside
    [min_pixels, max_pixels] (transformers' own function), then one patch per patch x patch square."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    h, w = smart_resize(height, width, factor=patch * merge, min_pixels=min_pixels, max_pixels=max_pixels)
    return temporal, h // patch, w // patch


def _token_count(processor, size: tuple[int, int]) -> int:
    """t * h * w / merge^2 for the image's grid (a still image has t = 1)."""
    ip = processor.image_processor
    t, h, w = grid_thw(size[0], size[1], ip.patch_size, ip.merge_size,
                       size_value(ip.size, "shortest_edge"), size_value(ip.size, "longest_edge"))
    return t * h * w // ip.merge_size ** 2


FAMILY = Family(
    name="qwen2_vl",
    description="Qwen2-VL and Qwen2.5-VL (dynamic resolution, M-RoPE, ChatML turns)",
    model_types=("qwen2_vl", "qwen2_5_vl"),
    architectures=("Qwen2VLForConditionalGeneration", "Qwen2_5_VLForConditionalGeneration"),
    processor_classes=("Qwen2VLProcessor", "Qwen2_5_VLProcessor"),
    image_processor_types=("Qwen2VLImageProcessor", "Qwen2VLImageProcessorFast", "Qwen2VLImageProcessorPil"),
    pixel_keys=("pixel_values",),
    metadata_keys=("image_grid_thw",),
    perturbations=ELEMENTWISE_PERTURBATIONS,
    language_model="language_model",
    end_of_turn=lambda processor: IM_END,
    extra_stop_tokens=lambda processor: (ENDOFTEXT,),
    image_expansion=lambda processor, size: IMAGE_PAD * _token_count(processor, size),
    image_token_count=_token_count,
    image_placeholder=lambda processor: IMAGE_PAD,
    default_template=lambda config: CHAT_TEMPLATE,
    options={"min_pixels": FamilyOption(positive_int, "smallest image area in pixels after resizing (smaller "
                                                      "images are upscaled; the folder's own value by default)"),
             "max_pixels": FamilyOption(positive_int, "largest image area in pixels after resizing (larger images "
                                                      "are downscaled: fewer image tokens; the folder's own value "
                                                      "by default)")},
    flattened_patches=True,
    processor_settings=lambda config: {"patch_size": config.vision_config.patch_size,
                                       "merge_size": config.vision_config.spatial_merge_size,
                                       "temporal_patch_size": config.vision_config.temporal_patch_size},
    perturbation_note="pixel_values are flattened patch rows, not (C, H, W) images, so patch masking would need "
                      "its own layout",
)
