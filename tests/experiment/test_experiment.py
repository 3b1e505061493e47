"""`seedvlm experiment` end to end on a 2-layer random LLaVA and a micro world (CPU, one thread): every arm and its
summary, resume (a second run skips every step), re-running exactly one arm after its marker is deleted; plus the
pure parts (t-intervals, the frontier and CHAIRi at matched recall, shared with compare; the goals of the config;
variant names, config checks)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: one thread on 2 shared cores


def micro_config(tmp: Path, model: Path, **over) -> dict:
    """1 seed, 2 train steps per arm, 1 ablation, 3 POPE/probe/CHAIR images, 8 new tokens."""
    cfg = dict(
        out=str(tmp / "exp"), base_model=str(model), world_options={"train": 12, "val": 6, "seed": 0},
        seeds=[0], seed_config=str(ROOT / "configs" / "seed_tiny.yaml"),
        sft_config=str(ROOT / "configs" / "sft_tiny.yaml"),
        train_overrides={"report_to": "none", "per_device_batch_size": 2, "logging_steps": 1, "save_steps": 2,
                         "group_by_length": False, "lora_r": 4, "lora_alpha": 8},
        max_steps=2, beta_sweep=[0.0, 1.0], w_sweep=[], length_cuts=[3],
        ablations={"temperature": [1.0]}, ablation_seeds=1,
        pope_images=3, probe_images=3, chair_images=3, max_new_tokens=8, pope_max_new_tokens=4, batch_size=8,
        device="cpu", threads=1)
    cfg.update(over)
    return cfg


@pytest.fixture(scope="module")
def world_model(tmp_path_factory) -> Path:
    """A 2-layer random LLaVA whose word tokenizer covers the world's vocabulary (32 px: 16 image tokens)."""
    from seedvlm.models import build_processor, build_word_tokenizer, random_model, save_model
    from seedvlm.world import world_vocabulary
    from conftest import tiny_config

    tok = build_word_tokenizer(world_vocabulary())
    cfg = tiny_config(tok)
    cfg.vision_config.image_size = 32
    out = tmp_path_factory.mktemp("models") / "world_tiny"
    save_model(random_model(cfg, seed=0), build_processor(tok, cfg), out)
    return out


def _run(cfg: dict):
    from seedvlm.experiment import load_experiment_config, run_experiment

    lines: list[str] = []
    result = run_experiment(load_experiment_config(None, cfg), echo=lines.append)
    return result, lines


