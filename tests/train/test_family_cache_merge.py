"""The other model families (Qwen2-VL/Qwen2.5-VL, LLaVA-NeXT, SmolVLM/Idefics3) with a teacher cache, merged, and
with the teacher's clean image features reused by the student, on tiny hub-like folders (CPU, a few steps each):
- a run with a full-vocabulary cache gives the uncached run's losses step by step (the live teacher's noise drawn at
  step 0, as the cache's is), and a cache made for another model, data, noise or chat template is refused;
- `seedvlm merge` writes a folder whose logits are base + adapter's, which eval and train load, and onto which the
  same adapter is refused;
- the student's logits and gradients on the teacher's clean image features equal those from its own vision tower."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from train_env import NAMES, build_family_env, family_folder, read_metrics

pytestmark = pytest.mark.usefixtures("one_thread")

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return build_family_env(tmp_path_factory.mktemp("family_cache"))


def _args(model, data, images, **kw) -> list[str]:
    opts = {"model": model, "data": data, "images": images, "max_steps": 3, "per_device_train_batch_size": 2,
            "lora_r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "learning_rate": 5e-3, "warmup_steps": 0,
            "logging_steps": 1, "report_to": "none", "beta_min_history": 2, "save_steps": 100, **kw}
    return [x for k, v in opts.items() for x in (f"--{k.replace('_', '-')}", str(v))]


def _teach(model, data, images, out, **kw) -> None:
    from seedvlm.cli import main

    opts = {"model": model, "data": data, "images": images, **kw}
    argv = [x for k, v in opts.items() for x in (f"--{k.replace('_', '-')}", str(v))]
    # top-k 10^6: every token kept (K = V), float32 values: the cache holds the teacher's rows exactly
    assert main(["teach", "--config", str(CONFIGS / "seed_tiny.yaml"), *argv, "--out", str(out), "--top-k",
                 "1000000", "--value-dtype", "float32", "--batch-size", "2"]) == 0


def _batch(trainer, idx=(0, 1, 2)):
    return trainer.data_collator([trainer.train_dataset[i] for i in idx])


@pytest.mark.parametrize("name", NAMES)
def test_cached_run_gives_the_uncached_losses(env, name, tmp_path, monkeypatch):
    from seedvlm import seed as S
    from seedvlm.cli import main

    model, data, images = family_folder(env, name)
    _teach(model, data, images, tmp_path / "cache")
    index = json.loads((tmp_path / "cache" / "index.json").read_text())
    assert index["kept_per_row"] == index["vocab_size"] and index["n_samples"] == 4 and index["model"]["family"]
    assert main(["train", "--config", str(CONFIGS / "seed_tiny.yaml"), *_args(model, data, images),
                 "--teacher-cache", str(tmp_path / "cache"), "--output-dir", str(tmp_path / "cached")]) == 0
    # the cache's noise is drawn at step 0 for every step: the live teacher draws it so too
    real = S.per_sample_generator
    monkeypatch.setattr(S, "per_sample_generator", lambda seed, index, step, device="cpu": real(seed, index, 0,
                                                                                              device=device))
    assert main(["train", "--config", str(CONFIGS / "seed_tiny.yaml"), *_args(model, data, images),
                 "--output-dir", str(tmp_path / "live")]) == 0
    cached, live = read_metrics(tmp_path / "cached"), read_metrics(tmp_path / "live")
    steps = [r for r in live if "loss" in r]
    assert len(steps) == 3 and len({round(r["loss"], 4) for r in steps}) > 1  # the student moved
    for a, b in zip([r for r in cached if "loss" in r], steps):
        for key in ("loss", "distill", "sup", "beta", "conf"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), (key, a, b)


def test_a_family_cache_for_another_model_data_noise_template_or_options_is_refused(env, tmp_path, capsys):
    from seedvlm.cli import main

    qwen, data, images = family_folder(env, "qwen2.5-vl")
    smol, _, _ = family_folder(env, "smolvlm")
    _teach(qwen, data, images, tmp_path / "cache", max_samples=3)

    def refused(model=qwen, **kw) -> str:
        out = tmp_path / f"run{len(list(tmp_path.iterdir()))}"
        rc = main(["train", "--config", str(CONFIGS / "seed_tiny.yaml"), *_args(model, kw.pop("data", data), images,
                                                                                max_samples=3, **kw),
                   "--teacher-cache", str(tmp_path / "cache"), "--output-dir", str(out)])
        err = capsys.readouterr().err
        lines = [x for x in err.splitlines() if x.startswith("seedvlm train: error:")]
        assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
        return lines[0]

    assert "made for a qwen2_vl model" in refused(model=smol)
    assert "noise settings" in refused(alpha=0.7)
    other = tmp_path / "other.json"
    other.write_text(json.dumps(list(reversed(json.loads(data.read_text())))))
    assert "made for data file" in refused(data=other)
    # the same weights, another chat template: the examples are other token sequences
    retemplated = tmp_path / "qwen_other_template"
    shutil.copytree(qwen, retemplated)
    f = retemplated / "chat_template.json"
    f.write_text(f.read_text().replace("You are a helpful assistant.", "You are a careful assistant."))
    assert "another chat template" in refused(model=retemplated)
    # other min/max pixels: the same answer rows, other image tokens before them
    assert "family options" in refused(max_pixels=28 * 28 * 4)


def _train_adapter(model, data, images, out) -> Path:
    from seedvlm.cli import main

    assert main(["train", "--config", str(CONFIGS / "sft_tiny.yaml"), *_args(model, data, images, max_steps=2,
                                                                             learning_rate=5e-2),
                 "--output-dir", str(out)]) == 0
    return out / "adapter"


@pytest.mark.parametrize("name", NAMES)
def test_merge_equals_base_plus_adapter_and_loads_everywhere(env, name, tmp_path, capsys):
    from seedvlm.cli import main
    from seedvlm.errors import SeedVLMError
    from seedvlm.models.families import detect_family
    from seedvlm.models.families.loading import load_family_model
    from seedvlm.models.loading import attach_adapter
    from seedvlm.train.config import SeedConfig
    from seedvlm.train.family_teacher import model_inputs
    from seedvlm.train.run import build_trainer

    model, data, images = family_folder(env, name)
    family = detect_family(model)
    adapter = _train_adapter(model, data, images, tmp_path / "sft")
    merged = tmp_path / "merged"
    assert main(["merge", "--model", str(model), "--adapter", str(adapter), "--out", str(merged)]) == 0
    assert detect_family(merged).name == family.name and (merged / "seedvlm_merge.json").is_file()

    cfg = SeedConfig(model=str(model), data=str(data), images=str(images), output_dir=str(tmp_path / "unused"),
                     report_to="none")
    batch = _batch(build_trainer(cfg), (0, 1))
    inputs = model_inputs(family, batch, torch.float32)
    base = load_family_model(model, family=family)
    with torch.no_grad():
        plain = base(**inputs).logits
        want = attach_adapter(base, adapter, model_dir=model).eval()(**inputs).logits
        got = load_family_model(merged, family=family)(**inputs).logits
    assert (want - plain).abs().max() > 1e-3  # the adapter changes the logits
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)

    # the merged folder already holds the adapter: applying it again is refused, by merge and by any loader
    with pytest.raises(SeedVLMError, match="already holds"):
        attach_adapter(load_family_model(merged, family=family), adapter, model_dir=merged)
    capsys.readouterr()
    assert main(["merge", "--model", str(merged), "--adapter", str(adapter), "--out", str(tmp_path / "twice")]) == 2
    assert "already holds" in capsys.readouterr().err
    # eval and train load the merged folder (its processor, tokenizer and chat template are the base's)
    questions = tmp_path / "q.jsonl"
    questions.write_text("".join(json.dumps({"question_id": i, "image": f"img{i}.png", "label": "yes",
                                             "text": "Is there a cat in the image?"}) + "\n" for i in range(2)))
    assert main(["eval", "pope", "--model", str(merged), "--questions", str(questions), "--images", str(images),
                 "--out", str(tmp_path / "pope"), "--max-new-tokens", "2", "--batch-size", "2",
                 "--device", "cpu"]) == 0
    assert main(["train", "--config", str(CONFIGS / "seed_tiny.yaml"), *_args(merged, data, images, max_steps=1),
                 "--output-dir", str(tmp_path / "again")]) == 0


@pytest.mark.parametrize("name", NAMES)
def test_student_on_the_teachers_clean_features_equals_its_own_tower(env, name, tmp_path):
    from seedvlm import seed as S
    from seedvlm.models.families.features import reuse_blocker
    from seedvlm.train.config import SeedConfig
    from seedvlm.train.family_teacher import FamilyTeacher, family_student_rows, processor_ids
    from seedvlm.train.run import build_trainer

    model, data, images = family_folder(env, name)
    cfg = SeedConfig(model=str(model), data=str(data), images=str(images), output_dir=str(tmp_path / "run"),
                     report_to="none", lora_r=4)
    trainer = build_trainer(cfg)
    peft = trainer.model
    peft.eval()  # no LoRA dropout: both student passes see the same weights
    for n, p in peft.named_parameters():
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.1, generator=torch.Generator().manual_seed(0))
    batch = _batch(trainer)
    mask, _ = S.answer_positions(batch["labels"])
    teacher = FamilyTeacher(peft, cfg, trainer.family, reuse_features=True, **processor_ids(trainer.processor))
    rows = teacher.answer_rows(batch, mask, step=0)
    assert rows.features is not None and len(rows.features.pooler_output) == 3  # one entry per clean image/sample
    student = family_student_rows(trainer.family)

    def logits_and_grads(features):
        peft.zero_grad()
        out = student(peft, batch, mask, features)
        (out.float().log_softmax(-1)[:, :7].sum()).backward()
        return out.detach(), {n: p.grad.clone() for n, p in peft.named_parameters() if p.grad is not None}

    reused, g_reused = logits_and_grads(rows.features)
    own, g_own = logits_and_grads(None)
    torch.testing.assert_close(reused, own, atol=1e-5, rtol=1e-5)
    assert g_own and g_reused.keys() == g_own.keys()
    for n in g_own:
        torch.testing.assert_close(g_reused[n], g_own[n], atol=1e-5, rtol=1e-4)
    # the features are used: the noisy view's features give other logits
    noisy = teacher_noisy_features(teacher, batch, mask)
    assert (student(peft, batch, mask, noisy).detach() - own).abs().max() > 1e-4
    # a trainable vision part (or a projector) turns reuse off
    assert reuse_blocker(peft, trainer.family) is None
    part = next(c for n, c in peft.get_base_model().model.named_children() if n != trainer.family.language_model)
    next(part.parameters()).requires_grad_(True)
    assert "trainable" in reuse_blocker(peft, trainer.family)
    assert teacher.answer_rows(batch, mask, step=0).features is None


def teacher_noisy_features(teacher, batch, mask):
    """The noisy half of the teacher's image features (what the student must NOT be fed)."""
    from seedvlm.models.families.features import ImageFeatures
    from seedvlm.train.family_teacher import model_inputs
    from seedvlm.models.families.pixels import perturb_pixel_inputs

    model = teacher.model
    inputs = model_inputs(teacher.family, batch, torch.float32)
    noisy = perturb_pixel_inputs(teacher.family, inputs, "gaussian", lambda x, i: x + torch.randn_like(x),
                                 image_token_id=teacher.image_token_id, merge_size=teacher.merge_size)
    with torch.no_grad(), model.disable_adapter():
        out = model(**noisy, use_cache=False)
    return ImageFeatures(tuple(f.detach() for f in out.image_outputs.pooler_output))


