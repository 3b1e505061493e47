"""Is SEED's teacher signal there? Clean vs noisy teacher at the object words of the training descriptions.

SEED assumes that the noisy view of an image carries the language prior and the clean view the evidence, so that
the purified target (1+b) clean - b noisy pushes down hallucinated objects and pushes up seen ones. On the embedded
world this can be checked exactly: the world records which training descriptions mention an absent, co-occurring
object (annotator hallucinations, world.json "injections"). This teacher-forces the base model on the
detailed descriptions of a world's train split, with the clean image and with the noisy one (x' = sqrt(a) x +
sqrt(1-a) eps), and reports at the first token of every object mention (found with CHAIR's matcher):

  - log p_clean and log p_noisy of the mentioned word, and their difference (clean - noisy);
  - how purification at b changes the word's log-probability (log softmax(purified) - log softmax(clean), T = 1);
  - the fraction of mentions whose probability purification lowers;

separately for objects that are present, and for the injected absent partners. If the premise holds, the noisy
view favours the injected partners (clean - noisy < 0 there) and purification lowers them while raising present
objects. Also the mean KL(clean || noisy) over all answer tokens and at object mentions.

`within_objects` checks a variant of the target: purification applied only among the object words (every word
CHAIR maps to a category, and the first word of each multi-word name), their total clean probability kept, every
other token left at its clean probability. It asks whether SEED's recall loss comes from moving mass between "name
an object" and "stop", or from sharpening among the objects themselves.

The command is `seedvlm teacher-signal` (seedvlm.commands.teacher_signal).
"""

from __future__ import annotations

from pathlib import Path

import torch

from seedvlm import seed as S
from seedvlm.errors import SeedVLMError
from seedvlm.eval.chair import CHAIR
from seedvlm.io import read_json

CLASSES = ("present", "injected_absent", "other_absent")


def detail_records(world: Path, split: str, n: int | None) -> tuple[list[dict], dict[str, str]]:
    """The split's detailed descriptions as training records, and {record id: injected category name}."""
    from seedvlm.data.prepare import conversations_to_records

    data = read_json(world / f"instruct_{split}.json", "instruct file")
    details = [c for c in data if str(c.get("id", "")).endswith("_detail")]
    if not details:
        raise SeedVLMError(f"{world / f'instruct_{split}.json'}: no detailed-description conversations (*_detail)")
    records = conversations_to_records(details[:n] if n else details, world / "images" / split,
                                       source=str(world / f"instruct_{split}.json"), turns="first")[0]
    meta = read_json(world / "world.json", "world metadata")
    injected = {f"{r['record_id']}-0": r["name"] for r in meta.get("injections", [])}  # prepare's record ids
    return records, injected


def mention_token_positions(tokens: list[str], chair: CHAIR) -> list[tuple[int, str]]:
    """[(index of the mention's first token, category), ...] for the object mentions in a word-token sequence."""
    index_at, pos = {}, 0
    for i, t in enumerate(tokens):
        index_at[pos] = i
        pos += len(t) + 1
    return [(index_at[start], category) for start, _end, _word, category in chair.mention_spans(" ".join(tokens))
            if start in index_at]


def object_token_mask(tokenizer, chair: CHAIR, vocab_size: int) -> torch.Tensor:
    """(V,) bool: the tokens that are an object word for CHAIR (singular or plural) or start a multi-word name."""
    from seedvlm.eval.chair import singularize

    names = chair.word_to_category
    firsts = {k.split()[0] for k in names}
    mask = torch.zeros(vocab_size, dtype=torch.bool)
    for word, i in tokenizer.get_vocab().items():
        if i < vocab_size and (singularize(word) in names or word in firsts):
            mask[i] = True
    if not mask.any():
        raise SeedVLMError("no object word in the tokenizer's vocabulary")
    return mask


