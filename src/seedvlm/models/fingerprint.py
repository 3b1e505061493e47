"""Weight fingerprints: which base model an adapter was trained on, checked before it is applied.

The fingerprint hashes the architecture, a sample of the input embeddings and a sample of every projection of the
language model (q/k/v/o and the MLP's gate/up/down, the weights a LoRA changes and is applied to). A base with an
adapter merged in, or another fine-tune that shares the embeddings, therefore has another fingerprint. Values are
rounded to bfloat16 before hashing, so one checkpoint loaded in fp32, fp16 or bf16 gives one fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import re

import torch

PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
SAMPLES_PER_TENSOR = 256
FORMAT = "w1"  # prefix of the projection fingerprint; an older seedvlm adapter stores a bare embeddings hash
# the language model is `language_model` in LLaVA, LLaVA-NeXT and Qwen, `text_model` in SmolVLM/Idefics3
_PROJ_RE = re.compile(rf"(?:language_model|text_model)\..*\.({'|'.join(PROJECTIONS)})(?:\.base_layer)?\.weight$")


def _base(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _arch(model) -> bytes:
    cfg = _base(model).config
    t = cfg.text_config
    return json.dumps([t.hidden_size, t.num_hidden_layers, t.vocab_size, t.intermediate_size,
                       cfg.vision_config.hidden_size,
                       getattr(cfg.vision_config, "image_size", None)]).encode()  # Qwen: dynamic size


def projection_weights(model) -> list[tuple[str, torch.Tensor]]:
    """(name, weight) of each language-model projection, names without peft's `base_layer`, sorted by name."""
    found = [(n.replace(".base_layer", ""), p) for n, p in _base(model).named_parameters()
             if "lora_" not in n and _PROJ_RE.search(n)]
    return sorted(found, key=lambda x: x[0])


def sampled_values(weight: torch.Tensor, k: int = SAMPLES_PER_TENSOR) -> bytes:
    """`k` evenly spaced elements of the flattened weight, rounded to bfloat16, as bytes."""
    flat = weight.detach().reshape(-1)
    n, k = flat.numel(), min(k, flat.numel())
    idx = torch.arange(k, dtype=torch.long, device=flat.device) * (n - 1) // max(k - 1, 1)  # exact, any device
    return flat[idx].to(torch.bfloat16).view(torch.int16).cpu().numpy().tobytes()


def base_fingerprint(model, k: int = SAMPLES_PER_TENSOR) -> str:
    """`w1-` + 16 hex digits over the architecture, the embeddings and every LM projection (sampled)."""
    h = hashlib.sha256(_arch(model))
    h.update(sampled_values(_base(model).get_input_embeddings().weight, k))
    for name, w in projection_weights(model):
        h.update(name.encode())
        h.update(sampled_values(w, k))
    return f"{FORMAT}-{h.hexdigest()[:16]}"


def legacy_fingerprint(model) -> str:
    """The embeddings-only hash older seedvlm adapters store (blind to LoRA updates, kept to recognize them)."""
    h = hashlib.sha256(_arch(model))
    emb = _base(model).get_input_embeddings().weight
    sample = emb.detach()[: min(64, emb.shape[0]), : min(64, emb.shape[1])].float().cpu()
    h.update(sample.numpy().round(4).tobytes())
    return h.hexdigest()[:16]
