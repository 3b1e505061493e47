"""Family options on the command line (Qwen's --min-pixels / --max-pixels): declared once in `Family.options`,
taken by train and eval, recorded in train_config.json and results.json, applied to the token accounting, and
refused in one line (exit 2, before any weights load) for a family that does not take them."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from PIL import Image

from seedvlm.cli import main
from seedvlm.models.families import FAMILIES

pytestmark = pytest.mark.usefixtures("one_thread")

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SIZES = [(40, 60), (90, 30)]   # (height, width) of the two training images
PIXELS = ["--min-pixels", str(112 * 112), "--max-pixels", str(168 * 168)]


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict:
    from seedvlm.models.family_folders import build_qwen_folder, build_smolvlm_folder

    root = tmp_path_factory.mktemp("families")
    llava = root / "llava"   # what the refusal reads of a LLaVA-1.5 folder: its config.json
    llava.mkdir()
    (llava / "config.json").write_text(json.dumps({"model_type": "llava",
                                                   "architectures": ["LlavaForConditionalGeneration"]}))
    return {"qwen": build_qwen_folder(root / "qwen"), "smolvlm": build_smolvlm_folder(root / "smolvlm"),
            "llava": llava}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("data")
    (root / "images").mkdir()
    records = []
    for i, (h, w) in enumerate(SIZES):
        Image.new("RGB", (w, h), (40 * i, 90, 160)).save(root / "images" / f"im{i}.png")
        records.append({"id": f"r{i}", "image": f"im{i}.png", "prompt": "Is there a cat in the image?",
                        "answer": "Yes, there is a cat."})
    (root / "train.json").write_text(json.dumps(records))
    return {"data": root / "train.json", "images": root / "images"}


def _config(model: Path, data: dict, *extra: str):
    from seedvlm.config import load_config
    from seedvlm.train.config import SeedConfig

    return load_config(SeedConfig, CONFIGS / "seed_tiny.yaml", ["--model", str(model), "--data", str(data["data"]),
                                                                "--images", str(data["images"]), *extra])


def test_every_family_option_is_a_train_option_and_a_cli_option():
    import argparse

    from seedvlm.models.families.options import add_family_options, all_options
    from seedvlm.train.config import SeedConfig

    names = {name for fam in FAMILIES.values() for name in fam.options}
    assert {"min_pixels", "max_pixels"} <= names == set(all_options())
    assert names <= {f.name for f in dataclasses.fields(SeedConfig)}
    parser = argparse.ArgumentParser()
    add_family_options(parser)
    args = parser.parse_args(["--max-pixels", "4096", "--do-image-splitting", "false"])
    assert (args.max_pixels, args.min_pixels, args.do_image_splitting) == (4096, None, False)
    with pytest.raises(SystemExit):
        parser.parse_args(["--max-pixels", "0"])


@pytest.mark.parametrize("name, family, options", [("qwen", "qwen2_vl", PIXELS),
                                                    ("smolvlm", "smolvlm", ["--do-image-splitting", "false"])])
def test_token_accounting_follows_the_family_options(folders, data, name, family, options):
    """Each training example's length, computed before training, is its tokenized length under the options."""
    from seedvlm.data.family_data import load_family_train_data
    from seedvlm.models.families import get_family

    fam = get_family(family)
    _, default, _ = load_family_train_data(_config(folders[name], data), fam)
    _, dataset, _ = load_family_train_data(_config(folders[name], data, *options), fam)
    for i in range(len(dataset)):
        item = dataset[i]   # the processor's own encoding of the record, pixels included
        assert dataset.lengths[i] == item["input_ids"].numel() == len(item["labels"])
        if family == "qwen2_vl":  # the resized area lies within [min_pixels, max_pixels]
            _, h, w = item["image_grid_thw"][0].tolist()
            assert 112 * 112 <= h * w * 14 * 14 <= 168 * 168
        else:  # one global view, no tiles
            assert item["pixel_values"].shape[1] == 1
    # the options changed the counts: Qwen's folder caps images at 112 x 112 px, SmolVLM's splits them
    grows = family == "qwen2_vl"
    assert all((n > d) if grows else (n < d) for n, d in zip(dataset.lengths, default.lengths))


