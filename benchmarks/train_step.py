"""Training-step speed and memory: plain LoRA SFT vs the reference implementation's SEED step vs the SEED step
`seedvlm train` runs.

Cases (all LoRA r=64 / alpha 128 / dropout 0.05 on the LM's q/k/v/o via peft, as training applies it; every step =
forward(s) + backward + an AdamW step over the LoRA weights; bf16 weights under bf16 autocast on CUDA like the
Trainer, fp32 on the CPU):
  sft           (a) plain LoRA SFT: HF forward with labels (full (B, L, V) logits, HF's fp32 loss)
  seed-3pass    (b) the reference implementation's step: three separate forwards (teacher clean, teacher noisy,
                    student), full-vocabulary fp32 logits over the whole sequence, purify and KL on full (B, L, V)
                    tensors
  seed          (c) what `seedvlm train` runs: `seedvlm.train.step.seed_batch` (the function SeedTrainer.compute_loss
                    calls) with the settings of configs/seed_llava15_7b.yaml and TrainConfig's defaults: one 2B
                    teacher forward, the student on the teacher's clean image features (reuse_image_features: the
                    vision tower runs twice per sample, not three times), logits only at the answer rows, fp32 only
                    for those rows, chunked KL, SDPA
  seed-gc       (c) with gradient checkpointing (non-reentrant)              [--gradient-checkpointing]
  seed-compile  (c) with torch.compile as `seedvlm train --compile-layers true` does it (compile_layers with
                    compile_options(cfg): each LM decoder layer, dynamic=True)
                    [--compile]
  seed-cached-compile, sft-seedvlm-compile: the same compile on those cases  [--compile]
  seed-cached   (c) with a teacher cache (`seedvlm teach`, top-64): no teacher forward; the cached rows are built
                    once in memory from this batch (reading them from disk is not timed)
  sft-seedvlm   seedvlm's SFT control arm (`seedvlm.train.step.sft_step`: answer rows only)
The levers one at a time against (c) / seed-compile, in the same process (only through --cases):
  seed-noreuse          (c) without image-feature reuse (reuse_image_features false: pixels into the student's
                        forward too, the vision tower runs three times per sample; the step before this lever)
  seed-compile-noreuse  seed-compile without image-feature reuse (the student's vision forward then also builds
                        a graph: compile's enable_input_require_grads hooks the tower's patch embeddings too)
  seed-compile-vision   seed-compile with the vision encoder layers compiled too (torch_compile_vision true)
  seed-compile-static   seed-compile with dynamic=False (torch_compile_dynamic false: a graph per shape)
  seed-compile-auto     seed-compile with dynamic=None (torch_compile_dynamic auto: torch's automatic dynamic)
The other model families (--preset qwen2.5-vl-7b, llava-v1.6-vicuna-7b, smolvlm-256m, smolvlm-500m and their tiny-*
presets; benchmarks/family_bench.py builds them) take the cases sft, sft-seedvlm, seed and seed-cached, run the way
`seedvlm train` runs these families (train/family_run.py): sft = the HF forward with labels on the family's inputs;
seed = seed_batch with FamilyTeacher (one forward of [clean; noisy], adapter disabled, answer rows only) and the
family's student rows (the student runs its own vision tower: no feature reuse for these families); seed-cached = the
student's step against top-k rows computed once from the same teacher; sft-seedvlm = sft_step with the family's
student rows. Their samples are one image of --image-size (448) px square plus two question/answer turns rendered
with the family's chat template (labels from the family's token accounting); the JSON records the image tokens per
sample. --dry-run builds the model on the meta device and prints the plan and the parameter counts, running nothing.
Samples (LLaVA-1.5 presets): <bos> + the image tokens + text up to --text-tokens (80) of which the last
--answer-tokens (60) are the answer (labels -100 on the prompt); random token ids and pixel values; no padding.
Per (case, micro-batch): --warmup untimed steps case by case, then --steps timed ones round-robin over the cases
(synchronized), median reported as samples/s; peak memory is torch.cuda.max_memory_allocated, reset before every
step (max over the case's steps; the one AdamW state over the LoRA weights is shared by all cases). --time-budget
(330 s) caps the run of each preset: past it no new round of timed steps starts (each remaining case still gets its
warm-up and one timed step). Ratios are throughputs against (a) and (b) measured in the same process at the same
micro-batch; step_time_over_sft holds each case's median step time over sft's.

    # CPU, tiny preset (about a minute on 2 cores):
    python benchmarks/train_step.py --preset tiny --device cpu --threads 1 --out runs/bench/train_step_cpu.json
    # One H100/H200, the LLaVA-1.5-7B architecture in bf16, micro-batches 1 and 8 (about 3 minutes):
    python benchmarks/train_step.py --preset llava-1.5-7b --device cuda --dtype bfloat16 \\
        --out runs/bench/train_step_h100.json
    # the optional levers, one process each:
    python benchmarks/train_step.py --preset llava-1.5-7b --device cuda --dtype bfloat16 --cases seed \\
        --gradient-checkpointing --compile --out runs/bench/train_step_h100_levers.json
    # image-feature reuse, eager and compiled (each compile variant compiles anew: about a minute on an H100):
    python benchmarks/train_step.py --preset llava-1.5-7b --device cuda --dtype bfloat16 \\
        --cases seed,seed-noreuse,seed-compile,seed-compile-noreuse --time-budget 420 \\
        --out runs/bench/train_step_h100_reuse.json
    # the compile options: vision layers compiled or not, dynamic True / False / None:
    python benchmarks/train_step.py --preset llava-1.5-7b --device cuda --dtype bfloat16 \\
        --cases seed,seed-compile,seed-compile-vision,seed-compile-static,seed-compile-auto --time-budget 420 \\
        --out runs/bench/train_step_h100_compile_options.json

    # another family on one GPU (scripts/gpu_family_speed.sh runs all three), and a plan only (meta device):
    python benchmarks/train_step.py --preset qwen2.5-vl-7b --device cuda --micro-batches 1,8 --steps 5 \\
        --out runs/bench/train_step_qwen.json
    python benchmarks/train_step.py --preset llava-v1.6-vicuna-7b --dry-run

docs/design.md section 7 says what a step costs and why; docs/log.md holds the measurements and the reference
figures they were compared with.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import logging
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from common import DTYPES, device_name, emit, provenance, random_llava, setup_device, sync
from family_bench import FAMILY_PRESETS, batch_shape, build_family_model, family_setup, published_params_m
from seedvlm import seed as S
from seedvlm.config import load_config
from seedvlm.models import num_image_tokens, preset_config
from seedvlm.train.config import TrainConfig
from seedvlm.train.family_run import FamilyTeacher, family_student_rows, model_inputs
from seedvlm.train.lora import apply_lora
from seedvlm.models.llava import decoder_layers, llava_of, vision_layers
from seedvlm.train.step import compile_layers, compile_options, seed_batch, sft_step, student_rows
from seedvlm.train.teacher import LiveTeacher, teacher_logits
from seedvlm.train.teacher_cache import cached_rows, select_rows

ROOT = Path(__file__).resolve().parents[1]

CASES = {
    "sft": "(a) plain LoRA SFT (HF forward with labels)",
    "seed-3pass": "(b) SEED as the reference implementation does it (3 passes, full-vocab fp32)",
    "seed": "(c) SEED as seedvlm train runs it",
    "seed-gc": "(c) + gradient checkpointing",
    "seed-compile": "(c) + torch.compile (decoder layers)",
    "seed-cached": "(c) with a teacher cache (top-64)",
    "sft-seedvlm": "seedvlm's SFT control arm (answer rows only)",
    "seed-cached-compile": "(c) with a teacher cache + torch.compile",
    "sft-seedvlm-compile": "seedvlm's SFT control arm + torch.compile",
    "seed-noreuse": "(c) without image-feature reuse",
    "seed-compile-noreuse": "(c) + torch.compile, without image-feature reuse",
    "seed-compile-vision": "(c) + torch.compile (LM and vision encoder layers)",
    "seed-compile-static": "(c) + torch.compile, dynamic=False",
    "seed-compile-auto": "(c) + torch.compile, dynamic=None (automatic)",
}
# Each case's levers: "compile" = overrides of compile_options(cfg) (what `seedvlm train --compile-layers true` does),
# "reuse" = LiveTeacher's reuse_features (absent: the config's reuse_image_features, as `seedvlm train`).
LEVERS = {
    "seed-gc": {"gc": True},
    "seed-compile": {"compile": {}},
    "seed-cached-compile": {"compile": {}},
    "sft-seedvlm-compile": {"compile": {}},
    "seed-noreuse": {"reuse": False},
    "seed-compile-noreuse": {"compile": {}, "reuse": False},
    "seed-compile-vision": {"compile": {"vision": True}},
    "seed-compile-static": {"compile": {"dynamic": False}},
    "seed-compile-auto": {"compile": {"dynamic": None}},
}
COMPILED = tuple(c for c in CASES if "compile" in LEVERS.get(c, {}))
DEFAULT_CASES = ("sft", "seed-3pass", "seed", "seed-cached")
FAMILY_CASES = ("sft", "sft-seedvlm", "seed", "seed-cached")  # the cases the other families take
DEFAULT_FAMILY_CASES = ("sft", "seed", "seed-cached")
LLAVA15_PRESETS = ("tiny", "small", "llava-1.5-7b")
TINY_VOCAB, TINY_IMAGE_TOKEN = 1000, 4  # the world presets' benchmark vocabulary (as benchmarks/decode_speed.py)
RECIPE = ROOT / "configs" / "seed_llava15_7b.yaml"


def build_model(preset: str, device: torch.device, dtype: torch.dtype, attn: str):
    """A randomly initialized LlavaForConditionalGeneration built directly on `device` in `dtype`."""
    if preset != "llava-1.5-7b":
        config = preset_config(preset, vocab_size=TINY_VOCAB, image_token_index=TINY_IMAGE_TOKEN, pad_token_id=0,
                               bos_token_id=1, eos_token_id=2)
    else:
        config = preset_config(preset)
    config._attn_implementation = attn
    config.use_cache = False
    model = random_llava(config, device, dtype)
    return model, config


def make_batch(config, batch_size: int, text_tokens: int, answer_tokens: int, device, seed: int = 0) -> dict:
    """<bos>, the image tokens, random prompt text, then `answer_tokens` random answer tokens (labels there only)."""
    n_img = num_image_tokens(config)
    if answer_tokens < 1 or text_tokens < answer_tokens + 1:
        raise SystemExit("need --text-tokens >= --answer-tokens + 1 >= 2")
    g = torch.Generator().manual_seed(seed)
    t = config.text_config
    high = config.image_token_index if config.image_token_index > 5 else t.vocab_size  # never the image token
    text = torch.randint(5, high, (batch_size, text_tokens - 1), generator=g)
    ids = torch.cat([torch.full((batch_size, 1), t.bos_token_id), torch.full((batch_size, n_img),
                     config.image_token_index), text], dim=1)
    labels = torch.full_like(ids, -100)
    labels[:, -answer_tokens:] = ids[:, -answer_tokens:]
    v = config.vision_config
    pixels = torch.randn(batch_size, 3, v.image_size, v.image_size, generator=g)
    return {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device),
            "labels": labels.to(device), "pixel_values": pixels.to(device),
            "sample_index": torch.arange(batch_size, device=device)}


# --------------------------------------------------------------------------------------------------------------
# The steps: each returns the loss of one micro-batch (backward and the optimizer step are done by the caller)
# --------------------------------------------------------------------------------------------------------------


def step_sft(model, batch, ctx):
    """(a) plain LoRA SFT: the HF forward with labels (HF shifts, upcasts the full logits to fp32, CE)."""
    if "family" in ctx:
        return model(**model_inputs(ctx["family"].family, batch, ctx["dtype"]), labels=batch["labels"]).loss
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                 pixel_values=batch["pixel_values"].to(ctx["dtype"]), labels=batch["labels"]).loss


def step_seed_3pass(model, batch, ctx):
    """(b) the reference implementation's SEED step: teacher clean, teacher noisy and student as three forwards,
    full (B, L, V) fp32 logits, purification and reverse KL computed on full-vocabulary fp32 tensors, noise from the
    global RNG."""
    cfg, dtype = ctx["cfg"], ctx["dtype"]
    ids, attn, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    pix = batch["pixel_values"]
    noisy = S.add_noise(pix.float(), alpha=cfg.alpha)
    with torch.no_grad(), model.disable_adapter():
        clean_t = model(input_ids=ids, attention_mask=attn, pixel_values=pix.to(dtype)).logits.float()
        noisy_t = model(input_ids=ids, attention_mask=attn, pixel_values=noisy.to(dtype)).logits.float()
    student = model(input_ids=ids, attention_mask=attn, pixel_values=pix.to(dtype)).logits.float()
    s, tc, tn, lab = student[:, :-1], clean_t[:, :-1], noisy_t[:, :-1], labels[:, 1:]
    m = lab != -100
    conf = S.confidence(tc, m)
    beta = ctx["schedule"](conf)
    ctx["schedule"].update(conf)
    b = beta[:, None, None]
    purified = (1 + b) * tc - b * tn
    T, w = cfg.temperature, cfg.distill_weight
    kl = F.kl_div(F.log_softmax(purified[m] / T, dim=-1), F.softmax(s[m] / T, dim=-1), reduction="batchmean")
    ce = F.cross_entropy(s[m], lab[m])
    return w * T * T * kl + (1 - w) * ce


def step_seed(model, batch, ctx):
    """(c) seedvlm train's SEED step: seedvlm.train.step.seed_batch (one 2B teacher forward, answer rows only)."""
    ctx["step"] += 1
    cfg = ctx["cfg"]
    teacher = ctx.get("cache") or live_teacher(model, ctx)
    out = seed_batch(model, batch, cfg, teacher=teacher, step=ctx["step"], beta_schedule=ctx["schedule"],
                     student_fn=ctx.get("student_fn", student_rows))
    ctx["reused_features"] = out.reused_features
    return out.loss


