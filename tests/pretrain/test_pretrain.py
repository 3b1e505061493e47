"""Pretraining on a micro world: the stages lower their losses, the CLI writes a loadable model, bad input fails."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import tiny_config
from seedvlm.cli import main
from seedvlm.errors import SeedVLMError


@pytest.fixture(scope="module")
def micro_world(tmp_path_factory):
    out = tmp_path_factory.mktemp("world") / "w"
    assert main(["world", "--out", str(out), "--train", "24", "--val", "6", "--quiet"]) == 0
    return out


def _lm_setup(world):
    from seedvlm.models import build_processor, num_image_tokens, random_model
    from seedvlm.pretrain.data import load_split_images, tokenize_records, world_records
    from seedvlm.pretrain.pipeline import build_world_tokenizer

    tok = build_world_tokenizer(world)
    cfg = tiny_config(tok)
    model = random_model(cfg, seed=0)
    proc = build_processor(tok, cfg)
    names, caps, inst = world_records(world, "train")
    samples = tokenize_records(inst, names, proc, num_image_tokens(cfg))
    images = load_split_images(world, "train", names, cfg.vision_config.image_size)
    return model, tok, samples, images, names, caps, inst, proc


def test_language_stage_lowers_the_loss(micro_world):
    from seedvlm.pretrain.data import collate
    from seedvlm.pretrain.stages import cache_features, lm_loss, train_language

    model, tok, samples, images, *_ = _lm_setup(micro_world)
    feats = cache_features(model, images, torch.device("cpu"))
    batch = collate(samples[:16], tok.pad_token_id)
    with torch.no_grad():
        before = lm_loss(model, batch, feats, model.config.image_token_index, per_sample=True).item()
    train_language(model, samples, feats, model.config.image_token_index, tok.pad_token_id, epochs=0,
                   batch_size=16, lr=3e-3, warmup_fraction=0.1, weight_decay=0.0, device=torch.device("cpu"),
                   seed=0, per_sample=True, desc="test", steps=30)
    with torch.no_grad():
        after = lm_loss(model, batch, feats, model.config.image_token_index, per_sample=True).item()
    assert after < 0.6 * before
    # the tower is frozen in this stage
    assert not any(p.requires_grad for p in model.model.vision_tower.parameters())


def test_text_context_replaces_image_tokens(micro_world):
    from seedvlm.models import num_image_tokens
    from seedvlm.pretrain.data import scene_texts, tokenize_records

    model, tok, _, _, names, _, inst, proc = _lm_setup(micro_world)
    ctx = scene_texts(micro_world, "train")
    s = tokenize_records(inst[:4], names, proc, num_image_tokens(model.config), contexts=ctx)
    for sample in s:
        assert tok.image_token_id not in sample.input_ids
        assert tok.unk_token_id not in sample.input_ids  # every word of the world is in its vocabulary


def test_text_drop_leaves_out_objects_reproducibly(micro_world):
    from seedvlm.errors import SeedVLMError
    from seedvlm.pretrain.data import scene_texts

    full = scene_texts(micro_world, "train")
    dropped = scene_texts(micro_world, "train", drop=0.5, seed=3)
    assert dropped == scene_texts(micro_world, "train", drop=0.5, seed=3)  # seeded
    n_full = sum(len(t.split(" , ")) for t in full.values() if t)
    n_kept = sum(len(t.split(" , ")) for t in dropped.values() if t)
    assert 0.3 * n_full < n_kept < 0.7 * n_full
    for name, text in dropped.items():  # what is kept is a left-to-right subsequence of the full list
        rest = iter(full[name].split(" , "))
        assert all(any(t == u for u in rest) for t in text.split(" , ") if t)
    with pytest.raises(SeedVLMError, match="text drop"):
        scene_texts(micro_world, "train", drop=1.0)


def test_vision_stage_trains_tower_and_projector_even_after_a_frozen_stage(micro_world):
    from seedvlm.pretrain.pipeline import vision_corpus
    from seedvlm.pretrain.stages import train_vision

    model, tok, *_ = _lm_setup(micro_world)
    for p in model.parameters():  # as the text stage leaves them
        p.requires_grad_(False)
    pool, labels, cat_ids = vision_corpus(64, 64, seed=0)
    words = [tok(str(c), add_special_tokens=False).input_ids[:1] or [3] for c in cat_ids]
    tower_before = [p.detach().clone() for p in model.model.vision_tower.parameters()]
    emb_before = model.get_input_embeddings().weight.detach().clone()
    train_vision(model, pool, labels, steps=3, batch_size=8, lr=1e-3, warmup_fraction=0.1, weight_decay=0.0,
                 device=torch.device("cpu"), seed=0, class_word_ids=words, train_word_embeddings=False)
    assert any(not torch.equal(a, b) for a, b in zip(tower_before, model.model.vision_tower.parameters()))
    assert torch.equal(emb_before, model.get_input_embeddings().weight)  # words stay fixed when frozen


def test_pretrain_cli_writes_a_loadable_model(micro_world, tmp_path):
    out = tmp_path / "base"
    rc = main(["pretrain", "--world", str(micro_world), "--out", str(out), "--text-steps", "2", "--text-batch", "4",
               "--vision-steps", "2", "--vision-pool", "32", "--vision-batch", "4", "--align-epochs", "0.05",
               "--instruct-epochs", "0.05", "--batch-size", "4", "--readiness-images", "3", "--max-new-tokens", "4"])
    assert rc == 0
    summary = json.loads((out / "pretrain.json").read_text())
    assert set(summary["stages"]) >= {"text", "vision", "align", "instruct"}
    assert "checks" in summary["readiness"]
    prior = summary["readiness"]["prior_under_noise"]  # the seventh check, with every perturbation kind beside it
    assert summary["readiness"]["checks"]["prior_shows_under_noise"]["passed"] == prior["passed"]
    assert {"gaussian_a0.3", "blur_0.03", "blank"} <= set(prior["kinds"])
    from seedvlm.models import load_for_inference

    model, proc = load_for_inference(out, device="cpu")
    assert model.config.image_token_index == proc.tokenizer.image_token_id


def test_bad_input_is_a_clear_error(tmp_path, capsys):
    assert main(["pretrain", "--world", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "world folder not found" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    assert main(["pretrain", "--world", str(tmp_path), "--preset", "huge", "--out", str(tmp_path / "o")]) == 2
    assert "unknown preset 'huge'" in capsys.readouterr().err
    bad = tmp_path / "w"
    bad.mkdir()
    (bad / "instances_train.json").write_text("{oops")
    with pytest.raises(SeedVLMError, match="malformed"):
        from seedvlm.pretrain.data import world_records

        world_records(bad, "train")
