"""FSDP plumbing of SeedTrainer: the LoRA adapter and its AdamW state gathered in full out of a sharded model (and put
back on resume), and the teacher forward through the FSDP wrapper.

Only the adapter is trainable, so checkpoints hold the gathered adapter and its optimizer moments (a full state
loads on any number of processes); the frozen base is never written. docs/distributed.md describes the setup.
"""

from __future__ import annotations

import copy
import logging
import os
import re
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                     get_optimizer_state_dict, set_model_state_dict,
                                                     set_optimizer_state_dict)
from transformers.trainer import OPTIMIZER_NAME, SCHEDULER_NAME

from seedvlm.errors import SeedVLMError

log = logging.getLogger("seedvlm.train")


def write_gathered_adapter(model, state_dict: dict[str, torch.Tensor], folder: str | Path) -> None:
    """peft's adapter folder (adapter_config.json + adapter_model.safetensors, the keys peft's save_pretrained
    writes) from LoRA weights gathered out of an FSDP-wrapped model. peft's own save cannot take them: it picks its
    keys from the module names, which carry FSDP's `_fsdp_wrapped_module.` inside a wrapped model."""
    name = model.active_adapter
    weights = {k.replace(f".{name}.", "."): v.detach().to("cpu").contiguous()
               for k, v in state_dict.items() if "lora_" in k}
    if not weights:
        raise SeedVLMError("no LoRA weights in the gathered FSDP state dict; nothing to save")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(weights, str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})
    config = copy.deepcopy(model.peft_config[name])
    config.inference_mode = True
    config.save_pretrained(str(folder))


def torch_optimizer(optimizer):
    """The torch optimizer inside accelerate's AcceleratedOptimizer wrapper."""
    return getattr(optimizer, "optimizer", optimizer)


class ForwardThrough:
    """A peft model for everything (disable_adapter, eval/train, config, embeddings) except the forward itself,
    which runs through `wrapper` (an FSDP1 wrapper around it: only its forward gathers the sharded weights)."""

    def __init__(self, bare, wrapper) -> None:
        self._bare, self._wrapper = bare, wrapper

    def __call__(self, *args, **kwargs):
        return self._wrapper(*args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self._bare, name)


def gather_adapter_state(wrapped, on_cpu: bool) -> dict[str, torch.Tensor]:
    """The trainable weights of an FSDP-wrapped model, gathered (a collective: every rank calls it). The frozen base
    is skipped (`ignore_frozen_params`)."""
    # cpu_offload (full tensors on rank 0's CPU only) is for GPUs; FSDP on the CPU (tests) keeps them in place.
    options = StateDictOptions(full_state_dict=True, ignore_frozen_params=True, cpu_offload=not on_cpu)
    return get_model_state_dict(wrapped, options=options)


def save_optimizer_state(wrapped, optimizer, lr_scheduler, output_dir: str, on_cpu: bool, write: bool) -> None:
    """The AdamW state gathered in full (torch's `get_optimizer_state_dict`: the moments of the LoRA weights only,
    ~0.8 GB at 13B with r=64) into optimizer.pt by the writing rank, and the LR schedule; not transformers' sharded
    copy of the whole model (the frozen base would add ~26 GB at 13B to every checkpoint)."""
    options = StateDictOptions(full_state_dict=True, cpu_offload=not on_cpu)
    state = get_optimizer_state_dict(wrapped, torch_optimizer(optimizer), options=options)
    if write:
        torch.save(state, os.path.join(output_dir, OPTIMIZER_NAME))
        torch.save(lr_scheduler.state_dict(), os.path.join(output_dir, SCHEDULER_NAME))


def load_optimizer_state(wrapped, optimizer, lr_scheduler, checkpoint: str | Path) -> None:
    """What `save_optimizer_state` wrote, read with `torch.load(weights_only=True)` by every rank and put in place
    by torch's `set_optimizer_state_dict`."""
    folder = Path(checkpoint)
    if not (folder / OPTIMIZER_NAME).is_file():
        raise SeedVLMError(f"checkpoint {folder} has no {OPTIMIZER_NAME}: not written by an FSDP run of seedvlm")
    state = torch.load(folder / OPTIMIZER_NAME, map_location="cpu", weights_only=True)
    set_optimizer_state_dict(wrapped, torch_optimizer(optimizer), state,
                             options=StateDictOptions(full_state_dict=True))
    lr_scheduler.load_state_dict(torch.load(folder / SCHEDULER_NAME, map_location="cpu", weights_only=True))


def load_sharded_adapter(wrapped, adapter_name: str, folder: str | Path) -> None:
    """A checkpoint's adapter_model.safetensors into the sharded LoRA weights (every rank reads the file; torch's
    `set_model_state_dict` puts each rank's shard in place)."""
    saved = load_file(str(Path(folder) / "adapter_model.safetensors"))
    # peft's files drop the adapter name: X.lora_A.weight -> X.lora_A.<name>.weight in the model
    state = {re.sub(r"\.(lora_[A-Za-z_]+)\.", rf".\1.{adapter_name}.", k, count=1): v for k, v in saved.items()}
    n_saved, trainable = len(state), sum(1 for p in wrapped.parameters() if p.requires_grad)
    result = set_model_state_dict(wrapped, state, options=StateDictOptions(full_state_dict=True, strict=False))
    unexpected = list(getattr(result, "unexpected_keys", []) or [])
    if unexpected or n_saved != trainable:
        raise SeedVLMError(f"checkpoint {folder}: its adapter ({n_saved} tensors) does not fit this model's "
                           f"{trainable} LoRA weights (unexpected: {unexpected[:3]})")


def use_layer_units(plugin, class_names: list[str]) -> None:
    """Make `class_names` (a model family's decoder and vision layer classes) the FSDP units, whatever layer classes
    the accelerate config names (configs/accelerate/fsdp.yaml names LLaVA-1.5's): in accelerate's plugin and in
    FSDP_TRANSFORMER_CLS_TO_WRAP, which peft's wrap policy (the Trainer's for a peft model) reads."""
    log.info("FSDP units: %s", ", ".join(class_names))
    plugin.transformer_cls_names_to_wrap = list(class_names)
    os.environ["FSDP_TRANSFORMER_CLS_TO_WRAP"] = ",".join(class_names)
