"""The other model families on two CPU processes (gloo, tests/dist_worker.py): DDP (the student on the teacher's
image features passed through DDP's input handling) and accelerate's FSDP1 plugin from
configs/accelerate/fsdp.yaml, whose layer classes name LLaVA-1.5's (the family's own decoder and vision layers
become the units; the teacher runs through the wrapper). The run and its resume from a checkpoint give one
process's curve with the same global batch. Tolerances as in tests/test_distributed.py (1e-5 on the losses; b, conf,
lr and the b history exactly)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from train_env import NAMES, build_family_env, family_folder, launch_two, read_metrics

pytestmark = pytest.mark.usefixtures("one_thread")

WORKER = Path(__file__).resolve().parents[1] / "dist_worker.py"
# 4 records, 1 per device, global batch 2: one process accumulates 2 micro-batches, two processes 1 each
RUN = dict(max_steps=4, per_device_train_batch_size=1, global_batch_size=2, gradient_accumulation_steps=1,
           save_steps=2, lora_r=4, lora_alpha=8, lora_dropout=0.0, learning_rate=5e-3, warmup_steps=0,
           logging_steps=1, report_to="none", beta_min_history=2)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return build_family_env(tmp_path_factory.mktemp("family_dist"))


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("mode, wrapper", [("train", "DistributedDataParallel"),
                                           ("fsdp-train", "FullyShardedDataParallel")])
def test_two_processes_train_like_one_and_resume(env, name, mode, wrapper, tmp_path):
    from seedvlm.train.config import SeedConfig
    from seedvlm.train.run import run_training

    model, data, images = family_folder(env, name)
    base = dict(model=str(model), data=str(data), images=str(images), **RUN)
    one = run_training(SeedConfig(**base, output_dir=str(tmp_path / "one")))
    assert one["trainer"].args.gradient_accumulation_steps == 2
    jobs = [{"cfg": {**base, "output_dir": str(tmp_path / "two")}, "dump": str(tmp_path / "dump"), "resume": None},
            {"cfg": {**base, "output_dir": str(tmp_path / "resumed")}, "dump": str(tmp_path / "dump2"),
             "resume": str(tmp_path / "two" / "checkpoint-2")}]
    launch_two(str(WORKER), mode, json.dumps(jobs))
    r0, r1 = (json.loads((tmp_path / "dump" / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["wrapper"] == wrapper and r0["world"] == 2
    assert r0["history"] == r1["history"] == list(one["trainer"].beta_schedule.history)
    ref = {r["step"]: r for r in read_metrics(tmp_path / "one")}
    for run, steps in (("two", [1, 2, 3, 4]), ("resumed", [3, 4])):
        rows = read_metrics(tmp_path / run)
        assert [r["step"] for r in rows] == steps
        for row in rows:
            for key in ("loss", "distill", "sup"):
                assert abs(row[key] - ref[row["step"]][key]) <= 1e-5, (run, row["step"], key)
            for key in ("beta", "conf", "lr"):
                assert row[key] == pytest.approx(ref[row["step"]][key], abs=1e-12), (run, row["step"], key)
