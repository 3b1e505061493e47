"""Perturbing a family's model inputs: the noise acts on the pixel inputs only, sample by sample, while metadata
(grids, image sizes, attention masks over pixels) stays as it is; and the clean and perturbed views as one 2B batch
for the teacher's single forward."""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import torch

from seedvlm.errors import SeedVLMError
from seedvlm.models.families.base import Family

# noise(pixels of one sample, sample's row in the batch) -> perturbed pixels of the same shape and dtype
SampleNoise = Callable[[torch.Tensor, int], torch.Tensor]


def patch_rows_per_sample(input_ids: torch.Tensor, image_token_id: int, grid_thw: torch.Tensor,
                          merge_size: int) -> list[int]:
    """For flattened-patch layouts (Qwen2-VL): how many pixel rows belong to each batch row. Images are in batch
    order; image k has prod(grid_thw[k]) rows and prod(grid_thw[k]) / merge^2 image tokens."""
    rows_per_image = grid_thw.prod(dim=-1).tolist()
    tokens_per_image = [r // merge_size ** 2 for r in rows_per_image]
    out, k = [], 0
    for row in input_ids:
        want, rows = int((row == image_token_id).sum()), 0
        while want > 0:
            if k >= len(tokens_per_image) or tokens_per_image[k] > want:
                raise SeedVLMError("image tokens in input_ids do not match image_grid_thw")
            want -= tokens_per_image[k]
            rows += rows_per_image[k]
            k += 1
        out.append(rows)
    if k != len(rows_per_image):
        raise SeedVLMError(f"image_grid_thw has {len(rows_per_image)} images, input_ids hold {k}")
    return out


def _zero_tiles(x: torch.Tensor) -> torch.Tensor:
    """(..., C, H, W) -> (...) bool: tiles that are all zeros (batch padding)."""
    return (x == 0).flatten(-3).all(-1)


def perturb_pixel_inputs(family: Family, inputs: Mapping[str, torch.Tensor], kind: str, noise: SampleNoise,
                         image_token_id: int | None = None, merge_size: int | None = None) -> dict:
    """A copy of `inputs` with `noise` applied to each sample's pixels; metadata and text inputs are the same
    objects. `kind` is checked against the family first (one line if its layout cannot take it). Flattened-patch
    families (pixels not batched by sample) need `image_token_id` and `merge_size` to split rows by sample."""
    family.check_perturbation(kind)
    out = dict(inputs)
    for key in family.pixel_keys:
        x = inputs[key]
        if family.flattened_patches:
            if image_token_id is None or merge_size is None:
                raise SeedVLMError(f"{family.name} pixels are flattened patches: give image_token_id and merge_size")
            counts = patch_rows_per_sample(inputs["input_ids"], image_token_id, inputs["image_grid_thw"], merge_size)
            chunks = torch.split(x, counts, dim=0)
            out[key] = torch.cat([noise(c, i) for i, c in enumerate(chunks)], dim=0)
        else:
            y = torch.stack([noise(x[i], i) for i in range(x.shape[0])])
            if family.zero_padding_tiles:
                y = y.masked_fill(_zero_tiles(x)[..., None, None, None], 0)
            out[key] = y
    return out


def two_view_batch(clean: Mapping[str, torch.Tensor], noisy: Mapping[str, torch.Tensor],
                   keys: Sequence[str] | None = None) -> dict:
    """Clean rows then noisy rows as one 2B batch: every tensor concatenated along dim 0 (batch rows, or for
    flattened patches the pixel rows and image grids, which stay in batch order)."""
    keys = list(keys or clean.keys())
    return {k: torch.cat([clean[k], noisy[k]], dim=0) for k in keys}
