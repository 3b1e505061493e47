"""The static-cache decode path: HF `generate` with a preallocated `StaticCache` (fixed shapes), so the decode step
can be compiled (`torch.compile` through transformers' CompileConfig, CUDA graphs with "reduce-overhead").

The cache length is rounded up to a bucket so that batches of slightly different prompt lengths reuse one compiled
graph, and `length_order` groups prompts of similar length into the same batches. The path is opt-in (eval's
`--static-cache`): the compile costs a long first call that only a long run earns back (docs/evaluation.md, "Fast
evaluation"; measurements in docs/log.md). Once chosen it compiles unless told not to.
"""

from __future__ import annotations

from typing import Sequence

import torch
from transformers import StaticCache
from transformers.generation import CompileConfig

from seedvlm.decode.prefix import cache_kwarg
from seedvlm.decode.runners import Stepper

CACHE_BUCKET = 64
"""Static cache lengths are multiples of this many tokens."""


COMPILE_BY_DEFAULT = True
"""Whether the static path compiles its decode step unless told (see the module docstring)."""


def cache_length(prompt_length: int, max_new_tokens: int, bucket: int = CACHE_BUCKET) -> int:
    """Tokens the static cache holds: prompt plus new tokens, rounded up to a multiple of `bucket`."""
    need = int(prompt_length) + int(max_new_tokens)
    return -(-need // bucket) * bucket


def static_generate_kwargs(model, prompt_length: int, max_new_tokens: int, compile: bool | None = None) -> dict:
    """Keyword arguments that make `model.generate` decode with a static cache (compiled when `compile`, default
    COMPILE_BY_DEFAULT)."""


    compile = COMPILE_BY_DEFAULT if compile is None else bool(compile)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    cache = StaticCache(config=base.config, max_cache_len=cache_length(prompt_length, max_new_tokens))
    kwargs = {cache_kwarg(model): cache, "disable_compile": not compile}
    if compile:
        config = CompileConfig(fullgraph=False, dynamic=False)
        config._compile_all_devices = True  # transformers compiles on accelerators only unless told (e.g. CPU)
        kwargs["compile_config"] = config
    return kwargs


def length_order(lengths: Sequence[int]) -> list[int]:
    """Indices sorted by length (stable), so batches cut from them hold prompts of similar length."""
    return sorted(range(len(lengths)), key=lambda i: lengths[i])


def restore_order(items: Sequence, order: Sequence[int]) -> list:
    """Undo `length_order`: items[k] was computed for position order[k]."""
    out: list = [None] * len(order)
    for k, i in enumerate(order):
        out[i] = items[k]
    return out


def static_stepper(model, max_length: int, compile: bool | None = None) -> "StaticStepper":
    """The contrastive decoder's stepper over a StaticCache of `cache_length(max_length, 0)` tokens, its decode step
    compiled when `compile` (default COMPILE_BY_DEFAULT)."""
    compile = COMPILE_BY_DEFAULT if compile is None else bool(compile)
    return StaticStepper(model, cache_length(max_length, 0), compile)


class StaticStepper(Stepper):
    """`Stepper` over a StaticCache. After the prefill the attention mask is kept at the cache's full width (zeros
    past the tokens seen), so every decode step has the same shapes and one compiled graph serves them all."""

    def __init__(self, model, max_len: int, compile: bool):

        super().__init__(model)
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        self.cache = StaticCache(config=base.config, max_cache_len=max_len)
        self.max_len, self.seen, self.compile = max_len, 0, compile

    def prefill(self, input_ids, attention_mask, extra):
        logits = super().prefill(input_ids, attention_mask, extra)
        self.seen = attention_mask.shape[1]
        self.attention_mask = torch.nn.functional.pad(attention_mask, (0, self.max_len - self.seen))
        if self.compile:  # the prefill's shapes differ per batch: only the step is compiled
            self.model = torch.compile(self.model, fullgraph=False, dynamic=False)
        return logits

    def step(self, tokens):
        self.attention_mask[:, self.seen] = 1
        self.seen += 1
        self.position_ids = self.position_ids[:, -1:] + 1
        return self._forward(tokens[:, None], self.position_ids, {})
