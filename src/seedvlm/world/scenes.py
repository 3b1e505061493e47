"""Sampling scenes (which objects, where, what color, what is hidden) and rendering them to RGB arrays.

`sample_scene` decides everything and computes each object's visible pixels (so `bbox`, `area` and `occluded`
are exact before any image exists); `render_scene` paints the background, the glyphs in order, then the
background-colored occluding patches. All geometry is in pixels of `scene.size`; sizes scale with it
(an object's geometric size sqrt(w*h) is 10-20 px at 64 px, its longer side at most 26 px).
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, field

import numpy as np
from PIL import Image

from seedvlm.errors import SeedVLMError
from seedvlm.world.categories import (
    CATEGORY_NAMES,
    COLOR_NAMES,
    SCENES,
    SceneType,
    category_by_name,
    scene_by_name,
)
from seedvlm.world.glyphs import color_tones, glyph_masks, glyph_size

MIN_SIZE = 32
MIN_VISIBLE = 0.6  # every object keeps at least this fraction of its pixels visible
_MAX_PER_CATEGORY = 3  # in-scene instances of one category in one image


@dataclass
class SceneObject:
    category_id: int
    name: str
    color: str
    bbox: list[int]  # [x, y, w, h] of the visible pixels (outline included), COCO convention
    occluded: bool = False
    off_scene: bool = False
    area: int = 0  # visible pixels
    glyph_box: list[int] = field(default_factory=list)  # [x, y, w, h] of the whole drawn glyph

    @property
    def center_x(self) -> float:
        return self.bbox[0] + self.bbox[2] / 2.0


@dataclass
class Scene:
    scene_type: str | None  # None for the uniform (broad pretraining) sampler
    background: str  # the scene type whose background style is drawn
    objects: list[SceneObject]
    size: int = 64
    occluders: list[list[int]] = field(default_factory=list)  # background patches [x, y, w, h], drawn last

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def names(self) -> set[str]:
        return {o.name for o in self.objects}


def _as_rng(rng) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or isinstance(rng, (int, np.integer)):
        return np.random.default_rng(rng)
    raise TypeError(f"rng must be a numpy Generator or an int seed, got {type(rng).__name__}")


def _check_size(size: int) -> int:
    if not isinstance(size, (int, np.integer)) or isinstance(size, bool):
        raise SeedVLMError(f"image size must be an integer number of pixels, got {size!r}")
    if size < MIN_SIZE:
        raise SeedVLMError(f"image size must be at least {MIN_SIZE} px, got {size}")
    return int(size)


# ---------------------------------------------------------------------------------------------------- sampling

def _weighted_choice(rng: np.random.Generator, names: list[str], weights: list[float]) -> str:
    w = np.asarray(weights, float)
    return names[int(rng.choice(len(names), p=w / w.sum()))]


def _in_scene_objects(rng: np.random.Generator, st: SceneType, k: int) -> list[str]:
    """k in-scene category names drawn from the scene's distribution; a drawn pair member brings its partner
    with probability pair_rate when there is room (and a lone slot is not given to an unpartnered member)."""
    out: list[str] = []
    names = list(st.objects)
    while len(out) < k:
        room = k - len(out)
        feasible = []
        for n in names:
            if out.count(n) >= _MAX_PER_CATEGORY:
                continue
            p = st.partner(n)
            if room == 1 and p is not None and p not in out and n not in out:
                continue  # would leave a pair member alone
            feasible.append(n)
        if not feasible:
            feasible = [n for n in names if out.count(n) < _MAX_PER_CATEGORY] or names
        c = _weighted_choice(rng, feasible, [st.objects[n] for n in feasible])
        out.append(c)
        p = st.partner(c)
        if p is not None and p not in out and len(out) < k and rng.random() < st.pair_rate:
            out.append(p)
    return out


def _choose_categories(rng, st: SceneType | None, n: int, off_scene_rate: float, uniform: bool):
    """[(name, off_scene)] for one image."""
    if uniform or st is None:
        return [(CATEGORY_NAMES[int(i)], False) for i in rng.integers(0, len(CATEGORY_NAMES), size=n)]
    k_off = int((rng.random(n) < off_scene_rate).sum())
    ins = _in_scene_objects(rng, st, n - k_off)
    others = [c for c in CATEGORY_NAMES if c not in st.objects]
    offs = [others[int(i)] for i in rng.integers(0, len(others), size=k_off)]
    items = [(c, False) for c in ins] + [(c, True) for c in offs]
    order = rng.permutation(len(items))
    return [items[int(i)] for i in order]


def _place(rng, labels: np.ndarray, vis: list[int], full: list[int], name: str, s_lo: float, s_hi: float,
           cap: float, size: int, idx: int):
    """Find a position for glyph `name`; returns (x, y, w, h) of the inner glyph or None.

    The first attempts insist on no overlap at all; later ones accept covering earlier objects as long as each
    keeps MIN_VISIBLE + 0.1 of its pixels (the occluding patches take the rest of the margin).
    """
    s = float(rng.uniform(s_lo, s_hi))
    for attempt in range(80):
        if attempt and attempt % 20 == 0:
            s = max(s_lo * 0.8, s * 0.85)
        w, h = glyph_size(name, s, cap)
        W, H = w + 2, h + 2
        if W > size or H > size:
            continue
        x = int(rng.integers(0, size - W + 1))
        y = int(rng.integers(0, size - H + 1))
        anym = glyph_masks(name, w, h)[3]
        covered = labels[y:y + H, x:x + W][anym]
        hit = covered[covered >= 0]
        if hit.size:
            if attempt < 30:
                continue
            ids, cnt = np.unique(hit, return_counts=True)
            if any(vis[i] - c < (MIN_VISIBLE + 0.1) * full[i] for i, c in zip(ids.tolist(), cnt.tolist())):
                continue
            for i, c in zip(ids.tolist(), cnt.tolist()):
                vis[i] -= c
        labels[y:y + H, x:x + W][anym] = idx
        return x, y, w, h
    return None


def sample_scene(rng=None, size: int = 64, uniform: bool = False, *, scene_type: str | None = None,
                 off_scene_rate: float = 0.3, occlusion_rate: float = 0.15, min_objects: int = 2,
                 max_objects: int = 6) -> Scene:
    """Sample one scene.

    rng: a numpy Generator (or an int seed). size: image side in pixels (>= 32).
    uniform=False: a scene type (random, or `scene_type`) with its object distribution and strong pairs; each
      object slot is off-scene (a category outside the scene's list) with probability `off_scene_rate`.
    uniform=True: objects drawn uniformly over all categories with no pairing, background random among the
      scene styles, `scene_type` None (the broad pretraining corpus of the staged base recipe, docs/base_model.md).
    Each object is partly hidden by a background-colored patch with probability `occlusion_rate`; objects may
    also cover each other, but every object keeps >= 60% of its pixels visible.
    """
    rng = _as_rng(rng)
    size = _check_size(size)
    if not 1 <= min_objects <= max_objects:
        raise SeedVLMError(f"need 1 <= min_objects <= max_objects, got {min_objects}, {max_objects}")
    if uniform:
        st = None
        background = SCENES[int(rng.integers(0, len(SCENES)))].name
    else:
        st = scene_by_name(scene_type) if scene_type else SCENES[int(rng.integers(0, len(SCENES)))]
        background = st.name
    n = int(rng.integers(min_objects, max_objects + 1))
    chosen = _choose_categories(rng, st, n, off_scene_rate, uniform)

    f = size / 64.0
    lo, hi, cap = 10.0 * f, 20.0 * f, 26.0 * f
    hi_eff = max(lo, min(hi, float(np.sqrt(0.4 * size * size / max(n, 1)))))
    labels = np.full((size, size), -1, np.int16)
    vis: list[int] = []
    full: list[int] = []
    placed = []
    for name, off in chosen:
        pos = _place(rng, labels, vis, full, name, lo, hi_eff, cap, size, len(placed))
        if pos is None:  # the image is too crowded: leave this object out (rare; the text follows the objects)
            continue
        cnt = glyph_masks(name, pos[2], pos[3])[4]
        vis.append(cnt)
        full.append(cnt)
        color = COLOR_NAMES[int(rng.integers(0, len(COLOR_NAMES)))]
        placed.append((name, off, color, pos))

    occluders: list[list[int]] = []
    for i, (name, _, _, (x, y, w, h)) in enumerate(placed):
        if rng.random() >= occlusion_rate:
            continue
        W, H = w + 2, h + 2
        side = int(rng.integers(0, 4))
        frac = float(rng.uniform(0.25, 0.4))
        for _ in range(3):
            if side == 0:  # left strip
                rect = [x, y, max(1, round(W * frac)), H]
            elif side == 1:  # right
                pw = max(1, round(W * frac))
                rect = [x + W - pw, y, pw, H]
            elif side == 2:  # top
                rect = [x, y, W, max(1, round(H * frac))]
            else:  # bottom
                ph = max(1, round(H * frac))
                rect = [x, y + H - ph, W, ph]
            rx, ry, rw, rh = rect
            hit = labels[ry:ry + rh, rx:rx + rw]
            hit = hit[hit >= 0]
            ids, cnt = np.unique(hit, return_counts=True)
            if all(vis[j] - c >= MIN_VISIBLE * full[j] for j, c in zip(ids.tolist(), cnt.tolist())):
                for j, c in zip(ids.tolist(), cnt.tolist()):
                    vis[j] -= c
                labels[ry:ry + rh, rx:rx + rw] = -1
                occluders.append(rect)
                break
            frac *= 0.6

    objects = []
    for i, (name, off, color, (x, y, w, h)) in enumerate(placed):
        sub = labels[y:y + h + 2, x:x + w + 2] == i
        rows = np.flatnonzero(sub.any(axis=1))
        cols = np.flatnonzero(sub.any(axis=0))
        area = int(sub.sum())
        bbox = [x + int(cols[0]), y + int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)]
        objects.append(SceneObject(
            category_id=category_by_name(name)["id"], name=name, color=color, bbox=bbox,
            occluded=area < full[i], off_scene=bool(off), area=area, glyph_box=[x, y, w + 2, h + 2],
        ))
    return Scene(scene_type=None if uniform else st.name, background=background, objects=objects, size=size,
                 occluders=occluders)


# --------------------------------------------------------------------------------------------------- rendering

@functools.lru_cache(maxsize=64)
def background_image(style: str, size: int) -> np.ndarray:
    """The background of a scene style at a size: (size, size, 3) uint8, read-only (copy before drawing)."""
    st = scene_by_name(style)
    bg = st.background
    base = np.array(bg["base"], np.int16)
    acc = np.array(bg["accent"], np.int16)
    f = size / 64.0
    period = max(2, round(bg["period"] * f))
    yy, xx = np.mgrid[0:size, 0:size]
    img = np.empty((size, size, 3), np.int16)
    img[:] = base
    tex = bg["texture"]
    if tex == "checker":
        on = ((yy // period + xx // period) % 2) == 1
        img[on] = acc
    elif tex == "road":
        img[yy < round(0.25 * size)] = acc  # sidewalk
        img[(yy >= round(0.25 * size)) & (yy < round(0.25 * size) + max(1, round(f)))] = base - 25  # curb
        lane = (np.abs(yy - round(0.7 * size)) < max(1, round(f))) & ((xx // period) % 2 == 0)
        img[lane] = base + 40
    elif tex == "vstripes":
        img[(xx // (period // 2 or 1)) % 2 == 1] = acc
    elif tex == "grid":
        lw = max(1, round(f))
        img[((yy % period) < lw) | ((xx % period) < lw)] = acc
    elif tex == "field":
        img[yy < round(0.22 * size)] = acc  # sky
        noise = np.random.default_rng(12345).integers(-10, 11, size=(size, size, 1))
        grass = yy >= round(0.22 * size)
        img[grass] = (base + noise)[grass]
    elif tex == "tiles":
        lw = max(1, round(f))
        img[((yy % period) < lw) | ((xx % period) < lw)] = acc
    else:  # pragma: no cover
        raise ValueError(f"unknown texture {tex!r}")
    out = np.clip(img, 0, 255).astype(np.uint8)
    out.setflags(write=False)
    return out


def render_scene(scene: Scene, size: int | None = None) -> np.ndarray:
    """Render a scene to an (H, W, 3) uint8 RGB array. `size` defaults to scene.size; another size renders at
    scene.size and resizes (nearest neighbour), since all positions are in scene.size pixels."""
    S = scene.size
    bg = background_image(scene.background, S)
    img = bg.copy()
    for o in scene.objects:
        x, y, W, H = o.glyph_box
        body, det, ring, _, _ = glyph_masks(o.name, W - 2, H - 2)
        bc, dc, oc = color_tones(o.color)
        reg = img[y:y + H, x:x + W]
        reg[body] = bc
        reg[det] = dc
        reg[ring] = oc
    for x, y, w, h in scene.occluders:
        img[y:y + h, x:x + w] = bg[y:y + h, x:x + w]
    if size is not None and int(size) != S:
        size = _check_size(int(size))
        img = np.asarray(Image.fromarray(img).resize((size, size), Image.NEAREST))
    return img
