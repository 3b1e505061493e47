"""Writing a world dataset: images, COCO instances/captions, LLaVA-Instruct records and world.json.

The whole folder is written into a temp folder beside the destination and renamed at the end (seedvlm.io
.atomic_path), so an interrupted run leaves no partial dataset. Every random choice comes from generators seeded
by (seed, split, image index), so the same seed gives the same bytes in every file, and the val split does not
depend on --train.
"""

from __future__ import annotations

import dataclasses
import io
import json
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from seedvlm.config import field_
from seedvlm.errors import SeedVLMError
from seedvlm.io import atomic_path, read_json
from seedvlm.world.categories import (
    CATEGORIES,
    COLORS,
    SCENES,
    category_by_name,
    partners_of,
    strong_pairs,
)
from seedvlm.world.scenes import MIN_SIZE, Scene, render_scene, sample_scene
from seedvlm.world.text import (
    absent_partners,
    captions,
    conversation,
    describe,
    detail_prompt,
    qa_turns,
    world_vocabulary,
)

FORMAT = "seedvlm-world"
FORMAT_VERSION = 1
SPLITS = ("train", "val")
_SPLIT_CODE = {"train": 1, "val": 2}
_VAL_ID_OFFSET = 1_000_000  # val image ids are 1_000_001.. so ids never collide across splits
MAX_IMAGES = 999_999
PNG_COMPRESS_LEVEL = 1  # fixed, so the PNG bytes are reproducible; 1 is fast and small enough at 64 px


