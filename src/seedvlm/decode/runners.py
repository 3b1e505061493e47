"""The KV-cache runners of decoding: one view stepped like HF `generate` (`Stepper`), and the clean and noisy
views of contrastive decoding as one 2B-row batch (`Fused`) or as two B-row batches (`Sequential`, VCD's way)."""

from __future__ import annotations

import inspect

import torch
from transformers import DynamicCache

from seedvlm.models.llava import llava_of


def base_forward_params(model) -> set[str]:
    return set(inspect.signature(llava_of(model).forward).parameters)


class Stepper:
    """Runs the model on (rows, new tokens) with a DynamicCache, the way HF `generate` does for a decoder:
    position ids = cumsum(attention_mask) - 1 (0 on left pads) at prefill, last + 1 after; the 2-D attention mask
    grows by one column per step; pixel values only at prefill; logits of the last position only. `positions`
    (input_ids, attention_mask, extra) -> prefill position ids replaces the 1-D rule for a model whose positions
    depend on the image (Qwen2-VL's M-RoPE, (3, R, L)); text tokens after the prompt then step by one in every
    component, and the row dimension is always the second to last."""

    def __init__(self, model, positions=None):
        params = base_forward_params(model)
        # transformers 5.2x renamed past_key_values -> cache (the old name is deprecated until 5.40).
        self.cache_key = "cache" if "cache" in params else "past_key_values"
        self.keep_last = "logits_to_keep" in params
        self.model = model
        self.positions = positions
        config = getattr(model, "config", None)
        try:
            self.cache = DynamicCache(config=config) if config is not None else DynamicCache()
        except (TypeError, ValueError, AttributeError):
            self.cache = DynamicCache()
        self.attention_mask: torch.Tensor | None = None
        self.position_ids: torch.Tensor | None = None

    def prefill(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, extra: dict) -> torch.Tensor:
        self.attention_mask = attention_mask
        if self.positions is not None:
            self.position_ids = self.positions(input_ids, attention_mask, extra)
        else:
            pos = attention_mask.long().cumsum(-1) - 1
            self.position_ids = pos.masked_fill(attention_mask == 0, 0)
        return self._forward(input_ids, self.position_ids, extra)

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Feed one new token per row (R,) -> next logits (R, V) float32."""
        am = self.attention_mask
        self.attention_mask = torch.cat([am, am.new_ones((am.shape[0], 1))], dim=-1)
        self.position_ids = self.position_ids[..., -1:] + 1
        return self._forward(tokens[:, None], self.position_ids, {})

    def reorder(self, index: torch.Tensor) -> None:
        """Select/reorder rows (beam search): the cache, the mask and the positions follow."""
        self.cache.reorder_cache(index)
        self.attention_mask = self.attention_mask.index_select(0, index)
        self.position_ids = self.position_ids.index_select(-2, index)

    def repeat_rows(self, k: int) -> None:
        """Row r becomes rows r*k .. r*k+k-1 (beam search after the prefill)."""
        self.cache.batch_repeat_interleave(k)
        self.attention_mask = self.attention_mask.repeat_interleave(k, dim=0)
        self.position_ids = self.position_ids.repeat_interleave(k, dim=-2)

    def _forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor, extra: dict) -> torch.Tensor:
        kwargs = dict(input_ids=input_ids, attention_mask=self.attention_mask, position_ids=position_ids,
                      use_cache=True, **extra)
        kwargs[self.cache_key] = self.cache
        if self.keep_last:
            kwargs["logits_to_keep"] = 1
        out = self.model(**kwargs)
        new_cache = getattr(out, "cache", None) if self.cache_key == "cache" else getattr(out, "past_key_values", None)
        if new_cache is not None:
            self.cache = new_cache
        return out.logits[:, -1, :].float()


class Fused:
    """Clean and noisy as one 2B-row batch: rows [0, B) clean, [B, 2B) noisy, one cache of 2B rows."""

    def __init__(self, model, positions=None):
        self.s = Stepper(model, positions)

    def prefill(self, input_ids, attention_mask, pixels, noisy, extra):
        two = {k: torch.cat([v, v]) for k, v in extra.items()}
        two["pixel_values"] = torch.cat([pixels, noisy])
        return self.s.prefill(torch.cat([input_ids, input_ids]), torch.cat([attention_mask, attention_mask]), two)

    def step(self, tokens):
        return self.s.step(torch.cat([tokens, tokens]))

    def repeat_rows(self, k):
        self.s.repeat_rows(k)

    def reorder(self, index):
        # clean rows follow `index`; the noisy half (offset by the row count) follows the same beams
        self.s.reorder(torch.cat([index, index + index.shape[0]]))


class Sequential:
    """VCD's way: two forwards of B rows per step, two caches (for the benchmark and cross-checks)."""

    def __init__(self, model, positions=None):
        self.clean, self.noisy = Stepper(model, positions), Stepper(model, positions)

    def prefill(self, input_ids, attention_mask, pixels, noisy, extra):
        a = self.clean.prefill(input_ids, attention_mask, {**extra, "pixel_values": pixels})
        b = self.noisy.prefill(input_ids, attention_mask, {**extra, "pixel_values": noisy})
        return torch.cat([a, b])

    def step(self, tokens):
        return torch.cat([self.clean.step(tokens), self.noisy.step(tokens)])

    def repeat_rows(self, k):
        self.clean.repeat_rows(k)
        self.noisy.repeat_rows(k)

    def reorder(self, index):
        self.clean.reorder(index)
        self.noisy.reorder(index)
