"""CHAIR on hand-written captions with known answers: synonyms, plurals, phrases, the special rules, the metrics;
both protocols (the official code's reading, and the corrected one), checked against real descriptions."""

import gzip
import json
from pathlib import Path

import pytest

from seedvlm.errors import SeedVLMError
from seedvlm.eval.chair import CHAIR, aggregate
from seedvlm.eval.chair_official import OFFICIAL_WORD_TO_CATEGORY, official_mentions, parse_synonyms, tokenize
from seedvlm.eval.singularize import singularize
from seedvlm.eval.synonyms import COCO_CATEGORIES, SYNONYMS, WORD_TO_CATEGORY

REFERENCE = Path(__file__).resolve().parents[2] / "../shared/reference-data/official-eval"
needs_reference = pytest.mark.skipif(not REFERENCE.is_dir(), reason=f"reference data not found at {REFERENCE} "
                                     "(the official CHAIR outputs this test compares with)")

ANNOTATED = {
    1: ["person", "dog", "dining table"],
    2: ["hot dog", "dining table", "cup"],
    3: ["teddy bear", "bed"],
    4: ["toilet", "sink"],
    5: ["elephant"],
    6: ["cell phone", "person"],
    7: ["couch", "tv", "remote"],
    8: ["mouse", "keyboard", "laptop"],
    9: ["person", "skis"],
    10: ["car", "traffic light"],
    11: ["bicycle", "person"],
    12: ["cat", "bed"],
}
REFERENCES = [  # image 1's references add a cake to its ground truth (not to its annotations)
    {"image_id": 1, "caption": "A man and his puppy at a table with a cake."},
    {"image_id": 3, "caption": "A stuffed animal on a bed."},
]


def instances():
    cats = sorted({c for cs in ANNOTATED.values() for c in cs})
    cat_id = {c: 100 + i for i, c in enumerate(cats)}  # ids unlike COCO's: names are what count
    anns = [{"id": k, "image_id": img, "category_id": cat_id[c]}
            for k, (img, c) in enumerate(((i, c) for i, cs in ANNOTATED.items() for c in cs), 1)]
    return {"images": [{"id": i, "file_name": f"{i}.png"} for i in ANNOTATED], "annotations": anns,
            "categories": [{"id": v, "name": k} for k, v in cat_id.items()]}


@pytest.fixture(scope="module")
def chair():
    return CHAIR(instances(), {"annotations": REFERENCES}, protocol="corrected")


@pytest.fixture(scope="module")
def official():
    return CHAIR(instances(), {"annotations": REFERENCES})


CASES = [  # image, caption, mentioned (in order), hallucinated
    (1, "A man sitting at a table with his dog.", ["person", "dining table", "dog"], []),
    (1, "A woman feeds a cake to the dog.", ["person", "cake", "dog"], []),  # cake: from the references
    (1, "A man with a cat on the dining table.", ["person", "cat", "dining table"], ["cat"]),
    (2, "Two hot dogs on a plate next to a cup.", ["hot dog", "cup"], []),  # hot dog is no dog
    (2, "A dog eating a hot dog on the table.", ["dog", "hot dog", "dining table"], ["dog"]),
    (2, "A wine glass and wine glasses on the dining table.", ["wine glass", "dining table"], ["wine glass"]),
    (3, "A teddy bear lying on a bed.", ["teddy bear", "bed"], []),  # teddy bear is no bear
    (3, "A brown bear next to a teddy bear.", ["bear", "teddy bear"], ["bear"]),
    (4, "A white toilet with the toilet seat up next to a sink.", ["toilet", "sink"], []),  # seat is no chair
    (4, "A toilet and a chair in a bathroom.", ["toilet", "chair"], ["chair"]),
    (5, "A baby elephant walking in the grass.", ["elephant"], []),  # baby elephant is no person
    (5, "An adult elephant with a baby.", ["elephant", "person"], ["person"]),  # a lone baby is a person
    (6, "A man talking on his cell phone.", ["person", "cell phone"], []),
    (6, "A woman holding a phone and a laptop.", ["person", "cell phone", "laptop"], ["laptop"]),
    (7, "A living room with a sofa and a television.", ["couch", "tv"], []),
    (7, "A couch in front of a TV monitor with a remote control and a vase.", ["couch", "tv", "remote", "vase"],
     ["vase"]),
    (8, "A computer mouse and a keyboard on a desk.", ["laptop", "mouse", "keyboard", "dining table"],
     ["dining table"]),
    (8, "Two mice next to a keyboard.", ["mouse", "keyboard"], []),  # mice -> mouse
    (9, "People skiing down a hill on skis.", ["person", "skis"], []),
    (9, "Men and children with skis and a snowboard.", ["person", "skis", "snowboard"], ["snowboard"]),
    (10, "A car stopped at a traffic light.", ["car", "traffic light"], []),
    (10, "A bus and a car at the stop light near a fire hydrant.", ["bus", "car", "traffic light", "fire hydrant"],
     ["bus", "fire hydrant"]),
    (11, "A man riding a bike.", ["person", "bicycle"], []),
    (11, "A passenger train passing a bicycle.", ["train", "bicycle"], ["train"]),  # passenger train: no person
    (12, "A kitten sleeping on a bed.", ["cat", "bed"], []),
    (12, "An empty room.", [], []),
    (12, "Sheep and lambs grazing near cattle.", ["sheep", "cow"], ["sheep", "cow"]),
    (3, "Teddy-bears on the bed.", ["teddy bear", "bed"], []),
]


