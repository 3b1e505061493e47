"""The prompt style reaches every step of an experiment: training renders in it, evaluation prompts in it."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("style", ["hf", "llava-1.5"])
def test_experiment_threads_the_prompt_style(style, tmp_path):
    from seedvlm.experiment import Plan, load_experiment_config

    cfg = load_experiment_config(ROOT / "configs" / "experiment_smoke.yaml",
                                 {"out": str(tmp_path / "exp"), "prompt_style": style})
    plan = Plan(cfg)
    trains = [s for s in plan.steps if s.kind == "train"]
    evals = [s for s in plan.steps if s.kind == "eval"]
    assert trains and evals
    assert all(s.settings["prompt_style"] == style for s in trains)
    for s in evals:
        argv = [str(a) for a in s.settings]
        assert (("--prompt-style" in argv) and argv[argv.index("--prompt-style") + 1] == style) == (style != "hf")
        # llava-1.5's own POPE suffix applies unless one is configured; hf keeps passing the configured one
        assert any(a.startswith("--prompt-suffix=") for a in argv) == (style == "hf" and argv[1] == "pope")


def test_experiment_refuses_an_unknown_style(tmp_path):
    from seedvlm.errors import SeedVLMError
    from seedvlm.experiment import load_experiment_config

    with pytest.raises(SeedVLMError, match="prompt_style must be hf or llava-1.5"):
        load_experiment_config(ROOT / "configs" / "experiment_smoke.yaml",
                               {"out": str(tmp_path / "exp"), "prompt_style": "vicuna"})
