"""scripts/kinds_vs_check7.py: each perturbation-kind ablation beside the base's check-7 change under that kind."""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "docs" / "results"


def _kind(noise, partner, present, **settings):
    return {"settings": {"noise": noise, "seed": 0, **settings}, "partner_change": partner, "present_change": present}


def _run(arm, chair_i, recall):
    pts = [{"label": arm, "knob": "main", "chair_i": chair_i, "recall": recall},
           {"label": "16 words", "knob": "words", "chair_i": chair_i / 2, "recall": recall / 2}]
    return {"0": {"points": pts}}


def test_kinds_are_paired_by_settings_and_scored_at_one_recall(load_script):
    kinds = {"gaussian_a0.3": _kind("gaussian", 0.2, -0.6, alpha=0.3),
             "gaussian_a0.1": _kind("gaussian", 0.4, -0.9, alpha=0.1),
             "ddpm_t500": _kind("ddpm", 0.0, -0.1, noise_step=500),
             "blank": _kind("blank", -1.2, -2.4)}
    ablations = [{"option": "alpha", "value": 0.1, "arm": "seed_alpha0.1"},
                 {"option": "alpha", "value": 0.3, "arm": "seed"},
                 {"option": "noise", "value": "gaussian", "arm": "seed"},
                 {"option": "noise", "value": "ddpm", "arm": "seed_noise-ddpm"},
                 {"option": "noise", "value": "blank", "arm": "seed_noise-blank"},
                 {"option": "noise", "value": "blur", "arm": "seed_noise-blur"}]  # no blur in the readiness: dropped
    chair = {"seed": 0.16, "seed_alpha0.1": 0.14, "seed_noise-ddpm": 0.17, "seed_noise-blank": 0.19,
             "seed_noise-blur": 0.18}
    for ab in ablations:
        ab["metrics"] = {"chair.chair_i": {"mean": chair[ab["arm"]]}, "chair.recall": {"mean": 0.7}}
    per_seed = {arm: _run(arm, c, 0.7) for arm, c in chair.items()}
    per_seed["base"] = _run("base", 0.2, 0.8)
    per_seed["seed"]["0"]["points"].append({"label": "w=0.5", "knob": "w", "chair_i": 0.01, "recall": 0.9})
    summary = {"seeds": [0], "ablations": ablations, "metrics": {}, "matched_recall": {"per_seed": per_seed}}
    res = load_script("kinds_vs_check7").analyse(summary, {"readiness": {"prior_under_noise": {"kinds": kinds}}})
    got = {x["arm"]: x for x in res["kinds"]}
    assert sorted(got) == ["seed", "seed_alpha0.1", "seed_noise-blank", "seed_noise-ddpm"]
    assert got["seed"]["kind"] == "gaussian_a0.3" and got["seed_alpha0.1"]["kind"] == "gaussian_a0.1"
    assert got["seed"]["prior_shows"] and not got["seed_noise-ddpm"]["prior_shows"]
    assert abs(res["recall_level"] - 0.7) < 1e-9  # the sweep point at 0.9 is not part of the like-for-like curve
    assert abs(got["seed"]["chair_i_at_level"] - 0.16) < 1e-9
    assert abs(res["base_chair_i_at_level"] - (0.1 + (0.2 - 0.1) * (0.7 - 0.4) / 0.4)) < 1e-9
    assert abs(got["seed_alpha0.1"]["vs_base_at_level"] - (0.14 / 0.175 - 1)) < 1e-9
    # partners' change ranks exactly against CHAIRi here: rho = -1
    assert abs(res["spearman_partner_change_vs_chair_i"] + 1) < 1e-9


def test_committed_run_and_one_line_errors(tmp_path, capsys, load_script):
    summary = RESULTS / "2026-11-26-tiny-n11-full-gpu" / "summary.json"
    readiness = RESULTS / "2026-12-05-tiny-base-readiness-check7-prior-under-noise" / "readiness_own_world.json"
    mod = load_script("kinds_vs_check7")
    assert mod.main(["--summary", str(summary), "--readiness", str(readiness), "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "kinds_vs_check7.json").read_text())
    data = json.loads(readiness.read_text())
    kinds = data.get("readiness", data)["prior_under_noise"]["kinds"]
    assert {x["kind"] for x in res["kinds"]} == {"gaussian_a0.3", "gaussian_a0.1"}
    for x in res["kinds"]:
        assert x["partner_change"] == kinds[x["kind"]]["partner_change"]
    assert "| gaussian_a0.1 | seed_alpha0.1 |" in (tmp_path / "kinds_vs_check7.md").read_text()
    assert (tmp_path / "kinds_vs_check7.png").read_bytes()[:4] == b"\x89PNG"
    capsys.readouterr()
    assert mod.main(["--summary", str(readiness), "--readiness", str(readiness), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(readiness) in err
    assert not (tmp_path / "o").exists()


def test_several_readiness_runs_are_averaged_per_kind(load_script):
    def run(partner):
        return {"prior_under_noise": {"kinds": {"gaussian_a0.3": _kind("gaussian", partner, -0.5, alpha=0.3)}}}

    # a readiness JSON (figures at the top) and a pretrain summary (figures under "readiness")
    kinds = load_script("kinds_vs_check7").mean_kinds([run(0.3), {"readiness": run(-0.1)}])
    assert abs(kinds["gaussian_a0.3"]["partner_change"] - 0.1) < 1e-9 and kinds["gaussian_a0.3"]["draws"] == 2
    assert kinds["gaussian_a0.3"]["present_change"] == -0.5

