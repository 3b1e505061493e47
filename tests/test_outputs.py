"""A command writes only what it creates: folders given as file targets, unrelated folders, read-only and full
disks are refused in one line (exit code 2) and nothing that was there is lost. Read-only and full disks are
simulated by patching the OS calls (tests run as root, where chmod does not stop writes)."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from seedvlm.cli import main
from seedvlm.errors import SeedVLMError

from output_checks import failing_writes, snapshot  # noqa: F401 (a fixture)


def precious_folder(path: Path) -> dict[str, bytes]:
    """A folder of the user's that no command wrote."""
    (path / "sub").mkdir(parents=True)
    (path / "notes.txt").write_text("mine")
    (path / "sub" / "data.bin").write_bytes(b"\x00\x01")
    return snapshot(path)


# ------------------------------------------------------------------------------------------ the rule, in the API


def test_atomic_write_refuses_a_folder_given_as_file(tmp_path):
    from seedvlm.io import write_json

    target = tmp_path / "out.json"
    before = precious_folder(target)
    with pytest.raises(SeedVLMError, match="is a folder; give a file path"):
        write_json(target, {"a": 1})
    assert snapshot(target) == before


def test_atomic_path_replaces_only_its_own_folders(tmp_path):
    from seedvlm.io import atomic_path
    from seedvlm.outputs import MARKER

    theirs = tmp_path / "theirs"
    before = precious_folder(theirs)
    with pytest.raises(SeedVLMError, match="seedvlm did not write"):
        with atomic_path(theirs) as tmp:
            tmp.mkdir()
            (tmp / "x").write_text("new")
    assert snapshot(theirs) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["theirs"]  # no temp folder left

    ours = tmp_path / "ours"
    for text in ("first", "second"):
        with atomic_path(ours) as tmp:
            tmp.mkdir()
            (tmp / MARKER).touch()
            (tmp / "x").write_text(text)
    assert (ours / "x").read_text() == "second"


def test_disk_full_during_a_results_write_keeps_the_previous_file(tmp_path, failing_writes):
    from seedvlm.io import write_json

    target = tmp_path / "results.json"
    write_json(target, {"old": True})
    failing_writes(tmp_path, errno.ENOSPC)
    with pytest.raises(SeedVLMError) as e:
        write_json(target, {"old": False})
    assert "no space left" in str(e.value) and str(target) in str(e.value)
    assert json.loads(target.read_text()) == {"old": True}


def test_check_targets_name_the_problem(tmp_path, failing_writes):
    from seedvlm.outputs import check_dir_target, check_file_target

    (tmp_path / "f").write_text("x")
    with pytest.raises(SeedVLMError, match="is a file; give a folder path"):
        check_dir_target(tmp_path / "f")
    with pytest.raises(SeedVLMError, match="is a file, not a folder"):
        check_file_target(tmp_path / "f" / "out.json")
    ro = tmp_path / "ro"
    ro.mkdir()
    failing_writes(ro, errno.EROFS)
    with pytest.raises(SeedVLMError, match="read-only"):
        check_file_target(ro / "out.json")
    with pytest.raises(SeedVLMError, match="read-only"):
        check_dir_target(ro / "new" / "folder")


# ------------------------------------------------------------------------------------------ commands
@pytest.mark.parametrize("argv", [
    ["prepare", "--input", "{x}/in.json", "--images", "{x}", "--out", "{target}"],
    ["readiness", "--model", "{x}/no-model", "--world", "{x}", "--out", "{target}"],
    ["demo", "--model", "{x}/no-model", "--image", "{x}/a.png", "--html", "{target}"],
])
def test_a_folder_given_as_output_file_is_refused_and_kept(tmp_path, capsys, argv):
    from PIL import Image

    x = tmp_path / "x"
    x.mkdir()
    Image.new("RGB", (8, 8)).save(x / "a.png")
    (x / "in.json").write_text(json.dumps([{"id": "1", "image": "a.png", "conversations": [
        {"from": "human", "value": "<image>\nWhat?"}, {"from": "gpt", "value": "A box."}]}]))
    target = tmp_path / "target"
    before = precious_folder(target)
    rc = main([a.format(x=x, target=target) for a in argv])
    err = capsys.readouterr().err
    assert rc == 2 and "is a folder; give a file path" in err and str(target) in err
    assert len(err.strip().splitlines()) == 1
    assert snapshot(target) == before


