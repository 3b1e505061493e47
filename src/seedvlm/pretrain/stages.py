"""The three pretraining stages, each a small loop over one objective (the LLaVA recipe, scaled down):
1. vision tower alone: multi-label object classification (a linear head per patch, pooled) on unpaired scenes;
2. alignment: tower frozen, its features cached; projector + language model learn captions and descriptions;
3. instruction tuning on every instruct turn with the loss averaged per sample, so one-word answers count."""

from __future__ import annotations

import math
import time
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from seedvlm.pretrain.data import batches, collate, normalize_images
from seedvlm.pretrain.levers import swap_to_noisy, swap_to_uninformative


def cosine_lr(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warm-up then cosine decay to 10% of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


def vision_features(model, pixel_values: torch.Tensor) -> torch.Tensor:
    """The features LLaVA feeds its projector: hidden states of `vision_feature_layer`, CLS dropped ("default")."""
    cfg = model.config
    out = model.model.vision_tower(pixel_values, output_hidden_states=True)
    feats = out.hidden_states[cfg.vision_feature_layer]
    if cfg.vision_feature_select_strategy == "default":
        feats = feats[:, 1:]
    return feats


def _optimizer_step(opt, params, loss: torch.Tensor, lr: float, loss_ema: float | None, bar, step: int) -> float:
    """One AdamW step at `lr` with gradients clipped to norm 1; returns the loss's moving average (shown every 20
    steps on the progress bar)."""
    for group in opt.param_groups:
        group["lr"] = lr
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    loss_ema = loss.item() if loss_ema is None else 0.95 * loss_ema + 0.05 * loss.item()
    bar.update(1)
    if step % 20 == 0:
        bar.set_postfix(loss=f"{loss_ema:.4f}")
    return loss_ema


def _progress(desc: str, total: int):
    return tqdm(total=total, desc=desc, unit="step", dynamic_ncols=True, mininterval=1.0)


def train_vision(model, pool_images: np.ndarray, pool_labels: np.ndarray, steps: int, batch_size: int, lr: float,
                 warmup_fraction: float, weight_decay: float, device: torch.device, seed: int,
                 class_word_ids: list[list[int]] | None = None, train_word_embeddings: bool = True,
                 degrade=None) -> dict:
    """Stage 1: train the vision tower with multi-label BCE; returns final metrics (loss, mAP on a held-out slice).

    With `class_word_ids` (the token ids of each category's name) the head is word-aligned, as CLIP aligns images
    with text: a patch's score for a category is the cosine between the *projected* patch feature and the mean input
    embedding of the category's words, so tower, projector and those word embeddings are trained together and the
    language model later receives image tokens that already resemble the words naming what they show. With
    `train_word_embeddings=False` (after text pretraining) the words stay fixed and vision is aligned to them.
    Otherwise a plain linear head per patch on the tower's features.
    `degrade(pix, labels, pool indices, rng) -> (pix, targets, what was done)` (seedvlm.pretrain.levers) shows part
    of each batch degraded with the targets cut to what stays visible; None (default) shows every image clean.
    """
    n_cls = pool_labels.shape[1]
    tower = model.model.vision_tower
    for p in model.parameters():  # an earlier stage may have frozen the tower and projector: this stage trains them
        p.requires_grad_(False)
    for p in list(tower.parameters()) + list(model.model.multi_modal_projector.parameters()):
        p.requires_grad_(True)
    params = list(tower.parameters())
    groups = [{"params": params, "weight_decay": weight_decay}]
    if class_word_ids is not None:
        projector = model.model.multi_modal_projector
        emb = model.get_input_embeddings()
        n_words = max(len(w) for w in class_word_ids)
        ids = torch.zeros((n_cls, n_words), dtype=torch.long)
        wmask = torch.zeros((n_cls, n_words))
        for k, w in enumerate(class_word_ids):
            ids[k, :len(w)] = torch.tensor(w)
            wmask[k, :len(w)] = 1.0
        ids, wmask = ids.to(device), (wmask / wmask.sum(1, keepdim=True)).to(device)
        scale = torch.nn.Parameter(torch.tensor(math.log(10.0), device=device))
        bias = torch.nn.Parameter(torch.full((n_cls,), -2.0, device=device))
        emb.weight.requires_grad_(train_word_embeddings)
        extra = [emb.weight, scale, bias] if train_word_embeddings else [scale, bias]
        groups += [{"params": list(projector.parameters()), "weight_decay": weight_decay},
                   {"params": extra, "weight_decay": 0.0}]
        params = params + list(projector.parameters()) + extra
        word_vectors = emb(ids) if train_word_embeddings else emb(ids).detach()

        def patch_logits_of(feats):
            words = emb(ids) if train_word_embeddings else word_vectors
            f = F.normalize(projector(feats), dim=-1)                          # (B, P, H)
            c = F.normalize((words * wmask.unsqueeze(-1)).sum(1), dim=-1)     # (C, H)
            return scale.exp() * f @ c.T + bias
    else:
        head = torch.nn.Linear(model.config.vision_config.hidden_size, n_cls).to(device)
        groups.append({"params": list(head.parameters()), "weight_decay": weight_decay})
        params = params + list(head.parameters())
        patch_logits_of = head
    opt = torch.optim.AdamW(groups, lr=lr)
    n_hold = min(512, len(pool_images) // 10)
    train_idx = np.arange(n_hold, len(pool_images))
    g = np.random.default_rng(seed)
    warmup = max(1, int(steps * warmup_fraction))
    tower.train()
    bar = _progress("stage 1 vision", steps)
    loss_ema = None
    degraded = 0
    t0 = time.time()

    def logits_of(pix):
        patch_logits = patch_logits_of(vision_features(model, pix))           # (B, P, C)
        return torch.logsumexp(patch_logits, dim=1) - math.log(patch_logits.shape[1])  # soft max-pool

    for step in range(steps):
        idx = g.choice(train_idx, size=batch_size, replace=False)
        pix = normalize_images(pool_images[idx]).to(device)
        y = torch.as_tensor(pool_labels[idx], dtype=torch.float32, device=device)
        if degrade is not None:
            pix, y, done = degrade(pix, y, idx, g)
            degraded += sum(d["kind"] is not None for d in done)
        if g.random() < 0.5:
            pix = pix.flip(-1)  # left-right flips keep every label true
        loss = F.binary_cross_entropy_with_logits(logits_of(pix), y)
        loss_ema = _optimizer_step(opt, params, loss, cosine_lr(step, steps, lr, warmup), loss_ema, bar, step)
    bar.close()
    tower.eval()
    with torch.no_grad():
        scores = []
        for s in range(0, n_hold, 128):
            pix = normalize_images(pool_images[s:min(n_hold, s + 128)]).to(device)
            scores.append(torch.sigmoid(logits_of(pix)).float().cpu())
        scores = torch.cat(scores).numpy()
    out = {"loss": loss_ema, "mAP": mean_average_precision(scores, pool_labels[:n_hold]),
           "seconds": time.time() - t0, "steps": steps}
    if degrade is not None:
        out["degraded_share"] = degraded / (steps * batch_size)
    return out


def mean_average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mean over classes (with at least one positive) of average precision."""
    aps = []
    for c in range(labels.shape[1]):
        y = labels[:, c]
        if y.sum() == 0:
            continue
        order = np.argsort(-scores[:, c], kind="stable")
        hits = y[order]
        precision = np.cumsum(hits) / (np.arange(len(hits)) + 1)
        aps.append(float((precision * hits).sum() / hits.sum()))
    return float(np.mean(aps)) if aps else float("nan")


@torch.no_grad()
def cache_features(model, images: np.ndarray, device: torch.device, batch_size: int = 128,
                   view: Callable[[torch.Tensor, int], torch.Tensor] | None = None) -> torch.Tensor:
    """Run the frozen tower once over a split: (N, P, D) features, kept on `device`. `view(pixels, start)`, when
    given, turns each batch of normalized pixels (images start, start + 1, ...) into the view to encode."""
    model.model.vision_tower.eval()
    out = []
    for s in range(0, len(images), batch_size):
        pix = normalize_images(images[s:s + batch_size])
        if view is not None:
            pix = view(pix, s)
        out.append(vision_features(model, pix.to(device, model.dtype)))
    return torch.cat(out)


def _lm_hidden(model, batch: dict, features: torch.Tensor | None, image_token_id: int) -> torch.Tensor:
    """The language model's last hidden states with projected cached image features in place of `<image>` tokens
    (or none: text-only sequences of stage 0 have no image tokens)."""
    ids = batch["input_ids"]
    embeds = model.get_input_embeddings()(ids)
    if features is not None:
        img = model.model.multi_modal_projector(features[batch["image_index"]])    # (B, P, H)
        embeds = embeds.masked_scatter((ids == image_token_id).unsqueeze(-1), img.to(embeds.dtype))
    return model.model.language_model(inputs_embeds=embeds, attention_mask=batch["attention_mask"]).last_hidden_state


@torch.no_grad()
def standardize_projector_input(model, features: torch.Tensor) -> None:
    """Fold a per-dimension standardization of the tower's features into the projector's first linear layer.

    Raw CLIP features carry a large constant offset and a few huge dimensions; object identity lives in small
    variations on top. A random projector passes the offset through and the language model, learning from scratch,
    never finds the objects (its yes/no answers stay at chance). W' = W / sigma, b' = b - W' mu keeps the
    llava-hf architecture unchanged: it is only a better initialization.
    """
    flat = features.reshape(-1, features.shape[-1]).float()
    mu, sigma = flat.mean(0), flat.std(0).clamp(min=1e-3)
    lin = model.model.multi_modal_projector.linear_1
    w = lin.weight.float() / sigma
    lin.weight.copy_(w.to(lin.weight.dtype))
    lin.bias.copy_((lin.bias.float() - w @ mu).to(lin.bias.dtype))


def lm_loss(model, batch: dict, features: torch.Tensor, image_token_id: int, per_sample: bool) -> torch.Tensor:
    """Next-token loss of the language model with projected cached image features in place of `<image>` tokens.

    per_sample=False: mean over all answer tokens (long descriptions dominate);
    per_sample=True: mean over samples of each sample's token mean (a one-word answer weighs as much as a paragraph).
    """
    ids = batch["input_ids"]
    hidden = _lm_hidden(model, batch, features, image_token_id)
    labels = batch["labels"][:, 1:]
    keep = labels != -100
    logits = model.lm_head(hidden[:, :-1][keep])                                  # answer positions only
    tok_loss = F.cross_entropy(logits.float(), labels[keep], reduction="none")
    if not per_sample:
        return tok_loss.mean()
    row = keep.nonzero()[:, 0]
    counts = keep.sum(1).clamp(min=1).float()
    per_row = torch.zeros(ids.shape[0], device=ids.device).index_add_(0, row, tok_loss) / counts
    return per_row[keep.any(1)].mean()


def train_language(model, samples, features: torch.Tensor | None, image_token_id: int, pad_id: int, epochs: float,
                   batch_size: int, lr: float, warmup_fraction: float, weight_decay: float, device: torch.device,
                   seed: int, per_sample: bool, desc: str, steps: int | None = None,
                   projector_only: bool = False, uninformative: tuple[float, int, int] | None = None,
                   noisy: tuple[float, int] | None = None) -> dict:
    """Stages 0, 2 and 3: train the language model (+ the projector when there are image features; the tower is
    frozen) on token sequences, with cached image features or none (text only). `uninformative` = (fraction,
    first row, rows): that share of the samples sees one of those feature rows (a blank or pure-noise image) in
    place of its own image (seedvlm.pretrain.levers.swap_to_uninformative); `noisy` = (fraction, first row): that
    share sees its own image's noisy view at row first row + its index (swap_to_noisy), drawn before the
    uninformative swap."""
    frozen = ("vision_tower",) if features is not None else ("vision_tower", "multi_modal_projector")
    params = []
    for n, p in model.named_parameters():
        trainable = not any(f in n for f in frozen)
        if projector_only:  # LLaVA's alignment stage: a pretrained LM stays as it is
            trainable = "multi_modal_projector" in n
        p.requires_grad_(trainable)
        if p.requires_grad:
            params.append(p)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    steps = steps or max(1, int(epochs * len(samples) / batch_size))
    warmup = max(1, int(steps * warmup_fraction))
    model.train()
    bar = _progress(desc, steps)
    loss_ema = None
    t0 = time.time()
    swap_rng, swapped, seen = torch.Generator().manual_seed(seed + 11), 0, 0
    noisy_rng, noised = torch.Generator().manual_seed(seed + 13), 0
    for step, group in enumerate(batches(samples, batch_size, steps, seed)):
        batch = {k: v.to(device) for k, v in collate(group, pad_id).items()}
        own = batch["image_index"]
        seen += len(own)
        if noisy is not None:
            batch["image_index"] = swap_to_noisy(own, *noisy, generator=noisy_rng)
            noised += int((batch["image_index"] != own).sum())
        if uninformative is not None:
            before = batch["image_index"]
            batch["image_index"] = swap_to_uninformative(before, *uninformative, generator=swap_rng)
            swapped += int((batch["image_index"] != before).sum())
        loss = lm_loss(model, batch, features, image_token_id, per_sample)
        loss_ema = _optimizer_step(opt, params, loss, cosine_lr(step, steps, lr, warmup), loss_ema, bar, step)
    bar.close()
    model.eval()
    out = {"loss": loss_ema, "steps": steps, "seconds": time.time() - t0}
    if uninformative is not None:
        out["uninformative_share"] = swapped / max(seen, 1)
    if noisy is not None:
        out["noisy_share"] = noised / max(seen, 1)
    return out


@torch.no_grad()
def first_token_accuracy(model, samples, features, image_token_id: int, pad_id: int, device,
                         batch_size: int = 128) -> float:
    """Fraction of samples whose first answer token is predicted right (yes/no accuracy on yes/no samples)."""
    right = 0
    for s in range(0, len(samples), batch_size):
        batch = {k: v.to(device) for k, v in collate(samples[s:s + batch_size], pad_id).items()}
        ids = batch["input_ids"]
        hidden = _lm_hidden(model, batch, features, image_token_id)
        labels = batch["labels"][:, 1:]
        first = (labels != -100).float().argmax(1)
        rows = torch.arange(len(ids), device=ids.device)
        pred = model.lm_head(hidden[rows, first]).argmax(-1)
        right += int((pred == labels[rows, first]).sum())
    return right / max(1, len(samples))
