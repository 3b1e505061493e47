"""Decoding speed: greedy (HF `generate`) vs contrastive decoding as seedvlm does it (clean + noisy as ONE forward of
a 2B batch, one 2B-row KV cache) vs VCD's sequential way (two forwards of B rows per step, two caches).

Random weights (the numbers do not depend on them); every method is forced to produce exactly --new-tokens tokens
(eos suppressed), the prompt is <bos> + the image tokens + text up to --prompt-tokens. Each (method, batch size) gets
--warmup untimed calls, then --repeats timed ones (synchronized before and after on CUDA); the median is reported as
milliseconds per decoding step (whole call, prefill included, / new tokens) and as new tokens per second over the
batch. Ratios are against greedy measured in the same process.

    # CPU, tiny preset (a minute on 2 cores):
    python benchmarks/decode_speed.py --preset tiny --device cpu --out runs/bench/decode_cpu.json
    # One H100/H200, the LLaVA-1.5-7B architecture in bf16 (656-token prompt with 576 image tokens, 128 new tokens;
    # about 2-3 minutes for both batch sizes):
    python benchmarks/decode_speed.py --preset llava-1.5-7b --device cuda --dtype bfloat16 \\
        --out runs/bench/decode_h100.json

The other families (--preset qwen2.5-vl-7b, llava-v1.6-vicuna-7b, smolvlm-256m/500m and their tiny-* presets;
benchmarks/family_bench.py builds them): the prompt is one image of --image-size (448) px square and a question in
the family's chat template with its generation prompt; greedy = HF generate with the family's stop tokens
(eos_token_id = the end-of-turn token and the extra ones; min_new_tokens keeps them from ending the call early);
contrastive = `seedvlm.decode.family.family_contrastive_generate` (clean and noisy views as one 2B forward per step;
a call that fails, e.g. out of memory, is recorded as "failed: <the error>"). vcd-sequential is LLaVA-1.5 only.

    python benchmarks/decode_speed.py --preset qwen2.5-vl-7b --device cuda --new-tokens 64 \\
        --out runs/bench/decode_qwen.json
    python benchmarks/decode_speed.py --preset smolvlm-256m --dry-run   # the plan only, built on the meta device

docs/log.md holds the measurements and the reference figures they were compared with. Goal here: contrastive
<= 1.2x greedy at batch 16.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import statistics
import sys
import time

import torch

from common import DTYPES, device_name, emit, provenance, random_llava, setup_device, sync
from family_bench import FAMILY_PRESETS, batch_shape, build_family_model, family_setup, parameter_counts, prompt_batch
from seedvlm.decode import contrastive_generate
from seedvlm.models import num_image_tokens, preset_config

METHODS = ("greedy", "contrastive", "vcd-sequential")
FAMILY_METHODS = ("greedy", "contrastive")
LLAVA15_PRESETS = ("tiny", "small", "llava-1.5-7b")
# token ids of the tiny/small presets' benchmark vocabulary (the word tokenizer's layout: pad, bos, eos, unk, <image>)
TINY_VOCAB, TINY_IMAGE_TOKEN = 1000, 4


def build_model(preset: str, device: torch.device, dtype: torch.dtype, attn: str):
    """A randomly initialized LlavaForConditionalGeneration built directly on `device` in `dtype`."""
    if preset != "llava-1.5-7b":  # the world's presets get a word tokenizer's vocabulary
        config = preset_config(preset, vocab_size=TINY_VOCAB, image_token_index=TINY_IMAGE_TOKEN, pad_token_id=0,
                               bos_token_id=1, eos_token_id=2)
    else:
        config = preset_config(preset)
    config._attn_implementation = attn
    model = random_llava(config, device, dtype)
    return model.eval(), config


def make_batch(config, batch_size: int, prompt_tokens: int, device, dtype, seed: int = 0) -> dict:
    """<bos>, the image tokens, then random text tokens up to prompt_tokens; no padding; random pixels."""
    n_img = num_image_tokens(config)
    if prompt_tokens < n_img + 2:
        raise SystemExit(f"--prompt-tokens must be at least {n_img + 2} (the image takes {n_img})")
    g = torch.Generator().manual_seed(seed)
    t = config.text_config
    high = config.image_token_index if config.image_token_index > 5 else t.vocab_size  # never the image token
    text = torch.randint(5, high, (batch_size, prompt_tokens - 1 - n_img), generator=g)
    ids = torch.cat([torch.full((batch_size, 1), t.bos_token_id), torch.full((batch_size, n_img),
                     config.image_token_index), text], dim=1)
    v = config.vision_config
    pixels = torch.randn(batch_size, 3, v.image_size, v.image_size, generator=g)
    return {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device),
            "pixel_values": pixels.to(device=device, dtype=dtype)}


def run_method(method: str, model, batch: dict, new_tokens: int, eos: int, pad: int) -> torch.Tensor:
    if method == "greedy":
        seqs = model.generate(**batch, do_sample=False, num_beams=1, max_new_tokens=new_tokens,
                              min_new_tokens=new_tokens, eos_token_id=eos, pad_token_id=pad)
        return seqs[:, batch["input_ids"].shape[1]:]
    fused = method == "contrastive"
    return contrastive_generate(model, batch, max_new_tokens=new_tokens, eos_token_id=eos, pad_token_id=pad,
                                beta=1.0, plausibility=0.1, min_new_tokens=new_tokens, fused=fused)


def family_runners(setup, model, methods: list[str], new_tokens: int) -> dict:
    """{method: batch -> new tokens (B, T)} for a family model: greedy through HF
    generate with the family's stop tokens; contrastive through `seedvlm.decode.family.family_contrastive_generate`
    (b = 1, plausibility 0.1, Gaussian a = 0.3: the decoder's defaults), one 2B forward per step."""
    from seedvlm.decode.family import family_contrastive_generate

    stop, pad = setup.stop_token_ids(), setup.processor.tokenizer.pad_token_id

    def greedy(batch):
        seqs = model.generate(**batch, do_sample=False, num_beams=1, max_new_tokens=new_tokens,
                              min_new_tokens=new_tokens, eos_token_id=stop, pad_token_id=pad)
        return seqs[:, batch["input_ids"].shape[1]:]

    def contrastive(batch):
        return family_contrastive_generate(model, setup.family, batch, max_new_tokens=new_tokens,
                                           min_new_tokens=new_tokens, eos_token_id=stop, pad_token_id=pad,
                                           beta=1.0, plausibility=0.1)

    runners = {"greedy": greedy, "contrastive": contrastive}
    return {m: runners[m] for m in methods if m in runners}


def build_family(args, device, dtype):
    """(setup, model in eval mode, image tokens per prompt, prompt tokens) of a family preset; a dry run builds the
    model on the meta device."""
    setup = family_setup(args.preset)
    model = build_family_model(setup, torch.device("meta") if args.dry_run else device, dtype, train=False).eval()
    shape = batch_shape(prompt_batch(setup, 1, (args.image_size, args.image_size)), setup.image_token_id)
    return setup, model, shape["image_tokens"], shape["tokens_per_sample"]


def family_batch(setup, bs: int, image_size: int, device, dtype) -> dict:
    batch = {k: v.to(device) for k, v in prompt_batch(setup, bs, (image_size, image_size)).items()}
    for k in setup.family.pixel_keys:
        batch[k] = batch[k].to(dtype)
    return batch


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="tiny", choices=LLAVA15_PRESETS + FAMILY_PRESETS)
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    ap.add_argument("--dtype", default=None, choices=tuple(DTYPES), help="default: float32 on cpu, bfloat16 on cuda")
    ap.add_argument("--batch-sizes", default="1,16", help="comma-separated (default 1,16)")
    ap.add_argument("--new-tokens", type=int, default=None, help="forced new tokens (default 32 tiny/small, 128 7b)")
    ap.add_argument("--prompt-tokens", type=int, default=None,
                    help="prompt length incl. image tokens (default image tokens + 80: 656 for llava-1.5-7b)")
    ap.add_argument("--methods", default=None, help=f"comma-separated subset of {','.join(METHODS)} (default all; "
                                                      f"other families: {','.join(FAMILY_METHODS)})")
    ap.add_argument("--image-size", type=int, default=448,
                    help="other families: the side of the square image of every prompt, in pixels (default 448)")
    ap.add_argument("--dry-run", action="store_true",
                    help="build the model on the meta device, print the plan and the parameter count; run nothing")
    ap.add_argument("--warmup", type=int, default=1, help="untimed calls per (method, batch size)")
    ap.add_argument("--repeats", type=int, default=3, help="timed calls per (method, batch size); median reported")
    ap.add_argument("--attn", default="sdpa", help="attention implementation (default sdpa)")
    ap.add_argument("--time-budget", type=float, default=0.0,
                    help="seconds for the whole run (default 0 = none): past it no new round of timed calls starts "
                         "(every method keeps its warm-up and one timed call; rows marked truncated)")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (torch.set_num_threads)")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args(argv)

    family = args.preset in FAMILY_PRESETS
    # a dry run touches no device (the model is built on the meta device), so it runs anywhere
    device, dtype = setup_device("cpu" if args.dry_run else args.device,
                                 args.dtype or ("bfloat16" if args.device.startswith("cuda") else None), args.threads)
    allowed = FAMILY_METHODS if family else METHODS
    methods = [m for m in (args.methods or ",".join(allowed)).split(",") if m]
    unknown = set(methods) - set(allowed)
    if unknown:
        ap.error(f"--methods: {sorted(unknown)} not available for {args.preset}; choose from {','.join(allowed)}")
    batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b]
    new_tokens = args.new_tokens or (32 if args.preset in ("tiny", "small") or args.preset.startswith("tiny-")
                                     else 128)

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    t0 = time.perf_counter()
    deadline = t0 + args.time_budget if args.time_budget > 0 else float("inf")
    if family:
        setup, model, n_img, prompt_tokens = build_family(args, device, dtype)
    else:
        model, config = build_model(args.preset, torch.device("meta") if args.dry_run else device, dtype, args.attn)
        n_img = num_image_tokens(config)
        prompt_tokens = args.prompt_tokens or n_img + 80
        eos, pad = config.text_config.eos_token_id, config.text_config.pad_token_id
    sync(device)
    build_s = time.perf_counter() - t0
    n_params = sum(p.numel() for p in model.parameters())
    where = "meta (dry run)" if args.dry_run else device_name(device)
    print(f"# {args.preset}: {n_params / 1e6:.1f}M params, {dtype}, {where}, attention "
          f"{model.config._attn_implementation}; built in {build_s:.1f}s; prompt {prompt_tokens} tokens "
          f"({n_img} image), {new_tokens} new tokens", file=sys.stderr)
    if family:
        runners = family_runners(setup, model, methods, new_tokens)
    else:
        runners = {m: (lambda batch, m=m: run_method(m, model, batch, new_tokens, eos, pad)) for m in methods}
    if args.dry_run:
        print(f"{args.preset}: plan: {','.join(runners)} at batch sizes {','.join(map(str, batch_sizes))}, "
              f"{args.warmup} warm-up + {args.repeats} timed calls each, {new_tokens} new tokens; parameters "
              f"{parameter_counts(model)['params_m']}M; image tokens per prompt {n_img}; prompt tokens "
              f"{prompt_tokens}")
        return 0

    results = []
    for bs in batch_sizes:
        batch = (family_batch(setup, bs, args.image_size, device, dtype) if family
                 else make_batch(config, bs, prompt_tokens, device, dtype))
        times: dict[str, list[float]] = {m: [] for m in runners}
        peak: dict[str, float] = {}
        failed: dict[str, str] = {}
        # warm-up calls first, then the timed repeats round-robin over the methods, so that a change of machine load
        # (a shared CPU) or of clocks hits every method alike
        truncated = False
        for i in range(args.warmup + args.repeats):
            if i > args.warmup and time.perf_counter() > deadline:
                truncated = True
                break
            for method in runners:
                if method in failed:
                    continue
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                sync(device)
                start = time.perf_counter()
                try:
                    out = runners[method](batch)
                except torch.cuda.OutOfMemoryError:
                    failed[method] = "out of memory"
                    torch.cuda.empty_cache()
                    continue
                except Exception as e:  # noqa: BLE001 - a family contrastive decoding that fails is recorded, not fatal
                    if method == "greedy" or not family:
                        raise
                    failed[method] = f"failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                    continue
                sync(device)
                elapsed = time.perf_counter() - start
                if out.shape != (bs, new_tokens):
                    raise SystemExit(f"{method} at batch {bs} produced {tuple(out.shape)} tokens, "
                                     f"expected {(bs, new_tokens)}")
                if i >= args.warmup:
                    times[method].append(elapsed)
                if device.type == "cuda":
                    peak[method] = max(peak.get(method, 0.0), torch.cuda.max_memory_allocated(device) / 2**30)
        for method in methods:
            why = failed.get(method)
            if why:
                results.append({"method": method, "batch_size": bs, "available": False, "note": why})
                print(f"#   batch {bs:>3} {method:<15} {why}", file=sys.stderr, flush=True)
                continue
            med = statistics.median(times[method])
            row = {"method": method, "batch_size": bs, "median_s": med, "times_s": times[method],
                   "ms_per_step": 1000 * med / new_tokens, "tokens_per_s": bs * new_tokens / med}
            if method in peak:
                row["peak_memory_gb"] = round(peak[method], 2)
            if truncated:
                row["truncated"] = True
            results.append(row)
        greedy = next((r for r in results if r["batch_size"] == bs and r["method"] == "greedy"), None)
        for r in results:
            if r["batch_size"] != bs or "median_s" not in r:
                continue
            if greedy:
                r["ratio_vs_greedy"] = r["median_s"] / greedy["median_s"]
            if r["batch_size"] == bs:
                print(f"#   batch {bs:>3} {r['method']:<15} {r['ms_per_step']:8.2f} ms/step  "
                      f"{r['tokens_per_s']:9.1f} tok/s  x{r.get('ratio_vs_greedy', float('nan')):.2f}",
                      file=sys.stderr, flush=True)

    report = {
        "benchmark": "decode_speed",
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "device": device_name(device),
        "device_type": device.type,
        "preset": args.preset,
        "params_m": round(n_params / 1e6, 1),
        "dtype": str(dtype).replace("torch.", ""),
        "attention": model.config._attn_implementation,
        **({"family": setup.family.name, "image_size": args.image_size,
            "stop_token_ids": setup.stop_token_ids()} if family else {}),
        "prompt_tokens": prompt_tokens,
        "image_tokens": n_img,
        "new_tokens": new_tokens,
        "warmup": args.warmup,
        "repeats": args.repeats,
        **provenance(__file__, argv),
        "results": results,
    }
    emit(report, markdown_table(report), args.out)
    return 0


def markdown_table(report: dict) -> str:
    lines = [f"{report['preset']} on {report['device']}, {report['dtype']}, prompt {report['prompt_tokens']} tokens "
             f"({report['image_tokens']} image), {report['new_tokens']} new tokens, median of {report['repeats']}",
             "", "| batch | method | ms / step | new tokens / s | x greedy |", "|---|---|---|---|---|"]
    for r in report["results"]:
        if "median_s" not in r:
            lines.append(f"| {r['batch_size']} | {r['method']} | {r['note']} | - | - |")
            continue
        ratio = f"{r['ratio_vs_greedy']:.2f}" if "ratio_vs_greedy" in r else "-"
        lines.append(f"| {r['batch_size']} | {r['method']} | {r['ms_per_step']:.2f} | {r['tokens_per_s']:.1f} | "
                     f"{ratio} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
