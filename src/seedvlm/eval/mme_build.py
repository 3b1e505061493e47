"""Write MME's four hallucination subsets in MME's own layout from a COCO-format instances file and its images.

Each subset folder holds image + txt pairs (the layout MME ships for these subsets); each txt has two lines,
"question<TAB>Yes" and "question<TAB>No", about that image. The pairs are the first yes/no pair per image of the
matching `build_pope` kind: existence <- object (random negatives), count <- count, position <- relation,
color <- color. Questions end in MME's "Please answer yes or no."
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable

from seedvlm.errors import SeedVLMError
from seedvlm.eval.mme import SUBSETS
from seedvlm.eval.pope import build_pope
from seedvlm.io import atomic_path, safe_join, write_json

KIND_OF = {"existence": "object", "count": "count", "position": "relation", "color": "color"}
SUFFIX = " Please answer yes or no."


def mme_pairs(instances: str | Path | dict, subset: str, n_images: int, seed: int) -> list[tuple[str, list[tuple]]]:
    """[(image file name, [(question, "Yes"), (question, "No")]), ...] for one subset."""
    splits, _ = build_pope(instances, n_images=n_images, seed=seed, kind=KIND_OF[subset])
    questions = splits["random"] if subset == "existence" else next(iter(splits.values()))
    by_image: dict[str, list[dict]] = {}
    for q in questions:
        by_image.setdefault(q["image"], []).append(q)
    out = []
    for image, qs in by_image.items():
        yes = next((q for q in qs if q["label"] == "yes"), None)
        no = next((q for q in qs if q["label"] == "no"), None)
        if yes and no:
            out.append((image, [(yes["text"] + SUFFIX, "Yes"), (no["text"] + SUFFIX, "No")]))
    return out


def write_mme(instances: str | Path, images: str | Path, out: str | Path, n_images: int = 100, seed: int = 0,
              subsets: tuple[str, ...] = SUBSETS, check: Callable[[list[str]], Any] | None = None) -> dict:
    """Write OUT/<subset>/<image> + <image stem>.txt for each subset and OUT/meta.json; returns the meta.
    `check(image names)` runs before anything is written (the leakage guard); what it returns goes in the meta."""
    out, images = Path(out), Path(images)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "meta.json").is_file())):
        raise SeedVLMError(f"--out {out} exists and is not an MME folder written by seedvlm (no meta.json); "
                           "refusing to replace it")
    if not images.is_dir():
        raise SeedVLMError(f"image folder not found: {images}")
    per_subset = {subset: mme_pairs(instances, subset, n_images, seed) for subset in subsets}
    checked = check(sorted({image for pairs in per_subset.values() for image, _ in pairs})) if check else None
    counts = {}
    with atomic_path(out) as tmp:
        for subset, pairs in per_subset.items():
            folder = tmp / subset
            folder.mkdir(parents=True)
            for image, lines in pairs:
                src = safe_join(images, image)
                if not src.is_file():
                    raise SeedVLMError(f"image {image} of {instances} not found in {images}")
                shutil.copyfile(src, folder / src.name)
                (folder / f"{src.stem}.txt").write_text("".join(f"{q}\t{a}\n" for q, a in lines), encoding="utf-8")
            counts[subset] = {"images": len(pairs), "questions": 2 * len(pairs)}
        meta = {"format": "mme", "source": str(instances), "images": str(images), "seed": seed,
                "n_images_requested": n_images, "counts": counts, "leakage": checked}
        write_json(tmp / "meta.json", meta)
    return meta
