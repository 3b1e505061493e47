"""MME's hallucination subsets: both of MME's layouts, calculation.py's scoring (parsing, accuracy+, score), the
embedded world written in MME's layout, `eval mme` with a fake answerer, `score mme` from JSONL or MME result files,
and bad inputs."""

import json
from pathlib import Path

import pytest
from PIL import Image

from seedvlm.cli import main
from seedvlm.errors import SeedVLMError
from seedvlm.eval import runner
from seedvlm.eval.mme import load_mme, parse_mme, score_mme


@pytest.mark.parametrize("answer, parsed", [
    ("Yes", "yes"), ("no", "no"), ("Yes, there is a dog.", "yes"), ("No.", "no"), ("NO", "no"),
    ("not sure", "no"),          # 'no' within the first four characters
    ("I think yes", "other"),    # 'yes' comes too late
    ("", "other"), ("nope", "no"), (" yes", "yes"), ("There is no dog", "other"),
])
def test_calculation_py_parsing(answer, parsed):
    assert parse_mme(answer) == parsed


def _subset(root: Path, name: str, layout: str, items: dict[str, list[tuple[str, str]]]) -> None:
    folder = root / name
    img_dir = folder / "images" if layout == "yn" else folder
    txt_dir = folder / "questions_answers_YN" if layout == "yn" else folder
    img_dir.mkdir(parents=True, exist_ok=True)
    txt_dir.mkdir(parents=True, exist_ok=True)
    for stem, lines in items.items():
        Image.new("RGB", (4, 4)).save(img_dir / f"{stem}.jpg")
        (txt_dir / f"{stem}.txt").write_text("".join(f"{q}\t{a}\n" for q, a in lines))


@pytest.fixture()
def mme_root(tmp_path):
    root = tmp_path / "MME"
    pair = [("Is there a dog in this image? Please answer yes or no.", "Yes"),
            ("Is there a cat in this image? Please answer yes or no.", "No")]
    _subset(root, "existence", "pairs", {"a": pair, "b": pair})
    _subset(root, "count", "yn", {"c": pair, "d": pair})
    return root


def test_both_layouts_and_the_score(mme_root):
    qs = load_mme(mme_root, ["existence", "count"])
    assert [q["image"] for q in qs] == ["existence/a.jpg"] * 2 + ["existence/b.jpg"] * 2 + \
        ["count/images/c.jpg"] * 2 + ["count/images/d.jpg"] * 2
    assert [q["label"] for q in qs[:2]] == ["yes", "no"]
    # existence: a both right, b one wrong -> acc 3/4, acc+ 1/2; count: all right except an "other"
    answers = dict(zip([q["question_id"] for q in qs], ["Yes", "No", "Yes", "Yes", "yes", "no", "yes", "maybe"]))
    metrics, samples = score_mme(qs, answers)
    assert metrics["existence"]["accuracy"] == pytest.approx(0.75)
    assert metrics["existence"]["accuracy_plus"] == pytest.approx(0.5)
    assert metrics["existence"]["score"] == pytest.approx(125.0)
    assert metrics["count"]["other"] == 1 and metrics["count"]["score"] == pytest.approx(75.0 + 50.0)
    assert metrics["score"] == pytest.approx(250.0)
    assert samples[-1]["parsed"] == "other" and samples[-1]["correct"] is False


def test_score_from_mme_result_files_equals_jsonl(mme_root, tmp_path):
    qs = load_mme(mme_root, ["existence", "count"])
    preds = ["Yes", "Yes", "No", "No", "Yes", "No", "No", "No"]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps({"question_id": q["question_id"], "text": p}) + "\n"
                                              for q, p in zip(qs, preds)))
    results = tmp_path / "Your_Results"
    results.mkdir()
    for subset in ("existence", "count"):
        (results / f"{subset}.txt").write_text("".join(
            f"{Path(q['image']).name}\t{q['text']}\t{q['label'].title()}\t{p}\n"
            for q, p in zip(qs, preds) if q["subset"] == subset))
    common = ["score", "mme", "--questions", str(mme_root), "--subsets", "existence,count"]
    assert main([*common, "--answers", str(tmp_path / "a.jsonl"), "--out", str(tmp_path / "s1")]) == 0
    assert main([*common, "--answers", str(results), "--out", str(tmp_path / "s2")]) == 0
    r1, r2 = (json.loads((tmp_path / s / "results.json").read_text()) for s in ("s1", "s2"))
    assert r1["task"] == "mme" and r1["score"] == r2["score"] == pytest.approx((50 + 0) + (75 + 50))


