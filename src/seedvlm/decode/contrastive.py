"""Inference-time contrastive decoding ("dual purification", docs/design.md section 3).

At every step the model sees the prompt twice, once with the clean image and once with a noisy copy, and the next
token is chosen from

    (1 + b) * clean_logits - b * noisy_logits,   tokens with p_clean < g * max p_clean set to -inf

[b = 1, g = 0.1, VCD's defaults]. Unlike VCD's patch of `generate`, the two passes are ONE forward of a 2B batch
(the noisy copy of the batch stacked under the clean one) with one KV cache of 2B rows, and greedy, sampling and
beam search all work. On a peft model with a SEED adapter both passes run with the adapter ("dual purification").

    from seedvlm.decode import contrastive_generate
    new_tokens = contrastive_generate(model, batch, max_new_tokens=64, eos_token_id=tok.eos_token_id,
                                      pad_token_id=tok.pad_token_id, beta=1.0, strategy="greedy")

`batch` is the processor's output (input_ids and attention_mask LEFT-padded, pixel_values) on the model's device;
the result is a (B, T_new) LongTensor of new tokens, pad_token_id after each row's eos. docs/decoding.md has the
options, the differences from VCD and the benchmark.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any, Literal, Sequence, get_args

import torch

from seedvlm.decode.prefix import prefix_runner
from seedvlm.decode.runners import Fused, Sequential
from seedvlm.decode.static import static_stepper
from seedvlm.errors import SeedVLMError
from seedvlm.seed import PERTURBATIONS, Perturbation, ddpm_alpha_bar, perturb_per_sample, purify

__all__ = ["contrastive_logits", "contrastive_generate", "noisy_pixel_values", "Strategy", "STRATEGIES",
           "DEFAULT_GAUSSIAN_ALPHA", "DEFAULT_DDPM_STEP"]

Strategy = Literal["greedy", "sample", "beam"]
STRATEGIES = get_args(Strategy)
DEFAULT_GAUSSIAN_ALPHA = 0.3
"""The reference implementation's noise level for "gaussian": x' = sqrt(0.3) x + sqrt(0.7) eps."""
DEFAULT_DDPM_STEP = 500
"""VCD's noise step for "ddpm": alpha_bar_500 = 0.7448 on VCD's schedule (seedvlm.seed.ddpm_alpha_bar)."""


def contrastive_logits(clean: torch.Tensor, noisy: torch.Tensor, beta: Any, plausibility: float | None = 0.1
                       ) -> torch.Tensor:
    """The contrastive next-token logits of docs/design.md section 3 (VCD, Leng et al. 2024, eq. 3 and 4):

        out = (1 + beta) * clean - beta * noisy
        out_v = -inf  where  softmax(clean)_v < plausibility * max_u softmax(clean)_u

    clean, noisy: (..., V) logits for the clean and the noisy image; beta: a float, or a tensor over the leading
    dims (one b per row). plausibility g in (0, 1] (VCD: 0.1); None or 0 disables the mask. The clean argmax is
    never masked, so every row keeps at least one finite entry. float32 out (float64 stays float64).
    This is `seedvlm.seed.purify(clean, noisy, beta, space="logit", plausibility=plausibility)`: the decoding
    rule and SEED's purified training target are the same function.
    """
    return purify(clean, noisy, beta, space="logit", plausibility=plausibility)


# ---------------------------------------------------------------------------------------------------------------
# The noisy image
# ---------------------------------------------------------------------------------------------------------------


def _image_key(row: torch.Tensor) -> int:
    """A 63-bit integer from an image's pixel bytes: the noise an image gets depends on the image, not on the batch."""
    data = row.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little") & ((1 << 63) - 1)


