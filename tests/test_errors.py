"""Bad input is one line naming the file and the problem (exit code 2), found before any model loads: oversized and
unreadable images, non-UTF-8 text, empty files (the same words in every command), values outside their range,
prompts with several <image> tags, duplicate ids, adapters without their base fingerprint."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
from PIL import Image

from seedvlm.cli import main
from seedvlm.errors import SeedVLMError


def one_line_error(capsys, command: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if line.startswith(f"seedvlm {command}: error:")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def small_bomb_limit(monkeypatch):
    """PIL's decompression-bomb limit lowered to 2000 pixels, so a 64x64 image stands for a 20000x20000 one."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)


@pytest.fixture
def no_model(monkeypatch):
    from seedvlm.eval import runner

    monkeypatch.setattr(runner, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))


# ------------------------------------------------------------------------------------------ images
@pytest.mark.parametrize("size", [64, 50])  # over twice the limit (PIL raises), and between once and twice (warns)
def test_oversized_image_is_refused(tmp_path, small_bomb_limit, size):
    from seedvlm.io import check_image, open_image

    Image.new("RGB", (size, size)).save(tmp_path / "big.png")
    for f in (check_image, open_image):
        with pytest.raises(SeedVLMError, match=str(tmp_path / "big.png")):
            f(tmp_path / "big.png")


def _pope_questions(tmp_path: Path, image: str) -> Path:
    q = tmp_path / "q.jsonl"
    q.write_text(json.dumps({"question_id": 1, "image": image, "text": "Is there a cat?", "label": "yes"}) + "\n")
    return q


@pytest.mark.parametrize("kind", ["bomb", "garbage"])
def test_eval_refuses_bad_images_before_the_model_loads(tmp_path, capsys, small_bomb_limit, no_model, kind):
    if kind == "bomb":
        Image.new("RGB", (64, 64)).save(tmp_path / "img.png")
    else:
        (tmp_path / "img.png").write_bytes(b"not a png")
    rc = main(["eval", "pope", "--model", str(tmp_path / "m"), "--questions", str(_pope_questions(tmp_path, "img.png")),
               "--images", str(tmp_path), "--out", str(tmp_path / "out")])
    line = one_line_error(capsys, "eval")
    assert rc == 2 and "question q/1" in line and "img.png" in line  # ids are qualified by their split


def test_training_data_with_an_oversized_image_fails_before_training(tmp_path, small_bomb_limit):
    from seedvlm.data.dataset import InstructDataset
    from seedvlm.models import load_processor
    from train_env import build_env

    env = build_env(tmp_path, n=2)
    Image.new("RGB", (64, 64)).save(env["images"] / "img1.png")
    with pytest.raises(SeedVLMError, match=r"record 'r1'.*img1.png"):
        InstructDataset(env["records"], load_processor(env["model"]), env["images"], 128, source="train.json")


def test_demo_refuses_an_oversized_image(tmp_path, capsys, small_bomb_limit):
    Image.new("RGB", (64, 64)).save(tmp_path / "big.png")
    rc = main(["demo", "--model", str(tmp_path / "m"), "--image", str(tmp_path / "big.png")])
    assert rc == 2 and "big.png" in one_line_error(capsys, "demo")


# ------------------------------------------------------------------------------------------ text files
def test_answers_that_are_not_utf8(tmp_path, capsys):
    q = _pope_questions(tmp_path, "a.png")
    a = tmp_path / "answers.jsonl"
    a.write_bytes(json.dumps({"question_id": 0, "text": "no"}).encode() + b"\n"
                  + b'{"question_id": 1, "text": "\xff\xfe yes"}\n')
    rc = main(["score", "pope", "--questions", str(q), "--answers", str(a), "--out", str(tmp_path / "out")])
    line = one_line_error(capsys, "score")
    assert rc == 2 and str(a) in line and "line 2" in line and "not UTF-8" in line


