"""A real-format llava-hf LLaVA-1.5 folder (real Llama-2 tokenizer, llava-hf processor and template, hub tensor names,
sharded fp16 safetensors; tiny random weights): tokenization, prompt styles, older folders, fingerprints, leakage."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from real_llava_folder import build_real_llava, require_tokenizer
from seedvlm.errors import SeedVLMError

pytestmark = pytest.mark.usefixtures("one_thread")

SYSTEM = ("A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, "
          "detailed, and polite answers to the human's questions.")


@pytest.fixture(scope="module")
def llava_dir(tmp_path_factory):
    require_tokenizer()
    return build_real_llava(tmp_path_factory.mktemp("hub") / "llava-1.5-7b-hf")


@pytest.fixture(scope="module")
def processor(llava_dir):
    from seedvlm.models import load_processor

    return load_processor(llava_dir)


def _image_dir(root: Path, names=("000000000074.jpg",), size=(400, 300)) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for k, n in enumerate(names):
        Image.new("RGB", size, (40 * k % 255, 100, 200)).save(root / n)
    return root


MULTI = {"id": "000000000074", "image": "000000000074.jpg", "prompt": "What is the dog doing?",
         "answer": "The dog is lying on the floor.",
         "followups": [{"prompt": "What else can you tell about her?", "answer": "She looks relaxed and sleepy."}]}


@pytest.mark.parametrize("style, text", [
    ("hf", "USER: <image>\nWhat is the dog doing? ASSISTANT: The dog is lying on the floor.</s>USER: What else can "
           "you tell about her? ASSISTANT: She looks relaxed and sleepy.</s>"),
    ("llava-1.5", SYSTEM + " USER: <image>\nWhat is the dog doing? ASSISTANT: The dog is lying on the floor.</s>"
                  "USER: What else can you tell about her? ASSISTANT: She looks relaxed and sleepy.</s>"),
])
def test_multi_turn_example_is_the_tokenization_of_the_whole_conversation(processor, tmp_path, style, text):
    from seedvlm.data.dataset import InstructDataset

    ds = InstructDataset([MULTI], processor, _image_dir(tmp_path / "img"), 4096, prompt_style=style)
    item = ds[0]
    tok = processor.tokenizer
    want = tok(text).input_ids
    assert want[0] == tok.bos_token_id and want.count(32000) == 1
    p = want.index(32000)
    want = want[:p] + [32000] * 576 + want[p + 1:]
    assert item["input_ids"].tolist() == want
    assert ds.lengths[0] == len(want)
    labels = item["labels"]
    supervised = labels[labels != -100].tolist()
    # every answer and its </s> is supervised, nothing else
    answers = [tok(a, add_special_tokens=False).input_ids for a in (MULTI["answer"], MULTI["followups"][0]["answer"])]
    assert supervised == answers[0] + [tok.eos_token_id] + answers[1] + [tok.eos_token_id]
    assert (labels[labels != -100] == item["input_ids"][labels != -100]).all()


def test_records_prepared_for_a_style_refuse_another(processor, tmp_path):
    from seedvlm.data.dataset import InstructDataset

    images = _image_dir(tmp_path / "img")
    InstructDataset([dict(MULTI, prompt_style="llava-1.5")], processor, images, 4096, prompt_style="llava-1.5")
    with pytest.raises(SeedVLMError, match="prepared for prompt style 'llava-1.5'.*pass --prompt-style llava-1.5"):
        InstructDataset([dict(MULTI, prompt_style="llava-1.5")], processor, images, 4096, source="train.json")


def test_seed_covers_every_supervised_turn(processor, tmp_path):
    """SEED's answer rows (label != -100, shifted) hold both answers' tokens."""
    from seedvlm.data.dataset import Collator, InstructDataset
    from seedvlm.seed import answer_positions

    ds = InstructDataset([MULTI], processor, _image_dir(tmp_path / "img"), 4096)
    batch = Collator(processor.tokenizer.pad_token_id)([ds[0]])
    mask, targets = answer_positions(batch["labels"])
    first = processor.tokenizer("The dog is lying on the floor.", add_special_tokens=False).input_ids
    second = processor.tokenizer("She looks relaxed and sleepy.", add_special_tokens=False).input_ids
    assert int(mask.sum()) == len(first) + len(second) + 2
    spans = torch.nonzero(mask[0]).flatten().tolist()
    assert spans[-1] - spans[0] + 1 > int(mask.sum())  # two separate spans, the second question between them
    assert targets.tolist()[-len(second) - 1:] == second + [2]


def test_llava_style_pads_to_square_with_the_clip_mean(processor):
    from seedvlm.generation import encode_prompts

    wide = Image.new("RGB", (1024, 180), (255, 0, 0))
    hf = encode_prompts(processor, [wide], ["Q"], prompt_style="hf")
    llava = encode_prompts(processor, [wide], ["Q"], prompt_style="llava-1.5")
    # hf center-crops: every pixel is the red image; llava-1.5 pads: the top rows are the mean colour (~0 normalized)
    assert hf["pixel_values"][0, 0, :5].min() > 1.5
    assert llava["pixel_values"][0, :, :10].abs().max() < 0.02
    assert llava["pixel_values"][0, 0, 168].min() > 1.5  # the image itself, in the middle
    assert processor.tokenizer.decode(llava["input_ids"][0, 1:25]).startswith("A chat between a curious human")


def _older(llava_dir: Path, tmp_path: Path, edit) -> Path:
    d = tmp_path / "old"
    shutil.copytree(llava_dir, d)
    edit(d)
    return d


def _drop(*names):
    return lambda d: [(d / n).unlink() for n in names]


def _set_key(key, value=None):
    def edit(d):
        cfg = json.loads((d / "processor_config.json").read_text())
        cfg.pop(key) if value is None else cfg.__setitem__(key, value)
        (d / "processor_config.json").write_text(json.dumps(cfg))
    return edit


@pytest.mark.parametrize("edit", [_drop("processor_config.json", "chat_template.json"),
                                  _set_key("num_additional_image_tokens")])
def test_older_folders_get_their_processor_settings_from_config_json(llava_dir, tmp_path, edit):
    from seedvlm.data.dataset import count_image_tokens
    from seedvlm.generation import encode_prompts
    from seedvlm.models import load_processor

    proc = load_processor(_older(llava_dir, tmp_path, edit))
    assert count_image_tokens(proc) == 576
    batch = encode_prompts(proc, [Image.new("RGB", (50, 40))], ["Is there a dog?"])
    assert int((batch["input_ids"] == 32000).sum()) == 576
    assert proc.tokenizer.decode(batch["input_ids"][0][batch["input_ids"][0] != 32000]) == \
        "<s> USER: \nIs there a dog? ASSISTANT:"


@pytest.mark.parametrize("edit, match", [
    (_set_key("num_additional_image_tokens", 0), r"processor_config\.json: the processor makes 575 image tokens per "
                                                 r"image, the vision tower gives 576"),
    (_set_key("patch_size", 16), r"processor_config\.json: the processor makes 441 image tokens"),
])
def test_a_processor_that_disagrees_with_the_tower_is_one_clear_line(llava_dir, tmp_path, edit, match):
    from seedvlm.models import load_processor

    with pytest.raises(SeedVLMError, match=match) as e:
        load_processor(_older(llava_dir, tmp_path, edit))
    assert "\n" not in str(e.value)


# ------------------------------------------------------------------------------------------- fingerprints
def _lora(model, seed: int):
    """A LoRA on q/k/v/o with random non-zero B (as after training)."""
    from seedvlm.train.lora import apply_lora

    peft_model = apply_lora(model, r=4, alpha=8, dropout=0.0)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return peft_model


def test_fingerprint_tells_base_merged_and_other_fine_tunes_apart(llava_dir):
    from seedvlm.models import load_model
    from seedvlm.models.fingerprint import base_fingerprint, legacy_fingerprint

    base = load_model(llava_dir, device="cpu")
    fp = base_fingerprint(base)
    assert base_fingerprint(load_model(llava_dir, device="cpu", dtype=torch.bfloat16)) == fp  # dtype-independent
    merged = _lora(load_model(llava_dir, device="cpu"), 1).merge_and_unload()
    other = _lora(load_model(llava_dir, device="cpu"), 2).merge_and_unload()
    assert torch.equal(merged.get_input_embeddings().weight, base.get_input_embeddings().weight)
    assert legacy_fingerprint(merged) == legacy_fingerprint(base)  # the old hash was blind to the update
    assert len({fp, base_fingerprint(merged), base_fingerprint(other)}) == 3


def _save_adapter(llava_dir: Path, out: Path, fingerprint: str | None) -> Path:
    from seedvlm.models import load_model

    peft_model = _lora(load_model(llava_dir, device="cpu"), 1)
    peft_model.save_pretrained(out)
    if fingerprint is not None:
        (out / "seedvlm_base.json").write_text(json.dumps({"fingerprint": fingerprint}))
    return out


def test_adapter_refuses_its_merged_model_and_unverified_adapters(llava_dir, tmp_path, caplog):
    from seedvlm.models import load_for_inference, load_model
    from seedvlm.models.fingerprint import base_fingerprint, legacy_fingerprint
    from seedvlm.train.lora import merge

    fp = base_fingerprint(load_model(llava_dir, device="cpu"))
    adapter = _save_adapter(llava_dir, tmp_path / "adapter", fp)
    model, _ = load_for_inference(llava_dir, adapter=adapter, device="cpu")
    merged = merge(llava_dir, adapter, tmp_path / "merged")
    with pytest.raises(SeedVLMError, match="already holds adapter"):
        load_for_inference(merged, adapter=adapter, device="cpu")
    (merged / "seedvlm_merge.json").unlink()  # without the merge record, the weights alone give it away
    with pytest.raises(SeedVLMError, match="trained on a different base model .* adapter already merged in"):
        load_for_inference(merged, adapter=adapter, device="cpu")
    bare = _save_adapter(llava_dir, tmp_path / "bare", None)
    with pytest.raises(SeedVLMError, match="has no seedvlm_base.json.*--allow-unverified-adapter"):
        load_for_inference(llava_dir, adapter=bare, device="cpu")
    with caplog.at_level(logging.WARNING):
        load_for_inference(llava_dir, adapter=bare, device="cpu", allow_unverified_adapter=True)
    assert "could not check that this model is the base it was trained on" in caplog.text
    old = _save_adapter(llava_dir, tmp_path / "old", legacy_fingerprint(load_model(llava_dir, device="cpu")))
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        load_for_inference(llava_dir, adapter=old, device="cpu")  # an older seedvlm adapter still loads
    assert "older embeddings-only fingerprint" in caplog.text


# ------------------------------------------------------------------------------------------- leakage guard
def test_coco_ids_from_every_naming_scheme():
    from seedvlm.data.image_ids import coco_id

    for name in ("000000000074.jpg", "COCO_val2014_000000000074.jpg", "COCO_train2014_000000000074.jpg",
                 "train2017/000000000074.jpg", "coco/val2014/COCO_val2014_000000000074.jpg"):
        assert coco_id(name) == 74, name
    for name in ("train_000074.png", "74.jpg", "COCO_val2014_74.jpg", "000000000074.jpg.txt"):
        assert coco_id(name) is None, name


def test_leakage_guard_matches_train2017_against_val2014_and_hashes_the_rest(tmp_path):
    from seedvlm.data.image_ids import image_identity
    from seedvlm.eval.runner import check_leakage

    train = _image_dir(tmp_path / "train2017", ["000000000074.jpg", "000000000139.jpg", "000000000285.jpg",
                                                "000000000632.jpg"])
    Image.new("RGB", (20, 20), (1, 2, 3)).save(train / "own_photo.png")
    names = sorted(p.name for p in train.iterdir())
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"images": names, **image_identity(names, train)}))
    val = tmp_path / "val2014"
    val.mkdir()
    evaluated = ["COCO_val2014_000000000074.jpg", "COCO_val2014_000000000139.jpg", "COCO_val2014_000000000285.jpg",
                 "COCO_val2014_000000000632.jpg", "COCO_val2014_000000000724.jpg", "renamed.png"]
    shutil.copy(train / "own_photo.png", val / "renamed.png")  # same bytes under another name
    with pytest.raises(SeedVLMError) as e:
        check_leakage(evaluated, manifest, images_dir=val)
    msg = str(e.value)
    assert msg.startswith("5 evaluation images appear in the training manifest")
    assert msg.count("(= trained") == 3 and "COCO_val2014_000000000074.jpg (= trained 000000000074.jpg)" in msg
    leak = check_leakage(evaluated, manifest, allow_overlap=True, images_dir=val)
    assert leak["overlap"] == 5
    assert check_leakage(["COCO_val2014_000000000724.jpg"], manifest, images_dir=val)["overlap"] == 0
    old = tmp_path / "old_manifest.json"  # written before ids were recorded: COCO ids still parsed from the names
    old.write_text(json.dumps({"images": names}))
    with pytest.raises(SeedVLMError, match="^4 evaluation images appear"):
        check_leakage(evaluated, old, images_dir=val)
