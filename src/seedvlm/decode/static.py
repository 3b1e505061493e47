"""The static-cache decode path: HF `generate` with a preallocated `StaticCache` (fixed shapes), so the decode step
can be compiled (`torch.compile` through transformers' CompileConfig, CUDA graphs with "reduce-overhead").

The cache length is rounded up to a bucket so that batches of slightly different prompt lengths reuse one compiled
graph, and `length_order` groups prompts of similar length into the same batches. Compiling is on by default only on
CUDA: on CPU compiling the tiny preset's step costs minutes and saves nothing measurable (docs/evaluation.md, "Fast
evaluation"); `compile=True` forces it anywhere.
"""

from __future__ import annotations

from typing import Sequence

import torch

CACHE_BUCKET = 64
"""Static cache lengths are multiples of this many tokens."""


def compile_by_default(device: torch.device | str) -> bool:
    """Whether the static path compiles its decode step unless told: on CUDA only."""
    return torch.device(device).type == "cuda"


def cache_length(prompt_length: int, max_new_tokens: int, bucket: int = CACHE_BUCKET) -> int:
    """Tokens the static cache holds: prompt plus new tokens, rounded up to a multiple of `bucket`."""
    need = int(prompt_length) + int(max_new_tokens)
    return -(-need // bucket) * bucket


def static_generate_kwargs(model, prompt_length: int, max_new_tokens: int, compile: bool | None = None) -> dict:
    """Keyword arguments that make `model.generate` decode with a static cache (compiled when `compile`, default:
    `compile_by_default(device)`)."""
    from transformers import StaticCache
    from transformers.generation import CompileConfig

    from seedvlm.decode.prefix import cache_kwarg

    device = next(model.parameters()).device
    compile = compile_by_default(device) if compile is None else bool(compile)
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
