"""POPE: the official parser, the metrics, and question building on a hand-made COCO-format instances file."""

import json
from collections import defaultdict

import pytest

from seedvlm.cli import main
from seedvlm.errors import SeedVLMError
from seedvlm.eval.pope import (article, build_pope, consistency, load_questions, parse_answer, plural, pope_metrics,
                               question_texts, score_pope)

CATS = ["person", "dog", "cat", "car", "fork", "knife", "cup", "bowl", "apple", "umbrella"]
IMAGES = {  # image id -> annotated categories
    1: ["person", "dog", "car"],
    2: ["person", "dog", "car"],
    3: ["person", "fork", "knife", "cup"],
    4: ["fork", "knife", "cup"],
    5: ["fork", "knife", "bowl"],
    6: ["person", "cat"],  # only two objects: never a POPE image
}


def make_instances(images=IMAGES, extra=None):
    cat_id = {c: i + 1 for i, c in enumerate(CATS)}
    anns = []
    for img, cats in images.items():
        for c in cats:
            anns.append({"id": len(anns) + 1, "image_id": img, "category_id": cat_id[c], **(extra or {})})
    return {"images": [{"id": i, "file_name": f"img{i}.png", "width": 100, "height": 100} for i in images],
            "annotations": anns, "categories": [{"id": cat_id[c], "name": c} for c in CATS]}


# ------------------------------------------------------------------------------------------------- parser
@pytest.mark.parametrize("text, expected", [
    ("Yes.", "yes"),
    ("yes", "yes"),
    ("Yes, there is a dog in the image.", "yes"),
    ("No, there is not.", "no"),
    ("No", "no"),
    ("no.", "no"),
    ("There is no dog.", "no"),
    ("The dog is not there", "no"),
    ("I think yes, but no.", "no"),            # 'no' in the first sentence
    ("Yes. But there is no cat.", "yes"),      # only the first sentence counts
    ("Not at all", "yes"),                     # official quirk: 'Not' (capital) is not in the word set
    ("NO", "yes"),                             # official quirk: case matters
    ("No\nthere is none", "no"),               # whitespace split (official splits on ' ' only)
    ("nothing here", "yes"),                   # 'nothing' is not 'no'
])
def test_official_parser(text, expected):
    assert parse_answer(text) == expected


@pytest.mark.parametrize("text", ["", "   ", "\n\t", None])
def test_empty_answer_is_unparsed(text):
    assert parse_answer(text) is None


# ------------------------------------------------------------------------------------------------- metrics
def test_metrics_hand_case():
    labels = ["yes", "yes", "yes", "no", "no", "no", "no", "no"]
    preds = ["yes", "yes", "no", "yes", "no", "no", "no", "no"]
    m = pope_metrics(preds, labels)
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (2, 1, 4, 1)
    assert m["accuracy"] == pytest.approx(6 / 8)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    # yes_ratio counts predictions (3 of 8), not labels (3 of 8 here too) -> see the next test for a difference
    assert m["yes_ratio"] == pytest.approx(3 / 8)
    assert m["n"] == 8 and m["unparsed"] == 0


def test_yes_ratio_counts_predictions_not_labels():
    labels = ["yes", "no", "no", "no"]          # label yes-ratio 0.25
    preds = ["yes", "yes", "yes", "no"]         # prediction yes-ratio 0.75
    assert pope_metrics(preds, labels)["yes_ratio"] == pytest.approx(0.75)


def test_unparsed_is_always_wrong():
    labels = ["yes", "no", "yes", "no"]
    preds = [None, None, "yes", "no"]
    m = pope_metrics(preds, labels)
    assert m["unparsed"] == 2
    assert m["accuracy"] == pytest.approx(0.5)       # neither unparsed answer earns credit
    assert m["precision"] == pytest.approx(1.0)      # unparsed is no 'yes'
    assert m["recall"] == pytest.approx(0.5)         # the unparsed positive is a miss
    assert m["yes_ratio"] == pytest.approx(0.25)
    for k in ("accuracy", "precision", "recall", "f1", "yes_ratio"):
        assert 0.0 <= m[k] <= 1.0


def test_metrics_degenerate():
    m = pope_metrics(["no", "no"], ["no", "no"])
    assert m["precision"] == 0.0 and m["recall"] == 0.0 and m["f1"] == 0.0 and m["accuracy"] == 1.0


def test_wording():
    assert article("apple") == "an" and article("umbrella") == "an" and article("dog") == "a"
    assert question_texts("object", "apple")[0] == "Is there an apple in the image?"
    assert question_texts("object", "dining table")[0] == "Is there a dining table in the image?"
    assert plural("person") == "people" and plural("wine glass") == "wine glasses" and plural("knife") == "knives"
    assert question_texts("count", "knife", count=2)[0] == "Are there two knives in the image?"
    assert question_texts("count", "knife", count=1)[0] == "Is there one knife in the image?"


