"""Presets, the word tokenizer, the processor's image-token expansion, and offline save/load."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from conftest import random_image
from seedvlm.errors import SeedVLMError
from seedvlm.models import (build_processor, build_word_tokenizer, chat_prompt, load_for_inference, load_model,
                            num_image_tokens, preset_config)


def test_llava_7b_preset_has_576_image_tokens_without_weights():
    cfg = preset_config("llava-1.5-7b")
    assert num_image_tokens(cfg) == 576
    t = cfg.text_config
    assert (t.hidden_size, t.num_hidden_layers, t.num_attention_heads, t.intermediate_size, t.vocab_size) == (
        4096, 32, 32, 11008, 32064)
    assert cfg.image_token_index == 32000 and cfg.vision_feature_layer == -2
    v = cfg.vision_config
    assert (v.image_size, v.patch_size, v.hidden_size, v.num_hidden_layers) == (336, 14, 1024, 24)


def test_unknown_preset_is_a_clear_error():
    with pytest.raises(SeedVLMError, match="unknown preset 'huge'"):
        preset_config("huge")


@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_processor_expands_image_token_to_patch_count(preset):
    tok = build_word_tokenizer(["cat"])
    cfg = preset_config(preset, vocab_size=len(tok), image_token_index=tok.image_token_id)
    proc = build_processor(tok, cfg)
    size = cfg.vision_config.image_size
    batch = proc(images=[random_image(size=size)], text=[chat_prompt(proc, "is there a cat in the image?")],
                 return_tensors="pt")
    assert int((batch["input_ids"] == tok.image_token_id).sum()) == num_image_tokens(cfg)
    assert batch["pixel_values"].shape == (1, 3, size, size)


def test_word_tokenizer_roundtrip_and_specials():
    tok = build_word_tokenizer(["cat", "cats", "red"])
    ids = tok("USER: <image>\nIs there a red cat? ASSISTANT: Yes, two cats.").input_ids
    toks = tok.convert_ids_to_tokens(ids)
    assert toks[0] == "<s>" and "<image>" in toks and "<unk>" in toks  # "two" is not in this vocabulary
    assert tok.decode(tok("is there a red cat?", add_special_tokens=False).input_ids) == "is there a red cat?"
    # same vocabulary -> same ids
    assert build_word_tokenizer(["red", "cats", "cat"]).get_vocab() == tok.get_vocab()


def test_save_load_gives_identical_logits_offline(tiny_model_dir):
    model, proc = load_for_inference(tiny_model_dir, device="cpu")
    batch = proc(images=[random_image(1)], text=[chat_prompt(proc, "is there a cat?")], return_tensors="pt")
    with torch.no_grad():
        a = model(**batch).logits
    # a fresh process loads the same folder with plain transformers, offline
    code = (
        "import sys, torch; from transformers import LlavaForConditionalGeneration, AutoProcessor;"
        "m = LlavaForConditionalGeneration.from_pretrained(sys.argv[1], local_files_only=True);"
        "p = AutoProcessor.from_pretrained(sys.argv[1], local_files_only=True);"
        "print(type(p).__name__, m.config.image_token_index)"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tiny_model_dir)], capture_output=True, text=True,
                         env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}, check=True)
    assert out.stdout.split() == ["LlavaProcessor", str(model.config.image_token_index)]
    model2 = load_model(tiny_model_dir, device="cpu")
    with torch.no_grad():
        b = model2(**batch).logits
    assert torch.equal(a, b)


def test_loaders_never_fetch_hub_kernels(tiny_model_dir, tmp_path):
    """transformers' default swaps in kernels fetched from the Hub at load time (offline on a GPU that fails); every
    seedvlm loader turns them off, the family loader too."""
    from seedvlm.models.families.loading import load_family_model
    from seedvlm.models.family_folders import build_qwen_folder

    assert not load_model(tiny_model_dir, device="cpu").use_kernels
    qwen = build_qwen_folder(tmp_path / "qwen")
    assert not load_family_model(qwen, "cpu", torch.float32).use_kernels


def test_model_path_without_config_is_a_clear_error(tmp_path):
    with pytest.raises(SeedVLMError, match="no config.json"):
        load_model(tmp_path)
    with pytest.raises(SeedVLMError, match="model folder not found"):
        load_model(tmp_path / "nope")
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(SeedVLMError, match="malformed model config"):
        load_model(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(SeedVLMError, match="expected 'llava'"):
        load_model(tmp_path)


def test_cli_reports_missing_model_with_nonzero_exit(tmp_path):
    from seedvlm.cli import main

    assert main(["pretrain", "--world", str(tmp_path / "missing")]) == 2


def test_fingerprint_sees_a_merged_lora_on_the_tiny_model(tiny_model_dir):
    """Without the reference tokenizer too: base, base + merged LoRA and base + another LoRA differ; dtype does not."""
    from peft import LoraConfig, get_peft_model

    from seedvlm.models.fingerprint import base_fingerprint, legacy_fingerprint

    fp = base_fingerprint(load_model(tiny_model_dir, device="cpu"))
    assert fp.startswith("w1-") and base_fingerprint(load_model(tiny_model_dir, device="cpu",
                                                                dtype=torch.bfloat16)) == fp
    merged = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        lora = LoraConfig(r=2, lora_alpha=4, init_lora_weights=False, target_modules=r".*language_model.*\.(o_proj)")
        merged.append(get_peft_model(load_model(tiny_model_dir, device="cpu"), lora).merge_and_unload())
    assert len({fp, *(base_fingerprint(m) for m in merged)}) == 3
    assert legacy_fingerprint(merged[0]) == legacy_fingerprint(merged[1])  # embeddings alone cannot tell


def test_world_processor_renders_both_prompt_styles(tiny_model_dir):
    from seedvlm.models import load_processor
    from seedvlm.models.prompting import SHORT_ANSWER_SUFFIX, VICUNA_V1_SYSTEM, get_style, render_conversation

    proc = load_processor(tiny_model_dir)
    assert chat_prompt(proc, "is there a cat ?") == "USER: <image>\nis there a cat ? ASSISTANT:"
    text, spans = render_conversation(proc, "llava-1.5", [("is there a cat ?", "yes ."), ("and a dog ?", "no .")])
    assert text == (f"{VICUNA_V1_SYSTEM} USER: <image>\nis there a cat ? ASSISTANT: yes .</s>USER: and a dog ? "
                    f"ASSISTANT: no .</s>")
    assert [text[a:b] for a, b in spans] == ["yes .</s>", "no .</s>"]
    assert get_style("llava-1.5").pope_suffix == SHORT_ANSWER_SUFFIX
    with pytest.raises(SeedVLMError, match="unknown prompt style 'vicuna'"):
        get_style("vicuna")


def test_every_prompt_style_the_options_accept_is_defined():
    """The commands take their --prompt-style choices from seedvlm.choices; each must be a defined style."""
    from seedvlm.choices import PromptStyle, values
    from seedvlm.models.prompting import STYLES, get_style

    assert set(values(PromptStyle)) == set(STYLES)
    assert all(get_style(name).name == name for name in values(PromptStyle))
