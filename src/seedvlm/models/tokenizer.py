"""A word-level tokenizer built locally from a vocabulary (no downloads), saved in the HF `tokenizer.json` format.

Words are lowercased and split on word/punctuation boundaries; `<image>` is a special token so the splitter never
breaks it; decoding joins words with spaces and glues punctuation back (`a cat .` -> `a cat.`).
"""

from __future__ import annotations

import re
from typing import Iterable

from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import WordLevel
from transformers import PreTrainedTokenizerFast

PAD, BOS, EOS, UNK, IMAGE = "<pad>", "<s>", "</s>", "<unk>", "<image>"
SPECIALS = (PAD, BOS, EOS, UNK, IMAGE)

# Words the chat template and the evaluation prompts use, whatever the world's text holds.
PROTOCOL_WORDS = (
    "user", "assistant", ":", ".", ",", "?", "!", "'", "is", "there", "a", "an", "in", "the", "image", "yes", "no",
    "answer", "or", "please", "describe", "this", "detail", "can", "you", "see", "does", "contain", "not",
)

_WORD_RE = re.compile(r"\w+|[^\w\s]")


def words_of(texts: Iterable[str]) -> list[str]:
    """The distinct lowercase words/punctuation marks of some texts, in first-seen order."""
    seen: dict[str, None] = {}
    for t in texts:
        for w in _WORD_RE.findall(t.lower()):
            seen.setdefault(w, None)
    return list(seen)


def build_word_tokenizer(words: Iterable[str], model_max_length: int = 512) -> PreTrainedTokenizerFast:
    """Build the tokenizer: specials first (pad=0, bos=1, eos=2, unk=3, <image>=4), then protocol words, then
    `words` in sorted order, so the same vocabulary always gives the same ids."""
    vocab: dict[str, int] = {}
    for tok in (*SPECIALS, *PROTOCOL_WORDS, *sorted(set(w.lower() for w in words))):
        vocab.setdefault(tok, len(vocab))
    tok = Tokenizer(WordLevel(vocab, unk_token=UNK))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation(behavior="isolated")])
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, vocab[BOS])])
    tok.add_special_tokens(list(SPECIALS))
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK,
        extra_special_tokens={"image_token": IMAGE}, model_max_length=model_max_length,
        padding_side="right", clean_up_tokenization_spaces=False,
    )
    return fast

