"""How far the teacher cache's top-k loss is from the exact SEED loss: per batch, the exact loss (full teacher rows,
`seed.combined_loss`) and the cached one (`select_rows` -> storage dtype -> `teacher_cache.cached_rows`) on the SAME
student rows; reported: relative gap of the loss and of its distillation term, and the cosine and relative norm
error of the gradient with respect to the student's logits (what the LoRA update follows).

Two sources of logits:
  --model DIR --data D --images I   a llava-hf model over prepared records: teacher = the model (step-0 noise, as
                                    `seedvlm teach`), student = the model + a LoRA (r 16) with random B (std
                                    --student-noise), i.e. a student that has moved away from its teacher
  --synthetic                       Zipf-shaped rows at LLaVA's vocabulary (32064): clean logits
                                    -s*log(rank) + N(0, 0.5) with s = 2.2 (top-1 p ~0.6) and random token order, noisy = clean +
                                    N(0, 1.5) + a shared "language prior" bonus on 50 tokens, student = clean + N(0, 0.5)

    python benchmarks/teacher_cache_gap.py --model runs/base --data runs/train.json --images worlds/main/images/train
    python benchmarks/teacher_cache_gap.py --synthetic --top-k 16,64,256
    # LLaVA-1.5-7B on one GPU (about a minute after loading):
    python benchmarks/teacher_cache_gap.py --model /models/llava-1.5-7b-hf --data runs/llava_train.json \
        --images coco/train2014 --device cuda --dtype bfloat16 --top-k 16,64,256 --batches 8
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
from pathlib import Path

import torch

from seedvlm import seed as S
from seedvlm.train.config import TrainConfig
from seedvlm.train.step import seed_step
from seedvlm.train.teacher import TeacherRows
from seedvlm.train.teacher_cache import VALUE_DTYPES, cached_rows, select_rows


def _grads(student, fn):
    s = student.detach().float().clone().requires_grad_(True)
    loss, parts = fn(s)
    (g,) = torch.autograd.grad(loss, s)
    return float(loss.detach()), parts, g


def compare(clean, noisy, student, targets, beta_rows, cfg, top_k: int, value_dtype: torch.dtype) -> dict:
    """Exact vs cached loss for one batch of answer rows, and the gradients w.r.t. the student rows of the whole loss
    and of the distillation term alone (w = 1)."""
    rows = select_rows(clean, noisy, top_k)
    rows["clean"] = rows["clean"].to(value_dtype).float()
    rows["noisy"] = rows["noisy"].to(value_dtype).float()
    n = beta_rows.shape[0]
    one_sample, conf = torch.ones((n, 1), dtype=torch.bool), torch.zeros(n)  # each row its own sample: b per row
    full = TeacherRows(clean, noisy, conf)
    kept = cached_rows({**rows, "conf": conf}, clean.shape[-1], cfg.teacher_cache_tail)
    out = {}
    for w in (cfg.distill_weight, 1.0):
        c = dataclasses.replace(cfg, distill_weight=w)

        def exact(s):
            step = seed_step(s, full, targets, beta_rows, one_sample, c)
            return step.loss, step.parts

        def cached(s):
            step = seed_step(s, kept, targets, beta_rows, one_sample, c)
            return step.loss, step.parts

        l1, p1, g1 = _grads(student, exact)
        l2, p2, g2 = _grads(student, cached)
        cos = float(torch.nn.functional.cosine_similarity(g1.flatten(), g2.flatten(), dim=0))
        err = float((g2 - g1).norm() / g1.norm())
        if w == 1.0:
            out.update(distill=p1["distill"], distill_cached=p2["distill"],
                       distill_rel_gap=abs(p2["distill"] - p1["distill"]) / max(abs(p1["distill"]), 1e-12),
                       distill_grad_cos=cos, distill_grad_rel_err=err)
        else:
            out.update(loss=l1, loss_cached=l2, loss_rel_gap=abs(l2 - l1) / abs(l1), grad_cos=cos, grad_rel_err=err)
    return out


def synthetic_batches(n_batches: int, rows: int, vocab: int = 32064, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    prior = torch.randperm(vocab, generator=g)[:50]
    for _ in range(n_batches):
        rank = torch.stack([torch.randperm(vocab, generator=g) for _ in range(rows)]).float() + 1
        clean = -2.2 * rank.log() + 0.5 * torch.randn(rows, vocab, generator=g)
        noisy = clean + 1.5 * torch.randn(rows, vocab, generator=g)
        noisy[:, prior] += 3.0
        student = clean + 0.5 * torch.randn(rows, vocab, generator=g)
        targets = clean.argmax(dim=-1)
        yield clean, noisy, student, targets


def model_batches(args, cfg):
    from seedvlm.data.dataset import Collator, InstructDataset, load_records
    from seedvlm.models import load_model, load_processor
    from seedvlm.train.lora import apply_lora
    from seedvlm.train.teacher import teacher_logits

    processor = load_processor(args.model)
    records = load_records(args.data)
    ds = InstructDataset(records[: args.batches * args.batch_size], processor, args.images,
                         max_length=10 ** 6, source=args.data)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    model = apply_lora(load_model(args.model, device=args.device, dtype=dtype), 16, 32, 0.0)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.copy_((torch.randn(p.shape, generator=g) * args.student_noise).to(p.device, p.dtype))
    model.eval()
    collate = Collator(processor.tokenizer.pad_token_id)
    for b in range(args.batches):
        batch = collate([ds[i] for i in range(b * args.batch_size, (b + 1) * args.batch_size)])
        batch = {k: v.to(args.device) for k, v in batch.items()}
        mask, targets = S.answer_positions(batch["labels"])
        clean, noisy = teacher_logits(model, batch, mask, cfg, step=0)
        with torch.no_grad():
            student = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                            pixel_values=batch["pixel_values"].to(dtype), logits_to_keep=mask,
                            use_cache=False).logits
        yield clean.float(), noisy.float(), student.float(), targets


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None)
    ap.add_argument("--data", default=None)
    ap.add_argument("--images", default=None)
    ap.add_argument("--synthetic", action="store_true")
    ap.add_argument("--top-k", default="4,8,16,64")
    ap.add_argument("--batches", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--rows", type=int, default=240, help="answer rows per synthetic batch")
    ap.add_argument("--student-noise", type=float, default=0.02, help="std of the student's random LoRA B")
    ap.add_argument("--beta", type=float, default=0.7, help="b of every row (the middle value)")
    ap.add_argument("--value-dtype", default="float16", choices=tuple(VALUE_DTYPES))
    ap.add_argument("--device", default="cpu", help="where the model runs (--model)")
    ap.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"), help="model weights (--model)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if not args.synthetic and not (args.model and args.data and args.images):
        raise SystemExit("give --model, --data and --images, or --synthetic")
    cfg = TrainConfig()  # the reference implementation's defaults: logit space, reverse KL, T = 2, w = 0.7, no mask
    ks = [int(k) for k in args.top_k.split(",") if k]
    batches = list(synthetic_batches(args.batches, args.rows) if args.synthetic else model_batches(args, cfg))
    vocab = batches[0][0].shape[-1]
    report = {"source": "synthetic" if args.synthetic else args.model, "vocab": vocab, "beta": args.beta,
              "value_dtype": args.value_dtype, "batches": len(batches), "rows": sum(b[0].shape[0] for b in batches),
              "results": []}
    print(f"# {report['source']}: vocabulary {vocab}, {report['rows']} answer rows in {len(batches)} batches, "
          f"b = {args.beta}, values {args.value_dtype}")
    print("| top-k (kept K) | tail | loss gap (median / max) | distill term gap (median / max) | loss grad cosine "
          "(min) | distill grad cosine (min) | distill grad rel. error (max) |")
    print("|---|---|---|---|---|---|---|")
    for k in ks:
        for tail in ("lump", "drop"):
            c = TrainConfig(teacher_cache_tail=tail)
            rs = [compare(cl, no, st, tg, torch.full((cl.shape[0],), args.beta), c, k, VALUE_DTYPES[args.value_dtype])
                  for cl, no, st, tg in batches]
            row = {"top_k": k, "kept": min(2 * k, vocab), "tail": tail,
                   "loss_gap_median": statistics.median(r["loss_rel_gap"] for r in rs),
                   "loss_gap_max": max(r["loss_rel_gap"] for r in rs),
                   "distill_gap_median": statistics.median(r["distill_rel_gap"] for r in rs),
                   "distill_gap_max": max(r["distill_rel_gap"] for r in rs),
                   "grad_cos_min": min(r["grad_cos"] for r in rs),
                   "distill_grad_cos_min": min(r["distill_grad_cos"] for r in rs),
                   "distill_grad_rel_err_max": max(r["distill_grad_rel_err"] for r in rs),
                   "loss_exact_mean": statistics.mean(r["loss"] for r in rs),
                   "distill_exact_mean": statistics.mean(r["distill"] for r in rs)}
            report["results"].append(row)
            print(f"| {k} ({row['kept']}) | {tail} | {100 * row['loss_gap_median']:.2f}% / "
                  f"{100 * row['loss_gap_max']:.2f}% | {100 * row['distill_gap_median']:.1f}% / "
                  f"{100 * row['distill_gap_max']:.1f}% | {row['grad_cos_min']:.4f} | "
                  f"{row['distill_grad_cos_min']:.4f} | {row['distill_grad_rel_err_max']:.3f} |", flush=True)
    print(f"exact loss (mean) {report['results'][0]['loss_exact_mean']:.4f}, exact distill term T^2 KL (mean) "
          f"{report['results'][0]['distill_exact_mean']:.4f}")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
