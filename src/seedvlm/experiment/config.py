"""The experiment's options (`ExperimentConfig`): inputs, arms, training overrides, decoding, operating points,
ablations, evaluation sizes and the goals to check; loaded from YAML plus `--key value` overrides."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import yaml

from seedvlm.choices import PromptStyle, values
from seedvlm.config import field_, load_config, parse_overrides
from seedvlm.errors import SeedVLMError
from seedvlm.train.config import TrainConfig

ARMS = ("base", "sft", "seed", "seed_mask", "base_cd", "seed_cd")
ARM_HELP = {
    "base": "the base model, greedy",
    "sft": "LoRA SFT on the same data, steps and seed (the control arm)",
    "seed": "SEED with the reference implementation's defaults",
    "seed_mask": "SEED + the plausibility mask (g = mask_plausibility)",
    "base_cd": "the base model + contrastive decoding (b = contrastive_beta)",
    "seed_cd": "the SEED adapter + contrastive decoding",
}
GOAL_CHANGES = ("relative", "difference")  # a goal on (arm - ref) / ref or arm - ref; absent: on the arm's value
_YAML_FIELDS = ("world_options", "train_overrides", "seed_overrides", "sft_overrides", "contrastive_options",
                "ablations", "goals", "family_options")


@dataclass
class ExperimentConfig:
    # ---- inputs ------------------------------------------------------------------------------------------------
    out: str = field_("runs/experiment", "output folder (OUT/seed<S>/<arm>/..., OUT/summary.json and summary.md)")
    base_model: str = field_("runs/base", "the base llava-hf model folder (seedvlm pretrain, or LLaVA-1.5-7B)")
    world: str = field_("", "an existing world folder (seedvlm world); empty = generate OUT/world with "
                            "world_options")
    world_options: dict | None = field_(None, "`seedvlm world` options for OUT/world when world is empty, e.g. "
                                              "{train: 4000, val: 500, seed: 1}")
    prepare_max_samples: int | None = field_(None, "train on N records drawn from the world's instruct_train "
                                                   "(seedvlm prepare --max-samples; None = all)")
    seeds: list[int] = field_([0, 1, 2], "training seeds; every arm runs once per seed (and the contrastive "
                                         "noise uses it)")
    arms: list[str] = field_(list(ARMS), "arms per seed: " + "; ".join(f"{k} = {v}" for k, v in ARM_HELP.items()))
    # ---- training (the train YAMLs are the base; overrides on top, in this order) ----------------------------
    seed_config: str = field_("configs/seed_tiny.yaml", "TrainConfig YAML of the SEED arms (seed, seed_mask, "
                                                        "w-sweep and ablation runs)")
    sft_config: str = field_("configs/sft_tiny.yaml", "TrainConfig YAML of the SFT arm")
    train_overrides: dict = field_({}, "TrainConfig options for every training run, e.g. {report_to: none}")
    max_steps: int | None = field_(None, "optimizer steps of every training run (None = the YAMLs')")
    learning_rate: float | None = field_(None, "learning rate of every training run (None = the YAMLs')")
    seed_overrides: dict = field_({}, "TrainConfig options for the SEED runs only (after the ones above)")
    sft_overrides: dict = field_({}, "TrainConfig options for the SFT run only (after the ones above)")
    mask_plausibility: float = field_(0.1, "plausibility g of the seed_mask arm (VCD's 0.1)")
    family_options: dict = field_({}, "the base model family's processor options for every training run and "
                                      "evaluation, e.g. {min_pixels: 3136, max_pixels: 1003520} for Qwen2-VL / "
                                      "Qwen2.5-VL (the `--min-pixels`/`--max-pixels` of train and eval)")
    # ---- decoding ----------------------------------------------------------------------------------------------
    contrastive_beta: float = field_(1.0, "b of the contrastive arms' main point (VCD's 1.0)")
    contrastive_options: dict = field_({}, "other contrastive decode options for eval, e.g. {noise: ddpm, "
                                           "plausibility: 0.1} (defaults: gaussian a=0.3, g=0.1)")
    # ---- operating points (the CHAIRi-recall frontier) and ablations ------------------------------------------
    beta_sweep: list[float] = field_([0.0, 0.5, 1.0, 2.0], "b values of the contrastive arms' CHAIR curve (b=0 is "
                                                          "plain greedy)")
    w_sweep: list[float] = field_([0.5, 0.7, 0.85], "distill_weight values of the seed arm's curve, trained in "
                                                   "every seed (the seed arm's own w is not trained twice)")
    length_cuts: list[int] = field_([16, 32, 64], "word budgets: every arm's CHAIR captions cut to their first k "
                                                  "words and re-scored (a coverage knob for every arm, no model)")
    matched_recall: float | None = field_(None, "recall level for 'CHAIRi at matched recall' (None = the highest "
                                                "recall every main arm reaches in every seed)")
    ablations: dict | None = field_({"alpha": [0.1, 0.3, 0.5, 0.7], "distill_weight": [0.5, 0.7, 0.85],
                                     "temperature": [1.0, 2.0], "purify_space": ["logit", "logprob"],
                                     "beta_schedule": ["quantile", "continuous"]},
                                    "SEED runs with one TrainConfig option changed: {option: [values]}; a value "
                                    "equal to the seed arm's is that arm (None = no ablations)")
    ablation_seeds: int = field_(1, "ablations run in the first N seeds")
    # ---- evaluation --------------------------------------------------------------------------------------------
    pope_images: int = field_(500, "held-out images of the POPE object questions (6 per image per split)")
    probe_images: int = field_(500, "held-out images of each color/count/relation probe (0 = no probes)")
    probe_kinds: list[str] = field_(["color", "count", "relation"], "`pope build --kind` probes")
    question_seed: int = field_(0, "seed of the POPE/probe question draw and the CHAIR image draw (shared by all "
                                   "arms and seeds)")
    pope_prompt_suffix: str = field_("", "appended to every POPE/probe question, e.g. ' Answer yes or no.' ('' = "
                                         "the prompt style's own: none for hf)")
    prompt_style: str = field_("hf", "training and evaluation template: hf (the base folder's chat template) or "
                                     "llava-1.5 (Vicuna v1 system prompt, POPE short-answer suffix, pad-to-square)")
    prepare_turns: str = field_("each", "how `seedvlm prepare` cuts the world's conversations: each (one example "
                                        "per turn, as the logged runs did), history (one example per conversation, "
                                        "every answer supervised, as LLaVA trains) or first")
    pope_max_new_tokens: int = field_(8, "new tokens per POPE/probe answer")
    chair_images: int = field_(500, "held-out images described for CHAIR")
    max_new_tokens: int = field_(512, "new tokens per CHAIR description (512 and 64 are the published settings)")
    batch_size: int = field_(16, "generation batch size")
    device: str | None = field_(None, "eval device (None = cuda if available, else cpu); training picks its own")
    threads: int = field_(0, "torch CPU threads (0 = torch's choice; 1 is steadier on a busy shared CPU)")
    reuse_base: bool = field_(True, "greedy decoding of the base model does not depend on the seed: evaluate it "
                                    "in the first seed and copy it to the others")
    # ---- goals (checked on the means in the summary; they change no step) ------------------------------------
    goal_arms: list[str] = field_(["seed", "seed_mask", "seed_cd"], "arms whose goals the summary checks (those "
                                                                    "in arms)")
    goals: list[dict] = field_([], "targets checked on the means over seeds, in order, each {goal: its text, "
                                   "metric: a summary metric key (e.g. matched.chair_i, pope.adversarial.f1, "
                                   "pope.mean.yes_ratio), vs: a reference arm, change: relative | difference "
                                   "(with vs; absent: the arm's own value), min and/or max: the bounds}")

    def __post_init__(self) -> None:
        bad_arms = sorted(set(self.arms) - set(ARMS))
        checks = [
            (bool(self.seeds) and len(set(self.seeds)) == len(self.seeds), "seeds must be a non-empty list of "
                                                                           "distinct integers"),
            (not bad_arms, f"unknown arm(s) {bad_arms}; choose from {list(ARMS)}"),
            (bool(self.arms), "arms must name at least one arm"),
            ("seed_cd" not in self.arms or "seed" in self.arms, "arm seed_cd decodes with the seed arm's adapter: "
                                                                "keep 'seed' in arms"),
            (not self.w_sweep or "seed" in self.arms, "w_sweep is the seed arm's curve: keep 'seed' in arms"),
            (self.pope_images > 0 and self.chair_images > 0, "pope_images and chair_images must be positive"),
            (self.probe_images >= 0, "probe_images must be >= 0"),
            (all(k in ("color", "count", "relation") for k in self.probe_kinds), "probe_kinds: color, count, "
                                                                                 "relation"),
            (all(k > 0 for k in self.length_cuts), "length_cuts must be positive word counts"),
            (self.pope_max_new_tokens > 0 and self.max_new_tokens > 0 and self.batch_size > 0,
             "token budgets and batch_size must be positive"),
            (self.matched_recall is None or 0.0 <= self.matched_recall <= 1.0, "matched_recall must be in [0, 1]"),
            (self.ablation_seeds >= 0, "ablation_seeds must be >= 0"),
            (0.0 < self.mask_plausibility <= 1.0, "mask_plausibility must be in (0, 1]"),
            (self.prompt_style in values(PromptStyle), f"prompt_style must be {' or '.join(values(PromptStyle))}"),
            (self.prepare_turns in ("each", "history", "first"), "prepare_turns must be each, history or first"),
            (set(self.goal_arms) <= set(ARMS), f"unknown goal arm(s) {sorted(set(self.goal_arms) - set(ARMS))}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise SeedVLMError(f"bad experiment config: {msg}")
        for i, goal in enumerate(self.goals):
            problem = goal_problem(goal)
            if problem:
                raise SeedVLMError(f"bad experiment config: goals[{i}]: {problem}")
        if self.ablations:
            unknown = sorted(set(self.ablations) - {f.name for f in dataclasses.fields(TrainConfig)})
            if unknown:
                raise SeedVLMError(f"bad experiment config: ablations name unknown TrainConfig option(s) {unknown}")
            if any(not isinstance(v, list) or not v for v in self.ablations.values()):
                raise SeedVLMError("bad experiment config: ablations must map each option to a list of values")


def goal_problem(goal: dict) -> str | None:
    """What is wrong with one goal of the config (None: nothing)."""
    known = {"goal", "metric", "vs", "change", "min", "max"}
    if sorted(set(goal) - known):
        return f"unknown key(s) {sorted(set(goal) - known)}; known: {sorted(known)}"
    if not isinstance(goal.get("goal"), str) or not isinstance(goal.get("metric"), str):
        return "needs 'goal' (its text) and 'metric' (a summary metric key, e.g. pope.adversarial.f1)"
    if goal.get("change") is not None and goal["change"] not in GOAL_CHANGES:
        return f"change must be one of {list(GOAL_CHANGES)} (or absent)"
    if (goal.get("change") is None) != (goal.get("vs") is None):
        return "'change' and 'vs' go together (a change against a reference arm)"
    if goal.get("vs") is not None and goal["vs"] not in ARMS:
        return f"vs: unknown arm {goal['vs']!r}"
    bounds = [goal.get(k) for k in ("min", "max") if goal.get(k) is not None]
    if not bounds or not all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in bounds):
        return "needs a numeric 'min' and/or 'max'"
    return None


def load_experiment_config(path: str | Path | None, overrides: list[str] | dict = ()) -> ExperimentConfig:
    """YAML + `--key value` overrides; mapping and goal options (train_overrides, ablations, goals, ...) take YAML on
    the command line, e.g. `--train-overrides '{report_to: none}'` or `--ablations none`."""
    ov = dict(overrides) if isinstance(overrides, dict) else parse_overrides(overrides)
    for key in set(_YAML_FIELDS) & set(ov):
        if isinstance(ov[key], str) and ov[key].lower() not in ("none", "null"):
            try:
                ov[key] = yaml.safe_load(ov[key])
            except yaml.YAMLError as e:
                raise SeedVLMError(f"command line: --{key.replace('_', '-')} is not YAML: {e}") from None
    return load_config(ExperimentConfig, path, ov)
