"""Does the teacher's best perturbation kind track check 7? Each perturbation-kind ablation of an experiment beside
the base's check-7 changes under that kind, with CHAIRi at a recall every kind reaches.

    python scripts/kinds_vs_check7.py --summary OUT/summary.json --readiness BASE/pretrain.json [R2.json ...] --out DIR

The summary is `seedvlm experiment`'s (its ablations `noise` and `alpha`, first seed); a readiness JSON is the
base's `seedvlm pretrain` summary or a `seedvlm readiness --out` file (check 7 per kind under
prior_under_noise.kinds); given several (other seeds, so other noise draws), their changes are averaged.
Writes DIR/kinds_vs_check7.json, .md and .png.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from seedvlm.diagnostics.teacher_signal import prior_shows
from seedvlm.errors import SeedVLMError
from seedvlm.eval.statistics import chair_at_recall, common_recall, relative_change, spearman
from seedvlm.io import read_json, write_json, write_png, write_text


def _settings_match(settings: dict, noise: str, alpha: float | None) -> bool:
    if settings.get("noise") != noise:
        return False
    return alpha is None or abs(float(settings.get("alpha", -1)) - alpha) < 1e-9


def pair_kinds(summary: dict, kinds: dict, seed_alpha: float = 0.3) -> list[dict]:
    """One row per ablation run of the perturbation (option noise or alpha, plus the seed arm's own Gaussian at
    seed_alpha) whose kind the readiness figures also measured."""
    ablations = summary.get("ablations", [])
    runs = [(ab["arm"], "gaussian", float(ab["value"])) for ab in ablations if ab["option"] == "alpha"]
    runs += [(ab["arm"], ab["value"], seed_alpha if ab["value"] == "gaussian" else None)
             for ab in ablations if ab["option"] == "noise"]
    rows, seen = [], set()
    for arm, noise, alpha in runs:
        if arm in seen:
            continue
        match = [k for k, v in kinds.items() if _settings_match(v.get("settings", {}), noise, alpha)]
        if not match:
            continue
        seen.add(arm)
        k = kinds[match[0]]
        rows.append({"kind": match[0], "arm": arm, "partner_change": k["partner_change"],
                     "present_change": k["present_change"],
                     "prior_shows": prior_shows(k["partner_change"], k["present_change"])})
    return rows


def mean_kinds(readinesses: list[dict]) -> dict:
    """Check 7's per-kind changes averaged over several readiness runs (noise draws) of one base."""
    all_kinds = []
    for readiness in readinesses:
        r = readiness.get("readiness", readiness)
        if "prior_under_noise" not in r or "kinds" not in r["prior_under_noise"]:
            raise KeyError("prior_under_noise.kinds")
        all_kinds.append(r["prior_under_noise"]["kinds"])
    out = {}
    for name, k in all_kinds[0].items():
        runs = [ks[name] for ks in all_kinds if name in ks]
        out[name] = {"settings": k["settings"], "draws": len(runs),
                     **{f: sum(x[f] for x in runs) / len(runs) for f in ("partner_change", "present_change")}}
    return out


def analyse(summary: dict, readiness: dict | list[dict]) -> dict:
    readinesses = readiness if isinstance(readiness, list) else [readiness]
    rows = pair_kinds(summary, mean_kinds(readinesses))
    if not rows:
        raise KeyError("ablations of option noise or alpha whose kinds the readiness figures measured")
    per_seed = summary["matched_recall"]["per_seed"]
    seed = str(summary["seeds"][0])

    def curve(arm: str) -> list[dict]:  # the run's own point and its length cuts (no w or b sweep): like for like
        pts = per_seed.get(arm, {}).get(seed, {}).get("points", [])
        return [p for p in pts if p.get("knob") in ("main", "words")]

    level = common_recall([curve(x["arm"]) for x in rows] + [curve("base")])
    base_at = chair_at_recall(curve("base"), level) if level is not None else None
    for x in rows:
        m = next((a["metrics"] for a in summary["ablations"] if a["arm"] == x["arm"]), None)
        if m is None:  # the seed arm itself: its metrics are in the main table
            m = summary["metrics"].get(x["arm"], {})
        get = lambda key: (m.get(key) or {}).get("mean")  # noqa: E731
        x.update({"chair_i": get("chair.chair_i"), "recall": get("chair.recall"),
                  "pope_adversarial_f1": get("pope.adversarial.f1"),
                  "chair_i_at_level": chair_at_recall(curve(x["arm"]), level) if level is not None else None})
        x["vs_base_at_level"] = relative_change(x["chair_i_at_level"], base_at)
    scored = [x for x in rows if x["vs_base_at_level"] is not None]
    return {"seed": int(seed), "readiness_draws": len(readinesses), "recall_level": level,
            "base_chair_i_at_level": base_at, "kinds": rows,
            "spearman_partner_change_vs_chair_i": spearman([x["partner_change"] for x in scored],
                                                           [x["vs_base_at_level"] for x in scored]),
            "spearman_gap_vs_chair_i": spearman([x["partner_change"] - x["present_change"] for x in scored],
                                                 [x["vs_base_at_level"] for x in scored])}


