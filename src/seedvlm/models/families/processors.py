"""Images-only processors for families whose transformers processor also holds a video processor (Qwen2-VL,
SmolVLM). transformers' video processors need torchvision; seedvlm feeds images only, so where torchvision is
absent the processor is assembled from the folder's image processor, tokenizer and chat template, with a stand-in
that refuses videos. With torchvision installed, AutoProcessor is used as is."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from seedvlm.errors import SeedVLMError


def has_torchvision() -> bool:
    return importlib.util.find_spec("torchvision") is not None


def _video_mixin():
    """transformers' VideoProcessorMixin, made visible where the processor class check looks for it: the lazy
    `transformers` namespace leaves it out when torchvision is missing, and the check then fails for any object."""
    import transformers
    from transformers.video_processing_utils import VideoProcessorMixin

    if not hasattr(transformers, "VideoProcessorMixin"):
        setattr(transformers, "VideoProcessorMixin", VideoProcessorMixin)
    return VideoProcessorMixin


def images_only_video_processor():
    """A video processor stand-in that refuses any call with one clear line."""
    mixin = _video_mixin()

    class ImagesOnly(mixin):
        """Video inputs are not used by seedvlm; calling this means a video was passed."""

        def __call__(self, *args, **kwargs):
            raise SeedVLMError("video inputs need transformers' video processor (install torchvision)")

    return ImagesOnly()


def needs_video_processor(processor_class: str) -> bool:
    import transformers

    return "video_processor" in getattr(transformers, processor_class).get_attributes()


def processor_kwargs(folder: Path) -> dict:
    """The processor's own settings saved in processor_config.json (e.g. SmolVLM's image_seq_len)."""
    f = folder / "processor_config.json"
    if not f.is_file():
        return {}
    data = json.loads(f.read_text())
    return {k: v for k, v in data.items() if k not in ("processor_class", "image_processor", "video_processor")
            and not isinstance(v, dict)}


def read_chat_template(folder: Path) -> str | None:
    """The chat template a folder carries: chat_template.jinja, else chat_template.json, else None."""
    if (folder / "chat_template.jinja").is_file():
        return (folder / "chat_template.jinja").read_text()
    if (folder / "chat_template.json").is_file():
        return json.loads((folder / "chat_template.json").read_text()).get("chat_template")
    return None


def assemble_images_only(processor_class: str, folder: Path, options: dict):
    """`processor_class` built from the folder's image processor, tokenizer and chat template, video refused."""
    import transformers
    from transformers import AutoImageProcessor, AutoTokenizer

    cls = getattr(transformers, processor_class)
    image_processor = AutoImageProcessor.from_pretrained(folder, local_files_only=True, **options)
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    return cls(image_processor=image_processor, tokenizer=tokenizer, video_processor=images_only_video_processor(),
               chat_template=read_chat_template(folder), **processor_kwargs(folder))


def save_images_only(processor, folder: Path, processor_class: str, extra: dict | None = None) -> None:
    """Write a processor the way the hub's folders hold one: preprocessor_config.json (naming the processor
    class), the tokenizer files, chat_template.json and processor_config.json with the processor's settings."""
    processor.image_processor.save_pretrained(folder)
    processor.tokenizer.save_pretrained(folder)
    pre = folder / "preprocessor_config.json"
    data = json.loads(pre.read_text())
    data["processor_class"] = processor_class
    pre.write_text(json.dumps(data, indent=2) + "\n")
    (folder / "chat_template.json").write_text(json.dumps({"chat_template": processor.chat_template}) + "\n")
    (folder / "processor_config.json").write_text(
        json.dumps({"processor_class": processor_class, **(extra or {})}, indent=2) + "\n")
