"""Contrastive decoding (seedvlm.decode): the rule, the loop on a table-driven mock model, and, on a real tiny random
LLaVA, equality with HF `generate` at beta = 0 (left padding, greedy and beam) and a peft-wrapped model."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from seedvlm.decode import contrastive_generate, contrastive_logits, noisy_pixel_values
from seedvlm.seed import ddpm_alpha_bar

# ---------------------------------------------------------------------------------------------------------------
# The mock model
# ---------------------------------------------------------------------------------------------------------------

V, PAD, BOS, EOS = 10, 0, 1, 2
N_IMAGES = 4


class TableLM(nn.Module):
    """A stand-in for LlavaForConditionalGeneration with the same forward signature, whose next-token logits come
    from two tables:

        clean rows: CLEAN[image_id, last_token]        noisy rows: NOISY[last_token]

    How it tells clean from noisy rows: test images are CONSTANT images whose value is their id (0, 1, 2, ...);
    every perturbation of `seedvlm.decode` makes them non-constant, so a row whose pixel std is > 1e-3 is noisy.
    Pixel values arrive only at the prefill, so the flags (noisy, image id) are written into the KV cache (layer 0
    keys, one entry per position) and read back from its last position at every later step: a cache that is not
    reordered with the beams, or whose noisy half is mixed up with the clean half, gives wrong tokens.
    `calls` records (rows, new positions, got pixels) for every forward.
    """

    def __init__(self, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        clean = torch.randn(N_IMAGES, V, V, generator=g) * 2.0
        noisy = torch.randn(V, V, generator=g) * 2.0
        clean[..., PAD] = clean[..., BOS] = noisy[..., PAD] = noisy[..., BOS] = -20.0  # never pad/bos
        clean[:, 5, EOS] += 6.0  # token 5 is usually followed by eos: rows stop at different steps
        self.register_buffer("clean", clean)
        self.register_buffer("noisy", noisy)
        self.calls: list[tuple[int, int, bool]] = []

    def forward(self, input_ids=None, pixel_values=None, attention_mask=None, position_ids=None, cache=None,
                use_cache=None, logits_to_keep=0, **kwargs):
        rows, length = input_ids.shape
        self.calls.append((rows, length, pixel_values is not None))
        assert attention_mask.shape[1] == cache.get_seq_length() + length
        if pixel_values is not None:
            flat = pixel_values.reshape(rows, -1).float()
            noisy = flat.std(dim=1) > 1e-3
            image_id = torch.where(noisy, torch.full_like(flat[:, 0], -1), flat[:, 0].round())
            flags = torch.stack([noisy.float(), image_id], dim=1)
        else:
            flags = cache.layers[0].keys[:, 0, -1, :]
        kv = flags[:, None, None, :].expand(rows, 1, length, 2).contiguous()
        cache.update(kv, kv, 0)
        last = input_ids[:, -1]
        noisy_row, img = flags[:, 0].bool(), flags[:, 1].long().clamp_min(0)
        logits = torch.where(noisy_row[:, None], self.noisy[last], self.clean[img, last])
        return SimpleNamespace(logits=logits[:, None, :].expand(rows, length, V), cache=cache)


def mock_batch(image_ids, last_tokens, lengths=None):
    """Left-padded prompts ending in `last_tokens`, one constant 3x4x4 image per row (value = image id)."""
    lengths = lengths or [3] * len(image_ids)
    width = max(lengths)
    ids = torch.full((len(image_ids), width), PAD, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for r, (n, last) in enumerate(zip(lengths, last_tokens)):
        ids[r, width - n:] = torch.tensor([BOS] + [7] * (n - 2) + [last])
        mask[r, width - n:] = 1
    pixels = torch.stack([torch.full((3, 4, 4), float(i)) for i in image_ids])
    return {"input_ids": ids, "attention_mask": mask, "pixel_values": pixels}


def table_scores(model, image_id, last, beta, g):
    return contrastive_logits(model.clean[image_id, last][None], model.noisy[last][None], beta, g)[0]


def reference_greedy(model, image_id, last, beta, g, steps):
    out = []
    for _ in range(steps):
        t = int(table_scores(model, image_id, last, beta, g).argmax())
        out.append(t)
        if t == EOS:
            break
        last = t
    return out


def rows_of(t: torch.Tensor) -> list[list[int]]:
    """Tokens per row up to and including eos (the pads after it dropped)."""
    out = []
    for row in t.tolist():
        out.append(row[: row.index(EOS) + 1] if EOS in row else row)
    return out


# ---------------------------------------------------------------------------------------------------------------
# The rule
# ---------------------------------------------------------------------------------------------------------------


def test_contrastive_logits_formula_and_mask():
    clean = torch.tensor([[2.0, 1.0, 0.0, -3.0]])
    noisy = torch.tensor([[1.0, 2.0, 0.0, 0.0]])
    # (1 + 1) * clean - noisy = [3, 0, 0, -6]; p_v < 0.1 p_max  <=>  clean_v < 2 + ln 0.1 = -0.30: only -3 masked
    assert torch.equal(contrastive_logits(clean, noisy, 1.0, plausibility=None), torch.tensor([[3.0, 0.0, 0.0, -6.0]]))
    assert torch.equal(contrastive_logits(clean, noisy, 1.0), torch.tensor([[3.0, 0.0, 0.0, -math.inf]]))
    # g = 0.5: cut at 2 + ln 0.5 = 1.31, so 1.0 goes too; beta = 0 is the clean logits under the mask
    inf = math.inf
    assert torch.equal(contrastive_logits(clean, noisy, 0.0, 0.5), torch.tensor([[2.0, -inf, -inf, -inf]]))
    # one beta per row
    two = contrastive_logits(clean.repeat(2, 1), noisy.repeat(2, 1), torch.tensor([0.0, 2.0]), None)
    assert torch.equal(two, torch.tensor([[2.0, 1.0, 0.0, -3.0], [4.0, -1.0, 0.0, -9.0]]))


def test_noise_depends_on_the_image_not_the_batch():
    x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(0))  # fixed: the noise is seeded from it
    both = noisy_pixel_values(x, "gaussian", seed=5)
    assert torch.equal(noisy_pixel_values(x[1:2], "gaussian", seed=5), both[1:2])
    assert not torch.equal(noisy_pixel_values(x, "gaussian", seed=6), both)
    # ddpm = the same formula with a = alpha_bar(500) (VCD's 0.7448)
    assert abs(ddpm_alpha_bar(500) - 0.7448) < 1e-3
    ddpm = noisy_pixel_values(x, "gaussian", ddpm_alpha_bar(500), seed=5)
    assert torch.equal(noisy_pixel_values(x, "ddpm", seed=5), ddpm)
    eps = (both - math.sqrt(0.3) * x) / math.sqrt(0.7)  # default alpha 0.3
    assert abs(float(eps.std()) - 1.0) < 0.1 and abs(float(eps.mean())) < 0.1


def test_every_perturbation_kind_of_the_study_decodes_contrastively():
    """blur and blank are the perturbation functions of seedvlm.seed; the decoder's kinds are those of seed.py."""
    from seedvlm.errors import SeedVLMError
    from seedvlm.seed import PERTURBATIONS, blur

    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    assert {"blur", "blank"} <= set(PERTURBATIONS)
    assert torch.equal(noisy_pixel_values(x, "blank"), torch.zeros_like(x))
    assert torch.equal(noisy_pixel_values(x, "blur", blur_sigma=0.2), blur(x, 0.2))
    with pytest.raises(SeedVLMError, match="blank"):
        noisy_pixel_values(x, "fog")


