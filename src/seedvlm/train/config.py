"""TrainConfig: every knob of `seedvlm train` (SEED and the SFT control arm), with its default and its source.

Defaults follow DESIGN.md section 2 (the seed's recipe for LLaVA-1.5-7B); configs/*.yaml override them per setting.
docs/training.md lists the same fields with where each default comes from.
"""

from __future__ import annotations

from dataclasses import dataclass

from seedvlm.config import field_
from seedvlm.errors import SeedVLMError

METHODS = ("seed", "sft")
NOISE_KINDS = ("gaussian", "ddpm", "mask")
BETA_SCHEDULES = ("quantile", "fixed", "continuous", "curriculum")
SPACES = ("logit", "logprob")
DIRECTIONS = ("reverse", "forward")
MASK_STRATEGIES = ("restrict", "clamp")
DTYPES = ("auto", "fp32", "bf16", "fp16")
SCHEDULERS = ("cosine", "linear", "constant_with_warmup", "constant")
REPORT_TO = ("auto", "none", "tensorboard", "wandb")
ATTN_IMPLEMENTATIONS = ("sdpa", "eager", "flash_attention_2")
CACHE_TAILS = ("lump", "drop")
COMPILE_DYNAMIC = ("true", "false", "auto")
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")


@dataclass
class TrainConfig:
    # ---- what to train on ------------------------------------------------------------------------------------
    model: str = field_("", "local llava-hf model folder (config.json + safetensors + processor), loaded offline")
    data: str = field_("", "prepared training records (JSON list of {id, image, prompt, answer}; seedvlm prepare)")
    images: str = field_("", "folder the records' image names are relative to")
    output_dir: str = field_("runs/train", "run folder: checkpoints, metrics.jsonl, adapter/, train_manifest.json")
    overwrite_output_dir: bool = field_(False, "start afresh in an output_dir that already holds a run "
                                               "(its checkpoints and metrics.jsonl are deleted)")
    method: str = field_("seed", "seed = purified-teacher distillation + CE; sft = CE only (the control arm: same "
                                 "data order, seed and LoRA)")
    max_samples: int | None = field_(None, "train on the first N records only (None = all)")
    max_length: int | None = field_(None, "longest example in tokens (None = the LM's max_position_embeddings); "
                                          "a longer record is an error, never truncated")
    group_by_length: bool = field_(False, "length-grouped batches (sorted within megabatches of 50 batches): less "
                                          "padding, same random order across megabatches")
    prompt_style: str = field_("hf", "conversation template and image preparation: hf (the folder's chat template "
                                     "and processor) or llava-1.5 (Vicuna v1 system prompt, pad-to-square images)")
    # ---- the perturbation (DESIGN.md 2) ----------------------------------------------------------------------
    noise: str = field_("gaussian", "perturbation of the teacher's second view: gaussian (the seed: "
                                    "sqrt(a)x + sqrt(1-a)eps), ddpm (VCD: DDPM forward at noise_step), mask (patches)")
    alpha: float = field_(0.3, "a of the gaussian noise (the seed: 0.3; smaller = noisier)")
    noise_step: int = field_(500, "DDPM step of 1000 for noise=ddpm (VCD: 500, alpha_bar ~0.745)")
    mask_ratio: float = field_(0.5, "share of patches blanked for noise=mask")
    # ---- the dynamic b (DESIGN.md 2) -------------------------------------------------------------------------
    beta_schedule: str = field_("quantile", "quantile (the seed: b by the quantile bucket of the clean teacher's "
                                            "confidence), fixed, continuous (b_max*sigmoid(-conf/tau)), curriculum")
    beta_values: list[float] = field_([1.1, 0.8, 0.6, 0.4], "b per confidence bucket, least confident first (seed)")
    beta_quantiles: list[float] = field_([0.25, 0.5, 0.75], "bucket thresholds as quantiles of the history (seed)")
    beta_history_size: int = field_(1000, "confidences kept for the quantiles (seed: last 1000)")
    beta_min_history: int = field_(20, "below this many confidences every sample gets the middle b (0.7)")
    beta_fixed: float = field_(0.7, "b for beta_schedule=fixed")
    beta_max: float = field_(1.1, "b_max for beta_schedule=continuous")
    beta_tau: float = field_(1.0, "tau for beta_schedule=continuous")
    curriculum_start: float = field_(0.0, "b at step 0 for beta_schedule=curriculum")
    curriculum_end: float = field_(1.1, "b after the ramp for beta_schedule=curriculum")
    curriculum_warmup: float = field_(0.3, "share of the steps over which the curriculum ramps b")
    # ---- purification and loss (DESIGN.md 2) -----------------------------------------------------------------
    purify_space: str = field_("logit", "logit: (1+b)clean - b*noisy (the seed); logprob: the same on log-softmax")
    plausibility: float | None = field_(None, "VCD's plausibility g: tokens below g*max clean prob get -inf in the "
                                              "target (None = off, as the seed; VCD uses 0.1)")
    direction: str = field_("reverse", "KL direction: reverse = KL(student||teacher), the seed's; forward = "
                                       "KL(teacher||student)")
    mask_strategy: str = field_("restrict", "reverse KL vs -inf targets: restrict (renormalize the student over "
                                            "the kept tokens) or clamp (teacher log-probs floored at -30)")
    temperature: float = field_(2.0, "distillation temperature T (the seed: 2; the KL term is scaled by T^2)")
    distill_weight: float = field_(0.7, "w in L = w*T^2*KL + (1-w)*CE (the seed: 0.7)")
    kl_chunk_size: int | None = field_(None, "compute the KL over answer rows in checkpointed chunks of this size "
                                             "(less memory for big vocabularies; same value)")
    # ---- LoRA (DESIGN.md 2) ----------------------------------------------------------------------------------
    lora_r: int = field_(64, "LoRA rank (the seed: 64; higher = more capacity and memory)")
    lora_alpha: int = field_(128, "LoRA alpha (the seed: 128; the update is scaled by alpha/r)")
    lora_dropout: float = field_(0.05, "dropout on the LoRA input (the seed: 0.05)")
    lora_targets: list[str] = field_(list(LORA_TARGETS), "projection names wrapped inside the language model "
                                                         "(never the vision tower's, never the projector)")
    # ---- optimization ----------------------------------------------------------------------------------------
    learning_rate: float = field_(2e-6, "peak AdamW learning rate (the seed, 7B: 2e-6; 2e-5 collapses into "
                                        "repetition there)")
    lr_scheduler: str = field_("cosine", "learning-rate schedule after warmup")
    warmup_ratio: float = field_(0.03, "share of the steps spent warming up linearly (used when warmup_steps=0)")
    warmup_steps: int = field_(0, "warmup steps (overrides warmup_ratio when > 0)")
    num_epochs: float = field_(3.0, "passes over the data (the seed: 3)")
    max_steps: int = field_(-1, "optimizer steps to run (overrides num_epochs when > 0)")
    per_device_batch_size: int = field_(1, "micro-batch per device")
    grad_accumulation: int = field_(8, "micro-batches per optimizer step (effective batch = per_device_batch_size "
                                       "x grad_accumulation x devices; the seed: 8)")
    global_batch_size: int | None = field_(None, "samples per optimizer step over all processes; when set, "
                                                 "grad_accumulation = global_batch_size / (per_device_batch_size x "
                                                 "processes), so 1 or N GPUs train the same steps (must divide "
                                                 "exactly; docs/distributed.md)")
    weight_decay: float = field_(0.0, "AdamW weight decay (on LoRA weights)")
    max_grad_norm: float = field_(1.0, "gradient clipping norm (0 = off)")
    seed: int = field_(42, "seed of LoRA init, data order, dropout and the per-sample noise")
    attn_implementation: str = field_("sdpa", "attention kernel: sdpa (torch's fused attention), eager, or "
                                              "flash_attention_2 (needs the flash-attn package)")
    torch_compile: bool = field_(False, "torch.compile each language-model decoder layer (one compiled graph "
                                        "shared by all layers; no gain on the CPU, GPU: docs/performance.md)")
    torch_compile_vision: bool = field_(False, "with torch_compile: also compile each encoder layer of the vision "
                                               "tower (one shared graph, like the LM's; the tower is frozen and with "
                                               "reuse_image_features it runs only in the teacher's no-grad forward; "
                                               "measured on H100s: 0.4-1.2% slower than the LM alone)")
    torch_compile_dynamic: str = field_("true", "with torch_compile: true = dynamic shapes from the start (one "
                                                "graph for every batch size and length; no recompiles with length-"
                                                "grouped batches, kernels not specialized to a shape); false = one "
                                                "graph per shape (fastest kernels, a recompile per new shape, and "
                                                "torch falls back to eager past its recompile limit); auto = torch's "
                                                "default (static first, dynamic after the first shape change)")
    reuse_image_features: bool = field_(True, "the student takes the teacher's clean image features instead of "
                                              "running the frozen vision tower + projector a third time (same "
                                              "values; off by itself with a teacher cache, under FSDP, or when the "
                                              "tower or projector is trainable)")
    teacher_cache: str | None = field_(None, "a teacher cache folder from `seedvlm teach`: skip the teacher forward "
                                             "(top-k teacher logits, noise drawn once at step 0; docs/performance.md)")
    teacher_cache_tail: str = field_("lump", "tokens outside a cache's kept top-k: lump (one extra token for the "
                                             "rest's mass) or drop (renormalize over the kept tokens)")
    gradient_checkpointing: bool = field_(False, "recompute activations in backward: less memory (24 GB cards), "
                                                 "~30% slower")
    dtype: str = field_("auto", "auto = bf16 on GPU, fp32 on CPU; or fp32 / bf16 / fp16 (weights and autocast)")
    max_consecutive_nan: int = field_(5, "stop after this many optimizer steps in a row with a non-finite loss "
                                         "(each such step is skipped: no update)")
    # ---- logging and checkpoints -----------------------------------------------------------------------------
    logging_steps: int = field_(10, "print a log line (and log to TensorBoard) every N steps; metrics.jsonl gets "
                                    "every step")
    save_steps: int = field_(200, "write a checkpoint every N steps (and one at the end)")
    save_total_limit: int | None = field_(None, "keep only the last N checkpoints (None = all)")
    report_to: str = field_("auto", "auto = tensorboard when installed, else none; or none / tensorboard / wandb")
    num_workers: int = field_(0, "DataLoader worker processes (image decoding)")

    def __post_init__(self) -> None:
        self.torch_compile_dynamic = str(self.torch_compile_dynamic).lower()  # YAML's true/false arrive as bools
        for name, allowed in (("method", METHODS), ("noise", NOISE_KINDS), ("beta_schedule", BETA_SCHEDULES),
                              ("purify_space", SPACES), ("direction", DIRECTIONS),
                              ("mask_strategy", MASK_STRATEGIES), ("dtype", DTYPES), ("lr_scheduler", SCHEDULERS),
                              ("report_to", REPORT_TO), ("attn_implementation", ATTN_IMPLEMENTATIONS),
                              ("teacher_cache_tail", CACHE_TAILS), ("torch_compile_dynamic", COMPILE_DYNAMIC)):
            if getattr(self, name) not in allowed:
                raise SeedVLMError(f"{name} = {getattr(self, name)!r}; choose one of {list(allowed)}")
        checks = [
            (0.0 <= self.alpha <= 1.0, "alpha must be in [0, 1]"),
            (0 <= self.noise_step < 1000, "noise_step must be in [0, 999]"),
            (0.0 <= self.mask_ratio <= 1.0, "mask_ratio must be in [0, 1]"),
            (len(self.beta_values) == len(self.beta_quantiles) + 1, "beta_values needs one more entry than "
                                                                     "beta_quantiles"),
            (list(self.beta_quantiles) == sorted(self.beta_quantiles)
             and all(0.0 <= q <= 1.0 for q in self.beta_quantiles), "beta_quantiles must ascend within [0, 1]"),
            (self.beta_history_size > 0, "beta_history_size must be positive"),
            (self.beta_tau > 0, "beta_tau must be positive"),
            (self.plausibility is None or 0.0 < self.plausibility <= 1.0, "plausibility must be in (0, 1] or None"),
            (self.temperature > 0, "temperature must be positive"),
            (0.0 <= self.distill_weight <= 1.0, "distill_weight must be in [0, 1]"),
            (self.lora_r > 0 and self.lora_alpha > 0, "lora_r and lora_alpha must be positive"),
            (0.0 <= self.lora_dropout < 1.0, "lora_dropout must be in [0, 1)"),
            (bool(self.lora_targets), "lora_targets must name at least one projection"),
            (self.learning_rate > 0, "learning_rate must be positive"),
            (0.0 <= self.warmup_ratio < 1.0, "warmup_ratio must be in [0, 1)"),
            (self.max_steps > 0 or self.num_epochs > 0, "set num_epochs > 0 or max_steps > 0"),
            (self.per_device_batch_size > 0 and self.grad_accumulation > 0
             and (self.global_batch_size is None or self.global_batch_size > 0), "batch sizes must be positive"),
            (self.max_consecutive_nan > 0, "max_consecutive_nan must be positive"),
            (self.logging_steps > 0 and self.save_steps > 0, "logging_steps and save_steps must be positive"),
            (self.max_length is None or self.max_length > 0, "max_length must be positive"),
            (self.teacher_cache is None or self.method == "seed", "teacher_cache is for method seed only"),
        ]
        for ok, msg in checks:
            if not ok:
                raise SeedVLMError(f"bad training config: {msg}")

    def require_paths(self) -> None:
        """model, data and images must be set to run (a config file may leave them to the command line)."""
        missing = [k for k in ("model", "data", "images") if not getattr(self, k)]
        if missing:
            raise SeedVLMError(f"set {', '.join('--' + k for k in missing)} (in the YAML or on the command line)")
