"""The issue #8 recipe: base, LoRA-SFT and SEED variants, several seeds, POPE + probes + CHAIR, operating-point
sweeps, CHAIRi at matched recall, ablations, and one summary with 95% intervals.

    seedvlm experiment --config configs/experiment_world.yaml                 # the full protocol
    seedvlm experiment --config configs/experiment_smoke.yaml                 # minutes on 2 CPU cores
    seedvlm experiment --config configs/experiment_world.yaml --seeds 0 --out runs/exp_one_seed --dry-run

Every step calls an existing command through `seedvlm.cli.main` (world, prepare, pope build, train, eval pope|chair,
score chair, compare): nothing here trains or scores by itself. Layout:

    OUT/experiment.json                 the config of the latest invocation
    OUT/world/, OUT/data/, OUT/questions/   shared: generated world, training records + manifest, POPE question
                                        folders (objects; color/count/relation probes) and the CHAIR image ids
    OUT/seed<S>/<arm>/train/            training run (adapter/, checkpoints, metrics.jsonl) for trained arms
    OUT/seed<S>/<arm>/pope|probes|chair/    results.json + samples.jsonl of each evaluation
    OUT/seed<S>/<arm>/beta_<b>/         CHAIR at another contrast strength b (contrastive arms)
    OUT/seed<S>/<arm>/lengths/w<k>/     CHAIR of the arm's captions cut to their first k words (re-scored)
    OUT/seed<S>/<arm>/chair_sweep.json  the arm's extra operating points, read by `seedvlm compare`
    OUT/seed<S>/compare[_ablations]/    `seedvlm compare` reports (tables, CHAIRi-vs-recall curves)
    OUT/summary.json, OUT/summary.md    mean and 95% t-interval over seeds, matched-recall table, goals, ablations

Resume: every step folder gets a `done.json` marker (its settings, the markers of the steps it read, a token, the
time it took). A re-run skips a step whose marker exists with the same settings and the same upstream tokens; a step
re-runs when its marker is missing (interrupted or deleted) or stale, and then so does everything downstream of it.
An interrupted training run continues from its last checkpoint (`seedvlm train --resume auto`).
docs/RESULTS.md describes the protocol and the matched-recall method.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import math
import re
import shlex
import shutil
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from seedvlm.config import field_, load_config, parse_overrides
from seedvlm.errors import SeedVLMError
from seedvlm.io import read_json, read_jsonl, write_json, write_jsonl, write_text

ARMS = ("base", "sft", "seed", "seed_mask", "base_cd", "seed_cd")
ARM_HELP = {
    "base": "the base model, greedy",
    "sft": "LoRA SFT on the same data, steps and seed (the control arm)",
    "seed": "SEED with the seed's defaults",
    "seed_mask": "SEED + the plausibility mask (g = mask_plausibility)",
    "base_cd": "the base model + contrastive decoding (b = contrastive_beta)",
    "seed_cd": "the SEED adapter + contrastive decoding",
}
MARKER = "done.json"
STARTED = "started.json"
_SHORT = {"distill_weight": "w", "temperature": "T", "purify_space": "purify", "beta_schedule": "beta"}


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
    pope_prompt_suffix: str = field_("", "appended to every POPE/probe question, e.g. ' Answer yes or no.'")
    pope_max_new_tokens: int = field_(8, "new tokens per POPE/probe answer")
    chair_images: int = field_(500, "held-out images described for CHAIR")
    max_new_tokens: int = field_(512, "new tokens per CHAIR description (512 and 64 are the published settings)")
    batch_size: int = field_(16, "generation batch size")
    device: str | None = field_(None, "eval device (None = cuda if available, else cpu); training picks its own")
    threads: int = field_(0, "torch CPU threads (0 = torch's choice; 1 is steadier on a busy shared CPU)")
    reuse_base: bool = field_(True, "greedy decoding of the base model does not depend on the seed: evaluate it "
                                    "in the first seed and copy it to the others")

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
        ]
        for ok, msg in checks:
            if not ok:
                raise SeedVLMError(f"bad experiment config: {msg}")
        if self.ablations:
            from seedvlm.train.config import TrainConfig

            unknown = sorted(set(self.ablations) - {f.name for f in dataclasses.fields(TrainConfig)})
            if unknown:
                raise SeedVLMError(f"bad experiment config: ablations name unknown TrainConfig option(s) {unknown}")
            if any(not isinstance(v, list) or not v for v in self.ablations.values()):
                raise SeedVLMError("bad experiment config: ablations must map each option to a list of values")


def load_experiment_config(path: str | Path | None, overrides: list[str] | dict = ()) -> ExperimentConfig:
    """YAML + `--key value` overrides; mapping options (train_overrides, ablations, ...) take YAML on the command
    line, e.g. `--train-overrides '{report_to: none}'` or `--ablations none`."""
    import yaml

    ov = dict(overrides) if isinstance(overrides, dict) else parse_overrides(overrides)
    dict_fields = {"world_options", "train_overrides", "seed_overrides", "sft_overrides", "contrastive_options",
                   "ablations"}
    for key in dict_fields & set(ov):
        if isinstance(ov[key], str) and ov[key].lower() not in ("none", "null"):
            try:
                ov[key] = yaml.safe_load(ov[key])
            except yaml.YAMLError as e:
                raise SeedVLMError(f"command line: --{key.replace('_', '-')} is not a YAML mapping: {e}") from None
    return load_config(ExperimentConfig, path, ov)


# ================================================================================================ the plan
@dataclass
class Step:
    key: str                        # "seed0/sft/train": also the folder below OUT
    folder: Path
    kind: str                       # world, prepare, questions, train, eval, score, copy, compare (for the ETA)
    settings: Any                   # what the outputs depend on besides the deps (argv, resolved TrainConfig)
    run: Callable[["Step"], None]
    deps: list[str] = dataclasses.field(default_factory=list)
    describe: str = ""
    dep_tokens: dict = dataclasses.field(default_factory=dict)   # set when it runs


def _arg(value: Any) -> str:
    """A TrainConfig/decode option value as a command-line string that load_config reads back the same."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(_arg(v) for v in value)
    return str(value)


