"""The SEED math as pure tensor functions: perturbations, confidence, the dynamic b, purification and the losses.

Tensors in, tensors out: no model, no global state (the one stateful helper, `BetaSchedule`, keeps only the
confidence history and serializes it to plain JSON). Every function's docstring names the equation it implements
and where it comes from, so it can be checked line by line against docs/design.md section 2 (SEED) and section 3
(contrastive decoding). docs/seed_math.md lists the same equations with their defaults and the decisions taken
where the method leaves a choice (the middle b with a short history, the handling of -inf targets, the VCD schedule).

Shapes used below: B samples, L sequence positions, V vocabulary entries, N gathered answer-token rows.
The module is longer than the others on purpose: every equation of the method in one file, read against the design
doc in one sitting, with nothing but torch under it.
"""

from __future__ import annotations

import hashlib
import math
from collections import deque
from typing import Any, Sequence, get_args

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from seedvlm.choices import (BetaKind, DdpmSchedule, KLDirection, MaskMode, MaskStrategy, Perturbation,
                             PurifySpace)
from seedvlm.errors import SeedVLMError

__all__ = [
    "add_noise",
    "ddpm_alpha_bar",
    "add_ddpm_noise",
    "mask_patches",
    "blur",
    "blank",
    "perturb",
    "PERTURBATIONS",
    "per_sample_generator",
    "perturb_per_sample",
    "confidence",
    "select_beta",
    "middle_value",
    "continuous_beta",
    "curriculum_beta",
    "BetaSchedule",
    "BETA_KINDS",
    "purify",
    "implausible",
    "upcast",
    "masked_target_log_probs",
    "distill_loss",
    "combined_loss",
    "answer_positions",
    "CLAMP_FLOOR",
]

Space = PurifySpace
Direction = KLDirection
PERTURBATIONS = get_args(Perturbation)
BETA_KINDS = get_args(BetaKind)
SPACES = get_args(Space)
DIRECTIONS = get_args(Direction)
MASK_STRATEGIES = get_args(MaskStrategy)
MASK_MODES = get_args(MaskMode)
CLAMP_FLOOR = -30.0
"""Floor for teacher log-probs under mask_strategy="clamp" (e^-30 ~ 1e-13 per token)."""


def _choice(value: str, allowed: Sequence[str], what: str) -> str:
    if value not in allowed:
        raise SeedVLMError(f"unknown {what} {value!r}; choose one of {list(allowed)}")
    return value


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; every narrower float type (bf16, fp16, fp32) is computed in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def upcast(x: torch.Tensor) -> torch.Tensor:
    """`x` in the precision the SEED math computes in (`_compute_dtype`)."""
    return x.to(_compute_dtype(x.dtype))


# --------------------------------------------------------------------------------------------------------------
# Perturbations of the image (docs/design.md section 2, rows 2-3; section 3 for VCD's DDPM noise)
# --------------------------------------------------------------------------------------------------------------


def add_noise(pixel_values: torch.Tensor, alpha: float = 0.3, generator: torch.Generator | None = None) -> torch.Tensor:
    """Gaussian noise on normalized pixel values, docs/design.md section 2:

        x' = sqrt(a) * x + sqrt(1 - a) * eps,    eps ~ N(0, I)        [a = 0.3, the reference implementation's default]

    eps is drawn in float32 (float64 for float64 input) with `generator` (None: torch's global RNG) on the tensor's
    device, the sum is computed in that precision and cast back, so the dtype is preserved. a = 1 returns x exactly
    (eps is still drawn, so the generator advances the same way for every a); a = 0 is pure noise.
    """
    a = float(alpha)
    if not 0.0 <= a <= 1.0:
        raise SeedVLMError(f"noise alpha must be in [0, 1], got {alpha}")
    cdt = _compute_dtype(pixel_values.dtype)
    eps = torch.randn(pixel_values.shape, generator=generator, device=pixel_values.device, dtype=cdt)
    out = math.sqrt(a) * pixel_values.to(cdt) + math.sqrt(1.0 - a) * eps
    return out.to(pixel_values.dtype)


