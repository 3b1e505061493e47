"""SmolVLM and Idefics3 (`SmolVLMForConditionalGeneration`, `Idefics3ForConditionalGeneration`: one architecture;
SmolVLM-256M/500M-Instruct were published with Idefics3's classes, SmolVLM2 with its own): an image is
resized, split into a rows x cols grid of square tiles plus one downscaled global view, each tile a (C, H, W)
image (pixel_values (B, tiles, C, H, W), `pixel_attention_mask` marking real pixels; all-zero tiles are batch
padding and are dropped by the model). Each tile becomes `image_seq_len` `<image>` tokens (pixel shuffle), framed
by `<fake_token_around_image>` and a `<row_r_col_c>` / `<global-img>` marker. Turns end with <end_of_utterance>.
In training the student takes the teacher's per-sample connector outputs exactly (`features`)."""

from __future__ import annotations

from seedvlm.config import boolean
from seedvlm.models.families.base import Family, FamilyOption

END_OF_UTTERANCE, FAKE_IMAGE, GLOBAL_IMAGE, IMAGE = (
    "<end_of_utterance>", "<fake_token_around_image>", "<global-img>", "<image>")

# The chat template published with SmolVLM-256M/500M-Instruct.
CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{ line['text'] }}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)


def tile_grid(processor, size: tuple[int, int]) -> tuple[int, int]:
    """(rows, cols) of the split tiles for an image of `size`; (0, 0) when the image is not split."""
    _, rows, cols = processor.image_processor.get_number_of_image_patches(size[0], size[1], {})
    return rows, cols


def _expansion(processor, size: tuple[int, int]) -> str:
    from transformers.models.smolvlm.processing_smolvlm import get_image_prompt_string

    rows, cols = tile_grid(processor, size)
    # Idefics3Processor calls it global_image_tag; both processors build the same string
    global_token = getattr(processor, "global_image_token", None) or processor.global_image_tag
    return get_image_prompt_string(rows, cols, processor.image_seq_len, processor.fake_image_token,
                                   processor.image_token, global_token)


def _token_count(processor, size: tuple[int, int]) -> int:
    """image_seq_len tokens per tile, the global view included."""
    rows, cols = tile_grid(processor, size)
    return processor.image_seq_len * (rows * cols + 1)


def _extra_stops(processor) -> tuple[str, ...]:
    eos = processor.tokenizer.eos_token
    return () if eos in (None, END_OF_UTTERANCE) else (eos,)


def _settings(config) -> dict:
    """image_seq_len = tile patches / scale_factor^2 (pixel shuffle)."""
    v = config.vision_config
    return {"image_seq_len": (v.image_size // v.patch_size) ** 2 // config.scale_factor ** 2}


FAMILY = Family(
    name="smolvlm",
    description="SmolVLM / Idefics3 (SigLIP + a Llama-style LM; image splitting, pixel shuffle)",
    model_types=("smolvlm", "idefics3"),
    architectures=("SmolVLMForConditionalGeneration", "Idefics3ForConditionalGeneration"),
    processor_classes=("SmolVLMProcessor", "Idefics3Processor"),
    image_processor_types=("SmolVLMImageProcessor", "SmolVLMImageProcessorFast", "SmolVLMImageProcessorPil",
                           "Idefics3ImageProcessor", "Idefics3ImageProcessorFast", "Idefics3ImageProcessorPil"),
    pixel_keys=("pixel_values",),
    metadata_keys=("pixel_attention_mask",),
    perturbations=("gaussian", "ddpm", "mask"),
    language_model="text_model",
    end_of_turn=lambda processor: END_OF_UTTERANCE,
    extra_stop_tokens=_extra_stops,
    image_expansion=_expansion,
    image_token_count=_token_count,
    image_placeholder=lambda processor: IMAGE,
    default_template=lambda config: CHAT_TEMPLATE,
    options={"do_image_splitting": FamilyOption(boolean, "split large images into tiles plus a global view (true) "
                                                         "or not (false); the folder's own value by default")},
    zero_padding_tiles=True,
    processor_settings=_settings,
    perturbation_note="all-zero padding tiles must stay zero: the model drops a tile only when it is all zeros",
)
