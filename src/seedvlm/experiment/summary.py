"""The experiment's summary: per-arm metrics over seeds (mean and 95% interval), CHAIRi at matched recall, the goals
of the config checked on the means, the ablation table; written as OUT/summary.json and OUT/summary.md."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

from seedvlm.eval.results import git_state, versions
from seedvlm.experiment.config import ARM_HELP, ARMS
from seedvlm.experiment.plan import Plan, _fmt_value
from seedvlm.eval.statistics import chair_at_recall, common_recall, frontier, mean_ci, relative_change
from seedvlm.io import read_json, write_json, write_text

MATCHED_METHOD = (
    "Each arm's operating points are its CHAIR result, its sweep points (w for the seed arm, b for the contrastive "
    "arms) and its captions cut to the first k words of length_cuts (re-scored). Its frontier is the lower "
    "envelope of CHAIRi over recall (points no other point of the arm beats on both). CHAIRi at the matched "
    "recall level r* is the linear interpolation between the two frontier points around r*; an arm whose "
    "frontier does not span r* has no value. r* = matched_recall if set, else the highest recall that every main "
    "arm reaches in every seed (the minimum over arms and seeds of the arm's maximum recall). Relative changes "
    "are computed per seed, (CHAIRi_arm - CHAIRi_ref) / CHAIRi_ref, then averaged.")

POPE_KEYS = (("accuracy", "acc"), ("f1", "F1"), ("yes_ratio", "yes-ratio"), ("auroc", "AUROC"),
             ("average_precision", "AP"))
CHAIR_KEYS = (("chair_s", "CHAIRs"), ("chair_i", "CHAIRi"), ("recall", "CHAIR recall"), ("mean_words", "mean words"))
GOAL_UNITS = {"relative": "relative", "difference": "points", None: "percent"}  # a goal's change -> its unit


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _metrics(root: Path) -> dict[str, float]:
    """Flat metrics of one arm folder: pope.<split>.<m>, probes.<split>.<m>, mme.<subset>.score, chair.<m>."""
    out: dict[str, float] = {}
    for task in ("pope", "probes"):
        p = root / task / "results.json"
        if p.is_file():
            r = read_json(p, "POPE results")
            for split in list(r.get("splits", [])) + ["mean"]:
                for k, _ in POPE_KEYS:
                    if r.get(split, {}).get(k) is not None:
                        out[f"{task}.{split}.{k}"] = r[split][k]
    p = root / "mme" / "results.json"
    if p.is_file():
        r = read_json(p, "MME results")
        out.update({f"mme.{subset}.score": r[subset]["score"] for subset in r.get("subsets", [])})
        out["mme.total.score"] = r["score"]
    p = root / "chair" / "results.json"
    if p.is_file():
        r = read_json(p, "CHAIR results")
        for k, _ in CHAIR_KEYS:
            out[f"chair.{k}"] = r[k]
    return out


def _label(key: str) -> str:
    if key == "matched.chair_i":
        return "CHAIRi @ matched recall"
    if key.startswith("chair."):
        return dict(CHAIR_KEYS)[key.split(".")[1]]
    task, split, m = key.split(".")
    if task == "mme":
        return f"MME {split} score"
    return f"{'POPE' if task == 'pope' else 'probe'} {split} {dict(POPE_KEYS)[m]}"


def _cell(key: str, st: dict, n_seeds: int, delta: bool = False) -> str:
    """mean ± half-width (percent, or counts for mean words); the n when it is not the number of seeds."""
    if not st or st.get("mean") is None:
        return "-"
    scale = 1.0 if key.endswith("mean_words") or key.startswith("mme.") else 100.0
    sign = "+" if delta else ""
    text = f"{scale * st['mean']:{sign}.1f}"
    if st["half_width"] is not None:
        text += f" ± {scale * st['half_width']:.1f}"
    return text if st["n"] == n_seeds else f"{text} (n={st['n']})"


def summarize(plan: Plan) -> dict:
    """Write OUT/summary.json and OUT/summary.md from whatever results exist; return the summary."""
    c, out = plan.cfg, plan.out
    main_arms = [a for a in ARMS if a in c.arms]
    per: dict[tuple[int, str], dict] = {}
    curves: dict[tuple[int, str], list[dict]] = {}
    all_arms = main_arms + sorted({v for vs in plan.variants.values() for v in vs})
    for s in c.seeds:
        for a in all_arms:
            root = out / f"seed{s}" / a
            if not root.is_dir():
                continue
            per[(s, a)] = _metrics(root)
            pts = plan.chair_points(s, a)
            if "chair.chair_i" in per[(s, a)]:
                pts = [{"label": a, "knob": "main", "value": None, "chair_i": per[(s, a)]["chair.chair_i"],
                        "recall": per[(s, a)]["chair.recall"], "chair_s": per[(s, a)]["chair.chair_s"]}] + pts
            curves[(s, a)] = pts

    # the matched recall level
    auto_level = common_recall([curves.get((s, a)) for s in c.seeds for a in main_arms])
    level = c.matched_recall if c.matched_recall is not None else auto_level
    matched: dict[str, dict] = {}
    for (s, a), pts in curves.items():
        v = chair_at_recall(pts, level) if level is not None and pts else None
        matched.setdefault(a, {})[s] = {"chair_i": v, "frontier": frontier(pts), "points": pts}
        if v is not None:
            per[(s, a)]["matched.chair_i"] = v

    keys: list[str] = []
    for (s, a), m in per.items():
        keys += [k for k in m if k not in keys]
    order = {"pope": 0, "probes": 1, "mme": 2, "chair": 3, "matched": 4}
    metric_rank = {"accuracy": 0, "f1": 1, "yes_ratio": 2, "chair_s": 0, "chair_i": 1, "recall": 2, "mean_words": 3,
                   "auroc": 3, "average_precision": 4}
    keys.sort(key=lambda k: (order[k.split(".")[0]], _split_rank(k), metric_rank.get(k.split(".")[-1], 9)))
    stats = {a: {k: {**mean_ci([per[(s, a)].get(k) for s in c.seeds if (s, a) in per]),
                     "values": {str(s): per[(s, a)].get(k) for s in c.seeds if (s, a) in per}}
                 for k in keys} for a in all_arms}

    relative: dict[str, dict] = {}
    for a in main_arms:
        for ref in ("base", "sft"):
            if ref == a or ref not in main_arms:
                continue
            vals = [relative_change(per.get((s, a), {}).get("matched.chair_i"),
                                    per.get((s, ref), {}).get("matched.chair_i")) for s in c.seeds]
            relative.setdefault(a, {})[f"vs_{ref}"] = {**mean_ci(vals), "values": vals}
    goals = _goals(per, c.seeds, main_arms, c.goal_arms, c.goals)
    ablations = []  # on the ablation seeds only, the seed arm's row included, so that rows compare like with like
    abl_seeds = c.seeds[:c.ablation_seeds]
    for row in plan.ablation_rows:
        a = row["arm"]
        ablations.append({**row, "metrics": {k: mean_ci([per[(s, a)].get(k) for s in abl_seeds if (s, a) in per])
                                             for k in keys}})
    commit, dirty = git_state()
    summary = {
        "config": dataclasses.asdict(c), "git": commit, "git_dirty": dirty, "versions": versions(), "time": _now(),
        "seeds": list(c.seeds), "arms": main_arms, "variants": {str(s): v for s, v in plan.variants.items()},
        "metrics": {a: stats[a] for a in all_arms if any(st["n"] for st in stats[a].values())},
        "matched_recall": {"level": level, "auto": c.matched_recall is None, "method": MATCHED_METHOD,
                           "relative": relative,
                           "per_seed": {a: {str(s): v for s, v in d.items()} for a, d in matched.items()}},
        "goals": goals, "ablations": ablations,
        "reports": {str(s): [str(out / f"seed{s}" / n / "report.md") for n in ("compare", "compare_ablations")
                             if (out / f"seed{s}" / n / "report.md").is_file()] for s in c.seeds},
    }
    write_json(out / "summary.json", summary)
    write_text(out / "summary.md", _summary_md(summary, keys, main_arms))
    return summary


def _split_rank(key: str) -> int:
    parts = key.split(".")
    if len(parts) < 3:
        return 0
    ranks = {"random": 0, "popular": 1, "adversarial": 2, "existence": 3, "color": 3, "count": 4, "relation": 5,
             "position": 5, "mean": 9, "total": 9}
    return ranks.get(parts[1], 8)


def _goals(per: dict, seeds: list[int], arms: list[str], goal_arms: list[str], goals: list[dict]) -> list[dict]:
    """The config's goals checked on the means, per goal arm that ran: the metric's per-seed value, or its change
    against the reference arm (relative or a difference), over the seeds where both have it."""
    rows = []
    for a in [x for x in goal_arms if x in arms]:
        for g in goals:
            metric, ref, change = g["metric"], g.get("vs"), g.get("change")
            if ref is not None and (ref == a or ref not in arms):
                continue
            mine = [per.get((s, a), {}).get(metric) for s in seeds]
            refs = [per.get((s, ref), {}).get(metric) for s in seeds] if ref is not None else [None] * len(seeds)
            if change == "relative":
                vals = [relative_change(x, r) for x, r in zip(mine, refs)]
            elif change == "difference":
                vals = [x - r for x, r in zip(mine, refs) if x is not None and r is not None]
            else:
                vals = mine
            st = {**mean_ci(vals), "values": vals} if change == "relative" else mean_ci(vals)  # as in "relative"
            if st["mean"] is None:
                continue
            met = (g.get("min") is None or st["mean"] >= g["min"]) and (g.get("max") is None or st["mean"] <= g["max"])
            rows.append({"arm": a, "goal": g["goal"], "measured": st, "unit": GOAL_UNITS[change], "met": met})
    return rows


def _summary_md(s: dict, keys: list[str], arms: list[str]) -> str:
    c = s["config"]
    n_seeds = len(s["seeds"])
    lines = ["# seedvlm experiment: summary", "",
             f"Base model `{c['base_model']}`; world `{c['world'] or c['out'] + '/world'}`; seeds {s['seeds']}; "
             f"git {s['git'] or '?'}{' (dirty)' if s['git_dirty'] else ''}; written {s['time']}.", "",
             (f"Cells: mean ± half-width of the 95% t-interval over the seeds (t with n-1 degrees of freedom, "
              f"n = {n_seeds}); a cell over fewer seeds says its n, and with n=1 it is the single value, no interval."
              if n_seeds > 1 else "n=1 (one seed): every cell is a single run's value; no interval."),
             "Fractions in percent, mean words as counts.", "",
             "## Arms", "",
             "| metric | " + " | ".join(arms) + " |", "|---" * (len(arms) + 1) + "|"]
    for k in keys:
        cells = [_cell(k, s["metrics"].get(a, {}).get(k), n_seeds) for a in arms]
        lines.append(f"| {_label(k)} | " + " | ".join(cells) + " |")
    lines += ["", "Arms: " + "; ".join(f"`{a}` = {ARM_HELP[a]}" for a in arms) + "."]
    mr = s["matched_recall"]
    lines += ["", "## CHAIRi at matched recall", ""]
    if mr["level"] is None:
        lines.append("No CHAIR results yet.")
    else:
        lines += [f"Recall level r* = {100 * mr['level']:.1f}% ({'auto' if mr['auto'] else 'set in the config'}).",
                  "", mr["method"], "",
                  "| arm | CHAIRi @ r* | vs base (relative, %) | vs sft (relative, %) | frontier points (seed "
                  f"{s['seeds'][0]}) |", "|---|---|---|---|---|"]
        for a in arms:
            rel = mr["relative"].get(a, {})
            front = mr["per_seed"].get(a, {}).get(str(s["seeds"][0]), {}).get("frontier", [])
            fp = ", ".join(f"{p['label']} ({100 * p['recall']:.0f}/{100 * p['chair_i']:.1f})" for p in front)
            at = _cell("matched.chair_i", s["metrics"].get(a, {}).get("matched.chair_i"), n_seeds)
            lines.append(f"| {a} | {at} | "
                         f"{_cell('x', rel.get('vs_base'), n_seeds, delta=True)} | "
                         f"{_cell('x', rel.get('vs_sft'), n_seeds, delta=True)} | {fp or '-'} |")
        lines += ["", "Frontier points: label (recall / CHAIRi, percent)."]
    if s["goals"]:
        lines += ["", "## Goals (checked on the means)", "", "| arm | goal | measured | met |",
                  "|---|---|---|---|"]
        for g in s["goals"]:
            st = g["measured"]
            lines.append(f"| {g['arm']} | {g['goal']} | {_cell('x', st, n_seeds, delta=g['unit'] != 'percent')} | "
                         f"{'yes' if g['met'] else 'no'} |")
    if s["ablations"]:
        cols = [k for k in ("pope.adversarial.f1", "pope.mean.f1", "pope.mean.yes_ratio", "probes.mean.accuracy",
                            "chair.chair_s", "chair.chair_i", "chair.recall", "matched.chair_i") if k in keys]
        lines += ["", f"## Ablations (first {c['ablation_seeds']} seed(s); one option changed from the seed arm)", "",
                  "| option | value | run | " + " | ".join(_label(k) for k in cols) + " |",
                  "|---" * (len(cols) + 3) + "|"]
        for row in s["ablations"]:
            lines.append(f"| {row['option']} | {_fmt_value(row['value'])} | {row['arm']} | "
                         + " | ".join(_cell(k, row["metrics"].get(k), n_seeds) for k in cols) + " |")
    lines += ["", "## Reports", ""]
    for seed, paths in s["reports"].items():
        for p in paths:
            lines.append(f"- seed {seed}: `{p}`")
    if not any(s["reports"].values()):
        lines.append("- none yet")
    return "\n".join(lines) + "\n"
