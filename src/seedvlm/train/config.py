"""SeedConfig: every option of `seedvlm train`, as `transformers.TrainingArguments` plus the SEED, LoRA and data fields.

The Trainer reads the object itself (no translation layer); the training options keep transformers' names
(`gradient_accumulation_steps`, `num_train_epochs`, `dataloader_num_workers`, ...) and the LoRA ones TRL's
(`lora_r`, `lora_alpha`, `lora_dropout`, `lora_target_modules`, the fields of peft's LoraConfig). Defaults are the
reference implementation's recipe for LLaVA-1.5-7B; configs/*.yaml override them per setting, and docs/training.md
lists every field with where its default comes from. Load one with `seedvlm.config.load_config(SeedConfig, ...)`
(YAML + `--key value`, parsed by transformers' HfArgumentParser).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import typing
from typing import ClassVar

import torch
from transformers import TrainingArguments
from transformers.integrations import is_tensorboard_available
from transformers.trainer_utils import SchedulerType
from transformers.training_args import OptimizerNames

from seedvlm.choices import (AttnImplementation, BetaKind, CacheTail, CompileDynamic, Dtype, KLDirection,
                             MaskStrategy, Method, Perturbation, PromptStyle, PurifySpace, values)
from seedvlm.config import field_
from seedvlm.distributed import launched_world_size
from seedvlm.errors import SeedVLMError
from seedvlm.models.families.options import option_help

log = logging.getLogger("seedvlm.train")

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")

# Keys of earlier releases, still read (with a one-line notice) for one release: old name -> new name.
DEPRECATED_KEYS = {
    "per_device_batch_size": "per_device_train_batch_size",
    "grad_accumulation": "gradient_accumulation_steps",
    "num_epochs": "num_train_epochs",
    "lr_scheduler": "lr_scheduler_type",
    "num_workers": "dataloader_num_workers",
    "gradient_checkpointing": "activation_checkpointing",
    "torch_compile": "compile_layers",
    "lora_targets": "lora_target_modules",
    "warmup_ratio": "warmup_steps",
    "group_by_length": "train_sampling_strategy",
}


@dataclasses.dataclass
class SeedConfig(TrainingArguments):
    """TrainingArguments with SEED's options; `method: sft` trains the CE-only control arm with the same settings."""

    # ---- TrainingArguments fields whose default is the recipe's (same names, same meaning) ------------------------
    output_dir: str = field_("runs/train", "run folder: checkpoints, metrics.jsonl, adapter/, train_manifest.json")
    learning_rate: float = field_(2e-6, "peak AdamW learning rate (reference implementation, 7B: 2e-6; 2e-5 "
                                        "collapses into repetition there)")
    lr_scheduler_type: SchedulerType | str = field_("cosine", "learning-rate schedule after warmup")
    warmup_steps: float = field_(0.03, "linear warmup: steps when >= 1, else the share of all steps")
    num_train_epochs: float = field_(3.0, "passes over the data (reference implementation: 3)")
    max_steps: int = field_(-1, "optimizer steps to run (overrides num_train_epochs when > 0; -1 = use the epochs)")
    per_device_train_batch_size: int = field_(1, "micro-batch per device")
    gradient_accumulation_steps: int = field_(8, "micro-batches per optimizer step (reference implementation: 8; "
                                                 "derived from global_batch_size when that is set)")
    seed: int = field_(42, "seed of LoRA init, data order, dropout and the per-sample noise (data_seed follows it)")
    logging_steps: float = field_(10, "print a log line (and log to TensorBoard) every N steps; metrics.jsonl "
                                      "gets every step")
    save_steps: float = field_(200, "write a checkpoint every N steps (and one at the end)")
    report_to: None | str | list[str] = field_("auto", "auto = tensorboard when installed, else none; or none / "
                                                       "tensorboard / wandb / any transformers integration")
    optim: OptimizerNames | str = field_("auto", "auto = adamw_torch_fused on a GPU, adamw_torch on the CPU")
    disable_tqdm: bool | None = field_(False, "no progress bar")
    remove_unused_columns: bool = field_(False, "keep every dataset column (the SEED step needs sample_index)")
    logging_nan_inf_filter: bool = field_(False, "log non-finite losses as they are (the NaN guard reports them)")
    # DDP: every LoRA weight gets a gradient at every step, so no unused-parameter search after each backward
    ddp_find_unused_parameters: bool | None = field_(False, "DDP's search for parameters without a gradient")

    # ---- what to train on ----------------------------------------------------------------------------------------
    model: str = field_("", "local llava-hf model folder (config.json + safetensors + processor), loaded offline")
    data: str = field_("", "prepared training records (JSON list of {id, image, prompt, answer}; seedvlm prepare)")
    images: str = field_("", "folder the records' image names are relative to")
    overwrite_output_dir: bool = field_(False, "start afresh in an output_dir that already holds a run (the old "
                                               "one is kept aside until the new one's first checkpoint, and put "
                                               "back if the new one fails before it)")
    method: Method = field_("seed", "seed = purified-teacher distillation + CE; sft = CE only (the control arm: "
                                    "same data order, seed and LoRA)")
    max_samples: int | None = field_(None, "train on the first N records only (None = all)")
    max_length: int | None = field_(None, "longest example in tokens (None = the LM's max_position_embeddings); "
                                          "a longer record is an error, never truncated")
    global_batch_size: int | None = field_(None, "samples per optimizer step over all processes; when set, "
                                                 "gradient_accumulation_steps = global_batch_size / "
                                                 "(per_device_train_batch_size x processes), so 1 or N GPUs train "
                                                 "the same steps (must divide exactly; docs/distributed.md)")
    prompt_style: PromptStyle = field_("hf", "conversation template and image preparation: hf (the folder's chat template "
                                     "and processor) or llava-1.5 (Vicuna v1 system prompt, pad-to-square images)")
    # ---- the model family's processor options (Family.options; None = the folder's own setting) ----------------
    min_pixels: int | None = field_(None, option_help("min_pixels"))
    max_pixels: int | None = field_(None, option_help("max_pixels"))
    do_image_splitting: bool | None = field_(None, option_help("do_image_splitting"))
    # ---- the perturbation ----------------------------------------------------------------------------------------
    noise: Perturbation = field_("gaussian", "perturbation of the teacher's second view: gaussian (reference "
                                             "implementation: sqrt(a)x + sqrt(1-a)eps), ddpm (VCD: DDPM forward at "
                                             "noise_step), mask (patches), blur (Gaussian blur of blur_sigma), "
                                             "blank (one colour: the language prior)")
    alpha: float = field_(0.3, "a of the gaussian noise (reference implementation: 0.3; smaller = noisier)")
    noise_step: int = field_(500, "DDPM step of 1000 for noise=ddpm (VCD: 500, alpha_bar ~0.745)")
    mask_ratio: float = field_(0.5, "share of patches blanked for noise=mask")
    blur_sigma: float = field_(0.03, "standard deviation of the blur for noise=blur, as a fraction of the image "
                                     "width (0.03: about 2 px on a 64 px image)")
    # ---- the dynamic b -------------------------------------------------------------------------------------------
    beta_schedule: BetaKind = field_("quantile", "quantile (reference implementation: b by the quantile bucket of "
                                                 "the clean teacher's confidence), fixed, continuous "
                                                 "(b_max*sigmoid(-conf/tau)), curriculum")
    beta_values: list[float] = field_([1.1, 0.8, 0.6, 0.4], "b per confidence bucket, least confident first")
    beta_quantiles: list[float] = field_([0.25, 0.5, 0.75], "bucket thresholds as quantiles of the history")
    beta_history_size: int = field_(1000, "confidences kept for the quantiles (reference implementation: 1000)")
    beta_min_history: int = field_(20, "below this many confidences every sample gets the middle b (0.7)")
    beta_fixed: float = field_(0.7, "b for beta_schedule=fixed")
    beta_max: float = field_(1.1, "b_max for beta_schedule=continuous")
    beta_tau: float = field_(1.0, "tau for beta_schedule=continuous")
    curriculum_start: float = field_(0.0, "b at step 0 for beta_schedule=curriculum")
    curriculum_end: float = field_(1.1, "b after the ramp for beta_schedule=curriculum")
    curriculum_warmup: float = field_(0.3, "share of the steps over which the curriculum ramps b")
    # ---- purification and loss -----------------------------------------------------------------------------------
    purify_space: PurifySpace = field_("logit", "logit: (1+b)clean - b*noisy (reference implementation); logprob: "
                                                "the same on log-softmax")
    plausibility: float | None = field_(None, "VCD's plausibility g: tokens below g*max clean prob get -inf in the "
                                              "target (None = off, as the reference implementation; VCD uses 0.1)")
    direction: KLDirection = field_("reverse", "KL direction: reverse = KL(student||teacher), the reference "
                                               "implementation's; forward = KL(teacher||student)")
    mask_strategy: MaskStrategy = field_("restrict", "reverse KL vs -inf targets: restrict (renormalize the "
                                                     "student over the kept tokens) or clamp (teacher log-probs "
                                                     "floored at -30)")
    temperature: float = field_(2.0, "distillation temperature T (reference implementation: 2; the KL term is "
                                     "scaled by T^2)")
    distill_weight: float = field_(0.7, "w in L = w*T^2*KL + (1-w)*CE (reference implementation: 0.7)")
    kl_chunk_size: int | None = field_(None, "compute the KL over answer rows in checkpointed chunks of this size "
                                             "(less memory for big vocabularies; same value)")
    # ---- LoRA (the fields of peft's LoraConfig, named as TRL names them) -----------------------------------------
    lora_r: int = field_(64, "LoRA rank (reference implementation: 64; higher = more capacity and memory)")
    lora_alpha: int = field_(128, "LoRA alpha (reference implementation: 128; the update is scaled by alpha/r)")
    lora_dropout: float = field_(0.05, "dropout on the LoRA input (reference implementation: 0.05)")
    lora_target_modules: list[str] = field_(list(LORA_TARGETS), "projection names wrapped inside the language "
                                                                "model (never the vision tower's, never the "
                                                                "projector)")
    # ---- speed and memory ----------------------------------------------------------------------------------------
    dtype: Dtype = field_("auto", "auto = bf16 on GPU, fp32 on CPU; or fp32 / bf16 / fp16 (weights and autocast)")
    attn_implementation: AttnImplementation = field_("sdpa", "attention kernel: sdpa (torch's fused attention), "
                                                             "eager, or flash_attention_2 (needs flash-attn)")
    compile_layers: bool = field_(False, "torch.compile each language-model decoder layer (one compiled graph "
                                         "shared by all layers; no gain on the CPU, GPU: docs/performance.md)")
    torch_compile_vision: bool = field_(False, "with compile_layers: also compile each encoder layer of the vision "
                                               "tower (one shared graph, like the LM's; docs/performance.md)")
    torch_compile_dynamic: CompileDynamic = field_("true", "with compile_layers: true = dynamic shapes from the "
                                                           "start (one graph for every batch size and length); "
                                                           "false = one graph per shape (a recompile per new "
                                                           "shape); auto = torch's default (static first, dynamic "
                                                           "after the first shape change)")
    reuse_image_features: bool = field_(True, "the student takes the teacher's clean image features instead of "
                                              "running the frozen vision tower + projector a third time (same "
                                              "values; off by itself with a teacher cache, under FSDP, or when the "
                                              "tower or projector is trainable)")
    teacher_cache: str | None = field_(None, "a teacher cache folder from `seedvlm teach`: skip the teacher forward "
                                             "(top-k teacher logits, noise drawn once at step 0; docs/performance.md)")
    teacher_cache_tail: CacheTail = field_("lump", "tokens outside a cache's kept top-k: lump (one extra token for "
                                                   "the rest's mass) or drop (renormalize over the kept tokens)")
    max_consecutive_nan: int = field_(5, "stop after this many optimizer steps in a row with a non-finite loss "
                                         "(each such step is skipped: no update)")

    # `--key none` on the command line means None for these Optional fields; report_to keeps "none" as a word
    NONE_IS_A_WORD: ClassVar[frozenset[str]] = frozenset({"report_to"})

    def __post_init__(self) -> None:
        self._resolve()
        self._validate()
        super().__post_init__()

    def _resolve(self) -> None:
        """The settings that follow from others or from the machine: fp precision from dtype, the optimizer and
        pinned memory from the device, report_to auto, accumulation from global_batch_size, data_seed = seed."""
        self.torch_compile_dynamic = str(self.torch_compile_dynamic).lower()  # YAML's true/false arrive as bools
        cuda = torch.cuda.is_available()
        precision = self.dtype if self.dtype != "auto" else ("bf16" if cuda else "fp32")
        self.bf16 = bool(self.bf16) or precision == "bf16"
        self.fp16 = bool(self.fp16) or precision == "fp16"
        self.use_cpu = bool(self.use_cpu) or not cuda
        self.dataloader_pin_memory = bool(self.dataloader_pin_memory) and cuda
        if self.optim == "auto":
            self.optim = "adamw_torch_fused" if cuda else "adamw_torch"
        if self.report_to == "auto":
            self.report_to = "tensorboard" if is_tensorboard_available() else "none"
        if self.data_seed is None:
            self.data_seed = self.seed
        if self.activation_checkpointing and self.activation_checkpointing_kwargs is None:
            self.activation_checkpointing_kwargs = {"use_reentrant": False}
        if self.global_batch_size is not None and self.global_batch_size > 0 and self.per_device_train_batch_size > 0:
            self.gradient_accumulation_steps = resolve_grad_accumulation(self, launched_world_size())

    def _validate(self) -> None:
        """Every option whose value makes no sense, refused with its valid range (one line)."""
        hints = _hints()
        for f in dataclasses.fields(SeedConfig):
            allowed = values(hints[f.name]) if f.name in _OWN_FIELDS else ()
            if allowed and getattr(self, f.name) not in allowed:
                raise SeedVLMError(f"{f.name} = {getattr(self, f.name)!r}; choose one of {list(allowed)}")
        unit, b = (lambda v: 0.0 <= v <= 1.0), (lambda v: v >= 0.0)
        checks = [
            ("alpha", 0.0 < self.alpha <= 1.0, "in (0, 1]"),
            ("noise_step", 0 <= self.noise_step < 1000, "in [0, 999]"),
            ("mask_ratio", unit(self.mask_ratio), "in [0, 1]"),
            ("blur_sigma", self.blur_sigma > 0, "> 0"),
            ("beta_values", all(b(v) for v in self.beta_values), ">= 0 (b = 0 is the clean teacher alone)"),
            ("beta_values", len(self.beta_values) == len(self.beta_quantiles) + 1,
             f"one more entry than beta_quantiles ({len(self.beta_quantiles) + 1})"),
            ("beta_quantiles", list(self.beta_quantiles) == sorted(self.beta_quantiles)
             and all(unit(q) for q in self.beta_quantiles), "ascending within [0, 1]"),
            ("beta_history_size", self.beta_history_size > 0, "> 0"),
            ("beta_min_history", self.beta_min_history >= 0, ">= 0"),
            ("beta_fixed", b(self.beta_fixed), ">= 0"),
            ("beta_max", b(self.beta_max), ">= 0"),
            ("beta_tau", self.beta_tau > 0, "> 0"),
            ("curriculum_start", b(self.curriculum_start), ">= 0"),
            ("curriculum_end", b(self.curriculum_end), ">= 0"),
            ("curriculum_warmup", unit(self.curriculum_warmup), "in [0, 1]"),
            ("plausibility", self.plausibility is None or 0.0 < self.plausibility <= 1.0, "in (0, 1] or none"),
            ("temperature", self.temperature > 0, "> 0"),
            ("distill_weight", unit(self.distill_weight), "in [0, 1]"),
            ("kl_chunk_size", self.kl_chunk_size is None or self.kl_chunk_size > 0, "> 0 or none"),
            ("lora_r", self.lora_r > 0, "> 0"),
            ("lora_alpha", self.lora_alpha > 0, "> 0"),
            ("lora_dropout", 0.0 <= self.lora_dropout < 1.0, "in [0, 1)"),
            ("lora_target_modules", bool(self.lora_target_modules), "at least one projection name"),
            ("learning_rate", self.learning_rate > 0, "> 0"),
            ("warmup_steps", self.warmup_steps >= 0, ">= 0 (steps, or a share of the steps when < 1)"),
            ("max_steps", self.max_steps == -1 or self.max_steps > 0, "> 0, or -1 to train num_train_epochs"),
            ("num_train_epochs", self.max_steps > 0 or self.num_train_epochs > 0,
             "> 0 when max_steps is -1 (set one of them)"),
            ("per_device_train_batch_size", self.per_device_train_batch_size > 0, "> 0"),
            ("gradient_accumulation_steps", self.gradient_accumulation_steps > 0, "> 0"),
            ("global_batch_size", self.global_batch_size is None or self.global_batch_size > 0, "> 0 or none"),
            ("weight_decay", self.weight_decay >= 0, ">= 0"),
            ("max_grad_norm", self.max_grad_norm >= 0, ">= 0 (0 = no clipping)"),
            ("max_consecutive_nan", self.max_consecutive_nan > 0, "> 0"),
            ("logging_steps", self.logging_steps > 0, "> 0"),
            ("save_steps", self.save_steps > 0, "> 0"),
            ("save_total_limit", self.save_total_limit is None or self.save_total_limit > 0, "> 0 or none"),
            ("max_length", self.max_length is None or self.max_length > 0, "> 0 or none"),
            ("max_samples", self.max_samples is None or self.max_samples > 0, "> 0 or none"),
            ("min_pixels", self.min_pixels is None or self.min_pixels > 0, "> 0 or none"),
            ("max_pixels", self.max_pixels is None or self.max_pixels >= (self.min_pixels or 1), ">= min_pixels "
                                                                                                  "(> 0) or none"),
            ("dataloader_num_workers", self.dataloader_num_workers >= 0, ">= 0"),
            ("teacher_cache", self.teacher_cache is None or self.method == "seed",
             "none for method sft (a teacher cache is for method seed only)"),
        ]
        for name, ok, valid in checks:
            if not ok:
                raise SeedVLMError(f"{name} = {getattr(self, name)!r}: must be {valid}")

    def require_paths(self) -> None:
        """model, data and images must be set to run (a config file may leave them to the command line)."""
        missing = [k for k in ("model", "data", "images") if not getattr(self, k)]
        if missing:
            raise SeedVLMError(f"set {', '.join('--' + k.replace('_', '-') for k in missing)} (in the YAML or on "
                               f"the command line)")

    @staticmethod
    def migrate(data: dict, source: str, notify: bool = True) -> dict:
        """Old keys renamed to the current ones (a one-line notice each); their values converted where the meaning
        moved (warmup_ratio -> a warmup_steps share, group_by_length -> train_sampling_strategy)."""
        out = dict(data)
        for old, new in DEPRECATED_KEYS.items():
            if old not in out:
                continue
            if old == "gradient_checkpointing" and "activation_checkpointing" in out:
                continue
            value = out.pop(old)
            if notify:
                log.warning("%s: option '%s' is now '%s' (the old name is read until the next release)", source,
                            old, new)
            if old == "warmup_ratio":
                if float(out.get("warmup_steps", 0) or 0) <= 0:  # warmup_steps > 0 won over warmup_ratio before
                    out["warmup_steps"] = float(value)
                continue
            if old == "group_by_length":
                value = "group_by_length" if str(value).lower() in ("1", "true", "yes", "on") else "random"
            out.setdefault(new, value)
        return out


