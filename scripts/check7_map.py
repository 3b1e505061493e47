"""Every base build's readiness in one table and one plot: check 7's changes under the training noise (x: present
objects, y: injected partners; the check passes in the upper-left quadrant) and the other six checks.

    python scripts/check7_map.py NAME=PATH/pretrain.json [NAME=...] --out DIR

PATH is a `seedvlm pretrain` summary (or a `seedvlm readiness --out` JSON). Writes DIR/check7_map.json, .md, .png.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from seedvlm.errors import SeedVLMError
from seedvlm.io import atomic_path, read_json, write_json, write_text


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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    xs, ys = [r["present_change"] for r in rows], [r["partner_change"] for r in rows]
    ax.axhline(0, color="grey", lw=0.8)
    ax.axvline(0, color="grey", lw=0.8)
    lo = min(xs + ys + [-0.2]) * 1.1
    ax.fill_between([lo, 0], 0, -lo, color="tab:green", alpha=0.12, label="check 7 passes")
    ax.scatter(xs, ys, color="tab:blue")
    for r, x, y in zip(rows, xs, ys):
        ax.annotate(r["name"], (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlim(lo, 0.3)
    ax.set_ylim(lo, -lo / 3)
    ax.set_xlabel("present objects: mean change of log p (a = 0.3 - clean)")
    ax.set_ylabel("injected partners: mean change of log p")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


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
