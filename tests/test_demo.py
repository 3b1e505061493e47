"""`seedvlm demo`: the CLI on a tiny saved model + adapter + instances file, the HTML page (escaping, columns,
marks) and the object marking, all without a browser."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from PIL import Image

from seedvlm.demo import (
    Answer,
    DemoResult,
    ObjectChecker,
    Row,
    locate_mentions,
    render_html,
    render_terminal,
)

CATEGORIES = ["cat", "dog", "fork", "knife", "dining table", "couch", "hot dog", "person"]


def write_instances(path, files_and_objects):
    images, anns = [], []
    for i, (name, objects) in enumerate(files_and_objects, 1):
        images.append({"id": i, "file_name": name, "width": 32, "height": 32})
        for obj in objects:
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": CATEGORIES.index(obj) + 1,
                         "bbox": [0, 0, 8, 8], "area": 64, "iscrowd": 0})
    cats = [{"id": k + 1, "name": n} for k, n in enumerate(CATEGORIES)]
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return path


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """A saved 2-layer random LLaVA, a LoRA adapter for it, two images and an instances file."""
    from peft import LoraConfig, get_peft_model

    from seedvlm.models import (base_fingerprint, build_processor, build_word_tokenizer, preset_config, random_model,
                                save_model)

    root = tmp_path_factory.mktemp("demo")
    tok = build_word_tokenizer("a the cat dog fork knife table sofa on near with and".split())
    cfg = preset_config("tiny", vocab_size=len(tok), image_token_index=tok.convert_tokens_to_ids("<image>"),
                        pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    v, t = cfg.vision_config, cfg.text_config
    v.image_size, v.patch_size, v.hidden_size, v.projection_dim, v.intermediate_size = 32, 8, 32, 32, 64
    v.num_hidden_layers, v.num_attention_heads = 2, 2
    t.hidden_size, t.intermediate_size, t.num_hidden_layers = 64, 128, 2
    model = random_model(cfg, seed=0)
    save_model(model, build_processor(tok, cfg), root / "model")
    fingerprint = base_fingerprint(model)
    lora = LoraConfig(r=4, lora_alpha=8, init_lora_weights=False,
                      target_modules=r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj)")
    fingerprint = base_fingerprint(model)
    get_peft_model(model, lora).save_pretrained(root / "adapter")
    (root / "adapter" / "seedvlm_base.json").write_text(json.dumps({"fingerprint": fingerprint}))
    rng = np.random.default_rng(0)
    for name in ("kitchen.png", "street.png"):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(root / name)
    write_instances(root / "instances_val.json", [("images/val/kitchen.png", ["cat", "dining table"]),
                                                  ("images/val/street.png", ["dog"])])
    return root


def test_demo_cli_prints_three_blocks_and_writes_html(assets, tmp_path, capsys):
    from seedvlm.cli import main

    out = tmp_path / "demo.html"
    rc = main(["demo", "--model", str(assets / "model"), "--adapter", str(assets / "adapter"),
               "--image", str(assets / "kitchen.png"), "--image", str(assets / "street.png"),
               "--instances", str(assets / "instances_val.json"), "--max-new-tokens", "6", "--html", str(out),
               "--color", "never"])
    assert rc == 0
    text = capsys.readouterr().out
    for label in ("base greedy", "SEED greedy", "SEED + contrastive (b=1)"):
        assert text.count(f"[{label}") == 2, label
    assert text.count("=== image") == 2
    assert "annotated: cat, dining table" in text and "annotated: dog" in text
    assert text.count("not in the image:") == 6
    assert "\x1b[" not in text
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>") and page.count("data:image/png;base64,") == 2
    tbody = page.split("<tbody>")[1].split("</tbody>")[0]
    assert tbody.count("<tr>") == 2 and tbody.count('<p class="answer">') == 6
    assert re.findall(r"<th>([^<]*)</th>", page) == ["base greedy", "SEED greedy", "SEED + contrastive (b=1)"]


def test_demo_without_adapter_has_two_columns(assets, capsys):
    from seedvlm.cli import main

    assert main(["demo", "--model", str(assets / "model"), "--image", str(assets / "street.png"),
                 "--max-new-tokens", "4", "--color", "never"]) == 0
    text = capsys.readouterr().out
    assert "[base greedy" in text and "[base + contrastive (b=1)]" in text and "SEED" not in text


def test_demo_missing_image_is_a_clear_error(assets, capsys):
    from seedvlm.cli import main

    assert main(["demo", "--model", str(assets / "model"), "--image", str(assets / "nope.png")]) == 2
    assert "image not found" in capsys.readouterr().err


def crafted_result(checker=None) -> DemoResult:
    img = Image.new("RGB", (8, 8), (200, 30, 30))
    texts = ['<script>alert("x")</script> a cat & two hot dogs on a sofa.', "a cat on a table.", "a cat."]
    answers = []
    for label, text in zip(["base greedy", "SEED greedy", "SEED + contrastive (b=1)"], texts):
        a = Answer(label, text)
        if checker is not None:
            a.hallucinated, a.spans = checker.check(1, text)
        answers.append(a)
    return DemoResult(["base greedy", "SEED greedy", "SEED + contrastive (b=1)"],
                      [Row("images/<b>x</b>.png", img, ["cat", "dining table"], answers)],
                      {"model": "m<i>", "question": "what's <here>?", "object_matcher": "CHAIR"})


def test_html_escapes_model_text_and_marks_hallucinations(tmp_path):
    checker = ObjectChecker.from_instances(write_instances(tmp_path / "i.json", [("x.png", ["cat", "dining table"])]))
    page = render_html(crafted_result(checker))
    assert "<script>" not in page and "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert "<b>x</b>" not in page and "<i>" not in page and "&lt;here&gt;" in page
    marks = re.findall(r'<mark class="halluc"[^>]*>([^<]*)</mark>', page)
    assert marks[0] == "object"  # the legend
    assert marks[1:] == ["hot dogs", "sofa"]  # "hot dogs" is one hot dog (no dog), sofa = couch; cat/table are there
    assert 'not in the image: hot dog, couch' in page
    assert page.count("no object outside the annotations") == 2


def test_terminal_output_marks_and_neutralizes_control_characters(tmp_path):
    checker = ObjectChecker.from_instances(write_instances(tmp_path / "i.json", [("x.png", ["cat", "dining table"])]))
    result = crafted_result(checker)
    result.rows[0].answers[1].text = "a cat \x1b[2J on a table."
    plain = render_terminal(result, color=False)
    assert "\x1b" not in plain and "not in the image: hot dog, couch" in plain
    colored = render_terminal(result, color=True)
    assert "\x1b[1;31mhot dogs\x1b[0m" in colored and "\x1b[2J" not in colored


def test_locate_mentions_offsets_with_chair(tmp_path):
    write_instances(tmp_path / "i.json", [("x.png", ["cat"])])
    text = "Two Hot Dogs, a knife and three knives near the sofa."
    checker = ObjectChecker.from_instances(tmp_path / "i.json")
    assert checker.image_id("/any/where/x.png") == 1 and checker.image_id("y.png") is None
    spans = locate_mentions(checker.matcher, text)
    assert [(text[s:e], c) for s, e, c in spans] == [("Hot Dogs", "hot dog"), ("knife", "knife"),
                                                       ("knives", "knife"), ("sofa", "couch")]


def test_demo_static_cache_prints_the_same(assets, capsys, monkeypatch):
    from seedvlm.cli import main
    from seedvlm.decode import static

    monkeypatch.setattr(static, "COMPILE_BY_DEFAULT", False)  # compiling is tested in test_fast_eval.py
    args = ["demo", "--model", str(assets / "model"), "--image", str(assets / "street.png"), "--max-new-tokens", "4",
            "--color", "never"]
    assert main(args) == 0
    plain = capsys.readouterr().out
    assert main(args + ["--static-cache"]) == 0
    assert capsys.readouterr().out == plain