def _fmt_value(value: Any) -> str:
    return format(value, "g") if isinstance(value, float) else str(value)


def variant_name(option: str, value: Any) -> str:
    """seed_alpha0.1, seed_w0.5, seed_T1, seed_purify-logprob, seed_beta-continuous, ... (a folder name)"""
    short = _SHORT.get(option, option)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        name = f"seed_{short}{_fmt_value(value)}"
    elif isinstance(value, (list, tuple)):
        name = f"seed_{short}-" + "_".join(_fmt_value(v) for v in value)
    else:
        name = f"seed_{short}-{value}"
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


def _cli(argv: list, log_file: Path) -> None:
    """Run one seedvlm command in this process (its stdout, the tables, goes to log_file; logging and progress bars
    stay on stderr); a failure raises."""
    from seedvlm.cli import main

    argv = [str(a) for a in argv]
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "a", encoding="utf-8") as f, contextlib.redirect_stdout(f):
        print(f"$ seedvlm {shlex.join(argv)}", flush=True)
        rc = main(argv)
    if rc:
        raise SeedVLMError(f"step failed: `seedvlm {shlex.join(argv)}` exited with {rc} (its message is above; "
                           f"log: {log_file})")


class Plan:
    """The steps of an experiment, in run order, with the arms they belong to."""

    def __init__(self, cfg: ExperimentConfig) -> None:
        from seedvlm.train.config import TrainConfig

        self.cfg = cfg
        self.out = Path(cfg.out)
        self.world = Path(cfg.world) if cfg.world else self.out / "world"
        self.data = self.out / "data" / "train.json"
        self.manifest = self.out / "data" / "manifest.json"
        self.questions = self.out / "questions"
        self.steps: list[Step] = []
        self.arm_steps: dict[tuple[int, str], list[str]] = {}   # (seed, arm) -> its step keys
        self.variants: dict[int, list[str]] = {}                # seed -> variant arms (w sweep + ablations)
        self.ablation_rows: list[dict] = []                     # {"option", "value", "arm"}
        self.w_points: dict[str, float] = {}                    # variant arm -> its distill_weight (w sweep)
        self._train_cfg = TrainConfig

        self._shared()
        for i, s in enumerate(cfg.seeds):
            for arm in ARMS:
                if arm in cfg.arms:
                    self._arm(s, arm)
            self._variants(s, ablate=i < cfg.ablation_seeds)
        for s in cfg.seeds:
            self._compare(s)

    # ---------------------------------------------------------------------------------------------- shared steps
    def _add(self, key: str, kind: str, settings: Any, run: Callable, deps=(), describe: str = "",
             folder: Path | None = None) -> str:
        self.steps.append(Step(key, folder or self.out / key, kind, settings, run, list(deps), describe))
        return key

    def _cmd(self, key: str, kind: str, argv: list, deps=(), after: Callable | None = None,
             log: Path | None = None) -> str:
        argv = [str(a) for a in argv]

        def run(step: Step) -> None:
            _cli(argv, log or step.folder / "log.txt")
            if after:
                after(step)
        return self._add(key, kind, argv, run, deps, "seedvlm " + shlex.join(argv))

    def _shared(self) -> None:
        c = self.cfg
        deps: list[str] = []
        if not c.world:
            opts = []
            for k, v in (c.world_options or {}).items():
                opts += [f"--{k.replace('_', '-')}", _arg(v)]
            # `seedvlm world` writes only into a new, empty or world folder: its log goes beside it
            deps.append(self._cmd("world", "world", ["world", "--out", self.world, "--quiet", *opts],
                                  log=self.out / "world.log.txt"))
        prep = ["prepare", "--input", self.world / "instruct_train.json", "--images", self.world / "images" / "train",
                "--out", self.data]
        if c.prepare_max_samples:
            prep += ["--max-samples", c.prepare_max_samples, "--seed", 0]

        def manifest(step: Step) -> None:
            records = read_json(self.data, "prepared records")
            write_json(self.manifest, {"images": sorted({r["image"] for r in records}), "data": str(self.data),
                                       "n_records": len(records)})
        self._cmd("data", "prepare", prep, deps, after=manifest)
        settings = {k: getattr(c, k) for k in ("pope_images", "probe_images", "probe_kinds", "question_seed",
                                               "chair_images")}
        settings["world"] = str(self.world)
        self._add("questions", "questions", settings, self._build_questions, ["data"],
                  f"seedvlm pope build (objects, {', '.join(c.probe_kinds) or 'no probes'}) + CHAIR image ids")

    def _build_questions(self, step: Step) -> None:
        from seedvlm.commands.eval import select_images
        from seedvlm.eval.chair import CHAIR

        c, q, log = self.cfg, self.questions, step.folder / "log.txt"
        common = ["--instances", self.world / "instances_val.json", "--seed", c.question_seed,
                  "--train-manifest", self.manifest]
        _cli(["pope", "build", "--out", q / "pope", "--n-images", c.pope_images, *common], log)
        if c.probe_images and c.probe_kinds:
            parts = {}
            for kind in c.probe_kinds:
                _cli(["pope", "build", "--out", q / f"probe_{kind}", "--kind", kind, "--n-images", c.probe_images,
                      *common], log)
                parts[kind] = read_json(q / f"probe_{kind}" / "meta.json", "POPE meta")
            (q / "probes").mkdir(parents=True, exist_ok=True)
            for kind in c.probe_kinds:
                shutil.copyfile(q / f"probe_{kind}" / f"{kind}.jsonl", q / "probes" / f"{kind}.jsonl")
            write_json(q / "probes" / "meta.json", {"kind": "probes", "seed": c.question_seed,
                                                    "source": parts[c.probe_kinds[0]].get("source"),
                                                    "parts": parts})
        chair = CHAIR(self.world / "instances_val.json", self.world / "captions_val.json")
        ids = [im["id"] for im in select_images(chair, c.chair_images, c.question_seed, None)]
        write_json(q / "chair_images.json", ids)

    # ---------------------------------------------------------------------------------------------- training
    def _train_settings(self, seed: int, arm: str, extra: dict) -> tuple[str, dict, dict]:
        """(yaml, overrides, resolved TrainConfig dict) of one training run."""
        c = self.cfg
        yaml_path = c.sft_config if arm == "sft" else c.seed_config
        ov = dict(c.train_overrides)
        if c.max_steps is not None:
            ov["max_steps"] = c.max_steps
        if c.learning_rate is not None:
            ov["learning_rate"] = c.learning_rate
        ov.update(c.sft_overrides if arm == "sft" else c.seed_overrides)
        ov.update(extra)
        ov.update(model=c.base_model, data=str(self.data), images=str(self.world / "images" / "train"), seed=seed,
                  output_dir=str(self.out / f"seed{seed}" / arm / "train"))
        ov = {k: _arg(v) for k, v in ov.items()}
        resolved = dataclasses.asdict(load_config(self._train_cfg, yaml_path, ov))
        resolved.pop("overwrite_output_dir", None)
        return yaml_path, ov, resolved

    def _train(self, seed: int, arm: str, extra: dict) -> str:
        yaml_path, ov, resolved = self._train_settings(seed, arm, extra)
        key = f"seed{seed}/{arm}/train"
        base = ["train", "--config", str(yaml_path), *[f"--{k.replace('_', '-')}={v}" for k, v in ov.items()]]

        def run(step: Step) -> None:
            # an interrupted run (same settings and inputs, no final adapter yet) continues from its last
            # checkpoint; a finished one whose marker was deleted trains afresh
            started = step.folder / STARTED
            now = {"settings": resolved, "deps": step.dep_tokens}
            same = (started.is_file() and _same(read_json(started, "started marker"), now)
                    and not (step.folder / "adapter").exists())
            if not same and step.folder.exists():
                shutil.rmtree(step.folder)
            step.folder.mkdir(parents=True, exist_ok=True)
            write_json(started, now)
            _cli(base + (["--resume", "auto"] if same else []), step.folder / "log.txt")
        return self._add(key, "train", resolved, run, ["data"], "seedvlm " + shlex.join(base))

    # ---------------------------------------------------------------------------------------------- one arm
    def _eval_argv(self, seed: int, task: str, folder: Path, adapter: Path | None, beta: float | None) -> list:
        c, w = self.cfg, self.world
        if task == "chair":
            argv = ["eval", "chair", "--instances", w / "instances_val.json", "--references", w / "captions_val.json",
                    "--image-ids", self.questions / "chair_images.json", "--max-new-tokens", c.max_new_tokens]
        else:
            argv = ["eval", "pope", "--questions", self.questions / ("pope" if task == "pope" else "probes"),
                    "--max-new-tokens", c.pope_max_new_tokens, f"--prompt-suffix={c.pope_prompt_suffix}"]
        argv += ["--model", c.base_model, "--images", w / "images" / "val", "--out", folder,
                 "--batch-size", c.batch_size, "--seed", seed, "--train-manifest", self.manifest]
        if adapter is not None:
            argv += ["--adapter", adapter]
        if c.device:
            argv += ["--device", c.device]
        if beta is not None:
            argv += ["--decoding", "contrastive", "--beta", _fmt_value(float(beta))]
            argv += [f"--{k.replace('_', '-')}={_arg(v)}" for k, v in c.contrastive_options.items()]
        return argv

    def _arm(self, seed: int, arm: str, train_extra: dict | None = None) -> None:
        c = self.cfg
        root = self.out / f"seed{seed}" / arm
        keys: list[str] = []
        deps = ["questions"]
        adapter = None
        if arm in ("sft", "seed", "seed_mask") or train_extra is not None:
            extra = train_extra if train_extra is not None else (
                {"plausibility": c.mask_plausibility} if arm == "seed_mask" else {})
            keys.append(self._train(seed, arm, extra))
            deps.append(keys[-1])
            adapter = root / "train" / "adapter"
        elif arm == "seed_cd":
            deps.append(f"seed{seed}/seed/train")
            adapter = self.out / f"seed{seed}" / "seed" / "train" / "adapter"
        beta = c.contrastive_beta if arm in ("base_cd", "seed_cd") else None
        tasks = ["pope"] + (["probes"] if c.probe_images and c.probe_kinds else []) + ["chair"]
        first = c.seeds[0]
        for task in tasks:
            key = f"seed{seed}/{arm}/{task}"
            if arm == "base" and c.reuse_base and seed != first:
                keys.append(self._copy(key, f"seed{first}/base/{task}"))
            else:
                keys.append(self._cmd(key, "eval", self._eval_argv(seed, task, root / task, adapter, beta), deps))
        if beta is not None:
            for b in c.beta_sweep:
                if float(b) != float(c.contrastive_beta):
                    name = f"beta_{_fmt_value(float(b))}"
                    keys.append(self._cmd(f"seed{seed}/{arm}/{name}", "eval",
                                          self._eval_argv(seed, "chair", root / name, adapter, b), deps))
        if c.length_cuts:
            keys.append(self._add(f"seed{seed}/{arm}/lengths", "score", {"cuts": list(c.length_cuts)},
                                  self._lengths, [f"seed{seed}/{arm}/chair"],
                                  f"seedvlm score chair on captions cut to {c.length_cuts} words"))
        self.arm_steps[(seed, arm)] = keys

    def _copy(self, key: str, source: str) -> str:
        def run(step: Step) -> None:
            step.folder.mkdir(parents=True, exist_ok=True)
            for name in ("results.json", "samples.jsonl"):
                shutil.copyfile(self.out / source / name, step.folder / name)
        return self._add(key, "copy", {"copy_of": source}, run, [source],
                         f"copy {source} (greedy decoding of the base does not depend on the seed)")

    def _lengths(self, step: Step) -> None:
        c, w = self.cfg, self.world
        samples = read_jsonl(step.folder.parent / "chair" / "samples.jsonl", "CHAIR samples")
        for k in c.length_cuts:
            sub = step.folder / f"w{k}"
            rows = [{"image_id": s["image_id"], "caption": " ".join(str(s["caption"]).split()[:k])} for s in samples]
            write_jsonl(sub / "captions.jsonl", rows)
            _cli(["score", "chair", "--captions", sub / "captions.jsonl", "--instances", w / "instances_val.json",
                  "--references", w / "captions_val.json", "--out", sub], step.folder / "log.txt")

    # ---------------------------------------------------------------------------------------------- variants
    def _variants(self, seed: int, ablate: bool) -> None:
        c = self.cfg
        wanted: list[tuple[str, Any, bool]] = []  # (option, value, is_ablation)
        if "seed" in c.arms:
            wanted += [("distill_weight", float(v), False) for v in c.w_sweep]
        if ablate and c.ablations:
            wanted += [(opt, v, True) for opt, vals in c.ablations.items() for v in vals]
        done: set[str] = set()
        self.variants.setdefault(seed, [])
        seed_arm = self._train_settings(seed, "seed", {})[2]
        for option, value, is_ablation in wanted:
            resolved = self._train_settings(seed, "seed", {option: value})[2]
            arm = "seed" if _same(resolved, seed_arm) else variant_name(option, resolved[option])
            if is_ablation and seed == c.seeds[0]:
                self.ablation_rows.append({"option": option, "value": resolved[option], "arm": arm})
            if option == "distill_weight" and not is_ablation and arm != "seed":
                self.w_points[arm] = float(resolved[option])
            if arm == "seed" or arm in done:
                continue
            done.add(arm)
            self._arm(seed, arm, train_extra={option: value})
            self.variants[seed].append(arm)

    # ---------------------------------------------------------------------------------------------- reports
    def chair_points(self, seed: int, arm: str) -> list[dict]:
        """The arm's extra operating points (besides chair/results.json): w sweep, b sweep, length cuts."""
        root = self.out / f"seed{seed}"
        pts: list[tuple[str, str, Any, Path]] = []
        if arm == "seed":
            pts += [(f"w={_fmt_value(w)}", "distill_weight", w, root / v / "chair" / "results.json")
                    for v, w in self.w_points.items() if v in self.variants.get(seed, [])]
        if arm in ("base_cd", "seed_cd"):
            pts += [(f"b={_fmt_value(float(b))}", "beta", float(b),
                     root / arm / f"beta_{_fmt_value(float(b))}" / "results.json")
                    for b in self.cfg.beta_sweep if float(b) != float(self.cfg.contrastive_beta)]
        pts += [(f"{k} words", "words", k, root / arm / "lengths" / f"w{k}" / "results.json")
                for k in self.cfg.length_cuts]
        out = []
        for label, knob, value, path in pts:
            if path.is_file():
                r = read_json(path, "CHAIR results")
                out.append({"label": label, "knob": knob, "value": value, "chair_i": r["chair_i"],
                            "recall": r["recall"], "chair_s": r["chair_s"], "source": str(path)})
        return out

    def _compare(self, seed: int) -> None:
        c = self.cfg
        groups = [("compare", [a for a in ARMS if a in c.arms])]
        if self.variants.get(seed) and seed in c.seeds[:c.ablation_seeds]:
            groups.append(("compare_ablations", [a for a in ("base", "sft", "seed") if a in c.arms]
                           + self.variants[seed]))
        for name, arms in groups:
            deps = [k for a in arms for k in self.arm_steps[(seed, a)]]
            if name == "compare":  # the seed arm's curve reads the w-sweep runs
                deps += [k for v in self.w_points if (seed, v) in self.arm_steps for k in self.arm_steps[(seed, v)]]
            runs = [f"{a}={self.out / f'seed{seed}' / a}" for a in arms]
            argv = ["compare", *[x for r in runs for x in ("--run", r)], "--out", str(self.out / f"seed{seed}" / name)]

            def run(step: Step, arms=arms, argv=argv) -> None:
                for a in arms:
                    write_json(self.out / f"seed{seed}" / a / "chair_sweep.json", self.chair_points(seed, a))
                _cli(argv, step.folder / "log.txt")
            self._add(f"seed{seed}/{name}", "compare", argv, run, list(dict.fromkeys(deps)),
                      "seedvlm " + shlex.join(argv))