# An earlier name of the class, for code that imports it.
TrainConfig = SeedConfig

_OWN_FIELDS = frozenset(SeedConfig.__annotations__)


@functools.cache
def _hints() -> dict[str, typing.Any]:
    return typing.get_type_hints(SeedConfig)


def resolve_grad_accumulation(cfg: SeedConfig, world_size: int) -> int:
    """gradient_accumulation_steps, or with `global_batch_size` set: global_batch_size / (per_device_train_batch_size
    x world_size), which must divide exactly (so 1 and N processes take the same optimizer steps)."""
    if cfg.global_batch_size is None:
        return cfg.gradient_accumulation_steps
    per_micro_step = cfg.per_device_train_batch_size * world_size
    if cfg.global_batch_size % per_micro_step:
        raise SeedVLMError(f"global_batch_size {cfg.global_batch_size} is not a multiple of "
                           f"per_device_train_batch_size {cfg.per_device_train_batch_size} x {world_size} processes; "
                           f"choose a global batch or a per-device batch that divides it")
    accumulation = cfg.global_batch_size // per_micro_step
    if accumulation != cfg.gradient_accumulation_steps:
        log.info("global_batch_size %d = %d per device x %d processes x gradient_accumulation_steps %d",
                 cfg.global_batch_size, cfg.per_device_train_batch_size, world_size, accumulation)
    return accumulation


