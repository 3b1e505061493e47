"""The eval pipeline with a fake answerer (no model): eval -> results.json/samples.jsonl, re-scoring gives the same
numbers, the leakage guard, bad inputs, and the compare report."""

import json
import re
import shutil

import pytest
from PIL import Image

from seedvlm.cli import main
from seedvlm.eval import runner

CATS = ["person", "dog", "cat", "car", "fork", "knife", "cup", "bowl", "apple", "umbrella"]
IMAGES = {1: ["person", "dog", "car"], 2: ["person", "dog", "car", "cat"], 3: ["person", "fork", "knife", "cup"],
          4: ["fork", "knife", "cup"], 5: ["fork", "bowl", "apple"]}
CAPTIONS = {1: "A man walking his dog past a car.", 2: "A woman with a dog and a cat near a car and a bus.",
            3: "A person at a table with a fork and a knife.", 4: "A fork, a knife and a cup on a table.",
            5: "An apple in a bowl next to a fork and a banana."}


def _image_id(img):
    return img.getpixel((0, 0))[0] // 40


def fake_generate(model, processor, images, prompts, **kwargs):
    """Answers from the truth table: 'knife' always yes (a hallucination), 'cup' left empty (unparsed)."""
    assert model == "fake-model" and kwargs["decoding"] == "greedy" and kwargs["progress"] is False
    out = []
    for img, prompt in zip(images, prompts):
        i = _image_id(img)
        m = re.match(r"Is there an? (.+?) in the image\?", prompt)
        if not m:
            out.append(CAPTIONS[i])
        elif m.group(1) == "cup":
            out.append("  ")
        elif m.group(1) == "knife" or m.group(1) in IMAGES[i]:
            out.append("Yes, there is.")
        else:
            out.append("No, there is not.")
    return out


@pytest.fixture(autouse=True)
def fake_model(monkeypatch):
    monkeypatch.setattr(runner, "load_model", lambda path, adapter=None, device=None: ("fake-model", "proc"))
    monkeypatch.setattr(runner, "generate", fake_generate)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    (root / "images").mkdir()
    cat_id = {c: k + 1 for k, c in enumerate(CATS)}
    anns = []
    for i, cats in IMAGES.items():
        Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(root / "images" / f"img{i}.png")
        anns += [{"id": len(anns) + 1, "image_id": i, "category_id": cat_id[c], "bbox": [0, 0, 1, 1]} for c in cats]
    inst = {"images": [{"id": i, "file_name": f"img{i}.png"} for i in IMAGES], "annotations": anns,
            "categories": [{"id": v, "name": k} for k, v in cat_id.items()]}
    (root / "instances.json").write_text(json.dumps(inst))
    refs = {"annotations": [{"id": 1, "image_id": 4, "caption": "Cutlery and a cup on a wooden table."}]}
    (root / "references.json").write_text(json.dumps(refs))
    assert main(["pope", "build", "--instances", str(root / "instances.json"), "--out", str(root / "pope")]) == 0
    return root


def _eval_pope(world, out, *extra):
    return main(["eval", "pope", "--model", "m", "--questions", str(world / "pope"), "--images",
                 str(world / "images"), "--out", str(out), "--batch-size", "4", *extra])


def _eval_chair(world, out, *extra):
    return main(["eval", "chair", "--model", "m", "--instances", str(world / "instances.json"), "--references",
                 str(world / "references.json"), "--images", str(world / "images"), "--n", "4", "--out", str(out),
                 *extra])


def _metrics(results):
    drop = {"config", "git", "git_dirty", "versions", "time", "model", "adapter", "leakage"}
    return {k: v for k, v in results.items() if k not in drop}


