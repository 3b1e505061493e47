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

Beside the training noise, the same statistics can be taken under other perturbation kinds (`perturbation_views`:
stronger Gaussian noise, VCD's DDPM step, patch masking, blur, a blank image): per class the mean change of
log-probability, perturbed - clean. `prior_under_noise` runs this on held-out descriptions (val images the base
never saw, each with one injected absent partner, written by the world's own generator); `seedvlm readiness` uses
it for the check that the language prior shows under noise (the partners rise, the present objects fall).

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


def held_out_records(world: Path, n: int | None) -> tuple[list[dict], dict[str, str]]:
    """Detailed descriptions of the first `n` val images that have an absent co-occurring partner, each with one such
    partner mentioned as if present (the world's own generator, a fixed stream per image, so the same on every call),
    as training records, and {record id: injected category name}. The val scenes are re-created from world.json's
    config and checked against instances_val.json."""
    import numpy as np

    from seedvlm.data.prepare import conversations_to_records
    from seedvlm.world.generate import WorldConfig, file_name, sample_split
    from seedvlm.world.text import DETAIL_PROMPTS, absent_partners, describe

    meta = read_json(world / "world.json", "world metadata")
    cfg = WorldConfig(**meta["config"])
    inst = read_json(world / "instances_val.json", "instances file")
    names = {c["id"]: c["name"] for c in inst["categories"]}
    present: dict[str, set[str]] = {im["file_name"]: set() for im in inst["images"]}
    by_id = {im["id"]: im["file_name"] for im in inst["images"]}
    for a in inst["annotations"]:
        present[by_id[a["image_id"]]].add(names[a["category_id"]])
    conversations, injected = [], {}
    for i, scene in enumerate(sample_split(cfg, "val")):
        if n is not None and len(conversations) >= n:
            break
        partners = absent_partners(scene)
        if not partners:
            continue
        fname = file_name("val", i)
        if present.get(fname) != set(scene.names):
            raise SeedVLMError(f"{world / 'instances_val.json'}: {fname} does not match the scene that world.json's "
                               "config generates (a world folder edited by hand?)")
        rng = np.random.default_rng([int(cfg.seed), 7, i])
        partner = partners[int(rng.integers(0, len(partners)))]
        conversations.append({"id": f"{fname[:-4]}_held_out", "image": fname, "conversations": [
            {"from": "human", "value": "<image>\n" + DETAIL_PROMPTS[0]},
            {"from": "gpt", "value": describe(scene, rng, inject=partner)}]})
        injected[f"{fname[:-4]}_held_out-0"] = partner  # prepare's record id
    if not conversations:
        return [], {}
    records = conversations_to_records(conversations, world / "images" / "val", source=f"{world} (held out)",
                                       turns="first")[0]
    return records, injected


def perturbation_views(alpha: float = 0.3, seed: int = 0, all_kinds: bool = True) -> dict:
    """{name: TrainConfig holding the perturbation options}: the training perturbation (Gaussian at `alpha`) first,
    then (all_kinds) stronger Gaussian noise, VCD's DDPM step, patch masking, blur and a blank image at their
    training-config defaults. Noise is drawn per sample at step 0 with `seed`, as training draws it."""
    from seedvlm.train.config import TrainConfig

    views = {f"gaussian_a{alpha:g}": TrainConfig(noise="gaussian", alpha=alpha, seed=seed)}
    if all_kinds:
        for cfg in (TrainConfig(noise="gaussian", alpha=0.1, seed=seed), TrainConfig(noise="ddpm", seed=seed),
                    TrainConfig(noise="mask", seed=seed), TrainConfig(noise="blur", seed=seed),
                    TrainConfig(noise="blank", seed=seed)):
            name = {"gaussian": f"gaussian_a{cfg.alpha:g}", "ddpm": f"ddpm_t{cfg.noise_step}",
                    "mask": f"mask_{cfg.mask_ratio:g}", "blur": f"blur_{cfg.blur_sigma:g}", "blank": "blank"}
            views.setdefault(name[cfg.noise], cfg)
    return views


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
def mention_signal(model, processor, records: list[dict], injected: dict[str, str], images: Path, chair: CHAIR,
                   views: dict, beta: float = 0.6, batch_size: int = 16, within_objects: bool = False) -> dict:
    """Teacher-force `records` with the clean image and with every perturbed view of `views` (perturbation_views);
    at each object mention (classes: present, the record's injected partner, other absent) accumulate log p clean
    and, per view, log p perturbed; for the FIRST view also purification at `beta` and KL(clean || perturbed).
    Returns {"classes": the first view's per-class means, "perturbations": per view and class the mean
    perturbed - clean (None without mentions), "kl_clean_noisy_all_answer_tokens", "answer_tokens"}."""
    from seedvlm.data.dataset import Collator, InstructDataset
    from seedvlm.models.dtypes import compute_dtype
    from seedvlm.train.teacher import noise_settings, noisy_view

    names = list(views)
    sums = {c: {"n": 0, "logp_clean": 0.0, "logp_noisy": 0.0, "delta_purified": 0.0, "lowered": 0,
                "kl": 0.0} for c in CLASSES}
    changes = {v: {c: 0.0 for c in CLASSES} for v in names}
    all_kl, all_rows = 0.0, 0
    if records:
        by_name = {im["file_name"]: im["id"] for im in chair.images}
        ds = InstructDataset(records, processor, images, max_length=model.config.text_config.max_position_embeddings,
                             source=str(images))
        collate = Collator(processor.tokenizer.pad_token_id)
        device, dtype = next(model.parameters()).device, compute_dtype(model)
        patch = int(model.config.vision_config.patch_size)
        objects = None  # (V,) bool object-word mask for within_objects
        for s in range(0, len(ds), batch_size):
            batch = {k: v.to(device) for k, v in
                     collate([ds[i] for i in range(s, min(len(ds), s + batch_size))]).items()}
            mask, targets = S.answer_positions(batch["labels"])  # rows of `mask` predict `targets`, row-major
            pix = batch["pixel_values"].float()
            seen = [pix] + [noisy_view(pix, batch["sample_index"], 0, views[v], patch) for v in names]
            k = len(seen)
            ids, attn = batch["input_ids"], batch["attention_mask"]
            rows = model(input_ids=ids.repeat(k, 1), attention_mask=attn.repeat(k, 1),
                         pixel_values=torch.cat(seen).to(dtype), logits_to_keep=mask.repeat(k, 1),
                         use_cache=False).logits.float()  # every view in one forward, answer rows only
            logps = rows.view(k, len(targets), -1).log_softmax(-1)
            lc, ln = logps[0], logps[1]
            lp = S.purify(lc, ln, beta).log_softmax(-1)
            if within_objects:
                if objects is None:  # once: the vocabulary size is known from the first rows
                    objects = object_token_mask(processor.tokenizer, chair, lc.shape[-1]).to(lc.device)
                lp = purify_within(lc, lp, objects)
            kl = (lc.exp() * (lc - ln)).sum(-1)  # KL(clean || first view) per answer row
            all_kl += float(kl.sum())
            all_rows += len(targets)
            first = 0
            for b, n_rows in enumerate(mask.sum(1).tolist()):
                rec = records[int(batch["sample_index"][b])]
                tok_ids = targets[first:first + n_rows]
                present = chair.annotated(by_name[rec["image"]])
                for j, category in mention_token_positions(
                        processor.tokenizer.convert_ids_to_tokens(tok_ids.tolist()), chair):
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
                    for v, lv in zip(names, logps[1:]):
                        changes[v][cls] += float(lv[r, tok]) - c_
                first += n_rows
    out = {"kl_clean_noisy_all_answer_tokens": all_kl / max(all_rows, 1), "answer_tokens": all_rows, "classes": {},
           "perturbations": {v: {"settings": noise_settings(views[v]), "classes": {
               cls: {"mentions": sums[cls]["n"],
                     "perturbed_minus_clean": changes[v][cls] / sums[cls]["n"] if sums[cls]["n"] else None}
               for cls in CLASSES}} for v in names}}
    for cls, acc in sums.items():
        m = max(acc["n"], 1)
        out["classes"][cls] = {"mentions": acc["n"], "logp_clean": acc["logp_clean"] / m,
                               "logp_noisy": acc["logp_noisy"] / m,
                               "clean_minus_noisy": (acc["logp_clean"] - acc["logp_noisy"]) / m,
                               "purified_minus_clean": acc["delta_purified"] / m,
                               "fraction_lowered": acc["lowered"] / m, "kl_clean_noisy": acc["kl"] / m}
    return out


def teacher_signal(model, processor, world: Path, split: str = "train", n: int | None = None, alpha: float = 0.3,
                   beta: float = 0.6, batch_size: int = 16, seed: int = 0, within_objects: bool = False,
                   all_kinds: bool = False) -> dict:
    """The per-class statistics above on a split's detailed descriptions (a dict ready for JSON); all_kinds: the
    other perturbation kinds' changes beside the training noise's."""
    records, injected = detail_records(world, split, n)
    chair = CHAIR(world / f"instances_{split}.json", protocol="corrected")
    report = mention_signal(model, processor, records, injected, world / "images" / split, chair,
                            perturbation_views(alpha, seed, all_kinds), beta, batch_size, within_objects)
    return {"world": str(world), "split": split, "records": len(records), "alpha": alpha, "beta": beta, "seed": seed,
            "within_objects": within_objects, **report}


def prior_under_noise(model, processor, world: Path, n: int | None = 200, alpha: float = 0.3, seed: int = 0,
                      batch_size: int = 16) -> dict:
    """Does the language prior show under noise? On held-out descriptions (`held_out_records`), per perturbation
    kind the mean change of log-probability (perturbed - clean) at the injected partners and at present objects;
    `passed` when, under the training perturbation (the first view), the partners rise and present objects fall."""
    records, injected = held_out_records(world, n)
    views = perturbation_views(alpha, seed)
    chair = CHAIR(world / "instances_val.json", protocol="corrected")
    report = mention_signal(model, processor, records, injected, world / "images" / "val", chair, views,
                            batch_size=batch_size)
    kinds = {v: {"settings": r["settings"],
                 "partner_change": r["classes"]["injected_absent"]["perturbed_minus_clean"],
                 "present_change": r["classes"]["present"]["perturbed_minus_clean"]}
             for v, r in report["perturbations"].items()}
    train = kinds[next(iter(views))]
    return {"descriptions": len(records), "partner_mentions": report["classes"]["injected_absent"]["mentions"],
            "present_mentions": report["classes"]["present"]["mentions"], "training_perturbation": next(iter(views)),
            "partner_change": train["partner_change"], "present_change": train["present_change"],
            "passed": prior_shows(train["partner_change"], train["present_change"]), "kinds": kinds}


def prior_shows(partner_change: float | None, present_change: float | None) -> bool:
    """The premise of SEED and VCD on one perturbation: co-occurring absent partners gain log-probability under it,
    present objects lose (no mentions: not shown)."""
    return partner_change is not None and present_change is not None and partner_change > 0 > present_change


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
    if len(report.get("perturbations", {})) > 1:
        lines += ["", "Mean change of log-probability at object mentions, perturbed - clean, per perturbation kind:",
                  "",
                  "| perturbation | " + " | ".join(c.replace("_", " ") for c in CLASSES) + " |",
                  "|---" * (len(CLASSES) + 1) + "|"]
        for name, r in report["perturbations"].items():
            lines.append(f"| {name} | " + " | ".join(_signed(r["classes"][c]["perturbed_minus_clean"])
                                                     for c in CLASSES) + " |")
    return "\n".join(lines)


def _signed(value: float | None) -> str:
    return "-" if value is None else f"{value:+.3f}"


def prior_markdown(prior: dict) -> str:
    """The readiness check on the language prior as a small Markdown table, a row per perturbation kind."""
    lines = [f"language prior under noise: {prior['descriptions']} held-out descriptions, "
             f"{prior['partner_mentions']} injected-partner and {prior['present_mentions']} present-object mentions; "
             "mean change of log p, perturbed - clean", "",
             "| perturbation | injected partners | present objects | prior shows |", "|---|---|---|---|"]
    for name, k in prior["kinds"].items():
        train = " (training)" if name == prior["training_perturbation"] else ""
        lines.append(f"| {name}{train} | {_signed(k['partner_change'])} | {_signed(k['present_change'])} | "
                     f"{'yes' if prior_shows(k['partner_change'], k['present_change']) else 'no'} |")
    return "\n".join(lines)