def live_teacher(model, ctx):
    """The teacher `seedvlm train` uses: LiveTeacher for LLaVA-1.5 (with the case's feature-reuse lever), the
    family's FamilyTeacher for the other families."""
    cfg = ctx["cfg"]
    if "family" in ctx:
        setup = ctx["family"]
        return FamilyTeacher(model, cfg, setup.family, image_token_id=setup.image_token_id,
                             merge_size=setup.merge_size)
    return LiveTeacher(model, cfg, reuse_features=LEVERS.get(ctx["case"], {}).get("reuse", cfg.reuse_image_features))


def step_sft_seedvlm(model, batch, ctx):
    return sft_step(model, batch, student_fn=ctx.get("student_fn", student_rows)).loss


class MemoryCache:
    """A teacher cache of one fixed batch held in memory, with TeacherCache's `answer_rows` interface: built from
    one teacher forward with `select_rows` (top-k) and rounded through the cache's storage dtypes. `teacher`: a
    family's teacher to take the rows from (default: LLaVA-1.5's `teacher_logits`)."""

    def __init__(self, model, batch, cfg, top_k: int = 64, teacher=None):
        mask, _ = S.answer_positions(batch["labels"])
        if teacher is None:
            clean, noisy = teacher_logits(model, batch, mask, cfg, step=0)
        else:
            live = teacher.answer_rows(batch, mask, 0)
            clean, noisy = live.clean, live.noisy
        with torch.no_grad():
            rows = select_rows(clean, noisy, top_k)
            rows["ids"] = rows["ids"].to(torch.int16 if clean.shape[-1] <= 32767 else torch.int32).long()
            rows["clean"] = rows["clean"].half().float()
            rows["noisy"] = rows["noisy"].half().float()
            rows["conf"] = S.confidence(clean, mask)
        self._rows, self.vocab, self.tail = rows, clean.shape[-1], cfg.teacher_cache_tail

    def answer_rows(self, batch, mask, step):
        return cached_rows({k: v.to(mask.device) for k, v in self._rows.items()}, self.vocab, self.tail)


