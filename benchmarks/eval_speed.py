"""Evaluation speed: POPE questions per second with and without image-prefix reuse, and generated tokens per second
of description decoding (CHAIR's job) with the eager dynamic cache, the static cache, and the compiled static cache.

POPE runs the real evaluation path (`seedvlm.eval.runner.run_prompts`: images opened per chunk, batches of
--batch-size questions in file order, greedy, --pope-new-tokens new tokens, P(yes) read) over the POPE object
questions (3 splits x 6 per image) of the --images validation images of a freshly generated embedded world that
hold >= 3 objects. The descriptions are --describe images x "Please describe this image in detail." with
--new-tokens new tokens (eos suppressed so every method decodes the same count). Every method gets --warmup untimed
calls, then --repeats timed ones, round-robin over the methods (so a change of load on a shared machine hits all
alike); the median is reported, with the first call's time (it includes compiling; a fresh TORCHINDUCTOR_CACHE_DIR
makes it a cold compile), and ratios are against the plain / eager path of the same run. Every method's answers are
compared with the plain path's: the report says whether they are identical (and the largest P(yes) difference).
Peak memory is the CUDA allocator's peak per method (not measured on CPU, where the process's peak RSS only grows).

    # CPU, the shipped tiny base (minutes on 2 shared cores; one thread copes best with a busy machine):
    python benchmarks/eval_speed.py --model assets/base-tiny --device cpu --threads 1 \\
        --out runs/bench/eval_speed_cpu.json
    # one GPU, random weights of the LLaVA-1.5-7B architecture (576 image tokens; answers run to the token limit)
    python benchmarks/eval_speed.py --preset llava-1.5-7b --device cuda --images 30 \\
        --out runs/bench/eval_speed_h200.json
"""

from __future__ import annotations

import argparse
import datetime as _dt
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from common import DTYPES, device_name, emit, provenance, random_llava, setup_device, sync

POPE_METHODS = ("plain", "prefix")
DECODE_METHODS = ("eager", "static", "static-compiled")
DESCRIBE_PROMPT = "Please describe this image in detail."


def build_questions(root: Path, n_images: int, size: int, seed: int) -> tuple[list[dict], Path]:
    """A fresh world of n_images validation images and its POPE object questions (all three splits)."""
    from seedvlm.eval.pope import build_pope
    from seedvlm.world import WorldConfig, generate_world

    generate_world(WorldConfig(train=0, val=n_images, size=size, seed=seed), root / "world")
    splits, _ = build_pope(root / "world" / "instances_val.json", n_images=n_images, seed=seed)
    return [q for qs in splits.values() for q in qs], root / "world" / "images" / "val"