def test_merge_refuses_an_unrelated_folder_before_loading(tmp_path, capsys):
    target = tmp_path / "target"
    before = precious_folder(target)
    rc = main(["merge", "--model", str(tmp_path / "no-model"), "--adapter", str(tmp_path / "no-adapter"),
               "--out", str(target)])
    err = capsys.readouterr().err
    assert rc == 2 and "seedvlm did not write" in err and str(target) in err
    assert snapshot(target) == before


@pytest.mark.parametrize("kind", ["file", "readonly", "unrelated"])
def test_eval_checks_its_output_before_anything_else(tmp_path, capsys, monkeypatch, failing_writes, kind):
    """An unusable --out fails first (the questions and model paths here do not even exist)."""
    from seedvlm.eval import runner

    monkeypatch.setattr(runner, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    out = tmp_path / "out"
    if kind == "file":
        out.write_text("x")
    elif kind == "unrelated":
        precious_folder(out)
    else:
        failing_writes(tmp_path, errno.EROFS)
    rc = main(["eval", "pope", "--model", str(tmp_path / "m"), "--questions", str(tmp_path / "q"),
               "--images", str(tmp_path), "--out", str(out)])
    err = capsys.readouterr().err
    want = {"file": "is a file", "readonly": "read-only", "unrelated": "seedvlm did not write"}[kind]
    assert rc == 2 and want in err and str(out) in err, err


@pytest.mark.parametrize("code, words", [(errno.EROFS, "read-only"), (errno.EACCES, "permission denied")])
def test_prepare_on_an_unwritable_disk_is_one_line(tmp_path, capsys, failing_writes, code, words):
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    (tmp_path / "in.json").write_text(json.dumps([{"id": "1", "image": "a.png", "conversations": [
        {"from": "human", "value": "<image>\nWhat?"}, {"from": "gpt", "value": "A box."}]}]))
    ro = tmp_path / "ro"
    ro.mkdir()
    failing_writes(ro, code)
    rc = main(["prepare", "--input", str(tmp_path / "in.json"), "--images", str(tmp_path), "--out",
               str(ro / "train.json")])
    err = capsys.readouterr().err
    assert rc == 2 and words in err and len(err.strip().splitlines()) == 1


def test_compare_output_that_is_a_file(tmp_path, capsys):
    out = tmp_path / "report"
    out.write_text("keep")
    rc = main(["compare", "--run", f"a={tmp_path}", "--out", str(out)])
    assert rc == 2 and "is a file" in capsys.readouterr().err
    assert out.read_text() == "keep"


def test_score_results_write_on_a_full_disk(tmp_path, capsys, failing_writes):
    q = tmp_path / "q.jsonl"
    q.write_text("".join(json.dumps({"question_id": i, "image": f"i{i}.png", "text": "Is there a cat?",
                                     "label": "yes" if i % 2 else "no"}) + "\n" for i in range(4)))
    a = tmp_path / "a.jsonl"
    a.write_text("".join(json.dumps({"question_id": i, "text": "yes"}) + "\n" for i in range(4)))
    out = tmp_path / "scored"
    assert main(["score", "pope", "--questions", str(q), "--answers", str(a), "--out", str(out)]) == 0
    before = snapshot(out)
    capsys.readouterr()
    failing_writes(out, errno.ENOSPC)
    rc = main(["score", "pope", "--questions", str(q), "--answers", str(a), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "no space left" in err and len(err.strip().splitlines()) == 1
    assert snapshot(out) == before


def test_stash_and_rollback_of_an_overwrite(tmp_path):
    from seedvlm.outputs import STASH, commit_stash, rollback_pending, stash_run

    run = tmp_path / "run"
    before = precious_folder(run)
    stash_run(run)
    assert [p.name for p in run.iterdir()] == [STASH]
    (run / "new.txt").write_text("new run")
    assert rollback_pending() == [run.resolve()]
    assert snapshot(run) == before
    stash_run(run)
    commit_stash(run)
    assert not any(run.iterdir())


def test_a_library_write_error_on_a_full_disk_names_the_output(tmp_path, monkeypatch):
    """safetensors and torch report a full disk in their own exception types; the line still names the output."""
    import shutil

    from seedvlm.io import atomic_path

    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10 ** 9, 10 ** 9, 0))
    with pytest.raises(SeedVLMError) as e:
        with atomic_path(tmp_path / "merged") as tmp:
            tmp.mkdir()
            raise RuntimeError('Error while serializing: IoError(Os { code: 28, kind: StorageFull })')
    assert str(e.value).startswith(f"writing {tmp_path / 'merged'} in {tmp_path} failed: the disk is full")
    assert sorted(p.name for p in tmp_path.iterdir()) == []