@pytest.mark.parametrize("problem, message", [
    ("no_tab", "expected 'question<TAB>Yes'"),
    ("three", "3 questions; MME asks two per image"),
    ("no_image", "no image"),
    ("no_subset", "has no subset 'color'"),
])
def test_bad_layouts(mme_root, problem, message, tmp_path, capsys):
    txt = mme_root / "existence" / "a.txt"
    subsets = "existence"
    if problem == "no_tab":
        txt.write_text("Is there a dog? Yes\nIs there a cat?\tNo\n")
    elif problem == "three":
        txt.write_text(txt.read_text() + "Is there a cow?\tNo\n")
    elif problem == "no_image":
        (mme_root / "existence" / "a.jpg").unlink()
    else:
        subsets = "existence,color"
    (tmp_path / "a.jsonl").write_text("")
    assert main(["score", "mme", "--questions", str(mme_root), "--subsets", subsets, "--answers",
                 str(tmp_path / "a.jsonl"), "--out", str(tmp_path / "o")]) != 0
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_missing_answers_are_named(mme_root):
    qs = load_mme(mme_root, ["existence"])
    with pytest.raises(SeedVLMError, match="no answer for 1 of 4"):
        score_mme(qs, {q["question_id"]: "Yes" for q in qs[1:]}, "answers file a.jsonl")


# ------------------------------------------------------------------------------------------- the embedded world
@pytest.fixture(scope="module")
def world_mme(tmp_path_factory):
    root = tmp_path_factory.mktemp("mmeworld")
    assert main(["world", "--out", str(root / "w"), "--train", "4", "--val", "16", "--size", "32", "--quiet"]) == 0
    assert main(["pope", "build", "--format", "mme", "--instances", str(root / "w" / "instances_val.json"),
                 "--images", str(root / "w" / "images" / "val"), "--out", str(root / "mme"), "--n-images", "6"]) == 0
    return root


def test_world_writes_mme_layout(world_mme):
    qs = load_mme(world_mme / "mme")
    subsets = {q["subset"] for q in qs}
    assert subsets == {"existence", "count", "position", "color"}
    instances = json.loads((world_mme / "w" / "instances_val.json").read_text())
    names = {c["name"] for c in instances["categories"]}
    for q in qs:
        assert q["text"].endswith("Please answer yes or no.") and (world_mme / "mme" / q["image"]).is_file()
    existence = [q for q in qs if q["subset"] == "existence"]
    by_file = {im["file_name"]: im["id"] for im in instances["images"]}
    present = {}
    for a in instances["annotations"]:
        present.setdefault(a["image_id"], set()).add(a["category_id"])
    cat_id = {c["name"]: c["id"] for c in instances["categories"]}
    for q in existence:  # "Is there a(n) X in the image?": the label says whether X is annotated
        name = next(n for n in sorted(names, key=len, reverse=True) if f" {n} in the image" in q["text"])
        assert (cat_id[name] in present[by_file[Path(q["image"]).name]]) == (q["label"] == "yes")
    meta = json.loads((world_mme / "mme" / "meta.json").read_text())
    assert meta["format"] == "mme" and meta["counts"]["existence"]["questions"] == len(existence)


def test_eval_mme_with_a_fake_answerer(world_mme, tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "load_model", lambda path, adapter=None, device=None: ("fake", "proc"))
    monkeypatch.setattr(runner, "generate", lambda model, processor, images, prompts, **kw: ["Yes"] * len(prompts))
    assert main(["eval", "mme", "--model", "m", "--questions", str(world_mme / "mme"), "--out",
                 str(tmp_path / "run"), "--batch-size", "4"]) == 0
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    for subset in ("existence", "count", "position", "color"):  # always "yes": half right, no image fully right
        assert res[subset]["accuracy"] == pytest.approx(0.5) and res[subset]["accuracy_plus"] == 0.0
    assert res["score"] == pytest.approx(4 * 50.0)
    assert main(["score", "mme", "--questions", str(world_mme / "mme"), "--answers",
                 str(tmp_path / "run" / "samples.jsonl"), "--out", str(tmp_path / "again")]) == 0
    assert json.loads((tmp_path / "again" / "results.json").read_text())["score"] == res["score"]


def test_pope_build_mme_refuses_to_replace_other_folders(world_mme, tmp_path, capsys):
    (tmp_path / "keep").mkdir()
    (tmp_path / "keep" / "mine.txt").write_text("x")
    assert main(["pope", "build", "--format", "mme", "--instances", str(world_mme / "w" / "instances_val.json"),
                 "--images", str(world_mme / "w" / "images" / "val"), "--out", str(tmp_path / "keep")]) != 0
    assert "refusing to replace" in capsys.readouterr().err
    assert (tmp_path / "keep" / "mine.txt").read_text() == "x"


def test_compare_shows_mme(world_mme, tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "load_model", lambda path, adapter=None, device=None: ("fake", "proc"))
    monkeypatch.setattr(runner, "generate", lambda model, processor, images, prompts, **kw: ["No"] * len(prompts))
    assert main(["eval", "mme", "--model", "m", "--questions", str(world_mme / "mme"), "--subsets", "existence",
                 "--out", str(tmp_path / "base" / "mme")]) == 0
    assert main(["compare", "--run", f"base={tmp_path / 'base'}", "--out", str(tmp_path / "report")]) == 0
    rows = {r["key"]: r for r in json.loads((tmp_path / "report" / "report.json").read_text())["rows"]}
    assert rows["mme.existence.accuracy"]["values"]["base"] == pytest.approx(0.5)
    assert rows["mme.score"]["values"]["base"] == pytest.approx(50.0)
    assert "| MME existence score | 50.0 |" in (tmp_path / "report" / "report.md").read_text()
