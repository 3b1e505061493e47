"""Models: presets, the locally built tokenizer/processor, and offline loading of llava-hf checkpoints/adapters."""

import logging as _logging


class _NoTorchvisionNotice(_logging.Filter):
    """Drop transformers' notice that CLIPImageProcessor falls back to PIL without torchvision (docs/design.md
    section 9: torchvision is deliberately absent; the PIL path works and saves the same config)."""

    def filter(self, record: _logging.LogRecord) -> bool:
        return "requires torchvision" not in record.getMessage()


_logging.getLogger("transformers.utils.import_utils").addFilter(_NoTorchvisionNotice())

from seedvlm.models.loading import (
    attach_adapter,
    base_fingerprint,
    check_model_dir,
    load_for_inference,
    load_model,
    load_processor,
    random_model,
    save_model,
)
from seedvlm.models.presets import PRESET_NAMES, num_image_tokens, preset_config, preset_description
from seedvlm.models.processor import CHAT_TEMPLATE, build_image_processor, build_processor, chat_prompt
from seedvlm.models.tokenizer import build_word_tokenizer, words_of

__all__ = [
    "PRESET_NAMES", "CHAT_TEMPLATE", "attach_adapter", "base_fingerprint", "build_image_processor",
    "build_processor", "build_word_tokenizer", "chat_prompt", "check_model_dir", "load_for_inference", "load_model",
    "load_processor", "num_image_tokens", "preset_config", "preset_description", "random_model", "save_model",
    "words_of",
]