# ---------------------------------------------------------------------------------------------------------------
# The loop, on the mock
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("beta,g", [(1.0, 0.1), (0.5, None), (2.0, 0.3)])
def test_greedy_picks_the_argmax_of_the_contrastive_logits(beta, g):
    model = TableLM()
    images, lasts = [0, 1, 2, 3], [3, 5, 8, 9]
    batch = mock_batch(images, lasts, lengths=[3, 5, 4, 2])
    out = contrastive_generate(model, batch, max_new_tokens=12, eos_token_id=EOS, pad_token_id=PAD, beta=beta,
                               plausibility=g)
    want = [reference_greedy(model, i, last, beta, g, 12) for i, last in zip(images, lasts)]
    assert rows_of(out) == want
    assert out.shape == (4, max(len(w) for w in want))
    for r, w in enumerate(want):  # pad after eos
        assert out[r, len(w):].eq(PAD).all()
    # one forward per step, of 2B rows; pixel values only at the prefill
    assert all(rows == 8 for rows, _, _ in model.calls)
    assert [px for _, _, px in model.calls] == [True] + [False] * (len(model.calls) - 1)
    assert all(n == 1 for _, n, _ in model.calls[1:])
    assert len(model.calls) == out.shape[1]


def test_rows_stop_at_eos_and_min_new_tokens_forces_a_length():
    model = TableLM()
    batch = mock_batch([0, 1, 2, 3], [3, 5, 8, 9])
    out = contrastive_generate(model, batch, max_new_tokens=12, eos_token_id=EOS, pad_token_id=PAD)
    lengths = [len(r) for r in rows_of(out)]
    assert min(lengths) < max(lengths), "the tables should make rows end at different steps"
    forced = contrastive_generate(model, batch, max_new_tokens=6, eos_token_id=EOS, pad_token_id=PAD,
                                  min_new_tokens=6)
    assert forced.shape == (4, 6) and not forced.eq(EOS).any() and not forced.eq(PAD).any()