def _same(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


# ================================================================================================ running
def _marker(step: Step) -> dict | None:
    p = step.folder / MARKER
    if not p.is_file():
        return None
    try:
        return read_json(p, "step marker")
    except SeedVLMError:
        return None


def _hms(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _up_to_date(step: Step, marker: dict | None, tokens: dict[str, str | None]) -> bool:
    """A marker with the step's settings whose recorded upstream tokens are the upstream steps' current ones."""
    return (marker is not None and _same(marker.get("settings"), step.settings)
            and all(tokens.get(d) is not None and marker.get("deps", {}).get(d) == tokens[d] for d in step.deps))


def plan_status(plan: Plan) -> dict[str, str]:
    """key -> "run" or "skip", as run_experiment decides (a step runs if its marker is missing or stale, or if a
    step it reads runs)."""
    tokens: dict[str, str | None] = {}
    status: dict[str, str] = {}
    for st in plan.steps:
        m = _marker(st)
        status[st.key] = "skip" if _up_to_date(st, m, tokens) else "run"
        tokens[st.key] = m.get("token") if m and status[st.key] == "skip" else None
    return status


def run_experiment(cfg: ExperimentConfig, dry_run: bool = False, echo: Callable[[str], None] | None = None,
                   summary_only: bool = False) -> dict:
    """Run (or resume) the experiment; returns {"ran": [...], "skipped": [...], "summary": ..., "plan": Plan}.
    `summary_only`: run nothing, only summarize steps already done (the base model need not be here)."""
    echo = echo or (lambda s: print(s, file=sys.stderr, flush=True))
    out = Path(cfg.out)
    if out.exists() and any(out.iterdir()) and not (out / "experiment.json").is_file():
        raise SeedVLMError(f"out {out} exists, is not empty and holds no experiment.json; refusing to write into it")
    if not cfg.world and cfg.world_options is None:
        raise SeedVLMError("set world (an existing world folder) or world_options (to generate OUT/world)")
    if cfg.world and not (Path(cfg.world) / "instances_val.json").is_file():
        raise SeedVLMError(f"world {cfg.world}: no instances_val.json (generate it with `seedvlm world`, or leave "
                           "world empty and set world_options)")
    if not summary_only and not Path(cfg.base_model).is_dir():
        raise SeedVLMError(f"base_model {cfg.base_model} not found (train one with `seedvlm pretrain`)")
    plan = Plan(cfg)
    status = plan_status(plan)
    todo = [s for s in plan.steps if status[s.key] == "run"]
    variants = sorted({v for vs in plan.variants.values() for v in vs})
    echo(f"experiment {out}: {len(plan.steps)} steps, {len(todo)} to run, {len(plan.steps) - len(todo)} done "
         f"earlier; seeds {cfg.seeds}, arms {cfg.arms}, variants {variants}")
    if summary_only:
        missing = [k for k, v in status.items() if v == "run"]
        if missing:
            raise SeedVLMError(f"--summary-only: {len(missing)} step(s) of the plan are not done in {out} (first: "
                               f"{', '.join(missing[:3])}); run the experiment, or narrow --seeds / --arms")
        summary = summarize(plan)
        echo(f"experiment {out}: summary of {len(plan.steps)} finished steps: {out / 'summary.md'}")
        return {"ran": [], "skipped": [s.key for s in plan.steps], "plan": plan, "status": status, "summary": summary}
    if dry_run:
        for i, st in enumerate(plan.steps, 1):
            echo(f"  [{i}/{len(plan.steps)}] {status[st.key]:4s} {st.key}: {st.describe}")
        return {"ran": [], "skipped": [], "plan": plan, "status": status, "summary": None}
    if cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "experiment.json", dataclasses.asdict(cfg))

    t0 = time.perf_counter()
    durations: dict[str, list[float]] = {}
    tokens: dict[str, str | None] = {}
    ran: list[str] = []
    skipped: list[str] = []
    n = len(plan.steps)
    for i, st in enumerate(plan.steps, 1):
        m = _marker(st)
        if _up_to_date(st, m, tokens):
            tokens[st.key] = m["token"]
            skipped.append(st.key)
            echo(f"[{i}/{n}] {st.key}: done earlier, skipped")
            continue
        rest = [s for s in plan.steps[i - 1:] if status[s.key] == "run" or s is st]
        echo(f"[{i}/{n}] {st.key}: {st.describe} | elapsed {_hms(time.perf_counter() - t0)}, "
             f"ETA {_eta(rest, durations)}")
        marker = st.folder / MARKER
        if marker.exists():
            marker.unlink()
        if st.kind != "train" and st.folder.exists():   # a training run may continue from its checkpoint
            shutil.rmtree(st.folder)
        st.folder.mkdir(parents=True, exist_ok=True)
        st.dep_tokens = {d: tokens[d] for d in st.deps}
        t = time.perf_counter()
        st.run(st)
        seconds = time.perf_counter() - t
        durations.setdefault(st.kind, []).append(seconds)
        token = uuid.uuid4().hex
        write_json(marker, {"key": st.key, "settings": st.settings, "deps": st.dep_tokens, "token": token,
                            "seconds": round(seconds, 2), "finished": _now()})
        tokens[st.key] = token
        ran.append(st.key)
        echo(f"[{i}/{n}] {st.key}: done in {_hms(seconds)}")
        gc.collect()
        _empty_cuda_cache()
    summary = summarize(plan)
    echo(f"experiment {out}: {len(ran)} steps run, {len(skipped)} skipped, {_hms(time.perf_counter() - t0)}; "
         f"summary: {out / 'summary.md'}")
    return {"ran": ran, "skipped": skipped, "plan": plan, "status": status, "summary": summary}


def _eta(rest: list[Step], durations: dict[str, list[float]]) -> str:
    done = [x for v in durations.values() for x in v]
    if not done:
        return "? (no step finished yet)"
    overall = sum(done) / len(done)
    total = sum((sum(durations[s.kind]) / len(durations[s.kind])) if durations.get(s.kind) else overall
                for s in rest)
    return f"{_hms(total)} for {len(rest)} steps (from {len(done)} finished)"


def _now() -> str:
    import datetime as dt

    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _empty_cuda_cache() -> None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


# ================================================================================================ statistics
# two-sided 95% quantiles of Student's t, df = 1..30 (no scipy in the environment)
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t975(df: int) -> float:
    """The 0.975 quantile of Student's t with df degrees of freedom (table to 30, then ~1.96 + 2.4/df)."""
    if df < 1:
        raise ValueError("df must be >= 1")
    return _T975[df - 1] if df <= 30 else 1.96 + 2.4 / df


def mean_ci(values: list[float]) -> dict:
    """{"n", "mean", "sd", "half_width", "ci95"}: mean +- t(0.975, n-1) * sd / sqrt(n); n=1: no interval."""
    vals = [float(v) for v in values if v is not None]
    n = len(vals)
    if not n:
        return {"n": 0, "mean": None, "sd": None, "half_width": None, "ci95": None}
    mean = sum(vals) / n
    if n == 1:
        return {"n": 1, "mean": mean, "sd": None, "half_width": None, "ci95": None}
    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1))
    half = t975(n - 1) * sd / math.sqrt(n)
    return {"n": n, "mean": mean, "sd": sd, "half_width": half, "ci95": [mean - half, mean + half]}