@pytest.mark.parametrize("image_id, caption, mentioned, hallucinated", CASES)
def test_caption(chair, image_id, caption, mentioned, hallucinated):
    s = chair.score(image_id, caption)
    assert s["mentioned"] == mentioned
    assert s["hallucinated"] == hallucinated


def test_mention_spans(chair):
    text = "Two Hot Dogs and a baby elephant."
    spans = chair.mention_spans(text)
    assert [(text[s:e], w, c) for s, e, w, c in spans] == [("Hot Dogs", "hot dog", "hot dog"),
                                                             ("baby elephant", "elephant", "elephant")]


def test_ground_truth_merges_references(chair):
    assert chair.annotated(1) == {"person", "dog", "dining table"}
    assert chair.ground_truth(1) == {"person", "dog", "dining table", "cake"}
    assert chair.ground_truth("1") == chair.ground_truth(1)  # ids from JSONL may come as strings


def test_metrics_by_hand(chair):
    records = [
        {"image_id": 1, "caption": "A man with a cat on the dining table."},  # 3 mentions, 1 hallucinated; 9 words
        {"image_id": 7, "caption": "A couch in front of a TV monitor with a remote control and a vase."},  # tv twice
        {"image_id": 12, "caption": "An empty room."},
        {"image_id": 9, "caption": "Men and children with skis and a snowboard."},  # person twice
    ]
    m = chair.compute(records)
    assert m["n"] == 4 and m["image_ids"] == [1, 7, 12, 9]
    assert m["chair_s"] == pytest.approx(3 / 4)
    assert m["n_mentions"] == 3 + 5 + 0 + 4
    assert m["chair_i"] == pytest.approx(3 / 12)          # every mention counted, as the original
    assert m["chair_i_unique"] == pytest.approx(3 / 10)   # each category once per caption
    assert m["recall"] == pytest.approx((2 + 3 + 0 + 2) / (3 + 3 + 2 + 2))  # annotations as denominator
    assert m["mean_words"] == pytest.approx((9 + 15 + 3 + 8) / 4)
    metrics, samples = chair.evaluate(records)
    assert metrics == m and dict(aggregate(samples), protocol="corrected") == m
    assert samples[1]["mentions"][1:3] == [["tv", "tv"], ["monitor", "tv"]]


def test_synonym_table():
    assert len(COCO_CATEGORIES) == 80 and all(SYNONYMS[c][0] == c for c in COCO_CATEGORIES)
    for word, cat in [("television", "tv"), ("monitor", "tv"), ("sofa", "couch"), ("table", "dining table"),
                      ("desk", "dining table"), ("phone", "cell phone"), ("people", "person"),
                      ("skateboarder", "person"),
                      ("puppy", "dog"), ("fridge", "refrigerator"), ("doughnut", "donut"), ("motorbike", "motorcycle")]:
        assert WORD_TO_CATEGORY[word] == cat
    assert len(SYNONYMS["person"]) == len(set(SYNONYMS["person"]))