# `seedvlm train --help`: the fields by topic (the other TrainingArguments are accepted too; --help-all lists them)
HELP_GROUPS = {
    "what to train on": ["model", "data", "images", "output_dir", "overwrite_output_dir", "method", "max_samples",
                         "max_length", "train_sampling_strategy", "min_pixels", "max_pixels"],
    "the perturbation": ["noise", "alpha", "noise_step", "mask_ratio", "blur_sigma"],
    "the dynamic b": ["beta_schedule", "beta_values", "beta_quantiles", "beta_history_size", "beta_min_history",
                      "beta_fixed", "beta_max", "beta_tau", "curriculum_start", "curriculum_end",
                      "curriculum_warmup"],
    "purification and loss": ["purify_space", "plausibility", "direction", "mask_strategy", "temperature",
                              "distill_weight", "kl_chunk_size"],
    "LoRA": ["lora_r", "lora_alpha", "lora_dropout", "lora_target_modules"],
    "optimization (transformers TrainingArguments)": [
        "learning_rate", "lr_scheduler_type", "warmup_steps", "num_train_epochs", "max_steps",
        "per_device_train_batch_size", "gradient_accumulation_steps", "global_batch_size", "weight_decay",
        "max_grad_norm", "seed", "optim"],
    "speed and memory": ["dtype", "attn_implementation", "compile_layers", "torch_compile_vision",
                         "torch_compile_dynamic", "reuse_image_features", "activation_checkpointing",
                         "teacher_cache", "teacher_cache_tail", "dataloader_num_workers", "max_consecutive_nan"],
    "logging and checkpoints": ["logging_steps", "save_steps", "save_total_limit", "report_to"],
}

# what `seedvlm teach` reads of a training config (its --help lists only these)
TEACH_FIELDS = ["model", "data", "images", "max_samples", "max_length", "noise", "alpha", "noise_step", "mask_ratio",
                "blur_sigma", "seed", "dtype", "attn_implementation", "per_device_train_batch_size", "min_pixels",
                "max_pixels", "do_image_splitting"]