# ------------------------------------------------------------------------------------------------- building
def _by_image(questions):
    out = defaultdict(list)
    for q in questions:
        out[q["image_id"]].append(q)
    return out


def test_object_splits():
    inst = make_instances()
    splits, meta = build_pope(inst, n_images=500, seed=0)
    assert list(splits) == ["random", "popular", "adversarial"]
    assert meta["image_ids"] == [1, 2, 3, 4, 5] and meta["n_images"] == 5   # image 6 has < 3 objects
    positives = {}
    for split, qs in splits.items():
        assert len(qs) == 30 and meta["counts"][split] == {"questions": 30, "yes": 15, "no": 15}
        for img, rows in _by_image(qs).items():
            assert len(rows) == 6 and [r["label"] for r in rows] == ["yes", "no"] * 3
            pos = [r["object"] for r in rows if r["label"] == "yes"]
            neg = [r["object"] for r in rows if r["label"] == "no"]
            assert set(pos) <= set(IMAGES[img]) and len(set(pos)) == 3
            assert not set(neg) & set(IMAGES[img]) and len(set(neg)) == 3 and set(neg) <= set(CATS)
            positives.setdefault(img, pos)
            assert pos == positives[img], "positives are shared by the three splits"
            for r in rows:
                assert r["split"] == split and r["image"] == f"img{img}.png"
                assert r["text"] == f"Is there {article(r['object'])} {r['object']} in the image?"
    popular = _by_image(splits["popular"])
    # image frequency: person 4, fork 3, knife 3, dog 2, car 2, cup 2, ... (ties by category order)
    assert [r["object"] for r in popular[1] if r["label"] == "no"] == ["fork", "knife", "cup"]
    assert [r["object"] for r in popular[4] if r["label"] == "no"] == ["person", "dog", "car"]
    adversarial = _by_image(splits["adversarial"])
    # fork/knife/cup co-occur most with person (1 image, frequent) and bowl (1 image): both must be chosen
    assert {"person", "bowl"} <= {r["object"] for r in adversarial[4] if r["label"] == "no"}
    # person's absent partners: fork, knife, cup, cat (1 image each); fork wins on frequency then order
    rows = adversarial[1]
    pairs = dict(zip([r["object"] for r in rows[0::2]], [r["object"] for r in rows[1::2]]))
    assert pairs["person"] == "fork" or "fork" in pairs.values()


def test_adversarial_follows_cooccurrence():
    """Each adversarial negative is its positive's top co-occurring absent, unused category when one exists."""
    inst = make_instances()
    splits, _ = build_pope(inst, seed=3)
    co = defaultdict(lambda: defaultdict(int))
    for cats in IMAGES.values():
        for a in cats:
            for b in cats:
                if a != b:
                    co[a][b] += 1
    for img, rows in _by_image(splits["adversarial"]).items():
        used = set(IMAGES[img])
        for pos, neg in zip(rows[0::2], rows[1::2]):
            partners = [c for c in co[pos["object"]] if c not in used]
            if partners:
                best = max(co[pos["object"]][c] for c in partners)
                assert co[pos["object"]][neg["object"]] == best
            used.add(neg["object"])


def test_sampling_and_determinism(tmp_path):
    inst = make_instances()
    a, meta = build_pope(inst, n_images=3, seed=7)
    b, _ = build_pope(inst, n_images=3, seed=7)
    assert a == b and meta["n_images"] == 3 and all(len(q) == 18 for q in a.values())
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(inst))
    assert main(["pope", "build", "--instances", str(path), "--out", str(tmp_path / "p1"), "--n-images", "3"]) == 0
    assert main(["pope", "build", "--instances", str(path), "--out", str(tmp_path / "p2"), "--n-images", "3"]) == 0
    for name in ("random.jsonl", "popular.jsonl", "adversarial.jsonl", "meta.json"):
        assert (tmp_path / "p1" / name).read_bytes() == (tmp_path / "p2" / name).read_bytes()
    meta = json.loads((tmp_path / "p1" / "meta.json").read_text())
    assert meta["source"] == str(path) and len(meta["sha256"]) == 64 and meta["seed"] == 0
    assert load_questions(tmp_path / "p1")[0]["split"] == "random"
    assert len(load_questions(tmp_path / "p1", limit=4)) == 12