def frontier(points: list[dict]) -> list[dict]:
    """The lower envelope of CHAIRi over recall: the points no other point beats on both (recall at least as high
    and CHAIRi at least as low), in ascending recall (their CHAIRi then ascends too)."""
    keep: list[dict] = []
    best = math.inf
    for p in sorted(points, key=lambda p: (-p["recall"], p["chair_i"])):
        if p["chair_i"] < best:
            keep.append(p)
            best = p["chair_i"]
    return keep[::-1]


def chair_at_recall(points: list[dict], level: float) -> float | None:
    """CHAIRi at a recall level by linear interpolation along the frontier of the points; None outside it."""
    front = frontier(points)
    if not front or level > front[-1]["recall"] + 1e-12 or level < front[0]["recall"] - 1e-12:
        return None
    for lo, hi in zip(front, front[1:]):
        if lo["recall"] <= level <= hi["recall"]:
            if hi["recall"] == lo["recall"]:
                return lo["chair_i"]
            t = (level - lo["recall"]) / (hi["recall"] - lo["recall"])
            return lo["chair_i"] + t * (hi["chair_i"] - lo["chair_i"])
    return front[0]["chair_i"] if len(front) == 1 or level <= front[0]["recall"] else front[-1]["chair_i"]


# ================================================================================================ the summary
MATCHED_METHOD = (
    "Each arm's operating points are its CHAIR result, its sweep points (w for the seed arm, b for the contrastive "
    "arms) and its captions cut to the first k words of length_cuts (re-scored). Its frontier is the lower "
    "envelope of CHAIRi over recall (points no other point of the arm beats on both). CHAIRi at the matched "
    "recall level r* is the linear interpolation between the two frontier points around r*; an arm whose "
    "frontier does not span r* has no value. r* = matched_recall if set, else the highest recall that every main "
    "arm reaches in every seed (the minimum over arms and seeds of the arm's maximum recall). Relative changes "
    "are computed per seed, (CHAIRi_arm - CHAIRi_ref) / CHAIRi_ref, then averaged.")

