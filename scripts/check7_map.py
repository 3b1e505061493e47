"""Every base build's readiness in one table and one plot: check 7's changes under the training noise (x: present
objects, y: injected partners; the check passes in the upper-left quadrant), beside the partners' change against
check 2's off-scene recall, and the other checks.

    python scripts/check7_map.py NAME=PATH/pretrain.json [NAME=...] --out DIR

PATH is a `seedvlm pretrain` summary (or a `seedvlm readiness --out` JSON). Writes DIR/check7_map.json, .md, .png.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from seedvlm.errors import SeedVLMError
from seedvlm.io import read_json, write_json, write_png, write_text
from seedvlm.pretrain.readiness import OFF_SCENE_MIN


def row(name: str, path: Path) -> dict:
    data = read_json(path, "readiness summary")
    r = data.get("readiness", data)
    if "prior_under_noise" not in r or "checks" not in r:
        raise SeedVLMError(f"{path}: no readiness figures with check 7 (prior_under_noise)")
    try:
        return _row(name, path, data, r)
    except (KeyError, TypeError) as e:
        raise SeedVLMError(f"{path}: readiness figures without {e} (not a `seedvlm pretrain` or readiness JSON?)")


def _row(name: str, path: Path, data: dict, r: dict) -> dict:
    prior = r["prior_under_noise"]
    return {"name": name, "file": str(path), "partner_change": prior["partner_change"],
            "present_change": prior["present_change"], "blank": prior["kinds"].get("blank", {}),
            "present_named": r["present_named"], "off_scene_named": r["off_scene_named"],
            "checks_passed": sum(c["passed"] for c in r["checks"].values()), "checks": len(r["checks"]),
            "config": {k: data.get("config", {}).get(k) for k in ("init", "world", "uninformative", "noisy_views",
                                                                  "vision_degrade", "instruct_epochs")}}


def markdown(rows: list[dict]) -> str:
    lines = ["| build | partners, a = 0.3 | present, a = 0.3 | partners, blank | present, blank | present named "
             "| off-scene named | checks passed |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['name']} | {r['partner_change']:+.3f} | {r['present_change']:+.3f} | "
                     f"{r['blank'].get('partner_change', float('nan')):+.3f} | "
                     f"{r['blank'].get('present_change', float('nan')):+.3f} | {r['present_named']:.3f} | "
                     f"{r['off_scene_named']:.3f} | {r['checks_passed']} of {r['checks']} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    """Left: check 7 (present vs partners under the training noise). Right: the partners' change against the
    off-scene recall of check 2, the trade-off the recipe search runs into (both pass only in the upper right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.5))
    xs, ys = [r["present_change"] for r in rows], [r["partner_change"] for r in rows]
    lo = min(xs + ys + [-0.2]) * 1.1
    for a in (ax, bx):
        a.axhline(0, color="grey", lw=0.8)
        a.set_ylim(lo, -lo / 3)
        a.set_ylabel("injected partners: mean change of log p (a = 0.3 - clean)")
    ax.axvline(0, color="grey", lw=0.8)
    ax.fill_between([lo, 0], 0, -lo, color="tab:green", alpha=0.12, label="check 7 passes")
    ax.scatter(xs, ys, color="tab:blue")
    for r, x, y in zip(rows, xs, ys):
        ax.annotate(r["name"], (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlim(lo, 0.3)
    ax.set_xlabel("present objects: mean change of log p (a = 0.3 - clean)")
    ax.legend(fontsize=8, loc="lower right")
    off = [r["off_scene_named"] for r in rows]
    left, right = min(off + [OFF_SCENE_MIN]) - 0.03, max(off + [OFF_SCENE_MIN]) + 0.03
    bx.axvline(OFF_SCENE_MIN, color="grey", lw=0.8)
    bx.fill_between([OFF_SCENE_MIN, right], 0, -lo, color="tab:green", alpha=0.12, label="checks 2 and 7 pass")
    bx.scatter(off, ys, color="tab:blue")
    for r, x, y in zip(rows, off, ys):
        bx.annotate(r["name"], (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    bx.set_xlim(left, right)
    bx.set_xlabel(f"off-scene objects named (check 2: >= {OFF_SCENE_MIN:.2f})")
    bx.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    write_png(path, fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="NAME=PATH of a pretrain.json or readiness JSON")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    try:
        rows = []
        for spec in args.runs:
            name, sep, path = spec.partition("=")
            if not sep:
                raise SeedVLMError(f"{spec}: expected NAME=PATH")
            rows.append(row(name, Path(path)))
    except SeedVLMError as e:
        print(f"check7_map: error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "check7_map.json", rows)
    write_text(out / "check7_map.md", markdown(rows))
    plot(rows, out / "check7_map.png")
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
