"""The SEED math (seedvlm.seed) against hand-computed values: small tensors written out here, expected values from
explicit float64 formulas in the test, never from calling the function under test twice."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from seedvlm.errors import SeedVLMError
from seedvlm.seed import (
    BetaSchedule,
    add_ddpm_noise,
    add_noise,
    answer_positions,
    blank,
    blur,
    combined_loss,
    confidence,
    continuous_beta,
    curriculum_beta,
    ddpm_alpha_bar,
    distill_loss,
    mask_patches,
    masked_target_log_probs,
    middle_value,
    implausible,
    per_sample_generator,
    perturb,
    perturb_per_sample,
    purify,
    select_beta,
)

NEG_INF = float("-inf")


def _softmax64(row):
    m = max(row)
    e = [math.exp(x - m) for x in row]
    s = sum(e)
    return [x / s for x in e]


def _log_softmax64(row):
    m = max(row)
    lse = m + math.log(sum(math.exp(x - m) for x in row))
    return [x - lse for x in row]


def _kl64(p, logp, logq):
    """sum_v p_v (log p_v - log q_v), with 0 * anything = 0."""
    return sum(pv * (lp - lq) for pv, lp, lq in zip(p, logp, logq) if pv > 0)


# ---------------------------------------------------------------------------------------------------- b rules

HISTORY = [-float(k) for k in range(21)]  # sorted: -20..0; quantiles 0.25/0.5/0.75 at positions 5/10/15 -> -15/-10/-5


def test_select_beta_buckets_of_the_quantile_rule():
    assert float(select_beta(torch.tensor(-17.0), HISTORY)) == pytest.approx(1.1)  # lowest quartile: strongest b
    assert float(select_beta(torch.tensor(-12.0), HISTORY)) == pytest.approx(0.8)
    assert float(select_beta(torch.tensor(-7.0), HISTORY)) == pytest.approx(0.6)
    assert float(select_beta(torch.tensor(-1.0), HISTORY)) == pytest.approx(0.4)  # most confident: weakest b
    assert float(select_beta(torch.tensor(-10.0), HISTORY)) == pytest.approx(0.6)  # on a threshold: upper bucket


def test_select_beta_batch_and_tensor_history():
    conf = torch.tensor([-17.0, -12.0, -7.0, -1.0, -100.0, 3.0])
    betas = select_beta(conf, torch.tensor(HISTORY))
    assert betas.shape == conf.shape and betas.dtype == torch.float32
    assert betas.tolist() == pytest.approx([1.1, 0.8, 0.6, 0.4, 1.1, 0.4])


def test_select_beta_middle_value_with_short_history():
    short = HISTORY[:19]
    out = select_beta(torch.tensor([-100.0, 0.0]), short)
    assert out.tolist() == pytest.approx([0.7, 0.7])  # (0.8 + 0.6) / 2
    assert float(select_beta(-5.0, [])) == pytest.approx(0.7)
    assert middle_value((1.1, 0.8, 0.6, 0.4)) == pytest.approx(0.7)
    assert middle_value((1.0, 0.5, 0.2)) == pytest.approx(0.5)
    # non-finite history entries do not count toward min_history
    assert float(select_beta(-17.0, HISTORY[:19] + [float("nan")] * 5)) == pytest.approx(0.7)


def test_continuous_and_curriculum_beta():
    assert continuous_beta(torch.tensor([0.0, -2.0])).tolist() == pytest.approx(
        [1.1 * 0.5, 1.1 / (1 + math.exp(-2.0))], rel=1e-6)
    assert float(continuous_beta(torch.tensor(-1.0), b_max=2.0, tau=0.5)) == pytest.approx(2.0 / (1 + math.exp(-2.0)),
                                                                                           rel=1e-6)
    assert curriculum_beta(0, 100) == 0.0
    assert curriculum_beta(15, 100) == pytest.approx(0.55)  # halfway through the 30-step ramp
    assert curriculum_beta(30, 100) == pytest.approx(1.1)
    assert curriculum_beta(99, 100) == pytest.approx(1.1)
    assert curriculum_beta(0, 100, warmup_fraction=0.0) == pytest.approx(1.1)


def test_beta_schedule_uses_history_before_the_batch_and_round_trips():
    s = BetaSchedule(min_history=20)
    s.update(torch.tensor(HISTORY[:10]))
    batch = torch.tensor([-100.0] * 30 + [-12.0])
    assert s(batch, step=0).tolist() == pytest.approx([0.7] * 31)  # 10 entries < 20, although the batch has 31
    s = BetaSchedule(min_history=20)
    s.update(HISTORY)
    betas = s(batch, step=0)
    # thresholds from HISTORY alone (-15/-10/-5): -12 -> 0.8. Had the batch been added first, the median would sit
    # at -100 and -12 would land in the top bucket (0.4).
    assert betas[-1].item() == pytest.approx(0.8) and betas[0].item() == pytest.approx(1.1)
    assert s.thresholds() == pytest.approx([-15.0, -10.0, -5.0])
    s.update(batch)
    assert len(s.history) == 21 + 31
    state = json.loads(json.dumps(s.state_dict()))  # plain JSON
    s2 = BetaSchedule(min_history=20)
    s2.load_state_dict(state)
    assert list(s2.history) == list(s.history)
    assert torch.equal(s2(torch.tensor([-12.0, -50.0])), s(torch.tensor([-12.0, -50.0])))


def test_beta_schedule_kinds_maxlen_and_valid_mask():
    s = BetaSchedule(history_size=5)
    s.update(torch.tensor([1.0, 2.0, 3.0]), valid=torch.tensor([True, False, True]))
    s.update([float("nan"), 4.0, 5.0, 6.0])
    assert list(s.history) == [1.0, 3.0, 4.0, 5.0, 6.0][-5:]
    s.update([7.0])
    assert list(s.history) == [3.0, 4.0, 5.0, 6.0, 7.0]
    assert BetaSchedule("fixed", fixed=0.9)(torch.zeros(3)).tolist() == pytest.approx([0.9] * 3)
    assert BetaSchedule("continuous")(torch.zeros(2)).tolist() == pytest.approx([0.55, 0.55])
    cur = BetaSchedule("curriculum", total_steps=100)
    assert cur(torch.zeros(2), step=15).tolist() == pytest.approx([0.55, 0.55])
    with pytest.raises(SeedVLMError):
        BetaSchedule("curriculum")
    with pytest.raises(SeedVLMError):
        BetaSchedule("sometimes")


# ---------------------------------------------------------------------------------------------------- purify

def test_purify_logit_space_hand_example():
    clean, noisy = torch.tensor([[2.0, 1.0, 0.0]]), torch.tensor([[1.0, 1.0, 1.0]])
    out = purify(clean, noisy, 0.5)
    assert out.dtype == torch.float32
    assert out[0].tolist() == pytest.approx([2.5, 1.0, -0.5])  # 1.5 * clean - 0.5 * noisy


def test_purify_logprob_space_formula_and_differs_from_logit_space():
    c, n, b = [2.0, 1.0, 0.0], [0.0, 3.0, 1.0], 0.5
    lc, ln = _log_softmax64(c), _log_softmax64(n)
    expected = [(1 + b) * x - b * y for x, y in zip(lc, ln)]
    out = purify(torch.tensor([c]), torch.tensor([n]), b, space="logprob")
    assert out[0].tolist() == pytest.approx(expected, abs=1e-6)
    logit = purify(torch.tensor([c]), torch.tensor([n]), b, space="logit")
    assert not torch.allclose(out, logit)
    # (the two spaces differ by a per-row constant only, so the softmax over the vocabulary is the same)
    assert torch.allclose(out.softmax(-1), logit.softmax(-1), atol=1e-6)


def test_purify_plausibility_mask_exact_tokens():
    probs = [0.5, 0.3, 0.04, 0.16]
    clean = torch.tensor([[math.log(p) for p in probs]])
    noisy = torch.zeros(1, 4)
    out = purify(clean, noisy, 1.0, plausibility=0.1)  # cutoff 0.1 * 0.5 = 0.05: only 0.04 goes
    assert torch.isinf(out[0]).tolist() == [False, False, True, False]
    assert out[0, 2].item() == NEG_INF
    assert out[0, [0, 1, 3]].tolist() == pytest.approx([2 * math.log(p) for p in (0.5, 0.3, 0.16)], abs=1e-6)
    out = purify(clean, noisy, 1.0, plausibility=0.5)  # cutoff 0.25: 0.04 and 0.16 go
    assert torch.isinf(out[0]).tolist() == [False, False, True, True]
    out = purify(clean, noisy, 1.0, space="logprob", plausibility=0.5)
    assert torch.isinf(out[0]).tolist() == [False, False, True, True]
    assert not torch.isinf(purify(clean, noisy, 1.0)).any()  # off by default (the reference implementation)


def test_purify_beta_broadcast_per_row():
    clean = torch.tensor([[[1.0, 2.0, 3.0]], [[1.0, 2.0, 3.0]]])  # (B=2, L=1, V=3)
    noisy = torch.tensor([[[3.0, 2.0, 1.0]], [[3.0, 2.0, 1.0]]])
    for beta in (torch.tensor([0.0, 1.0]), torch.tensor([[0.0], [1.0]])):
        out = purify(clean, noisy, beta)
        assert out[0, 0].tolist() == pytest.approx([1.0, 2.0, 3.0])  # b = 0: the clean logits
        assert out[1, 0].tolist() == pytest.approx([-1.0, 2.0, 5.0])  # b = 1: 2 * clean - noisy
    rows = purify(clean[:, 0], noisy[:, 0], torch.tensor([0.0, 1.0]))  # (N, V) rows with an (N,) beta
    assert rows.flatten().tolist() == pytest.approx([1.0, 2.0, 3.0, -1.0, 2.0, 5.0])
    half = purify(clean.bfloat16(), noisy.bfloat16(), 0.5)
    assert half.dtype == torch.float32


def test_purify_moves_the_target_off_the_clean_logits():
    g = torch.Generator().manual_seed(0)
    clean, noisy = torch.randn(4, 10, generator=g), torch.randn(4, 10, generator=g)
    assert not torch.allclose(purify(clean, noisy, 0.5), clean)
    assert not torch.allclose(purify(clean, noisy, torch.full((4,), 0.4)), clean)
    assert torch.equal(purify(clean, noisy, 0.0), clean)
    assert torch.equal(purify(clean, clean, 0.7), clean * 1.7 - clean * 0.7)


def test_masked_target_log_probs_renorm_and_clamp():
    purified = torch.tensor([[0.0, 0.0, NEG_INF]])
    r = masked_target_log_probs(purified, T=2.0)
    assert r[0, :2].tolist() == pytest.approx([math.log(0.5)] * 2) and r[0, 2].item() == NEG_INF
    c = masked_target_log_probs(purified, T=2.0, mask_mode="clamp")
    assert c[0].tolist() == pytest.approx([math.log(0.5), math.log(0.5), -30.0])


# ---------------------------------------------------------------------------------------------------- losses

S = [[1.0, 0.0, -1.0, 2.0], [0.5, 0.5, 0.0, -0.5]]
TT = [[0.0, 2.0, 0.0, -1.0], [1.0, -1.0, 0.5, 0.0]]


def _reverse64(s, t, T):
    """T^2 * mean_rows KL(student || teacher), float64 by hand."""
    tot = 0.0
    for sr, tr in zip(s, t):
        ss, ts = [x / T for x in sr], [x / T for x in tr]
        tot += _kl64(_softmax64(ss), _log_softmax64(ss), _log_softmax64(ts))
    return T * T * tot / len(s)


def _forward64(s, t, T):
    """T^2 * mean_rows KL(teacher || student), float64 by hand."""
    return _reverse64(t, s, T)


def test_distill_loss_reverse_and_forward_match_hand_formulas():
    s, t = torch.tensor(S), torch.tensor(TT)
    rev, fwd = distill_loss(s, t, T=2.0, direction="reverse"), distill_loss(s, t, T=2.0, direction="forward")
    assert rev.item() == pytest.approx(_reverse64(S, TT, 2.0), rel=1e-5)
    assert fwd.item() == pytest.approx(_forward64(S, TT, 2.0), rel=1e-5)
    assert abs(rev.item() - fwd.item()) > 1e-3
    # and the reference implementation's F.kl_div expression (docs/design.md section 2)
    ref = F.kl_div(F.log_softmax(t / 2, -1), F.softmax(s / 2, -1), reduction="batchmean") * 4
    assert rev.item() == pytest.approx(ref.item(), rel=1e-5)


def test_default_direction_is_reverse_kl():
    s, t = torch.tensor(S), torch.tensor(TT)
    val = distill_loss(s, t).item()
    assert val == pytest.approx(_reverse64(S, TT, 2.0), rel=1e-5)
    assert val != pytest.approx(_forward64(S, TT, 2.0), rel=1e-3)
    labels = torch.tensor([0, 1])
    loss, parts = combined_loss(s, t, labels)
    assert parts["distill"] == pytest.approx(combined_loss(s, t, labels, T=2.0, direction="reverse")[1]["distill"])
    assert parts["distill"] != pytest.approx(combined_loss(s, t, labels, direction="forward")[1]["distill"],
                                             rel=1e-3)


def test_default_temperature_is_two():
    s, t = torch.tensor(S), torch.tensor(TT)
    assert distill_loss(s, t).item() == pytest.approx(_reverse64(S, TT, 2.0), rel=1e-5)
    assert distill_loss(s, t).item() != pytest.approx(_reverse64(S, TT, 1.0), rel=1e-3)
    labels = torch.tensor([0, 1])
    assert combined_loss(s, t, labels)[1]["distill"] == pytest.approx(distill_loss(s, t, T=2.0).item(), rel=1e-6)
    # softmax(2s / 2) = softmax(s / 1): the T=2 loss on doubled logits is exactly T^2 = 4 times the T=1 loss
    assert distill_loss(2 * s, 2 * t).item() == pytest.approx(4 * distill_loss(s, t, T=1.0).item(), rel=1e-5)
    assert distill_loss(s, t, T=1.0).item() == pytest.approx(_reverse64(S, TT, 1.0), rel=1e-5)


def test_distill_loss_identical_is_zero():
    s = torch.tensor(S)
    assert distill_loss(s, s.clone()).item() == pytest.approx(0.0, abs=1e-6)
    assert distill_loss(s, s.clone(), direction="forward").item() == pytest.approx(0.0, abs=1e-6)


def test_distill_loss_with_minus_inf_teacher_is_finite_and_matches_hand():
    s = torch.tensor([[1.0, 0.0, 5.0]], requires_grad=True)
    t = torch.tensor([[0.0, 0.0, NEG_INF]])
    # restrict: student renormalized over {0, 1}; teacher uniform there
    ps = _softmax64([1.0, 0.0])
    restrict = _kl64(ps, [math.log(p) for p in ps], [math.log(0.5)] * 2)
    # clamp: log p_t = (log .5, log .5, -30)
    full = [1.0, 0.0, 5.0]
    clamp = _kl64(_softmax64(full), _log_softmax64(full), [math.log(0.5), math.log(0.5), -30.0])
    # forward: sum over the support of p_t (log p_t - log p_s)
    lps = _log_softmax64(full)
    forward = sum(0.5 * (math.log(0.5) - lps[i]) for i in (0, 1))
    for kw, expected in (({"mask_strategy": "restrict"}, restrict), ({"mask_strategy": "clamp"}, clamp),
                         ({"direction": "forward"}, forward)):
        loss = distill_loss(s, t, T=1.0, **kw)
        assert torch.isfinite(loss) and loss.item() == pytest.approx(expected, rel=1e-5), kw
        (grad,) = torch.autograd.grad(loss, s)
        assert torch.isfinite(grad).all(), kw
    # at the default T = 2 too, with several rows and the purify output
    purified = purify(torch.tensor(S), torch.tensor(TT), 1.0, plausibility=0.5)
    assert torch.isinf(purified).any()
    for strat in ("restrict", "clamp"):
        assert torch.isfinite(distill_loss(torch.tensor(S), purified, mask_strategy=strat))
    # the naive reverse KL (what F.kl_div does) is not finite here: the reason for the strategies
    naive = F.kl_div(F.log_softmax(t, -1), F.softmax(s.detach(), -1), reduction="batchmean")
    assert not torch.isfinite(naive)


def test_distill_loss_chunked_equals_unchunked_with_grads():
    g = torch.Generator().manual_seed(1)
    s = torch.randn(7, 11, generator=g, requires_grad=True)
    t = purify(torch.randn(7, 11, generator=g), torch.randn(7, 11, generator=g), 0.8, plausibility=0.2)
    for kw in ({}, {"mask_strategy": "clamp"}, {"direction": "forward"}):
        full = distill_loss(s, t, **kw)
        (g_full,) = torch.autograd.grad(full, s)
        chunked = distill_loss(s, t, chunk_size=3, **kw)
        (g_chunk,) = torch.autograd.grad(chunked, s)
        assert chunked.item() == pytest.approx(full.item(), rel=1e-6, abs=1e-7)
        assert torch.allclose(g_chunk, g_full, atol=1e-7)
    with torch.no_grad():
        assert distill_loss(s, t, chunk_size=2).item() == pytest.approx(distill_loss(s, t).item(), rel=1e-6)


def test_distill_loss_zero_rows_and_bad_options():
    z = torch.zeros(0, 5, requires_grad=True)
    assert distill_loss(z, torch.zeros(0, 5)).item() == 0.0
    with pytest.raises(SeedVLMError):
        distill_loss(torch.zeros(1, 3), torch.zeros(1, 3), direction="sideways")
    with pytest.raises(SeedVLMError):
        distill_loss(torch.zeros(1, 3), torch.zeros(1, 3), mask_strategy="ignore")


def test_combined_loss_hand_value():
    s, t = torch.tensor(S), torch.tensor(TT)
    labels = torch.tensor([3, 1])
    ce = -(_log_softmax64(S[0])[3] + _log_softmax64(S[1])[1]) / 2
    kl = _reverse64(S, TT, 2.0)
    loss, parts = combined_loss(s, t, labels)
    assert loss.item() == pytest.approx(0.7 * kl + 0.3 * ce, rel=1e-5)
    assert parts["distill"] == pytest.approx(kl, rel=1e-5) and parts["ce"] == pytest.approx(ce, rel=1e-5)
    assert parts["loss"] == pytest.approx(loss.item()) and all(isinstance(v, float) for v in parts.values())
    loss0, _ = combined_loss(torch.zeros(0, 4), torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))
    assert loss0.item() == 0.0


# ---------------------------------------------------------------------------------------------------- noise

def test_add_noise_identity_at_a_equal_one_and_dtype():
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(add_noise(x, alpha=1.0, generator=torch.Generator().manual_seed(1)), x)
    xb = x.bfloat16()
    assert torch.equal(add_noise(xb, alpha=1.0), xb)
    assert add_noise(xb, alpha=0.3).dtype == torch.bfloat16
    with pytest.raises(SeedVLMError):
        add_noise(x, alpha=1.5)


def test_add_noise_statistics_at_a_equal_0_3():
    x = torch.full((200_000,), 2.0)
    out = add_noise(x, alpha=0.3, generator=torch.Generator().manual_seed(0))
    assert out.mean().item() == pytest.approx(math.sqrt(0.3) * 2.0, abs=0.01)  # E = sqrt(a) x
    assert out.var().item() == pytest.approx(0.7, abs=0.01)  # Var = 1 - a
    x = torch.randn(200_000, generator=torch.Generator().manual_seed(5))
    out = add_noise(x, alpha=0.3, generator=torch.Generator().manual_seed(6))
    corr = torch.corrcoef(torch.stack([x, out]))[0, 1].item()
    assert corr == pytest.approx(math.sqrt(0.3), abs=0.01)  # unit-variance x: corr = sqrt(a)


def test_add_noise_reproducible_by_generator():
    x = torch.zeros(3, 8, 8)
    a = add_noise(x, 0.3, torch.Generator().manual_seed(42))
    b = add_noise(x, 0.3, torch.Generator().manual_seed(42))
    c = add_noise(x, 0.3, torch.Generator().manual_seed(43))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_per_sample_noise_independent_of_batch_composition():
    g = torch.Generator().manual_seed(0)
    batch = torch.randn(4, 3, 6, 6, generator=g)

    def noisy(x, idx, step=12, seed=7, kind="gaussian"):
        return perturb_per_sample(x, [(j, step) for j in idx], kind, seed=seed, alpha=0.3, patch_size=2)

    out = noisy(batch, [3, 9, 1, 5])
    alone = noisy(batch[1:2], [9])
    assert torch.equal(out[1:2], alone)
    reordered = noisy(batch[[2, 1]], [1, 9])
    assert torch.equal(reordered[1], out[1]) and torch.equal(reordered[0], out[2])
    assert not torch.equal(noisy(batch[1:2], [9], step=13), alone)
    assert not torch.equal(noisy(batch[1:2], [9], seed=8), alone)
    # each image is add_noise with its own generator, seeded from (seed, key) only
    torch.testing.assert_close(alone[0], add_noise(batch[1], 0.3, per_sample_generator(7, 9, 12)), atol=0, rtol=0)
    masked = noisy(batch, [3, 9, 1, 5], kind="mask")
    assert torch.equal(masked[2:3], noisy(batch[2:3], [1], kind="mask"))
    g1, g2 = per_sample_generator(7, 9, 12), per_sample_generator(7, 9, 12)
    assert torch.equal(torch.randn(5, generator=g1), torch.randn(5, generator=g2))
    assert not torch.equal(torch.randn(5, generator=per_sample_generator(7, 9)),
                           torch.randn(5, generator=per_sample_generator(7, 9, 12)))
    with pytest.raises(SeedVLMError, match="3 noise keys for a batch of 4"):
        noisy(batch, [1, 2, 3])


def test_ddpm_alpha_bar_vcd_schedule():
    betas = [1.0 / (1.0 + math.exp(-(-6.0 + 12.0 * i / 999))) * (0.5e-2 - 1e-5) + 1e-5 for i in range(1000)]
    expected = math.prod(1.0 - b for b in betas[:501])  # VCD indexes alphas_prod[t], t = 500
    assert ddpm_alpha_bar(500) == pytest.approx(expected, rel=1e-9)
    assert ddpm_alpha_bar(500) == pytest.approx(0.74480, abs=1e-4)  # docs/design.md section 3: 0.7448
    lin = [1e-4 + (0.02 - 1e-4) * i / 999 for i in range(1000)]
    assert ddpm_alpha_bar(500, schedule="linear") == pytest.approx(math.prod(1 - b for b in lin[:501]), rel=1e-9)
    assert ddpm_alpha_bar(500, schedule="linear") == pytest.approx(0.0778, abs=1e-3)
    x = torch.full((100_000,), 1.0)
    out = add_ddpm_noise(x, step=500, generator=torch.Generator().manual_seed(0))
    assert out.mean().item() == pytest.approx(math.sqrt(expected), abs=0.01)
    with pytest.raises(SeedVLMError):
        ddpm_alpha_bar(1000)


def test_mask_patches_whole_patches_and_fraction():
    x = torch.ones(2, 3, 28, 42)  # grid 2 x 3 = 6 patches of 14 x 14
    out = mask_patches(x, patch_size=14, ratio=0.5, generator=torch.Generator().manual_seed(0), fill=0.0)
    assert torch.equal(x, torch.ones(2, 3, 28, 42))  # input untouched
    patches = out.view(2, 3, 2, 14, 3, 14)  # (B, C, gh, p, gw, p)
    per_patch_min, per_patch_max = patches.amin(dim=(1, 3, 5)), patches.amax(dim=(1, 3, 5))
    assert torch.equal(per_patch_min, per_patch_max)  # every patch all masked or all kept, in every channel
    assert (per_patch_max == 0).sum(dim=(1, 2)).tolist() == [3, 3]  # 0.5 of 6 per image
    # a grid that does not divide: 30 x 30 with p = 14 -> ceil -> 3 x 3 = 9 patches, round(0.25 * 9) = 2
    y = mask_patches(torch.ones(1, 1, 30, 30), 14, ratio=0.25, generator=torch.Generator().manual_seed(3))
    padded = F.pad(y, (0, 12, 0, 12), value=0.5).view(1, 1, 3, 14, 3, 14)
    masked = (padded == 0).any(dim=(3, 5)).sum().item()
    assert masked == 2
    assert torch.equal(mask_patches(x, 14, ratio=0.0), x)
    assert (mask_patches(x, 14, ratio=1.0, fill=-1.0) == -1.0).all()


def test_perturb_dispatch():
    x = torch.zeros(1, 3, 28, 28)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    assert torch.equal(perturb(x, "gaussian", alpha=0.3, generator=g()), add_noise(x, 0.3, g()))
    assert torch.equal(perturb(x, "ddpm", step=500, generator=g()), add_ddpm_noise(x, 500, g()))
    ones = torch.ones(1, 3, 28, 28)
    assert torch.equal(perturb(ones, "mask", mask_ratio=0.5, patch_size=14, generator=g()),
                       mask_patches(ones, 14, 0.5, g()))
    assert torch.equal(perturb(ones, "blur", blur_sigma=0.1, generator=g()), blur(ones, 0.1))
    assert torch.equal(perturb(ones, "blank"), torch.zeros_like(ones))
    with pytest.raises(SeedVLMError, match="blank"):  # the message lists the kinds
        perturb(x, "fog")


def test_blur_smooths_keeps_flat_images_and_scales_with_the_width():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 32, 32, generator=g, dtype=torch.float64)
    out = blur(x, sigma=0.05)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert out.std() < 0.5 * x.std()  # white noise loses most of its variance
    assert out.mean().item() == pytest.approx(x.mean().item(), abs=0.02)  # a weighted average keeps the level
    flat = torch.full((1, 3, 20, 20), 0.7, dtype=torch.float16)
    assert torch.allclose(blur(flat, 0.1).float(), flat.float(), atol=1e-3)  # borders replicated: no dark rim
    edge = torch.zeros(1, 1, 64, 64)
    edge[..., 32:] = 1.0  # a vertical edge: blurred across, not along
    b = blur(edge, 0.03)
    assert torch.allclose(b[0, 0, 0], b[0, 0, 40]) and 0.0 < b[0, 0, 0, 31].item() < 0.5 < b[0, 0, 0, 32].item() < 1
    wide = torch.zeros(1, 1, 128, 128)
    wide[..., 64:] = 1.0  # the same picture at twice the width, blurred by the same fraction: the same profile
    assert torch.allclose(F.avg_pool1d(blur(wide, 0.03)[0, :, 0], 2)[0], b[0, 0, 0], atol=0.03)
    with pytest.raises(SeedVLMError):
        blur(x, 0.0)


def test_blank_is_the_mean_colour_whatever_the_image():
    x = torch.randn(2, 3, 8, 8, dtype=torch.bfloat16)
    out = blank(x)
    assert out.dtype == x.dtype and torch.equal(out, torch.zeros_like(x)) and not torch.equal(x, out)
    assert (blank(x, fill=-1.0) == -1.0).all()


# ---------------------------------------------------------------------------------------------------- confidence

def test_confidence_hand_case_and_masking():
    logits = torch.tensor([
        [[math.log(0.5), math.log(0.25), math.log(0.25), -1e9],  # log max p = log 0.5
         [0.0, 0.0, 0.0, 0.0],                                   # log max p = log 0.25
         [100.0, -100.0, 50.0, 3.0]],                            # not an answer position: ignored
        [[7.0, 7.0, 7.0, 7.0],                                   # ignored
         [2.0, 0.0, 0.0, 0.0],                                   # log(e^2 / (e^2 + 3))
         [0.0, 0.0, 0.0, 0.0]],                                  # ignored
    ])
    mask = torch.tensor([[True, True, False], [False, True, False]])
    conf = confidence(logits, mask)
    assert conf.dtype == torch.float32 and conf.shape == (2,)
    assert conf[0].item() == pytest.approx((math.log(0.5) + math.log(0.25)) / 2, rel=1e-6)
    assert conf[1].item() == pytest.approx(2.0 - math.log(math.exp(2.0) + 3.0), rel=1e-6)
    # bf16 logits are read in float32; a row without answer positions gives 0.0, not NaN
    empty = confidence(logits.bfloat16(), torch.tensor([[False] * 3, [False, True, False]]))
    assert empty[0].item() == 0.0 and torch.isfinite(empty).all()
    # the gathered answer rows (what the SEED step holds) give the same confidences
    assert torch.equal(confidence(logits[mask], mask), conf)
    with pytest.raises(SeedVLMError, match="answer rows"):
        confidence(logits[mask][:2], mask)


def test_implausible_drops_tokens_below_g_times_the_best():
    p = torch.tensor([[0.5, 0.3, 0.05, 0.15]])
    assert implausible(p.log(), 0.2).tolist() == [[False, False, True, False]]
    # shift-invariant: raw logits give the same verdict as log-probs
    assert torch.equal(implausible(p.log() + 3.0, 0.2), implausible(p.log(), 0.2))
    # an extra per-row score is held against the same cutoff without raising it
    assert implausible(p.log(), 0.2, extra=torch.tensor([math.log(0.9)])).tolist() == [[False, False, True, False,
                                                                                          False]]
    assert implausible(p.log(), 0.2, extra=torch.tensor([math.log(0.01)]))[0, -1].item() is True
    clean, noisy = torch.tensor([[2.0, 1.0, -3.0]]), torch.tensor([[1.0, 1.0, 1.0]])
    out = purify(clean, noisy, 1.0, plausibility=0.1)
    assert torch.isinf(out[0, 2]) and torch.isfinite(out[0, :2]).all()
    with pytest.raises(SeedVLMError, match="plausibility"):
        implausible(p, 1.5)


# ---------------------------------------------------------------------------------------------------- positions

def test_answer_positions_shift():
    labels = torch.tensor([[-100, -100, 5, 6, -100],
                           [-100, 7, -100, 8, 9]])
    mask, targets = answer_positions(labels)
    assert mask.tolist() == [[False, True, True, False, False],
                             [True, False, True, True, False]]
    assert targets.tolist() == [5, 6, 7, 8, 9]
    # logits[mask] lines up with targets: the k-th True position (b, t), row-major, predicts labels[b, t + 1]
    pairs = mask.nonzero().tolist()
    assert [labels[b, t + 1].item() for b, t in pairs] == targets.tolist()
    assert answer_positions(torch.full((2, 3), -100))[1].numel() == 0