def noisy_pixel_values(pixel_values: torch.Tensor, noise: Perturbation = "gaussian", alpha: float | None = None,
                       noise_step: int = DEFAULT_DDPM_STEP, seed: int = 0, patch_size: int = 14,
                       mask_ratio: float = 0.5, blur_sigma: float = 0.03) -> torch.Tensor:
    """The perturbed copy of normalized pixel values, x' = sqrt(a) x + sqrt(1 - a) eps (seedvlm.seed.perturb).

    noise="gaussian": a = alpha [0.3, the reference implementation's]; "ddpm": a = alpha if given, else ddpm_alpha_bar(noise_step)
    [step 500 -> 0.7448, VCD's]; "mask": half the patch_size patches blanked (no alpha); "blur": a Gaussian blur
    of blur_sigma (a fraction of the width); "blank": one colour, no image at all. Each image is perturbed
    with `per_sample_generator(seed, a hash of its pixels)`, so an image gets the same noise in a batch of 1 or of
    16, at any position, on any run.
    """
    if noise not in PERTURBATIONS:
        raise SeedVLMError(f"unknown noise {noise!r}; choose one of {list(PERTURBATIONS)}")
    if noise == "gaussian":
        a = DEFAULT_GAUSSIAN_ALPHA if alpha is None else float(alpha)
        kind = "gaussian"
    elif noise == "ddpm":
        a = ddpm_alpha_bar(int(noise_step)) if alpha is None else float(alpha)
        kind = "gaussian"  # the DDPM forward process at one step is this same formula with a = alpha_bar
    else:
        a, kind = 1.0, noise
    keys = [(_image_key(pixel_values[i]),) for i in range(pixel_values.shape[0])]
    return perturb_per_sample(pixel_values, keys, kind, seed=seed, alpha=a, patch_size=patch_size,
                              mask_ratio=mask_ratio, blur_sigma=blur_sigma)


# ---------------------------------------------------------------------------------------------------------------
# Model plumbing: one forward with a KV cache, whatever the transformers version calls it
# ---------------------------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------------------------
# Token choice
# ---------------------------------------------------------------------------------------------------------------


def _eos_list(eos_token_id) -> list[int]:
    if eos_token_id is None:
        return []
    if isinstance(eos_token_id, torch.Tensor):
        return [int(x) for x in eos_token_id.reshape(-1).tolist()]
    if isinstance(eos_token_id, (list, tuple)):
        return [int(x) for x in eos_token_id]
    return [int(eos_token_id)]