@pytest.mark.slow
def test_micro_experiment_runs_resumes_and_reruns_one_arm(world_model, tmp_path):
    from seedvlm.experiment import ARMS

    import yaml

    goals = yaml.safe_load((ROOT / "configs" / "experiment_smoke.yaml").read_text())["goals"]
    cfg = micro_config(tmp_path, world_model, goals=goals)
    out = Path(cfg["out"])
    t = time.perf_counter()
    first, lines = _run(cfg)
    first_s = time.perf_counter() - t
    assert not first["skipped"] and len(first["ran"]) == len(first["plan"].steps)
    assert any("ETA" in ln for ln in lines)

    # every arm, its evaluations, and the ablation variant
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["arms"]) == set(ARMS)
    assert set(summary["metrics"]) == set(ARMS) | {"seed_T1"}
    for arm in ARMS:
        m = summary["metrics"][arm]
        for key in ("pope.adversarial.f1", "pope.mean.yes_ratio", "probes.mean.accuracy", "mme.total.score",
                    "chair.chair_i", "chair.recall"):
            assert m[key]["n"] == 1 and m[key]["ci95"] is None, (arm, key)
        assert (out / "seed0" / arm / "chair" / "done.json").is_file()
        sweep = json.loads((out / "seed0" / arm / "chair_sweep.json").read_text())
        assert any(p["knob"] == "words" for p in sweep)
    assert (out / "seed0" / "base_cd" / "beta_0" / "results.json").is_file()   # b = 0 point of the curve
    assert summary["matched_recall"]["level"] is not None
    assert [r["arm"] for r in summary["ablations"]] == ["seed_T1"]
    assert (out / "seed0" / "compare" / "report.md").is_file()
    assert (out / "seed0" / "compare" / "chair_recall.png").is_file()
    assert (out / "seed0" / "compare_ablations" / "report.md").is_file()
    md = (out / "summary.md").read_text()
    assert "n=1" in md and "CHAIRi at matched recall" in md and "| seed_T1 |" not in md.split("## Ablations")[0]
    assert "## Goals (checked on the means)" in md and "issue" not in md
    assert [(g["arm"], g["goal"]) for g in summary["goals"]][:2] == [("seed", g["goal"]) for g in goals[:2]]
    # the contrastive arm decoded with the seed arm's adapter; the questions are shared
    cd = json.loads((out / "seed0" / "seed_cd" / "pope" / "results.json").read_text())
    assert cd["adapter"].endswith("seed0/seed/train/adapter") and cd["config"]["decoding"] == "contrastive"
    assert cd["config"]["questions"] == str(out / "questions" / "pope")

    # resume: nothing runs again
    t = time.perf_counter()
    second, _ = _run(cfg)
    assert second["ran"] == [] and len(second["skipped"]) == len(first["ran"])
    resume_s = time.perf_counter() - t

    # --summary-only: results without the weights (as brought back from a GPU machine) still summarize
    from seedvlm.errors import SeedVLMError
    from seedvlm.experiment import load_experiment_config, run_experiment

    base = Path(cfg["base_model"])
    (out / "summary.md").unlink()
    base.rename(base.with_name(base.name + "_away"))
    try:
        only = run_experiment(load_experiment_config(None, cfg), summary_only=True, echo=lambda s: None)
        assert only["ran"] == [] and (out / "summary.md").read_text().startswith("# seedvlm experiment")
        (out / "seed0" / "sft" / "pope" / "done.json").rename(out / "pope_marker")
        with pytest.raises(SeedVLMError, match=r"--summary-only: \d+ step\(s\).*seed0/sft/pope"):
            run_experiment(load_experiment_config(None, cfg), summary_only=True, echo=lambda s: None)
        (out / "pope_marker").rename(out / "seed0" / "sft" / "pope" / "done.json")
    finally:
        base.with_name(base.name + "_away").rename(base)

    # a deleted marker re-runs that arm's step and what reads it, nothing else
    (out / "seed0" / "sft" / "chair" / "done.json").unlink()
    third, _ = _run(cfg)
    assert set(third["ran"]) == {"seed0/sft/chair", "seed0/sft/lengths", "seed0/compare", "seed0/compare_ablations"}

    # the arm's training marker: the finished run trains afresh, its evaluations re-run, nothing else
    sft = out / "seed0" / "sft"
    (sft / "train" / "done.json").unlink()
    fourth, _ = _run(cfg)
    assert {k for k in fourth["ran"] if not k.startswith("seed0/compare")} == {
        f"seed0/sft/{s}" for s in ("train", "pope", "probes", "mme", "chair", "lengths")}
    assert "--resume auto" not in (sft / "train" / "log.txt").read_text()

    # an interrupted training (a checkpoint, no final adapter, no marker) continues from its checkpoint
    import shutil

    shutil.rmtree(sft / "train" / "adapter")
    (sft / "train" / "done.json").unlink()
    fifth, _ = _run(cfg)
    assert "seed0/sft/train" in fifth["ran"] and "seed0/seed/train" not in fifth["ran"]
    assert "--resume auto" in (sft / "train" / "log.txt").read_text()
    assert (sft / "train" / "adapter" / "adapter_config.json").is_file()
    print(f"micro experiment: first run {first_s:.1f} s ({len(first['ran'])} steps), resume {resume_s:.1f} s")


