"""Check 7 of `seedvlm readiness` on rewritten held-out descriptions: where the injected partner's sentence stands and
which colour it names. A diagnostic for this result folder, not part of the package.

    python probe.py MODEL WORLD N OUT.json

For each variant of the held-out descriptions (seedvlm.diagnostics.teacher_signal.held_out_records, the world's own
generator) it writes the per-kind mean change of log p at the injected partners and the present objects, and the
mean clean and noisy (Gaussian a = 0.3) log p per class:
  orig     the generator's descriptions, as `seedvlm readiness` scores them;
  end      the injected sentence moved after every other sentence (its present companion always named before it);
  start    the injected sentence moved right after the scene sentence (its companion never named before it);
  match    the injected partner's colour replaced by a colour some present object has;
  nomatch  ... by a colour no present object has.
"""
import json
import re
import sys
from pathlib import Path

import torch

import seedvlm.diagnostics.teacher_signal as TS
import seedvlm.world.text as T
from seedvlm.eval.chair import CHAIR
from seedvlm.eval.runner import load_model
from seedvlm.world.categories import COLOR_NAMES, SYNONYMS

ORIGINAL = T.describe


def rewrite(mode: str):
    def describe(scene, rng, inject=None):
        text = ORIGINAL(scene, rng, inject)
        if inject is None or mode == "orig":
            return text
        sents = [s.strip() for s in re.findall(r"[^.]*\.", text)]
        words = {w for s in SYNONYMS[inject] for w in (s, T.plural(s))}
        hit = [i for i, s in enumerate(sents)
               if i > 0 and any(re.search(rf"\b{re.escape(w)}\b", s.lower()) for w in words)]
        assert len(hit) == 1, (text, inject)
        if mode in ("end", "start"):
            fake = sents.pop(hit[0])
            sents.insert(len(sents) if mode == "end" else 1, fake)
        else:
            cols = sorted({o.color for o in scene.objects})
            pool = cols if mode == "match" else [c for c in COLOR_NAMES if c not in cols]
            forced = pool[len(text) % len(pool)]
            syn = "|".join(sorted((re.escape(s) for s in SYNONYMS[inject]), key=len, reverse=True))
            sents[hit[0]], k = re.subn(rf"\b({'|'.join(COLOR_NAMES)}) ({syn})\b",
                                       lambda m: f"{forced} {m.group(2)}", sents[hit[0]], count=1, flags=re.I)
            assert k == 1, (text, inject)
        return " ".join(sents)
    return describe


def main(model_dir: str, world: str, n: int, out: str) -> None:
    torch.set_num_threads(1)
    world = Path(world)
    model, processor = load_model(model_dir, device="cpu")
    model.eval()
    chair = CHAIR(world / "instances_val.json", protocol="corrected")
    result = {"model": model_dir, "world": str(world), "n": n, "variants": {}}
    for mode in ("orig", "end", "start", "match", "nomatch"):
        T.describe = rewrite(mode)
        records, injected = TS.held_out_records(world, n)
        rep = TS.mention_signal(model, processor, records, injected, world / "images" / "val", chair,
                                TS.perturbation_views(0.3, 0))
        result["variants"][mode] = {
            "partner_mentions": rep["classes"]["injected_absent"]["mentions"],
            "logp_clean_noisy": {c: [rep["classes"][c]["logp_clean"], rep["classes"][c]["logp_noisy"]]
                                 for c in ("present", "injected_absent")},
            "change": {v: {"partners": r["classes"]["injected_absent"]["perturbed_minus_clean"],
                           "present": r["classes"]["present"]["perturbed_minus_clean"]}
                       for v, r in rep["perturbations"].items()}}
        print(mode, json.dumps(result["variants"][mode]["change"]), flush=True)
    T.describe = ORIGINAL
    Path(out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4])
