"""The world's object categories (exact COCO 2017 names and ids), colors, scene types and word lists.

Everything here is plain data so that other parts of seedvlm (the tokenizer, POPE/CHAIR question builders) can
import it without numpy. Words are chosen so that CHAIR's synonym table (Rohrbach et al. 2018) maps each synonym
back to the right category, and no other word the world emits is a CHAIR synonym of anything (that is why there is
no "orange" color: "orange" is a COCO category).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from seedvlm.errors import SeedVLMError

# The 80 COCO 2017 categories: (id, name, supercategory). The world uses a subset (WORLD_CATEGORY_NAMES).
COCO_CATEGORIES: list[tuple[int, str, str]] = [
    (1, "person", "person"), (2, "bicycle", "vehicle"), (3, "car", "vehicle"), (4, "motorcycle", "vehicle"),
    (5, "airplane", "vehicle"), (6, "bus", "vehicle"), (7, "train", "vehicle"), (8, "truck", "vehicle"),
    (9, "boat", "vehicle"), (10, "traffic light", "outdoor"), (11, "fire hydrant", "outdoor"),
    (13, "stop sign", "outdoor"), (14, "parking meter", "outdoor"), (15, "bench", "outdoor"),
    (16, "bird", "animal"), (17, "cat", "animal"), (18, "dog", "animal"), (19, "horse", "animal"),
    (20, "sheep", "animal"), (21, "cow", "animal"), (22, "elephant", "animal"), (23, "bear", "animal"),
    (24, "zebra", "animal"), (25, "giraffe", "animal"), (27, "backpack", "accessory"),
    (28, "umbrella", "accessory"), (31, "handbag", "accessory"), (32, "tie", "accessory"),
    (33, "suitcase", "accessory"), (34, "frisbee", "sports"), (35, "skis", "sports"), (36, "snowboard", "sports"),
    (37, "sports ball", "sports"), (38, "kite", "sports"), (39, "baseball bat", "sports"),
    (40, "baseball glove", "sports"), (41, "skateboard", "sports"), (42, "surfboard", "sports"),
    (43, "tennis racket", "sports"), (44, "bottle", "kitchen"), (46, "wine glass", "kitchen"),
    (47, "cup", "kitchen"), (48, "fork", "kitchen"), (49, "knife", "kitchen"), (50, "spoon", "kitchen"),
    (51, "bowl", "kitchen"), (52, "banana", "food"), (53, "apple", "food"), (54, "sandwich", "food"),
    (55, "orange", "food"), (56, "broccoli", "food"), (57, "carrot", "food"), (58, "hot dog", "food"),
    (59, "pizza", "food"), (60, "donut", "food"), (61, "cake", "food"), (62, "chair", "furniture"),
    (63, "couch", "furniture"), (64, "potted plant", "furniture"), (65, "bed", "furniture"),
    (67, "dining table", "furniture"), (70, "toilet", "furniture"), (72, "tv", "electronic"),
    (73, "laptop", "electronic"), (74, "mouse", "electronic"), (75, "remote", "electronic"),
    (76, "keyboard", "electronic"), (77, "cell phone", "electronic"), (78, "microwave", "appliance"),
    (79, "oven", "appliance"), (80, "toaster", "appliance"), (81, "sink", "appliance"),
    (82, "refrigerator", "appliance"), (84, "book", "indoor"), (85, "clock", "indoor"), (86, "vase", "indoor"),
    (87, "scissors", "indoor"), (88, "teddy bear", "indoor"), (89, "hair drier", "indoor"),
    (90, "toothbrush", "indoor"),
]

# The 33 categories that exist in the world (each has a glyph in glyphs.py).
WORLD_CATEGORY_NAMES: list[str] = [
    "person", "bicycle", "car", "bus", "traffic light", "stop sign", "bird", "cat", "dog", "horse", "sheep", "cow",
    "bottle", "cup", "fork", "knife", "spoon", "bowl", "chair", "couch", "potted plant", "dining table", "toilet",
    "tv", "laptop", "mouse", "remote", "keyboard", "cell phone", "sink", "book", "clock", "toothbrush",
]

_COCO_BY_NAME = {name: (cid, sup) for cid, name, sup in COCO_CATEGORIES}

# COCO-style category dicts, sorted by id: {"id", "name", "supercategory"}.
CATEGORIES: list[dict] = sorted(
    ({"id": _COCO_BY_NAME[n][0], "name": n, "supercategory": _COCO_BY_NAME[n][1]} for n in WORLD_CATEGORY_NAMES),
    key=lambda c: c["id"],
)
CATEGORY_NAMES: list[str] = [c["name"] for c in CATEGORIES]
_BY_NAME = {c["name"]: c for c in CATEGORIES}
_BY_ID = {c["id"]: c for c in CATEGORIES}


def category_by_name(name: str) -> dict:
    """The COCO-style dict of a world category; unknown names raise SeedVLMError listing the known ones."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise SeedVLMError(f"unknown world category {name!r}; known: {', '.join(CATEGORY_NAMES)}") from None