def test_changed_settings_rerun_only_the_affected_steps(world_model, tmp_path):
    """A dry run after a config change marks the touched steps (and their downstream) to run, nothing else."""
    from seedvlm.experiment import Plan, load_experiment_config, plan_status
    from seedvlm.io import write_json

    cfg = load_experiment_config(None, micro_config(tmp_path, world_model, ablations=None))
    plan = Plan(cfg)
    # pretend every step finished
    tokens = {}
    for st in plan.steps:
        tokens[st.key] = st.key
        write_json(st.folder / "done.json", {"settings": st.settings, "deps": {d: tokens[d] for d in st.deps},
                                             "token": st.key})
    assert set(plan_status(plan).values()) == {"skip"}
    cfg2 = load_experiment_config(None, micro_config(tmp_path, world_model, ablations=None, max_new_tokens=16))
    status = plan_status(Plan(cfg2))
    runs = {k for k, v in status.items() if v == "run"}
    assert "seed0/sft/train" not in runs and "seed0/sft/pope" not in runs
    assert {"seed0/sft/chair", "seed0/seed_cd/beta_0", "seed0/base/lengths", "seed0/compare"} <= runs


def test_intervals_and_matched_recall():
    from seedvlm.experiment import chair_at_recall, frontier, mean_ci, t975

    assert mean_ci([0.5])["ci95"] is None and mean_ci([0.5])["n"] == 1
    st = mean_ci([1.0, 2.0, 3.0])
    assert st["mean"] == 2.0 and math.isclose(st["half_width"], 4.303 * 1.0 / math.sqrt(3), rel_tol=1e-9)
    assert t975(2) == 4.303 and 1.96 < t975(100) < 2.0
    pts = [{"label": "a", "recall": 0.9, "chair_i": 0.10}, {"label": "b", "recall": 0.7, "chair_i": 0.04},
           {"label": "dominated", "recall": 0.6, "chair_i": 0.08}, {"label": "c", "recall": 0.5, "chair_i": 0.02}]
    assert [p["label"] for p in frontier(pts)] == ["c", "b", "a"]
    assert math.isclose(chair_at_recall(pts, 0.8), 0.07)
    assert chair_at_recall(pts, 0.9) == 0.10 and chair_at_recall(pts, 0.95) is None
    assert chair_at_recall(pts, 0.4) is None


def test_average_ranks_and_spearman_with_ties():
    from seedvlm.eval.statistics import average_ranks, spearman

    assert average_ranks([3.0, 1.0, 3.0, 2.0]) == [3.5, 1.0, 3.5, 2.0]
    # x has a tie: average ranks give rho = 4.5 / sqrt(4.5 * 5) (ordinal ranks would give 0.8 or 1.0 by input order)
    assert math.isclose(spearman([1.0, 2.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0]), 4.5 / math.sqrt(22.5))
    assert math.isclose(spearman([1.0, 2.0, 3.0], [9.0, 5.0, 1.0]), -1.0)
    assert spearman([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]) is None and spearman([1.0, 2.0], [1.0, 2.0]) is None


