"""The three pretraining stages, each a small loop over one objective (the LLaVA recipe, scaled down):
1. vision tower alone: multi-label object classification (a linear head per patch, pooled) on unpaired scenes;
2. alignment: tower frozen, its features cached; projector + language model learn captions and descriptions;
3. instruction tuning on every instruct turn with the loss averaged per sample, so one-word answers count."""

from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from seedvlm.pretrain.data import batches, collate, normalize_images


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


def _progress(desc: str, total: int):
    return tqdm(total=total, desc=desc, unit="step", dynamic_ncols=True, mininterval=1.0)


def train_vision(model, pool_images: np.ndarray, pool_labels: np.ndarray, steps: int, batch_size: int, lr: float,
                 warmup_fraction: float, weight_decay: float, device: torch.device, seed: int) -> dict:
    """Stage 1: train the vision tower with multi-label BCE; returns final metrics (loss, mAP on a held-out slice)."""
    n_cls = pool_labels.shape[1]
    tower = model.model.vision_tower
    hidden = model.config.vision_config.hidden_size
    head = torch.nn.Linear(hidden, n_cls).to(device)
    params = list(tower.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    n_hold = min(512, len(pool_images) // 10)
    train_idx = np.arange(n_hold, len(pool_images))
    g = np.random.default_rng(seed)
    warmup = max(1, int(steps * warmup_fraction))
    tower.train()
    bar = _progress("stage 1 vision", steps)
    loss_ema = None
    t0 = time.time()

    def logits_of(pix):
        feats = vision_features(model, pix)            # (B, P, D)
        patch_logits = head(feats)                     # (B, P, C)
        return torch.logsumexp(patch_logits, dim=1) - math.log(patch_logits.shape[1])  # soft max-pool

    for step in range(steps):
        idx = g.choice(train_idx, size=batch_size, replace=False)
        pix = normalize_images(pool_images[idx]).to(device)
        if g.random() < 0.5:
            pix = pix.flip(-1)  # left-right flips keep every label true
        y = torch.as_tensor(pool_labels[idx], dtype=torch.float32, device=device)
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, steps, lr, warmup)
        loss = F.binary_cross_entropy_with_logits(logits_of(pix), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        loss_ema = loss.item() if loss_ema is None else 0.95 * loss_ema + 0.05 * loss.item()
        bar.update(1)
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss_ema:.4f}")
    bar.close()
    tower.eval()
    with torch.no_grad():
        scores = []
        for s in range(0, n_hold, 128):
            pix = normalize_images(pool_images[s:min(n_hold, s + 128)]).to(device)
            scores.append(torch.sigmoid(logits_of(pix)).float().cpu())
        scores = torch.cat(scores).numpy()
    return {"loss": loss_ema, "mAP": mean_average_precision(scores, pool_labels[:n_hold]),
            "seconds": time.time() - t0, "steps": steps}


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
def cache_features(model, images: np.ndarray, device: torch.device, batch_size: int = 128) -> torch.Tensor:
    """Run the frozen tower once over a split: (N, P, D) features, kept on `device`."""
    model.model.vision_tower.eval()
    out = []
    for s in range(0, len(images), batch_size):
        pix = normalize_images(images[s:s + batch_size]).to(device, model.dtype)
        out.append(vision_features(model, pix))
    return torch.cat(out)


def lm_loss(model, batch: dict, features: torch.Tensor, image_token_id: int, per_sample: bool) -> torch.Tensor:
    """Next-token loss of the language model with projected cached image features in place of `<image>` tokens.

    per_sample=False: mean over all answer tokens (long descriptions dominate);
    per_sample=True: mean over samples of each sample's token mean (a one-word answer weighs as much as a paragraph).
    """
    ids = batch["input_ids"]
    embeds = model.get_input_embeddings()(ids)
    img = model.model.multi_modal_projector(features[batch["image_index"]])        # (B, P, H)
    mask = ids == image_token_id
    embeds = embeds.masked_scatter(mask.unsqueeze(-1), img.to(embeds.dtype))
    hidden = model.model.language_model(inputs_embeds=embeds, attention_mask=batch["attention_mask"]).last_hidden_state
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


def train_language(model, samples, features: torch.Tensor, image_token_id: int, pad_id: int, epochs: float,
                   batch_size: int, lr: float, warmup_fraction: float, weight_decay: float, device: torch.device,
                   seed: int, per_sample: bool, desc: str) -> dict:
    """Stages 2 and 3: train projector + language model (tower frozen) on token sequences with cached features."""
    for p in model.model.vision_tower.parameters():
        p.requires_grad_(False)
    params = [p for n, p in model.named_parameters() if "vision_tower" not in n]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    steps = max(1, int(epochs * len(samples) / batch_size))
    warmup = max(1, int(steps * warmup_fraction))
    model.train()
    bar = _progress(desc, steps)
    loss_ema = None
    t0 = time.time()
    for step, group in enumerate(batches(samples, batch_size, steps, seed)):
        batch = {k: v.to(device) for k, v in collate(group, pad_id).items()}
        for pg in opt.param_groups:
            pg["lr"] = cosine_lr(step, steps, lr, warmup)
        loss = lm_loss(model, batch, features, image_token_id, per_sample)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        loss_ema = loss.item() if loss_ema is None else 0.95 * loss_ema + 0.05 * loss.item()
        bar.update(1)
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss_ema:.3f}")
    bar.close()
    model.eval()
    return {"loss": loss_ema, "steps": steps, "seconds": time.time() - t0}
