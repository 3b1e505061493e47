"""Model dtypes: the configured name -> torch dtype, and the dtype a model's inputs are cast to."""

from __future__ import annotations

import torch

from seedvlm.choices import Dtype

DtypeName = Dtype
TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
"""The dtype names of the configs and commands (all of DtypeName but "auto", whose meaning is the caller's)."""


def resolve_dtype(name: DtypeName) -> torch.dtype:
    """auto = bf16 on a GPU, fp32 on the CPU (docs/design.md section 2)."""
    if name == "auto":
        return torch.bfloat16 if torch.cuda.is_available() else torch.float32
    return TORCH_DTYPES[name]


def compute_dtype(model) -> torch.dtype:
    """The dtype pixels are cast to: the base embeddings' (LoRA weights may be float32 beside a bf16 base)."""
    return model.get_input_embeddings().weight.dtype