@dataclass
class WorldConfig:
    train: int = field_(4000, "number of training images")
    val: int = field_(500, "number of validation images (text exact and clean: no injected hallucination)")
    size: int = field_(64, "image side in pixels (>= 32); object sizes scale with it")
    seed: int = field_(0, "random seed (>= 0); the same seed gives identical files")
    hallucination_rate: float = field_(
        0.2, "fraction of TRAIN detailed descriptions that mention one absent partner object as if present")
    off_scene_rate: float = field_(
        0.3, "fraction of object instances drawn from categories outside their scene's list (train and val)")
    occlusion_rate: float = field_(0.15, "probability that an object is partly hidden by a background patch")
    hard_negatives: float = field_(
        0.1, "fraction of the yes/no questions' negatives that ask about a co-occurring absent object (the rest: "
             "a random absent one); real instruct data has few, which is why models fail adversarial probes "
             "(0.5 = one of two negatives, the layout before this option existed)")
    min_objects: int = field_(2, "fewest objects in an image")
    max_objects: int = field_(6, "most objects in an image")

    def validate(self) -> "WorldConfig":
        """Raise SeedVLMError naming the bad option."""
        for name in ("train", "val", "size", "seed", "min_objects", "max_objects"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise SeedVLMError(f"--{name.replace('_', '-')} must be an integer, got {v!r}")
        for name in ("train", "val"):
            v = getattr(self, name)
            if v < 0:
                raise SeedVLMError(f"--{name} must be >= 0, got {v}")
            if v > MAX_IMAGES:
                raise SeedVLMError(f"--{name} must be <= {MAX_IMAGES}, got {v}")
        if self.train + self.val == 0:
            raise SeedVLMError("--train and --val are both 0: nothing to generate")
        if self.size < MIN_SIZE:
            raise SeedVLMError(f"--size must be >= {MIN_SIZE} px, got {self.size}")
        if self.size > 1024:
            raise SeedVLMError(f"--size must be <= 1024 px, got {self.size}")
        if self.seed < 0:
            raise SeedVLMError(f"--seed must be >= 0, got {self.seed}")
        for name in ("hallucination_rate", "off_scene_rate", "occlusion_rate", "hard_negatives"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= float(v) <= 1.0:
                raise SeedVLMError(f"--{name.replace('_', '-')} must be a number in [0, 1], got {v!r}")
        if not 1 <= self.min_objects <= self.max_objects <= 8:
            raise SeedVLMError(f"need 1 <= --min-objects <= --max-objects <= 8, got {self.min_objects}, "
                               f"{self.max_objects}")
        return self


# --------------------------------------------------------------------------------------------- planning (no I/O)

def image_id(split: str, idx: int) -> int:
    return idx + 1 + (_VAL_ID_OFFSET if split == "val" else 0)


def file_name(split: str, idx: int) -> str:
    return f"{split}_{idx:06d}.png"


def _rng(cfg: WorldConfig, split: str, idx: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([int(cfg.seed), _SPLIT_CODE[split], int(idx), stream])


def sample_split(cfg: WorldConfig, split: str, n: int | None = None) -> list[Scene]:
    """The scenes of a split (layout only, nothing rendered or written). Image i depends only on (seed, split, i)."""
    n = (cfg.train if split == "train" else cfg.val) if n is None else n
    return [sample_scene(_rng(cfg, split, i, 0), cfg.size, off_scene_rate=cfg.off_scene_rate,
                         occlusion_rate=cfg.occlusion_rate, min_objects=cfg.min_objects,
                         max_objects=cfg.max_objects) for i in range(n)]


def choose_injections(cfg: WorldConfig, scenes: list[Scene]) -> dict[int, str]:
    """{image index: absent partner name} for round(rate * N) training images, chosen at random among the images
    that have an absent partner of a present object (others cannot carry a co-occurrence hallucination)."""
    eligible = [i for i, sc in enumerate(scenes) if absent_partners(sc)]
    k = min(len(eligible), int(round(cfg.hallucination_rate * len(scenes))))
    if k == 0:
        return {}
    rng = np.random.default_rng([int(cfg.seed), 99, len(scenes)])
    chosen = sorted(int(i) for i in rng.choice(np.asarray(eligible), size=k, replace=False))
    out = {}
    for i in chosen:
        cands = absent_partners(scenes[i])
        out[i] = cands[int(_rng(cfg, "train", i, 2).integers(0, len(cands)))]
    return out


def pair_stats(scenes: list[Scene]) -> list[dict]:
    """Measured co-occurrence of each strong pair.

    together_rate: among images of the pair's scene type where a or b appears as an in-scene object, the fraction
    where both do (p_b_given_a / p_a_given_b likewise). together_rate_all: the same over all images and all
    instances, off-scene ones included (off-scene objects come alone, so this is lower)."""
    out = []
    for scene_name, a, b in strong_pairs():
        na = nb = nab = nany = 0
        ma = mb = mab = many = 0
        for sc in scenes:
            names_all = sc.names
            ha_all, hb_all = a in names_all, b in names_all
            ma += ha_all
            mb += hb_all
            mab += ha_all and hb_all
            many += ha_all or hb_all
            if sc.scene_type != scene_name:
                continue
            ins = {o.name for o in sc.objects if not o.off_scene}
            ha, hb = a in ins, b in ins
            na += ha
            nb += hb
            nab += ha and hb
            nany += ha or hb

        def r(x, y):
            return round(x / y, 4) if y else None

        out.append({"scene": scene_name, "a": a, "b": b, "images_with_either": nany, "images_with_both": nab,
                    "together_rate": r(nab, nany), "p_b_given_a": r(nab, na), "p_a_given_b": r(nab, nb),
                    "together_rate_all": r(mab, many)})
    return out


def split_counts(scenes: list[Scene]) -> dict:
    inst = [o for sc in scenes for o in sc.objects]
    n = len(inst)
    return {
        "images": len(scenes),
        "instances": n,
        "off_scene_instances": sum(o.off_scene for o in inst),
        "off_scene_rate": round(sum(o.off_scene for o in inst) / n, 4) if n else 0.0,
        "occluded_rate": round(sum(o.occluded for o in inst) / n, 4) if n else 0.0,
        "objects_per_image": round(n / len(scenes), 3) if scenes else 0.0,
        "per_scene": dict(sorted(Counter(sc.scene_type for sc in scenes).items())),
        "per_category": dict(sorted(Counter(o.name for o in inst).items())),
    }


# ----------------------------------------------------------------------------------------------------- writing

def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise SeedVLMError(f"output {out} exists and is not a folder")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise SeedVLMError(f"cannot create {out}: {parent} is not a folder")
            break
    if out.is_dir() and any(out.iterdir()) and not (out / "world.json").is_file():
        raise SeedVLMError(f"output folder {out} is not empty and holds no world.json; refusing to replace it "
                           f"(give a new or empty folder, or an existing world to regenerate)")


def _dumps(obj, indent=None) -> str:
    return json.dumps(obj, ensure_ascii=False, indent=indent) + "\n"


def _png_bytes(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img, "RGB").save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buf.getvalue()


def _info(split: str) -> dict:
    return {"description": f"seedvlm embedded synthetic world, {split} split", "version": str(FORMAT_VERSION),
            "contributor": "seedvlm world generator", "url": "", "year": 0, "date_created": ""}


def _write_split(cfg: WorldConfig, split: str, scenes: list[Scene], inject: dict[int, str], root: Path,
                 bar) -> tuple[list[dict], dict]:
    img_dir = root / "images" / split
    img_dir.mkdir(parents=True)
    images, anns, caps, instruct, injections = [], [], [], [], []
    ann_id = cap_id = 0
    for i, sc in enumerate(scenes):
        iid, fname = image_id(split, i), file_name(split, i)
        (img_dir / fname).write_bytes(_png_bytes(render_scene(sc)))
        images.append({"id": iid, "file_name": fname, "width": cfg.size, "height": cfg.size,
                       "scene": sc.scene_type})
        for o in sc.objects:
            ann_id += 1
            anns.append({"id": ann_id, "image_id": iid, "category_id": o.category_id, "bbox": list(o.bbox),
                         "area": int(o.area), "iscrowd": 0, "color": o.color, "occluded": bool(o.occluded),
                         "off_scene": bool(o.off_scene)})
        rng = _rng(cfg, split, i, 1)
        for c in captions(sc, rng):
            cap_id += 1
            caps.append({"id": cap_id, "image_id": iid, "caption": c})
        stem = fname[:-4]
        fake = inject.get(i)
        instruct.append({"id": f"{stem}_detail", "image": fname, "conversations": [
            {"from": "human", "value": "<image>\n" + detail_prompt(rng)},
            {"from": "gpt", "value": describe(sc, rng, inject=fake)},
        ]})
        if fake is not None:
            injections.append({"image_id": iid, "record_id": f"{stem}_detail", "category_id":
                               category_by_name(fake)["id"], "name": fake,
                               "partner_of": sorted(n for n in sc.names if fake in partners_of(n))})
        turns = qa_turns(sc, rng, cfg.hard_negatives)
        instruct.append({"id": f"{stem}_conv", "image": fname, "conversations": conversation(turns)})
        if bar is not None:
            bar.update(1)
    (root / f"instances_{split}.json").write_text(_dumps({
        "info": _info(split), "licenses": [], "images": images, "annotations": anns,
        "categories": [dict(c) for c in CATEGORIES]}), encoding="utf-8")
    (root / f"captions_{split}.json").write_text(_dumps({
        "info": _info(split), "licenses": [], "images": images, "annotations": caps}), encoding="utf-8")
    (root / f"instruct_{split}.json").write_text(_dumps(instruct), encoding="utf-8")
    return injections, {"captions": len(caps), "instruct_records": len(instruct)}


def split_files(split: str) -> dict:
    return {"images": f"images/{split}", "instances": f"instances_{split}.json",
            "captions": f"captions_{split}.json", "instruct": f"instruct_{split}.json"}


def generate_world(cfg: WorldConfig, out_dir, *, progress: bool = False) -> dict:
    """Generate the world into `out_dir` (atomically) and return a summary dict (counts, measured rates, speed).

    Refuses an output that is a file, or a non-empty folder that is not a world (an existing world is replaced).
    """
    cfg.validate()
    out = Path(out_dir)
    _check_out(out)
    t0 = time.perf_counter()
    plans = {s: sample_split(cfg, s) for s in SPLITS}
    inject = {"train": choose_injections(cfg, plans["train"]), "val": {}}
    bar = None
    if progress:
        bar = tqdm(total=cfg.train + cfg.val, desc="world", unit="img", mininterval=0.5)
    injections: list[dict] = []
    extra = {}
    try:
        with atomic_path(out) as tmp:
            tmp.mkdir()
            for split in SPLITS:
                inj, extra[split] = _write_split(cfg, split, plans[split], inject[split], tmp, bar)
                injections.extend(inj)
            counts = {s: {**split_counts(plans[s]), **extra[s]} for s in SPLITS}
            n_train = cfg.train
            eligible = sum(1 for sc in plans["train"] if absent_partners(sc))
            world = {
                "format": FORMAT,
                "version": FORMAT_VERSION,
                "config": dataclasses.asdict(cfg),
                "files": {s: split_files(s) for s in SPLITS},
                "categories": [dict(c) for c in CATEGORIES],
                "colors": {k: list(v) for k, v in COLORS.items()},
                "scenes": [s.to_dict() for s in SCENES],
                "strong_pairs": pair_stats(plans["train"]),
                "counts": counts,
                "hallucination": {
                    "rate_setting": cfg.hallucination_rate,
                    "measured_rate": round(len(injections) / n_train, 4) if n_train else 0.0,
                    "injected": len(injections),
                    "eligible_train_images": eligible,
                    "val_injected": 0,
                },
                "injections": injections,
                "vocabulary": world_vocabulary(),
            }
            (tmp / "world.json").write_text(_dumps(world, indent=1), encoding="utf-8")
    finally:
        if bar is not None:
            bar.close()
    dt = time.perf_counter() - t0
    n_img = cfg.train + cfg.val
    return {
        "out": str(out),
        "images": {s: counts[s]["images"] for s in SPLITS},
        "instances": {s: counts[s]["instances"] for s in SPLITS},
        "off_scene_rate": {s: counts[s]["off_scene_rate"] for s in SPLITS},
        "occluded_rate": {s: counts[s]["occluded_rate"] for s in SPLITS},
        "hallucination": world["hallucination"],
        "strong_pairs": world["strong_pairs"],
        "vocabulary_size": len(world["vocabulary"]),
        "seconds": round(dt, 3),
        "images_per_second": round(n_img / dt, 1) if dt > 0 else None,
    }


_REQUIRED_KEYS = ("format", "config", "files", "categories", "scenes", "strong_pairs", "counts", "hallucination",
                  "injections")


def load_world(world_dir) -> dict:
    """Read DIR/world.json and check that the files it lists exist.

    Raises SeedVLMError naming the folder or file when the folder, world.json or a listed file is missing, or
    when world.json is malformed. The returned dict is world.json plus "root" (the folder, as a string).
    """
    root = Path(world_dir)
    if not root.is_dir():
        raise SeedVLMError(f"world folder not found: {root} (make one with `seedvlm world --out {root}`)")
    path = root / "world.json"
    w = read_json(path, what="world description")
    if not isinstance(w, dict):
        raise SeedVLMError(f"malformed world description {path}: expected a JSON object, got {type(w).__name__}")
    missing = [k for k in _REQUIRED_KEYS if k not in w]
    if missing:
        raise SeedVLMError(f"malformed world description {path}: missing key(s) {missing}")
    if w.get("format") != FORMAT:
        raise SeedVLMError(f"malformed world description {path}: format is {w.get('format')!r}, not {FORMAT!r}")
    files = w["files"]
    if not isinstance(files, dict) or not all(isinstance(v, dict) for v in files.values()):
        raise SeedVLMError(f"malformed world description {path}: 'files' must map split -> file names")
    cats = w["categories"]
    if not isinstance(cats, list) or not all(isinstance(c, dict) and "id" in c and "name" in c for c in cats):
        raise SeedVLMError(f"malformed world description {path}: 'categories' must be a list of {{id, name}}")
    for split, entries in files.items():
        for kind, rel in entries.items():
            p = root / str(rel)
            ok = p.is_dir() if kind == "images" else p.is_file()
            if not ok:
                raise SeedVLMError(f"world file missing: {p} ({kind} of the {split} split, listed in {path})")
    w["root"] = str(root)
    return w
