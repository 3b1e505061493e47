"""CPU step time per model family: a SEED-like step against plain SFT, on the tiny hub-like folder of each family.

Cases (LoRA r=8 / alpha 16 via peft on the family's language-model attention projections; every step = forward(s)
+ backward + an AdamW step over the LoRA weights; fp32):
  sft    the student's forward with labels (HF's loss) and backward
  seed   one teacher forward (adapter disabled, no grad) on the 2B batch of clean and Gaussian-noised pixels
         (a = 0.3, pixels only, metadata untouched), the purified target (1 + b) * clean - b * noisy (b = 1) at the
         answer rows, the student's forward on the clean batch and reverse KL at T = 2, backward
Batch: --batch samples, each one image (sizes cycle through 40x60, 70x30, 50x50 px, so dynamic-resolution and anyres
families get different token counts) and a two-turn question/answer built with the family's token accounting
(labels on the answers and their end-of-turn tokens), right padded. --warmup untimed steps per case, then --steps
timed ones alternating the cases; the median is reported and the ratio seed / sft per family.

    python benchmarks/family_step.py --threads 1 --steps 20 --out docs/results/2026-12-05-family-step-cpu/family_step.json
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from common import device_name, emit, provenance
from family_bench import make_batch

from seedvlm.models.families.loading import load_family
from seedvlm.models.families.pixels import perturb_pixel_inputs, two_view_batch
from seedvlm.seed import add_noise, answer_positions, distill_loss, per_sample_generator, purify

LLAMA2 = Path(__file__).resolve().parents[1] / ".." / "shared" / "reference-data" / "tokenizers" / "llama2" / \
    "tokenizer.model"
SIZES = [(40, 60), (70, 30), (50, 50)]


def build_folders(root: Path) -> dict[str, Path]:
    from seedvlm.models.family_folders import build_llava_next_folder, build_qwen_folder, build_smolvlm_folder

    out = {"qwen2.5-vl": build_qwen_folder(root / "qwen2.5-vl"), "smolvlm": build_smolvlm_folder(root / "smolvlm")}
    if LLAMA2.is_file():
        out["llava-next"] = build_llava_next_folder(root / "llava-next", LLAMA2)
    return out


def seed_loss(model, family, processor, batch: dict, step: int) -> torch.Tensor:
    inputs = {k: v for k, v in batch.items() if k != "labels"}

    def noise(x, i):
        return add_noise(x, alpha=0.3, generator=per_sample_generator(0, i, step))

    noisy = perturb_pixel_inputs(family, inputs, "gaussian", noise, image_token_id=processor.image_token_id,
                                 merge_size=getattr(processor.image_processor, "merge_size", None))
    mask, _ = answer_positions(batch["labels"])
    b = inputs["input_ids"].shape[0]
    with torch.no_grad(), model.disable_adapter():
        both = model(**two_view_batch(inputs, noisy)).logits
    target = purify(both[:b][mask], both[b:][mask], beta=1.0)
    student = model(**inputs).logits[mask]
    return distill_loss(student, target, T=2.0)


def run(args) -> dict:
    from peft import LoraConfig, get_peft_model

    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, folder in build_folders(Path(tmp)).items():
            family, model, processor = load_family(folder)
            model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, task_type="CAUSAL_LM",
                                                     target_modules=family.lora_target_regex()))
            model.train()
            opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
            batch = make_batch(family, processor, args.batch, SIZES)
            cases = {"sft": lambda step: model(**batch).loss,
                     "seed": lambda step: seed_loss(model, family, processor, batch, step)}
            times: dict[str, list[float]] = {c: [] for c in cases}

            def one(case: str, step: int) -> float:
                t0 = time.perf_counter()
                loss = cases[case](step)
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
                return time.perf_counter() - t0

            for case in cases:
                for s in range(args.warmup):
                    one(case, s)
            for s in range(args.steps):
                for case in cases:
                    times[case].append(one(case, s))
            med = {c: statistics.median(v) for c, v in times.items()}
            rows.append({"family": family.name, "folder": name, "architecture": type(model.get_base_model()).__name__,
                         "batch": args.batch, "sequence_length": int(batch["input_ids"].shape[1]),
                         "sft_s": med["sft"], "seed_s": med["seed"], "ratio_seed_over_sft": med["seed"] / med["sft"],
                         "times_s": times})
    return {"benchmark": "family_step", "device": device_name(torch.device("cpu")), "warmup": args.warmup,
            "steps": args.steps, "rows": rows, **provenance(__file__, None, ("transformers", "peft"))}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    report = run(args)
    lines = ["| family (tiny folder) | seq len | SFT step (s) | SEED-like step (s) | SEED / SFT |", "|---|---|---|---|---|"]
    for r in report["rows"]:
        lines.append(f"| {r['folder']} | {r['sequence_length']} | {r['sft_s']:.4f} | {r['seed_s']:.4f} | "
                     f"{r['ratio_seed_over_sft']:.2f} |")
    emit(report, "\n".join(lines), args.out)


if __name__ == "__main__":
    main()