def ddpm_alpha_bar(
    step: int,
    num_steps: int = 1000,
    beta_start: float | None = None,
    beta_end: float | None = None,
    schedule: DdpmSchedule = "vcd",
) -> float:
    """alpha_bar of a DDPM forward process at `step` (0-based, as VCD indexes it):

        alpha_bar_t = prod_{s=0..t} (1 - beta_s)

    schedule="vcd" (default) is the schedule of VCD's `vcd_utils/vcd_add_noise.py` (docs/design.md section 3):
        beta_s = sigmoid(linspace(-6, 6, num_steps))_s * (beta_end - beta_start) + beta_start,
        beta_start = 1e-5, beta_end = 5e-3;
    VCD's step 500 of 1000 gives alpha_bar_500 = 0.74480 (the 0.7448 of docs/design.md section 3).
    schedule="linear" is the DDPM paper's linear schedule, beta_s = linspace(beta_start, beta_end, num_steps),
    beta_start = 1e-4, beta_end = 0.02; there step 500 gives 0.07780, i.e. far more noise than VCD used.
    beta_start/beta_end = None take the schedule's own defaults above. Computed in float64, returned as a float.
    """
    _choice(schedule, get_args(DdpmSchedule), "DDPM schedule")
    if not 0 <= int(step) < int(num_steps):
        raise SeedVLMError(f"DDPM step must be in [0, {num_steps - 1}], got {step}")
    if schedule == "vcd":
        lo = 1e-5 if beta_start is None else float(beta_start)
        hi = 5e-3 if beta_end is None else float(beta_end)
        betas = torch.sigmoid(torch.linspace(-6, 6, int(num_steps), dtype=torch.float64)) * (hi - lo) + lo
    else:
        lo = 1e-4 if beta_start is None else float(beta_start)
        hi = 0.02 if beta_end is None else float(beta_end)
        betas = torch.linspace(lo, hi, int(num_steps), dtype=torch.float64)
    return float(torch.prod(1.0 - betas[: int(step) + 1]))


def add_ddpm_noise(
    pixel_values: torch.Tensor, step: int = 500, generator: torch.Generator | None = None
) -> torch.Tensor:
    """VCD's noise (docs/design.md section 3): the DDPM forward process q(x_t | x_0) at `step` of 1000,

        x_t = sqrt(alpha_bar_t) * x + sqrt(1 - alpha_bar_t) * eps,

    i.e. `add_noise(x, alpha=ddpm_alpha_bar(step))` with VCD's sigmoid schedule (alpha_bar_500 = 0.7448).
    """
    return add_noise(pixel_values, alpha=ddpm_alpha_bar(step), generator=generator)