POPE_KEYS = (("accuracy", "acc"), ("f1", "F1"), ("yes_ratio", "yes-ratio"), ("auroc", "AUROC"),
             ("average_precision", "AP"))
CHAIR_KEYS = (("chair_s", "CHAIRs"), ("chair_i", "CHAIRi"), ("recall", "CHAIR recall"), ("mean_words", "mean words"))


def _metrics(root: Path) -> dict[str, float]:
    """Flat metrics of one arm folder: pope.<split>.<m>, probes.<split>.<m>, chair.<m>."""
    out: dict[str, float] = {}
    for task in ("pope", "probes"):
        p = root / task / "results.json"
        if p.is_file():
            r = read_json(p, "POPE results")
            for split in list(r.get("splits", [])) + ["mean"]:
                for k, _ in POPE_KEYS:
                    if r.get(split, {}).get(k) is not None:
                        out[f"{task}.{split}.{k}"] = r[split][k]
    p = root / "chair" / "results.json"
    if p.is_file():
        r = read_json(p, "CHAIR results")
        for k, _ in CHAIR_KEYS:
            out[f"chair.{k}"] = r[k]
    return out


def _label(key: str) -> str:
    if key == "matched.chair_i":
        return "CHAIRi @ matched recall"
    if key.startswith("chair."):
        return dict(CHAIR_KEYS)[key.split(".")[1]]
    task, split, m = key.split(".")
    return f"{'POPE' if task == 'pope' else 'probe'} {split} {dict(POPE_KEYS)[m]}"


