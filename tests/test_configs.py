"""Every shipped training config loads with TrainConfig, says how to run it, and the 7B one is the seed's recipe.

Which files are training configs: those whose FIRST line is a comment naming `seedvlm train` (the exact command,
e.g. `# seedvlm train --config configs/seed_tiny.yaml ...`). Other configs in configs/ (pretraining, evaluation)
start with their own command and are skipped here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
MARKER = re.compile(r"^#.*\bseedvlm train\b")


def train_configs() -> list[Path]:
    return sorted(p for p in CONFIGS.glob("*.yaml")
                  if MARKER.match(p.read_text(encoding="utf-8").splitlines()[0] if p.stat().st_size else ""))


def test_the_shipped_train_configs_are_found():
    names = {p.name for p in train_configs()}
    assert {"seed_tiny.yaml", "sft_tiny.yaml", "seed_llava15_7b.yaml"} <= names


@pytest.mark.parametrize("path", train_configs(), ids=lambda p: p.name)
def test_train_config_loads_and_names_its_command(path):
    from seedvlm.config import load_config, load_yaml
    from seedvlm.train.config import TrainConfig

    cfg = load_config(TrainConfig, path)
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert f"--config configs/{path.name}" in first
    assert set(load_yaml(path)) <= set(TrainConfig.__dataclass_fields__)
    assert cfg.method in ("seed", "sft")
    # overrides from the command line win over the file
    assert load_config(TrainConfig, path, ["--alpha", "0.5", "--max-steps", "7"]).alpha == 0.5


def test_tiny_pair_differs_only_in_method_and_output_dir():
    from seedvlm.config import load_yaml

    seed, sft = load_yaml(CONFIGS / "seed_tiny.yaml"), load_yaml(CONFIGS / "sft_tiny.yaml")
    diff = {k for k in set(seed) | set(sft) if seed.get(k) != sft.get(k)}
    assert diff == {"method", "output_dir"}
    assert 1e-4 <= seed["learning_rate"] <= 5e-4 and seed["max_steps"] <= 500


def test_llava15_7b_config_is_the_seed_recipe():
    from seedvlm.config import load_config
    from seedvlm.train.config import TrainConfig

    c = load_config(TrainConfig, CONFIGS / "seed_llava15_7b.yaml")
    assert (c.method, c.noise, c.alpha, c.temperature, c.distill_weight, c.direction) == ("seed", "gaussian", 0.3,
                                                                                         2.0, 0.7, "reverse")
    assert (c.learning_rate, c.lora_r, c.lora_alpha, c.lora_dropout) == (2e-6, 64, 128, 0.05)
    assert c.per_device_batch_size * c.grad_accumulation == 8 and c.num_epochs == 3 and c.dtype == "bf16"
    assert c.beta_schedule == "quantile" and c.beta_values == [1.1, 0.8, 0.6, 0.4] and c.plausibility is None


def test_bad_values_are_errors_naming_the_option():
    from seedvlm.config import load_config
    from seedvlm.errors import SeedVLMError
    from seedvlm.train.config import TrainConfig

    with pytest.raises(SeedVLMError, match="direction"):
        load_config(TrainConfig, CONFIGS / "seed_tiny.yaml", ["--direction", "sideways"])
    with pytest.raises(SeedVLMError, match="unknown option"):
        load_config(TrainConfig, CONFIGS / "seed_tiny.yaml", ["--alhpa", "0.3"])
    with pytest.raises(SeedVLMError, match="beta_values"):
        load_config(TrainConfig, None, ["--beta-values", "1.0,0.5"])


def test_list_overrides_take_commas_or_a_yaml_list():
    from seedvlm.config import load_config
    from seedvlm.train.config import TrainConfig

    for text in ("2.2,1.6,1.2,0.8", "[2.2, 1.6, 1.2, 0.8]", " [2.2,1.6,1.2,0.8] "):
        assert load_config(TrainConfig, None, ["--beta-values", text]).beta_values == [2.2, 1.6, 1.2, 0.8]


def test_small_pretrain_config_loads_and_names_its_command():
    from seedvlm.config import load_config, load_yaml
    from seedvlm.pretrain.config import PretrainConfig

    path = CONFIGS / "pretrain_small.yaml"
    assert "seedvlm pretrain --config configs/pretrain_small.yaml" in path.read_text(encoding="utf-8").splitlines()[0]
    assert set(load_yaml(path)) <= set(PretrainConfig.__dataclass_fields__)
    cfg = load_config(PretrainConfig, path, ["--world", "w"])
    assert (cfg.preset, cfg.text_lr, cfg.vision_steps, cfg.instruct_lr, cfg.world) == ("small", 5e-4, 4000, 5e-4, "w")