def test_batched_equals_one_by_one():
    images, lasts, lengths = [0, 1, 2, 3], [3, 5, 8, 9], [3, 6, 4, 2]
    for strategy in ("greedy", "beam"):
        model = TableLM()
        batch = mock_batch(images, lasts, lengths)
        together = contrastive_generate(model, batch, 10, EOS, PAD, strategy=strategy, num_beams=3)
        for r in range(4):
            one = contrastive_generate(model, mock_batch(images[r:r + 1], lasts[r:r + 1], lengths[r:r + 1]), 10,
                                       EOS, PAD, strategy=strategy, num_beams=3)
            assert rows_of(one) == rows_of(together[r:r + 1]), (strategy, r)


def _assert_plausible(model, out, images, lasts, g):
    """Every emitted token survives the plausibility mask given the token before it."""
    for row, img, last in zip(out.tolist(), images, lasts):
        for t in row:
            if t == PAD:
                break
            scores = table_scores(model, img, last, 1.0, g)
            assert math.isfinite(float(scores[t])), f"masked token {t} emitted after {last} (image {img})"
            if t == EOS:
                break
            last = t


def test_sampling_respects_the_mask_and_the_seed():
    model = TableLM()
    images, lasts = [0, 1, 2, 3] * 4, [3, 5, 8, 9, 4, 6, 7, 3] * 2
    batch = mock_batch(images, lasts)
    kw = dict(strategy="sample", temperature=3.0, plausibility=0.1)  # a flat distribution: the mask must hold
    a = contrastive_generate(model, batch, 10, EOS, PAD, seed=1, **kw)
    _assert_plausible(model, a, images, lasts, 0.1)
    assert torch.equal(a, contrastive_generate(model, batch, 10, EOS, PAD, seed=1, **kw))
    assert not torch.equal(a, contrastive_generate(model, batch, 10, EOS, PAD, seed=2, **kw))
    # top_k = 1 is greedy
    greedy = contrastive_generate(model, batch, 10, EOS, PAD)
    assert torch.equal(contrastive_generate(model, batch, 10, EOS, PAD, strategy="sample", top_k=1), greedy)
    # top_p keeps the best token; with a tiny top_p sampling is greedy too
    assert torch.equal(contrastive_generate(model, batch, 10, EOS, PAD, strategy="sample", top_p=1e-6), greedy)


