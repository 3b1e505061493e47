"""`seedvlm train` (SFT and SEED) on tiny hub-like Qwen2.5-VL and LLaVA-NeXT folders (CPU, a few steps each): the
family's examples and collator, LoRA on the language model's attention projections only, the teacher's clean+noisy
2B forward with the noise on the pixel inputs only, and an adapter written with finite losses."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from PIL import Image

from train_env import NAMES, SIZES, build_family_env, family_folder as _folder, read_metrics

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return build_family_env(tmp_path_factory.mktemp("family_train"))


@pytest.mark.parametrize("name", NAMES)
def test_family_examples_and_collator(folders, name):
    from seedvlm.data.family_data import FamilyCollator, load_family_train_data
    from seedvlm.models.families import detect_family
    from seedvlm.train.config import SeedConfig

    model, data, images = _folder(folders, name)
    family = detect_family(model)
    cfg = SeedConfig(model=str(model), data=str(data), images=str(images), output_dir="unused", report_to="none")
    proc, ds, _ = load_family_train_data(cfg, family)
    eot = proc.tokenizer.convert_tokens_to_ids(family.end_of_turn(proc))
    items = [ds[i] for i in range(len(ds))]
    for i, item in enumerate(items):
        assert item["input_ids"].numel() == ds.lengths[i]  # exact length known before any pixel was processed
        labelled = item["labels"][item["labels"] != -100].tolist()
        assert labelled.count(eot) == (2 if i % 2 else 1) and labelled[-1] == eot  # answers + end of turn
    assert len(set(ds.lengths)) > 1
    batch = FamilyCollator(family, proc.tokenizer.pad_token_id)(items[:2])
    n = max(ds.lengths[:2])
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape == (2, n)
    assert batch["attention_mask"].sum(1).tolist() == ds.lengths[:2]
    if family.flattened_patches:  # patch rows of both images, one grid row per image
        grids = batch["image_grid_thw"]
        assert grids.shape == (2, 3) and batch["pixel_values"].shape[0] == int(grids.prod(-1).sum())
        assert batch["mm_token_type_ids"].shape == (2, n)
    else:  # tiles padded with zeros to the larger count
        tiles = [items[k]["pixel_values"].shape[1] for k in range(2)]
        assert batch["pixel_values"].shape[:2] == (2, max(tiles))
        if "image_sizes" in family.metadata_keys:  # one (height, width) per image
            assert batch["image_sizes"].tolist() == [list(s) for s in SIZES[:2]]
    with torch.no_grad():  # the batch is what the model takes
        from seedvlm.models.families.loading import load_family_model

        m = load_family_model(model, family=family)
        from seedvlm.train.family_run import model_inputs

        out = m(**model_inputs(family, batch, torch.float32), labels=batch["labels"])
    assert torch.isfinite(out.loss)


@pytest.mark.parametrize("name", NAMES)
def test_train_sft_then_seed_writes_adapters(folders, name, tmp_path, monkeypatch):
    import seedvlm.train.family_teacher as fr
    from seedvlm.cli import main
    from seedvlm.models.families import detect_family

    model, data, images = _folder(folders, name)
    family = detect_family(model)
    teacher_calls = []
    real_perturb = fr.perturb_pixel_inputs

    def spy(fam, inputs, kind, noise, **kw):
        out = real_perturb(fam, inputs, kind, noise, **kw)
        teacher_calls.append({k: (out[k] is inputs[k]) for k in inputs})
        return out

    monkeypatch.setattr(fr, "perturb_pixel_inputs", spy)
    common = ["--model", str(model), "--data", str(data), "--images", str(images), "--max-steps", "2",
              "--per-device-train-batch-size", "2", "--lora-r", "4", "--lora-alpha", "8", "--learning-rate", "1e-3",
              "--logging-steps", "1", "--report-to", "none", "--beta-min-history", "2"]
    for method in ("sft", "seed"):
        out = tmp_path / method
        rc = main(["train", "--config", str(ROOT / "configs" / f"{method}_tiny.yaml"), *common,
                   "--output-dir", str(out)])
        assert rc == 0
        adapter_cfg = json.loads((out / "adapter" / "adapter_config.json").read_text())
        assert (out / "adapter" / "adapter_model.safetensors").is_file()
        losses = [r["loss"] for r in read_metrics(out) if "loss" in r]
        assert losses and all(math.isfinite(x) for x in losses)
        assert json.loads((out / "train_config.json").read_text())["family"] == family.name
        from safetensors.torch import load_file

        keys = list(load_file(out / "adapter" / "adapter_model.safetensors"))
        assert keys and all(f".{family.language_model}." in k for k in keys)
        assert not any("vision" in k or "visual" in k or "projector" in k or "merger" in k for k in keys)
        assert family.language_model in adapter_cfg["target_modules"]
    # SEED's teacher perturbed the pixel inputs only: every other input is the clean batch's own tensor
    assert teacher_calls
    for same in teacher_calls:
        assert not same["pixel_values"] and all(v for k, v in same.items() if k != "pixel_values")


def test_llava_1_5_folders_keep_their_loader(tmp_path):
    from seedvlm.models.families.registry import model_family

    from seedvlm.models.family_folders import build_qwen_folder

    assert model_family(build_qwen_folder(tmp_path / "q")).name == "qwen2_vl"
    (tmp_path / "l").mkdir()
    (tmp_path / "l" / "config.json").write_text(json.dumps({"model_type": "llava"}))
    assert model_family(tmp_path / "l") is None and model_family(tmp_path / "missing") is None


def test_family_refusals_are_one_line_before_weights(folders, tmp_path, capsys):
    from seedvlm.cli import main

    model, data, images = _folder(folders, "qwen2.5-vl")
    base = ["train", "--config", str(ROOT / "configs" / "seed_tiny.yaml"), "--model", str(model), "--data",
            str(data), "--images", str(images), "--report-to", "none"]
    assert main([*base, "--noise", "mask", "--output-dir", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'mask'" in err[0] and "qwen2_vl" in err[0]
    assert not (tmp_path / "a").exists()
    assert main([*base, "--prompt-style", "llava-1.5", "--output-dir", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "prompt_style" in err[0] and not (tmp_path / "b").exists()


@pytest.mark.parametrize("name", NAMES)
def test_eval_pope_greedy_with_adapter(folders, name, tmp_path, monkeypatch):
    import seedvlm.family_generation as fg
    from seedvlm.cli import main
    from seedvlm.models.families import detect_family
    from seedvlm.models.families.loading import load_family_processor

    model, data, images = _folder(folders, name)
    assert main(["train", "--config", str(ROOT / "configs" / "sft_tiny.yaml"), "--model", str(model), "--data",
                 str(data), "--images", str(images), "--max-steps", "1", "--per-device-train-batch-size", "2",
                 "--lora-r", "4", "--report-to", "none", "--output-dir", str(tmp_path / "sft")]) == 0
    questions = tmp_path / "random.jsonl"
    questions.write_text("".join(json.dumps({"question_id": i, "image": f"img{i}.png", "label": ["yes", "no"][i % 2],
                                             "text": "Is there a cat in the image?"}) + "\n" for i in range(3)))
    family = detect_family(model)
    proc = load_family_processor(model, family=family)
    eot = proc.tokenizer.convert_tokens_to_ids(family.end_of_turn(proc))
    seen = []
    real = fg.generate_new_tokens

    def spy(m, batch, gen_kwargs, **kw):
        seen.append((batch, gen_kwargs))
        return real(m, batch, gen_kwargs, **kw)

    monkeypatch.setattr(fg, "generate_new_tokens", spy)
    out = tmp_path / "pope"
    rc = main(["eval", "pope", "--model", str(model), "--adapter", str(tmp_path / "sft" / "adapter"),
               "--questions", str(questions), "--images", str(images), "--out", str(out), "--max-new-tokens", "3",
               "--batch-size", "2", "--device", "cpu"])
    assert rc == 0
    results = json.loads((out / "results.json").read_text())
    assert results["adapter"] == str(tmp_path / "sft" / "adapter")
    assert [len(b["input_ids"]) for b, _ in seen] == [2, 1]  # batches of 2, then 1
    for batch, gen_kwargs in seen:
        assert gen_kwargs["eos_token_id"][0] == eot and not gen_kwargs["do_sample"]
        for key in (*family.pixel_keys, *family.metadata_keys):
            assert key in batch
    # the last batch (one question, no padding) is the family's chat rendering of the question with the generation
    # prompt, its image expanded by the processor
    prompt = fg.family_prompts(family, proc, json.loads((model / "config.json").read_text()),
                               ["Is there a cat in the image?"])
    with Image.open(images / "img2.png") as im:
        want = proc(text=prompt, images=[[im.convert("RGB")]], return_tensors="pt")["input_ids"]
    assert torch.equal(seen[-1][0]["input_ids"], want)
    assert prompt[0].rstrip().lower().rstrip(":").endswith("assistant")
