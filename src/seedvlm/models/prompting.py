"""Prompt styles: how a conversation becomes the model's text, and how its image is prepared.

- `hf`: the model folder's own chat template ("USER: <image>\\n{q} ASSISTANT:"), no system prompt, llava-hf's image
  processor as is (resize the short side, center-crop), no POPE suffix.
- `llava-1.5`: LLaVA-1.5's own protocol, the one its published numbers used: the Vicuna v1 conversation with its
  system prompt, POPE questions suffixed with "Answer the question using a single word or phrase.", and the image
  padded to a square with the CLIP mean colour before the processor (LLaVA's `image_aspect_ratio: pad`), so nothing
  is cropped away.

Training and evaluation must use the style the model was trained with; results record the style used.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from PIL import Image

from seedvlm.choices import PromptStyle as PromptStyleName
from seedvlm.choices import values
from seedvlm.errors import SeedVLMError
from seedvlm.io import read_json

log = logging.getLogger(__name__)

VICUNA_V1_SYSTEM = ("A chat between a curious human and an artificial intelligence assistant. "
                    "The assistant gives helpful, detailed, and polite answers to the human's questions.")
SHORT_ANSWER_SUFFIX = "\nAnswer the question using a single word or phrase."


@dataclass(frozen=True)
class PromptStyle:
    """One prompt protocol: system prompt (None = none), POPE suffix, and whether images are padded to a square."""

    name: str
    system: str | None
    pope_suffix: str
    pad_to_square: bool

    def describe(self) -> dict:
        """What the results files record about the protocol."""
        return {"prompt_style": self.name, "system_prompt": self.system, "pope_suffix": self.pope_suffix,
                "image_preprocessing": ("pad to square with the CLIP mean colour, then the processor"
                                        if self.pad_to_square else "the processor's resize + center crop")}


STYLES = {
    "hf": PromptStyle("hf", None, "", False),
    "llava-1.5": PromptStyle("llava-1.5", VICUNA_V1_SYSTEM, SHORT_ANSWER_SUFFIX, True),
}
STYLE_NAMES = values(PromptStyleName)


def get_style(style: str | PromptStyle | None) -> PromptStyle:
    """A PromptStyle from its name (None = "hf")."""
    if isinstance(style, PromptStyle):
        return style
    name = style or "hf"
    if name not in STYLES:
        raise SeedVLMError(f"unknown prompt style {name!r}; choose one of {', '.join(STYLE_NAMES)}")
    return STYLES[name]


def _image_token(processor) -> str:
    return getattr(processor, "image_token", None) or "<image>"


def user_turn(processor, style: str | PromptStyle | None, question: str, with_image: bool) -> str:
    """One user turn up to the assistant's cue: "USER: [<image>\\n]{question} ASSISTANT:".

    `hf` renders it with the folder's chat template (a folder without one gets the LLaVA-1.5 form); `llava-1.5`
    always uses the Vicuna v1 form, whatever the folder's template says."""
    image = f"{_image_token(processor)}\n" if with_image else ""
    if get_style(style).name == "hf" and getattr(processor, "chat_template", None):
        content = ([{"type": "image"}] if with_image else []) + [{"type": "text", "text": question}]
        return processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
    return f"USER: {image}{question} ASSISTANT:"


def render_conversation(processor, style: str | PromptStyle | None,
                        turns: Sequence[tuple[str, str | None]]) -> tuple[str, list[tuple[int, int]]]:
    """The whole conversation as one string, and the character span of each answer (its text and the EOS after it).

    turns: (question, answer) pairs, the image in the first question; an answer of None ends the text at the
    assistant's cue (a generation prompt). Between turns: " {answer}{eos}" then the next user turn, as LLaVA's
    Vicuna v1 conversation joins them."""
    s = get_style(style)
    eos = processor.tokenizer.eos_token
    text = f"{s.system} " if s.system else ""
    spans: list[tuple[int, int]] = []
    for k, (question, answer) in enumerate(turns):
        text += user_turn(processor, s, question, with_image=k == 0)
        if answer is None:
            break
        start = len(text) + 1
        text += f" {answer}{eos}"
        spans.append((start, len(text)))
    return text, spans


def expand_to_square(image: Image.Image, fill: Sequence[float]) -> Image.Image:
    """The image centred on a square canvas of its longer side, filled with `fill` (RGB in 0..1), as LLaVA's
    `expand2square` does."""
    w, h = image.size
    if w == h:
        return image
    side = max(w, h)
    canvas = Image.new("RGB", (side, side), tuple(int(c * 255) for c in fill))
    canvas.paste(image, ((side - w) // 2, (side - h) // 2))
    return canvas


def prepare_image(processor, style: str | PromptStyle | None, image: Image.Image) -> Image.Image:
    """The image as the style feeds it to the processor: padded to a square with the image processor's mean
    colour for `llava-1.5`, unchanged for `hf`."""
    if not get_style(style).pad_to_square:
        return image
    return expand_to_square(image, processor.image_processor.image_mean)


def warn_if_not_trained_style(adapter: str | Path | None, style: str | PromptStyle | None) -> None:
    """Warn when an adapter was trained (its train_config.json) with another prompt style than the one in use."""
    if adapter is None or not (Path(adapter) / "train_config.json").is_file():
        return
    trained = read_json(Path(adapter) / "train_config.json", "adapter training config").get("prompt_style", "hf")
    if trained != get_style(style).name:
        log.warning("adapter %s was trained with prompt style %s, and is used here with %s; pass --prompt-style %s "
                    "to use it as it was trained", adapter, trained, get_style(style).name, trained)
