"""Training loses nothing: overwriting a good run keeps it intact until the new run has its first checkpoint (a
failed overwrite gets it back, unmixed), a checkpoint save on a full disk says so in one line and keeps the previous
checkpoint, and an output_dir that is a file is one line. A tiny CPU model from tests/train/test_train.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from seedvlm.cli import main
from output_checks import failing_writes, snapshot  # noqa: F401 (a fixture)
from train_env import build_env

pytestmark = pytest.mark.usefixtures("one_thread")

CONFIG = Path(__file__).parents[2] / "configs" / "sft_tiny.yaml"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return build_env(tmp_path_factory.mktemp("train_outputs_env"), n=4)


def train(env, out: Path, *extra: str) -> int:
    return main(["train", "--config", str(CONFIG), "--model", str(env["model"]), "--data", str(env["data"]),
                 "--images", str(env["images"]), "--output-dir", str(out), "--lora-r", "4", "--report-to", "none",
                 "--max-steps", "2", "--save-steps", "1", *extra])


@pytest.fixture(scope="module")
def good_run(env, tmp_path_factory):
    out = tmp_path_factory.mktemp("good") / "run"
    assert train(env, out) == 0
    assert (out / "checkpoint-1").is_dir() and (out / "adapter" / "adapter_model.safetensors").is_file()
    return out


def copy_run(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_failed_overwrite_keeps_the_good_run(env, good_run, tmp_path, monkeypatch, capsys):
    from seedvlm.data.dataset import InstructDataset
    from seedvlm.errors import SeedVLMError

    out = copy_run(good_run, tmp_path / "run")
    before = snapshot(out)

    def corrupt(self, i):
        raise SeedVLMError(f"{self.source}: record {self.records[i]['id']!r}: cannot read image (corrupt)")

    monkeypatch.setattr(InstructDataset, "load_image", corrupt)  # fails at step 1, inside training
    rc = train(env, out, "--overwrite-output-dir", "true")
    err = capsys.readouterr().err
    assert rc == 2 and "cannot read image" in err and "is back as it was" in err
    assert snapshot(out) == before  # checkpoints, metrics, adapter and manifest: all the good run's, nothing new


def test_successful_overwrite_replaces_the_run_whole(env, good_run, tmp_path):
    from seedvlm.outputs import STASH

    out = copy_run(good_run, tmp_path / "run")
    (out / "left-by-the-old-run.txt").write_text("old")
    assert train(env, out, "--overwrite-output-dir", "true", "--max-steps", "1") == 0
    assert not (out / STASH).exists() and not (out / "left-by-the-old-run.txt").exists()
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1"]
    assert json.loads((out / "train_config.json").read_text())["max_steps"] == 1


def test_checkpoint_save_on_a_full_disk(env, tmp_path, monkeypatch, capsys):
    """torch's zip writer reports a full disk only as "unexpected pos"; the line says the disk is full, the
    partial checkpoint is removed and checkpoint-1 stays complete."""
    import shutil

    import torch

    out = tmp_path / "run"
    real_save = torch.save

    def save(obj, f, *a, **k):
        if ".checkpoint-2." in str(f):
            raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 322816 vs 322704")
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", save)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10 ** 9, 10 ** 9, 0))
    rc = train(env, out, "--max-steps", "3")
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err, err
    last = err[err.index("seedvlm train: error:"):]  # after the progress bar's line
    assert len(last.strip().splitlines()) == 1 and "saving checkpoint-2" in last and "the disk is full" in last
    assert "checkpoint-1 is intact" in last
    assert sorted(p.name for p in out.iterdir() if "checkpoint" in p.name) == ["checkpoint-1"]
    first = out / "checkpoint-1"
    assert json.loads((first / "trainer_state.json").read_text())["global_step"] == 1
    assert torch.load(first / "optimizer.pt", weights_only=True)["state"]


def test_output_dir_that_is_a_file(env, tmp_path, capsys):
    f = tmp_path / "run"
    f.write_text("keep")
    rc = train(env, f)
    err = capsys.readouterr().err
    assert rc == 2 and "is a file" in err and str(f) in err
    assert f.read_text() == "keep"


def test_output_dir_on_a_read_only_disk(env, tmp_path, capsys, failing_writes):
    import errno

    failing_writes(tmp_path, errno.EROFS)
    rc = train(env, tmp_path / "run")
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert rc == 2 and line.startswith("seedvlm train: error:") and "read-only" in line and "run" in line


def test_teach_refuses_an_unrelated_folder_before_any_work(tmp_path, capsys):
    """An unrelated non-empty --out is refused up front (exit 2), and nothing in it is touched."""
    from seedvlm.cli import main

    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    root = Path(__file__).resolve().parents[2]
    rc = main(["teach", "--config", str(root / "configs" / "seed_tiny.yaml"), "--model", str(root / "assets" / "base-tiny"),
               "--data", str(tmp_path / "missing.json"), "--images", str(tmp_path), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "--out" in err and str(out) in err
    assert (out / "notes.txt").read_text() == "keep me" and sorted(p.name for p in out.iterdir()) == ["notes.txt"]