def category_by_id(cid: int) -> dict:
    """The COCO-style dict of a world category by its COCO id."""
    try:
        return _BY_ID[int(cid)]
    except (KeyError, TypeError, ValueError):
        raise SeedVLMError(f"unknown world category id {cid!r}") from None


# Plural forms (the canonical name's plural is used in count questions).
PLURALS: dict[str, str] = {
    "person": "people", "bus": "buses", "knife": "knives", "mouse": "mice", "couch": "couches", "sheep": "sheep",
    "toothbrush": "toothbrushes", "puppy": "puppies", "pony": "ponies", "man": "men", "woman": "women",
    "calf": "calves", "sofa": "sofas",
}


def plural(word: str) -> str:
    """Plural of a (possibly two-word) noun of the world's vocabulary."""
    head, _, last = word.rpartition(" ")
    p = PLURALS.get(last, last + "s")
    return f"{head} {p}" if head else p


# Synonyms that CHAIR maps back to the category (first entry is the COCO name). Kept small on purpose: the
# project's tokenizer is word-level and built from world_vocabulary().
SYNONYMS: dict[str, list[str]] = {
    "person": ["person", "man", "woman"],
    "bicycle": ["bicycle", "bike"],
    "car": ["car"],
    "bus": ["bus"],
    "traffic light": ["traffic light", "traffic signal"],
    "stop sign": ["stop sign"],
    "bird": ["bird"],
    "cat": ["cat", "kitten"],
    "dog": ["dog", "puppy"],
    "horse": ["horse", "pony"],
    "sheep": ["sheep", "lamb"],
    "cow": ["cow", "calf"],
    "bottle": ["bottle"],
    "cup": ["cup"],
    "fork": ["fork"],
    "knife": ["knife"],
    "spoon": ["spoon"],
    "bowl": ["bowl"],
    "chair": ["chair"],
    "couch": ["couch", "sofa"],
    "potted plant": ["potted plant", "houseplant"],
    "dining table": ["dining table", "table"],
    "toilet": ["toilet"],
    "tv": ["tv", "television"],
    "laptop": ["laptop", "computer"],
    "mouse": ["mouse"],
    "remote": ["remote"],
    "keyboard": ["keyboard"],
    "cell phone": ["cell phone", "phone", "cellphone"],
    "sink": ["sink"],
    "book": ["book"],
    "clock": ["clock"],
    "toothbrush": ["toothbrush"],
}

# Object colors: an attribute, never the identity cue. No "orange" (a COCO category, so CHAIR would count it).
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 225),
    "yellow": (240, 215, 40),
    "purple": (150, 60, 190),
    "pink": (245, 135, 190),
    "white": (245, 245, 245),
    "black": (25, 25, 25),
}
COLOR_NAMES: list[str] = list(COLORS)

NUMBER_WORDS: list[str] = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]