def test_eval_pope_and_rescore(world, tmp_path, capsys):
    assert _eval_pope(world, tmp_path / "run") == 0
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert res["task"] == "pope" and res["splits"] == ["random", "popular", "adversarial"]
    for split in res["splits"] + ["mean"]:
        m = res[split]
        assert m["n"] == (90 if split == "mean" else 30)
        assert all(0.0 <= m[k] <= 1.0 for k in ("accuracy", "precision", "recall", "f1", "yes_ratio"))
    assert res["config"]["max_new_tokens"] == 8 and res["config"]["questions"] == str(world / "pope")
    assert set(res["versions"]) >= {"python", "torch", "transformers", "peft", "seedvlm"}
    assert "git" in res and res["model"] == "m" and res["time"]
    assert res["questions_meta"]["seed"] == 0 and len(res["questions_meta"]["sha256"]) == 64
    samples = [json.loads(line) for line in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 90
    empty = {split: sum(s["split"] == split and "cup" in s["question"] for s in samples) for split in res["splits"]}
    assert res["parser"] == "official" and all(res[split]["unparsed"] == 0 for split in res["splits"])
    assert res["parser_disagreements"] == sum(empty.values()) > 0  # the fake leaves every cup question empty
    assert all(s["parsed"] == "yes" for s in samples if "cup" in s["question"])  # officially, empty is yes
    s = samples[0]
    assert set(s) >= {"question_id", "split", "image", "question", "text", "parsed", "label", "correct"}
    assert "| random |" in capsys.readouterr().out

    # re-scoring eval's own samples gives identical numbers
    assert main(["score", "pope", "--questions", str(world / "pope"), "--answers",
                 str(tmp_path / "run" / "samples.jsonl"), "--out", str(tmp_path / "rescored")]) == 0
    again = json.loads((tmp_path / "rescored" / "results.json").read_text())
    assert _metrics(again) == _metrics(res)
    assert (tmp_path / "rescored" / "samples.jsonl").read_text() == (tmp_path / "run" / "samples.jsonl").read_text()
    assert main(["score", "pope", "--questions", str(world / "pope"), "--answers",
                 str(tmp_path / "run" / "samples.jsonl"), "--parser", "strict", "--out", str(tmp_path / "strict")]) == 0
    strict = json.loads((tmp_path / "strict" / "results.json").read_text())
    assert strict["parser"] == "strict" and strict["parser_disagreements"] == res["parser_disagreements"]
    assert all(strict[split]["unparsed"] == n for split, n in empty.items())


def test_eval_chair_and_rescore(world, tmp_path):
    assert _eval_chair(world, tmp_path / "chair") == 0
    res = json.loads((tmp_path / "chair" / "results.json").read_text())
    assert res["task"] == "chair" and res["n"] == 4 and len(res["image_ids"]) == 4
    assert res["config"]["max_new_tokens"] == 512 and res["config"]["prompt"] == "Please describe this image in detail."
    samples = [json.loads(line) for line in (tmp_path / "chair" / "samples.jsonl").read_text().splitlines()]
    assert {"image_id", "caption", "mentioned", "hallucinated", "ground_truth"} <= set(samples[0])
    by_id = {s["image_id"]: s for s in samples}
    assert res["protocol"] == "official"
    if 2 in by_id:
        assert by_id[2]["hallucinated"] == []  # officially "bus" singularizes to "bu" and is never counted
    if 4 in by_id:
        assert by_id[4]["hallucinated"] == []  # the table comes from image 4's reference caption
    assert main(["score", "chair", "--captions", str(tmp_path / "chair" / "samples.jsonl"), "--instances",
                 str(world / "instances.json"), "--references", str(world / "references.json"), "--out",
                 str(tmp_path / "rescored")]) == 0
    again = json.loads((tmp_path / "rescored" / "results.json").read_text())
    assert _metrics(again) == _metrics(res)
    assert main(["score", "chair", "--captions", str(tmp_path / "chair" / "samples.jsonl"), "--instances",
                 str(world / "instances.json"), "--references", str(world / "references.json"), "--protocol",
                 "corrected", "--out", str(tmp_path / "corrected")]) == 0
    corrected = [json.loads(line) for line in (tmp_path / "corrected" / "samples.jsonl").read_text().splitlines()]
    assert {s["image_id"]: s["hallucinated"] for s in corrected}.get(2, ["bus"]) == ["bus"]
    # the saved image list reproduces the selection
    assert _eval_chair(world, tmp_path / "chair2", "--image-ids", str(tmp_path / "chair" / "results.json")) == 0
    assert json.loads((tmp_path / "chair2" / "results.json").read_text())["image_ids"] == res["image_ids"]


def test_leakage_guard(world, tmp_path, capsys):
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"images": ["train/img1.png", "other.png"]}))
    assert _eval_pope(world, tmp_path / "leak", "--train-manifest", str(manifest)) == 2
    err = capsys.readouterr().err
    assert "1 evaluation images appear in the training manifest" in err and "img1.png" in err
    assert not (tmp_path / "leak" / "results.json").exists()
    assert _eval_pope(world, tmp_path / "leak", "--train-manifest", str(manifest), "--allow-overlap") == 0
    assert json.loads((tmp_path / "leak" / "results.json").read_text())["leakage"]["overlap"] == 1
    assert _eval_chair(world, tmp_path / "cleak", "--n", "5", "--train-manifest", str(manifest)) == 2
    assert main(["pope", "build", "--instances", str(world / "instances.json"), "--out", str(tmp_path / "p"),
                 "--train-manifest", str(manifest)]) == 2
    assert main(["pope", "build", "--instances", str(world / "instances.json"), "--out", str(tmp_path / "p"),
                 "--train-manifest", str(manifest), "--allow-overlap"]) == 0
    assert json.loads((tmp_path / "p" / "meta.json").read_text())["leakage"]["overlap"] == 1


