"""Teacher cache (`seedvlm teach`, `seedvlm train --teacher-cache`) on a 2-layer random LLaVA and 12 small images.

Covers: what a row keeps (clean + noisy top-k, rest statistics), the round trip through the shards, the cached loss
equal to the uncached one when the whole vocabulary is kept (and close with a small top-k), training that never
runs the teacher, refusal of a cache made for another data file / base model / noise setting, atomic writing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from train_env import build_cache_env as build_env  # noqa: F401
from train_env import make_cache_cfg as make_cfg, randomize_lora  # noqa: F401

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: one thread on 2 shared cores


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return build_env(tmp_path_factory.mktemp("cache_env"))


def fresh_schedule(cfg):
    from seedvlm import seed as S

    return S.BetaSchedule(kind=cfg.beta_schedule, values=cfg.beta_values, quantiles=cfg.beta_quantiles,
                          fixed=cfg.beta_fixed, history_size=cfg.beta_history_size, min_history=cfg.beta_min_history)


def loss_of(trainer, batch, cfg, cache=None):
    from seedvlm.train.step import seed_batch
    from seedvlm.train.teacher import LiveTeacher

    trainer.model.eval()  # no LoRA dropout: the two paths see the same student
    teacher = LiveTeacher(trainer.model, cfg) if cache is None else cache
    return seed_batch(trainer.model, batch, cfg, teacher=teacher, step=0, beta_schedule=fresh_schedule(cfg))


# ---------------------------------------------------------------------------------------------------------------


def test_select_rows_keeps_clean_and_noisy_top_k_and_the_rest_exactly():
    from seedvlm.train.teacher_cache import kept_width, select_rows

    g = torch.Generator().manual_seed(0)
    clean, noisy = torch.randn(5, 40, generator=g) * 3, torch.randn(5, 40, generator=g) * 3
    rows = select_rows(clean, noisy, top_k=4)
    assert rows["ids"].shape == (5, 8) == (5, kept_width(4, 40))
    for r in range(5):
        ids = set(rows["ids"][r].tolist())
        assert len(ids) == 8
        assert set(clean[r].topk(4).indices.tolist()) <= ids and set(noisy[r].topk(4).indices.tolist()) <= ids
        rest = torch.tensor([v for v in range(40) if v not in ids])
        torch.testing.assert_close(rows["clean_rest"][r], clean[r, rest].logsumexp(0))
        torch.testing.assert_close(rows["noisy_rest"][r], noisy[r, rest].logsumexp(0))
        assert rows["clean_tail_max"][r] == clean[r, rest].max()
        # the kept set is the union, filled with the best remaining clean tokens
        filler = ids - set(clean[r].topk(4).indices.tolist()) - set(noisy[r].topk(4).indices.tolist())
        if filler:
            assert min(clean[r, list(filler)]) >= clean[r, rest].max()
    torch.testing.assert_close(rows["clean"], clean.gather(1, rows["ids"]))
    torch.testing.assert_close(rows["clean_lse"], clean.logsumexp(-1))
    full = select_rows(clean, noisy, top_k=20)  # 2k >= V: the whole vocabulary, no rest
    assert full["ids"].shape == (5, 40) and torch.isinf(full["clean_rest"]).all()


def test_teach_round_trip_and_full_vocab_cache_gives_the_uncached_loss(env, tmp_path):
    from seedvlm.cli import main
    from seedvlm.train.teacher import teacher_logits
    from seedvlm.train.teacher_cache import INDEX_FILE, TeacherCache, select_rows
    from seedvlm.train.run import build_trainer

    cache_dir = tmp_path / "cache"
    rc = main(["teach", "--config", str(CONFIGS / "seed_tiny.yaml"), "--model", str(env["model"]), "--data",
               str(env["data"]), "--images", str(env["images"]), "--out", str(cache_dir), "--top-k", "64",
               "--value-dtype", "float32", "--shard-samples", "5", "--batch-size", "4"])
    assert rc == 0
    index = json.loads((cache_dir / INDEX_FILE).read_text())
    assert index["n_samples"] == 12 and len(index["shards"]) == 3 and index["noise"]["step"] == 0
    assert index["kept_per_row"] == index["vocab_size"] < 128  # 2k >= V: everything kept
    assert index["bytes_per_sample"] > 0 and index["data"]["sha256"]

    cfg = make_cfg(env, tmp_path / "run", alpha=0.3, seed=0)  # seed_tiny.yaml's noise: gaussian, alpha 0.3, seed 0
    trainer = build_trainer(cfg)
    randomize_lora(trainer.model)
    cache = TeacherCache(cache_dir)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in (7, 2, 10)])
    # round trip: the stored rows are select_rows of the teacher forward at step 0, sample by sample
    from seedvlm import seed as S

    mask, _ = S.answer_positions(batch["labels"])
    clean, noisy = teacher_logits(trainer.model, batch, mask, cfg, step=0)
    want = select_rows(clean, noisy, 64)
    got = cache.read(batch["sample_index"], mask)
    assert torch.equal(got["ids"], want["ids"])
    for k in ("clean", "noisy", "clean_lse", "noisy_lse"):
        torch.testing.assert_close(got[k], want[k], atol=1e-5, rtol=1e-5)

    for kw in ({}, dict(plausibility=0.3, purify_space="logprob"), dict(direction="forward", kl_chunk_size=5),
               dict(mask_strategy="clamp", plausibility=0.5), dict(teacher_cache_tail="drop")):
        c = make_cfg(env, tmp_path / "run", alpha=0.3, seed=0, **kw)
        ref = loss_of(trainer, batch, c)
        out = loss_of(trainer, batch, c, cache=TeacherCache(cache_dir, tail=c.teacher_cache_tail))
        torch.testing.assert_close(out.conf, ref.conf, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(out.loss, ref.loss, atol=1e-5, rtol=1e-5), kw
        assert abs(out.parts["distill"] - ref.parts["distill"]) < 1e-5, kw


def test_small_top_k_is_close_and_training_never_runs_the_teacher(env, tmp_path, monkeypatch):
    import seedvlm.train.teacher as teacher_mod
    from seedvlm.train.teacher_cache import TeacherCache, teach
    from seedvlm.train.run import build_trainer, run_training

    cfg = make_cfg(env, tmp_path / "run")
    teach(cfg, tmp_path / "k4", top_k=4)  # K = 8 of 47 tokens, float16 values
    trainer = build_trainer(cfg)
    randomize_lora(trainer.model)
    gaps = {}
    for tail in ("lump", "drop"):
        c = make_cfg(env, tmp_path / "run", teacher_cache_tail=tail)
        rel, rel_kl = [], []
        for idx in ((0, 1, 2), (3, 4, 5), (6, 7, 8), (9, 10, 11)):
            batch = trainer.data_collator([trainer.train_dataset[i] for i in idx])
            ref = loss_of(trainer, batch, c)
            out = loss_of(trainer, batch, c, cache=TeacherCache(tmp_path / "k4", tail=tail))
            assert out.purified.shape[1] == (9 if tail == "lump" else 8)
            rel.append(abs(float(out.loss.detach()) - float(ref.loss.detach())) / float(ref.loss.detach()))
            rel_kl.append(abs(out.parts["distill"] - ref.parts["distill"]) / ref.parts["distill"])
        gaps[tail] = (max(rel), max(rel_kl))
    print(f"largest relative gap (loss, distill term), top-4 of 47 tokens: {gaps}")
    assert gaps["lump"][0] < 0.05 and gaps["drop"][0] < 0.05, gaps

    # a training run with the cache: the teacher forward is never called, the loss is finite, the b history fills
    def no_teacher(*a, **k):
        raise AssertionError("the teacher forward ran despite the cache")

    monkeypatch.setattr(teacher_mod, "teacher_logits", no_teacher)
    result = run_training(make_cfg(env, tmp_path / "cached", teacher_cache=str(tmp_path / "k4"), max_steps=4))
    rows = [json.loads(x) for x in (tmp_path / "cached" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(r["loss"] is not None and r["beta"] is not None for r in rows)
    assert len(result["trainer"].beta_schedule.history) == 12


def test_a_cache_for_other_data_model_or_noise_is_refused(env, tmp_path):
    from seedvlm.errors import SeedVLMError
    from seedvlm.train.teacher_cache import teach
    from seedvlm.train.run import build_trainer

    cfg = make_cfg(env, tmp_path / "run", max_samples=6)
    teach(cfg, tmp_path / "c", top_k=2)
    build_trainer(make_cfg(env, tmp_path / "ok", max_samples=6, teacher_cache=str(tmp_path / "c")))  # accepted

    with pytest.raises(SeedVLMError, match="noise settings"):
        build_trainer(make_cfg(env, tmp_path / "r1", max_samples=6, alpha=0.5, teacher_cache=str(tmp_path / "c")))
    with pytest.raises(SeedVLMError, match="noise settings"):
        build_trainer(make_cfg(env, tmp_path / "r2", max_samples=6, seed=7, teacher_cache=str(tmp_path / "c")))
    with pytest.raises(SeedVLMError, match="holds 6 samples but the data has 12"):
        build_trainer(make_cfg(env, tmp_path / "r3", teacher_cache=str(tmp_path / "c")))
    other_data = tmp_path / "other.json"
    other_data.write_text(json.dumps(list(reversed(env["records"]))))
    with pytest.raises(SeedVLMError, match="made for data file"):
        build_trainer(make_cfg(env, tmp_path / "r4", max_samples=6, data=str(other_data),
                               teacher_cache=str(tmp_path / "c")))
    other = build_env(tmp_path / "other", seed=1, n=1)
    with pytest.raises(SeedVLMError, match="made with base model"):
        build_trainer(make_cfg(env, tmp_path / "r5", max_samples=6, model=str(other["model"]),
                               teacher_cache=str(tmp_path / "c")))
    with pytest.raises(SeedVLMError, match="not a teacher cache"):
        build_trainer(make_cfg(env, tmp_path / "r6", teacher_cache=str(tmp_path)))
    with pytest.raises(SeedVLMError, match="method seed only"):
        make_cfg(env, tmp_path / "r7", method="sft", teacher_cache=str(tmp_path / "c"))


def test_teach_output_is_atomic(env, tmp_path, monkeypatch):
    import seedvlm.train.teacher_cache as teacher_cache
    from seedvlm.train.teacher_cache import INDEX_FILE, teach

    cfg = make_cfg(env, tmp_path / "run", max_samples=6)
    out = tmp_path / "cache"
    teach(cfg, out, top_k=2, shard_samples=3)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real = teacher_cache.save_file
    calls = {"n": 0}

    def fail_second(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # Ctrl-C after the first shard
        return real(*a, **k)

    monkeypatch.setattr(teacher_cache, "save_file", fail_second)
    with pytest.raises(KeyboardInterrupt):
        teach(make_cfg(env, tmp_path / "run", max_samples=6, alpha=0.5), out, top_k=2, shard_samples=3)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the earlier cache is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]  # no temp folder left
    with pytest.raises(KeyboardInterrupt):
        calls["n"] = 0
        teach(cfg, tmp_path / "new", top_k=2, shard_samples=3)
    assert not (tmp_path / "new").exists()
    assert (out / INDEX_FILE).is_file()
