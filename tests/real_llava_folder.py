"""A llava-hf LLaVA-1.5 folder as found on the hub, with tiny random weights, for tests: the real Llama-2
SentencePiece tokenizer (vocab 32000 + `<image>` 32000 + `<pad>` 32001, embeddings padded to 32064), llava-hf's
processor (336 px, 14 px patches: 576 image tokens) and chat template, hub-style tensor names and sharded fp16
safetensors. Needs ../shared/reference-data/tokenizers/llama2/tokenizer.model (relative to the repo root)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

LLAMA2_TOKENIZER = Path(__file__).resolve().parents[1] / ".." / "shared" / "reference-data" / "tokenizers" / \
    "llama2" / "tokenizer.model"

# llava-hf/llava-1.5-7b-hf's chat_template.json (system text without a role name, images first, no EOS after answers)
LLAVA_HF_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': '}}"
    "{% endif %}{# Render all images first #}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{# Render all text next #}{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' '}}"
    "{% endfor %}{% else %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% generation %}{{ content['text'] + ' '}}{% endgeneration %}{% endfor %}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)

# transformers' module names -> the names llava-hf's hub checkpoints use
_HUB_NAMES = (("model.language_model.", "language_model.model."), ("lm_head.", "language_model.lm_head."),
              ("model.vision_tower.", "vision_tower."), ("model.multi_modal_projector.", "multi_modal_projector."))


def require_tokenizer() -> Path:
    if not LLAMA2_TOKENIZER.is_file():
        pytest.skip(f"the Llama-2 tokenizer is not at {LLAMA2_TOKENIZER} (reference data absent)")
    return LLAMA2_TOKENIZER


def llama2_tokenizer(workdir: Path):
    """The real Llama-2 tokenizer with llava-hf's added `<image>` (32000) and `<pad>` (32001)."""
    from tokenizers import AddedToken
    from transformers import LlamaTokenizer

    src = workdir / "llama2_tokenizer"
    src.mkdir(parents=True, exist_ok=True)
    shutil.copy(require_tokenizer(), src / "tokenizer.model")
    tok = LlamaTokenizer.from_pretrained(src, legacy=False, add_bos_token=True, add_eos_token=False)
    tok.add_tokens([AddedToken("<image>", special=True, normalized=False)])
    tok.add_special_tokens({"pad_token": "<pad>"})
    assert tok.convert_tokens_to_ids(["<image>", "<pad>"]) == [32000, 32001]
    return tok


def _hub_names(folder: Path) -> None:
    """Rename the saved tensors to the hub's layout (shards and index rewritten)."""
    from safetensors.torch import load_file, save_file

    def rename(name: str) -> str:
        for new, old in _HUB_NAMES:
            if name.startswith(new):
                return old + name[len(new):]
        return name

    for shard in folder.glob("*.safetensors"):
        save_file({rename(k): v.contiguous() for k, v in load_file(shard).items()}, shard, metadata={"format": "pt"})
    index = folder / "model.safetensors.index.json"
    data = json.loads(index.read_text())
    data["weight_map"] = {rename(k): v for k, v in data["weight_map"].items()}
    index.write_text(json.dumps(data, indent=2))


def _hub_layout(folder: Path) -> None:
    """The processor files as llava-hf ships them: preprocessor_config.json (the image processor),
    processor_config.json (patch size, strategy, additional tokens) and chat_template.json."""
    proc = json.loads((folder / "processor_config.json").read_text())
    image = dict(proc.pop("image_processor"), processor_class="LlavaProcessor")
    (folder / "preprocessor_config.json").write_text(json.dumps(image, indent=2))
    (folder / "processor_config.json").write_text(json.dumps(proc, indent=2))
    jinja = folder / "chat_template.jinja"
    (folder / "chat_template.json").write_text(json.dumps({"chat_template": jinja.read_text()}))
    jinja.unlink()


def build_real_llava(out: Path, seed: int = 0) -> Path:
    """Write the folder (see the module docstring) to `out`."""
    import torch
    from transformers import CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaProcessor

    from seedvlm.models import random_model
    from seedvlm.models.processor import CLIP_MEAN, CLIP_STD

    tok = llama2_tokenizer(out.parent / f".{out.name}_tok")
    vision = CLIPVisionConfig(image_size=336, patch_size=14, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                              num_attention_heads=2, projection_dim=32, hidden_act="quick_gelu", layer_norm_eps=1e-5)
    text = LlamaConfig(vocab_size=32064, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=4096, rms_norm_eps=1e-5,
                       pad_token_id=32001, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
    cfg = LlavaConfig(vision_config=vision, text_config=text, image_token_index=32000, vision_feature_layer=-2,
                      vision_feature_select_strategy="default", projector_hidden_act="gelu",
                      tie_word_embeddings=False)
    model = random_model(cfg, seed=seed).to(torch.float16)
    model.save_pretrained(out, safe_serialization=True, max_shard_size="2MB")
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}, do_resize=True, do_center_crop=True,
        do_rescale=True, do_normalize=True, do_convert_rgb=True, image_mean=CLIP_MEAN, image_std=CLIP_STD, resample=3)
    LlavaProcessor(image_processor=image_processor, tokenizer=tok, patch_size=14,
                   vision_feature_select_strategy="default", num_additional_image_tokens=1,
                   chat_template=LLAVA_HF_CHAT_TEMPLATE).save_pretrained(out)
    shutil.copy(require_tokenizer(), out / "tokenizer.model")
    _hub_layout(out)
    _hub_names(out)
    assert len(list(out.glob("model-*.safetensors"))) > 1, "expected sharded weights"
    return out
