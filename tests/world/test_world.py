"""Tests of the embedded world (seedvlm.world, `seedvlm world`). All small: a few dozen images at most on disk."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from seedvlm.errors import SeedVLMError
from seedvlm.world import (
    CATEGORIES,
    CATEGORY_NAMES,
    SCENE_NAMES,
    SCENES,
    SYNONYMS,
    WorldConfig,
    category_by_name,
    generate_world,
    load_world,
    partners_of,
    plural,
    render_scene,
    sample_scene,
    tokenize,
    world_vocabulary,
)
from seedvlm.world.generate import choose_injections, pair_stats, sample_split, split_counts
from seedvlm.world.glyphs import glyph_masks, glyph_size

SMALL = dict(train=24, val=8)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("w") / "world"
    generate_world(WorldConfig(train=40, val=12, seed=3), out)
    return out


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _mentions(text: str) -> set[str]:
    """Categories named in a text, CHAIR style: longest synonym (or its plural) first, word boundaries."""
    t = " ".join(tokenize(text))
    found = set()
    pairs = sorted(((s, c) for c in CATEGORY_NAMES for syn in SYNONYMS[c] for s in (syn, plural(syn))),
                   key=lambda x: -len(x[0]))
    for s, c in pairs:
        pat = r"(?<![a-z])" + re.escape(s) + r"(?![a-z])"
        if re.search(pat, t):
            found.add(c)
            t = re.sub(pat, " ", t)
    return found


# ----------------------------------------------------------------------------------------------- determinism

def test_same_seed_same_bytes_and_other_seed_differs(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    generate_world(WorldConfig(**SMALL, seed=5), a)
    generate_world(WorldConfig(**SMALL, seed=5), b)
    generate_world(WorldConfig(**SMALL, seed=6), c)
    ha, hb, hc = _hashes(a), _hashes(b), _hashes(c)
    assert len(ha) == 7 + SMALL["train"] + SMALL["val"]  # 7 json files + the images
    assert ha == hb
    assert ha.keys() == hc.keys()
    differing = [k for k in ha if ha[k] != hc[k]]
    assert "instances_train.json" in differing and any(k.endswith(".png") for k in differing)
    # no leftovers beside the outputs (atomic writes clean their temp folders)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "c"]


def test_val_does_not_depend_on_train_count(tmp_path):
    generate_world(WorldConfig(train=5, val=6, seed=1), tmp_path / "x")
    generate_world(WorldConfig(train=9, val=6, seed=1), tmp_path / "y")
    hx, hy = _hashes(tmp_path / "x"), _hashes(tmp_path / "y")
    for k in hx:
        if "val" in k:
            assert hx[k] == hy[k], k


def test_sampler_is_deterministic():
    s1 = sample_scene(np.random.default_rng(7), 64)
    s2 = sample_scene(np.random.default_rng(7), 64)
    assert s1 == s2
    assert np.array_equal(render_scene(s1), render_scene(s2))


# ------------------------------------------------------------------------------------------------- COCO files

def test_coco_instances_and_captions(world):
    from pycocotools.coco import COCO

    for split in ("train", "val"):
        coco = COCO(str(world / f"instances_{split}.json"))
        assert len(coco.getImgIds()) == (40 if split == "train" else 12)
        for img in coco.loadImgs(coco.getImgIds()):
            assert (world / "images" / split / img["file_name"]).is_file()
            assert img["width"] == img["height"] == 64
            assert img["scene"] in SCENE_NAMES
        for ann in coco.loadAnns(coco.getAnnIds()):
            x, y, w, h = ann["bbox"]
            assert x >= 0 and y >= 0 and w > 0 and h > 0 and x + w <= 64 and y + h <= 64
            assert 0 < ann["area"] <= w * h
            assert ann["iscrowd"] == 0 and isinstance(ann["occluded"], bool) and isinstance(ann["off_scene"], bool)
        per_image = Counter(a["image_id"] for a in coco.dataset["annotations"])
        assert min(per_image.values()) >= 2 and max(per_image.values()) <= 6
        caps = COCO(str(world / f"captions_{split}.json"))
        per_img = Counter(a["image_id"] for a in caps.dataset["annotations"])
        assert set(per_img) == set(coco.getImgIds()) and min(per_img.values()) >= 3
    cats = {c["name"]: c["id"] for c in coco.dataset["categories"]}
    assert len(cats) >= 24
    expected = {"person": 1, "bicycle": 2, "car": 3, "traffic light": 10, "dog": 18, "cat": 17, "horse": 19,
                "sheep": 20, "cow": 21, "fork": 48, "knife": 49, "spoon": 50, "bowl": 51, "couch": 63,
                "dining table": 67, "toilet": 70, "tv": 72, "laptop": 73, "mouse": 74, "keyboard": 76, "sink": 81}
    for name, cid in expected.items():
        assert cats[name] == cid, name
    assert category_by_name("fork")["supercategory"] == "kitchen"


def test_val_text_is_true_and_complete(world):
    inst = json.loads((world / "instances_val.json").read_text())
    cat_name = {c["id"]: c["name"] for c in inst["categories"]}
    fname_to_id = {im["file_name"]: im["id"] for im in inst["images"]}
    present: dict[int, list[dict]] = {}
    for a in inst["annotations"]:
        present.setdefault(a["image_id"], []).append(a)
    caps = json.loads((world / "captions_val.json").read_text())
    for c in caps["annotations"]:
        names = {cat_name[a["category_id"]] for a in present[c["image_id"]]}
        assert _mentions(c["caption"]) == names, c
    for r in json.loads((world / "instruct_val.json").read_text()):
        anns = present[fname_to_id[r["image"]]]
        names = {cat_name[a["category_id"]] for a in anns}
        conv = r["conversations"]
        if r["id"].endswith("_detail"):
            assert _mentions(conv[1]["value"]) == names, r  # names every object, nothing else
            continue
        counts = Counter(cat_name[a["category_id"]] for a in anns)
        for q, a in zip(conv[0::2], conv[1::2]):
            qv = q["value"].replace("<image>\n", "")
            if m := re.fullmatch(r"Is there an? (.+) in the image\?", qv):
                assert a["value"] == ("Yes." if m.group(1) in names else "No."), (qv, a)
            elif m := re.fullmatch(r"What color is the (.+)\?", qv):
                (ann,) = [x for x in anns if cat_name[x["category_id"]] == m.group(1)]
                assert a["value"] == f"The {m.group(1)} is {ann['color']}."
            elif m := re.fullmatch(r"How many (.+) are there\?", qv):
                (name,) = [n for n in counts if plural(n) == m.group(1)]
                assert a["value"].startswith("There is one" if counts[name] == 1 else "There are")


def test_vocabulary_covers_all_text(world):
    vocab = set(world_vocabulary())
    assert {"sofa", "television", "man", "table", "phone", "yes", "no", ".", ",", "?"} <= vocab
    assert all(w == w.lower() and not any(ch.isdigit() for ch in w) for w in vocab)
    texts = []
    for split in ("train", "val"):
        texts += [a["caption"] for a in json.loads((world / f"captions_{split}.json").read_text())["annotations"]]
        for r in json.loads((world / f"instruct_{split}.json").read_text()):
            texts += [t["value"].replace("<image>\n", "") for t in r["conversations"]]
    for t in texts:
        assert re.fullmatch(r"[A-Za-z ,.?]+", t), t
        assert set(tokenize(t)) <= vocab, set(tokenize(t)) - vocab
    # no word of the world text names a category by accident (the color "orange" would): CHAIR-safe
    assert "orange" not in vocab


# --------------------------------------------------------------------------------------------- instruct format

def test_instruct_records(world):
    for split, n in (("train", 40), ("val", 12)):
        recs = json.loads((world / f"instruct_{split}.json").read_text())
        assert len(recs) == 2 * n
        assert len({r["id"] for r in recs}) == len(recs)
        yes = no = 0
        kinds = Counter()
        for r in recs:
            assert isinstance(r["id"], str)
            assert (world / "images" / split / r["image"]).is_file()
            conv = r["conversations"]
            assert len(conv) >= 2 and len(conv) % 2 == 0
            for i, t in enumerate(conv):
                assert t["from"] == ("human" if i % 2 == 0 else "gpt")
                assert ("<image>" in t["value"]) == (i == 0)
            assert conv[0]["value"].startswith("<image>\n") and conv[0]["value"].count("<image>") == 1
            if r["id"].endswith("_detail"):
                kinds["detail"] += 1
                assert len(conv) == 2
            else:
                kinds["conv"] += 1
                assert len(conv) >= 6  # at least: a yes and a no existence question and a count
                for q, a in zip(conv[0::2], conv[1::2]):
                    if re.search(r"Is there an? .+ in the image\?$", q["value"]):
                        yes += a["value"] == "Yes."
                        no += a["value"] == "No."
        assert kinds == {"detail": n, "conv": n}
        assert yes + no >= 2 * n and abs(yes - no) <= 0.1 * (yes + no)
    prompts = {r["conversations"][0]["value"] for r in json.loads((world / "instruct_train.json").read_text())
               if r["id"].endswith("_detail")}
    assert "<image>\nPlease describe this image in detail." in prompts


# ------------------------------------------------------------------------------------------ hallucination rate

def test_injection_rate_and_truth():
    cfg = WorldConfig(train=400, val=0, size=32, seed=11, hallucination_rate=0.2)
    scenes = sample_split(cfg, "train")
    inj = choose_injections(cfg, scenes)
    assert abs(len(inj) / 400 - 0.2) <= 0.02
    for i, name in inj.items():
        sc = scenes[i]
        assert name not in sc.names  # truly absent
        assert any(name in partners_of(n) for n in sc.names)  # a strong partner of a present object
    assert choose_injections(dataclasses.replace(cfg, hallucination_rate=0.0), scenes) == {}


def test_hard_negative_share_follows_the_setting():
    """The share of yes/no negatives that name a co-occurring absent object tracks --hard-negatives; 0.5 keeps
    the historical layout (one of two negatives) and every answer stays true."""
    from seedvlm.world.text import NO, YES, cooccurring_absent, qa_turns

    scenes = sample_split(WorldConfig(train=400, val=0, size=32, seed=5), "train")
    eligible = [sc for sc in scenes if len(cooccurring_absent(sc)) >= 2]
    share = {}
    for rate in (0.0, 0.1, 0.5, 1.0):
        rng = np.random.default_rng(0)
        hard = total = 0
        for sc in eligible:
            co = set(cooccurring_absent(sc))
            for q, a in qa_turns(sc, rng, rate):
                m = re.fullmatch(r"Is there an? (.+) in the image\?", q)
                if not m:
                    continue
                name = m.group(1)
                assert (a == YES) == (name in sc.names)  # answers stay true
                if a == NO:
                    total += 1
                    hard += name in co
        share[rate] = hard / total
    assert share[1.0] == 1.0
    assert abs(share[0.5] - 0.5) < 0.1  # + random negatives that happen to co-occur
    assert share[0.1] < 0.3
    assert share[0.0] < share[0.1] < share[0.5]


def test_world_json_records_injections(world):
    w = load_world(world)
    h = w["hallucination"]
    assert h["injected"] == len(w["injections"]) == round(0.2 * 40)
    assert h["measured_rate"] == pytest.approx(0.2, abs=0.02) and h["val_injected"] == 0
    inst = json.loads((world / "instances_train.json").read_text())
    names_of = {}
    for a in inst["annotations"]:
        names_of.setdefault(a["image_id"], set()).add(category_by_name_id(a["category_id"]))
    recs = {r["id"]: r for r in json.loads((world / "instruct_train.json").read_text())}
    injected_ids = set()
    for e in w["injections"]:
        assert e["name"] not in names_of[e["image_id"]]
        assert any(e["name"] in partners_of(n) for n in names_of[e["image_id"]])
        text = recs[e["record_id"]]["conversations"][1]["value"]
        assert e["name"] in _mentions(text)
        assert _mentions(text) == names_of[e["image_id"]] | {e["name"]}
        injected_ids.add(e["record_id"])
    # the other train descriptions are exact
    fname_to_id = {im["file_name"]: im["id"] for im in inst["images"]}
    for rid, r in recs.items():
        if rid.endswith("_detail") and rid not in injected_ids:
            assert _mentions(r["conversations"][1]["value"]) == names_of[fname_to_id[r["image"]]]
    # val: no injection anywhere
    assert all(e["image_id"] < 1_000_000 for e in w["injections"])


def category_by_name_id(cid: int) -> str:
    return {c["id"]: c["name"] for c in CATEGORIES}[cid]


# ----------------------------------------------------------------------------------- co-occurrence, off-scene

def test_strong_pairs_and_off_scene_rate():
    cfg = WorldConfig(train=600, val=0, size=32, seed=2, off_scene_rate=0.3)
    scenes = sample_split(cfg, "train")
    stats = pair_stats(scenes)
    assert len(stats) >= len(SCENES)
    for p in stats:
        assert p["together_rate"] >= 0.8, p
    counts = split_counts(scenes)
    assert abs(counts["off_scene_rate"] - 0.3) <= 0.04
    for sc in scenes:
        assert 2 <= len(sc.objects) <= 6
        in_list = set(next(s for s in SCENES if s.name == sc.scene_type).objects)
        for o in sc.objects:
            assert o.off_scene == (o.name not in in_list)
    none = split_counts(sample_split(dataclasses.replace(cfg, off_scene_rate=0.0), "train", 100))
    assert none["off_scene_instances"] == 0


def test_uniform_sampler_is_uniform():
    rng = np.random.default_rng(0)
    counts = Counter()
    backgrounds = Counter()
    for _ in range(1500):
        sc = sample_scene(rng, 32, uniform=True)
        assert sc.scene_type is None and not any(o.off_scene for o in sc.objects)
        backgrounds[sc.background] += 1
        counts.update(o.name for o in sc.objects)
    assert set(counts) == set(CATEGORY_NAMES) and set(backgrounds) == set(SCENE_NAMES)
    mean = sum(counts.values()) / len(CATEGORY_NAMES)
    assert max(abs(v - mean) / mean for v in counts.values()) < 0.3, counts
    img = render_scene(sc)
    assert img.shape == (32, 32, 3) and img.dtype == np.uint8
    assert render_scene(sc, 64).shape == (64, 64, 3)


def test_glyphs_are_distinct():
    """Every pair of glyphs differs in a sizeable part of their label maps at a common size."""
    S = 24
    maps = {}
    for n in CATEGORY_NAMES:
        w, h = glyph_size(n, 16, S - 2)
        body, det, ring, _, _ = glyph_masks(n, w, h)
        m = np.zeros((S, S), np.uint8)
        y, x = (S - h - 2) // 2, (S - w - 2) // 2
        m[y:y + h + 2, x:x + w + 2] = body * 1 + det * 2 + ring * 3
        maps[n] = m
    names = list(maps)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            union = (maps[a] > 0) | (maps[b] > 0)
            diff = (maps[a] != maps[b]) & union
            assert diff.sum() / union.sum() > 0.2, (a, b)


# ----------------------------------------------------------------------------------------------- bad inputs

def test_load_world_errors(world, tmp_path):
    with pytest.raises(SeedVLMError, match="world folder not found"):
        load_world(tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SeedVLMError, match=re.escape(str(empty / "world.json"))):
        load_world(empty)
    (empty / "world.json").write_text("{not json")
    with pytest.raises(SeedVLMError, match="malformed.*world.json"):
        load_world(empty)
    (empty / "world.json").write_text(json.dumps({"format": "seedvlm-world"}))
    with pytest.raises(SeedVLMError, match="missing key"):
        load_world(empty)
    w = json.loads((world / "world.json").read_text())
    (empty / "world.json").write_text(json.dumps(w))
    with pytest.raises(SeedVLMError, match="world file missing: " + re.escape(str(empty / "images" / "train"))):
        load_world(empty)
    (empty / "images" / "train").mkdir(parents=True)
    (empty / "images" / "val").mkdir()
    with pytest.raises(SeedVLMError, match=re.escape(str(empty / "instances_train.json"))):
        load_world(empty)
    assert load_world(world)["root"] == str(world)


def test_cli_bad_args_leave_nothing(tmp_path, capsys):
    from seedvlm.cli import main

    out = tmp_path / "sub" / "w"
    for bad in (["--train", "-1"], ["--size", "16"], ["--hallucination-rate", "1.5"], ["--val", "x"],
                ["--train", "0", "--val", "0"], ["--min-objects", "5", "--max-objects", "3"]):
        try:
            rc = main(["world", "--out", str(out), *bad])
        except SystemExit as e:  # argparse type errors exit 2
            rc = e.code
        assert rc != 0, bad
        assert not out.exists(), bad
    err = capsys.readouterr().err
    assert "--train must be >= 0" in err and "--size must be >= 32" in err
    f = tmp_path / "file"
    f.write_text("keep me")
    assert main(["world", "--out", str(f), "--train", "2", "--val", "1", "--quiet"]) != 0
    assert f.read_text() == "keep me"
    d = tmp_path / "notaworld"
    d.mkdir()
    (d / "x.txt").write_text("mine")
    assert main(["world", "--out", str(d), "--train", "2", "--val", "1", "--quiet"]) != 0
    assert (d / "x.txt").read_text() == "mine"
    assert "not empty" in capsys.readouterr().err


def test_cli_runs_and_crash_leaves_nothing(tmp_path, capsys, monkeypatch):
    from seedvlm.cli import main
    from seedvlm.world import generate as gen

    out = tmp_path / "w"
    assert main(["world", "--out", str(out), "--train", "6", "--val", "2", "--seed", "4", "--quiet"]) == 0
    assert "world written to" in capsys.readouterr().out
    assert load_world(out)["config"]["train"] == 6
    before = _hashes(out)

    calls = {"n": 0}
    real = gen.render_scene

    def boom(scene, size=None):
        calls["n"] += 1
        if calls["n"] > 3:
            raise RuntimeError("simulated crash")
        return real(scene, size)

    monkeypatch.setattr(gen, "render_scene", boom)
    with pytest.raises(RuntimeError):
        generate_world(WorldConfig(train=6, val=2, seed=9), out)
    assert _hashes(out) == before  # the old world is intact
    with pytest.raises(RuntimeError):
        generate_world(WorldConfig(train=6, val=2, seed=9), tmp_path / "fresh")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w"]  # no partial folder, no temp leftovers


def test_cli_options_match_config():
    from seedvlm.commands.world import _OPTIONS

    fields = {f.name: f.default for f in dataclasses.fields(WorldConfig)}
    assert {n: d for n, _, d, _ in _OPTIONS} == fields
