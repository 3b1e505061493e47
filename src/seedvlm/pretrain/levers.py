"""Pretraining levers for a base that falls back on its language prior when it cannot see well (off by default):

- degraded views in the vision stage: a share of each batch shown with Gaussian noise, masked patches or blank,
  its targets kept to the objects that are still visible, so the tower learns "I cannot see it" features instead
  of out-of-distribution ones;
- uninformative images in the language stages: a share of the samples gets the features of a blank or pure-noise
  image in place of its own, the text kept, so the language model learns to answer from its prior when the
  picture says nothing;
- noisy views in the language stages: a share of the samples gets the features of its own image under Gaussian
  noise, the text kept, so the language model learns what a partly visible scene implies (its objects' usual
  companions among them) instead of meeting noisy features for the first time as a teacher.

The perturbations themselves are seedvlm.seed's; this module decides which images get which, and what stays
visible.
"""

from __future__ import annotations

import numpy as np
import torch

from seedvlm import seed as S
from seedvlm.errors import SeedVLMError
from seedvlm.pretrain.config import DEGRADE_KINDS


def visible_under_noise(areas: np.ndarray, alpha: float, snr: float) -> np.ndarray:
    """Which objects stay visible under x' = sqrt(a) x + sqrt(1 - a) eps: a matched filter over an object's A visible
    pixels sees it at a signal-to-noise ratio of sqrt(A * a / (1 - a)) (unit contrast on normalized pixels); an
    object is visible when that ratio reaches `snr`. a = 1 keeps everything, a = 0 nothing."""
    a = float(alpha)
    if a >= 1.0:
        return np.ones(len(areas), dtype=bool)
    return np.sqrt(np.asarray(areas, dtype=np.float64) * a / (1.0 - a)) >= float(snr)


def visible_under_mask(boxes: np.ndarray, kept: np.ndarray, min_fraction: float = 0.5) -> np.ndarray:
    """Which objects stay visible when patches are masked: at least `min_fraction` of the pixels of the object's box
    [x, y, w, h] are unmasked. boxes (K, 4) int; kept (H, W) bool, True where the image is unmasked."""
    out = np.zeros(len(boxes), dtype=bool)
    for k, (x, y, w, h) in enumerate(np.asarray(boxes, dtype=int)):
        region = kept[y:y + h, x:x + w]
        out[k] = region.size > 0 and region.mean() >= min_fraction
    return out


def degrade_batch(pix: torch.Tensor, labels: torch.Tensor, objects: list[list[tuple[int, list[int], int]]],
                  rng: np.random.Generator, fraction: float, kinds=DEGRADE_KINDS, snr: float = 3.0,
                  patch_size: int = 8, min_alpha: float = 0.02) -> tuple[torch.Tensor, torch.Tensor, list[dict]]:
    """Show a `fraction` of the batch degraded: each chosen image gets one kind of `kinds` at random (noise: a drawn
    uniformly from [min_alpha, 1); mask: a share of patches drawn from [0.25, 0.75]; blank), and its targets are
    cut to the objects still visible (`visible_under_noise`, `visible_under_mask`; nothing on a blank image).

    pix (B, C, H, W) normalized; labels (B, n_classes) multi-hot; objects[i]: (class column, box [x, y, w, h], visible
    pixel count) of image i's objects. Returns the new pixels and targets (inputs untouched) and, per image, what
    was done ({"kind": None} when left clean)."""
    if not 0.0 <= fraction <= 1.0:
        raise SeedVLMError(f"degraded fraction must be in [0, 1], got {fraction}")
    bad = sorted(set(kinds) - set(DEGRADE_KINDS))
    if bad or not kinds:
        raise SeedVLMError(f"unknown degradation kind(s) {bad}; choose from {list(DEGRADE_KINDS)}")
    pix, labels = pix.clone(), labels.clone()
    done: list[dict] = []
    for i in range(pix.shape[0]):
        if rng.random() >= fraction:
            done.append({"kind": None})
            continue
        kind = kinds[int(rng.integers(0, len(kinds)))]
        cols = np.array([c for c, _, _ in objects[i]], dtype=int)
        g = torch.Generator(device=pix.device).manual_seed(int(rng.integers(0, 2 ** 62)))
        if kind == "noise":
            a = float(rng.uniform(min_alpha, 1.0))
            pix[i] = S.add_noise(pix[i], alpha=a, generator=g)
            visible = visible_under_noise(np.array([n for _, _, n in objects[i]]), a, snr)
            info = {"kind": kind, "alpha": a}
        elif kind == "mask":
            ratio = float(rng.uniform(0.25, 0.75))
            state = g.get_state()
            pix[i] = S.mask_patches(pix[i], patch_size, ratio, generator=g)
            kept = S.mask_patches(torch.ones(1, *pix.shape[-2:], device=pix.device), patch_size, ratio,
                                  generator=torch.Generator(device=pix.device).set_state(state))[0].bool().cpu().numpy()
            visible = visible_under_mask(np.array([b for _, b, _ in objects[i]]).reshape(-1, 4), kept)
            info = {"kind": kind, "ratio": ratio}
        else:
            pix[i] = S.blank(pix[i])
            visible = np.zeros(len(cols), dtype=bool)
            info = {"kind": kind}
        row = torch.zeros_like(labels[i])
        if visible.any():
            row[torch.as_tensor(cols[visible])] = 1.0
        labels[i] = torch.minimum(row, labels[i])
        done.append(info)
    return pix, labels, done