STEPS = {"sft": step_sft, "seed-3pass": step_seed_3pass, "sft-seedvlm": step_sft_seedvlm,
         "sft-seedvlm-compile": step_sft_seedvlm}
STEPS.update({c: step_seed for c in CASES if c not in STEPS})


# --------------------------------------------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------------------------------------------


def case_compile_kwargs(case: str, cfg, backend: str = "inductor") -> dict | None:
    """compile_layers' arguments for a compiled case (None for the others): `seedvlm train`'s (compile_options of the
    config) with the case's overrides, and the benchmark's backend."""
    over = LEVERS.get(case, {}).get("compile")
    return None if over is None else {**compile_options(cfg), **over, "backend": backend}


def set_levers(model, case: str, on: bool, state: dict) -> None:
    """Gradient checkpointing for seed-gc; compile for the compiled cases (the LM layers, and the vision layers when
    the case's compile_kwargs say so); all switched off again afterwards (feature reuse is an argument of the step,
    not a state)."""
    if case not in LEVERS:
        return
    base = llava_of(model)
    if LEVERS.get(case, {}).get("gc"):
        if on:
            base.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            base.enable_input_require_grads()
        else:
            base.activation_checkpointing_disable()
            base.disable_input_require_grads()
    if case in COMPILED:
        if on:
            compile_layers(model, **state["compile_kwargs"])
        else:
            for layer in decoder_layers(model) + vision_layers(model):
                layer._compiled_call_impl = None
            base.disable_input_require_grads()