def _cell(key: str, st: dict, n_seeds: int, delta: bool = False) -> str:
    """mean ± half-width (percent, or counts for mean words); the n when it is not the number of seeds."""
    if not st or st.get("mean") is None:
        return "-"
    scale = 1.0 if key.endswith("mean_words") else 100.0
    sign = "+" if delta else ""
    text = f"{scale * st['mean']:{sign}.1f}"
    if st["half_width"] is not None:
        text += f" ± {scale * st['half_width']:.1f}"
    return text if st["n"] == n_seeds else f"{text} (n={st['n']})"


def summarize(plan: Plan) -> dict:
    """Write OUT/summary.json and OUT/summary.md from whatever results exist; return the summary."""
    from seedvlm.eval.results import git_state, versions

    c, out = plan.cfg, plan.out
    main_arms = [a for a in ARMS if a in c.arms]
    per: dict[tuple[int, str], dict] = {}
    curves: dict[tuple[int, str], list[dict]] = {}
    all_arms = main_arms + sorted({v for vs in plan.variants.values() for v in vs})
    for s in c.seeds:
        for a in all_arms:
            root = out / f"seed{s}" / a
            if not root.is_dir():
                continue
            per[(s, a)] = _metrics(root)
            pts = plan.chair_points(s, a)
            if "chair.chair_i" in per[(s, a)]:
                pts = [{"label": a, "knob": "main", "value": None, "chair_i": per[(s, a)]["chair.chair_i"],
                        "recall": per[(s, a)]["chair.recall"], "chair_s": per[(s, a)]["chair.chair_s"]}] + pts
            curves[(s, a)] = pts

    # the matched recall level
    tops = [max(p["recall"] for p in curves[(s, a)]) for s in c.seeds for a in main_arms if curves.get((s, a))]
    level = c.matched_recall if c.matched_recall is not None else (min(tops) if tops else None)
    matched: dict[str, dict] = {}
    for (s, a), pts in curves.items():
        v = chair_at_recall(pts, level) if level is not None and pts else None
        matched.setdefault(a, {})[s] = {"chair_i": v, "frontier": frontier(pts), "points": pts}
        if v is not None:
            per[(s, a)]["matched.chair_i"] = v

    keys: list[str] = []
    for (s, a), m in per.items():
        keys += [k for k in m if k not in keys]
    order = {"pope": 0, "probes": 1, "chair": 2, "matched": 3}
    metric_rank = {"accuracy": 0, "f1": 1, "yes_ratio": 2, "chair_s": 0, "chair_i": 1, "recall": 2, "mean_words": 3,
                   "auroc": 3, "average_precision": 4}
    keys.sort(key=lambda k: (order[k.split(".")[0]], _split_rank(k), metric_rank.get(k.split(".")[-1], 9)))
    stats = {a: {k: {**mean_ci([per[(s, a)].get(k) for s in c.seeds if (s, a) in per]),
                     "values": {str(s): per[(s, a)].get(k) for s in c.seeds if (s, a) in per}}
                 for k in keys} for a in all_arms}

    relative: dict[str, dict] = {}
    for a in main_arms:
        for ref in ("base", "sft"):
            if ref == a or ref not in main_arms:
                continue
            vals = []
            for s in c.seeds:
                x = per.get((s, a), {}).get("matched.chair_i")
                r = per.get((s, ref), {}).get("matched.chair_i")
                vals.append(None if x is None or not r else (x - r) / r)
            relative.setdefault(a, {})[f"vs_{ref}"] = {**mean_ci(vals), "values": vals}
    goals = _goals(per, relative, c.seeds, main_arms)
    ablations = []  # on the ablation seeds only, the seed arm's row included, so that rows compare like with like
    abl_seeds = c.seeds[:c.ablation_seeds]
    for row in plan.ablation_rows:
        a = row["arm"]
        ablations.append({**row, "metrics": {k: mean_ci([per[(s, a)].get(k) for s in abl_seeds if (s, a) in per])
                                             for k in keys}})
    commit, dirty = git_state()
    summary = {
        "config": dataclasses.asdict(c), "git": commit, "git_dirty": dirty, "versions": versions(), "time": _now(),
        "seeds": list(c.seeds), "arms": main_arms, "variants": {str(s): v for s, v in plan.variants.items()},
        "metrics": {a: stats[a] for a in all_arms if any(st["n"] for st in stats[a].values())},
        "matched_recall": {"level": level, "auto": c.matched_recall is None, "method": MATCHED_METHOD,
                           "relative": relative,
                           "per_seed": {a: {str(s): v for s, v in d.items()} for a, d in matched.items()}},
        "goals": goals, "ablations": ablations,
        "reports": {str(s): [str(out / f"seed{s}" / n / "report.md") for n in ("compare", "compare_ablations")
                             if (out / f"seed{s}" / n / "report.md").is_file()] for s in c.seeds},
    }
    write_json(out / "summary.json", summary)
    write_text(out / "summary.md", _summary_md(summary, keys, main_arms))
    return summary