@dataclass(frozen=True)
class SceneType:
    """A scene type: its background style and its object distribution.

    objects: category name -> sampling weight of an in-scene object.
    pairs: strong pairs; when one member is drawn, the other is added with probability `pair_rate`.
    background: the style rendered by scenes.py (base color, texture, accent color).
    """

    name: str
    objects: dict[str, float]
    pairs: tuple[tuple[str, str], ...]
    background: dict = field(default_factory=dict)
    pair_rate: float = 0.9

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "background": dict(self.background),
            "objects": dict(self.objects),
            "pairs": [list(p) for p in self.pairs],
            "pair_rate": self.pair_rate,
        }

    def partner(self, name: str) -> str | None:
        for a, b in self.pairs:
            if name == a:
                return b
            if name == b:
                return a
        return None


SCENES: list[SceneType] = [
    SceneType(
        "kitchen",
        {"fork": 3.0, "knife": 3.0, "bowl": 2.0, "spoon": 2.0, "cup": 2.0, "bottle": 1.5, "dining table": 1.5},
        (("fork", "knife"), ("bowl", "spoon")),
        {"texture": "checker", "base": [206, 188, 150], "accent": [186, 166, 128], "period": 16},
    ),
    SceneType(
        "street",
        {"car": 3.0, "traffic light": 3.0, "bicycle": 2.0, "person": 2.0, "stop sign": 1.5, "bus": 1.5},
        (("car", "traffic light"), ("bicycle", "person")),
        {"texture": "road", "base": [112, 112, 118], "accent": [150, 150, 146], "period": 16},
    ),
    SceneType(
        "living room",
        {"couch": 3.0, "tv": 3.0, "remote": 1.5, "potted plant": 1.5, "cat": 1.5, "clock": 1.5},
        (("couch", "tv"),),
        {"texture": "vstripes", "base": [150, 108, 92], "accent": [136, 96, 82], "period": 12},
    ),
    SceneType(
        "office",
        {"keyboard": 3.0, "mouse": 3.0, "laptop": 2.0, "cell phone": 1.5, "book": 1.5, "chair": 1.5},
        (("keyboard", "mouse"),),
        {"texture": "grid", "base": [168, 178, 196], "accent": [146, 156, 176], "period": 12},
    ),
    SceneType(
        "farm",
        {"cow": 3.0, "horse": 3.0, "sheep": 2.5, "dog": 2.5, "bird": 1.5},
        (("cow", "horse"), ("sheep", "dog")),
        {"texture": "field", "base": [104, 150, 82], "accent": [150, 190, 222], "period": 16},
    ),
    SceneType(
        "bathroom",
        {"toilet": 3.0, "sink": 3.0, "toothbrush": 2.0, "bottle": 1.5, "cup": 1.5},
        (("toilet", "sink"),),
        {"texture": "tiles", "base": [166, 210, 212], "accent": [226, 238, 238], "period": 8},
    ),
]
SCENE_NAMES: list[str] = [s.name for s in SCENES]
_SCENE_BY_NAME = {s.name: s for s in SCENES}


def scene_by_name(name: str) -> SceneType:
    try:
        return _SCENE_BY_NAME[name]
    except KeyError:
        raise SeedVLMError(f"unknown scene type {name!r}; known: {', '.join(SCENE_NAMES)}") from None


def strong_pairs() -> list[tuple[str, str, str]]:
    """All strong pairs as (scene, a, b)."""
    return [(s.name, a, b) for s in SCENES for a, b in s.pairs]


def partners_of(name: str) -> list[str]:
    """The strong-pair partners of a category over all scenes (a category may be paired in several scenes)."""
    out = []
    for s in SCENES:
        p = s.partner(name)
        if p is not None and p not in out:
            out.append(p)
    return out


def _check_tables() -> None:
    for n in WORLD_CATEGORY_NAMES:
        assert n in _COCO_BY_NAME, n
        assert n in SYNONYMS and SYNONYMS[n][0] == n, n
    for s in SCENES:
        for n in s.objects:
            assert n in _BY_NAME, (s.name, n)
        for a, b in s.pairs:
            assert a in s.objects and b in s.objects, (s.name, a, b)


_check_tables()
