"""The SEED step's speed levers keep its values (CPU, a 2-layer random LLaVA, seconds): the student on the teacher's
clean image features (reuse_image_features) gives the loss, LoRA gradients and teacher rows of the path that runs
the vision tower again; the step falls back to that path when the projector or the tower is trainable; compiled LM
and vision layers (compile_layers(vision=True), eager backend: the plumbing, not inductor's code generation) give
the eager values; the config's compile options; the benchmark's lever cases switch everything off again."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[2]
IMAGE_TOKEN, PAD, BOS = 4, 0, 1

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: one thread on 2 shared cores


def tiny_llava(feature_layer: int = -2):
    """The tiny preset shrunk to 2 + 2 layers, vocabulary 200, LLaVA-1.5's feature layer (-2: a hidden state, not
    the last), LoRA on the LM with random B (so the student differs from the teacher)."""
    from seedvlm.models import preset_config, random_model
    from seedvlm.train.lora import apply_lora

    cfg = preset_config("tiny", vocab_size=200, image_token_index=IMAGE_TOKEN, pad_token_id=PAD, bos_token_id=BOS,
                        eos_token_id=2)
    cfg.vision_config.num_hidden_layers = cfg.text_config.num_hidden_layers = 2
    cfg.vision_config.hidden_size = cfg.vision_config.projection_dim = 64
    cfg.vision_config.intermediate_size = cfg.text_config.intermediate_size = 128
    cfg.text_config.hidden_size = 64
    cfg.vision_feature_layer = feature_layer
    cfg.text_config.use_cache = False
    model = apply_lora(random_model(cfg, seed=0), r=8, alpha=16, dropout=0.05)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return model


def make_batch(model, lengths=(30, 22, 26)) -> dict:
    """<bos> + image tokens + random text, right-padded to the longest; labels on each sample's last 8 tokens."""
    from seedvlm.models import num_image_tokens

    config = model.config
    n_img, g = num_image_tokens(config), torch.Generator().manual_seed(1)
    L = 1 + n_img + max(lengths)
    ids = torch.full((len(lengths), L), PAD)
    labels = torch.full_like(ids, -100)
    attn = torch.zeros_like(ids)
    for i, n in enumerate(lengths):
        end = 1 + n_img + n
        ids[i, 0], ids[i, 1:1 + n_img] = BOS, IMAGE_TOKEN
        ids[i, 1 + n_img:end] = torch.randint(5, 200, (n,), generator=g)
        labels[i, end - 8:end] = ids[i, end - 8:end]
        attn[i, :end] = 1
    v = config.vision_config
    return {"input_ids": ids, "attention_mask": attn, "labels": labels,
            "pixel_values": torch.randn(len(lengths), 3, v.image_size, v.image_size, generator=g),
            "sample_index": torch.tensor([5, 0, 9])}


def train_cfg(**kw):
    from seedvlm.train.config import TrainConfig

    return TrainConfig(beta_min_history=1, kl_chunk_size=5, **kw)


def run_step(model, batch, cfg, **kw) -> tuple[dict, dict[str, torch.Tensor]]:
    """One seed_step + backward in train mode (same dropout masks for every call): (outputs, gradients)."""
    from seedvlm import seed as S
    from seedvlm.train.step import seed_batch
    from seedvlm.train.teacher import LiveTeacher

    sched = S.BetaSchedule(kind="quantile", values=cfg.beta_values, quantiles=cfg.beta_quantiles, min_history=1)
    sched.update(torch.tensor([-3.0, -2.0, -1.0, -0.5]))
    model.train()
    model.zero_grad(set_to_none=True)
    torch.manual_seed(0)
    teacher = LiveTeacher(model, cfg, reuse_features=kw.get("reuse_features", cfg.reuse_image_features))
    out = seed_batch(model, batch, cfg, teacher=teacher, step=3, beta_schedule=sched)
    out.loss.backward()
    return out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_same_step(a, b, exact: bool = True) -> None:
    (out_a, grads_a), (out_b, grads_b) = a, b
    tol = dict(atol=0.0, rtol=0.0) if exact else dict(atol=1e-5, rtol=1e-4)
    for key in ("loss", "student", "purified", "beta", "conf"):
        torch.testing.assert_close(getattr(out_a, key), getattr(out_b, key), **tol, msg=key)
    for key in ("clean", "noisy"):
        torch.testing.assert_close(getattr(out_a.teacher, key), getattr(out_b.teacher, key), **tol, msg=key)
    assert grads_a.keys() == grads_b.keys() and grads_a
    for n in grads_a:
        torch.testing.assert_close(grads_a[n], grads_b[n], **tol, msg=n)


# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("feature_layer", [-2, -1])
def test_reused_image_features_give_the_same_step(feature_layer):
    from seedvlm.models.llava import image_features

    model, cfg = tiny_llava(feature_layer), train_cfg()
    batch = make_batch(model)
    reuse = run_step(model, batch, cfg)  # the default: cfg.reuse_image_features
    again = run_step(model, batch, cfg, reuse_features=False)
    assert reuse[0].reused_features is True and again[0].reused_features is False
    assert all("lora_" in n for n in reuse[1])
    assert_same_step(reuse, again)  # fp32 on the CPU: bit for bit
    off = run_step(model, batch, train_cfg(reuse_image_features=False))
    assert off[0].reused_features is False
    assert_same_step(off, again)
    # the features are the model's own: the selected hidden state, CLS dropped, projected
    with torch.no_grad():
        feats = image_features(model, batch["pixel_values"])
        tower = model.get_base_model().model.vision_tower(batch["pixel_values"], output_hidden_states=True)
        want = model.get_base_model().model.multi_modal_projector(tower.hidden_states[feature_layer][:, 1:])
    assert len(feats) == 3 and torch.equal(torch.stack(feats), want)


def test_the_vision_tower_runs_once_per_step_with_reuse(monkeypatch):
    from transformers.models.clip import modeling_clip

    model, cfg = tiny_llava(), train_cfg()
    batch = make_batch(model)
    images = []
    real = modeling_clip.CLIPVisionModel.forward

    def spy(self, pixel_values=None, *a, **k):
        images.append(int(pixel_values.shape[0]))
        return real(self, pixel_values, *a, **k)

    monkeypatch.setattr(modeling_clip.CLIPVisionModel, "forward", spy)
    run_step(model, batch, cfg)
    assert images == [6]  # the teacher's [clean; noisy]; the student takes the clean half
    images.clear()
    run_step(model, batch, cfg, reuse_features=False)
    assert images == [6, 3]


@pytest.mark.parametrize("part", ["multi_modal_projector", "vision_tower"])
def test_trainable_projector_or_tower_falls_back(part):
    from seedvlm.models.llava import reuse_blocker

    model, cfg = tiny_llava(), train_cfg()
    batch = make_batch(model)
    assert reuse_blocker(model) is None
    module = getattr(model.get_base_model().model, part)
    for p in module.parameters():
        p.requires_grad_(True)
    assert part in reuse_blocker(model)
    auto = run_step(model, batch, cfg)  # reuse requested (the default), refused
    assert auto[0].reused_features is False
    assert any(part in n for n in auto[1])  # the student's own features: gradients reach the module
    assert_same_step(auto, run_step(model, batch, cfg, reuse_features=False))


def test_dropout_in_the_tower_falls_back():
    from seedvlm.models.llava import reuse_blocker

    model = tiny_llava()
    model.get_base_model().model.vision_tower.config.attention_dropout = 0.1
    assert "dropout" in reuse_blocker(model)


@pytest.mark.parametrize("reuse", [True, False])
def test_compiled_lm_and_vision_layers_keep_the_step(reuse, monkeypatch):
    import seedvlm.train.step as step_mod
    import seedvlm.train.teacher as teacher_mod

    model, cfg = tiny_llava(), train_cfg()
    batch = make_batch(model)
    eager = run_step(model, batch, cfg, reuse_features=reuse)
    embeds = []
    real = step_mod.embed_images

    def spy(*a, **k):
        out = real(*a, **k)
        embeds.append(out.requires_grad)
        return out

    monkeypatch.setattr(teacher_mod, "embed_images", spy)  # the teacher's inputs
    monkeypatch.setattr(step_mod, "embed_images", spy)  # the student's
    n = step_mod.compile_layers(model, vision=True, backend="eager")
    assert n == 4
    assert all(layer._compiled_call_impl is not None
               for layer in step_mod.decoder_layers(model) + step_mod.vision_layers(model))
    torch._dynamo.reset()
    try:
        compiled = run_step(model, batch, cfg, reuse_features=reuse)
    finally:
        torch._dynamo.reset()
    assert_same_step(compiled, eager, exact=False)
    # enable_input_require_grads: the student's inputs_embeds (built outside the model) require grad as in the
    # pixel path, so its first layer sees the same kind of input as the others; the teacher's (no grad) do not
    assert embeds == ([False, True] if reuse else [])