def test_from_files_and_extra_categories(tmp_path):
    inst = instances()
    inst["categories"].append({"id": 999, "name": "widget"})
    inst["annotations"].append({"id": 999, "image_id": 5, "category_id": 999})
    (tmp_path / "i.json").write_text(json.dumps(inst))
    (tmp_path / "r.json").write_text(json.dumps({"annotations": REFERENCES}))
    c = CHAIR(tmp_path / "i.json", tmp_path / "r.json", protocol="corrected")
    assert c.score(5, "Two widgets and an elephant.")["mentioned"] == ["widget", "elephant"]
    assert c.ground_truth(1) >= {"cake"}
    with pytest.raises(SeedVLMError, match="image_id 77"):
        c.score(77, "A dog.")
    with pytest.raises(SeedVLMError, match="not found"):
        CHAIR(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text(json.dumps({"images": []}))
    with pytest.raises(SeedVLMError, match="bad.json"):
        CHAIR(tmp_path / "bad.json")


# ------------------------------------------------------------------------------------------- the official protocol
OFFICIAL_CASES = [  # caption, the official code's words (after singularizing and merging), in order with repeats
    ("A bus and two buses.", ["bus"]),                            # "bus" singularizes to "bu": never counted
    ("Wine glasses and a glass of wine.", ["wine glass"]),        # "glass" -> "glas"; "wine glas" -> wine glass
    ("A catégorie of items and a café.", []),                     # non-ASCII letters stay inside the word
    ("A hot dog, two hot dogs and a hot-dog.", ["hot dog", "hot dog"]),  # a hyphenated word is one token
    ("A stove top oven.", ["stove", "oven"]),                     # no three-word phrases
    ("A toilet seat, a seat and a chair.", ["toilet", "chair"]),  # toilet present: every "seat" dropped
    ("The seat of the toilet.", ["toilet"]),
    ("A seat and a stool.", ["seat", "stool"]),
    ("Baby elephants, an adult bear and a baby.", ["elephant", "bear", "baby"]),
    ("A passenger train and a passenger.", ["train", "passenger"]),
    ("A motor bike, a motor cycle and a motorbike.", ["motor cycle", "motorbike"]),  # " motor bike" never matches
    ("An iPhone, a phone and a cheesecake.", ["phone"]),          # "iPhone" and " cheesecake" never match
    ("Two ties, a tie and bow ties.", ["tie", "bow"]),            # "ties" -> "ty"; "bow ty" is no phrase
    ("Women and children on train tracks near a train.", ["woman", "child", "train"]),
    ('He said "a dog." Then a dog! A dog? dogs... and a dog.', ["dog", "dog", "dog", "dog", "dog"]),
    ("The dog.The cat.", ["cat"]),                                 # no space: "dog.the" is one token
    ("Sheep and oxen, mice, a teddy bear and teddy bears.", ["sheep", "ox", "mouse", "teddy bear", "teddy bear"]),
]


@pytest.mark.parametrize("caption, words", OFFICIAL_CASES)
def test_official_words(caption, words):
    assert [w for _, _, w, _ in official_mentions(caption)] == words


def test_official_singularize_quirks():
    for plural_form, single in [("bus", "bu"), ("buses", "bus"), ("glass", "glas"), ("your", "ymy"),
                                ("ears", "ears"), ("women", "woman"), ("knives", "knife"), ("cookies", "cookies"),
                                ("ties", "ty"), ("mothers-in-law", "mother-in-law"), ("dogs'", "dog's"),
                                ("cacti", "cactus"), ("data", "datum"), ("oxen", "ox"), ("skis", "ski")]:
        assert singularize(plural_form) == single, plural_form


def test_official_tokenizer_needs_no_download():
    assert tokenize("A man's dog, (a cat). Two dogs!") == ["a", "man", "'s", "dog", ",", "(", "a", "cat", ")", ".",
                                                            "two", "dogs", "!"]


def test_protocols_differ_where_documented(official, chair):
    for caption, off, cor in [("A bus.", [], ["bus"]), ("Wine glasses.", ["wine glass"], ["wine glass"]),
                              ("A catégorie.", [], []), ("A motor bike.", [], ["motorcycle"]),
                              ("Two ties.", [], ["tie"])]:
        assert official.objects(caption) == off and chair.objects(caption) == cor, caption
    assert official.protocol == "official" and chair.protocol == "corrected"
    with pytest.raises(SeedVLMError, match="protocol"):
        CHAIR(instances(), protocol="lenient")


def test_official_spans_point_at_the_words(official):
    text = "Two Hot Dogs and a baby elephant."
    spans = official.mention_spans(text)
    assert [(text[s:e], w, c) for s, e, w, c in spans] == [("Hot Dogs", "hot dog", "hot dog"),
                                                             ("baby elephant", "elephant", "elephant")]


def test_recall_over_annotations_and_augmented_truth(official):
    m, samples = official.evaluate([{"image_id": 1, "caption": "A man eats cake at the table."}])
    assert m["protocol"] == "official"
    assert m["recall"] == pytest.approx(2 / 3)            # person, table of person/dog/table
    assert m["recall_augmented"] == pytest.approx(3 / 4)  # + cake from the reference captions


def test_duplicate_image_ids_are_refused(official):
    with pytest.raises(SeedVLMError, match="record 3: duplicate image_id 1"):
        official.evaluate([{"image_id": 1, "caption": "a"}, {"image_id": 2, "caption": "b"},
                           {"image_id": "1", "caption": "c"}], source="captions file x.jsonl")


@needs_reference
def test_official_table_is_the_official_synonyms_file():
    parsed = parse_synonyms((REFERENCE / "synonyms.txt").read_text(encoding="utf-8"))
    reachable = {w: c for w, c in parsed.items() if w == w.strip().lower()}
    assert reachable == OFFICIAL_WORD_TO_CATEGORY
    assert set(parsed) - set(reachable) == {" motor bike", " cheesecake", "iPhone"}


@needs_reference
def test_official_mentions_match_the_official_code_on_500_descriptions():
    rows = [json.loads(line) for line in (REFERENCE / "llava15_greedy_500_official_mentions.jsonl").open()]
    assert len(rows) == 500
    wrong = [r["image_id"] for r in rows
             if [(w, c) for _, _, w, c in official_mentions(r["caption"])] != list(zip(r["official_words"],
                                                                                     r["official_objects"]))]
    assert wrong == []
    corrected = CHAIR(instances(), protocol="corrected")
    differ = sum(corrected.mentions(r["caption"]) != list(zip(r["official_words"], r["official_objects"]))
                 for r in rows)
    assert differ > 0  # the protocols are not the same thing on real text


@needs_reference
def test_opera_log_has_the_same_captions():
    with gzip.open(REFERENCE / "opera_llava-1.5_greedy.jsonl.gz", "rt", encoding="utf-8") as f:
        opera = {r["image_id"]: r["caption"] for r in map(json.loads, f)}
    rows = [json.loads(line) for line in (REFERENCE / "llava15_greedy_500_official_mentions.jsonl").open()]
    assert all(opera[r["image_id"]] == r["caption"] for r in rows)


def test_score_chair_refuses_repeated_images(tmp_path, capsys):
    from seedvlm.cli import main

    (tmp_path / "i.json").write_text(json.dumps(instances()))
    (tmp_path / "r.json").write_text(json.dumps({"annotations": REFERENCES}))
    caps = tmp_path / "c.jsonl"
    caps.write_text("".join(json.dumps({"image_id": i, "caption": "A dog."}) + "\n" for i in (1, 2, 1)))
    assert main(["score", "chair", "--captions", str(caps), "--instances", str(tmp_path / "i.json"),
                 "--references", str(tmp_path / "r.json"), "--out", str(tmp_path / "o")]) != 0
    err = capsys.readouterr().err.strip()
    assert f"captions file {caps} record 3: duplicate image_id 1" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()


@needs_reference
def test_score_chair_reads_opera_log_as_it_is(tmp_path):
    from seedvlm.cli import main

    rows = [json.loads(line) for line in (REFERENCE / "llava15_greedy_500_official_mentions.jsonl").open()]
    inst = {"images": [{"id": r["image_id"], "file_name": f"{r['image_id']}.jpg"} for r in rows], "annotations": [],
            "categories": [{"id": k, "name": c} for k, c in enumerate(COCO_CATEGORIES, 1)]}
    (tmp_path / "i.json").write_text(json.dumps(inst))
    (tmp_path / "r.json").write_text(json.dumps({"annotations": []}))
    assert main(["score", "chair", "--captions", str(REFERENCE / "opera_llava-1.5_greedy.jsonl.gz"), "--instances",
                 str(tmp_path / "i.json"), "--references", str(tmp_path / "r.json"), "--out", str(tmp_path / "o")]) == 0
    res = json.loads((tmp_path / "o" / "results.json").read_text())
    assert res["protocol"] == "official" and res["n"] == 500
    assert res["n_mentions"] == sum(len(r["official_objects"]) for r in rows)  # the official code's count
    assert res["chair_i"] == 1.0  # nothing annotated: every mention is a hallucination
