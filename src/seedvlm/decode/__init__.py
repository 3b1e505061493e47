"""Inference-time decoding methods. `contrastive_generate` decodes with the clean-vs-noisy image contrast of
docs/design.md section 3 (one 2B forward per step; greedy, sampling and beam search); `contrastive_logits` is its rule.
Fast evaluation: `prefix` (image-prefix reuse), `static` (static-cache, compiled decoding), `plain` (one HF generate
batch with both and the first-token logits)."""

from seedvlm.decode.contrastive import (
    DEFAULT_DDPM_STEP,
    DEFAULT_GAUSSIAN_ALPHA,
    STRATEGIES,
    contrastive_generate,
    contrastive_logits,
    noisy_pixel_values,
)

__all__ = ["DEFAULT_DDPM_STEP", "DEFAULT_GAUSSIAN_ALPHA", "STRATEGIES", "contrastive_generate",
           "contrastive_logits", "noisy_pixel_values"]
