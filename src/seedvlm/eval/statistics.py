"""The statistics of a comparison over seeds and operating points, shared by `seedvlm experiment` and `seedvlm
compare`: the mean with its 95% t-interval, the CHAIRi-versus-recall frontier, CHAIRi at a matched recall level."""

from __future__ import annotations

import math

# two-sided 95% quantiles of Student's t, df = 1..30 (no scipy in the environment)
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t975(df: int) -> float:
    """The 0.975 quantile of Student's t with df degrees of freedom (table to 30, then ~1.96 + 2.4/df)."""
    if df < 1:
        raise ValueError("df must be >= 1")
    return _T975[df - 1] if df <= 30 else 1.96 + 2.4 / df


def mean_ci(values: list[float]) -> dict:
    """{"n", "mean", "sd", "half_width", "ci95"}: mean +- t(0.975, n-1) * sd / sqrt(n); n=1: no interval."""
    vals = [float(v) for v in values if v is not None]
    n = len(vals)
    if not n:
        return {"n": 0, "mean": None, "sd": None, "half_width": None, "ci95": None}
    mean = sum(vals) / n
    if n == 1:
        return {"n": 1, "mean": mean, "sd": None, "half_width": None, "ci95": None}
    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1))
    half = t975(n - 1) * sd / math.sqrt(n)
    return {"n": n, "mean": mean, "sd": sd, "half_width": half, "ci95": [mean - half, mean + half]}


def frontier(points: list[dict]) -> list[dict]:
    """The lower envelope of CHAIRi over recall: the points no other point beats on both (recall at least as high
    and CHAIRi at least as low), in ascending recall (their CHAIRi then ascends too)."""
    keep: list[dict] = []
    best = math.inf
    for p in sorted(points, key=lambda p: (-p["recall"], p["chair_i"])):
        if p["chair_i"] < best:
            keep.append(p)
            best = p["chair_i"]
    return keep[::-1]


def chair_at_recall(points: list[dict], level: float) -> float | None:
    """CHAIRi at a recall level by linear interpolation along the frontier of the points; None outside it."""
    front = frontier(points)
    if not front or level > front[-1]["recall"] + 1e-12 or level < front[0]["recall"] - 1e-12:
        return None
    for lo, hi in zip(front, front[1:]):
        if lo["recall"] <= level <= hi["recall"]:
            if hi["recall"] == lo["recall"]:
                return lo["chair_i"]
            t = (level - lo["recall"]) / (hi["recall"] - lo["recall"])
            return lo["chair_i"] + t * (hi["chair_i"] - lo["chair_i"])
    return front[0]["chair_i"] if len(front) == 1 or level <= front[0]["recall"] else front[-1]["chair_i"]


def common_recall(curves: list[list[dict]]) -> float | None:
    """The highest recall every curve reaches: the minimum over the non-empty curves of their maximum recall (the
    matched level where each curve's frontier has a value); None without points."""
    tops = [max(p["recall"] for p in pts) for pts in curves if pts]
    return min(tops) if tops else None


def average_ranks(values: list[float]) -> list[float]:
    """1-based ranks of `values`, tied values sharing the mean of their positions (Mann-Whitney, Spearman)."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(xs: list[float], ys: list[float]) -> float | None:
    """Spearman's rank correlation (Pearson's on average ranks); None below three points or without spread."""
    if len(xs) != len(ys) or len(xs) < 3:
        return None
    rx, ry = average_ranks(xs), average_ranks(ys)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    vx, vy = sum((a - mx) ** 2 for a in rx), sum((b - my) ** 2 for b in ry)
    return cov / math.sqrt(vx * vy) if vx and vy else None


def relative_change(value: float | None, ref: float | None) -> float | None:
    """(value - ref) / ref; None when either is missing or ref is 0."""
    return None if value is None or not ref else (value - ref) / ref