def test_goals_are_checked_as_the_config_states_them():
    """Each goal on the arm's per-seed value, or its relative change / difference against a reference arm, over the
    seeds where both have the metric; bounds inclusive; a goal whose reference arm did not run is left out."""
    from seedvlm.experiment.summary import _goals

    per = {(0, "base"): {"m": 0.20, "f1": 0.70}, (1, "base"): {"m": 0.10, "f1": 0.72},
           (0, "seed"): {"m": 0.10, "f1": 0.75, "yes": 0.50}, (1, "seed"): {"m": 0.08, "f1": 0.75, "yes": 0.60},
           (0, "sft"): {"m": 0.0}}
    goals = [{"goal": "rel", "metric": "m", "vs": "base", "change": "relative", "max": -0.30},
             {"goal": "diff", "metric": "f1", "vs": "base", "change": "difference", "min": 0.03},
             {"goal": "value", "metric": "yes", "min": 0.45, "max": 0.55},
             {"goal": "vs sft", "metric": "m", "vs": "sft", "change": "relative", "max": 0.0},
             {"goal": "vs mask", "metric": "m", "vs": "seed_mask", "change": "relative", "max": 0.0}]
    rows = {r["goal"]: r for r in _goals(per, [0, 1], ["base", "sft", "seed"], ["seed", "seed_mask"], goals)}
    assert list(rows) == ["rel", "diff", "value"]  # vs sft: its reference is 0 (no relative change); no seed_mask
    assert math.isclose(rows["rel"]["measured"]["mean"], (-0.5 - 0.2) / 2) and rows["rel"]["met"]
    assert rows["rel"]["measured"]["values"] == [-0.5, pytest.approx(-0.2)] and rows["rel"]["unit"] == "relative"
    assert math.isclose(rows["diff"]["measured"]["mean"], (0.05 + 0.03) / 2) and rows["diff"]["met"]
    assert rows["diff"]["unit"] == "points"
    assert math.isclose(rows["value"]["measured"]["mean"], 0.55) and rows["value"]["met"]
    assert rows["value"]["unit"] == "percent" and rows["value"]["measured"]["n"] == 2
    tight = [dict(goals[2], max=0.54)]
    assert _goals(per, [0, 1], ["seed"], ["seed"], tight)[0]["met"] is False


def test_compare_reports_chair_at_matched_recall_with_the_shared_statistics():
    """`seedvlm compare` and the experiment summary use one frontier and one interpolation: the level is the highest
    recall every run reaches, each run's value its frontier's interpolation there."""
    from seedvlm.eval.report import matched_recall
    from seedvlm.eval.statistics import chair_at_recall

    a = [{"label": "a", "recall": 0.9, "chair_i": 0.10}, {"label": "a-cut", "recall": 0.5, "chair_i": 0.02}]
    b = [{"label": "b", "recall": 0.7, "chair_i": 0.06}, {"label": "b-worse", "recall": 0.6, "chair_i": 0.08}]
    runs = [{"name": "a", "chair_points": a}, {"name": "b", "chair_points": b},
            {"name": "pope-only", "chair_points": []}]
    m = matched_recall(runs)
    assert m["level"] == 0.7 and set(m["chair_i"]) == {"a", "b"}
    assert math.isclose(m["chair_i"]["a"], chair_at_recall(a, 0.7)) and math.isclose(m["chair_i"]["a"], 0.06)
    assert m["chair_i"]["b"] == 0.06 and m["frontier"]["b"] == ["b"]
    assert matched_recall([{"name": "x", "chair_points": []}]) is None


def test_variant_names_and_config_errors(tmp_path):
    from seedvlm.errors import SeedVLMError
    from seedvlm.experiment import load_experiment_config, variant_name

    assert variant_name("distill_weight", 0.5) == "seed_w0.5"
    assert variant_name("temperature", 1.0) == "seed_T1"
    assert variant_name("purify_space", "logprob") == "seed_purify-logprob"
    assert variant_name("alpha", 0.1) == "seed_alpha0.1"
    with pytest.raises(SeedVLMError, match="unknown arm"):
        load_experiment_config(None, {"arms": ["base", "dpo"]})
    with pytest.raises(SeedVLMError, match="seed_cd decodes with the seed arm"):
        load_experiment_config(None, {"arms": ["base", "seed_cd"], "w_sweep": []})
    with pytest.raises(SeedVLMError, match="unknown TrainConfig option"):
        load_experiment_config(None, {"ablations": {"alhpa": [0.1]}})
    for goal, msg in (({"goal": "g", "metric": "m", "vs": "base", "max": 0}, "'change' and 'vs' go together"),
                      ({"goal": "g", "metric": "m"}, "numeric 'min' and/or 'max'"),
                      ({"goal": "g", "metric": "m", "vs": "dpo", "change": "relative", "max": 0}, "unknown arm"),
                      ({"goal": "g", "metric": "m", "max": 0, "unit": "x"}, "unknown key")):
        with pytest.raises(SeedVLMError, match=msg):
            load_experiment_config(None, {"goals": [goal]})
    cfg = load_experiment_config(None, ["--goals", "[{goal: low, metric: chair.chair_i, max: 0.1}]"])
    assert cfg.goals == [{"goal": "low", "metric": "chair.chair_i", "max": 0.1}]
    cfg = load_experiment_config(None, ["--ablations", "none", "--train-overrides", "{report_to: none}",
                                        "--seeds", "1,2"])
    assert cfg.ablations is None and cfg.train_overrides == {"report_to": "none"} and cfg.seeds == [1, 2]


