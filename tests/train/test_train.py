"""SEED training and the SFT control arm on a 2-layer random LLaVA and 16 drawn images (CPU, seconds).

Covers the bugs a naive SEED has (docs/design.md section 2: teacher with LoRA on, purify never called, forward KL,
T=1, truncated image tokens, NaNs), frozen vision tower/projector, LoRA placement, loss going down, exact
kill-and-resume, atomic checkpoints, merging, and the errors for bad input.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from train_env import COLORS, WORDS, build_env, cfg_kwargs, make_cfg, read_metrics  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: one thread on 2 shared cores


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return build_env(tmp_path_factory.mktemp("train_env"))


def lora_state(model) -> dict:
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}


def batch_of(trainer, idx=(0, 1)):
    return trainer.data_collator([trainer.train_dataset[i] for i in idx])


def base_logits(model_dir, batch, pixel_values):
    """Logits of the base model loaded afresh from disk, at the answer positions."""
    from seedvlm.models import load_model
    from seedvlm.seed import answer_positions

    m = load_model(model_dir, device="cpu").eval()
    mask, _ = answer_positions(batch["labels"])
    with torch.no_grad():
        return m(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], pixel_values=pixel_values,
                 logits_to_keep=mask).logits


# ---------------------------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------------------------


def test_examples_have_every_image_token_and_answer_only_labels(env):
    from seedvlm.data.dataset import Collator, InstructDataset, load_records
    from seedvlm.models import load_processor

    proc = load_processor(env["model"])
    ds = InstructDataset(load_records(env["data"]), proc, env["images"], max_length=128)
    assert ds.num_image_tokens == 16  # (32 / 8) ** 2, CLS dropped
    ex = ds[3]
    assert int((ex["input_ids"] == proc.image_token_id).sum()) == 16
    answer = proc.tokenizer(env["records"][3]["answer"], add_special_tokens=False).input_ids
    lab = ex["labels"][ex["labels"] != -100].tolist()
    assert lab == answer + [proc.tokenizer.eos_token_id]
    assert ex["labels"][: len(ex["labels"]) - len(lab)].eq(-100).all()
    assert len(ex["input_ids"]) == ds.lengths[3]
    batch = Collator(proc.tokenizer.pad_token_id)([ds[0], ds[3]])
    assert batch["input_ids"].shape[1] == max(ds.lengths[0], ds.lengths[3])
    assert batch["sample_index"].tolist() == [0, 3]
    short = 0 if ds.lengths[0] < ds.lengths[3] else 1
    assert batch["input_ids"][short, -1] == proc.tokenizer.pad_token_id  # right padding
    assert batch["attention_mask"][short, -1] == 0 and batch["labels"][short, -1] == -100
    assert batch["pixel_values"].shape == (2, 3, 32, 32)


def test_bad_records_are_clear_errors(env, tmp_path):
    from seedvlm.data.dataset import InstructDataset, load_records
    from seedvlm.errors import SeedVLMError
    from seedvlm.models import load_processor

    proc = load_processor(env["model"])
    recs = [dict(r) for r in env["records"][:3]]
    long = dict(recs[1], id="too-long", answer="a red cat . " * 40)
    with pytest.raises(SeedVLMError, match=r"too-long.*longer than the context of 128"):
        InstructDataset([recs[0], long], proc, env["images"], max_length=128)
    missing = dict(recs[2], id="lost", image="nope.png")
    with pytest.raises(SeedVLMError, match=r"lost.*image not found.*nope\.png"):
        InstructDataset([recs[0], missing], proc, env["images"], max_length=128)
    escape = dict(recs[2], id="sneaky", image="../train.json")
    with pytest.raises(SeedVLMError, match=r"sneaky.*escapes"):
        InstructDataset([escape], proc, env["images"], max_length=128)
    doubled = dict(recs[0], id="two-images", prompt="<image>\nwhat color ?")
    with pytest.raises(SeedVLMError, match=r"two-images.*2 <image>"):
        InstructDataset([doubled], proc, env["images"], max_length=128)
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    with pytest.raises(SeedVLMError, match=r"empty\.json is empty"):
        load_records(empty)
    raw = tmp_path / "raw.json"
    raw.write_text(json.dumps([{"id": "1", "image": "a.png", "conversations": []}]))
    with pytest.raises(SeedVLMError, match="seedvlm prepare"):
        load_records(raw)


def test_length_grouped_sampler_is_deterministic_and_pads_less():
    from seedvlm.data.dataset import LengthGroupedSampler, padding_fraction

    lengths = [int(x) for x in np.random.default_rng(0).integers(20, 200, 400)]
    s = LengthGroupedSampler(lengths, batch_size=8, seed=3, megabatch_mult=10)
    s.set_epoch(1)
    order = list(s)
    assert sorted(order) == list(range(400)) and order == list(s)
    s.set_epoch(2)
    assert list(s) != order
    rand = torch.randperm(400, generator=torch.Generator().manual_seed(0)).tolist()
    assert padding_fraction(lengths, order, 8) < 0.5 * padding_fraction(lengths, rand, 8)


# ---------------------------------------------------------------------------------------------------------------
# LoRA placement, the SEED step and the bugs a naive SEED has
# ---------------------------------------------------------------------------------------------------------------


def test_seed_step_teacher_student_and_target(env, tmp_path):
    from seedvlm.seed import combined_loss, purify
    from seedvlm.train.config import SeedConfig
    from seedvlm.train.lora import lora_module_names
    from seedvlm.train.run import build_trainer
    from seedvlm.train.teacher import noisy_view

    # Defaults that docs/design.md section 2 names: reverse KL, T = 2, w = 0.7, logit space, the reference
    # implementation's noise.
    d = SeedConfig()
    assert (d.direction, d.temperature, d.distill_weight, d.purify_space, d.alpha) == ("reverse", 2.0, 0.7,
                                                                                       "logit", 0.3)
    assert (d.lora_r, d.lora_alpha, d.lora_dropout) == (64, 128, 0.05)

    trainer = build_trainer(make_cfg(env, tmp_path / "run", max_steps=5, beta_schedule="fixed", beta_fixed=0.9))
    model = trainer.model
    wrapped = lora_module_names(model)
    assert wrapped and all(".language_model." in n for n in wrapped)
    assert {n.rsplit(".", 1)[-1] for n in wrapped} == {"q_proj", "k_proj", "v_proj", "o_proj"}
    assert not any("vision_tower" in n or "multi_modal_projector" in n for n in wrapped)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n and "language_model" in n for n in trainable)

    trainer.train()  # 5 updates: the adapter now changes the logits
    batch = batch_of(trainer, (2, 5))
    out = trainer.seed_step(model, batch)
    # Teacher = base model with the adapter disabled, on clean and noisy pixels (bug: teacher with LoRA on).
    noisy = noisy_view(batch["pixel_values"], batch["sample_index"], trainer.state.global_step, trainer.cfg,
                       trainer.patch_size)
    assert not torch.equal(noisy, batch["pixel_values"])
    torch.testing.assert_close(out.teacher.clean, base_logits(env["model"], batch, batch["pixel_values"]),
                               atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.teacher.noisy, base_logits(env["model"], batch, noisy), atol=1e-5, rtol=1e-5)
    assert (out.student - out.teacher.clean).abs().max() > 1e-3
    # The target is the purified one (bug: purify never called).
    assert torch.all(out.beta == 0.9)
    assert (out.purified - out.teacher.clean).abs().max() > 1e-4
    torch.testing.assert_close(out.purified, purify(out.teacher.clean, out.teacher.noisy, 0.9))
    # The loss is reverse KL at T = 2 with w = 0.7 (bugs: forward KL, T = 1).
    ref, _ = combined_loss(out.student, out.purified, out.targets, w=0.7, T=2.0, direction="reverse")
    torch.testing.assert_close(out.loss, ref)
    fwd, _ = combined_loss(out.student, out.purified, out.targets, w=0.7, T=2.0, direction="forward")
    t1, _ = combined_loss(out.student, out.purified, out.targets, w=0.7, T=1.0, direction="reverse")
    loss = float(out.loss.detach())
    assert abs(loss - float(fwd.detach())) > 1e-6 and abs(loss - float(t1.detach())) > 1e-6
    # Logits only at the answer positions: one row per answer token.
    assert out.student.shape[0] == int((batch["labels"] != -100).sum())


def test_seed_step_runs_every_perturbation_and_schedule(env, tmp_path):
    from seedvlm.train.run import build_trainer

    for i, kw in enumerate([dict(noise="ddpm"), dict(noise="mask", mask_ratio=0.5), dict(noise="blur"),
                            dict(noise="blank"),
                            dict(beta_schedule="continuous", purify_space="logprob", plausibility=0.95),
                            dict(beta_schedule="curriculum", direction="forward", kl_chunk_size=3)]):
        trainer = build_trainer(make_cfg(env, tmp_path / f"r{i}", **kw))
        out = trainer.seed_step(trainer.model, batch_of(trainer))
        assert torch.isfinite(out.loss), kw
        if kw.get("plausibility"):
            assert torch.isinf(out.purified).any()


def test_the_perturbation_kinds_are_seed_py_s_and_their_own_settings_key_the_cache():
    from seedvlm.errors import SeedVLMError
    from seedvlm.seed import PERTURBATIONS
    from seedvlm.train.config import TrainConfig
    from seedvlm.train.teacher import noise_settings

    assert {"blur", "blank"} <= set(PERTURBATIONS)
    assert noise_settings(TrainConfig(noise="blur", blur_sigma=0.05)) == {"noise": "blur", "seed": 42,
                                                                          "blur_sigma": 0.05}
    assert noise_settings(TrainConfig(noise="blank", alpha=0.1)) == {"noise": "blank", "seed": 42}
    with pytest.raises(SeedVLMError, match="blank"):  # the message lists every kind
        TrainConfig(noise="fog")
    with pytest.raises(SeedVLMError, match="blur_sigma"):
        TrainConfig(noise="blur", blur_sigma=0.0)


@pytest.mark.parametrize("method", ["seed", "sft"])
def test_micro_run_lowers_loss_and_keeps_vision_frozen(env, tmp_path, method):
    from seedvlm.train.lora import frozen_state
    from seedvlm.train.run import run_training

    cfg = make_cfg(env, tmp_path / method, method=method, max_steps=30, learning_rate=1e-2, save_steps=1000,
                   beta_schedule="fixed")
    from seedvlm.train.run import build_trainer

    probe = build_trainer(cfg)
    fixed = batch_of(probe, (0, 1, 2, 3))
    step = probe.seed_step if method == "seed" else probe.sft_step
    with torch.no_grad():
        before = float(step(probe.model, fixed).loss)
    frozen_before = frozen_state(probe.model)
    lora_before = lora_state(probe.model)
    del probe
    result = run_training(cfg, )
    trainer = result["trainer"]
    trainer.model.eval()
    step = trainer.seed_step if method == "seed" else trainer.sft_step
    with torch.no_grad():
        after = float(step(trainer.model, fixed).loss)
    assert after < 0.95 * before, (before, after)  # a fixed batch: no sampling noise
    for k, v in frozen_state(trainer.model).items():
        assert torch.equal(v, frozen_before[k]), k
    lora_after = lora_state(trainer.model)
    assert lora_after.keys() == lora_before.keys()
    assert any(not torch.equal(lora_after[k], lora_before[k]) for k in lora_after)
    rows = read_metrics(tmp_path / method)
    assert [r["step"] for r in rows] == list(range(1, 31))
    assert all(r["loss"] is not None and r["lr"] is not None for r in rows)
    if method == "seed":
        assert all(r["beta"] is not None and r["conf"] is not None for r in rows)
    else:
        assert all(r["distill"] is None for r in rows)
    manifest = json.loads((tmp_path / method / "train_manifest.json").read_text())
    assert manifest["n_records"] == 16 and manifest["images"] == sorted(f"img{i}.png" for i in range(16))
    adapter = tmp_path / method / "adapter"
    assert {"adapter_config.json", "adapter_model.safetensors", "seedvlm_base.json"} <= {p.name for p in
                                                                                       adapter.iterdir()}


# ---------------------------------------------------------------------------------------------------------------
# checkpoints: exact resume, atomic writes
# ---------------------------------------------------------------------------------------------------------------


class _Snapshots:
    """Keep the LoRA weights after every step: `at[step]` (to check that a skipped step changed nothing)."""

    def __init__(self):
        self.at: dict[int, dict] = {}

    def __getattr__(self, name):
        if name.startswith("on_"):
            return lambda *a, **k: None
        raise AttributeError(name)

    def on_step_end(self, args, state, control, model=None, **kw):
        self.at[state.global_step] = lora_state(model)


class _Kill:
    """Raise KeyboardInterrupt at the end of a given step (a Ctrl-C between steps)."""

    def __init__(self, at: int):
        self.at = at

    def __getattr__(self, name):
        if name.startswith("on_"):
            return lambda *a, **k: None
        raise AttributeError(name)

    def on_step_end(self, args, state, control, **kw):
        if state.global_step == self.at:
            raise KeyboardInterrupt


def test_kill_and_resume_equals_uninterrupted_run(env, tmp_path):
    from safetensors.torch import load_file

    from seedvlm.train.run import run_training

    kw = dict(max_steps=11, save_steps=3, beta_min_history=4, lora_dropout=0.1)  # 16 records / 2 = 8 steps/epoch
    run_training(make_cfg(env, tmp_path / "whole", **kw))
    with pytest.raises(KeyboardInterrupt):
        run_training(make_cfg(env, tmp_path / "cut", **kw), callbacks=[_Kill(7)])
    assert sorted(p.name for p in (tmp_path / "cut").glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-6"]
    state = json.loads((tmp_path / "cut" / "checkpoint-6" / "seedvlm_state.json").read_text())
    assert len(state["beta_schedule"]["history"]) == 12  # 6 steps x 2 samples
    run_training(make_cfg(env, tmp_path / "cut", **kw), resume="auto")
    whole, cut = read_metrics(tmp_path / "whole"), read_metrics(tmp_path / "cut")
    assert [r["step"] for r in cut] == [r["step"] for r in whole] == list(range(1, 12))
    for a, b in zip(whole, cut):
        for key in ("loss", "distill", "sup", "beta", "conf", "lr"):
            assert a[key] == pytest.approx(b[key], abs=1e-6), (a["step"], key)
    wa = load_file(str(tmp_path / "whole" / "adapter" / "adapter_model.safetensors"))
    wb = load_file(str(tmp_path / "cut" / "adapter" / "adapter_model.safetensors"))
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=1e-6, rtol=0)


def test_resume_auto_restarts_a_run_killed_before_its_first_checkpoint(env, tmp_path):
    # The small-preset experiment hit this: a deadline stopped training at step ~50 of 300 (checkpoints every 100),
    # and the experiment's `--resume auto` then refused the folder because of the metrics.jsonl left behind.
    from seedvlm.train.run import run_training

    kw = dict(max_steps=4, save_steps=3)
    with pytest.raises(KeyboardInterrupt):
        run_training(make_cfg(env, tmp_path / "cut", **kw), callbacks=[_Kill(2)])
    assert (tmp_path / "cut" / "metrics.jsonl").is_file() and not list((tmp_path / "cut").glob("checkpoint-*"))
    run_training(make_cfg(env, tmp_path / "cut", **kw), resume="auto")
    run_training(make_cfg(env, tmp_path / "whole", **kw))
    cut, whole = read_metrics(tmp_path / "cut"), read_metrics(tmp_path / "whole")
    assert [r["step"] for r in cut] == [1, 2, 3, 4]  # the killed run's rows are gone, not duplicated
    for a, b in zip(whole, cut):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-6)


def test_checkpoint_write_is_atomic_and_reruns_are_refused(env, tmp_path, monkeypatch):
    from seedvlm.errors import SeedVLMError
    from seedvlm.train.run import run_training
    from seedvlm.train.trainer import SeedTrainer

    out = tmp_path / "run"
    calls = {"n": 0}
    original = SeedTrainer._save_rng_state

    def flaky(self, output_dir):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("disk full")
        return original(self, output_dir)

    monkeypatch.setattr(SeedTrainer, "_save_rng_state", flaky)
    with pytest.raises(RuntimeError, match="disk full"):
        run_training(make_cfg(env, out, max_steps=4, save_steps=2))
    names = sorted(p.name for p in out.iterdir() if "checkpoint" in p.name)
    assert "checkpoint-2" in names and "checkpoint-4" not in names  # no half-written checkpoint-4
    assert ".checkpoint-4.tmp" in names  # the partial write stayed in its temp folder
    ckpt = out / "checkpoint-2"
    # Nothing in a checkpoint needs full unpickling (docs/design.md section 8): no training_args.bin, and what
    # transformers loads back (optimizer, scheduler, RNG) loads with weights_only=True, as transformers does.
    from transformers.trainer_pt_utils import safe_globals

    assert not (ckpt / "training_args.bin").exists()
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth"):
        with safe_globals():
            torch.load(ckpt / name, weights_only=True)
    with pytest.raises(SeedVLMError, match="already holds a run"):
        run_training(make_cfg(env, out, max_steps=4, save_steps=2))
    with pytest.raises(SeedVLMError, match="method=seed run"):
        run_training(make_cfg(env, out, method="sft", max_steps=4), resume=str(out / "checkpoint-2"))


# ---------------------------------------------------------------------------------------------------------------
# NaN guard
# ---------------------------------------------------------------------------------------------------------------


def _train_with_tampered_loss(env, monkeypatch, out, tamper, **cfg_kw):
    """Train with `combined_loss` passed through `tamper(call_number, loss, parts) -> (loss, parts)` (call numbers
    from 1); returns (metrics rows, LoRA snapshots by step). `tamper.calls` counts the calls (reset it to rerun)."""
    import seedvlm.train.trainer as T
    from seedvlm.train.run import run_training

    real = T.combined_loss
    tamper.calls = 0

    def tampered(*a, **k):
        tamper.calls += 1
        return tamper(tamper.calls, *real(*a, **k))

    monkeypatch.setattr(T, "combined_loss", tampered)
    snap = _Snapshots()
    run_training(make_cfg(env, out, **cfg_kw), callbacks=[snap])
    return read_metrics(out), snap.at


def test_nan_guard_skips_steps_and_stops_after_k(env, tmp_path, monkeypatch):
    from seedvlm.errors import SeedVLMError

    bad = {3}

    def nan_loss(n, loss, parts):
        if n in bad or "all" in bad:
            return loss * float("nan"), {key: float("nan") for key in parts}
        return loss, parts

    rows, snapshots = _train_with_tampered_loss(env, monkeypatch, tmp_path / "one", nan_loss, max_steps=5)
    assert [r["skipped"] for r in rows] == [False, False, True, False, False]
    assert rows[2]["loss"] is None and rows[4]["nan_steps"] == 1
    assert not rows[2]["bad_grads"]  # a NaN loss is replaced by a graph-connected zero: its gradients are finite
    for k in snapshots[2]:
        assert torch.equal(snapshots[2][k], snapshots[3][k])  # the NaN step changed nothing
    assert any(not torch.equal(snapshots[3][k], snapshots[4][k]) for k in snapshots[3])

    bad.add("all")
    with pytest.raises(SeedVLMError, match=r"3 optimizer steps in a row had a non-finite loss or gradient"):
        _train_with_tampered_loss(env, monkeypatch, tmp_path / "all", nan_loss, max_steps=6, max_consecutive_nan=3)
    assert len(read_metrics(tmp_path / "all")) == 3


def test_nan_guard_skips_a_step_whose_loss_is_finite_but_gradients_are_not(env, tmp_path, monkeypatch):
    # Seen on the small base in bf16: a finite loss, NaN gradients, and after that update every step was NaN.
    def nan_grad_at_3(n, loss, parts):
        if n == 3:  # value unchanged (0 * sqrt(0) = 0), gradient 0 * inf = NaN
            loss = loss + 0.0 * torch.sqrt(loss - loss.detach())
        return loss, parts

    rows, snapshots = _train_with_tampered_loss(env, monkeypatch, tmp_path / "g", nan_grad_at_3, max_steps=5)
    flags = [(r["skipped"], r["bad_grads"]) for r in rows]
    assert flags == [(False, False)] * 2 + [(True, True)] + [(False, False)] * 2
    for k in snapshots[2]:
        assert torch.equal(snapshots[2][k], snapshots[3][k])  # the step with NaN gradients changed nothing
    assert all(torch.isfinite(v).all() for v in snapshots[5].values())


# ---------------------------------------------------------------------------------------------------------------
# CLI, merge, adapter on another base
# ---------------------------------------------------------------------------------------------------------------


def test_cli_train_merge_and_foreign_base(env, tmp_path, capsys):
    from seedvlm.cli import main
    from seedvlm.errors import SeedVLMError
    from seedvlm.models import attach_adapter, load_model

    out = tmp_path / "sft"
    rc = main(["train", "--config", str(Path(__file__).parents[2] / "configs" / "sft_tiny.yaml"),
               "--model", str(env["model"]), "--data", str(env["data"]), "--images", str(env["images"]),
               "--output-dir", str(out), "--max-steps", "3", "--lora-r", "4", "--learning-rate", "1e-2",
               "--report-to", "none"])
    assert rc == 0
    saved = json.loads((out / "train_config.json").read_text())
    assert saved["method"] == "sft" and saved["max_steps"] == 3 and saved["lora_r"] == 4
    adapter = out / "adapter"

    # merge: merged logits equal base + adapter logits
    merged = tmp_path / "merged"
    assert main(["merge", "--model", str(env["model"]), "--adapter", str(adapter), "--out", str(merged)]) == 0
    from transformers import LlavaForConditionalGeneration

    m = LlavaForConditionalGeneration.from_pretrained(merged).eval()
    a = attach_adapter(load_model(env["model"], device="cpu"), adapter).eval()
    ids = torch.tensor([[1] + [m.config.image_token_id] * 16 + [5, 6, 7]])
    pix = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(m(input_ids=ids, pixel_values=pix).logits,
                                   a(input_ids=ids, pixel_values=pix).logits, atol=1e-5, rtol=1e-5)

    # an adapter refuses another base: through the API and the CLI
    other = build_env(tmp_path / "other", seed=1, n=1)
    with pytest.raises(SeedVLMError, match="different base model"):
        attach_adapter(load_model(other["model"], device="cpu"), adapter)
    capsys.readouterr()
    assert main(["merge", "--model", str(other["model"]), "--adapter", str(adapter), "--out",
                 str(tmp_path / "bad")]) == 2
    assert "trained on a different base model" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
    # a checkpoint refuses to resume onto another base
    assert main(["train", "--config", str(Path(__file__).parents[2] / "configs" / "sft_tiny.yaml"),
                 "--model", str(other["model"]), "--data", str(env["data"]), "--images", str(env["images"]),
                 "--output-dir", str(out), "--max-steps", "4", "--lora-r", "4", "--resume", "auto",
                 "--report-to", "none"]) == 2
    assert "different base model" in capsys.readouterr().err


def test_resuming_a_finished_run_trains_no_extra_step(env, tmp_path):
    from safetensors.torch import load_file

    from seedvlm.train.run import run_training

    kw = dict(max_steps=4, save_steps=2)
    first = run_training(make_cfg(env, tmp_path / "r", **kw))
    before = load_file(str(tmp_path / "r" / "adapter" / "adapter_model.safetensors"))
    again = run_training(make_cfg(env, tmp_path / "r", **kw), resume="auto")
    assert first["global_step"] == again["global_step"] == 4
    assert [r["step"] for r in read_metrics(tmp_path / "r")] == [1, 2, 3, 4]
    after = load_file(str(tmp_path / "r" / "adapter" / "adapter_model.safetensors"))
    for k in before:
        torch.testing.assert_close(before[k], after[k], atol=0, rtol=0)