def mask_patches(
    pixel_values: torch.Tensor,
    patch_size: int,
    ratio: float = 0.5,
    generator: torch.Generator | None = None,
    fill: float = 0.0,
) -> torch.Tensor:
    """Random patch masking: per image, round(ratio * n_patches) whole patch_size x patch_size squares set to `fill`
    in every channel (an option beside the reference implementation's Gaussian noise; not in it).

    pixel_values: (..., C, H, W); every leading index is one image with its own random choice of patches. The
    patch grid is ceil(H / p) x ceil(W / p): a partial patch at the right/bottom edge counts as one patch and is
    masked whole. fill = 0.0 on normalized pixels is the dataset mean colour. Which patches are masked is drawn
    with `generator` (on the tensor's device); the input is not modified.
    """
    if patch_size <= 0:
        raise SeedVLMError(f"patch_size must be positive, got {patch_size}")
    if not 0.0 <= float(ratio) <= 1.0:
        raise SeedVLMError(f"mask ratio must be in [0, 1], got {ratio}")
    if pixel_values.dim() < 3:
        raise SeedVLMError(f"mask_patches expects (..., C, H, W) pixels, got shape {tuple(pixel_values.shape)}")
    *lead, c, h, w = pixel_values.shape
    gh, gw = -(-h // patch_size), -(-w // patch_size)
    n = gh * gw
    k = int(round(float(ratio) * n))
    b = int(math.prod(lead))
    scores = torch.rand((b, n), generator=generator, device=pixel_values.device)
    chosen = scores.argsort(dim=1)[:, :k]
    patch_mask = torch.zeros((b, n), dtype=torch.bool, device=pixel_values.device)
    patch_mask.scatter_(1, chosen, True)
    pix = patch_mask.view(b, gh, gw).repeat_interleave(patch_size, 1).repeat_interleave(patch_size, 2)[:, :h, :w]
    pix = pix.view(*lead, 1, h, w)
    return pixel_values.masked_fill(pix, fill)


def blur(pixel_values: torch.Tensor, sigma: float = 0.03) -> torch.Tensor:
    """Gaussian blur of every image and channel: a separable kernel of standard deviation sigma * W pixels (sigma
    is a fraction of the image width, so one setting means the same on a 64 px and a 336 px image), truncated at
    3 standard deviations, borders replicated. Shapes stay blurred, colours stay: the gist survives, the details
    do not. pixel_values (..., C, H, W); computed in float32 (float64 stays float64), dtype preserved."""
    if not float(sigma) > 0.0:
        raise SeedVLMError(f"blur sigma must be positive, got {sigma}")
    if pixel_values.dim() < 3:
        raise SeedVLMError(f"blur expects (..., C, H, W) pixels, got shape {tuple(pixel_values.shape)}")
    *lead, c, h, w = pixel_values.shape
    cdt = _compute_dtype(pixel_values.dtype)
    std = float(sigma) * w
    radius = max(1, int(math.ceil(3.0 * std)))
    x = torch.arange(-radius, radius + 1, dtype=cdt, device=pixel_values.device)
    kernel = torch.exp(-0.5 * (x / std) ** 2)
    kernel = kernel / kernel.sum()
    img = pixel_values.reshape(-1, 1, h, w).to(cdt)
    img = F.conv2d(F.pad(img, (radius, radius, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))
    img = F.conv2d(F.pad(img, (0, 0, radius, radius), mode="replicate"), kernel.view(1, 1, -1, 1))
    return img.reshape(*lead, c, h, w).to(pixel_values.dtype)


def blank(pixel_values: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
    """The image replaced by one colour (fill = 0.0 on normalized pixels is the dataset mean colour): no visual
    evidence at all, so the model answers from its language prior alone (the contrast of image-free methods)."""
    return torch.full_like(pixel_values, float(fill))


def perturb(
    pixel_values: torch.Tensor,
    kind: Perturbation = "gaussian",
    *,
    alpha: float = 0.3,
    step: int = 500,
    mask_ratio: float = 0.5,
    patch_size: int = 14,
    blur_sigma: float = 0.03,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Dispatch to one perturbation: "gaussian" -> add_noise(alpha) [the reference implementation's], "ddpm" -> add_ddpm_noise(step)
    [VCD], "mask" -> mask_patches(patch_size, mask_ratio), "blur" -> blur(blur_sigma), "blank" -> blank()
    (blur and blank draw nothing from `generator`)."""
    _choice(kind, PERTURBATIONS, "perturbation")
    if kind == "gaussian":
        return add_noise(pixel_values, alpha=alpha, generator=generator)
    if kind == "ddpm":
        return add_ddpm_noise(pixel_values, step=step, generator=generator)
    if kind == "blur":
        return blur(pixel_values, sigma=blur_sigma)
    if kind == "blank":
        return blank(pixel_values)
    return mask_patches(pixel_values, patch_size=patch_size, ratio=mask_ratio, generator=generator)


def per_sample_generator(seed: int, *key: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A torch.Generator seeded from (seed, *key) only (docs/design.md section 2, row 3: noise seeded
    per sample and step; training keys a sample by (index, step), decoding an image by a hash of its pixels): the
    seed is the first 8 bytes of blake2b("seed:key0:key1...") masked to 63 bits, so it does not depend on the batch,
    the rank, the process or Python's hash randomization."""
    text = ":".join(str(int(x)) for x in (seed, *key))
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    g = torch.Generator(device=device)
    g.manual_seed(int.from_bytes(digest, "little") & ((1 << 63) - 1))
    return g


def perturb_per_sample(
    pixel_values: torch.Tensor,
    keys: Sequence[Sequence[int]],
    kind: Perturbation = "gaussian",
    *,
    seed: int,
    alpha: float = 0.3,
    step: int = 500,
    mask_ratio: float = 0.5,
    patch_size: int = 14,
    blur_sigma: float = 0.03,
) -> torch.Tensor:
    """`perturb` image by image, image i with `per_sample_generator(seed, *keys[i])`: the noise an image gets depends
    on (seed, its key) only, so it is the same in a batch of 1 or of 8, at any position. pixel_values (B, C, H, W);
    `step` is the DDPM step of kind="ddpm" (the key holds the training step)."""
    if len(keys) != pixel_values.shape[0]:
        raise SeedVLMError(f"{len(keys)} noise keys for a batch of {pixel_values.shape[0]} images")
    rows = [perturb(pixel_values[i:i + 1], kind, alpha=alpha, step=step, mask_ratio=mask_ratio,
                    patch_size=patch_size, blur_sigma=blur_sigma,
                    generator=per_sample_generator(seed, *key, device=pixel_values.device))
            for i, key in enumerate(keys)]
    return torch.cat(rows) if rows else pixel_values.clone()


# --------------------------------------------------------------------------------------------------------------
# Confidence and the dynamic b (docs/design.md section 2, rows 5-6)
# --------------------------------------------------------------------------------------------------------------


def confidence(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Confidence of each sample, docs/design.md section 2:

        conf_b = mean_{t : mask[b, t]} log max_v softmax(logits[b, t])_v
               = mean_{t : mask[b, t]} ( max_v logits[b, t, v] - logsumexp_v logits[b, t, v] )

    0 = most confident, negative otherwise. mask (B, L) bool (the answer positions, see `answer_positions`);
    logits (B, L, V) (the clean teacher's) or the gathered answer rows `logits[mask]` (N, V) -> (B,) float32. Only
    the answer rows are converted to float32. A sample with no answer row gets 0.0 (not NaN); the caller should not
    feed such rows into the b history (BetaSchedule.update takes a `valid` mask for this).
    """
    mask = mask.bool()
    if logits.dim() == 3 and mask.shape == logits.shape[:2]:
        logits = logits[mask]
    if logits.dim() != 2 or mask.dim() != 2 or logits.shape[0] != int(mask.sum()):
        raise SeedVLMError(f"confidence expects logits (B, L, V) or answer rows (N, V) and a (B, L) mask with N "
                           f"answer positions; got {tuple(logits.shape)} and {tuple(mask.shape)}")
    r = logits.float()
    per_row = r.max(dim=-1).values - torch.logsumexp(r, dim=-1)
    owner = mask.nonzero(as_tuple=True)[0]
    sums = torch.zeros(mask.shape[0], dtype=torch.float32, device=logits.device).index_add_(0, owner, per_row)
    return sums / mask.sum(dim=1).clamp_min(1).to(torch.float32)


def middle_value(values: Sequence[float]) -> float:
    """The "middle value" of docs/design.md section 2 (b while the history is short): the median of `values`; with an
    even count the mean of the two middle entries, e.g. (1.1, 0.8, 0.6, 0.4) -> (0.8 + 0.6) / 2 = 0.7."""
    v = sorted(float(x) for x in values)
    if not v:
        raise SeedVLMError("no b values given")
    m = len(v) // 2
    return v[m] if len(v) % 2 else (v[m - 1] + v[m]) / 2.0


def _as_float_tensor(conf: Any) -> torch.Tensor:
    t = conf if isinstance(conf, torch.Tensor) else torch.tensor(conf, dtype=torch.float32)
    return t if t.is_floating_point() else t.float()


def _history_tensor(history: Any) -> torch.Tensor:
    h = history if isinstance(history, torch.Tensor) else torch.tensor(list(history), dtype=torch.float64)
    h = h.detach().reshape(-1).to(device="cpu", dtype=torch.float64)
    return h[torch.isfinite(h)]


def select_beta(
    conf: Any,
    history: Any,
    values: Sequence[float] = (1.1, 0.8, 0.6, 0.4),
    quantiles: Sequence[float] = (0.25, 0.5, 0.75),
    min_history: int = 20,
) -> torch.Tensor:
    """Dynamic b, docs/design.md section 2 (the reference implementation's rule):

        thresholds q_i = quantile(history, quantiles[i])   (torch.quantile, linear interpolation)
        b = values[0] if conf < q_0, values[1] if q_0 <= conf < q_1, values[2] if q_1 <= conf < q_2, else values[3]

    i.e. b = values[#{i : q_i <= conf}] (a confidence equal to a threshold goes to the upper bucket). With the
    defaults a low-confidence sample gets the strongest purification (1.1), a confident one the weakest (0.4).
    With fewer than `min_history` finite history entries every sample gets `middle_value(values)` (0.7 with the
    defaults). conf: a float, a 0-d or a (B,) tensor -> float32 betas of the same shape on conf's device.
    history: a 1-D tensor or a sequence of past confidences (non-finite entries are ignored).
    """
    if len(values) != len(quantiles) + 1:
        raise SeedVLMError(
            f"need one more b value than quantiles; got {len(values)} values, {len(quantiles)} quantiles")
    if list(quantiles) != sorted(quantiles) or any(not 0.0 <= q <= 1.0 for q in quantiles):
        raise SeedVLMError(f"quantiles must be ascending and in [0, 1], got {list(quantiles)}")
    c = _as_float_tensor(conf).detach()
    h = _history_tensor(history)
    if h.numel() < max(int(min_history), 1):
        return torch.full(c.shape, middle_value(values), dtype=torch.float32, device=c.device)
    thresholds = torch.quantile(h, torch.tensor(list(quantiles), dtype=torch.float64))
    bucket = torch.bucketize(c.to("cpu", torch.float64), thresholds, right=True)
    table = torch.tensor([float(v) for v in values], dtype=torch.float32)
    return table[bucket].to(c.device)


def continuous_beta(conf: Any, b_max: float = 1.1, tau: float = 1.0) -> torch.Tensor:
    """Continuous b (an option of docs/design.md section 2): b = b_max * sigmoid(-conf / tau).

    conf <= 0, so b lies in [b_max / 2, b_max): b_max / 2 for a fully confident sample, -> b_max as confidence
    falls (the same direction as the quantile rule). Returns float32, conf's shape and device.
    """
    if tau <= 0:
        raise SeedVLMError(f"tau must be positive, got {tau}")
    c = _as_float_tensor(conf).detach().float()
    return float(b_max) * torch.sigmoid(-c / float(tau))


def curriculum_beta(
    step: int, total_steps: int, b_start: float = 0.0, b_end: float = 1.1, warmup_fraction: float = 0.3
) -> float:
    """Curriculum b (an option of docs/design.md section 2): a linear ramp, then constant,

        b(step) = b_start + (b_end - b_start) * min(1, step / (warmup_fraction * total_steps)),

    so b = b_start at step 0 and b_end from step warmup_fraction * total_steps on. warmup_fraction = 0 -> b_end.
    """
    ramp = float(warmup_fraction) * float(total_steps)
    frac = 1.0 if ramp <= 0 else min(1.0, max(0.0, float(step) / ramp))
    return float(b_start) + (float(b_end) - float(b_start)) * frac


class BetaSchedule:
    """The b of each sample for the trainer: one of the docs/design.md section 2 rules plus the confidence history.

    kind="quantile" (the reference implementation's): select_beta against the last `history_size` confidences;
    kind="fixed": b = `fixed` for every sample; kind="continuous": continuous_beta(conf, b_max, tau);
    kind="curriculum": curriculum_beta(step, total_steps, b_start, b_end, warmup_fraction).

    Order per batch: `betas = schedule(conf, step)` THEN `schedule.update(conf)`: the thresholds for a batch use
    the history BEFORE that batch, so a sample is never compared with itself. The history is kept for every kind
    (so a run can switch kinds on resume). Under data parallelism gather the confidences of all ranks before
    `update` so every rank holds the same history. state_dict() is plain JSON (lists and floats).
    """

    def __init__(
        self,
        kind: BetaKind = "quantile",
        values: Sequence[float] = (1.1, 0.8, 0.6, 0.4),
        quantiles: Sequence[float] = (0.25, 0.5, 0.75),
        fixed: float = 0.7,
        b_max: float = 1.1,
        tau: float = 1.0,
        history_size: int = 1000,
        min_history: int = 20,
        total_steps: int | None = None,
        b_start: float = 0.0,
        b_end: float = 1.1,
        warmup_fraction: float = 0.3,
    ) -> None:
        self.kind = _choice(kind, BETA_KINDS, "b schedule")
        if len(values) != len(quantiles) + 1:
            raise SeedVLMError(f"need one more b value than quantiles; got {list(values)} and {list(quantiles)}")
        if kind == "curriculum" and not total_steps:
            raise SeedVLMError("b schedule 'curriculum' needs total_steps")
        if history_size <= 0:
            raise SeedVLMError(f"history_size must be positive, got {history_size}")
        self.values = tuple(float(v) for v in values)
        self.quantiles = tuple(float(q) for q in quantiles)
        self.fixed = float(fixed)
        self.b_max, self.tau = float(b_max), float(tau)
        self.history_size, self.min_history = int(history_size), int(min_history)
        self.total_steps = total_steps
        self.b_start, self.b_end, self.warmup_fraction = float(b_start), float(b_end), float(warmup_fraction)
        self.history: deque[float] = deque(maxlen=self.history_size)

    def __call__(self, conf: Any, step: int = 0, pending: Any = None) -> torch.Tensor:
        """b for each sample of a batch: conf (B,) (or a scalar) -> float32 betas of conf's shape and device.
        Does not touch the history (call `update` after).

        pending: confidences that come before this batch in the global sample order but are not in the history
        yet (under data parallelism: the batches of the lower ranks in the same micro-step). The thresholds then
        use the history as `update(pending)` would leave it, so rank r of N sees what one process running the
        same batches one after another would see."""
        c = _as_float_tensor(conf).detach()
        if self.kind == "quantile":
            history = list(self.history)
            if pending is not None:
                extra = _as_float_tensor(pending).detach().reshape(-1).to("cpu", torch.float64)
                history = (history + [float(x) for x in extra[torch.isfinite(extra)].tolist()])[-self.history_size:]
            return select_beta(c, history, self.values, self.quantiles, self.min_history)
        if self.kind == "continuous":
            return continuous_beta(c, self.b_max, self.tau)
        if self.kind == "fixed":
            b = self.fixed
        else:
            b = curriculum_beta(step, int(self.total_steps), self.b_start, self.b_end, self.warmup_fraction)
        return torch.full(c.shape, b, dtype=torch.float32, device=c.device)

    def update(self, confs: Any, valid: Any = None) -> None:
        """Append a batch of confidences to the history (oldest dropped beyond history_size). Non-finite values
        and rows where `valid` is False (e.g. samples without answer tokens) are skipped."""
        c = _as_float_tensor(confs).detach().reshape(-1).to("cpu", torch.float64)
        keep = torch.isfinite(c)
        if valid is not None:
            keep &= torch.as_tensor(valid).reshape(-1).to("cpu").bool()
        self.history.extend(float(x) for x in c[keep].tolist())

    def thresholds(self) -> list[float] | None:
        """The current quantile thresholds (for logging), or None while the history is shorter than min_history."""
        if len(self.history) < max(self.min_history, 1):
            return None
        h = torch.tensor(list(self.history), dtype=torch.float64)
        return torch.quantile(h, torch.tensor(self.quantiles, dtype=torch.float64)).tolist()

    def state_dict(self) -> dict:
        """Plain JSON: {"kind", "history_size", "history": [float, ...]}."""
        return {"kind": self.kind, "history_size": self.history_size, "history": [float(x) for x in self.history]}

    def load_state_dict(self, state: dict) -> None:
        """Restore the history (the last history_size entries are kept). The rule itself comes from __init__."""
        if not isinstance(state, dict) or not isinstance(state.get("history"), list):
            raise SeedVLMError("b schedule state must be a dict with a 'history' list")
        self.history = deque((float(x) for x in state["history"]), maxlen=self.history_size)


# --------------------------------------------------------------------------------------------------------------
# Purification and the losses (docs/design.md section 2, rows 7-9)
# --------------------------------------------------------------------------------------------------------------


def _broadcast_beta(beta: Any, like: torch.Tensor) -> torch.Tensor | float:
    if not isinstance(beta, torch.Tensor):
        return float(beta)
    b = beta.detach().to(device=like.device, dtype=torch.float32)
    if b.dim() > like.dim():
        raise SeedVLMError(f"beta of shape {tuple(b.shape)} does not fit logits of shape {tuple(like.shape)}")
    while b.dim() < like.dim():
        b = b.unsqueeze(-1)
    return b


def purify(
    clean: torch.Tensor,
    noisy: torch.Tensor,
    beta: Any,
    space: Space = "logit",
    plausibility: float | None = None,
) -> torch.Tensor:
    """The purified teacher target, docs/design.md section 2 (and the contrastive decoding of section 3):

        space="logit" (default, the reference implementation):  (1 + b) * clean - b * noisy
        space="logprob":                    (1 + b) * log_softmax(clean) - b * log_softmax(noisy)

    beta: a float or a tensor over the leading dims ((B,), (B, 1), (N,), ...): trailing singleton dims are added
    until it broadcasts over the rest (positions, vocabulary), so a (B,) beta applies one b per sample.
    plausibility g (VCD's adaptive plausibility constraint; None/0 = off, the reference implementation's default;
    VCD uses 0.1):
    a token whose clean probability is below g * max_v clean probability, i.e.
    log_softmax(clean)_v < log g + max_u log_softmax(clean)_u, gets -inf in the result (ties are kept; the clean
    argmax always survives). Computed and returned in float32 (float64 stays float64); no gradient is needed here
    (the teacher runs under no_grad), but none is blocked either.
    """
    _choice(space, SPACES, "purification space")
    if clean.shape != noisy.shape:
        raise SeedVLMError(f"clean and noisy logits differ in shape: {tuple(clean.shape)} vs {tuple(noisy.shape)}")
    cdt = _compute_dtype(clean.dtype)
    c, n = clean.to(cdt), noisy.to(cdt)
    b = _broadcast_beta(beta, c)
    if isinstance(b, torch.Tensor):
        b = b.to(cdt)
    c_logp = None
    if space == "logprob":
        c_logp = F.log_softmax(c, dim=-1)
        out = (1 + b) * c_logp - b * F.log_softmax(n, dim=-1)
    else:
        out = (1 + b) * c - b * n
    if plausibility:
        if c_logp is None:
            c_logp = F.log_softmax(c, dim=-1)
        out = out.masked_fill(implausible(c_logp, plausibility), float("-inf"))
    return out


def implausible(scores: torch.Tensor, g: float, extra: torch.Tensor | None = None) -> torch.Tensor:
    """VCD's adaptive plausibility constraint: True where a token's clean log-probability is below log g plus the
    row's best, scores_v < log g + max_u scores_u (scores: (..., V) clean log-probs or any per-row shift of them;
    ties are kept, so the argmax always survives). extra (...,): one more score per row held against the same
    cutoff (without entering the max), its verdict appended as a last column."""
    g = float(g)
    if not 0.0 < g <= 1.0:
        raise SeedVLMError(f"plausibility g must be in (0, 1], got {g}")
    cutoff = math.log(g) + scores.max(dim=-1, keepdim=True).values
    out = scores < cutoff
    return out if extra is None else torch.cat([out, extra[..., None] < cutoff], dim=-1)


def masked_target_log_probs(
    purified: torch.Tensor, T: float = 2.0, mask_mode: MaskMode = "renorm", floor: float = CLAMP_FLOOR
) -> torch.Tensor:
    """Teacher log-probs at temperature T from a purified target that may hold -inf entries (plausibility mask):

        mask_mode="renorm": log p_t = log_softmax(purified / T): -inf entries stay -inf (p_t = 0) and the kept
                            tokens are renormalized among themselves;
        mask_mode="clamp":  the same, then clamped to `floor` (-30): every token keeps a tiny probability, so the
                            target is no longer exactly normalized (excess <= V * e^-30, ~3e-9 for V = 32064).

    Why it matters: with REVERSE KL, sum_v p_s (log p_s - log p_t), a -inf log p_t makes the loss +inf wherever
    the student puts any mass (always, softmax is never 0). `distill_loss` handles this with its mask_strategy.
    A row whose entries are all -inf has no distribution; purify never produces one (the clean argmax is kept).
    Float32 (float64 stays float64).
    """
    _choice(mask_mode, MASK_MODES, "target mask mode")
    if T <= 0:
        raise SeedVLMError(f"temperature T must be positive, got {T}")
    logp = F.log_softmax(purified.to(_compute_dtype(purified.dtype)) / float(T), dim=-1)
    return logp.clamp_min(float(floor)) if mask_mode == "clamp" else logp


def _kl_rows_sum(
    student: torch.Tensor, teacher: torch.Tensor, T: float, direction: str, mask_strategy: str, floor: float
) -> torch.Tensor:
    """Sum over rows and vocab of the per-row KL (no T^2, no mean). float32; finite for -inf teacher entries."""
    cdt = _compute_dtype(student.dtype)
    s = student.to(cdt) / float(T)
    t_logp = masked_target_log_probs(teacher.to(cdt), T, "renorm")
    support = torch.isfinite(t_logp)
    zero = torch.zeros((), dtype=cdt, device=s.device)
    if direction == "forward":
        # KL(teacher || student) = sum_v p_t (log p_t - log p_s), with 0 * log 0 = 0 outside the support.
        s_logp = F.log_softmax(s, dim=-1)
        t_safe = torch.where(support, t_logp, zero)
        return (t_safe.exp() * torch.where(support, t_safe - s_logp, zero)).sum()
    if mask_strategy == "clamp":
        # KL(student || teacher) against teacher log-probs clamped to `floor`: finite everywhere.
        s_logp = F.log_softmax(s, dim=-1)
        return (s_logp.exp() * (s_logp - t_logp.clamp_min(float(floor)))).sum()
    # "restrict": KL(student' || teacher) with student' = student renormalized over the teacher's support.
    s_logp = F.log_softmax(s.masked_fill(~support, float("-inf")), dim=-1)
    diff = torch.where(support, s_logp, zero) - torch.where(support, t_logp, zero)
    return (s_logp.exp() * diff).sum()


def distill_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    T: float = 2.0,
    direction: Direction = "reverse",
    mask_strategy: MaskStrategy = "restrict",
    chunk_size: int | None = None,
    floor: float = CLAMP_FLOOR,
) -> torch.Tensor:
    """The distillation term of docs/design.md section 2, T^2 * KL with "batchmean" over answer-token rows:

        direction="reverse" (default, the reference implementation's):
            T^2 / N * sum_rows sum_v p_s (log p_s - log p_t) = T^2 * KL(student || teacher)
            = T^2 * F.kl_div(log_softmax(teacher / T), softmax(student / T), reduction="batchmean")
        direction="forward":
            T^2 / N * sum_rows sum_v p_t (log p_t - log p_s) = T^2 * KL(teacher || student)
            = T^2 * F.kl_div(log_softmax(student / T), log_softmax(teacher / T), log_target=True, "batchmean")

    with p_s = softmax(student / T), p_t = softmax(teacher / T) [T = 2]. student, teacher: (N, V) logits at the
    answer positions (teacher = the purified target, possibly with -inf from the plausibility mask).
    -inf teacher entries (p_t = 0), never NaN, in value or gradient:
      reverse, mask_strategy="restrict" (default): the student is renormalized over the teacher's support,
          p_s' = softmax(student / T restricted to support), so the loss is finite; student mass outside the
          support is ignored (neither rewarded nor penalized). Without -inf entries this is plain reverse KL.
      reverse, mask_strategy="clamp": log p_t is clamped to `floor` (-30), so outside the support the student pays
          p_s * (log p_s + 30): a large but finite push away from those tokens.
      forward: finite as is (0 * log 0 = 0); mask_strategy does not apply.
    chunk_size: compute over rows in chunks of this size; with autograd on, each chunk is checkpointed, so only
    one chunk's float32 (chunk, V) intermediates are alive at a time, in forward and in backward. Same value.
    Zero rows -> 0 (connected to the graph). Computed and returned in float32.
    """
    _choice(direction, DIRECTIONS, "KL direction")
    _choice(mask_strategy, MASK_STRATEGIES, "mask strategy")
    if T <= 0:
        raise SeedVLMError(f"temperature T must be positive, got {T}")
    if student.shape != teacher.shape or student.dim() != 2:
        raise SeedVLMError(f"distill_loss expects student and teacher logits of one shape (N, V); got "
                           f"{tuple(student.shape)} and {tuple(teacher.shape)}")
    n = student.shape[0]
    if n == 0:
        return student.sum().to(_compute_dtype(student.dtype)) * 0.0
    args = (float(T), direction, mask_strategy, float(floor))
    if not chunk_size or chunk_size >= n:
        total = _kl_rows_sum(student, teacher, *args)
    else:
        use_ckpt = torch.is_grad_enabled() and (student.requires_grad or teacher.requires_grad)
        total = None
        for i in range(0, n, int(chunk_size)):
            s, t = student[i:i + chunk_size], teacher[i:i + chunk_size]
            part = (checkpoint(_kl_rows_sum, s, t, *args, use_reentrant=False) if use_ckpt
                    else _kl_rows_sum(s, t, *args))
            total = part if total is None else total + part
    return total * (float(T) ** 2 / n)


def combined_loss(
    student: torch.Tensor,
    purified: torch.Tensor,
    labels: torch.Tensor,
    w: float = 0.7,
    T: float = 2.0,
    direction: Direction = "reverse",
    mask_strategy: MaskStrategy = "restrict",
    chunk_size: int | None = None,
    kl_student: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The SEED loss on answer tokens, docs/design.md section 2:

        L = w * T^2 * KL + (1 - w) * CE          [w = 0.7, T = 2, reverse KL]

    student, purified: (N, V) logits at the answer positions (see `answer_positions`); labels: (N,) target ids.
    KL = distill_loss(kl_student, purified, T, direction, mask_strategy) (already includes T^2, batchmean), where
    kl_student is the student in the target's columns (default: `student`; a teacher cache keeps fewer columns);
    CE = cross_entropy(student, labels) at T = 1, mean over the N rows. Zero rows -> L = 0.
    Returns (L, {"loss", "distill", "ce"}) with the parts as detached Python floats (distill = T^2 * KL).
    """
    if not 0.0 <= float(w) <= 1.0:
        raise SeedVLMError(f"loss weight w must be in [0, 1], got {w}")
    if labels.shape != student.shape[:1]:
        raise SeedVLMError(f"labels of shape {tuple(labels.shape)} for {student.shape[0]} answer rows")
    kl_student = student if kl_student is None else kl_student
    kl = distill_loss(kl_student, purified, T=T, direction=direction, mask_strategy=mask_strategy,
                      chunk_size=chunk_size)
    if student.shape[0] == 0:
        ce = kl * 0.0
    else:
        ce = F.cross_entropy(student.to(_compute_dtype(student.dtype)), labels.long())
    loss = float(w) * kl + (1.0 - float(w)) * ce
    parts = {"loss": float(loss.detach()), "distill": float(kl.detach()), "ce": float(ce.detach())}
    return loss, parts


def answer_positions(labels: torch.Tensor, ignore_index: int = -100) -> tuple[torch.Tensor, torch.Tensor]:
    """The "shifted answer tokens only" rule of docs/design.md section 2: logits at position t predict labels[t + 1],
    so the positions that carry an answer prediction are

        mask[:, t] = labels[:, t + 1] != ignore_index   (t < L - 1),    mask[:, L - 1] = False
        targets    = labels[:, 1:][labels[:, 1:] != ignore_index]      (row-major order)

    labels (B, L) -> (mask (B, L) bool, targets (N,) long), with N = mask.sum(). `logits[mask]` then lines up row
    for row with `targets`, for the student and for the teacher alike.
    """
    if labels.dim() != 2:
        raise SeedVLMError(f"answer_positions expects labels (B, L), got shape {tuple(labels.shape)}")
    nxt = labels[:, 1:]
    keep = nxt != ignore_index
    mask = torch.zeros(labels.shape, dtype=torch.bool, device=labels.device)
    mask[:, :-1] = keep
    return mask, nxt[keep].long()