def _seed_loss(trainer, cfg, batch):
    """One SEED micro-batch's loss at step 0 (eval mode: no LoRA dropout) and its LoRA gradients."""
    from seedvlm import seed as S
    from seedvlm.train.step import seed_batch

    model = trainer.model
    model.eval()
    model.zero_grad()
    schedule = S.BetaSchedule(kind="fixed", fixed=0.5)
    out = seed_batch(model, batch, cfg, teacher=trainer._teacher(model), step=0, beta_schedule=schedule,
                     student_fn=trainer.student_fn)
    out.loss.backward()
    return out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("name", NAMES)
def test_compiled_layers_keep_the_family_step(env, name, tmp_path, monkeypatch):
    """compile_layers (LM and vision layers; eager backend: the plumbing, not inductor's code generation)."""
    import seedvlm.train.family_run as family_run
    from seedvlm.models.families import layers as stacks
    from seedvlm.train.config import SeedConfig
    from seedvlm.train.run import build_trainer

    model, data, images = family_folder(env, name)
    real, compiled_counts = family_run.compile_layers, []
    monkeypatch.setattr(family_run, "compile_layers",
                        lambda m, **k: compiled_counts.append(real(m, **{**k, "backend": "eager"})))
    results = []
    for compiled in (False, True):
        cfg = SeedConfig(model=str(model), data=str(data), images=str(images), report_to="none", lora_r=4,
                         output_dir=str(tmp_path / f"run{compiled}"), compile_layers=compiled,
                         torch_compile_vision=compiled)
        trainer = build_trainer(cfg)
        for n, p in trainer.model.named_parameters():
            if "lora_B" in n:
                torch.nn.init.normal_(p, std=0.1, generator=torch.Generator().manual_seed(0))
        torch._dynamo.reset()
        try:
            results.append(_seed_loss(trainer, cfg, _batch(trainer)))
        finally:
            torch._dynamo.reset()
    family = trainer.family
    layers = stacks.decoder_layers(trainer.model, family) + stacks.vision_layers(trainer.model, family)
    assert compiled_counts == [len(layers)] == [4] and all(x._compiled_call_impl is not None for x in layers)
    (eager, g_eager), (comp, g_comp) = results
    torch.testing.assert_close(comp.loss, eager.loss, atol=1e-5, rtol=1e-5)
    for n in g_eager:
        torch.testing.assert_close(g_comp[n], g_eager[n], atol=1e-5, rtol=1e-4)