def _attribute_instances():
    cat_id = {c: i + 1 for i, c in enumerate(CATS)}

    def ann(k, c, x, color):
        return {"id": k, "image_id": 10, "category_id": cat_id[c], "bbox": [x, 10, 10, 10], "color": color}

    anns = [ann(1, "cup", 0, "red"), ann(2, "bowl", 50, "blue"), ann(3, "fork", 80, "green"),
            ann(4, "knife", 20, "gray"), ann(5, "knife", 60, "gray")]
    return {"images": [{"id": 10, "file_name": "w10.png", "width": 100, "height": 100}],
            "annotations": anns, "categories": [{"id": cat_id[c], "name": c} for c in CATS]}


def test_color_count_relation_kinds():
    inst = _attribute_instances()
    true_color = {"cup": "red", "bowl": "blue", "fork": "green", "knife": "gray"}
    splits, meta = build_pope(inst, kind="color")
    (qs,) = splits.values()
    assert list(splits) == ["color"] and len(qs) == 6
    for q in qs:
        assert q["text"] == f"Is the {q['object']} {q['color']}?"
        assert (q["color"] == true_color[q["object"]]) == (q["label"] == "yes")
        assert q["color"] in true_color.values()
    (qs,) = build_pope(inst, kind="count")[0].values()
    assert len(qs) == 6 and sum(q["label"] == "yes" for q in qs) == 3
    for q in qs:
        n_true = 2 if q["object"] == "knife" else 1
        assert (q["count"] == n_true) == (q["label"] == "yes")
        assert q["count"] >= 1 and abs(q["count"] - n_true) <= 2
        if q["object"] == "knife" and q["label"] == "yes":
            assert q["text"] == "Are there two knives in the image?"
    (qs,) = build_pope(inst, kind="relation")[0].values()
    # single-instance categories left to right: cup (5), bowl (55), fork (85); knife has two instances
    assert len(qs) == 6
    x = {"cup": 5, "bowl": 55, "fork": 85}
    for q in qs:
        assert q["text"] == f"Is the {q['object']} to the left of the {q['other']}?"
        assert (x[q["object"]] < x[q["other"]]) == (q["label"] == "yes")


def test_color_needs_colors():
    with pytest.raises(SeedVLMError, match="color"):
        build_pope(make_instances(), kind="color")


def test_paraphrases_and_consistency():
    splits, _ = build_pope(make_instances(), n_images=1, paraphrases=True)
    qs = splits["random"]
    assert len(qs) == 18
    groups = defaultdict(list)
    for q in qs:
        groups[q["group_id"]].append(q)
    assert len(groups) == 6 and all(len(g) == 3 and len({q["label"] for q in g}) == 1 for g in groups.values())
    first = next(iter(groups.values()))
    assert first[1]["text"].startswith("Can you see") and first[2]["text"].startswith("Does the image contain")
    # answers: every group right and consistent except the first, whose rewordings disagree
    answers = {q["question_id"]: ("Yes" if q["label"] == "yes" else "No") for q in qs}
    answers[first[1]["question_id"]] = "No" if first[0]["label"] == "yes" else "Yes"
    metrics, samples = score_pope(qs, answers)
    m = metrics["random"]
    assert m["n"] == 6 and m["accuracy"] == 1.0  # canonical wordings only
    assert m["consistency"] == pytest.approx(5 / 6) == consistency(samples)
    assert metrics["mean"]["consistency"] == pytest.approx(5 / 6)


def test_score_pope_errors():
    splits, _ = build_pope(make_instances(), n_images=1)
    qs = splits["random"]
    answers = {q["question_id"]: "Yes" for q in qs}
    with pytest.raises(SeedVLMError, match="no answer for 1 of 6"):
        score_pope(qs, {k: v for k, v in list(answers.items())[1:]}, "answers file a.jsonl")
    with pytest.raises(SeedVLMError, match="not in the questions"):
        score_pope(qs, dict(answers, bogus="No"), "answers file a.jsonl")


def test_malformed_question_files(tmp_path, capsys):
    bad = tmp_path / "q.jsonl"
    bad.write_text('{"question_id": 1, "image": "a.png", "text": "Is there a dog?", "label": "yes"}\n{not json\n')
    with pytest.raises(SeedVLMError, match="q.jsonl line 2"):
        load_questions(bad)
    bad.write_text('{"question_id": 1, "image": "a.png", "text": "Is there a dog?", "label": "maybe"}\n')
    with pytest.raises(SeedVLMError, match="label must be"):
        load_questions(bad)
    bad.write_text('{"question_id": 1, "image": "a.png", "label": "yes"}\n')
    with pytest.raises(SeedVLMError, match="missing text"):
        load_questions(bad)
    assert main(["pope", "build", "--instances", str(tmp_path / "nope.json"), "--out", str(tmp_path / "o")]) == 2
    assert "nope.json" in capsys.readouterr().err