def _split_rank(key: str) -> int:
    parts = key.split(".")
    if len(parts) < 3:
        return 0
    ranks = {"random": 0, "popular": 1, "adversarial": 2, "color": 3, "count": 4, "relation": 5, "mean": 9}
    return ranks.get(parts[1], 8)


def _goals(per: dict, relative: dict, seeds: list[int], arms: list[str]) -> list[dict]:
    """The team's targets, checked on the means: at matched recall SEED cuts CHAIRi >= 30% vs base and SFT;
    POPE-adversarial F1 +3 points vs base; POPE yes-ratio (mean over splits) within 45-55%."""
    rows = []
    for a in [x for x in ("seed", "seed_mask", "seed_cd") if x in arms]:
        for ref in ("base", "sft"):
            st = relative.get(a, {}).get(f"vs_{ref}")
            if st and st["mean"] is not None:
                rows.append({"arm": a, "goal": f"CHAIRi at matched recall <= -30% vs {ref}", "measured": st,
                             "unit": "relative", "met": st["mean"] <= -0.30})
        if "base" in arms:
            d = [per[(s, a)]["pope.adversarial.f1"] - per[(s, "base")]["pope.adversarial.f1"] for s in seeds
                 if "pope.adversarial.f1" in per.get((s, a), {}) and "pope.adversarial.f1" in per.get((s, "base"), {})]
            if d:
                st = mean_ci(d)
                rows.append({"arm": a, "goal": "POPE adversarial F1 >= +3 points vs base", "measured": st,
                             "unit": "points", "met": st["mean"] >= 0.03})
        y = [per[(s, a)]["pope.mean.yes_ratio"] for s in seeds if "pope.mean.yes_ratio" in per.get((s, a), {})]
        if y:
            st = mean_ci(y)
            rows.append({"arm": a, "goal": "POPE yes-ratio within 45-55%", "measured": st, "unit": "percent",
                         "met": 0.45 <= st["mean"] <= 0.55})
    return rows