def test_compile_options_from_the_config():
    from seedvlm.config import config_from_dict
    from seedvlm.errors import SeedVLMError
    from seedvlm.train.config import TrainConfig
    from seedvlm.train.step import compile_options

    assert compile_options(TrainConfig()) == {"vision": False, "dynamic": True}  # the defaults
    for value, want in ((True, True), (False, False), ("auto", None), ("FALSE", False)):
        cfg = config_from_dict(TrainConfig, {"torch_compile_dynamic": value, "torch_compile_vision": False})
        assert compile_options(cfg) == {"vision": False, "dynamic": want}
    with pytest.raises(SeedVLMError, match="torch_compile_dynamic"):
        TrainConfig(torch_compile_dynamic="sometimes")


# Run from the benchmarks' folder, as `python benchmarks/train_step.py` runs (its sibling modules importable, the
# package installed): every compiled case's levers on, then off; prints what it saw as one JSON line.
LEVER_CHECK = """
import json

import torch

import train_step
from seedvlm.train.config import TrainConfig
from seedvlm.train.lora import apply_lora
from seedvlm.train.step import decoder_layers, vision_layers

model = apply_lora(train_step.build_model("tiny", torch.device("cpu"), torch.float32, "sdpa")[0], r=8, alpha=16,
                   dropout=0.05)
base, cfg, seen = model.get_base_model(), TrainConfig(), {}


def state():
    return {"lm": [layer._compiled_call_impl is not None for layer in decoder_layers(model)],
            "vision": [layer._compiled_call_impl is not None for layer in vision_layers(model)],
            "hooks": bool(getattr(base, "_require_grads_hooks", None))}


for case in ("seed-compile", "seed-compile-vision", "seed-compile-static", "seed-compile-auto",
             "seed-compile-noreuse"):
    kw = train_step.case_compile_kwargs(case, cfg, "eager")
    train_step.set_levers(model, case, True, {"compile_kwargs": kw})
    on = state()
    train_step.set_levers(model, case, False, {"compile_kwargs": kw})
    seen[case] = {"on": on, "off": state()}
dynamic = {c: train_step.case_compile_kwargs(c, cfg)["dynamic"]
           for c in ("seed-compile", "seed-compile-static", "seed-compile-auto")}
print(json.dumps({"cases": seen, "dynamic": dynamic, "noreuse": train_step.case_compile_kwargs("seed-noreuse", cfg)}))
"""


def test_benchmark_lever_cases_switch_everything_off(tmp_path):
    import json
    import subprocess

    check = subprocess.run([sys.executable, "-c", LEVER_CHECK], cwd=ROOT / "benchmarks", capture_output=True,
                           text=True, timeout=300)
    assert check.returncode == 0, check.stderr[-3000:]
    seen = json.loads(check.stdout.strip().splitlines()[-1])
    for case, st in seen["cases"].items():
        assert st["on"]["lm"] and all(st["on"]["lm"]), case
        assert st["on"]["vision"] and all(v == (case == "seed-compile-vision") for v in st["on"]["vision"]), case
        assert st["on"]["hooks"], case
        assert not any(st["off"]["lm"] + st["off"]["vision"]) and not st["off"]["hooks"], case
    assert seen["dynamic"] == {"seed-compile": True, "seed-compile-static": False, "seed-compile-auto": None}
    assert seen["noreuse"] is None
    out = tmp_path / "bench.json"
    bench = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "train_step.py"), "--preset", "tiny", "--device",
                            "cpu", "--threads", "1", "--batches", "1", "--steps", "1", "--warmup", "0", "--cases",
                            "seed,seed-noreuse,seed-compile-vision,seed-compile-static", "--compile-backend", "eager",
                            "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert bench.returncode == 0, bench.stderr[-3000:]
    rows = {r["case"]: r for r in json.loads(out.read_text())["results"]}
    assert rows["seed"]["reused_features"] is True and rows["seed-noreuse"]["reused_features"] is False
    assert rows["seed-compile-vision"]["compile"] == {"vision": True, "dynamic": True, "backend": "eager"}
    assert rows["seed-compile-static"]["compile"]["dynamic"] is False
    assert not any(r.get("recompile_limit_hit") for r in rows.values())
