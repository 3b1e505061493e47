"""Every shipped training config loads with SeedConfig, says how to run it, and the 7B one is the reference
implementation's recipe; bad option values are refused with their valid range, old option names still read.

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
    from seedvlm.train.config import DEPRECATED_KEYS, SeedConfig

    cfg = load_config(SeedConfig, path)
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert f"--config configs/{path.name}" in first
    keys = set(load_yaml(path))
    assert keys <= set(SeedConfig.__dataclass_fields__) and not keys & set(DEPRECATED_KEYS)  # migrated
    assert cfg.method in ("seed", "sft")
    # overrides from the command line win over the file
    over = load_config(SeedConfig, path, ["--alpha", "0.5", "--max-steps", "7"])
    assert (over.alpha, over.max_steps) == (0.5, 7)


def test_tiny_pair_differs_only_in_method_and_output_dir():
    from seedvlm.config import load_yaml

    seed, sft = load_yaml(CONFIGS / "seed_tiny.yaml"), load_yaml(CONFIGS / "sft_tiny.yaml")
    diff = {k for k in set(seed) | set(sft) if seed.get(k) != sft.get(k)}
    assert diff == {"method", "output_dir"}
    assert 1e-4 <= seed["learning_rate"] <= 5e-4 and seed["max_steps"] <= 500


def test_llava15_7b_config_is_the_seed_recipe():
    from seedvlm.config import load_config
    from seedvlm.train.config import SeedConfig

    c = load_config(SeedConfig, CONFIGS / "seed_llava15_7b.yaml")
    assert (c.method, c.noise, c.alpha, c.temperature, c.distill_weight, c.direction) == ("seed", "gaussian", 0.3,
                                                                                         2.0, 0.7, "reverse")
    assert (c.learning_rate, c.lora_r, c.lora_alpha, c.lora_dropout) == (2e-6, 64, 128, 0.05)
    assert c.per_device_train_batch_size * c.gradient_accumulation_steps == 8 and c.num_train_epochs == 3
    assert c.dtype == "bf16" and c.bf16 and c.compile_layers and c.train_sampling_strategy == "group_by_length"
    assert c.beta_schedule == "quantile" and c.beta_values == [1.1, 0.8, 0.6, 0.4] and c.plausibility is None


def test_bad_values_are_errors_naming_the_option():
    from seedvlm.config import load_config
    from seedvlm.errors import SeedVLMError
    from seedvlm.train.config import SeedConfig

    with pytest.raises(SeedVLMError, match="direction"):
        load_config(SeedConfig, CONFIGS / "seed_tiny.yaml", ["--direction", "sideways"])
    with pytest.raises(SeedVLMError, match="unknown option 'alhpa'; did you mean 'alpha'"):
        load_config(SeedConfig, CONFIGS / "seed_tiny.yaml", ["--alhpa", "0.3"])
    with pytest.raises(SeedVLMError, match="beta_values"):
        load_config(SeedConfig, None, ["--beta-values", "1.0,0.5"])


def test_list_overrides_take_commas_or_a_yaml_list():
    from seedvlm.config import load_config
    from seedvlm.train.config import SeedConfig

    for text in ("2.2,1.6,1.2,0.8", "[2.2, 1.6, 1.2, 0.8]", " [2.2,1.6,1.2,0.8] "):
        assert load_config(SeedConfig, None, ["--beta-values", text]).beta_values == [2.2, 1.6, 1.2, 0.8]


def test_small_pretrain_config_loads_and_names_its_command():
    from seedvlm.config import load_config, load_yaml
    from seedvlm.pretrain.config import PretrainConfig

    path = CONFIGS / "pretrain_small.yaml"
    assert "seedvlm pretrain --config configs/pretrain_small.yaml" in path.read_text(encoding="utf-8").splitlines()[0]
    assert set(load_yaml(path)) <= set(PretrainConfig.__dataclass_fields__)
    cfg = load_config(PretrainConfig, path, ["--world", "w"])
    assert (cfg.preset, cfg.text_lr, cfg.vision_steps, cfg.instruct_lr, cfg.world) == ("small", 5e-4, 4000, 5e-4, "w")


# ---------------------------------------------------------------------------------------------------------------
# option values, old names, the command line
# ---------------------------------------------------------------------------------------------------------------

BAD_VALUES = [  # (override, the option named in the message, the valid range it states)
    (["--beta-values", "1.1,0.8,-0.6,0.4"], "beta_values", ">= 0"),
    (["--beta-fixed", "-1"], "beta_fixed", ">= 0"),
    (["--beta-max", "-0.5"], "beta_max", ">= 0"),
    (["--curriculum-end", "-1"], "curriculum_end", ">= 0"),
    (["--max-steps", "0"], "max_steps", "> 0, or -1"),
    (["--max-steps", "-1", "--num-train-epochs", "0"], "num_train_epochs", "> 0 when max_steps is -1"),
    (["--alpha", "0"], "alpha", "in (0, 1]"),
    (["--alpha", "1.5"], "alpha", "in (0, 1]"),
    (["--temperature", "0"], "temperature", "> 0"),
    (["--distill-weight", "1.2"], "distill_weight", "in [0, 1]"),
    (["--mask-ratio", "-0.1"], "mask_ratio", "in [0, 1]"),
    (["--curriculum-warmup", "2"], "curriculum_warmup", "in [0, 1]"),
    (["--plausibility", "0"], "plausibility", "in (0, 1]"),
    (["--max-samples", "0"], "max_samples", "> 0"),
    (["--save-total-limit", "0"], "save_total_limit", "> 0"),
]


@pytest.mark.parametrize("override,name,valid", BAD_VALUES, ids=lambda v: v if isinstance(v, str) else None)
def test_bad_values_are_refused_with_their_valid_range(override, name, valid):
    from seedvlm.config import load_config
    from seedvlm.errors import SeedVLMError
    from seedvlm.train.config import SeedConfig

    with pytest.raises(SeedVLMError) as e:
        load_config(SeedConfig, CONFIGS / "seed_tiny.yaml", override)
    msg = str(e.value)
    assert "\n" not in msg and f"{name} = " in msg and f"must be {valid}" in msg, msg


def test_edge_values_inside_the_ranges_are_accepted():
    from seedvlm.config import load_config
    from seedvlm.train.config import SeedConfig

    c = load_config(SeedConfig, CONFIGS / "seed_tiny.yaml", ["--alpha", "1", "--beta-values", "0,0,0,0",
                                                             "--beta-fixed", "0", "--distill-weight", "0",
                                                             "--max-steps", "-1", "--num-train-epochs", "0.5"])
    assert (c.alpha, c.beta_values, c.beta_fixed, c.max_steps, c.num_train_epochs) == (1.0, [0.0] * 4, 0.0, -1, 0.5)


def test_old_option_names_are_read_with_one_notice_each(tmp_path, caplog):
    import yaml

    from seedvlm.config import load_config
    from seedvlm.train.config import DEPRECATED_KEYS, SeedConfig

    old = {"per_device_batch_size": 4, "grad_accumulation": 2, "num_epochs": 2, "lr_scheduler": "linear",
           "num_workers": 1, "gradient_checkpointing": True, "torch_compile": True, "lora_targets": ["q_proj"],
           "warmup_ratio": 0.1, "group_by_length": True}
    new = {"per_device_train_batch_size": 4, "gradient_accumulation_steps": 2, "num_train_epochs": 2,
           "lr_scheduler_type": "linear", "dataloader_num_workers": 1, "activation_checkpointing": True,
           "compile_layers": True, "lora_target_modules": ["q_proj"], "warmup_steps": 0.1,
           "train_sampling_strategy": "group_by_length"}
    assert set(old) == set(DEPRECATED_KEYS) and {DEPRECATED_KEYS[k] for k in old} == set(new)
    (tmp_path / "old.yaml").write_text(yaml.safe_dump(old))
    (tmp_path / "new.yaml").write_text(yaml.safe_dump(new))
    with caplog.at_level("WARNING", logger="seedvlm.train"):
        a = load_config(SeedConfig, tmp_path / "old.yaml")
    notices = [r.getMessage() for r in caplog.records if "is now" in r.getMessage()]
    assert len(notices) == len(old) and all("old.yaml" in n for n in notices)
    b = load_config(SeedConfig, tmp_path / "new.yaml")
    assert a.to_dict() == b.to_dict()
    assert not a.torch_compile  # the old per-layer switch is compile_layers, never transformers' whole-model one
    # on the command line too, as the experiment passes its train_overrides
    c = load_config(SeedConfig, tmp_path / "new.yaml", ["--per-device-batch-size", "3", "--group-by-length", "false"])
    assert (c.per_device_train_batch_size, c.train_sampling_strategy) == (3, "random")
    # warmup_steps > 0 wins over warmup_ratio, as before
    d = load_config(SeedConfig, None, {"warmup_ratio": "0.2", "warmup_steps": "5"})
    assert d.warmup_steps == 5
    assert load_config(SeedConfig, None, {"warmup_ratio": "0.2", "warmup_steps": "0"}).warmup_steps == 0.2


def _cli(argv, capsys):
    from seedvlm.cli import main

    capsys.readouterr()
    rc = main(argv)
    return rc, capsys.readouterr().err


def test_cli_bad_option_is_one_line_and_exit_2(capsys):
    rc, err = _cli(["train", "--config", str(CONFIGS / "seed_tiny.yaml"), "--beta-fixed", "-1"], capsys)
    assert rc == 2 and err.strip().count("\n") == 0 and "beta_fixed = -1.0: must be >= 0" in err, err
    rc, err = _cli(["train", "--config", str(CONFIGS / "seed_tiny.yaml"), "--max-steps", "0"], capsys)
    assert rc == 2 and "max_steps = 0" in err and "Traceback" not in err


def test_train_without_config_says_which_recipe_it_uses(capsys, caplog):
    from seedvlm.commands.train import NO_CONFIG

    with caplog.at_level("WARNING", logger="seedvlm.train"):
        rc, err = _cli(["train"], capsys)
    assert rc == 2 and "set --model, --data, --images" in err  # nothing to train on: refused before any load
    assert NO_CONFIG in caplog.text and "LLaVA-1.5-7B" in NO_CONFIG and "configs/seed_tiny.yaml" in NO_CONFIG


def _help(argv, capsys) -> str:
    from seedvlm.cli import main

    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 0
    return capsys.readouterr().out


def test_train_help_is_grouped_and_says_how_to_see_every_option(capsys):
    short = _help(["train", "--help"], capsys)
    for title in ("the dynamic b:", "LoRA:", "optimization (transformers TrainingArguments):"):
        assert title in short
    assert "--beta-values" in short and "--gradient-accumulation-steps" in short and "--help-all" in short
    assert "--adam-beta1" not in short and "--hub-token" not in short
    every = _help(["train", "--help-all"], capsys)
    assert "--adam-beta1" in every and "--beta-values" in every


def test_teach_help_lists_only_what_teach_reads(capsys):
    text = _help(["teach", "--help"], capsys)
    for used in ("--alpha", "--noise", "--seed", "--model", "--per-device-train-batch-size"):
        assert used in text
    for unused in ("--learning-rate", "--beta-values", "--lora-r", "--distill-weight", "--adam-beta1"):
        assert unused not in text


def test_teach_says_which_options_it_ignores(tmp_path, capsys, caplog):
    with caplog.at_level("WARNING", logger="seedvlm.train"):
        rc, err = _cli(["teach", "--config", str(CONFIGS / "seed_tiny.yaml"), "--out", str(tmp_path / "c"),
                        "--learning-rate", "1e-3", "--model", str(tmp_path / "no_model")], capsys)
    notes = [r.getMessage() for r in caplog.records if "does not use" in r.getMessage()]
    assert len(notes) == 1 and "--learning-rate" in notes[0] and "--model" not in notes[0]
    assert rc != 0 and not (tmp_path / "c").exists()  # the model folder is missing: refused, nothing written
    rc, err = _cli(["teach", "--config", str(CONFIGS / "seed_tiny.yaml"), "--out", str(tmp_path / "c"),
                    "--alpha", "0"], capsys)
    assert rc == 2 and "alpha = 0.0: must be in (0, 1]" in err


def test_the_settings_the_trainer_reads_follow_from_the_config():
    import torch

    from seedvlm.config import load_config
    from seedvlm.train.config import SeedConfig

    c = load_config(SeedConfig, CONFIGS / "seed_tiny.yaml", ["--seed", "7", "--activation-checkpointing", "true"])
    cuda = torch.cuda.is_available()
    assert c.data_seed == 7 and c.optim.value == ("adamw_torch_fused" if cuda else "adamw_torch")
    assert (c.bf16, c.use_cpu, c.dataloader_pin_memory) == (cuda, not cuda, cuda)  # dtype auto
    assert c.activation_checkpointing_kwargs == {"use_reentrant": False}
    assert not (c.remove_unused_columns or c.ddp_find_unused_parameters or c.logging_nan_inf_filter or c.disable_tqdm)
    assert c.lr_scheduler_type.value == "cosine" and c.warmup_steps == 0.05 and c.get_warmup_steps(300) == 15
    fp16 = load_config(SeedConfig, CONFIGS / "seed_tiny.yaml", ["--dtype", "fp16", "--use-cpu", "false"])
    assert fp16.fp16 and not fp16.bf16


def test_a_checkpoint_of_the_previous_release_resumes_without_false_changes(tmp_path, caplog):
    import json

    from seedvlm.config import load_config
    from seedvlm.train.checkpoints import CONFIG_FILE, check_checkpoint
    from seedvlm.train.config import SeedConfig

    cfg = load_config(SeedConfig, CONFIGS / "seed_tiny.yaml")
    ckpt = tmp_path / "checkpoint-3"
    ckpt.mkdir()
    (ckpt / "trainer_state.json").write_text("{}")
    (ckpt / "adapter_model.safetensors").write_text("")
    old = {"method": "seed", "alpha": 0.3, "per_device_batch_size": 8, "grad_accumulation": 1, "warmup_ratio": 0.05,
           "warmup_steps": 0, "group_by_length": True, "lr_scheduler": "cosine", "torch_compile": False,
           "report_to": "none", "learning_rate": 3e-4}
    (ckpt / CONFIG_FILE).write_text(json.dumps(old))
    with caplog.at_level("WARNING", logger="seedvlm.train"):
        check_checkpoint(ckpt, "fp", cfg)
    assert "changed options" not in caplog.text
    (ckpt / CONFIG_FILE).write_text(json.dumps({**old, "alpha": 0.5}))
    with caplog.at_level("WARNING", logger="seedvlm.train"):
        check_checkpoint(ckpt, "fp", cfg)
    assert "changed options" in caplog.text and "alpha: 0.5 -> 0.3" in caplog.text