def test_bad_inputs(world, tmp_path, capsys):
    q = tmp_path / "q.jsonl"
    q.write_text(json.dumps({"question_id": "x1", "image": "missing.png", "text": "Is there a dog in the image?",
                             "label": "yes"}) + "\n")
    assert main(["eval", "pope", "--model", "m", "--questions", str(q), "--images", str(world / "images"),
                 "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "missing.png" in err and "x1" in err
    q.write_text(json.dumps({"question_id": "x2", "image": "../instances.json", "text": "Is there a dog?",
                             "label": "yes"}) + "\n")
    assert main(["eval", "pope", "--model", "m", "--questions", str(q), "--images", str(world / "images"),
                 "--out", str(tmp_path / "o")]) == 2
    assert "escapes" in capsys.readouterr().err
    q.write_text('{"question_id": 1, "image": "img1.png"\n')
    assert main(["score", "pope", "--questions", str(q), "--answers", str(q), "--out", str(tmp_path / "o")]) == 2
    assert f"malformed questions file {q}" in capsys.readouterr().err
    # answers that miss ids, or carry unknown ones
    answers = tmp_path / "a.jsonl"
    answers.write_text(json.dumps({"question_id": "random-00001", "text": "Yes"}) + "\n")
    assert main(["score", "pope", "--questions", str(world / "pope"), "--answers", str(answers), "--out",
                 str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert str(answers) in err and "no answer for 89 of 90" in err
    # decode options that greedy would silently ignore
    assert _eval_pope(world, tmp_path / "o", "--top-p", "0.9") == 2
    assert "do not apply" in capsys.readouterr().err
    # CHAIR: missing instances file; captions of unknown images
    caps = tmp_path / "c.jsonl"
    caps.write_text(json.dumps({"image_id": 42, "caption": "A dog."}) + "\n")
    assert main(["score", "chair", "--captions", str(caps), "--instances", str(tmp_path / "none.json"),
                 "--references", str(world / "references.json"), "--out", str(tmp_path / "o")]) == 2
    assert "none.json" in capsys.readouterr().err
    assert main(["score", "chair", "--captions", str(caps), "--instances", str(world / "instances.json"),
                 "--references", str(world / "references.json"), "--out", str(tmp_path / "o")]) == 2
    assert "42" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def _fake_run(src, dst, f1_shift, chair_i):
    shutil.copytree(src, dst)
    res = json.loads((dst / "pope" / "results.json").read_text())
    for split in res["splits"] + ["mean"]:
        res[split]["f1"] = min(1.0, res[split]["f1"] + f1_shift)
    (dst / "pope" / "results.json").write_text(json.dumps(res))
    res = json.loads((dst / "chair" / "results.json").read_text())
    res["chair_i"] = chair_i
    (dst / "chair" / "results.json").write_text(json.dumps(res))


def test_compare(world, tmp_path, capsys):
    base = tmp_path / "base"
    assert _eval_pope(world, base / "pope") == 0 and _eval_chair(world, base / "chair") == 0
    _fake_run(base, tmp_path / "sft", -0.05, 0.10)
    _fake_run(base, tmp_path / "seed", -0.10, 0.02)
    sweep = [{"label": f"b={b}", "chair_i": 0.02 + b / 100, "recall": 0.5 + b / 10} for b in (1, 2, 3)]
    (tmp_path / "seed" / "chair_sweep.json").write_text(json.dumps(sweep))
    capsys.readouterr()
    out = tmp_path / "report"
    assert main(["compare", "--run", f"sft={tmp_path / 'sft'}", "--run", f"base={base}",
                 "--run", f"seed={tmp_path / 'seed'}", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    md = (out / "report.md").read_text()
    assert printed == md and "| metric | sft | base | seed | Δ sft | Δ seed |" in md
    report = json.loads((out / "report.json").read_text())
    assert report["base"] == "base"
    rows = {r["key"]: r for r in report["rows"]}
    base_res = json.loads((base / "pope" / "results.json").read_text())
    f1 = rows["pope.mean.f1"]
    assert f1["values"]["base"] == base_res["mean"]["f1"]
    assert f1["deltas"]["seed"] == pytest.approx(f1["values"]["seed"] - f1["values"]["base"])
    assert rows["chair.chair_i"]["deltas"]["seed"] == pytest.approx(0.02 - rows["chair.chair_i"]["values"]["base"])
    assert rows["pope.random.yes_ratio"]["deltas"]["sft"] == pytest.approx(0.0)
    assert len(report["runs"]["seed"]["chair_points"]) == 4
    for png in ("pope_random.png", "pope_popular.png", "pope_adversarial.png", "pope_mean.png", "chair_recall.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a single results.json works as a run too; a bad spec is a clear error
    assert main(["compare", "--run", f"x={base / 'chair' / 'results.json'}", "--out", str(tmp_path / "r2")]) == 0
    assert main(["compare", "--run", "nopath", "--out", str(tmp_path / "r3")]) == 2
    assert "NAME=PATH" in capsys.readouterr().err
