"""Token accounting per family: a training example's input ids and labels for a multi-turn conversation with
images, built from the image sizes alone (no pixels processed), so every example's exact length is known before
training and nothing is ever truncated.

input ids = the tokenization of the whole chat-template-rendered conversation with each image placeholder expanded
the way the family's processor expands it; labels = the assistant answers and their end-of-turn tokens, -100
elsewhere."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from seedvlm.errors import SeedVLMError
from seedvlm.models.families.base import Family

IGNORE_INDEX = -100
_PROBE = [{"role": "user", "content": [{"type": "text", "text": "q"}]},
          {"role": "assistant", "content": [{"type": "text", "text": "a"}]}]


@dataclass(frozen=True)
class Example:
    """One training example: ids and labels of equal length (`len(example)` is its exact length)."""

    input_ids: list[int]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.input_ids)


def render(processor, messages: Sequence[dict], template: str, add_generation_prompt: bool = False) -> str:
    """The conversation as text through a chat template (image placeholders not yet expanded)."""
    return processor.tokenizer.apply_chat_template(list(messages), chat_template=template, tokenize=False,
                                                   add_generation_prompt=add_generation_prompt)


def training_template(family: Family, processor, config: dict | None = None) -> str:
    """The folder's own chat template when it closes an assistant turn with the family's end-of-turn token (so the
    labels can include it), else the family's template for this config (e.g. llava-hf's LLaVA-NeXT templates end
    an answer with nothing; the original conversation formats end it with </s>)."""
    from jinja2 import TemplateError

    own = getattr(processor, "chat_template", None) or getattr(processor.tokenizer, "chat_template", None)
    eot = family.end_of_turn(processor)
    if isinstance(own, str):
        try:
            probe = render(processor, _PROBE, own)
        except (TemplateError, ValueError, TypeError, KeyError):  # a template that cannot render a plain turn
            probe = ""
        if probe.rstrip().endswith("a" + eot):
            return own
    return family.default_template(config or {})


def expand_images(family: Family, processor, text: str, image_sizes: Sequence[tuple[int, int]]) -> str:
    """`text` with its k-th image placeholder replaced by what the family's processor makes of image k."""
    parts = text.split(family.image_placeholder(processor))
    if len(parts) - 1 != len(image_sizes):
        raise SeedVLMError(f"the conversation has {len(parts) - 1} image(s) but {len(image_sizes)} image size(s) "
                           f"were given")
    out = [parts[0]]
    for size, rest in zip(image_sizes, parts[1:]):
        out += [family.image_expansion(processor, tuple(size)), rest]
    return "".join(out)


def _ids(processor, text: str) -> list[int]:
    return list(processor.tokenizer(text, add_special_tokens=True)["input_ids"])


def example_length(family: Family, processor, messages: Sequence[dict], image_sizes: Sequence[tuple[int, int]],
                   template: str | None = None) -> int:
    """The exact token length of a conversation as a training example (images counted from their sizes)."""
    template = template or training_template(family, processor)
    return len(_ids(processor, expand_images(family, processor, render(processor, messages, template), image_sizes)))


def build_example(family: Family, processor, messages: Sequence[dict], image_sizes: Sequence[tuple[int, int]],
                  template: str | None = None) -> Example:
    """Input ids of the whole rendered conversation and labels covering exactly each assistant answer and its
    end-of-turn token. Each answer starts where the conversation up to it, rendered with the generation prompt,
    ends; a template whose prefix does not tokenize as a prefix of the whole is refused, never guessed."""
    template = template or training_template(family, processor)
    placeholder = family.image_placeholder(processor)
    eot_id = processor.tokenizer.convert_tokens_to_ids(family.end_of_turn(processor))
    full = render(processor, messages, template)
    ids = _ids(processor, expand_images(family, processor, full, image_sizes))
    labels = [IGNORE_INDEX] * len(ids)
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prefix = render(processor, messages[:i], template, add_generation_prompt=True)
        n_images = prefix.count(placeholder)
        prefix_ids = _ids(processor, expand_images(family, processor, prefix, image_sizes[:n_images]))
        start = len(prefix_ids)
        if ids[:start] != prefix_ids:
            raise SeedVLMError(f"the chat template does not tokenize turn {i} as a prefix of the conversation; "
                               f"labels cannot be placed exactly")
        try:
            end = ids.index(eot_id, start)
        except ValueError:
            raise SeedVLMError(f"assistant turn {i} is not closed by {family.end_of_turn(processor)!r} in the "
                               f"rendered conversation") from None
        labels[start:end + 1] = ids[start:end + 1]
    return Example(ids, labels)