class LimitHits(logging.Handler):
    """Counts dynamo's "hit config.recompile_limit" warnings: past the limit a frame runs eagerly, so a compiled case
    would silently time eager code."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.n = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "hit config." in str(record.msg):
            self.n += 1


LIMIT_HITS = LimitHits()


def one_step(case: str, model, batch: dict, ctx: dict, opt, device: torch.device) -> tuple[float, float | None]:
    """One optimizer step of one case: (seconds, peak GiB allocated during it or None on the CPU)."""
    autocast = (torch.autocast("cuda", dtype=ctx["dtype"]) if device.type == "cuda" and ctx["dtype"] != torch.float32
                else torch.autocast("cpu", enabled=False))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    set_levers(model, case, True, ctx)
    try:
        model.train()
        sync(device)
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with autocast:
            loss = STEPS[case](model, batch, ctx)
        loss.backward()
        opt.step()
        sync(device)
        dt = time.perf_counter() - t0
    finally:
        opt.zero_grad(set_to_none=True)
        set_levers(model, case, False, ctx)
    if not torch.isfinite(loss.detach()):
        raise SystemExit(f"{case}: non-finite loss")
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return dt, peak


def measure(cases: list[str], model, batch: dict, ctxs: dict, warmup: int, steps: int, device,
            deadline: float = float("inf")) -> list[dict]:
    """Warm-up steps case by case, then the timed steps round-robin over the cases (a change of machine load or
    clocks hits every case alike); one AdamW over the LoRA weights serves every case. A case that runs out of GPU
    memory is reported as such and dropped. Past `deadline` (time.perf_counter()) no new round of timed steps
    starts (every case keeps its warm-up and at least one timed step); the rows then say `"truncated": true`."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5, fused=device.type == "cuda")
    times: dict[str, list[float]] = {c: [] for c in cases}
    first: dict[str, float] = {}
    peak: dict[str, float] = {}
    graphs: dict[str, int] = {c: 0 for c in cases}
    limit_hit: set[str] = set()
    oom: set[str] = set()
    from torch._dynamo.utils import counters

    def run(case: str, timed: bool) -> None:
        n_graphs, n_hits = counters["stats"]["unique_graphs"], LIMIT_HITS.n
        try:
            dt, pk = one_step(case, model, batch, ctxs[case], opt, device)
            graphs[case] += counters["stats"]["unique_graphs"] - n_graphs
            if LIMIT_HITS.n > n_hits:
                limit_hit.add(case)
        except torch.cuda.OutOfMemoryError:
            oom.add(case)
            opt.zero_grad(set_to_none=True)
            gc.collect()
            torch.cuda.empty_cache()
            return
        first.setdefault(case, dt)
        if timed:
            times[case].append(dt)
        if pk is not None:
            peak[case] = max(peak.get(case, 0.0), pk)

    for case in cases:
        for _ in range(warmup):
            if case not in oom:
                run(case, timed=False)
    truncated = False
    for i in range(steps):
        if i > 0 and time.perf_counter() > deadline:
            truncated = True
            break
        for case in cases:
            if case not in oom:
                run(case, timed=True)
    bs = int(batch["input_ids"].shape[0])
    rows = []
    for case in cases:
        if case in oom or not times[case]:
            rows.append({"case": case, "what": CASES[case], "batch_size": bs, "oom": True})
            continue
        med = statistics.median(times[case])
        row = {"case": case, "what": CASES[case], "batch_size": bs, "median_s": med, "times_s": times[case],
               "first_step_s": first[case], "samples_per_s": bs / med}
        if "reused_features" in ctxs[case]:
            row["reused_features"] = ctxs[case]["reused_features"]
        if ctxs[case].get("compile_kwargs"):
            row["compile"] = {k: ctxs[case]["compile_kwargs"][k] for k in ("vision", "dynamic", "backend")}
            row["graphs_compiled"] = graphs[case]  # dynamo graphs compiled during this case's steps
            row["recompile_limit_hit"] = case in limit_hit  # then part of it ran eagerly
        if truncated:
            row["truncated"] = True
        if case in peak:
            row["peak_memory_gb"] = round(peak[case], 2)
        rows.append(row)
    return rows