def preset_model(name: str, device, dtype):
    """Random weights of a preset with the world's word tokenizer (its small vocabulary: the LM head is the only
    part smaller than the real architecture's)."""
    from seedvlm.models import build_processor, build_word_tokenizer, preset_config
    from seedvlm.world import world_vocabulary

    tok = build_word_tokenizer(world_vocabulary(), model_max_length=4096)
    config = preset_config(name, vocab_size=len(tok), image_token_index=tok.image_token_id,
                           pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    return random_llava(config, device, dtype).eval(), build_processor(tok, config)


def timed(device, fn):
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    elapsed = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return out, elapsed, peak


def round_robin(device, methods: dict, warmup: int, repeats: int) -> dict:
    """{method: {"out", "times", "warmup", "peak_gb"}}: warm-up calls (their times kept: the first includes any
    compiling), then timed repeats round-robin over the methods."""
    res = {m: {"out": None, "times": [], "warmup": [], "peak_gb": None} for m in methods}
    for i in range(warmup + repeats):
        for name, fn in methods.items():
            out, elapsed, peak = timed(device, fn)
            print(f"#   {'warm-up' if i < warmup else 'timed'} {name}: {elapsed:.2f} s", file=sys.stderr, flush=True)
            res[name]["out"] = out
            res[name]["times" if i >= warmup else "warmup"].append(elapsed)
            if peak is not None:
                res[name]["peak_gb"] = max(res[name]["peak_gb"] or 0.0, round(peak, 3))
    return res


def pope_rows(model, processor, questions, images_dir, args, device) -> list[dict]:
    from seedvlm.eval.runner import resolve_images, run_prompts

    paths = resolve_images(images_dir, [(q["image"], q["question_id"]) for q in questions])
    prompts = [q["text"] for q in questions]
    common = dict(batch_size=args.batch_size, max_new_tokens=args.pope_new_tokens, decoding="greedy", yes_prob=True)
    methods = {m: (lambda reuse=(m == "prefix"): run_prompts(model, processor, paths, prompts, seed=0,
                                                               prefix_reuse=reuse, **common))
               for m in POPE_METHODS}
    res = round_robin(device, methods, args.warmup, args.repeats)
    ref = res["plain"]["out"]
    rows = []
    for m in POPE_METHODS:
        out, med = res[m]["out"], statistics.median(res[m]["times"])
        rows.append({"method": m, "questions": len(prompts), "median_s": med, "times_s": res[m]["times"],
                     "warmup_s": res[m]["warmup"],
                     "questions_per_s": len(prompts) / med, "peak_memory_gb": res[m]["peak_gb"],
                     "speedup_vs_plain": statistics.median(res["plain"]["times"]) / med,
                     "answers_identical": list(map(str, out)) == list(map(str, ref)),
                     "max_p_yes_diff": max(abs(a.p_yes - b.p_yes) for a, b in zip(out, ref))})
    return rows


def decode_rows(model, processor, images, args, device) -> list[dict]:
    from seedvlm.decode.plain import generate_new_tokens
    from seedvlm.generation import encode_prompts

    tok = processor.tokenizer
    batch = encode_prompts(processor, images, [DESCRIBE_PROMPT] * len(images), device)
    batch["pixel_values"] = batch["pixel_values"].to(next(model.parameters()).dtype)
    gen = dict(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False, num_beams=1,
               pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    options = {"eager": {}, "static": {"static": True, "compile": False},
               "static-compiled": {"static": True, "compile": True}}
    methods = {m: (lambda o=options[m]: generate_new_tokens(model, batch, gen, **o)[0])
               for m in DECODE_METHODS if m in args.decode_methods}
    res = round_robin(device, methods, args.warmup, args.repeats)
    ref = res["eager"]["out"]
    rows = []
    for m in methods:
        out, med = res[m]["out"], statistics.median(res[m]["times"])
        n_tokens = int(out.numel())
        rows.append({"method": m, "batch_size": len(images), "new_tokens": n_tokens, "median_s": med,
                     "times_s": res[m]["times"], "warmup_s": res[m]["warmup"], "tokens_per_s": n_tokens / med,
                     "peak_memory_gb": res[m]["peak_gb"],
                     "speedup_vs_eager": statistics.median(res["eager"]["times"]) / med,
                     "tokens_identical": out.tolist() == ref.tolist()})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="assets/base-tiny", help="llava-hf model folder (default: the shipped base)")
    ap.add_argument("--preset", default=None, help="instead of --model: random weights of this preset (e.g. "
                                                   "llava-1.5-7b) with the world's word tokenizer")
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    ap.add_argument("--dtype", default=None, choices=tuple(DTYPES), help="default: float32 on cpu, bfloat16 on cuda")
    ap.add_argument("--images", type=int, default=24,
                    help="world validation images (default 24); POPE asks 18 questions about each with >= 3 objects")
    ap.add_argument("--batch-size", type=int, default=16, help="POPE batch size (default 16, eval's)")
    ap.add_argument("--pope-new-tokens", type=int, default=8, help="new tokens per POPE answer (default 8, eval's)")
    ap.add_argument("--describe", type=int, default=8, help="images described at once (default 8)")
    ap.add_argument("--new-tokens", type=int, default=64, help="forced new tokens per description (default 64)")
    ap.add_argument("--decode-methods", default=",".join(DECODE_METHODS),
                    help=f"comma-separated subset of {','.join(DECODE_METHODS)} (eager is always run)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed calls per method")
    ap.add_argument("--repeats", type=int, default=3, help="timed calls per method; median reported")
    ap.add_argument("--seed", type=int, default=0, help="seed of the world and the questions")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (torch.set_num_threads)")
    ap.add_argument("--note", default="", help="a remark stored with the figures (e.g. the machine's load)")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args(argv)
    args.decode_methods = {"eager"} | {m for m in args.decode_methods.split(",") if m}
    unknown = args.decode_methods - set(DECODE_METHODS)
    if unknown:
        raise SystemExit(f"unknown decode method(s) {sorted(unknown)}; choose from {DECODE_METHODS}")

    from transformers.utils import logging as hf_logging

    from seedvlm.eval.runner import _open
    from seedvlm.models import load_for_inference

    device, dtype = setup_device(args.device, args.dtype, args.threads)
    hf_logging.set_verbosity_error()
    if args.preset:
        model, processor = preset_model(args.preset, device, dtype)
        args.model = f"preset {args.preset} (random weights)"
    else:
        model, processor = load_for_inference(args.model, device=device, dtype=dtype)
    size = model.config.vision_config.image_size
    with tempfile.TemporaryDirectory() as tmp:
        questions, images_dir = build_questions(Path(tmp), args.images, size, args.seed)
        print(f"# {args.model}: {device_name(device)}, {dtype}; {len(questions)} POPE questions on {args.images} "
              f"images", file=sys.stderr)
        pope = pope_rows(model, processor, questions, images_dir, args, device)
        images = [_open(p) for p in sorted(images_dir.iterdir())[:args.describe]]
        decode = decode_rows(model, processor, images, args, device)
    report = {
        "benchmark": "eval_speed",
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "device": device_name(device),
        "device_type": device.type,
        "model": args.model,
        "dtype": str(dtype).replace("torch.", ""),
        "image_tokens": int((processor(images=images[:1], text=["<image>"], return_tensors="pt")["input_ids"]
                             == model.config.image_token_id).sum()),
        "pope_images": args.images,
        "batch_size": args.batch_size,
        "pope_new_tokens": args.pope_new_tokens,
        "describe_batch": args.describe,
        "new_tokens": args.new_tokens,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "note": args.note,
        **provenance(__file__, argv),
        "pope": pope,
        "decode": decode,
    }
    emit(report, markdown_table(report), args.out)
    return 0


def _gb(v) -> str:
    return "-" if v is None else f"{v:.2f}"


def markdown_table(report: dict) -> str:
    lines = [f"{report['model']} on {report['device']}, {report['dtype']}; median of {report['repeats']}"
             + (f"; {report['note']}" if report["note"] else ""), "",
             f"POPE: {report['pope'][0]['questions']} questions, batch {report['batch_size']}, "
             f"{report['pope_new_tokens']} new tokens, greedy", "",
             "| method | questions / s | x plain | identical answers | max P(yes) diff | peak GiB |",
             "|---|---|---|---|---|---|"]
    for r in report["pope"]:
        lines.append(f"| {r['method']} | {r['questions_per_s']:.1f} | {r['speedup_vs_plain']:.2f} | "
                     f"{'yes' if r['answers_identical'] else 'NO'} | {r['max_p_yes_diff']:.1e} | "
                     f"{_gb(r['peak_memory_gb'])} |")
    lines += ["", f"Descriptions: batch {report['describe_batch']}, {report['new_tokens']} new tokens, greedy", "",
              "| method | new tokens / s | x eager | identical tokens | first call (s) | peak GiB |",
              "|---|---|---|---|---|---|"]
    for r in report["decode"]:
        first = f"{r['warmup_s'][0]:.1f}" if r["warmup_s"] else "-"
        lines.append(f"| {r['method']} | {r['tokens_per_s']:.1f} | {r['speedup_vs_eager']:.2f} | "
                     f"{'yes' if r['tokens_identical'] else 'NO'} | {first} | {_gb(r['peak_memory_gb'])} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
