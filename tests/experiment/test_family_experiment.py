"""`seedvlm experiment` on a tiny Qwen2.5-VL folder and a tiny world (CPU, one thread, 2 steps, 1 seed): every arm
(base, sft, seed, seed_mask and the contrastive base_cd, seed_cd) runs end to end through the family paths and the
summary holds their metrics; what the family cannot run (perturbations its pixel layout does not take, another
family's options) is refused in one line when the plan is made."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from seedvlm.errors import SeedVLMError

ROOT = Path(__file__).resolve().parents[2]
ARMS = ["base", "sft", "seed", "seed_mask", "base_cd", "seed_cd"]
MAX_PIXELS = 84 * 84

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def qwen(tmp_path_factory) -> Path:
    from seedvlm.models.family_folders import build_qwen_folder

    return build_qwen_folder(tmp_path_factory.mktemp("models") / "qwen2.5-vl")


def family_config(tmp: Path, model: Path, **over) -> dict:
    """1 seed, 2 train steps per arm, no sweeps or ablations, 2 POPE/probe/CHAIR images, a few new tokens."""
    cfg = dict(
        out=str(tmp / "exp"), base_model=str(model), world_options={"train": 6, "val": 4, "size": 32, "seed": 0},
        prepare_max_samples=4, seeds=[0], arms=ARMS, family_options={"max_pixels": MAX_PIXELS},
        seed_config=str(ROOT / "configs" / "seed_tiny.yaml"), sft_config=str(ROOT / "configs" / "sft_tiny.yaml"),
        train_overrides={"report_to": "none", "per_device_batch_size": 2, "save_steps": 2, "lora_r": 4,
                         "lora_alpha": 8},
        max_steps=2, w_sweep=[], length_cuts=[3], ablations=None, pope_images=2, probe_images=2,
        probe_kinds=["color"], chair_images=2, max_new_tokens=6, pope_max_new_tokens=3, batch_size=4,
        device="cpu", threads=1)
    cfg.update(over)
    return cfg


def _plan(cfg: dict):
    from seedvlm.experiment import load_experiment_config
    from seedvlm.experiment.plan import Plan

    return Plan(load_experiment_config(None, cfg))


def test_family_experiment_runs_the_arms_and_summarizes(qwen, tmp_path):
    from seedvlm.experiment import load_experiment_config, run_experiment

    cfg = family_config(tmp_path, qwen)
    result = run_experiment(load_experiment_config(None, cfg), echo=lambda s: None)
    out = Path(cfg["out"])
    assert len(result["ran"]) == len(result["plan"].steps)
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["arms"]) == set(ARMS)
    for arm in ARMS:
        m = summary["metrics"][arm]
        for key in ("pope.adversarial.f1", "probes.mean.accuracy", "mme.total.score", "chair.chair_i"):
            assert m[key]["n"] == 1, (arm, key)
        pope = json.loads((out / "seed0" / arm / "pope" / "results.json").read_text())
        assert pope["config"]["max_pixels"] == MAX_PIXELS and pope["model"] == str(qwen)
    for arm in ("sft", "seed", "seed_mask"):
        train = json.loads((out / "seed0" / arm / "train" / "train_config.json").read_text())
        assert train["family"] == "qwen2_vl" and train["max_pixels"] == MAX_PIXELS
    assert json.loads((out / "seed0" / "seed_mask" / "train" / "train_config.json").read_text())["plausibility"] == 0.1
    assert "| seed_mask |" in (out / "summary.md").read_text()
    cd = json.loads((out / "seed0" / "seed_cd" / "pope" / "results.json").read_text())["config"]
    assert cd["decoding"] == "contrastive" and cd["max_pixels"] == MAX_PIXELS


def test_family_plan_refusals(qwen, tmp_path):
    with pytest.raises(SeedVLMError, match=r"perturbation\(s\) blur, mask .* not available"):
        _plan(family_config(tmp_path, qwen, ablations={"noise": ["gaussian", "mask", "blur"]}))
    with pytest.raises(SeedVLMError, match="'do_image_splitting' does not apply to qwen2_vl models"):
        _plan(family_config(tmp_path, qwen, family_options={"do_image_splitting": False}))
    with pytest.raises(SeedVLMError, match="own chat template"):
        _plan(family_config(tmp_path, qwen, prompt_style="llava-1.5"))
    # the plan of the embedded world's config runs once the arms and ablations fit the family
    from seedvlm.experiment import load_experiment_config
    from seedvlm.experiment.plan import Plan

    cfg = load_experiment_config(ROOT / "configs" / "experiment_world.yaml", [
        "--base-model", str(qwen), "--out", str(tmp_path / "w"), "--seeds", "0", "--arms", "base,sft,seed,seed_mask",
        "--ablations", "{noise: [gaussian, ddpm], temperature: [1.0]}"])
    steps = {s.key: s for s in Plan(cfg).steps}
    assert "seed0/seed_mask/chair" in steps and "seed0/seed_noise-ddpm/train" in steps
    # unset family options stay out of the training settings (earlier runs' markers still match); set ones are in
    assert not {"min_pixels", "max_pixels"} & set(steps["seed0/seed/train"].settings)
    sft = next(s for s in _plan(family_config(tmp_path, qwen)).steps if s.key == "seed0/sft/train")
    assert sft.settings["max_pixels"] == MAX_PIXELS