def parse_cases(args, family: bool, ap) -> list[str]:
    """The cases to run, in their fixed order (compiled ones last); a family preset takes FAMILY_CASES only."""
    default = DEFAULT_FAMILY_CASES if family else DEFAULT_CASES
    cases = [c for c in (args.cases or ",".join(default)).split(",") if c]
    for flag, case in ((args.gradient_checkpointing, "seed-gc"), (args.compile, "seed-compile")):
        if flag and case not in cases:
            cases.append(case)
    if args.compile:
        cases += [f"{c}-compile" for c in ("seed-cached", "sft-seedvlm") if c in cases and f"{c}-compile" not in cases]
    unknown = set(cases) - set(CASES)
    if unknown:
        raise SystemExit(f"unknown case(s) {sorted(unknown)}; choose from {list(CASES)}")
    if family and set(cases) - set(FAMILY_CASES):
        ap.error(f"--preset {args.preset}: the case(s) {sorted(set(cases) - set(FAMILY_CASES))} are LLaVA-1.5 "
                 f"only; the other families take {', '.join(FAMILY_CASES)}")
    cases = sorted(cases, key=list(CASES).index)  # fixed order; compiled cases last
    return [c for c in cases if c not in COMPILED] + [c for c in cases if c in COMPILED]


class Subject:
    """The model under test and how its batches are made: a LLaVA-1.5 preset (make_batch above) or another family's
    preset (benchmarks/family_bench.py: its processor, one image of --image-size px, two question/answer turns)."""

    def __init__(self, args, device: torch.device, dtype: torch.dtype, cfg) -> None:
        self.args, self.device, self.family = args, device, None
        if args.preset in LLAVA15_PRESETS:
            self.model, self.config = build_model(args.preset, device, dtype, args.attn)
            targets = {}
        else:
            self.family = family_setup(args.preset)
            self.model = build_family_model(self.family, device, dtype, train=True)
            targets = {"language_model": self.family.family.language_model}
        self.model = apply_lora(self.model, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_target_modules,
                                **targets)

    def batch(self, bs: int, device) -> dict:
        a = self.args
        if self.family is None:
            return make_batch(self.config, bs, a.text_tokens, a.answer_tokens, device)
        from family_bench import make_batch as family_batch

        batch = family_batch(self.family.family, self.family.processor, bs, [(a.image_size, a.image_size)])
        batch["sample_index"] = torch.arange(bs)
        return {k: v.to(device) for k, v in batch.items()}

    def shape(self) -> dict:
        """tokens_per_sample, image_tokens and answer_tokens of one sample."""
        if self.family is None:
            n_img = num_image_tokens(self.config)
            return {"tokens_per_sample": 1 + n_img + self.args.text_tokens, "image_tokens": n_img,
                    "answer_tokens": self.args.answer_tokens}
        return batch_shape(self.batch(1, "cpu"), self.family.image_token_id)

    def context(self) -> dict:
        """What a family's steps need in their ctx (nothing for LLaVA-1.5)."""
        if self.family is None:
            return {}
        return {"family": self.family, "student_fn": family_student_rows(self.family.family)}

    def describe(self) -> dict:
        if self.family is None:
            return {}
        return {"family": self.family.family.name, "model_class": type(llava_of(self.model)).__name__,
                "image_size": self.args.image_size, "published_params_m": published_params_m(self.args.preset)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="tiny",
                    help=f"one or several (comma-separated, one JSON with a run each) of {', '.join(LLAVA15_PRESETS)}, "
                         f"{', '.join(FAMILY_PRESETS)}")
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    ap.add_argument("--dtype", default=None, choices=tuple(DTYPES), help="default: float32 on cpu, bfloat16 on cuda")
    ap.add_argument("--cases", default=None,
                    help=f"comma-separated subset of {','.join(CASES)} (default {','.join(DEFAULT_CASES)}; other "
                         f"families: {','.join(DEFAULT_FAMILY_CASES)}, of {','.join(FAMILY_CASES)})")
    ap.add_argument("--batches", "--micro-batches", dest="batches", default="1,8",
                    help="micro-batch sizes, comma-separated (default 1,8)")
    ap.add_argument("--steps", type=int, default=8, help="timed steps per (case, batch); median reported")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    ap.add_argument("--text-tokens", type=int, default=80,
                    help="LLaVA-1.5: text tokens after the image, answer included")
    ap.add_argument("--answer-tokens", type=int, default=60,
                    help="LLaVA-1.5: answer tokens (the last ones; labels there)")
    ap.add_argument("--image-size", type=int, default=448,
                    help="other families: the side of the square image of every sample, in pixels (default 448)")
    ap.add_argument("--gradient-checkpointing", action="store_true", help="add the case seed-gc")
    ap.add_argument("--compile", action="store_true",
                    help="add the compiled cases (seed-compile, and the -compile twin of seed-cached / sft-seedvlm "
                         "when those are chosen)")
    ap.add_argument("--compile-backend", default="inductor", help="torch.compile backend of the compiled cases")
    ap.add_argument("--top-k", type=int, default=64, help="top-k of the seed-cached case")
    ap.add_argument("--attn", default="sdpa", help="LLaVA-1.5: attention implementation (default sdpa)")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (torch.set_num_threads)")
    ap.add_argument("--time-budget", type=float, default=330.0,
                    help="seconds for the whole run of one preset (default 330): past it no new round of timed "
                         "steps starts (fewer steps, marked truncated); 0 = none")
    ap.add_argument("--dry-run", action="store_true",
                    help="build the model on the meta device and print the plan, parameter counts and tokens per "
                         "sample; run nothing")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args(argv)

    presets = [p for p in args.preset.split(",") if p]
    bad = [p for p in presets if p not in LLAVA15_PRESETS + FAMILY_PRESETS]
    if bad or not presets:
        ap.error(f"--preset: unknown {bad[0]!r}" if bad else "--preset: none given")
    if args.image_size < 28:
        ap.error("--image-size must be at least 28 (pixels)")
    # a dry run touches no device (the model is built on the meta device), so it runs anywhere
    device, dtype = setup_device("cpu" if args.dry_run else args.device,
                                 args.dtype or ("bfloat16" if args.device.startswith("cuda") else None), args.threads)
    batches = [int(b) for b in args.batches.split(",") if b]
    reports = []
    for preset in presets:
        one = argparse.Namespace(**{**vars(args), "preset": preset})
        cases = parse_cases(one, preset not in LLAVA15_PRESETS, ap)
        reports.append(run_preset(one, cases, batches, device, dtype, argv))
    if args.dry_run:
        return 0
    if len(reports) == 1:
        emit(reports[0], markdown_table(reports[0]), args.out)
    else:
        report = {"benchmark": "train_step", "date": reports[0]["date"], "device": reports[0]["device"],
                  "presets": presets, **provenance(__file__, argv, ("transformers", "peft")), "runs": reports}
        emit(report, "\n\n".join(markdown_table(r) for r in reports), args.out)
    return 0


