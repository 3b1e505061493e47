"""Family presets: the real sizes built on the meta device match the published parameter counts; the tiny ones are
small and take their token ids from the tokenizer."""

from __future__ import annotations

import pytest

from seedvlm.errors import SeedVLMError
from seedvlm.models.families import get_family
from seedvlm.models.family_presets import (FAMILY_PRESET_NAMES, build_model, family_preset_config, preset_family,
                                           published_parameters)

REAL = [n for n in FAMILY_PRESET_NAMES if published_parameters(n)]
TINY_IDS = dict(vocab_size=300, image_token_id=290, video_token_id=291, vision_start_token_id=292,
                vision_end_token_id=293, eos_token_id=2, pad_token_id=0)


@pytest.mark.parametrize("name", REAL)
def test_real_size_matches_published_count(name):
    model = build_model(family_preset_config(name), device="meta")
    n = sum(p.numel() for p in model.parameters())
    assert abs(n / published_parameters(name) - 1) < 0.01, (name, n)
    assert get_family(preset_family(name)).model_types.count(model.config.model_type) == 1


@pytest.mark.parametrize("name", [n for n in FAMILY_PRESET_NAMES if n.startswith("tiny-")])
def test_tiny_presets_are_small_and_use_the_tokenizer_ids(name):
    cfg = family_preset_config(name, **TINY_IDS)
    model = build_model(cfg, device="meta")
    assert sum(p.numel() for p in model.parameters()) < 500_000
    assert model.get_input_embeddings().num_embeddings == 300
    image_id = getattr(cfg, "image_token_id", None) or getattr(cfg, "image_token_index", None)
    assert image_id == 290
    assert get_family(preset_family(name)).model_types.count(cfg.model_type) == 1


def test_real_presets_cover_each_family():
    assert {preset_family(n) for n in REAL} == {"qwen2_vl", "llava_next", "smolvlm"}
    assert {"qwen2.5-vl-7b", "llava-v1.6-vicuna-7b", "smolvlm-256m"} <= set(REAL)


def test_unknown_preset_is_one_line():
    with pytest.raises(SeedVLMError, match="unknown preset 'qwen9'; choose one of tiny-qwen2.5-vl"):
        family_preset_config("qwen9")
