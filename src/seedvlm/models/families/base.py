"""What the project needs to know about one model family: how to recognise its folders, which inputs are pixels,
which perturbations and LoRA targets it takes, how it renders a chat and ends a turn, and how many tokens an image
becomes. Every family module builds one `Family`; nothing here loads weights."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from seedvlm.errors import SeedVLMError

ATTENTION_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")

# The perturbation kinds of seedvlm.seed.PERTURBATIONS; a family lists the ones its pixel layout can take.
ELEMENTWISE_PERTURBATIONS = ("gaussian", "ddpm")


@dataclass(frozen=True)
class FamilyOption:
    """A user option of a family, passed to its processor as a keyword (e.g. Qwen's max_pixels): how a command-line
    value is read and what it means, in one line."""

    parse: Callable[[str], Any]
    help: str


def lm_attention_regex(language_model: str, targets: Sequence[str] = ATTENTION_PROJECTIONS) -> str:
    """peft full-match regex for `targets` inside the module called `language_model` (never the vision tower)."""
    names = "|".join(re.escape(t) for t in targets)
    return rf".*\b{re.escape(language_model)}\..*\.({names})"


@dataclass(frozen=True)
class Family:
    """One model family. Callables take the loaded processor (and, where said, an image size (height, width))."""

    name: str
    description: str
    model_types: tuple[str, ...]
    architectures: tuple[str, ...]
    processor_classes: tuple[str, ...]
    image_processor_types: tuple[str, ...]
    pixel_keys: tuple[str, ...]
    metadata_keys: tuple[str, ...]
    perturbations: tuple[str, ...]
    language_model: str
    # processor -> the end-of-turn token string (labelled with the answer; generation stops there)
    end_of_turn: Callable[[Any], str]
    # processor -> extra stop token strings besides the end-of-turn token
    extra_stop_tokens: Callable[[Any], tuple[str, ...]]
    # (processor, (height, width)) -> the text that one image placeholder becomes in the model's input
    image_expansion: Callable[[Any, tuple[int, int]], str]
    # (processor, (height, width)) -> number of image-feature tokens (the model's image token) for one image
    image_token_count: Callable[[Any, tuple[int, int]], int]
    # processor -> the placeholder the chat template writes for one image
    image_placeholder: Callable[[Any], str]
    # config dict -> the chat template the family trains with when a folder's own does not close assistant turns
    default_template: Callable[[dict], str]
    # options a user may set for this family (processor keyword -> FamilyOption), e.g. Qwen's min/max pixels
    options: dict[str, FamilyOption] = field(default_factory=dict)
    # config dict -> None, or raise SeedVLMError naming what in the config this family cannot take
    check_config: Callable[[dict, str], None] | None = None
    perturbation_note: str = ""
    # transformers config -> processor settings it implies ({"patch_size": 14, ...}); a saved processor that
    # disagrees is refused before weights load
    processor_settings: Callable[[Any], dict] | None = None
    # True where pixel_values are patch rows of all images (not batched by sample), split by the image grids
    flattened_patches: bool = False
    # True where all-zero pixel tiles mean batch padding (the model drops them), so a perturbation must keep them 0
    zero_padding_tiles: bool = False

    def lora_target_regex(self, targets: Sequence[str] = ATTENTION_PROJECTIONS) -> str:
        """The LoRA target regex: the language model's attention projections only."""
        return lm_attention_regex(self.language_model, targets)

    def check_perturbation(self, kind: str) -> str:
        """`kind` if this family's pixel layout can take it, else a one-line SeedVLMError."""
        if kind not in self.perturbations:
            note = f" ({self.perturbation_note})" if self.perturbation_note else ""
            raise SeedVLMError(f"perturbation {kind!r} is not available for {self.name} models{note}; "
                               f"choose one of {', '.join(self.perturbations)}")
        return kind

    def check_options(self, options: dict | None) -> dict:
        """The options, if every one belongs to this family; else a one-line SeedVLMError naming the stray one."""
        options = dict(options or {})
        stray = sorted(set(options) - set(self.options))
        if stray:
            known = ", ".join(self.options) or "none"
            raise SeedVLMError(f"option {stray[0]!r} does not apply to {self.name} models (their options: {known})")
        return options

    def stop_token_ids(self, processor) -> list[int]:
        """Token ids generation stops at: the end-of-turn token first, then the family's extra ones."""
        tok = processor.tokenizer
        ids: list[int] = []
        for t in (self.end_of_turn(processor), *self.extra_stop_tokens(processor)):
            i = tok.convert_tokens_to_ids(t)
            if i is None or i == tok.unk_token_id:
                raise SeedVLMError(f"the tokenizer has no {t!r} token, which {self.name} models stop at")
            if i not in ids:
                ids.append(i)
        return ids
