"""The image processor, the LlavaProcessor and the LLaVA-1.5 chat template for models the project builds.

The processor expands `<image>` to exactly the vision tower's patch count (CLS dropped by the "default" strategy),
so no image token is ever truncated or left over.
"""

from __future__ import annotations

from transformers import CLIPImageProcessor, LlavaConfig, LlavaProcessor, PreTrainedTokenizerBase

# LLaVA-1.5's conversation format: "USER: <image>\n{question} ASSISTANT: {answer}</s>".
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ 'USER: ' }}{% elif message['role'] == 'assistant' %}{{ 'ASSISTANT: ' }}"
    "{% endif %}"
    "{% if message['content'] is string %}{{ message['content'] + ' ' }}{% else %}"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}{{ '<image>\n' }}{% endif %}{% endfor %}"
    "{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] + ' ' }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{% if message['role'] == 'assistant' %}{{ eos_token }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)

# CLIP's normalization, as LLaVA-1.5 uses.
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def build_image_processor(image_size: int) -> CLIPImageProcessor:
    """Resize the short side to `image_size`, center-crop a square, scale to [0, 1], normalize with CLIP's stats."""
    return CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size},
        do_resize=True, do_center_crop=True, do_rescale=True, do_normalize=True, do_convert_rgb=True,
        image_mean=CLIP_MEAN, image_std=CLIP_STD, resample=3,
    )


def build_processor(tokenizer: PreTrainedTokenizerBase, config: LlavaConfig) -> LlavaProcessor:
    """A LlavaProcessor consistent with `config`: same patch size, same feature-select strategy, CLS counted."""
    return LlavaProcessor(
        image_processor=build_image_processor(config.vision_config.image_size),
        tokenizer=tokenizer,
        patch_size=config.vision_config.patch_size,
        vision_feature_select_strategy=config.vision_feature_select_strategy,
        num_additional_image_tokens=1,
        chat_template=CHAT_TEMPLATE,
    )


def chat_prompt(processor, question: str, style=None) -> str:
    """The generation prompt for one image and one question in a prompt style (`seedvlm.models.prompting`; default
    `hf`, the processor's own chat template: "USER: <image>\\n{question} ASSISTANT:")."""
    from seedvlm.models.prompting import render_conversation

    return render_conversation(processor, style, [(question, None)])[0]