def _refused(argv: list, capsys, *words: str) -> str:
    capsys.readouterr()
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert all(w in err for w in words), err
    return err


@pytest.mark.parametrize("name, family", [("smolvlm", "smolvlm"), ("llava", "llava")])
def test_pixels_for_a_family_without_them_refused_before_weights_load(folders, data, tmp_path, capsys, monkeypatch,
                                                                      name, family):
    from seedvlm.models import loading
    from seedvlm.models.families import loading as family_loading

    def no_weights(*a, **k):
        raise AssertionError("weights loaded before the options were checked")

    monkeypatch.setattr(family_loading, "load_family_model", no_weights)
    monkeypatch.setattr(loading, "load_for_inference", no_weights, raising=False)
    model = folders[name]
    _refused(["train", "--config", CONFIGS / "seed_tiny.yaml", "--model", model, "--data", data["data"], "--images",
              data["images"], "--output-dir", tmp_path / "run", "--max-pixels", 4096], capsys,
             "'max_pixels'", f"{family} models")
    assert not (tmp_path / "run").exists()
    if name == "llava":  # the teacher cache reads the data as training does (families: through their processor)
        _refused(["teach", "--config", CONFIGS / "seed_tiny.yaml", "--model", model, "--data", data["data"],
                  "--images", data["images"], "--out", tmp_path / "cache", "--max-pixels", 4096], capsys,
                 "'max_pixels'", "llava models")
    (tmp_path / "q.json").write_text("[]")
    for task, args in (("pope", ["--questions", data["data"], "--images", data["images"]]),
                       ("chair", ["--instances", tmp_path / "q.json", "--references", tmp_path / "q.json",
                                  "--images", data["images"]]),
                       ("mme", ["--questions", data["images"]])):
        _refused(["eval", task, "--model", model, *args, "--out", tmp_path / task, "--min-pixels", 4096], capsys,
                 "'min_pixels'", f"{family} models")


def test_train_and_eval_record_and_apply_the_pixels(folders, data, tmp_path):
    out = tmp_path / "seed"
    assert main([str(a) for a in ["train", "--config", CONFIGS / "seed_tiny.yaml", "--model", folders["qwen"],
                                  "--data", data["data"], "--images", data["images"], "--max-steps", 1,
                                  "--lora-r", 2, "--per-device-batch-size", 2, "--report-to", "none",
                                  "--output-dir", out, *PIXELS]]) == 0
    cfg = json.loads((out / "train_config.json").read_text())
    assert (cfg["min_pixels"], cfg["max_pixels"]) == (112 * 112, 168 * 168)

    questions = tmp_path / "pope"
    questions.mkdir()
    (questions / "random.jsonl").write_text(json.dumps({"question_id": 1, "image": "im1.png", "label": "yes",
                                                        "text": "Is there a cat in the image?"}) + "\n")
    for name, extra in (("default", []), ("pixels", PIXELS)):
        assert main([str(a) for a in ["eval", "pope", "--model", folders["qwen"], "--adapter", out / "adapter",
                                      "--questions", questions, "--images", data["images"], "--device", "cpu",
                                      "--max-new-tokens", 2, "--out", tmp_path / name, *extra]]) == 0
    results = {n: json.loads((tmp_path / n / "results.json").read_text()) for n in ("default", "pixels")}
    assert results["pixels"]["config"]["max_pixels"] == 168 * 168 and results["default"]["config"]["max_pixels"] is None
    # more image tokens, another first-token distribution: the option reached the processor
    p_yes = [json.loads((tmp_path / n / "samples.jsonl").read_text())["p_yes"] for n in ("default", "pixels")]
    assert p_yes[0] != p_yes[1]
