"""Glyphs: one distinct drawing per category (silhouette + internal detail), rendered as small label masks.

A glyph is a list of drawing operations in coordinates normalized to its box (0..1 across, 0..1 down), painted in
order onto a label mask: 0 = empty, 1 = body (drawn in the instance's color), 2 = detail (drawn in a contrasting
dark or light tone, so the pattern is visible whatever the color). A one-pixel outline (label 3) is added around
the shape. Masks are cached per (category, width, height), so rendering a scene is a few numpy assignments.

Identity is carried by the silhouette, the aspect ratio and the detail layout; color never identifies an object.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from PIL import Image, ImageDraw

from seedvlm.world.categories import COLORS, WORLD_CATEGORY_NAMES

B, D, E = 1, 2, 0  # body, detail, erase


def _stripes(x0, y0, x1, y1, n, v=D):
    """n horizontal bars of label v evenly spread over a region (half duty)."""
    h = (y1 - y0) / (2 * n - 1)
    return [("rect", v, x0, y0 + 2 * i * h, x1, y0 + (2 * i + 1) * h) for i in range(n)]


def _vstripes(x0, y0, x1, y1, n, v=D):
    w = (x1 - x0) / (2 * n - 1)
    return [("rect", v, x0 + 2 * i * w, y0, x0 + (2 * i + 1) * w, y1) for i in range(n)]


# name -> (aspect = width / height, ops). Ops: ("rect"|"ellipse", label, x0, y0, x1, y1), ("poly", label, points),
# ("line", label, x0, y0, x1, y1, width as a fraction of the shorter side), ("checker", label, x0, y0, x1, y1, n).
GLYPHS: dict[str, tuple[float, list]] = {
    "person": (0.55, [
        ("poly", B, [(0.08, 0.28), (0.92, 0.28), (0.78, 0.66), (0.22, 0.66)]),
        ("rect", B, 0.22, 0.6, 0.44, 1.0), ("rect", B, 0.56, 0.6, 0.78, 1.0),
        ("ellipse", D, 0.25, 0.0, 0.75, 0.27),
    ]),
    "bicycle": (1.75, [
        ("ellipse", B, 0.0, 0.36, 0.4, 1.0), ("ellipse", E, 0.12, 0.56, 0.28, 0.8),
        ("ellipse", B, 0.6, 0.36, 1.0, 1.0), ("ellipse", E, 0.72, 0.56, 0.88, 0.8),
        ("line", D, 0.2, 0.68, 0.48, 0.22, 0.16), ("line", D, 0.48, 0.22, 0.8, 0.68, 0.16),
        ("rect", B, 0.36, 0.0, 0.58, 0.2), ("rect", B, 0.72, 0.0, 0.84, 0.5),
    ]),
    "car": (2.0, [
        ("poly", B, [(0.18, 0.42), (0.32, 0.0), (0.72, 0.0), (0.86, 0.42)]),
        ("rect", B, 0.0, 0.38, 1.0, 0.8),
        ("rect", D, 0.36, 0.12, 0.66, 0.38),
        ("ellipse", D, 0.08, 0.55, 0.34, 1.0), ("ellipse", D, 0.66, 0.55, 0.92, 1.0),
    ]),
    "bus": (2.2, [
        ("rect", B, 0.0, 0.0, 1.0, 0.84),
        *[("rect", D, x, 0.14, x + 0.15, 0.46) for x in (0.06, 0.28, 0.5, 0.72)],
        ("ellipse", D, 0.1, 0.66, 0.3, 1.0), ("ellipse", D, 0.7, 0.66, 0.9, 1.0),
    ]),
    "traffic light": (0.42, [
        ("rect", B, 0.0, 0.0, 1.0, 1.0),
        ("ellipse", D, 0.14, 0.04, 0.86, 0.3), ("ellipse", D, 0.14, 0.37, 0.86, 0.63),
        ("ellipse", D, 0.14, 0.7, 0.86, 0.96),
    ]),
    "stop sign": (0.8, [
        ("poly", B, [(0.3, 0.0), (0.7, 0.0), (1.0, 0.24), (1.0, 0.54), (0.7, 0.78), (0.3, 0.78), (0.0, 0.54),
                     (0.0, 0.24)]),
        ("rect", D, 0.14, 0.31, 0.86, 0.47),
        ("rect", B, 0.4, 0.76, 0.6, 1.0),
    ]),
    "bird": (1.6, [
        ("poly", B, [(0.0, 0.0), (0.5, 0.48), (1.0, 0.0), (1.0, 0.42), (0.5, 0.95), (0.0, 0.42)]),
        ("ellipse", D, 0.38, 0.46, 0.62, 0.9),
    ]),
    "cat": (1.0, [
        ("poly", B, [(0.0, 0.5), (0.06, 0.0), (0.46, 0.3)]), ("poly", B, [(1.0, 0.5), (0.94, 0.0), (0.54, 0.3)]),
        ("ellipse", B, 0.0, 0.2, 1.0, 1.0),
        ("rect", D, 0.2, 0.46, 0.4, 0.64), ("rect", D, 0.6, 0.46, 0.8, 0.64),
    ]),
    "dog": (1.35, [
        ("rect", B, 0.16, 0.4, 0.8, 0.72),
        ("rect", B, 0.18, 0.7, 0.32, 1.0), ("rect", B, 0.64, 0.7, 0.78, 1.0),
        ("rect", B, 0.66, 0.06, 1.0, 0.46),
        ("line", B, 0.2, 0.48, 0.02, 0.06, 0.14),
        ("rect", D, 0.62, 0.06, 0.76, 0.44),
    ]),
    "horse": (1.15, [
        ("rect", B, 0.08, 0.34, 0.72, 0.64),
        ("rect", B, 0.1, 0.62, 0.22, 1.0), ("rect", B, 0.58, 0.62, 0.7, 1.0),
        ("poly", B, [(0.56, 0.4), (0.74, 0.0), (0.9, 0.0), (0.76, 0.46)]),
        ("rect", B, 0.74, 0.0, 1.0, 0.2),
        ("line", D, 0.6, 0.36, 0.76, 0.02, 0.12),
        ("line", D, 0.1, 0.38, 0.0, 0.8, 0.12),
    ]),
    "sheep": (1.35, [
        ("ellipse", B, 0.18, 0.08, 0.62, 0.56), ("ellipse", B, 0.5, 0.08, 0.96, 0.56),
        ("ellipse", B, 0.18, 0.32, 0.62, 0.8), ("ellipse", B, 0.5, 0.32, 0.96, 0.8),
        ("rect", D, 0.32, 0.72, 0.42, 1.0), ("rect", D, 0.72, 0.72, 0.82, 1.0),
        ("ellipse", D, 0.0, 0.2, 0.3, 0.56),
    ]),
    "cow": (1.6, [
        ("rect", B, 0.06, 0.24, 0.8, 0.68),
        ("rect", B, 0.08, 0.66, 0.2, 1.0), ("rect", B, 0.64, 0.66, 0.76, 1.0),
        ("rect", B, 0.78, 0.14, 1.0, 0.5),
        ("rect", B, 0.78, 0.0, 0.84, 0.16), ("rect", B, 0.94, 0.0, 1.0, 0.16),
        ("ellipse", D, 0.14, 0.28, 0.38, 0.5), ("ellipse", D, 0.46, 0.42, 0.7, 0.66),
    ]),
    "bottle": (0.45, [
        ("rect", B, 0.32, 0.0, 0.68, 0.32),
        ("poly", B, [(0.32, 0.26), (0.68, 0.26), (1.0, 0.44), (0.0, 0.44)]),
        ("rect", B, 0.0, 0.42, 1.0, 1.0),
        ("rect", D, 0.0, 0.6, 1.0, 0.82),
    ]),
    "cup": (1.15, [
        ("ellipse", B, 0.5, 0.2, 1.0, 0.78), ("ellipse", E, 0.68, 0.36, 0.86, 0.62),
        ("poly", B, [(0.0, 0.0), (0.74, 0.0), (0.66, 1.0), (0.08, 1.0)]),
        ("rect", D, 0.06, 0.38, 0.68, 0.6),
    ]),
    "fork": (0.46, [
        ("rect", B, 0.0, 0.0, 0.22, 0.4), ("rect", B, 0.39, 0.0, 0.61, 0.4), ("rect", B, 0.78, 0.0, 1.0, 0.4),
        ("rect", B, 0.0, 0.36, 1.0, 0.52),
        ("rect", B, 0.34, 0.5, 0.66, 1.0),
    ]),
    "knife": (0.4, [
        ("poly", B, [(0.0, 0.22), (1.0, 0.0), (1.0, 0.62), (0.0, 0.62)]),
        ("rect", D, 0.18, 0.6, 0.82, 1.0),
    ]),
    "spoon": (0.5, [
        ("ellipse", B, 0.0, 0.0, 1.0, 0.5),
        ("rect", B, 0.36, 0.44, 0.64, 1.0),
        ("ellipse", D, 0.24, 0.1, 0.76, 0.38),
    ]),
    "bowl": (1.8, [
        ("ellipse", B, 0.0, -0.9, 1.0, 1.0),
        ("rect", D, 0.0, 0.0, 1.0, 0.22),
    ]),
    "chair": (0.72, [
        ("rect", B, 0.04, 0.0, 0.3, 1.0),
        ("rect", D, 0.04, 0.5, 1.0, 0.66),
        ("rect", B, 0.74, 0.64, 0.96, 1.0),
    ]),
    "couch": (2.0, [
        ("rect", D, 0.1, 0.0, 0.9, 0.42),
        ("rect", B, 0.0, 0.4, 1.0, 0.84),
        ("rect", B, 0.0, 0.2, 0.14, 0.84), ("rect", B, 0.86, 0.2, 1.0, 0.84),
        ("rect", B, 0.04, 0.84, 0.14, 1.0), ("rect", B, 0.86, 0.84, 0.96, 1.0),
    ]),
    "potted plant": (0.78, [
        ("ellipse", B, 0.34, 0.0, 0.66, 0.66),
        ("poly", B, [(0.0, 0.1), (0.2, 0.08), (0.5, 0.64), (0.3, 0.66)]),
        ("poly", B, [(1.0, 0.1), (0.8, 0.08), (0.5, 0.64), (0.7, 0.66)]),
        ("poly", D, [(0.14, 0.6), (0.86, 0.6), (0.72, 1.0), (0.28, 1.0)]),
    ]),
    "dining table": (1.8, [
        ("rect", B, 0.0, 0.0, 1.0, 0.3),
        ("rect", D, 0.0, 0.18, 1.0, 0.3),
        ("rect", B, 0.06, 0.28, 0.18, 1.0), ("rect", B, 0.82, 0.28, 0.94, 1.0),
    ]),
    "toilet": (0.7, [
        ("rect", B, 0.0, 0.0, 1.0, 0.3),
        ("rect", D, 0.0, 0.3, 1.0, 0.42),
        ("poly", B, [(0.04, 0.42), (0.96, 0.42), (0.74, 0.78), (0.26, 0.78)]),
        ("rect", B, 0.28, 0.76, 0.72, 1.0),
        ("rect", D, 0.4, 0.08, 0.6, 0.2),
    ]),
    "tv": (1.4, [
        ("rect", B, 0.0, 0.0, 1.0, 0.8),
        ("rect", D, 0.12, 0.12, 0.88, 0.68),
        ("rect", B, 0.42, 0.78, 0.58, 0.92), ("rect", B, 0.2, 0.9, 0.8, 1.0),
    ]),
    "laptop": (1.5, [
        ("rect", B, 0.14, 0.0, 0.86, 0.6),
        ("rect", D, 0.24, 0.12, 0.76, 0.5),
        ("poly", B, [(0.08, 0.6), (0.92, 0.6), (1.0, 1.0), (0.0, 1.0)]),
    ]),
    "mouse": (0.72, [
        ("ellipse", B, 0.0, 0.0, 1.0, 1.0),
        ("rect", D, 0.0, 0.36, 1.0, 0.46), ("rect", D, 0.44, 0.0, 0.56, 0.4),
    ]),
    "remote": (0.36, [
        ("rect", B, 0.0, 0.0, 1.0, 1.0),
        ("ellipse", D, 0.16, 0.04, 0.84, 0.24),
        *_stripes(0.0, 0.36, 1.0, 0.94, 3),
    ]),
    "keyboard": (2.6, [
        ("rect", B, 0.0, 0.0, 1.0, 1.0),
        ("checker", D, 0.06, 0.14, 0.94, 0.86, 3),
    ]),
    "cell phone": (0.55, [
        ("rect", B, 0.0, 0.0, 1.0, 1.0),
        ("rect", D, 0.16, 0.1, 0.84, 0.74),
        ("ellipse", D, 0.36, 0.8, 0.64, 0.96),
    ]),
    "sink": (1.6, [
        ("rect", B, 0.44, 0.0, 0.56, 0.36), ("rect", B, 0.44, 0.0, 0.78, 0.12),
        ("poly", B, [(0.0, 0.34), (1.0, 0.34), (0.84, 1.0), (0.16, 1.0)]),
        ("rect", D, 0.1, 0.34, 0.9, 0.5),
        ("ellipse", D, 0.42, 0.68, 0.58, 0.86),
    ]),
    "book": (0.78, [
        ("rect", B, 0.0, 0.0, 1.0, 1.0),
        ("rect", D, 0.0, 0.0, 0.22, 1.0),
        *_stripes(0.38, 0.16, 0.88, 0.84, 3),
    ]),
    "clock": (1.0, [
        ("ellipse", B, 0.0, 0.0, 1.0, 1.0),
        ("rect", D, 0.43, 0.14, 0.57, 0.57), ("rect", D, 0.43, 0.43, 0.84, 0.57),
    ]),
    "toothbrush": (2.4, [
        ("rect", B, 0.0, 0.58, 1.0, 0.86),
        ("rect", B, 0.02, 0.0, 0.36, 0.6),
        *_vstripes(0.02, 0.0, 0.36, 0.5, 3),
    ]),
}

assert sorted(GLYPHS) == sorted(WORLD_CATEGORY_NAMES), sorted(set(GLYPHS) ^ set(WORLD_CATEGORY_NAMES))


def _span(a: float, b: float, n: int) -> tuple[int, int]:
    """Pixel index range [i0, i1) whose centers fall in [a*n, b*n); never empty for a non-empty interval."""
    i0 = max(0, math.ceil(a * n - 0.5))
    i1 = min(n, math.ceil(b * n - 0.5))
    if i1 <= i0 and b > a:
        c = min(n - 1, max(0, int((a + b) / 2 * n)))
        i0, i1 = c, c + 1
    return i0, i1


@functools.lru_cache(maxsize=8192)
def glyph_labels(name: str, w: int, h: int) -> np.ndarray:
    """The label mask (h, w) uint8 of a glyph drawn in a w x h box, before the outline."""
    _, ops = GLYPHS[name]
    m = np.zeros((h, w), np.uint8)
    yy = (np.arange(h) + 0.5) / h
    xx = (np.arange(w) + 0.5) / w
    for op in ops:
        kind, v = op[0], op[1]
        if kind == "rect":
            _, _, x0, y0, x1, y1 = op
            c0, c1 = _span(x0, x1, w)
            r0, r1 = _span(y0, y1, h)
            m[r0:r1, c0:c1] = v
        elif kind == "ellipse":
            _, _, x0, y0, x1, y1 = op
            cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
            inside = ((xx[None, :] - cx) / rx) ** 2 + ((yy[:, None] - cy) / ry) ** 2 <= 1.0
            if not inside.any():  # too small to cover a pixel center: mark the center pixel
                inside[min(h - 1, max(0, int(cy * h))), min(w - 1, max(0, int(cx * w)))] = True
            m[inside] = v
        elif kind in ("poly", "line"):
            img = Image.new("L", (w, h), 0)
            draw = ImageDraw.Draw(img)
            if kind == "poly":
                pts = [(x * w - 0.5, y * h - 0.5) for x, y in op[2]]
                draw.polygon(pts, fill=1)
            else:
                _, _, x0, y0, x1, y1, frac = op
                width = max(1, round(frac * min(w, h)))
                draw.line([(x0 * w - 0.5, y0 * h - 0.5), (x1 * w - 0.5, y1 * h - 0.5)], fill=1, width=width)
            m[np.asarray(img, dtype=np.uint8) > 0] = v
        elif kind == "checker":
            _, _, x0, y0, x1, y1, n = op
            c0, c1 = _span(x0, x1, w)
            r0, r1 = _span(y0, y1, h)
            cell = max(1, round((r1 - r0) / n))
            rr, cc = np.meshgrid(np.arange(r0, r1) - r0, np.arange(c0, c1) - c0, indexing="ij")
            on = ((rr // cell + cc // cell) % 2) == 0
            sub = m[r0:r1, c0:c1]
            sub[on & (sub == B)] = v
        else:  # pragma: no cover - a typo in the table
            raise ValueError(f"unknown glyph op {kind!r} in {name}")
    return m


@functools.lru_cache(maxsize=8192)
def glyph_masks(name: str, w: int, h: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Boolean masks of shape (h + 2, w + 2): body, detail, outline, any; and the pixel count of `any`.

    The glyph occupies the inner w x h; the outline is the 8-neighbourhood ring around its pixels.
    """
    lab = np.zeros((h + 2, w + 2), np.uint8)
    lab[1:-1, 1:-1] = glyph_labels(name, w, h)
    shape = lab > 0
    # the ring: 8-neighbours of the shape (also inside holes), computed on a padded copy
    pad = np.zeros((h + 4, w + 4), bool)
    pad[1:-1, 1:-1] = shape
    ring = np.zeros_like(shape)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            ring |= pad[1 + dy:h + 3 + dy, 1 + dx:w + 3 + dx]
    ring &= ~shape
    body = lab == B
    detail = lab == D
    anym = shape | ring
    for a in (body, detail, ring, anym):
        a.setflags(write=False)
    return body, detail, ring, anym, int(anym.sum())


def _luma(rgb) -> float:
    r, g, b = rgb
    return 0.299 * r + 0.587 * g + 0.114 * b


@functools.lru_cache(maxsize=64)
def color_tones(color: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(body, detail, outline) RGB uint8 for a palette color: detail contrasts with the body, the outline with
    everything (black, or white for dark bodies)."""
    rgb = COLORS[color]
    body = np.array(rgb, np.uint8)
    detail = np.array((30, 30, 30) if _luma(rgb) > 150 else (235, 235, 235), np.uint8)
    outline = np.array((10, 10, 10) if _luma(rgb) > 60 else (225, 225, 225), np.uint8)
    return body, detail, outline


def glyph_size(name: str, s: float, cap: float) -> tuple[int, int]:
    """Inner (w, h) of a glyph of geometric size s = sqrt(w*h), the longer side capped at `cap` pixels."""
    a = GLYPHS[name][0]
    w, h = s * math.sqrt(a), s / math.sqrt(a)
    m = max(w, h)
    if m > cap:
        w, h = w * cap / m, h * cap / m
    return max(3, round(w)), max(3, round(h))
