"""`seedvlm pope build`: write POPE question files from a COCO-format instances file.

    seedvlm pope build --instances coco/annotations/instances_val2014.json --out pope/coco --n-images 500 --seed 0
    seedvlm pope build --instances worlds/w/instances_val.json --out pope/world --kind color --paraphrases
    seedvlm pope build --format mme --instances worlds/w/instances_val.json --images worlds/w/images/val \
        --out mme/world --n-images 100     # MME's existence/count/position/color subsets, in MME's layout
"""

from __future__ import annotations

import argparse

from seedvlm.options import positive_int


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("pope", help="build POPE question files",
                                   description="POPE question files (see docs/evaluation.md).")
    sub = parser.add_subparsers(dest="pope_command", metavar="ACTION", required=True)
    b = sub.add_parser("build", help="write POPE_DIR/{random,popular,adversarial}.jsonl (or {kind}.jsonl) + meta.json",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    b.add_argument("--instances", required=True, help="COCO-format instances JSON (COCO val2014 or the world's)")
    b.add_argument("--out", required=True,
                   help="output folder POPE_DIR: new, empty or an earlier POPE folder (replaced whole)")
    b.add_argument("--n-images", type=positive_int, default=500, help="images to sample, >= 1 (default 500)")
    b.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    b.add_argument("--kind", choices=("object", "color", "count", "relation"), default="object",
                   help="object existence (3 splits, default) or one attribute split")
    b.add_argument("--paraphrases", action="store_true",
                   help="add two rewordings per question (shared group_id) for a consistency rate")
    b.add_argument("--train-manifest", default=None, help="training manifest JSON; its images are refused")
    b.add_argument("--allow-overlap", action="store_true", help="allow images that are in the training manifest")
    b.add_argument("--format", choices=("pope", "mme"), default="pope",
                   help="pope: question files (default); mme: MME's four hallucination subsets in MME's layout "
                        "(images copied in; needs --images)")
    b.add_argument("--images", default=None, help="with --format mme: the folder of the instances' images")
    b.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from seedvlm.eval.pope import build_pope
    from seedvlm.eval.runner import check_leakage
    from seedvlm.io import atomic_path, write_json, write_jsonl
    from seedvlm.outputs import check_dir_target, owned_by

    if args.format == "mme":
        return _run_mme(args)
    check_dir_target(args.out, "--out", owns=owned_by("meta.json"))  # a POPE folder is replaced whole
    splits, meta = build_pope(args.instances, n_images=args.n_images, seed=args.seed, kind=args.kind,
                              paraphrases=args.paraphrases)
    leak = check_leakage(meta["images"], args.train_manifest, args.allow_overlap)
    if leak:
        meta["leakage"] = leak
    with atomic_path(args.out, owns=owned_by("meta.json")) as tmp:
        tmp.mkdir()
        for split, questions in splits.items():
            write_jsonl(tmp / f"{split}.jsonl", questions)
        write_json(tmp / "meta.json", meta)
    counts = ", ".join(f"{s}: {c['questions']}" for s, c in meta["counts"].items())
    print(f"wrote {args.out}: {meta['n_images']} images; {counts}")
    return 0


def _run_mme(args: argparse.Namespace) -> int:
    from seedvlm.errors import SeedVLMError
    from seedvlm.eval.mme_build import write_mme
    from seedvlm.eval.runner import check_leakage

    if not args.images:
        raise SeedVLMError("--format mme needs --images, the folder of the instances' images")
    if args.kind != "object" or args.paraphrases:
        raise SeedVLMError("--format mme writes MME's fixed subsets: --kind and --paraphrases do not apply")
    meta = write_mme(args.instances, args.images, args.out, n_images=args.n_images, seed=args.seed,
                     check=lambda names: check_leakage(names, args.train_manifest, args.allow_overlap))
    counts = ", ".join(f"{s}: {c['images']} images" for s, c in meta["counts"].items())
    print(f"wrote {args.out} (MME layout): {counts}")
    return 0
