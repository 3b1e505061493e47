"""Is the base VLM ready for SEED? It must SEE (name present objects, also outside their usual scene) and still
HALLUCINATE like a real VLM (some named objects absent, co-occurring partners over-represented; yes/no answers right
on random negatives but less on co-occurring ones), and lean on its language prior when the image is perturbed
(co-occurring absent partners gain probability under the training noise, present objects lose it: the premise of
SEED and VCD). docs/design.md section 5."""

from __future__ import annotations

import random
from pathlib import Path

from PIL import Image

from seedvlm.diagnostics.teacher_signal import prior_markdown, prior_under_noise
from seedvlm.eval.chair import CHAIR
from seedvlm.eval.pope import parse_answer
from seedvlm.generation import generate_texts
from seedvlm.io import open_image, read_json, safe_join
from seedvlm.world import partners_of, scene_by_name

DESCRIBE = "Please describe this image in detail."

PRESENT_MIN = 0.70  # share of present objects a ready base names
OFF_SCENE_MIN = 0.50  # share of objects outside their usual scene a ready base names

# name -> (description, test on the figures)
CHECKS = {
    "sees_present": ("names >= 70% of present objects", lambda r: r["present_named"] >= PRESENT_MIN),
    "sees_off_scene": ("names >= 50% of objects outside their usual scene",
                       lambda r: r["off_scene_named"] >= OFF_SCENE_MIN),
    "hallucinates_some": ("8-30% of named objects are absent",
                          lambda r: 0.08 <= r["hallucinated_fraction"] <= 0.30),
    "cooccurring_overrepresented": ("absent partners named over twice as often as other absent objects",
                                    lambda r: r["absent_partner_named"] > 2 * r["absent_other_named"]),
    "yesno_random": (">= 80% right with random negatives", lambda r: r["yesno_acc_random"] >= 0.80),
    "yesno_cooccurring_lower": ("clearly less right (>= 3 points) with co-occurring negatives",
                                lambda r: r["yesno_acc_random"] - r["yesno_acc_cooccurring"] >= 0.03),
    "prior_shows_under_noise": ("under the training noise (Gaussian, a = 0.3) the log-probability of injected "
                                "co-occurring partners rises and that of present objects falls (held-out "
                                "descriptions, teacher-forced)", lambda r: r["prior_under_noise"]["passed"]),
}


# name -> why the check matters (shown by `seedvlm readiness --help` and docs/errors.md)
WHY = {
    "sees_present": "SEED's teacher is the model's own clean view: a base that does not see gives it nothing to "
                    "distil",
    "sees_off_scene": "it must see objects, not guess them from the scene",
    "hallucinates_some": "with no hallucination there is nothing to reduce; with too much the descriptions are noise",
    "cooccurring_overrepresented": "hallucination driven by co-occurrence, as in real VLMs, is what SEED targets",
    "yesno_random": "POPE needs a model that answers yes/no questions",
    "yesno_cooccurring_lower": "POPE's adversarial split must be harder than its random one, as for real VLMs",
    "prior_shows_under_noise": "SEED and VCD assume that a perturbed image leaves the model leaning on its language "
                               "prior; where noise lowers the co-occurring partners too, the purified target raises "
                               "them",
}


def explain_checks() -> str:
    """The checks, one paragraph each: what passes and why it matters."""
    return "\n".join(f"  {k}: {d}\n      ({WHY[k]})" for k, (d, _) in CHECKS.items())


def _article(name: str) -> str:
    return "an" if name[0] in "aeiou" else "a"


