"""Small helpers shared by the family modules: reading processor attributes that are dicts or SizeDicts, and the
token-string helpers."""

from __future__ import annotations

from typing import Any


def size_value(size: Any, key: str) -> int | None:
    """`size[key]` for an image processor's `size`/`crop_size`, whether it is a dict or transformers' SizeDict."""
    if size is None:
        return None
    if isinstance(size, dict):
        return size.get(key)
    return getattr(size, key, None)


def eos_token(processor) -> str:
    """The tokenizer's end-of-sequence token string."""
    return processor.tokenizer.eos_token


def no_extra_stops(processor) -> tuple[str, ...]:
    return ()


def image_token(processor) -> str:
    """The processor's image token ("<image>" for LLaVA-style processors)."""
    return processor.image_token


def repeat_image_token(count) -> Any:
    """An `image_expansion` made of `count(processor, size)` copies of the processor's image token."""
    return lambda processor, size: processor.image_token * count(processor, size)