def _summary_md(s: dict, keys: list[str], arms: list[str]) -> str:
    c = s["config"]
    n_seeds = len(s["seeds"])
    lines = ["# seedvlm experiment: summary", "",
             f"Base model `{c['base_model']}`; world `{c['world'] or c['out'] + '/world'}`; seeds {s['seeds']}; "
             f"git {s['git'] or '?'}{' (dirty)' if s['git_dirty'] else ''}; written {s['time']}.", "",
             (f"Cells: mean ± half-width of the 95% t-interval over the seeds (t with n-1 degrees of freedom, "
              f"n = {n_seeds}); a cell over fewer seeds says its n, and with n=1 it is the single value, no interval."
              if n_seeds > 1 else "n=1 (one seed): every cell is a single run's value; no interval."),
             "Fractions in percent, mean words as counts.", "",
             "## Arms", "",
             "| metric | " + " | ".join(arms) + " |", "|---" * (len(arms) + 1) + "|"]
    for k in keys:
        cells = [_cell(k, s["metrics"].get(a, {}).get(k), n_seeds) for a in arms]
        lines.append(f"| {_label(k)} | " + " | ".join(cells) + " |")
    lines += ["", "Arms: " + "; ".join(f"`{a}` = {ARM_HELP[a]}" for a in arms) + "."]
    mr = s["matched_recall"]
    lines += ["", "## CHAIRi at matched recall", ""]
    if mr["level"] is None:
        lines.append("No CHAIR results yet.")
    else:
        lines += [f"Recall level r* = {100 * mr['level']:.1f}% ({'auto' if mr['auto'] else 'set in the config'}).",
                  "", mr["method"], "",
                  "| arm | CHAIRi @ r* | vs base (relative, %) | vs sft (relative, %) | frontier points (seed "
                  f"{s['seeds'][0]}) |", "|---|---|---|---|---|"]
        for a in arms:
            rel = mr["relative"].get(a, {})
            front = mr["per_seed"].get(a, {}).get(str(s["seeds"][0]), {}).get("frontier", [])
            fp = ", ".join(f"{p['label']} ({100 * p['recall']:.0f}/{100 * p['chair_i']:.1f})" for p in front)
            at = _cell("matched.chair_i", s["metrics"].get(a, {}).get("matched.chair_i"), n_seeds)
            lines.append(f"| {a} | {at} | "
                         f"{_cell('x', rel.get('vs_base'), n_seeds, delta=True)} | "
                         f"{_cell('x', rel.get('vs_sft'), n_seeds, delta=True)} | {fp or '-'} |")
        lines += ["", "Frontier points: label (recall / CHAIRi, percent)."]
    if s["goals"]:
        lines += ["", "## Goals of issue #8 (checked on the means)", "", "| arm | goal | measured | met |",
                  "|---|---|---|---|"]
        for g in s["goals"]:
            st = g["measured"]
            lines.append(f"| {g['arm']} | {g['goal']} | {_cell('x', st, n_seeds, delta=g['unit'] != 'percent')} | "
                         f"{'yes' if g['met'] else 'no'} |")
    if s["ablations"]:
        cols = [k for k in ("pope.adversarial.f1", "pope.mean.f1", "pope.mean.yes_ratio", "probes.mean.accuracy",
                            "chair.chair_s", "chair.chair_i", "chair.recall", "matched.chair_i") if k in keys]
        lines += ["", f"## Ablations (first {c['ablation_seeds']} seed(s); one option changed from the seed arm)", "",
                  "| option | value | run | " + " | ".join(_label(k) for k in cols) + " |",
                  "|---" * (len(cols) + 3) + "|"]
        for row in s["ablations"]:
            lines.append(f"| {row['option']} | {_fmt_value(row['value'])} | {row['arm']} | "
                         + " | ".join(_cell(k, row["metrics"].get(k), n_seeds) for k in cols) + " |")
    lines += ["", "## Reports", ""]
    for seed, paths in s["reports"].items():
        for p in paths:
            lines.append(f"- seed {seed}: `{p}`")
    if not any(s["reports"].values()):
        lines.append("- none yet")
    return "\n".join(lines) + "\n"