def readiness_report(model, processor, world: Path, n_images: int = 200, max_new_tokens: int = 64, seed: int = 0,
                     batch_size: int = 32, progress: bool = True) -> dict:
    """Describe `n_images` val images greedily and ask yes/no probes, teacher-force held-out descriptions of up to
    `n_images` val images clean and perturbed; return the figures and the pass/fail checks."""
    world = Path(world)
    inst = read_json(world / "instances_val.json", "instances file")
    chair = CHAIR(inst, world / "captions_val.json", protocol="corrected")
    names = {c["id"]: c["name"] for c in inst["categories"]}
    all_names = sorted(names.values())
    anns: dict[int, list[dict]] = {}
    for a in inst["annotations"]:
        anns.setdefault(a["image_id"], []).append(a)
    images = inst["images"][:n_images]
    pil = [open_image(safe_join(world / "images" / "val", im["file_name"])) for im in images]
    captions = generate_texts(model, processor, pil, [DESCRIBE] * len(pil), max_new_tokens=max_new_tokens,
                              batch_size=batch_size, progress=progress, desc="readiness: describe")

    c = dict(present=0, present_named=0, off=0, off_named=0, named=0, named_absent=0,
             partner=0, partner_named=0, inscene=0, inscene_named=0, other=0, other_named=0)
    rng = random.Random(seed)
    questions, labels, kinds, q_images = [], [], [], []
    examples = []
    for im, img, cap in zip(images, pil, captions):
        present = {names[a["category_id"]] for a in anns.get(im["id"], [])}
        off_scene = {names[a["category_id"]] for a in anns.get(im["id"], []) if a.get("off_scene")}
        mentioned = set(chair.score(im["id"], cap)["mentioned"])
        scene_objs = set(scene_by_name(im["scene"]).objects) if im.get("scene") else set()
        partners = {p for x in present for p in partners_of(x)} - present
        inscene = scene_objs - present - partners
        other = set(all_names) - present - partners - inscene
        c["present"] += len(present)
        c["present_named"] += len(present & mentioned)
        c["off"] += len(off_scene)
        c["off_named"] += len(off_scene & mentioned)
        c["named"] += len(mentioned)
        c["named_absent"] += len(mentioned - present)
        for key, group in (("partner", partners), ("inscene", inscene), ("other", other)):
            c[key] += len(group)
            c[key + "_named"] += len(group & mentioned)
        if len(examples) < 5:
            examples.append({"image": im["file_name"], "scene": im.get("scene"), "objects": sorted(present),
                             "description": cap, "hallucinated": sorted(mentioned - present)})
        # yes/no probes: one present object, one random absent object, one co-occurring absent object
        pos = rng.choice(sorted(present)) if present else None
        coocc = sorted(partners) or sorted(inscene)
        for kind, obj, label in (("positive", pos, "yes"),
                                 ("random", rng.choice(sorted(other)) if other else None, "no"),
                                 ("cooccurring", rng.choice(coocc) if coocc else None, "no")):
            if obj is None:
                continue
            questions.append(f"Is there {_article(obj)} {obj} in the image?")
            labels.append(label)
            kinds.append(kind)
            q_images.append(img)
    answers = generate_texts(model, processor, q_images, questions, max_new_tokens=4, batch_size=batch_size * 2,
                             progress=progress, desc="readiness: yes/no")
    preds = [parse_answer(a) or "no" for a in answers]
    right = {k: [p == l for p, l, kk in zip(preds, labels, kinds) if kk == k] for k in ("positive", "random",
                                                                                          "cooccurring")}

    def frac(a, b):
        return a / b if b else 0.0

    def acc(*ks):
        vals = [v for k in ks for v in right[k]]
        return frac(sum(vals), len(vals))

    r = {
        "n_images": len(images),
        "present_named": frac(c["present_named"], c["present"]),
        "off_scene_named": frac(c["off_named"], c["off"]),
        "hallucinated_fraction": frac(c["named_absent"], c["named"]),
        "absent_partner_named": frac(c["partner_named"], c["partner"]),
        "absent_inscene_named": frac(c["inscene_named"], c["inscene"]),
        "absent_other_named": frac(c["other_named"], c["other"]),
        "objects_named_per_image": frac(c["named"], len(images)),
        "yesno_acc_random": acc("positive", "random"),
        "yesno_acc_cooccurring": acc("positive", "cooccurring"),
        "yes_on_positive": acc("positive"),
        "no_on_random": acc("random"),
        "no_on_cooccurring": acc("cooccurring"),
        "yes_ratio": frac(sum(p == "yes" for p in preds), len(preds)),
        "counts": c,
        "examples": examples,
    }
    r["prior_under_noise"] = prior_under_noise(model, processor, world, n=n_images, seed=seed, batch_size=batch_size)
    r["checks"] = {k: {"what": d, "passed": bool(f(r))} for k, (d, f) in CHECKS.items()}
    r["passed"] = all(v["passed"] for v in r["checks"].values())
    return r


def format_readiness(r: dict) -> str:
    """The readiness figures and checks as a small Markdown table."""
    rows = [
        ("present objects named", r["present_named"]),
        ("off-scene objects named", r["off_scene_named"]),
        ("named objects that are absent", r["hallucinated_fraction"]),
        ("absent partners named", r["absent_partner_named"]),
        ("absent in-scene objects named", r["absent_inscene_named"]),
        ("other absent objects named", r["absent_other_named"]),
        ("yes/no right, random negatives", r["yesno_acc_random"]),
        ("yes/no right, co-occurring negatives", r["yesno_acc_cooccurring"]),
        ("yes-ratio of yes/no answers", r["yes_ratio"]),
    ]
    lines = [f"readiness on {r['n_images']} val images", "| figure | value |", "|---|---|"]
    lines += [f"| {k} | {v:.3f} |" for k, v in rows]
    lines += ["", prior_markdown(r["prior_under_noise"])]
    lines += ["", "| check | passed |", "|---|---|"]
    lines += [f"| {v['what']} | {'yes' if v['passed'] else 'NO'} |" for v in r["checks"].values()]
    lines.append(f"READY: {'yes' if r['passed'] else 'no'}")
    return "\n".join(lines)
