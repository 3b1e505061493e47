"""`seedvlm prepare`: LLaVA-Instruct conversations -> records, with skips reported and bad files named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from seedvlm.errors import SeedVLMError


def _images(root: Path, names) -> Path:
    d = root / "images"
    d.mkdir(parents=True, exist_ok=True)
    for n in names:
        Image.new("RGB", (8, 8), (10, 20, 30)).save(d / n)
    return d


def _conv(*turns):
    roles = ["human", "gpt"]
    return [{"from": roles[i % 2], "value": v} for i, v in enumerate(turns)]


LLAVA = [  # LLaVA-Instruct-150K layout, as the world writes it too (a description record and a multi-turn QA)
    {"id": "000000000001", "image": "a.png",
     "conversations": _conv("<image>\nDescribe this image in detail.", "A red cat sits on a blue table.")},
    {"id": "000000000001_qa", "image": "a.png",
     "conversations": _conv("What color is the cat?\n<image>", "Red.", "Is there a dog?", "No, there is not.")},
    {"id": "gone", "image": "missing.png", "conversations": _conv("<image>\nWhat is it?", "A cat.")},
    {"id": "textonly", "conversations": _conv("What is 2+2?", "Four.")},
    {"id": "noplaceholder", "image": "a.png", "conversations": _conv("What is it?", "A cat.")},
    {"id": "blank", "image": "b.png", "conversations": _conv("<image>\nWhat?", "   ", "<image>", "A dog.",
                                                             "And?", "A big red dog on a table.")},
]


def test_each_turns_become_one_record_per_turn(tmp_path):
    from seedvlm.data.prepare import conversations_to_records

    images = _images(tmp_path, ["a.png", "b.png"])
    records, report = conversations_to_records(LLAVA, images, min_answer_words=2, turns="each")
    assert records[:3] == [
        {"id": "000000000001-0", "image": "a.png", "prompt": "Describe this image in detail.",
         "answer": "A red cat sits on a blue table."},
        {"id": "000000000001_qa-1", "image": "a.png", "prompt": "Is there a dog?", "answer": "No, there is not."},
        {"id": "blank-2", "image": "b.png", "prompt": "And?", "answer": "A big red dog on a table."},
    ]
    assert len(records) == 3
    assert all("<image>" not in r["prompt"] for r in records)
    assert report.conversations == 6 and report.turns == 9 and report.kept == 3
    assert report.skipped == {"no_image": 2, "missing_image": 1, "empty_question": 1, "empty_answer": 1,
                              "short_answer": 1, "after_skipped_turn": 0}
    assert report.examples["missing_image"] == [f"gone: {images / 'missing.png'} not found"]
    assert report.examples["no_image"] == ["textonly", "noplaceholder"]
    assert report.examples["short_answer"] == ["000000000001_qa-0"]
    assert report.examples["empty_answer"] == ["blank-0"] and report.examples["empty_question"] == ["blank-1"]
    first, _ = conversations_to_records(LLAVA, images, turns="first")
    assert [r["id"] for r in first] == ["000000000001-0", "000000000001_qa-0"]


def test_history_keeps_each_conversation_whole_and_cuts_at_a_skipped_turn(tmp_path):
    from seedvlm.data.prepare import conversations_to_records

    images = _images(tmp_path, ["a.png", "b.png"])
    records, report = conversations_to_records(LLAVA, images)
    assert records == [
        {"id": "000000000001", "image": "a.png", "prompt": "Describe this image in detail.",
         "answer": "A red cat sits on a blue table."},
        {"id": "000000000001_qa", "image": "a.png", "prompt": "What color is the cat?", "answer": "Red.",
         "followups": [{"prompt": "Is there a dog?", "answer": "No, there is not."}]},
    ]
    # "blank": its first answer is empty, so the two later turns (without their context) go too
    assert report.skipped["empty_answer"] == 1 and report.skipped["after_skipped_turn"] == 2
    assert report.kept == 2 and report.kept_turns == 3
    with pytest.raises(SeedVLMError, match="turns must be one of history, each, first"):
        conversations_to_records(LLAVA, images, turns="all")


def test_cli_writes_records_reports_skips_and_samples(tmp_path, capsys):
    from seedvlm.cli import main

    images = _images(tmp_path, ["a.png", "b.png"])
    src = tmp_path / "instruct.json"
    src.write_text(json.dumps(LLAVA))
    out = tmp_path / "train.json"
    assert main(["prepare", "--input", str(src), "--images", str(images), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"skipped 1 conversations: missing_image (e.g. gone: {images / 'missing.png'} not found)" in text
    assert "skipped 1 turns: empty_answer (e.g. blank-0)" in text
    assert "wrote 2 records" in text
    assert len(json.loads(out.read_text())) == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".train.json")]  # no temp left behind
    picks = []
    for _ in range(2):
        assert main(["prepare", "--input", str(src), "--images", str(images), "--out", str(out),
                     "--max-samples", "2", "--seed", "7"]) == 0
        picks.append(json.loads(out.read_text()))
    assert len(picks[0]) == 2 and picks[0] == picks[1]
    assert main(["prepare", "--input", str(src), "--images", str(images), "--out", str(out), "--turns", "each"]) == 0
    assert len(json.loads(out.read_text())) == 4


@pytest.mark.parametrize("content, match", [
    ("{not json", r"malformed instruction file .*bad\.json"),
    ('{"id": 1}', r"bad\.json: expected a JSON list"),
    ('[{"id": "x", "image": "a.png"}]', r"bad\.json: record #0 \(id 'x'\) has no 'conversations'"),
    ('[{"id": "x", "image": "a.png", "conversations": [{"from": "gpt", "value": "hi"}, '
     '{"from": "human", "value": "yo"}]}]', r"record #0 \(id 'x'\): turn 0 is from 'gpt'"),
    ('[{"id": "y", "image": "a.png", "conversations": [{"from": "human", "value": "<image>"}]}]',
     r"record #0 \(id 'y'\): 1 turns"),
    ('[{"id": "z", "image": "../a.png", "conversations": [{"from": "human", "value": "<image> q"}, '
     '{"from": "gpt", "value": "a"}]}]', r"record #0 \(id 'z'\): image path '../a.png' escapes"),
    ("[]", r"bad\.json: no usable records"),
])
def test_bad_files_name_the_file_and_record(tmp_path, content, match):
    from seedvlm.data.prepare import prepare
    from seedvlm.errors import SeedVLMError

    images = _images(tmp_path, ["a.png"])
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    with pytest.raises(SeedVLMError, match=match):
        prepare(bad, images, tmp_path / "out.json")
    assert not (tmp_path / "out.json").exists()


def test_world_instruct_file_prepares_unchanged(tmp_path):
    """The embedded world's instruct_train.json (LLaVA-Instruct format) converts with nothing skipped."""
    pytest.importorskip("seedvlm.world")
    from seedvlm.cli import main
    from seedvlm.data.prepare import prepare

    world = tmp_path / "w"
    assert main(["world", "--out", str(world), "--train", "4", "--val", "1", "--quiet"]) == 0
    out = tmp_path / "train.json"
    report = prepare(world / "instruct_train.json", world / "images" / "train", out, turns="each")
    records = json.loads(out.read_text())
    assert report.kept == report.turns == len(records) > 4 and not any(report.skipped.values())
    assert all("<image>" not in r["prompt"] and r["answer"] for r in records)
    assert {r["image"] for r in records} <= {p.name for p in (world / "images" / "train").iterdir()}