@pytest.mark.parametrize("name", ["experiment_world.yaml", "experiment_smoke.yaml"])
def test_shipped_experiment_configs_load_and_plan(name, tmp_path):
    from seedvlm.experiment import Plan, load_experiment_config

    path = ROOT / "configs" / name
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("# seedvlm experiment --config configs/" + name)
    cfg = load_experiment_config(path, {"out": str(tmp_path / "exp")})
    plan = Plan(cfg)
    keys = [s.key for s in plan.steps]
    assert len(keys) == len(set(keys))
    for arm in cfg.arms:
        assert f"seed{cfg.seeds[0]}/{arm}/chair" in keys
    assert cfg.goals and {g["metric"] for g in cfg.goals} >= {"matched.chair_i", "pope.adversarial.f1"}


@pytest.mark.slow
def test_parallel_script_matches_the_plan_of_one_process(world_model, tmp_path):
    """scripts/experiment_parallel.sh: shared steps once, one process per seed, then a pass over all seeds that finds
    every training and evaluation step done (only the cheap base copies and comparisons of later seeds re-run)."""
    import os
    import subprocess
    import sys

    import yaml

    cfg = micro_config(tmp_path, world_model, seeds=[0, 1], arms=["base", "sft", "seed"],
                       ablations={"temperature": [1.0]}, beta_sweep=[], threads=1)
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = dict(os.environ, SEEDS="0 1", GPUS="", LOGDIR=str(tmp_path),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               PYTHONPATH=f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    run = subprocess.run(["bash", str(ROOT / "scripts" / "experiment_parallel.sh"), str(path)], env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads((tmp_path / "exp" / "summary.json").read_text())
    assert summary["seeds"] == [0, 1]
    for seed in (0, 1):
        assert (tmp_path / "exp" / f"seed{seed}" / "seed" / "train" / "adapter").is_dir()
        assert f"experiment_seed{seed}.log" in os.listdir(tmp_path)
    assert (tmp_path / "exp" / "seed0" / "seed_T1" / "train" / "adapter").is_dir()  # ablations: first seed only
    assert not (tmp_path / "exp" / "seed1" / "seed_T1").exists()
    last = [ln for ln in run.stderr.splitlines() if " steps run, " in ln][-1]
    n_run = int(last.split(": ")[1].split(" steps run")[0])
    assert n_run <= 6, last  # seed 1's base copies + lengths + the two comparisons, nothing trained or evaluated
    again = subprocess.run([sys.executable, "-m", "seedvlm", "experiment", "--config", str(path), "--seeds", "0,1"],
                           env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert " 0 steps run, " in again.stderr  # one plain run over the same folder has nothing left to do


def test_parallel_script_leaves_no_process_behind_when_its_group_is_killed(tmp_path):
    """A deadline or Ctrl-C that stops scripts/experiment_parallel.sh stops its experiment processes too (on the lent
    GPU machine, `timeout`'s own process groups let them run on after the script was killed)."""
    import os
    import signal
    import subprocess
    import time

    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "python3").write_text(f"#!/usr/bin/env bash\necho $$ >> {tmp_path}/pids\nexec sleep 60\n")
    (fake / "python3").chmod(0o755)
    env = dict(os.environ, SEEDS="0 1", GPUS="", LOGDIR=str(tmp_path), PATH=f"{fake}{os.pathsep}{os.environ['PATH']}")
    proc = subprocess.Popen(["bash", str(ROOT / "scripts" / "experiment_parallel.sh"), "cfg.yaml"], env=env,
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pids_file = tmp_path / "pids"
    for _ in range(100):
        if pids_file.is_file() and pids_file.read_text().strip():
            break
        time.sleep(0.05)
    pid = int(pids_file.read_text().split()[0])
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=10)

    def alive(p: int) -> bool:
        try:
            os.kill(p, 0)
        except ProcessLookupError:
            return False
        stat = Path(f"/proc/{p}/stat")
        return not (stat.is_file() and stat.read_text().split(") ")[1].startswith("Z"))  # a zombie is gone

    for _ in range(50):
        if not alive(pid):
            break
        time.sleep(0.1)
    try:
        assert not alive(pid), "the experiment process outlived its script"
    finally:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_perturbation_kinds_are_ablations_on_the_frontier(world_model, tmp_path):
    """noise is a string-valued ablation: one SEED variant per kind (gaussian is the seed arm itself, not trained
    twice), each trained with its kind, evaluated like every arm and in the summary's ablation table."""
    from seedvlm.experiment import Plan, load_experiment_config, summarize

    kinds = ["gaussian", "ddpm", "mask", "blur", "blank"]
    cfg = load_experiment_config(None, micro_config(tmp_path, world_model, ablations={"noise": kinds}))
    plan = Plan(cfg)
    assert plan.variants[0] == ["seed_noise-ddpm", "seed_noise-mask", "seed_noise-blur", "seed_noise-blank"]
    assert [(r["value"], r["arm"]) for r in plan.ablation_rows] == [("gaussian", "seed")] + [
        (k, f"seed_noise-{k}") for k in kinds[1:]]
    steps = {s.key: s for s in plan.steps}
    for k in kinds[1:]:
        assert steps[f"seed0/seed_noise-{k}/train"].settings["noise"] == k
        assert f"--noise={k}" in steps[f"seed0/seed_noise-{k}/train"].describe
        assert f"seed0/seed_noise-{k}/chair" in steps and f"seed0/seed_noise-{k}/lengths" in steps
    md = (summarize(plan), (tmp_path / "exp" / "summary.md").read_text())[1]
    assert "| noise | blank | seed_noise-blank |" in md and "| noise | gaussian | seed |" in md


@pytest.mark.slow
def test_a_blank_image_ablation_runs(world_model, tmp_path):
    """The pure language prior as SEED's perturbation, end to end on the micro world: trained, evaluated, on the
    CHAIR frontier of the summary."""
    from seedvlm.experiment import load_experiment_config, run_experiment

    cfg = micro_config(tmp_path, world_model, arms=["base", "seed"], ablations={"noise": ["blank"]}, probe_images=0,
                       beta_sweep=[], length_cuts=[3])
    result = run_experiment(load_experiment_config(None, cfg), echo=lambda s: None)
    out = tmp_path / "exp" / "seed0" / "seed_noise-blank"
    from seedvlm.train.checkpoints import CONFIG_FILE

    assert json.loads((out / "train" / CONFIG_FILE).read_text())["noise"] == "blank"
    assert (out / "train" / "adapter").is_dir() and (out / "chair" / "results.json").is_file()
    row = next(r for r in result["summary"]["ablations"] if r["arm"] == "seed_noise-blank")
    assert row["value"] == "blank" and row["metrics"]["chair.chair_i"]["mean"] is not None
    assert result["summary"]["matched_recall"]["per_seed"]["seed_noise-blank"]["0"]["points"]