def test_an_empty_file_reads_the_same_in_every_command(tmp_path, capsys):
    empty = tmp_path / "empty.json"
    empty.write_text("")
    assert main(["prepare", "--input", str(empty), "--images", str(tmp_path), "--out", str(tmp_path / "t.json")]) == 2
    prepare_line = one_line_error(capsys, "prepare")
    assert main(["score", "chair", "--captions", str(empty), "--instances", str(empty), "--references", str(empty),
                 "--out", str(tmp_path / "o")]) == 2
    score_line = one_line_error(capsys, "score")
    assert prepare_line.endswith(f"{empty} is empty") and score_line.endswith(f"{empty} is empty")


# ------------------------------------------------------------------------------------------ values and ids
@pytest.mark.parametrize("argv, words", [
    (["demo", "--max-new-tokens", "0"], "--max-new-tokens: must be >= 1, got 0"),
    (["demo", "--beta", "-1"], "--beta: must be >= 0, got -1"),
    (["demo", "--alpha", "0"], "--alpha: must be in (0, 1], got 0"),
    (["demo", "--alpha", "1.5"], "--alpha: must be in (0, 1], got 1.5"),
    (["demo", "--plausibility", "1"], "--plausibility: must be in [0, 1), got 1"),
    (["readiness", "--world", "w", "--n", "0"], "--n: must be >= 1, got 0"),
    (["eval", "chair", "--instances", "i", "--references", "r", "--images", "d", "--out", "o", "--n", "0"],
     "--n: must be >= 1, got 0"),
    (["eval", "pope", "--questions", "q", "--images", "d", "--out", "o", "--batch-size", "-2"],
     "--batch-size: must be >= 1, got -2"),
])
def test_values_outside_their_range_are_refused_when_parsed(capsys, argv, words):
    extra = ["--model", "m"] + (["--image", "x.png"] if argv[0] == "demo" else [])
    with pytest.raises(SystemExit) as e:
        main(argv + extra)
    assert e.value.code == 2 and words in capsys.readouterr().err


@pytest.mark.parametrize("option, value, words", [("--beta", "-1", "--beta must be >= 0, got -1"),
                                                  ("--alpha", "2", "--alpha must be in (0, 1], got 2")])
def test_contrastive_eval_refuses_values_out_of_range(tmp_path, capsys, no_model, option, value, words):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    rc = main(["eval", "pope", "--model", "m", "--questions", str(_pope_questions(tmp_path, "a.png")),
               "--images", str(tmp_path), "--out", str(tmp_path / "o"), "--decoding", "contrastive", option, value])
    assert rc == 2 and words in one_line_error(capsys, "eval")


def test_a_prompt_with_two_image_tags_is_refused(tmp_path, capsys):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    data = [{"id": "two-tags", "image": "a.png", "conversations": [
        {"from": "human", "value": "<image>\nCompare <image> with this."}, {"from": "gpt", "value": "Same."}]}]
    (tmp_path / "in.json").write_text(json.dumps(data))
    rc = main(["prepare", "--input", str(tmp_path / "in.json"), "--images", str(tmp_path), "--out",
               str(tmp_path / "t.json")])
    line = one_line_error(capsys, "prepare")
    assert rc == 2 and "'two-tags'" in line and "2 <image> tags" in line
    assert not (tmp_path / "t.json").exists()


def _instances(path: Path) -> Path:
    path.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.png"}, {"id": 2, "file_name": "b.png"}],
                                "annotations": [{"image_id": 1, "category_id": 1}],
                                "categories": [{"id": 1, "name": "cat"}]}))
    return path


def test_duplicate_image_ids_in_captions_are_refused(tmp_path, capsys):
    inst = _instances(tmp_path / "inst.json")
    caps = tmp_path / "caps.jsonl"
    caps.write_text("".join(json.dumps({"image_id": i, "caption": "A cat and a dog."}) + "\n" for i in (1, 1, 1, 2)))
    refs = tmp_path / "refs.json"
    refs.write_text(json.dumps({"annotations": [{"image_id": 1, "caption": "a cat."}]}))
    rc = main(["score", "chair", "--captions", str(caps), "--instances", str(inst), "--references", str(refs),
               "--out", str(tmp_path / "o")])
    line = one_line_error(capsys, "score")
    assert rc == 2 and "duplicate image_id" in line and str(caps) in line


def test_duplicate_image_ids_in_instances_are_refused(tmp_path):
    from seedvlm.eval.chair import CHAIR

    data = json.loads(_instances(tmp_path / "inst.json").read_text())
    data["images"].append({"id": 2, "file_name": "c.png"})
    with pytest.raises(SeedVLMError, match="duplicate image ids, e.g. 2"):
        CHAIR(data)


