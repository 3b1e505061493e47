"""The experiment's steps (`Plan`): the shared world, data and questions; per seed and arm its training run,
evaluations (POPE, probes, MME, CHAIR), contrast and word-budget operating points; the w-sweep and ablation variants;
the per-seed `seedvlm compare` reports. Each step is an existing `seedvlm` command (run in this process) or a small
file operation, with the settings its outputs depend on (what resume compares)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from seedvlm.cli import main as cli_main
from seedvlm.commands.eval import select_images
from seedvlm.config import load_config
from seedvlm.data.image_ids import image_identity
from seedvlm.errors import SeedVLMError
from seedvlm.eval.chair import CHAIR
from seedvlm.experiment.config import ARMS, ExperimentConfig
from seedvlm.io import read_json, read_jsonl, write_json, write_jsonl
from seedvlm.models.families.options import all_options, check_model_options
from seedvlm.models.families.registry import model_family
from seedvlm.train.config import TrainConfig

STARTED = "started.json"
CONTRASTIVE_ARMS = ("base_cd", "seed_cd")
_SHORT = {"distill_weight": "w", "temperature": "T", "purify_space": "purify", "beta_schedule": "beta"}


@dataclass
class Step:
    """One step of the plan: what it runs, where it writes, what it reads, the settings its marker records."""

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
    argv = [str(a) for a in argv]
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "a", encoding="utf-8") as f, contextlib.redirect_stdout(f):
        print(f"$ seedvlm {shlex.join(argv)}", flush=True)
        rc = cli_main(argv)
    if rc:
        raise SeedVLMError(f"step failed: `seedvlm {shlex.join(argv)}` exited with {rc} (its message is above; "
                           f"log: {log_file})")


class Plan:
    """The steps of an experiment, in run order, with the arms they belong to."""

    def __init__(self, cfg: ExperimentConfig) -> None:
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

        family = _family_checked(cfg)
        self._shared()
        for i, s in enumerate(cfg.seeds):
            for arm in ARMS:
                if arm in cfg.arms:
                    self._arm(s, arm)
            self._variants(s, ablate=i < cfg.ablation_seeds)
        for s in cfg.seeds:
            self._compare(s)
        if family is not None:
            self._check_noise(family)

    def _check_noise(self, family) -> None:
        """Every SEED run's perturbation (arms, ablations, overrides) and the contrastive noise must be one the
        family's pixel layout takes: refused in one line at plan time, not in the middle of the run."""
        noises = {s.settings["noise"]: s.key for s in self.steps if s.kind == "train"
                  and s.settings.get("method") == "seed"}
        if any(a in self.cfg.arms for a in CONTRASTIVE_ARMS):
            noises.setdefault(self.cfg.contrastive_options.get("noise", "gaussian"), "contrastive_options")
        bad = {n: k for n, k in noises.items() if n not in family.perturbations}
        if bad:
            raise SeedVLMError(f"base_model {self.cfg.base_model} is a {family.name} model: perturbation(s) "
                               f"{', '.join(sorted(bad))} (e.g. {next(iter(bad.values()))}) are not available for it; "
                               f"it takes {', '.join(family.perturbations)} (set ablations / overrides without them)")

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
                "--out", self.data, "--turns", c.prepare_turns]
        if c.prepare_max_samples:
            prep += ["--max-samples", c.prepare_max_samples, "--seed", 0]

        def manifest(step: Step) -> None:
            records = read_json(self.data, "prepared records")
            names = sorted({r["image"] for r in records})
            write_json(self.manifest, {"images": names, "data": str(self.data), "n_records": len(records),
                                       **image_identity(names, self.world / "images" / "train")})
        self._cmd("data", "prepare", prep, deps, after=manifest)
        settings = {k: getattr(c, k) for k in ("pope_images", "probe_images", "probe_kinds", "question_seed",
                                               "chair_images")}
        settings["world"] = str(self.world)
        self._add("questions", "questions", settings, self._build_questions, ["data"],
                  f"seedvlm pope build (objects, {', '.join(c.probe_kinds) or 'no probes'}) + CHAIR image ids")

    def _build_questions(self, step: Step) -> None:
        c, q, log = self.cfg, self.questions, step.folder / "log.txt"
        common = ["--instances", self.world / "instances_val.json", "--seed", c.question_seed,
                  "--train-manifest", self.manifest]
        _cli(["pope", "build", "--out", q / "pope", "--n-images", c.pope_images, *common], log)
        _cli(["pope", "build", "--format", "mme", "--out", q / "mme", "--n-images", c.pope_images,
              "--images", self.world / "images" / "val", *common], log)
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
        if c.prompt_style != "hf":
            ov["prompt_style"] = c.prompt_style
        ov.update(c.family_options)
        ov.update(model=c.base_model, data=str(self.data), images=str(self.world / "images" / "train"), seed=seed,
                  output_dir=str(self.out / f"seed{seed}" / arm / "train"))
        ov = {k: _arg(v) for k, v in ov.items()}
        resolved = dataclasses.asdict(load_config(self._train_cfg, yaml_path, ov))
        resolved.pop("overwrite_output_dir", None)
        for name in all_options():  # unset family options: markers of runs made before they existed still match
            if resolved.get(name) is None:
                resolved.pop(name, None)
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
            argv = ["eval", "mme" if task == "mme" else "pope",
                    "--questions", self.questions / ({"pope": "pope", "mme": "mme"}.get(task, "probes")),
                    "--max-new-tokens", c.pope_max_new_tokens]
            if c.pope_prompt_suffix or (c.prompt_style == "hf" and task != "mme"):
                argv.append(f"--prompt-suffix={c.pope_prompt_suffix}")
        images = self.questions / "mme" if task == "mme" else w / "images" / "val"
        argv += ["--model", c.base_model, "--images", images, "--out", folder,
                 "--batch-size", c.batch_size, "--seed", seed, "--train-manifest", self.manifest]
        if adapter is not None:
            argv += ["--adapter", adapter]
        if c.prompt_style != "hf":
            argv += ["--prompt-style", c.prompt_style]
        if c.device:
            argv += ["--device", c.device]
        argv += [f"--{k.replace('_', '-')}={_arg(v)}" for k, v in c.family_options.items()]
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
        tasks = ["pope"] + (["probes"] if c.probe_images and c.probe_kinds else []) + ["mme", "chair"]
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


def _family_checked(cfg: ExperimentConfig):
    """The base model's family when it is not LLaVA-1.5 (None for LLaVA-1.5 and for a folder that is not here, as
    with --summary-only), after refusing in one line what the plan could not run on it: family options of another
    family, another prompt style than the model's own."""
    if not Path(cfg.base_model).is_dir():
        return None
    check_model_options(cfg.base_model, cfg.family_options)
    family = model_family(cfg.base_model)
    if family is None:
        return None
    where = f"base_model {cfg.base_model} is a {family.name} model"
    if cfg.prompt_style != "hf":
        raise SeedVLMError(f"{where}: it trains and answers with its own chat template (prompt_style hf), not "
                           f"{cfg.prompt_style}")
    return family


def _same(a: Any, b: Any) -> bool:
    """Equal as the JSON a marker records them in."""
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)