def _f(v, fmt):
    return "-" if v is None else format(v, fmt)


def _pct(v, fmt=".1f"):
    return _f(None if v is None else 100 * v, fmt)


def markdown(res: dict) -> str:
    lines = [f"Seed {res['seed']}; check-7 changes averaged over {res['readiness_draws']} readiness run(s); recall "
             "level every kind and the base reach: "
             f"{_pct(res['recall_level'])}% (base CHAIRi there {_pct(res['base_chair_i_at_level'])}%).", "",
             "| kind | run | partners, log p change | present, log p change | prior shows | CHAIRi | recall "
             "| CHAIRi at the level | vs base | POPE adv F1 |", "|---|---|---|---|---|---|---|---|---|---|"]
    for x in res["kinds"]:
        lines.append(f"| {x['kind']} | {x['arm']} | {x['partner_change']:+.3f} | {x['present_change']:+.3f} | "
                     f"{'yes' if x['prior_shows'] else 'no'} | {_pct(x['chair_i'])} | {_pct(x['recall'])} | "
                     f"{_pct(x['chair_i_at_level'])} | {_pct(x['vs_base_at_level'], '+.1f')}% | "
                     f"{_pct(x['pope_adversarial_f1'])} |")
    lines += ["", f"Spearman rank correlation over the kinds (n = {len(res['kinds'])}, one seed), with CHAIRi at the "
              f"level vs base: partners' change {_f(res['spearman_partner_change_vs_chair_i'], '+.2f')}, partners' "
              f"minus present objects' change {_f(res['spearman_gap_vs_chair_i'], '+.2f')} (negative: a stronger "
              "prior under the kind goes with fewer hallucinations after SEED)."]
    return "\n".join(lines) + "\n"


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [x for x in res["kinds"] if x["vs_base_at_level"] is not None]
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    ax.axhline(0, color="grey", lw=0.8)
    ax.axvline(0, color="grey", lw=0.8)
    for x in pts:
        c = "tab:green" if x["prior_shows"] else "tab:red"
        ax.scatter(x["partner_change"], 100 * x["vs_base_at_level"], color=c)
        ax.annotate(x["kind"], (x["partner_change"], 100 * x["vs_base_at_level"]), fontsize=7, xytext=(3, 3),
                    textcoords="offset points")
    ax.set_xlabel("injected partners: mean change of log p under the kind (base)")
    ax.set_ylabel("SEED with that kind: CHAIRi at matched recall vs base (%)")
    ax.set_title("green: the prior shows under the kind", fontsize=9)
    fig.tight_layout()
    write_png(path, fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--summary", required=True, help="`seedvlm experiment`'s OUT/summary.json")
    ap.add_argument("--readiness", required=True, nargs="+",
                    help="the base's pretrain.json or readiness JSON; several (other --seed, so other noise draws): "
                         "their changes are averaged")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    try:
        summary = read_json(Path(args.summary), "experiment summary")
        readiness = [read_json(Path(p), "readiness summary") for p in args.readiness]
        try:
            res = analyse(summary, readiness)
        except (KeyError, TypeError) as e:
            raise SeedVLMError(f"{args.summary} / {' '.join(args.readiness)}: missing {e}")
    except SeedVLMError as e:
        print(f"kinds_vs_check7: error: {e}", file=sys.stderr)
        return 2
    print(save(res, Path(args.out)))
    return 0


def save(res: dict, out: Path) -> str:
    """Write the JSON, the table and the plot into out; returns the table."""
    out.mkdir(parents=True, exist_ok=True)
    table = markdown(res)
    write_json(out / "kinds_vs_check7.json", res)
    write_text(out / "kinds_vs_check7.md", table)
    plot(res, out / "kinds_vs_check7.png")
    return table


if __name__ == "__main__":
    raise SystemExit(main())