def purify_within(clean_logp: torch.Tensor, purified_logp: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Log-probs that follow `purified_logp` among `tokens` (renormalized to their total CLEAN probability) and
    `clean_logp` everywhere else: rows (N, V), tokens (V,) bool."""
    neg = float("-inf")
    mass = torch.logsumexp(clean_logp.masked_fill(~tokens, neg), dim=-1, keepdim=True)
    inner = purified_logp.masked_fill(~tokens, neg).log_softmax(-1) + mass
    return torch.where(tokens, inner, clean_logp)


@torch.no_grad()
def teacher_signal(model, processor, world: Path, split: str = "train", n: int | None = None, alpha: float = 0.3,
                   beta: float = 0.6, batch_size: int = 16, seed: int = 0, within_objects: bool = False) -> dict:
    """The per-class statistics above (a dict ready for JSON)."""
    from seedvlm.data.dataset import Collator, InstructDataset

    records, injected = detail_records(world, split, n)
    chair = CHAIR(world / f"instances_{split}.json", protocol="corrected")
    by_name = {im["file_name"]: im["id"] for im in chair.images}
    ds = InstructDataset(records, processor, world / "images" / split,
                         max_length=model.config.text_config.max_position_embeddings, source=f"{world} {split}")
    collate = Collator(processor.tokenizer.pad_token_id)
    from seedvlm.train.config import TrainConfig
    from seedvlm.models.dtypes import compute_dtype
    from seedvlm.train.teacher import noisy_view

    noise = TrainConfig(alpha=alpha, seed=seed)  # gaussian noise drawn per sample, as training draws it (step 0)
    device, dtype = next(model.parameters()).device, compute_dtype(model)
    patch = int(model.config.vision_config.patch_size)
    sums = {c: {"n": 0, "logp_clean": 0.0, "logp_noisy": 0.0, "delta_purified": 0.0, "lowered": 0,
                "kl": 0.0} for c in CLASSES}
    all_kl, all_rows = 0.0, 0
    objects = None  # (V,) bool object-word mask for within_objects
    for s in range(0, len(ds), batch_size):
        batch = {k: v.to(device) for k, v in collate([ds[i] for i in range(s, min(len(ds), s + batch_size))]).items()}
        mask, targets = S.answer_positions(batch["labels"])  # rows of `mask` predict `targets`, row-major
        pix = batch["pixel_values"].float()
        noisy = noisy_view(pix, batch["sample_index"], 0, noise, patch)
        ids, attn = batch["input_ids"], batch["attention_mask"]
        rows = model(input_ids=torch.cat([ids, ids]), attention_mask=torch.cat([attn, attn]),
                     pixel_values=torch.cat([pix, noisy]).to(dtype), logits_to_keep=torch.cat([mask, mask]),
                     use_cache=False).logits.float()  # clean and noisy in one forward, answer rows only
        lc, ln = rows[:len(targets)].log_softmax(-1), rows[len(targets):].log_softmax(-1)
        lp = S.purify(lc, ln, beta).log_softmax(-1)
        if within_objects:
            if objects is None:  # once: the vocabulary size is known from the first rows
                objects = object_token_mask(processor.tokenizer, chair, lc.shape[-1]).to(lc.device)
            lp = purify_within(lc, lp, objects)
        kl = (lc.exp() * (lc - ln)).sum(-1)  # KL(clean || noisy) per answer row
        all_kl += float(kl.sum())
        all_rows += len(targets)
        first = 0
        for b, n_rows in enumerate(mask.sum(1).tolist()):
            rec = records[int(batch["sample_index"][b])]
            tok_ids = targets[first:first + n_rows]
            present = chair.annotated(by_name[rec["image"]])
            for j, category in mention_token_positions(processor.tokenizer.convert_ids_to_tokens(tok_ids.tolist()),
                                                       chair):
                r, tok = first + j, int(tok_ids[j])
                cls = ("present" if category in present else
                       "injected_absent" if injected.get(rec["id"]) == category else "other_absent")
                acc = sums[cls]
                c_, n_, p_ = float(lc[r, tok]), float(ln[r, tok]), float(lp[r, tok])
                acc["n"] += 1
                acc["logp_clean"] += c_
                acc["logp_noisy"] += n_
                acc["delta_purified"] += p_ - c_
                acc["lowered"] += int(p_ < c_)
                acc["kl"] += float(kl[r])
            first += n_rows
    out = {"world": str(world), "split": split, "records": len(records), "alpha": alpha, "beta": beta, "seed": seed,
           "within_objects": within_objects,
           "kl_clean_noisy_all_answer_tokens": all_kl / max(all_rows, 1), "answer_tokens": all_rows, "classes": {}}
    for cls, acc in sums.items():
        m = max(acc["n"], 1)
        out["classes"][cls] = {"mentions": acc["n"], "logp_clean": acc["logp_clean"] / m,
                               "logp_noisy": acc["logp_noisy"] / m,
                               "clean_minus_noisy": (acc["logp_clean"] - acc["logp_noisy"]) / m,
                               "purified_minus_clean": acc["delta_purified"] / m,
                               "fraction_lowered": acc["lowered"] / m, "kl_clean_noisy": acc["kl"] / m}
    return out


def markdown(report: dict) -> str:
    """The report as one Markdown table, a row per class of mention."""
    within = " (purified among object words only)" if report.get("within_objects") else ""
    lines = [f"Teacher signal at object mentions: {report['records']} descriptions of {report['world']} "
             f"({report['split']}), a = {report['alpha']}, b = {report['beta']}{within}; mean KL(clean || noisy) "
             f"over all {report['answer_tokens']} answer tokens {report['kl_clean_noisy_all_answer_tokens']:.4f}", "",
             "| mentions of | n | log p clean | log p noisy | clean - noisy | purified - clean | lowered by purification "
             "| KL(clean, noisy) there |", "|---|---|---|---|---|---|---|---|"]
    for cls, r in report["classes"].items():
        lines.append(f"| {cls.replace('_', ' ')} objects | {r['mentions']} | {r['logp_clean']:.3f} | "
                     f"{r['logp_noisy']:.3f} | {r['clean_minus_noisy']:+.3f} | {r['purified_minus_clean']:+.3f} | "
                     f"{100 * r['fraction_lowered']:.0f}% | {r['kl_clean_noisy']:.4f} |")
    return "\n".join(lines)