def test_beam_search_respects_the_mask_and_reorders_both_halves():
    images, lasts, lengths = [0, 1, 2, 3], [3, 5, 8, 9], [3, 6, 4, 2]
    model = TableLM()
    batch = mock_batch(images, lasts, lengths)
    beam = contrastive_generate(model, batch, 10, EOS, PAD, strategy="beam", num_beams=3, plausibility=0.1)
    _assert_plausible(model, beam, images, lasts, 0.1)
    # the same search with two separate caches (VCD's sequential way) gives the same hypotheses
    seq = contrastive_generate(model, batch, 10, EOS, PAD, strategy="beam", num_beams=3, fused=False)
    assert torch.equal(beam, seq)
    # one beam is greedy
    assert rows_of(contrastive_generate(model, batch, 10, EOS, PAD, strategy="beam", num_beams=1)) == \
        rows_of(contrastive_generate(model, batch, 10, EOS, PAD))
    # a beam's score is the sum of its log-probs: the winner is at least as good as greedy's sequence
    def logprob(img, last, toks):
        s = 0.0
        for t in toks:
            s += float(torch.log_softmax(table_scores(model, img, last, 1.0, None), -1)[t])
            last = t
        return s / len(toks)
    wide = contrastive_generate(model, batch, 10, EOS, PAD, strategy="beam", num_beams=4, plausibility=None)
    greedy = contrastive_generate(model, batch, 10, EOS, PAD, plausibility=None)
    for r, (img, last) in enumerate(zip(images, lasts)):
        bw, gr = rows_of(wide)[r], rows_of(greedy)[r]
        if bw[-1] == EOS and gr[-1] == EOS:
            assert logprob(img, last, bw) >= logprob(img, last, gr) - 1e-5


def test_bad_arguments_are_errors():
    from seedvlm.errors import SeedVLMError

    batch = mock_batch([0], [3])
    with pytest.raises(SeedVLMError, match="strategy"):
        contrastive_generate(TableLM(), batch, 4, EOS, PAD, strategy="nucleus")
    with pytest.raises(SeedVLMError, match="noise"):
        contrastive_generate(TableLM(), batch, 4, EOS, PAD, noise="salt")
    with pytest.raises(SeedVLMError, match="pixel_values"):
        contrastive_generate(TableLM(), {k: v for k, v in batch.items() if k != "pixel_values"}, 4, EOS, PAD)
    assert contrastive_generate(TableLM(), batch, 0, EOS, PAD).shape == (1, 0)


# ---------------------------------------------------------------------------------------------------------------
# A real tiny random LLaVA
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny():
    """(model, processor, batch): a 2-layer random LLaVA with a word tokenizer; 3 prompts of different lengths."""
    import numpy as np
    from PIL import Image

    from seedvlm.generation import encode_prompts
    from seedvlm.models import build_processor, build_word_tokenizer, preset_config, random_model

    tok = build_word_tokenizer("a cat dog sits on the mat near red blue table fork knife and with of".split())
    cfg = preset_config("tiny", vocab_size=len(tok), image_token_index=tok.convert_tokens_to_ids("<image>"),
                        pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    v, t = cfg.vision_config, cfg.text_config
    v.image_size, v.patch_size, v.hidden_size, v.projection_dim, v.intermediate_size = 32, 8, 32, 32, 64
    v.num_hidden_layers, v.num_attention_heads = 2, 2
    t.hidden_size, t.intermediate_size, t.num_hidden_layers, t.num_attention_heads, t.num_key_value_heads = \
        64, 128, 2, 4, 4
    proc = build_processor(tok, cfg)
    model = random_model(cfg, seed=0).eval()
    rng = np.random.default_rng(1)
    images = [Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)) for _ in range(3)]
    questions = ["describe", "is there a cat in the image ?", "please describe this image in detail with the table"]
    batch = encode_prompts(proc, images, questions)
    assert len(set(batch["attention_mask"].sum(1).tolist())) == 3  # three prompt lengths, left-padded
    return SimpleNamespace(model=model, proc=proc, tok=tok, cfg=cfg, batch=batch, images=images, questions=questions)


def _hf(model, batch, tok, eos, **kw):
    seqs = model.generate(**batch, max_new_tokens=10, pad_token_id=tok.pad_token_id, eos_token_id=eos,
                          do_sample=False, **kw)
    return seqs[:, batch["input_ids"].shape[1]:]