def _filter_top_k_top_p(scores: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """HF's TopKLogitsWarper then TopPLogitsWarper: keep the k best, then the smallest set of tokens whose
    probability sums to >= top_p (the best token always kept); the rest -> -inf."""
    if top_k and top_k > 0:
        k = min(int(top_k), scores.shape[-1])
        kth = torch.topk(scores, k, dim=-1).values[..., -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if top_p < 1.0:
        sorted_scores, order = torch.sort(scores, descending=False, dim=-1)
        cum = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
        remove_sorted = cum <= (1.0 - top_p)
        remove_sorted[..., -1:] = False
        remove = remove_sorted.scatter(-1, order, remove_sorted)
        scores = scores.masked_fill(remove, float("-inf"))
    return scores


class _Combiner:
    """clean/noisy logits -> contrastive logits, with min_new_tokens' eos suppression done before the mask (as
    HF's MinNewTokensLogitsProcessor runs before any warper), so the plausibility mask never sees eos then."""

    def __init__(self, beta: float, plausibility: float | None, eos: list[int], min_new_tokens: int):
        self.beta, self.plausibility, self.eos, self.min_new_tokens = beta, plausibility, eos, min_new_tokens

    def __call__(self, logits: torch.Tensor, n: int, step: int) -> torch.Tensor:
        clean, noisy = logits[:n], logits[n:]
        if step < self.min_new_tokens and self.eos:
            clean, noisy = clean.clone(), noisy.clone()
            clean[:, self.eos] = float("-inf")
            noisy[:, self.eos] = 0.0  # (1 + b) * -inf - b * 0 = -inf; never -inf - -inf = nan
        return contrastive_logits(clean, noisy, self.beta, self.plausibility)


# ---------------------------------------------------------------------------------------------------------------
# The decoding loop
# ---------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def contrastive_generate(
    model,
    batch: dict,
    max_new_tokens: int,
    eos_token_id: int | Sequence[int] | None,
    pad_token_id: int,
    beta: float = 1.0,
    noise: Perturbation = "gaussian",
    alpha: float | None = None,
    noise_step: int = DEFAULT_DDPM_STEP,
    plausibility: float | None = 0.1,
    strategy: Strategy = "greedy",
    num_beams: int = 3,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    seed: int = 0,
    length_penalty: float = 1.0,
    min_new_tokens: int = 0,
    fused: bool = True,
    noisy_pixel_values_: torch.Tensor | None = None,
    prefix_groups_: Sequence[int] | None = None,
    first_scores_: list | None = None,
    static_cache_: bool = False,
    compile_: bool | None = None,
    positions_=None,
) -> torch.LongTensor:
    """Decode with contrastive logits (`contrastive_logits`) at every step; returns (B, T_new) new tokens.

    model: a LlavaForConditionalGeneration (or anything with its forward signature), plain or peft-wrapped; with
        a SEED adapter both the clean and the noisy pass use it ("dual purification").
    batch: processor output on the model's device: input_ids (B, L) and attention_mask (B, L), LEFT-padded,
        pixel_values (B, C, H, W) in the model's dtype; other tensors with a leading B (e.g. image_sizes) are
        passed at prefill too.
    beta: b [1.0]; beta = 0 with strategy="greedy" gives plain greedy decoding token for token (the mask never
        removes the argmax). noise: "gaussian" (alpha [0.3]), "ddpm" (alpha_bar of noise_step [500 -> 0.745],
        VCD's), "mask" (half the patches blanked), "blur" or "blank" (seedvlm.seed.PERTURBATIONS).
        plausibility: g [0.1, VCD's]; None disables the mask.
    strategy: "greedy"; "sample" (temperature, then top_k [0 = off], then top_p [1.0 = off], then a draw from a
        torch.Generator seeded with `seed`); "beam" (num_beams hypotheses per prompt scored by the sum of
        log_softmax(contrastive logits), finished ones ranked by score / length ** length_penalty, as HF does;
        a prompt is done once num_beams hypotheses are finished and no running beam can beat the worst of them).
    min_new_tokens: eos is suppressed before this many new tokens (e.g. to force a length in benchmarks).
    fused: True (default) runs clean and noisy as ONE forward of 2B rows with one 2B-row KV cache; False runs two
        forwards of B rows with two caches per step (VCD's way; kept for the benchmark and as a cross-check).
    noisy_pixel_values_: use these instead of drawing noise (tests, or a custom perturbation).
    prefix_groups_: image group per row (seedvlm.decode.prefix.image_groups): both views' image prefixes run once
        per group (fused only); first_scores_: a list that receives the first step's (B, V) contrastive scores.
    static_cache_: decode over a StaticCache, the step compiled unless compile_ is False
        (seedvlm.decode.static); fused greedy and sampling, not with prefix_groups_.
    positions_: (input_ids, attention_mask, extra) -> prefill position ids, for models whose positions depend on
        the image (Qwen2-VL's M-RoPE; seedvlm.decode.family); None: cumsum(attention_mask) - 1.
    Rows stop at eos (the eos is kept, pad_token_id follows); decoding ends when every row has stopped or after
    max_new_tokens steps, so T_new <= max_new_tokens.
    """
    if strategy not in STRATEGIES:
        raise SeedVLMError(f"unknown decoding strategy {strategy!r}; choose one of {list(STRATEGIES)}")
    if max_new_tokens < 0:
        raise SeedVLMError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if strategy == "sample" and temperature <= 0:
        raise SeedVLMError(f"temperature must be positive for sampling, got {temperature}")
    if strategy == "beam" and num_beams < 1:
        raise SeedVLMError(f"num_beams must be >= 1, got {num_beams}")
    for key in ("input_ids", "attention_mask", "pixel_values"):
        if key not in batch:
            raise SeedVLMError(f"contrastive_generate needs {key!r} in the batch (processor output)")
    input_ids, attention_mask, pixels = batch["input_ids"], batch["attention_mask"], batch["pixel_values"]
    n = input_ids.shape[0]
    if max_new_tokens == 0 or n == 0:
        return input_ids.new_full((n, 0), pad_token_id)
    if noisy_pixel_values_ is None:
        patch = getattr(getattr(getattr(model, "config", None), "vision_config", None), "patch_size", 14)
        noisy = noisy_pixel_values(pixels, noise=noise, alpha=alpha, noise_step=noise_step, seed=seed,
                                   patch_size=patch)
    else:
        noisy = noisy_pixel_values_.to(device=pixels.device, dtype=pixels.dtype)
    extra = {k: v for k, v in batch.items() if k not in ("input_ids", "attention_mask", "pixel_values")
             and isinstance(v, torch.Tensor) and v.shape[:1] == (n,)}
    combine = _Combiner(float(beta), plausibility, _eos_list(eos_token_id), int(min_new_tokens))
    runner = Fused(model, positions_) if fused else Sequential(model, positions_)
    if static_cache_ and fused and strategy != "beam":

        runner.s = static_stepper(model, input_ids.shape[1] + max_new_tokens, compile_)
    if prefix_groups_ is not None and fused:

        runner = prefix_runner(model, batch, prefix_groups_, int(pad_token_id)) or runner
    logits = runner.prefill(input_ids, attention_mask, pixels, noisy, extra)
    if first_scores_ is not None:
        first_scores_.append(combine(logits, n, 0))
    common = dict(runner=runner, logits=logits, n=n, combine=combine, max_new_tokens=int(max_new_tokens),
                  eos=_eos_list(eos_token_id), pad=int(pad_token_id))
    if strategy == "beam":
        return _beam(num_beams=int(num_beams), length_penalty=float(length_penalty), **common)
    gen = None
    if strategy == "sample":
        gen = torch.Generator(device=input_ids.device)
        gen.manual_seed(int(seed))
    return _greedy_or_sample(sample=strategy == "sample", temperature=float(temperature), top_k=int(top_k),
                             top_p=float(top_p), generator=gen, **common)


def _greedy_or_sample(runner, logits, n, combine, max_new_tokens, eos, pad, sample, temperature, top_k, top_p,
                      generator) -> torch.LongTensor:
    device = logits.device
    eos_t = torch.tensor(eos, device=device, dtype=torch.long) if eos else None
    unfinished = torch.ones(n, dtype=torch.bool, device=device)
    out = []
    for step in range(max_new_tokens):
        scores = combine(logits, n, step)
        if sample:
            scores = _filter_top_k_top_p(scores / temperature, top_k, top_p)
            probs = scores.softmax(dim=-1)
            nxt = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        else:
            nxt = scores.argmax(dim=-1)
        nxt = torch.where(unfinished, nxt, torch.full_like(nxt, pad))
        out.append(nxt)
        if eos_t is not None:
            unfinished = unfinished & ~torch.isin(nxt, eos_t)
        if step + 1 == max_new_tokens or not bool(unfinished.any()):
            break
        logits = runner.step(nxt)
    return torch.stack(out, dim=1)


def _beam(runner, logits, n, combine, max_new_tokens, eos, pad, num_beams, length_penalty) -> torch.LongTensor:
    """Beam search over log_softmax(contrastive logits), HF's rules (2K candidates per prompt, eos candidates
    ranked beyond K dropped, the heuristic stop), with both halves of the 2B cache reordered by the beam indices."""
    k = num_beams
    device = logits.device
    vocab = logits.shape[-1]
    runner.repeat_rows(k)
    logits = logits.repeat_interleave(k, dim=0)  # rows: clean b*K + j, then noisy B*K + b*K + j
    rows = n * k
    beam_scores = torch.zeros(n, k, dtype=torch.float32, device=device)
    beam_scores[:, 1:] = -1e9  # all beams start identical: only beam 0 may spawn candidates at the first step
    seqs = torch.empty((rows, 0), dtype=torch.long, device=device)
    hyps: list[list[tuple[float, list[int]]]] = [[] for _ in range(n)]
    done = [False] * n
    eos_set = set(eos)

    def add_hyp(b: int, score: float, tokens: list[int]) -> None:
        hyps[b].append((score, tokens))
        hyps[b].sort(key=lambda h: -h[0])
        del hyps[b][k:]

    n_cand = min(max(2, 1 + len(eos)) * k, k * vocab)  # HF keeps (1 + #eos) * K, at least 2K, candidates
    for step in range(max_new_tokens):
        logp = torch.log_softmax(combine(logits, rows, step), dim=-1)  # (B*K, V), -inf where masked
        cand = (beam_scores.view(n, k, 1) + logp.view(n, k, vocab)).view(n, k * vocab)
        top_scores, top_idx = torch.topk(cand, n_cand, dim=1)
        top_scores, top_idx = top_scores.tolist(), top_idx.tolist()
        seqs_cpu = seqs.tolist()
        cur_len = step + 1  # generated length after this step, eos included
        last = step + 1 == max_new_tokens
        sel_beam, sel_tok, sel_score = [], [], []
        for b in range(n):
            if done[b]:
                sel_beam += [b * k + j for j in range(k)]
                sel_tok += [pad] * k
                sel_score += [0.0] * k
                continue
            kept = []
            for rank, (s, idx) in enumerate(zip(top_scores[b], top_idx[b])):
                if not math.isfinite(s) or s < -1e8:  # masked tokens, or continuations of the -1e9 start beams
                    break
                beam, tok = divmod(idx, vocab)
                if tok in eos_set or last:
                    # only the top K candidates may finish (HF); at the last step every top-K candidate does
                    if rank < k:
                        add_hyp(b, s / cur_len ** length_penalty, seqs_cpu[b * k + beam] + [tok])
                    continue
                kept.append((s, b * k + beam, tok))
                if len(kept) == k:
                    break
            while len(kept) < k:  # fewer than K live continuations (tiny vocabulary or a strict mask)
                kept.append((-1e9, b * k, pad))
            sel_beam += [r for _, r, _ in kept]
            sel_tok += [t for _, _, t in kept]
            sel_score += [s for s, _, _ in kept]
            best_running = kept[0][0] / cur_len ** length_penalty
            # HF's heuristic stop (early_stopping=False): K finished and the best live beam cannot beat the worst
            done[b] = last or (len(hyps[b]) >= k and hyps[b][-1][0] >= best_running) or kept[0][0] <= -1e9
        if all(done):
            break
        beam_idx = torch.tensor(sel_beam, dtype=torch.long, device=device)
        tokens = torch.tensor(sel_tok, dtype=torch.long, device=device)
        beam_scores = torch.tensor(sel_score, dtype=torch.float32, device=device).view(n, k)
        seqs = torch.cat([seqs.index_select(0, beam_idx), tokens[:, None]], dim=1)
        runner.reorder(beam_idx)
        logits = runner.step(tokens)
    best = [hyps[b][0][1] if hyps[b] else [] for b in range(n)]
    width = max(1, max(len(t) for t in best))
    out = torch.full((n, width), pad, dtype=torch.long, device=device)
    for b, t in enumerate(best):
        if t:
            out[b, :len(t)] = torch.tensor(t, dtype=torch.long, device=device)
    return out