@torch.no_grad()
def uninformative_pixels(n: int, size: int, seed: int) -> torch.Tensor:
    """`n` images with nothing in them, normalized: the first blank (the mean colour), the rest pure Gaussian noise
    (seedvlm.seed.add_noise at a = 0), each its own draw."""
    if n < 1:
        raise SeedVLMError(f"need at least one uninformative image, got {n}")
    blank = torch.zeros(n, 3, size, size)
    g = torch.Generator().manual_seed(int(seed))
    return torch.cat([blank[:1], S.add_noise(blank[1:], alpha=0.0, generator=g)])


def swap_to_uninformative(image_index: torch.Tensor, fraction: float, first_row: int, n_rows: int,
                          generator: torch.Generator) -> torch.Tensor:
    """A copy of a batch's feature-row indices where each sample, with probability `fraction`, points at one of the
    uninformative rows first_row .. first_row + n_rows - 1 instead of its own image (the text stays the same)."""
    if not 0.0 <= fraction <= 1.0:
        raise SeedVLMError(f"uninformative fraction must be in [0, 1], got {fraction}")
    b = image_index.shape[0]
    swap = torch.rand(b, generator=generator) < fraction
    rows = first_row + torch.randint(0, n_rows, (b,), generator=generator)
    return torch.where(swap.to(image_index.device), rows.to(image_index.device), image_index)


@torch.no_grad()
def noisy_pixels(pix: torch.Tensor, alpha_range: tuple[float, float], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each normalized image of `pix` (B, C, H, W) under Gaussian noise (seedvlm.seed.add_noise) at its own a drawn
    uniformly from `alpha_range`; returns (noisy pixels, the a of each image). The same `seed` gives the same draws."""
    lo, hi = (float(a) for a in alpha_range)
    if not 0.0 <= lo <= hi <= 1.0:
        raise SeedVLMError(f"noise range must satisfy 0 <= low <= high <= 1, got {alpha_range}")
    g = torch.Generator().manual_seed(int(seed))
    alphas = lo + (hi - lo) * torch.rand(pix.shape[0], generator=g)
    out = torch.stack([S.add_noise(x, alpha=float(a), generator=torch.Generator(device=pix.device).manual_seed(
        int(torch.randint(0, 2 ** 62, (1,), generator=g)))) for x, a in zip(pix, alphas)])
    return out, alphas


def swap_to_noisy(image_index: torch.Tensor, fraction: float, first_row: int, generator: torch.Generator) -> torch.Tensor:
    """A copy of a batch's feature-row indices where each sample, with probability `fraction`, points at its own
    image's noisy view, row first_row + its own index (the text stays the same)."""
    if not 0.0 <= fraction <= 1.0:
        raise SeedVLMError(f"noisy-view fraction must be in [0, 1], got {fraction}")
    swap = torch.rand(image_index.shape[0], generator=generator) < fraction
    return torch.where(swap.to(image_index.device), image_index + first_row, image_index)