# ------------------------------------------------------------------------------------------ adapters
@pytest.fixture(scope="module")
def adapter_env(tmp_path_factory):
    from peft import LoraConfig, get_peft_model

    from seedvlm.models import base_fingerprint, load_model
    from train_env import build_env

    root = tmp_path_factory.mktemp("adapter")
    env = build_env(root, n=1)
    model = load_model(env["model"], device="cpu")
    fp = base_fingerprint(model)
    lora = LoraConfig(r=2, lora_alpha=4, target_modules=r".*language_model.*\.(q_proj|v_proj)")
    get_peft_model(model, lora).save_pretrained(root / "adapter")
    return env, root / "adapter", fp


def test_an_adapter_without_its_base_fingerprint_is_refused(adapter_env):
    from seedvlm.models import attach_adapter, load_model

    env, adapter, fp = adapter_env
    (adapter / "seedvlm_base.json").unlink(missing_ok=True)
    with pytest.raises(SeedVLMError, match=f"has no seedvlm_base.json.*{fp}"):
        attach_adapter(load_model(env["model"], device="cpu"), adapter)


def test_loading_an_adapter_warns_nothing(adapter_env):
    from seedvlm.models import attach_adapter, load_model

    env, adapter, fp = adapter_env
    (adapter / "seedvlm_base.json").write_text(json.dumps({"fingerprint": fp}))
    model = load_model(env["model"], device="cpu")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        attach_adapter(model, adapter)
    assert not [w for w in caught if issubclass(w.category, (FutureWarning, DeprecationWarning))], \
        [str(w.message) for w in caught]


@pytest.mark.parametrize("device, words", [("foo", "is not a torch device"), ("cuda:64", "cuda")])
def test_a_device_that_is_not_there_is_one_line(tiny_model_dir, capsys, tmp_path, device, words):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    rc = main(["demo", "--model", str(tiny_model_dir), "--image", str(tmp_path / "a.png"), "--device", device])
    line = one_line_error(capsys, "demo")
    assert rc == 2 and f"--device {device}" in line.replace("'", "") and words in line


@pytest.mark.parametrize("option, value, words", [("--vision-steps", "-1", "--vision-steps must be >= 0, got -1"),
                                                  ("--text-lr", "0", "--text-lr must be > 0"),
                                                  ("--batch-size", "0", "--batch-size must be >= 1, got 0"),
                                                  ("--warmup-fraction", "2", "must be in [0, 1]")])
def test_pretrain_refuses_values_out_of_range_before_anything(tmp_path, capsys, option, value, words):
    rc = main(["pretrain", "--world", str(tmp_path / "none"), "--out", str(tmp_path / "o"), option, value])
    assert rc == 2 and words in one_line_error(capsys, "pretrain")


def test_pope_build_refuses_duplicate_image_ids(tmp_path, capsys):
    inst = _instances(tmp_path / "inst.json")
    data = json.loads(inst.read_text())
    data["images"].append({"id": 1, "file_name": "c.png"})
    inst.write_text(json.dumps(data))
    rc = main(["pope", "build", "--instances", str(inst), "--out", str(tmp_path / "p")])
    assert rc == 2 and "duplicate image ids, e.g. 1" in one_line_error(capsys, "pope")


def test_a_question_with_an_image_tag_is_refused_with_its_id(tmp_path, capsys, no_model):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    q = tmp_path / "q.jsonl"
    q.write_text(json.dumps({"question_id": 7, "image": "a.png", "text": "<image>\nIs there a cat?",
                             "label": "yes"}) + "\n")
    rc = main(["eval", "pope", "--model", "m", "--questions", str(q), "--images", str(tmp_path), "--out",
               str(tmp_path / "o")])
    line = one_line_error(capsys, "eval")
    assert rc == 2 and "question 7 holds <image>" in line and str(q) in line
    assert main(["demo", "--model", "m", "--image", str(tmp_path / "a.png"), "--question", "<image> What?"]) == 2
    assert "--question holds <image>" in one_line_error(capsys, "demo")