def test_beta0_is_plain_greedy_with_left_padding(tiny):
    tok, model, batch = tiny.tok, tiny.model, tiny.batch
    hf = _hf(model, batch, tok, tok.eos_token_id)
    ours = contrastive_generate(model, batch, 10, tok.eos_token_id, tok.pad_token_id, beta=0.0)
    assert torch.equal(ours, hf)
    # a random model never says eos: take a token it does say as eos, so rows stop at different steps
    eos = int(hf[2, 2])
    hf = _hf(model, batch, tok, eos)
    ours = contrastive_generate(model, batch, 10, eos, tok.pad_token_id, beta=0.0)
    assert torch.equal(ours, hf)
    assert ours.eq(tok.pad_token_id).any()
    # and the contrast does change the output
    assert not torch.equal(contrastive_generate(model, batch, 10, eos, tok.pad_token_id, beta=1.0), hf)


def test_beta0_beam_is_hf_beam_search(tiny):
    tok, model, batch = tiny.tok, tiny.model, tiny.batch
    for eos in (tok.eos_token_id, int(_hf(model, batch, tok, tok.eos_token_id)[0, 1])):
        hf = _hf(model, batch, tok, eos, num_beams=3)
        ours = contrastive_generate(model, batch, 10, eos, tok.pad_token_id, beta=0.0, plausibility=None,
                                    strategy="beam", num_beams=3)
        # HF's beam search fills after eos with `pad_token_id or eos` (pad id 0 counts as unset): compare up to eos
        hf = torch.where(_after_first(hf, eos), torch.full_like(hf, tok.pad_token_id), hf)
        assert torch.equal(ours, hf), eos


def _after_first(t: torch.Tensor, token: int) -> torch.Tensor:
    """True at the positions after the first `token` of each row."""
    hit = t.eq(token).long().cumsum(1)
    return (hit - t.eq(token).long()) > 0


def test_fused_equals_two_forwards_on_the_real_model(tiny):
    tok, model, batch = tiny.tok, tiny.model, tiny.batch
    for strategy in ("greedy", "beam", "sample"):
        kw = dict(beta=1.0, strategy=strategy, noise="ddpm", seed=3)
        a = contrastive_generate(model, batch, 8, tok.eos_token_id, tok.pad_token_id, **kw)
        b = contrastive_generate(model, batch, 8, tok.eos_token_id, tok.pad_token_id, fused=False, **kw)
        assert torch.equal(a, b), strategy


def test_peft_wrapped_model(tiny):
    from peft import LoraConfig, get_peft_model

    from seedvlm.models import random_model

    tok, batch = tiny.tok, tiny.batch
    base = random_model(tiny.cfg, seed=0).eval()  # get_peft_model changes its model in place: a fresh one
    lora = LoraConfig(r=4, lora_alpha=8, init_lora_weights=False,
                      target_modules=r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj)")
    model = get_peft_model(base, lora).eval()
    ours = contrastive_generate(model, batch, 10, tok.eos_token_id, tok.pad_token_id, beta=0.0)
    assert torch.equal(ours, _hf(model, batch, tok, tok.eos_token_id))
    with model.disable_adapter():
        plain = contrastive_generate(model, batch, 10, tok.eos_token_id, tok.pad_token_id, beta=0.0)
    assert torch.equal(plain, _hf(tiny.model, batch, tok, tok.eos_token_id))
    assert not torch.equal(ours, plain)  # the adapter is used in both passes
    for strategy in ("greedy", "beam"):
        out = contrastive_generate(model, batch, 6, tok.eos_token_id, tok.pad_token_id, beta=1.0, strategy=strategy)
        assert out.shape[0] == 3 and out.shape[1] <= 6


def test_generate_texts_routes_contrastive(tiny):
    from seedvlm.generation import generate_texts

    texts = generate_texts(tiny.model, tiny.proc, tiny.images, tiny.questions, max_new_tokens=5, batch_size=2,
                           decoding="contrastive", progress=False, beta=0.0)
    greedy = generate_texts(tiny.model, tiny.proc, tiny.images, tiny.questions, max_new_tokens=5, batch_size=2,
                            decoding="greedy", progress=False)
    assert texts == greedy and all(isinstance(t, str) for t in texts)
