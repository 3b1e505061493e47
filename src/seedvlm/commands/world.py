"""`seedvlm world`: generate the embedded synthetic world (images, COCO instances/captions, LLaVA-Instruct
records, world.json) into a folder, atomically."""

from __future__ import annotations

import dataclasses
import sys

# The options mirror seedvlm.world.WorldConfig; kept here as plain data so `seedvlm --help` imports no numpy.
_OPTIONS = [
    ("train", int, 4000, "number of training images"),
    ("val", int, 500, "number of validation images (text exact and clean: no injected hallucination)"),
    ("size", int, 64, "image side in pixels (>= 32); object sizes scale with it"),
    ("seed", int, 0, "random seed (>= 0); the same seed gives identical files"),
    ("hallucination_rate", float, 0.2,
     "fraction of TRAIN detailed descriptions that mention one absent partner object as if present"),
    ("off_scene_rate", float, 0.3, "fraction of object instances drawn from outside their scene's list"),
    ("occlusion_rate", float, 0.15, "probability that an object is partly hidden by a background patch"),
    ("hard_negatives", float, 0.1,
     "fraction of yes/no negatives that name a co-occurring absent object (the rest: a random absent one)"),
    ("min_objects", int, 2, "fewest objects in an image"),
    ("max_objects", int, 6, "most objects in an image"),
]


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "world",
        help="generate the embedded synthetic world (COCO + LLaVA-Instruct formats)",
        description="Generate the embedded synthetic world into --out: images/{train,val}/*.png, "
                    "instances_/captions_/instruct_{split}.json and world.json. The same seed gives identical "
                    "files; the folder appears only when complete. See docs/world.md.",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (new, empty, or an existing world)")
    p.add_argument("--config", default=None, metavar="FILE", help="YAML file of the options below")
    for name, typ, default, help_ in _OPTIONS:
        p.add_argument(f"--{name.replace('_', '-')}", dest=name, type=typ, default=None,
                       metavar="N" if typ is int else "P", help=f"{help_} [default: {default}]")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from seedvlm.config import load_config
    from seedvlm.outputs import check_dir_target, owned_by
    from seedvlm.world import WorldConfig, generate_world

    check_dir_target(args.out, "--out", owns=owned_by("world.json"))  # an existing world is replaced whole

    names = [f.name for f in dataclasses.fields(WorldConfig)]
    overrides = {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}
    cfg = load_config(WorldConfig, args.config, overrides)
    s = generate_world(cfg, args.out, progress=not args.quiet)
    h = s["hallucination"]
    lines = [
        f"world written to {s['out']}",
        f"  images: train {s['images']['train']}, val {s['images']['val']} ({cfg.size} px); "
        f"instances: train {s['instances']['train']}, val {s['instances']['val']}",
        f"  off-scene instances: train {s['off_scene_rate']['train']:.3f}, val {s['off_scene_rate']['val']:.3f} "
        f"(setting {cfg.off_scene_rate}); occluded: train {s['occluded_rate']['train']:.3f}",
        f"  injected hallucinations: {h['injected']} of {s['images']['train']} train descriptions "
        f"(rate {h['measured_rate']:.4f}, setting {h['rate_setting']}); val: none",
    ]
    if cfg.train and h["measured_rate"] + 1e-9 < cfg.hallucination_rate - 0.5 / cfg.train:
        lines.append(f"  warning: only {h['eligible_train_images']} train images have an absent partner to "
                     f"inject, so the measured rate is below the setting")
    pairs = ", ".join(f"{p['a']}+{p['b']} {p['together_rate']:.2f}" for p in s["strong_pairs"]
                      if p["together_rate"] is not None)
    if pairs:
        lines.append(f"  strong pairs together (in-scene, train): {pairs}")
    lines.append(f"  vocabulary: {s['vocabulary_size']} words; {s['seconds']:.1f} s, "
                 f"{s['images_per_second']} images/s")
    print("\n".join(lines), file=sys.stdout)
    return 0