def run_preset(args, cases: list[str], batches: list[int], device, dtype, argv) -> dict | None:
    """One preset's measurements as a report (dry run: the plan printed, None)."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    if any(c in COMPILED for c in cases):
        # The compiled layers share code objects (transformers' forward_with_checkpointing), so every compile variant
        # adds its cache entries to the same frames: 4-7 per variant (teacher, student, a batch-1 specialization, the
        # vision layers), past dynamo's default limit of 8 with two variants. Raised so each case keeps its own graphs.
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
        logging.getLogger("torch._dynamo").addHandler(LIMIT_HITS)
    t0 = time.perf_counter()
    deadline = t0 + args.time_budget if args.time_budget > 0 else float("inf")
    cfg = load_config(TrainConfig, RECIPE)  # the 7B recipe's SEED settings (w, T, b schedule, kl_chunk_size, LoRA)
    build_device = torch.device("meta") if args.dry_run else device
    subject = Subject(args, build_device, dtype, cfg)
    model = subject.model
    sync(build_device)
    build_s = time.perf_counter() - t0
    n_params = sum(p.numel() for p in model.parameters())
    n_lora = sum(p.numel() for p in model.parameters() if p.requires_grad)
    shape = subject.shape()
    attention = getattr(llava_of(model).config, "_attn_implementation", None)
    print(f"# {args.preset}: {n_params / 1e6:.1f}M params ({n_lora / 1e6:.1f}M LoRA), {dtype}, "
          f"{'meta (dry run)' if args.dry_run else device_name(device)}, attention {attention}; built in "
          f"{build_s:.1f}s; {shape['tokens_per_sample']} tokens per sample ({shape['image_tokens']} image, "
          f"{shape['answer_tokens']} answer)", file=sys.stderr)
    if args.dry_run:
        published = subject.describe().get("published_params_m")
        print(f"{args.preset}: plan: cases {','.join(cases)} x micro-batches {','.join(map(str, batches))}, "
              f"{args.warmup} warm-up + {args.steps} timed steps each; parameters {n_params - n_lora:,} + LoRA "
              f"{n_lora:,}"
              + (f", published {published:,.0f}M" if published else "")
              + f"; image tokens per sample {shape['image_tokens']}; tokens per sample {shape['tokens_per_sample']}")
        return None

    results = []
    for bs in batches:
        batch = subject.batch(bs, device)
        ctxs = {}
        for case in cases:
            ctxs[case] = {"cfg": cfg, "dtype": dtype, "step": 0, "case": case, **subject.context(),
                          "compile_kwargs": case_compile_kwargs(case, cfg, args.compile_backend),
                          "schedule": S.BetaSchedule(kind=cfg.beta_schedule, values=cfg.beta_values,
                                                     quantiles=cfg.beta_quantiles, history_size=cfg.beta_history_size,
                                                     min_history=cfg.beta_min_history)}
        cached = [c for c in cases if c in ("seed-cached", "seed-cached-compile")]
        try:
            for case in cached:
                teacher = live_teacher(model, ctxs[case]) if subject.family else None
                ctxs[case]["cache"] = MemoryCache(model, batch, cfg, args.top_k, teacher=teacher)
            run_cases = cases
        except torch.cuda.OutOfMemoryError:  # the cache's one teacher forward: those cases are out of memory
            run_cases = [c for c in cases if c not in cached]
            gc.collect()
            torch.cuda.empty_cache()
        rows = measure(run_cases, model, batch, ctxs, args.warmup, args.steps, device, deadline)
        rows += [{"case": c, "what": CASES[c], "batch_size": bs, "oom": True} for c in cases if c not in run_cases]
        rows.sort(key=lambda r: cases.index(r["case"]))
        ctxs.clear()
        del batch
        gc.collect()
        for row in rows:
            results.append(row)
            speed = f"{row['samples_per_s']:8.2f} samples/s" if "samples_per_s" in row else "out of memory"
            mem = f"  peak {row['peak_memory_gb']:.1f} GB" if "peak_memory_gb" in row else ""
            note = f"  ({len(row['times_s'])} timed steps: time budget)" if row.get("truncated") else ""
            note += "  (recompile limit hit: partly eager)" if row.get("recompile_limit_hit") else ""
            print(f"#   batch {bs:>2} {row['case']:<20} {speed}{mem}{note}", file=sys.stderr, flush=True)
        for ref, key in (("sft", "x_sft"), ("seed-3pass", "x_seed_3pass")):
            base = next((r for r in results if r["batch_size"] == bs and r["case"] == ref and "samples_per_s" in r),
                        None)
            for r in results:
                if base and r["batch_size"] == bs and "samples_per_s" in r:
                    r[key] = r["samples_per_s"] / base["samples_per_s"]

    report = {
        "benchmark": "train_step",
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "device": device_name(device),
        "device_type": device.type,
        "preset": args.preset,
        **subject.describe(),
        "params_m": round(n_params / 1e6, 1),
        "lora_params_m": round(n_lora / 1e6, 2),
        "dtype": str(dtype).replace("torch.", ""),
        "attention": attention,
        **shape,
        "warmup": args.warmup,
        "steps": args.steps,
        "seed_settings": {k: getattr(cfg, k) for k in ("distill_weight", "temperature", "direction",
                                                      "beta_schedule", "kl_chunk_size", "lora_r", "lora_alpha",
                                                      "lora_dropout", "reuse_image_features",
                                                      "torch_compile_vision", "torch_compile_dynamic")},
        "top_k": args.top_k,
        "dynamo_recompile_limit": torch._dynamo.config.recompile_limit,
        **provenance(__file__, argv, ("transformers", "peft")),
        "results": results,
        "step_time_over_sft": step_time_ratios(results),
    }
    return report


def step_time_ratios(results: list[dict]) -> dict:
    """Per micro-batch, each case's median step time over sft's (SEED / SFT, cached / SFT), where both ran."""
    out = {}
    for r in results:
        sft = next((x for x in results if x["case"] == "sft" and x["batch_size"] == r["batch_size"]
                    and "median_s" in x), None)
        if sft and "median_s" in r and r["case"] != "sft":
            out.setdefault(str(r["batch_size"]), {})[r["case"]] = r["median_s"] / sft["median_s"]
    return out


def markdown_table(report: dict) -> str:
    mem = report["device_type"] == "cuda"
    image = f" ({report['family']}, {report['image_size']} px images)" if "family" in report else ""
    lines = [f"{report['preset']}{image} on {report['device']}, {report['dtype']}, {report['tokens_per_sample']} "
             f"tokens per sample ({report['image_tokens']} image, {report['answer_tokens']} answer), LoRA r="
             f"{report['seed_settings']['lora_r']}, median of {report['steps']} steps after {report['warmup']}",
             "", "| step | micro-batch | samples/s | " + ("peak GB | " if mem else "") + "x (a) sft | x (b) seed-3pass |",
             "|---|---|---|" + ("---|" if mem else "") + "---|---|"]
    for r in report["results"]:
        if r.get("oom"):
            lines.append(f"| {r['what']} | {r['batch_size']} | out of memory |" + (" - |" if mem else "") + " - | - |")
            continue
        ratios = " | ".join(f"{r[k]:.2f}" if k in r else "-" for k in ("x_sft", "x_seed_3pass"))
        peak = f" {r['peak_memory_gb']:.1f} |" if mem else ""
        lines.append(f"| {r['what']} | {r['batch_size']} | {r['samples_per_s']:.2f} |{peak} {ratios} |")
    for bs, ratios in report.get("step_time_over_sft", {}).items():
        lines.append(f"\nmicro-batch {bs}, step time over sft's: "
                     + ", ".join(f"{case} {x:.2f}" for case, x in ratios.items()))
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
