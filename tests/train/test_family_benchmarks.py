"""The speed benchmarks on the other model families (CPU, seconds): every family preset's --dry-run builds the model
on the meta device and prints its plan, parameter count and image tokens (the real sizes match their published
parameter counts); a tiny family run writes every case and the step-time ratios; a case out of GPU memory is
recorded and the others still run; a bad preset is one line."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks"
sys.path.insert(0, str(BENCH))

import family_bench  # noqa: E402  (a sibling module of the benchmarks, as they import it)

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: one thread on 2 shared cores


def bench(script: str, *args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def test_train_step_dry_run_every_family_preset():
    presets = family_bench.FAMILY_PRESETS
    run = bench("train_step.py", "--preset", ",".join(presets), "--dry-run", "--image-size", "448")
    assert run.returncode == 0, run.stderr[-2000:]
    plans = {line.split(":")[0]: line for line in run.stdout.splitlines() if ": plan: " in line}
    assert set(plans) == set(presets)
    for preset, line in plans.items():
        assert "sft,seed,seed-cached x micro-batches 1,8" in line, line
        base = int(re.search(r"parameters ([\d,]+) \+ LoRA", line).group(1).replace(",", ""))
        published = family_bench.published_params_m(preset)
        if published:  # the real sizes: the architecture, not a look-alike
            assert abs(base / 1e6 - published) / published < 0.01, (preset, base)
    # Qwen2.5-VL: a 448 px image is 448/14 patches a side, merged 2x2
    assert "image tokens per sample 256;" in plans["qwen2.5-vl-7b"]
    assert not list(ROOT.glob("*.json"))  # a dry run writes nothing


@pytest.mark.parametrize("preset", family_bench.FAMILY_PRESETS)
def test_decode_speed_dry_run(preset, capsys):
    import decode_speed

    assert decode_speed.main(["--preset", preset, "--dry-run"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith(f"{preset}: plan: greedy") and "image tokens per prompt" in line


def test_tiny_family_run_writes_every_case(tmp_path):
    out = tmp_path / "ts.json"
    run = bench("train_step.py", "--preset", "tiny-smolvlm,tiny-qwen2.5-vl", "--device", "cpu", "--threads", "1",
                "--micro-batches", "2", "--steps", "1", "--warmup", "0", "--cases", "sft,sft-seedvlm,seed,seed-cached",
                "--out", str(out))
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads(out.read_text())
    assert [r["preset"] for r in report["runs"]] == ["tiny-smolvlm", "tiny-qwen2.5-vl"]
    for r in report["runs"]:
        assert [x["case"] for x in r["results"]] == ["sft", "seed", "seed-cached", "sft-seedvlm"]
        assert all(x["samples_per_s"] > 0 and x["batch_size"] == 2 for x in r["results"])
        assert set(r["step_time_over_sft"]["2"]) == {"seed", "seed-cached", "sft-seedvlm"}
        setup = family_bench.family_setup(r["preset"])
        batch = family_bench.make_batch(setup.family, setup.processor, 1, [(448, 448)])
        assert r["image_tokens"] == int((batch["input_ids"] == setup.image_token_id).sum()) > 0
        assert r["family"] == setup.family.name and r["answer_tokens"] > 0


def test_out_of_memory_case_is_recorded_and_the_rest_run(monkeypatch):
    import train_step

    def one_step(case, *args, **kwargs):
        if case == "seed":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return 0.5, None

    monkeypatch.setattr(train_step, "one_step", one_step)
    model = torch.nn.Linear(2, 2)
    batch = {"input_ids": torch.zeros(3, 4, dtype=torch.long)}
    rows = train_step.measure(["sft", "seed", "seed-cached"], model, batch, {c: {} for c in ("sft", "seed",
                              "seed-cached")}, warmup=1, steps=2, device=torch.device("cpu"))
    assert [r["case"] for r in rows] == ["sft", "seed", "seed-cached"]
    assert rows[1]["oom"] is True and "samples_per_s" not in rows[1]
    assert rows[0]["samples_per_s"] == rows[2]["samples_per_s"] == 3 / 0.5


def test_bad_preset_is_one_line():
    run = bench("train_step.py", "--preset", "qwen3-vl", "--dry-run", timeout=60)
    assert run.returncode == 2 and "unknown 'qwen3-vl'" in run.stderr.strip().splitlines()[-1]
    run = bench("train_step.py", "--preset", "tiny-smolvlm", "--cases", "seed-3pass", "--dry-run", timeout=60)
    assert run.returncode == 2 and "LLaVA-1.5 only" in run.stderr.strip().splitlines()[-1]


def test_decode_speed_times_family_contrastive_decoding(monkeypatch, tmp_path, capsys):
    """The benchmark times the family contrastive decoder against greedy; a call that fails is recorded, greedy
    still runs."""
    import decode_speed
    import seedvlm.decode.family as fam

    out = tmp_path / "d.json"
    args = ["--preset", "tiny-smolvlm", "--batch-sizes", "2", "--new-tokens", "3", "--repeats", "1", "--out", str(out)]
    assert decode_speed.main(args) == 0
    rows = {r["method"]: r for r in json.loads(out.read_text())["results"]}
    assert rows["contrastive"]["ms_per_step"] > 0 and rows["greedy"]["ms_per_step"] > 0
    assert rows["contrastive"]["ratio_vs_greedy"] > 0

    def broken(model, family, batch, **kwargs):
        raise ValueError("pixel layout not supported")

    monkeypatch.setattr(fam, "family_contrastive_generate", broken)
    assert decode_speed.main(args) == 0
    rows = {r["method"]: r for r in json.loads(out.read_text())["results"]}
    assert rows["contrastive"] == {"method": "contrastive", "batch_size": 2, "available": False,
                                   "note": "failed: ValueError: pixel layout not supported"}
    assert rows["greedy"]["ms_per_step"] > 0
    capsys.readouterr()
