"""The README's real-checkpoint workflow, end to end, on a real-format llava-hf LLaVA-1.5 folder with real-format
LLaVA-Instruct (train2017 names) and COCO val2014 files: prepare, train (SEED and SFT), teach, eval POPE and CHAIR
(both prompt styles, greedy and contrastive), compare, merge, demo -- and the refusals that keep it honest."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from PIL import Image

from real_llava_folder import build_real_llava, require_tokenizer

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
TRAIN_IDS = (74, 139, 285)   # train2017 images the instructions use
VAL_IDS = (724, 776, 785)    # val2014 images held out for evaluation; 74 is both (train2017 holds most of val2014)
CATEGORIES = [{"id": 1, "name": "person"}, {"id": 17, "name": "cat"}, {"id": 18, "name": "dog"},
              {"id": 47, "name": "cup"}, {"id": 62, "name": "chair"}, {"id": 67, "name": "dining table"},
              {"id": 3, "name": "car"}, {"id": 2, "name": "bicycle"}]


def _coco_files(root: Path) -> dict:
    train, val = root / "coco" / "train2017", root / "coco" / "val2014"
    train.mkdir(parents=True)
    val.mkdir(parents=True)
    for k, i in enumerate(TRAIN_IDS):
        Image.new("RGB", (640, 480 - 60 * k), (30 * k, 120, 200)).save(train / f"{i:012d}.jpg")
    images, anns, caps = [], [], []
    for k, i in enumerate((74, *VAL_IDS)):
        name = f"COCO_val2014_{i:012d}.jpg"
        Image.new("RGB", (1024, 180 + 40 * k), (200, 40 * k, 90)).save(val / name)
        images.append({"id": i, "file_name": name, "width": 1024, "height": 180 + 40 * k})
        for c in CATEGORIES[2 * k: 2 * k + 3]:
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": c["id"], "bbox": [0, 0, 10, 10],
                         "area": 100.0, "iscrowd": 0})
        caps.append({"id": len(caps) + 1, "image_id": i, "caption": "A dog sits near a chair."})
    ann = root / "coco" / "annotations"
    ann.mkdir()
    (ann / "instances_val2014.json").write_text(json.dumps({"images": images, "annotations": anns,
                                                            "categories": CATEGORIES}))
    (ann / "captions_val2014.json").write_text(json.dumps({"images": images, "annotations": caps}))
    held_out = {"images": images[1:], "annotations": [a for a in anns if a["image_id"] != 74],
                "categories": CATEGORIES}
    (ann / "instances_heldout.json").write_text(json.dumps(held_out))
    instruct = [
        {"id": f"{TRAIN_IDS[0]:012d}", "image": f"{TRAIN_IDS[0]:012d}.jpg", "conversations": [
            {"from": "human", "value": "<image>\nWhat is the dog doing?"},
            {"from": "gpt", "value": "The dog is lying on the floor next to a chair."},
            {"from": "human", "value": "What else can you tell about her?"},
            {"from": "gpt", "value": "She looks relaxed."}]},
        {"id": f"{TRAIN_IDS[1]:012d}", "image": f"{TRAIN_IDS[1]:012d}.jpg", "conversations": [
            {"from": "human", "value": "Describe the image in detail.\n<image>"},
            {"from": "gpt", "value": "A cat sits on a dining table in a bright kitchen."}]},
        {"id": f"{TRAIN_IDS[2]:012d}", "image": f"{TRAIN_IDS[2]:012d}.jpg", "conversations": [
            {"from": "human", "value": "<image>\nIs there a chair?"}, {"from": "gpt", "value": "Yes."},
            {"from": "human", "value": "What color is it?"}, {"from": "gpt", "value": "It is brown."}]},
    ]
    (root / "llava_instruct_150k.json").write_text(json.dumps(instruct))
    return {"train": train, "val": val, "ann": ann, "instruct": root / "llava_instruct_150k.json"}


def _ok(argv: list) -> None:
    from seedvlm.cli import main

    assert main([str(a) for a in argv]) == 0, argv


def _refused(argv: list, capsys, match: str) -> None:
    from seedvlm.cli import main

    capsys.readouterr()
    assert main([str(a) for a in argv]) != 0, argv
    err = capsys.readouterr().err
    assert match in err and "Traceback" not in err, err


def test_real_checkpoint_workflow(tmp_path, capsys, caplog):
    require_tokenizer()
    model = build_real_llava(tmp_path / "models" / "llava-1.5-7b-hf")
    f = _coco_files(tmp_path)
    runs = tmp_path / "runs"
    data = runs / "train.json"

    _ok(["prepare", "--input", f["instruct"], "--images", f["train"], "--out", data])
    records = json.loads(data.read_text())
    assert len(records) == 3 and records[0]["followups"] == [{"prompt": "What else can you tell about her?",
                                                              "answer": "She looks relaxed."}]
    _refused(["prepare", "--input", f["instruct"], "--images", f["val"], "--out", runs / "x.json"], capsys,
             f"{f['val'] / '000000000074.jpg'} not found")

    common = ["--model", model, "--data", data, "--images", f["train"], "--max-steps", 2, "--lora-r", 4,
              "--per-device-batch-size", 2, "--report-to", "none", "--save-steps", 100]
    _ok(["teach", "--config", CONFIGS / "seed_tiny.yaml", *common[:6], "--prompt-style", "llava-1.5",
         "--out", runs / "teacher"])
    _ok(["train", "--config", CONFIGS / "seed_tiny.yaml", *common, "--prompt-style", "llava-1.5",
         "--teacher-cache", runs / "teacher", "--output-dir", runs / "seed"])
    _ok(["train", "--config", CONFIGS / "sft_tiny.yaml", *common, "--output-dir", runs / "sft"])
    _refused(["train", "--config", CONFIGS / "seed_tiny.yaml", *common, "--teacher-cache", runs / "teacher",
              "--output-dir", runs / "seed_hf"], capsys, "made with prompt_style llava-1.5")
    manifest = runs / "seed" / "train_manifest.json"
    assert json.loads(manifest.read_text())["coco_ids"] == list(TRAIN_IDS)

    # POPE/CHAIR on val2014: COCO_val2014_000000000074.jpg is train2017's 000000000074.jpg
    _refused(["pope", "build", "--instances", f["ann"] / "instances_val2014.json", "--out", runs / "pope_all",
              "--n-images", 4, "--train-manifest", manifest], capsys,
             "1 evaluation images appear in the training manifest")
    _ok(["pope", "build", "--instances", f["ann"] / "instances_heldout.json", "--out", runs / "pope",
         "--n-images", 3, "--train-manifest", manifest])
    chair_args = ["--instances", f["ann"] / "instances_val2014.json", "--references",
                  f["ann"] / "captions_val2014.json", "--images", f["val"], "--max-new-tokens", 6,
                  "--batch-size", 2, "--train-manifest", manifest, "--device", "cpu"]
    _refused(["eval", "chair", "--model", model, "--n", 4, *chair_args, "--out", runs / "x"], capsys,
             "COCO_val2014_000000000074.jpg (= trained 000000000074.jpg)")
    (runs / "ids.json").write_text(json.dumps(list(VAL_IDS)))
    held = ["--image-ids", runs / "ids.json"]
    for name, adapter, style in (("base", None, "hf"), ("seed", runs / "seed" / "adapter", "llava-1.5"),
                                 ("sft", runs / "sft" / "adapter", "hf")):
        extra = ["--adapter", adapter] if adapter else []
        for decoding in ("greedy", "contrastive"):
            out = runs / "eval" / f"{name}_{decoding}"
            _ok(["eval", "pope", "--model", model, *extra, "--questions", runs / "pope", "--images", f["val"],
                 "--limit", 2, "--batch-size", 2, "--train-manifest", manifest, "--prompt-style", style,
                 "--decoding", decoding, "--device", "cpu", "--out", out / "pope"])
            _ok(["eval", "chair", "--model", model, *extra, *chair_args, *held, "--prompt-style", style,
                 "--decoding", decoding, "--out", out / "chair"])
            for task in ("pope", "chair"):
                results = json.loads((out / task / "results.json").read_text())
                assert results["config"]["prompt_protocol"]["prompt_style"] == style
                assert results["leakage"]["overlap"] == 0
    prompt = json.loads((runs / "eval" / "seed_greedy" / "pope" / "results.json").read_text())
    prompt = prompt["config"]["prompt_protocol"]
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # the SEED adapter was trained with llava-1.5
        _ok(["eval", "pope", "--model", model, "--adapter", runs / "seed" / "adapter", "--questions", runs / "pope",
             "--images", f["val"], "--limit", 1, "--device", "cpu", "--out", runs / "eval" / "seed_hf"])
    assert "was trained with prompt style llava-1.5, and is used here with hf" in caplog.text
    assert prompt["pope_suffix"] == "\nAnswer the question using a single word or phrase."
    assert prompt["image_preprocessing"].startswith("pad to square")

    _ok(["compare", "--run", f"base={runs / 'eval' / 'base_greedy'}", "--run",
         f"seed={runs / 'eval' / 'seed_greedy'}", "--run", f"sft={runs / 'eval' / 'sft_greedy'}",
         "--out", runs / "report"])
    assert any((runs / "report").iterdir())

    merged = runs / "seed_merged"
    _ok(["merge", "--model", model, "--adapter", runs / "seed" / "adapter", "--out", merged])
    _refused(["eval", "pope", "--model", merged, "--adapter", runs / "seed" / "adapter", "--questions", runs / "pope",
              "--images", f["val"], "--limit", 1, "--device", "cpu", "--out", runs / "x"], capsys, "already holds")
    _ok(["demo", "--model", model, "--adapter", runs / "seed" / "adapter", "--image",
         f["val"] / "COCO_val2014_000000000724.jpg", "--max-new-tokens", 4, "--prompt-style", "llava-1.5",
         "--device", "cpu"])
