"""The training-step levers and the benchmark that times them (CPU, seconds): the benchmark's tiny run writes its
table and JSON with every case; training works with gradient checkpointing and with compiled decoder layers and
gives the same loss as without; no training forward builds a KV cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: one thread on 2 shared cores


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    from train_env import build_cache_env as build_env

    return build_env(tmp_path_factory.mktemp("step_env"), n=6)


def test_benchmark_tiny_runs_every_case(tmp_path):
    """The benchmark as a user runs it (`python benchmarks/train_step.py`), every case on the tiny preset."""
    out = tmp_path / "bench.json"
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "train_step.py"), "--preset", "tiny", "--device",
                          "cpu", "--batches", "2", "--steps", "1", "--warmup", "0", "--cases",
                          "sft,seed-3pass,seed,seed-cached,sft-seedvlm", "--gradient-checkpointing", "--compile",
                          "--compile-backend", "eager", "--out", str(out)], capture_output=True, text=True,
                         timeout=280)
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads(out.read_text())
    cases = [r["case"] for r in report["results"]]
    assert cases == ["sft", "seed-3pass", "seed", "seed-gc", "seed-cached", "sft-seedvlm", "seed-compile",
                     "seed-cached-compile", "sft-seedvlm-compile"]  # the compiled cases last
    assert all(r["samples_per_s"] > 0 and r["batch_size"] == 2 for r in report["results"])
    assert report["results"][0]["x_sft"] == 1.0 and report["results"][1]["x_seed_3pass"] == 1.0
    assert report["tokens_per_sample"] == 1 + 64 + 80 and report["answer_tokens"] == 60
    assert {"torch", "transformers", "peft"} <= set(report["versions"]) and report["device"]
    assert "| (c) SEED as seedvlm train runs it | 2 |" in run.stdout


def test_training_forwards_build_no_kv_cache(env, tmp_path, monkeypatch):
    from transformers.models.llama import modeling_llama

    from train_env import make_cache_cfg as make_cfg
    from seedvlm.train.run import build_trainer

    trainer = build_trainer(make_cfg(env, tmp_path / "run"))
    seen = []
    real = modeling_llama.LlamaModel.forward

    def spy(self, *a, **k):
        out = real(self, *a, **k)
        seen.append(out.past_key_values if hasattr(out, "past_key_values") else None)
        return out

    monkeypatch.setattr(modeling_llama.LlamaModel, "forward", spy)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in (0, 1)])
    out = trainer.seed_step(trainer.model, batch)
    assert len(seen) == 2 and all(c is None for c in seen)  # teacher (2B) + student
    assert out.reused_features  # the default: the student on the teacher's clean image features


@pytest.mark.parametrize("lever", ["gradient_checkpointing", "torch_compile"])
def test_levers_train_and_keep_the_loss(env, tmp_path, lever, monkeypatch):
    import seedvlm.train.step as step_mod
    from train_env import make_cache_cfg as make_cfg, randomize_lora
    from seedvlm.train.run import build_trainer, run_training

    if lever == "torch_compile":  # the plumbing, not inductor's code generation (minutes on 2 cores)
        real = step_mod.compile_layers
        monkeypatch.setattr(step_mod, "compile_layers", lambda m, **k: real(m, **{**k, "backend": "eager"}))
    plain = build_trainer(make_cfg(env, tmp_path / "plain"))
    fast = build_trainer(make_cfg(env, tmp_path / "fast", **{lever: True}))
    calls = []
    if lever == "torch_compile":
        assert all(layer._compiled_call_impl is not None for layer in step_mod.decoder_layers(fast.model))
        assert all(layer._compiled_call_impl is None for layer in step_mod.vision_layers(fast.model))  # default off
    else:  # as Trainer.train() turns it on
        fast.model.activation_checkpointing_enable(
            activation_checkpointing_kwargs=dict(fast.args.activation_checkpointing_kwargs))
        layer = step_mod.decoder_layers(fast.model)[0]
        ckpt = layer._gradient_checkpointing_func
        layer._gradient_checkpointing_func = lambda *a, **k: (calls.append(1), ckpt(*a, **k))[1]
    randomize_lora(plain.model)
    randomize_lora(fast.model)
    batch = plain.data_collator([plain.train_dataset[i] for i in (0, 3, 5)])
    losses = []
    for t in (plain, fast):
        t.model.train()
        t.model.zero_grad()
        torch.manual_seed(0)  # LoRA dropout draws the same masks
        out = t.seed_step(t.model, batch)
        out.loss.backward()
        grads = {n: p.grad.clone() for n, p in t.model.named_parameters() if p.grad is not None}
        losses.append((float(out.loss.detach()), grads))
    assert abs(losses[0][0] - losses[1][0]) < 1e-5
    if lever == "gradient_checkpointing":
        assert calls == [1]  # the student's layer 0 was checkpointed; the teacher (no grad) was not
    assert losses[0][1].keys() == losses[1][1].keys() and losses[0][1]
    for n in losses[0][1]:
        torch.testing.assert_close(losses[1][1][n], losses[0][1][n], atol=1e-5, rtol=1e-4)
    result = run_training(make_cfg(env, tmp_path / "run", max_steps=2, **{lever: True}))
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert result["global_step"] == 2 and all(r["loss"] is not None for r in rows)


# ---------------------------------------------------------------------------------------------------------------
# seed_step: the loss from the rows, whatever teacher gave them
# ---------------------------------------------------------------------------------------------------------------


def _rows(seed: int = 0, n: int = 5, vocab: int = 9):
    g = torch.Generator().manual_seed(seed)
    clean, noisy, student = (torch.randn(n, vocab, generator=g) * 2 for _ in range(3))
    mask = torch.tensor([[True, True, False, False], [False, True, True, True]])  # rows 0-1: sample 0, 2-4: 1
    return clean, noisy, student, clean.argmax(dim=-1), mask


def test_seed_step_is_purify_then_the_combined_loss_of_its_rows():
    from seedvlm import seed as S
    from seedvlm.train.config import TrainConfig
    from seedvlm.train.step import seed_step
    from seedvlm.train.teacher import TeacherRows

    clean, noisy, student, targets, mask = _rows()
    beta = torch.tensor([1.1, 0.4])
    per_row = torch.tensor([1.1, 1.1, 0.4, 0.4, 0.4])
    for kw in ({}, dict(plausibility=0.3, purify_space="logprob"), dict(direction="forward", temperature=1.0)):
        cfg = TrainConfig(**kw)
        out = seed_step(student, TeacherRows(clean, noisy, S.confidence(clean, mask)), targets, beta, mask, cfg)
        want = S.purify(clean, noisy, per_row, space=cfg.purify_space, plausibility=cfg.plausibility)
        assert torch.equal(out.purified, want), kw  # each row with its own sample's b, purify's own mask
        loss, parts = S.combined_loss(student, want, targets, w=cfg.distill_weight, T=cfg.temperature,
                                      direction=cfg.direction, mask_strategy=cfg.mask_strategy)
        assert torch.equal(out.loss, loss) and out.parts == parts, kw
        assert torch.isinf(out.purified).any() == bool(cfg.plausibility)
        assert out.beta is beta and not out.reused_features
        again = seed_step(student, TeacherRows(clean, noisy, out.conf), targets, beta, mask, cfg)
        assert torch.equal(again.loss, out.loss)  # no state: the same rows give the same loss


def test_cached_rows_keep_every_column_or_lump_the_rest():
    from seedvlm import seed as S
    from seedvlm.train.config import TrainConfig
    from seedvlm.train.step import seed_step
    from seedvlm.train.teacher import TeacherRows
    from seedvlm.train.teacher_cache import cached_rows, select_rows

    clean, noisy, student, targets, mask = _rows(1)
    conf, beta = S.confidence(clean, mask), torch.tensor([0.8, 0.6])
    cfg = TrainConfig(plausibility=0.2)
    full = seed_step(student, TeacherRows(clean, noisy, conf), targets, beta, mask, cfg)
    every = cached_rows({**select_rows(clean, noisy, 9), "conf": conf}, 9, "lump")  # K = V: no rest column
    assert every.tail_max is None and every.clean.shape == (5, 9)
    torch.testing.assert_close(seed_step(student, every, targets, beta, mask, cfg).loss, full.loss)
    kept = cached_rows({**select_rows(clean, noisy, 2), "conf": conf}, 9, "lump")  # K = 4 + the rest
    assert kept.clean.shape == (5, 5)
    torch.testing.assert_close(kept.clean[:, -1], torch.logsumexp(clean.scatter(1, kept.ids, float("-inf")), -1))
    cols = kept.student_columns(student)
    assert torch.equal(cols[:, :4], student.gather(1, kept.ids))
    # the rest column is dropped exactly when its best token is below the cutoff of the kept ones
    cutoff = torch.tensor(0.2).log() + kept.clean[:, :4].max(dim=-1).values
    assert torch.equal(kept.implausible(0.2)[:, -1], kept.tail_max < cutoff)
    out = seed_step(student, kept, targets, beta, mask, cfg)
    assert out.purified.shape == (5, 5) and torch.isfinite(out.loss)
