"""Tables and the compare report: runs as columns, metrics as rows, deltas against the base run, PNG plots.

A run is named on the command line as NAME=PATH; PATH is one of
- a run folder holding `pope/results.json`, `chair/results.json` and/or `mme/results.json`;
- a folder holding one `results.json` (its "task" says POPE, CHAIR or MME);
- a `results.json` file.
CHAIR operating points (for the CHAIRi-versus-recall plot) are the run's CHAIR result plus, if present, the points
of a `chair_sweep.json` (a list of {"label", "chair_i", "recall"}) in PATH or PATH/chair, and the results.json of
every subfolder of PATH/chair (labelled by the subfolder's name). CHAIRi at matched recall: every run's CHAIRi at the
highest recall all runs with CHAIR points reach, interpolated on its frontier (`seedvlm.eval.statistics`, the
experiment summary's method).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from seedvlm.errors import SeedVLMError
from seedvlm.eval.statistics import chair_at_recall, common_recall, frontier
from seedvlm.io import read_json, write_json, write_png, write_text

POPE_METRICS = (("accuracy", "acc"), ("precision", "prec"), ("recall", "rec"), ("f1", "F1"),
                ("yes_ratio", "yes-ratio"), ("consistency", "consistency"), ("auroc", "AUROC"),
                ("average_precision", "AP"))
CHAIR_METRICS = (("chair_s", "CHAIRs (lower is better)"), ("chair_i", "CHAIRi (lower is better)"),
                 ("recall", "CHAIR recall"), ("mean_words", "mean words"))
MME_METRICS = (("accuracy", "acc"), ("accuracy_plus", "acc+"), ("score", "score"))
_COUNTS = {"mean_words", "score"}  # not fractions: shown as they are, not in percent
_TASKS = ("pope", "chair", "mme")


# ----------------------------------------------------------------------------------------------- single-run tables
def _fmt(key: str, v: float | None, delta: bool = False) -> str:
    if v is None:
        return "-"
    x = v if key in _COUNTS else 100 * v
    return f"{x:+.1f}" if delta else f"{x:.1f}"


def pope_table(metrics: dict) -> str:
    """Markdown table of one POPE result: splits + mean as rows, metrics in percent."""
    splits = list(metrics.get("splits", [])) + ["mean"]
    keys = [(k, label) for k, label in POPE_METRICS if any(k in metrics.get(s, {}) for s in splits)]
    lines = ["| split | " + " | ".join(label for _, label in keys) + " | n | unparsed |",
             "|---" * (len(keys) + 3) + "|"]
    for s in splits:
        m = metrics[s]
        lines.append(f"| {s} | " + " | ".join(_fmt(k, m.get(k)) for k, _ in keys) +
                     f" | {m['n']} | {m['unparsed']} |")
    if metrics.get("parser"):
        lines.append(f"\nparser: {metrics['parser']}; answers the official and the strict parser decide "
                     f"differently: {metrics.get('parser_disagreements')}")
    return "\n".join(lines)


def chair_table(metrics: dict) -> str:
    """Markdown table of one CHAIR result (percent, except mean words)."""
    table = ("| CHAIRs | CHAIRi | CHAIRi (unique) | recall | recall (+captions) | mean words | n |\n"
             "|---|---|---|---|---|---|---|\n"
             f"| {_fmt('chair_s', metrics['chair_s'])} | {_fmt('chair_i', metrics['chair_i'])} | "
             f"{_fmt('chair_i', metrics.get('chair_i_unique'))} | {_fmt('recall', metrics['recall'])} | "
             f"{_fmt('recall', metrics.get('recall_augmented'))} | {metrics['mean_words']:.1f} | {metrics['n']} |")
    return table + (f"\n\nprotocol: {metrics['protocol']}" if metrics.get("protocol") else "")


def mme_table(metrics: dict) -> str:
    """Markdown table of one MME result: subsets as rows (accuracy in percent, score 0..200), then the total."""
    lines = ["| subset | acc | acc+ | score | n | other |", "|---|---|---|---|---|---|"]
    for s in metrics["subsets"]:
        m = metrics[s]
        lines.append(f"| {s} | {_fmt('accuracy', m['accuracy'])} | {_fmt('accuracy', m['accuracy_plus'])} | "
                     f"{m['score']:.1f} | {m['n']} | {m['other']} |")
    lines.append(f"| total | | | {metrics['score']:.1f} | | |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------- loading runs
def _load_result(path: Path) -> dict:
    data = read_json(path, "results file")
    if not isinstance(data, dict) or data.get("task") not in _TASKS:
        raise SeedVLMError(f"results file {path}: not a seedvlm results.json (no 'task': 'pope', 'chair' or 'mme')")
    need = {"pope": ("splits", "mean"), "chair": ("chair_i", "recall"), "mme": ("subsets", "score")}[data["task"]]
    if any(k not in data for k in need):
        raise SeedVLMError(f"results file {path}: {data['task']} result without {', '.join(need)}")
    return data


def _load_sweep(path: Path) -> list[dict]:
    data = read_json(path, "CHAIR sweep file")
    if not isinstance(data, list) or not all(isinstance(p, dict) and isinstance(p.get("chair_i"), (int, float))
                                             and isinstance(p.get("recall"), (int, float)) for p in data):
        raise SeedVLMError(f"CHAIR sweep file {path}: expected a list of {{'label', 'chair_i', 'recall'}}")
    return [{"label": str(p.get("label", k)), "chair_i": float(p["chair_i"]), "recall": float(p["recall"])}
            for k, p in enumerate(data)]


def load_run(name: str, path: str | Path) -> dict:
    """{"name", "sources", "pope", "chair", "mme", "chair_points"} of one run (see the module docstring for
    layouts)."""
    path = Path(path)
    found: dict[str, Any] = {"name": name, "sources": [], "pope": None, "chair": None, "mme": None,
                             "chair_points": []}
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = [p for p in [path / "results.json"] + [path / t / "results.json" for t in _TASKS] if p.is_file()]
    else:
        raise SeedVLMError(f"run {name}: {path} not found")
    for f in files:
        data = _load_result(f)
        if found[data["task"]] is not None:
            raise SeedVLMError(f"run {name}: two {data['task']} results ({found['sources']} and {f})")
        found[data["task"]] = data
        found["sources"].append(str(f))
    if found["chair"] is not None:
        found["chair_points"].append({"label": name, "chair_i": found["chair"]["chair_i"],
                                      "recall": found["chair"]["recall"]})
    if path.is_dir():
        for sweep in (path / "chair_sweep.json", path / "chair" / "chair_sweep.json"):
            if sweep.is_file():
                found["chair_points"] += _load_sweep(sweep)
                found["sources"].append(str(sweep))
        chair_dir = path / "chair"
        if chair_dir.is_dir():
            for sub in sorted(p for p in chair_dir.iterdir() if (p / "results.json").is_file()):
                data = _load_result(sub / "results.json")
                found["chair_points"].append({"label": sub.name, "chair_i": data["chair_i"], "recall": data["recall"]})
                found["sources"].append(str(sub / "results.json"))
    if not found["sources"]:
        raise SeedVLMError(f"run {name}: no results in {path} (expected results.json, pope/results.json, "
                           "chair/results.json or mme/results.json)")
    return found


def parse_run_spec(spec: str) -> tuple[str, str]:
    name, sep, path = spec.partition("=")
    if not sep or not name or not path:
        raise SeedVLMError(f"--run {spec!r}: expected NAME=PATH, e.g. base=runs/base")
    return name, path


# ----------------------------------------------------------------------------------------------- the comparison
def _rows(runs: list[dict]) -> list[dict]:
    """[{"key", "label", "metric", "values": {run: value}}] for every metric some run has."""
    rows: list[dict] = []
    splits: list[str] = []
    for r in runs:
        if r["pope"]:
            splits += [s for s in r["pope"]["splits"] if s not in splits]
    for split in splits + (["mean"] if splits else []):
        for key, label in POPE_METRICS:
            values = {r["name"]: (r["pope"] or {}).get(split, {}).get(key) for r in runs}
            if any(v is not None for v in values.values()):
                rows.append({"key": f"pope.{split}.{key}", "label": f"POPE {split} {label}", "metric": key,
                             "values": values})
    for key, label in CHAIR_METRICS:
        values = {r["name"]: (r["chair"] or {}).get(key) for r in runs}
        if any(v is not None for v in values.values()):
            rows.append({"key": f"chair.{key}", "label": label, "metric": key, "values": values})
    subsets: list[str] = []
    for r in runs:
        if r["mme"]:
            subsets += [s for s in r["mme"]["subsets"] if s not in subsets]
    for subset in subsets:
        for key, label in MME_METRICS:
            values = {r["name"]: (r["mme"] or {}).get(subset, {}).get(key) for r in runs}
            rows.append({"key": f"mme.{subset}.{key}", "label": f"MME {subset} {label}", "metric": key,
                         "values": values})
    if subsets:
        rows.append({"key": "mme.score", "label": "MME score (sum of subsets)", "metric": "score",
                     "values": {r["name"]: (r["mme"] or {}).get("score") for r in runs}})
    return rows


def compare(specs: list[tuple[str, str]], out: str | Path) -> dict:
    """Write OUT/report.md, OUT/report.json, OUT/pope_<split>.png and OUT/chair_recall.png; return the report."""
    if not specs:
        raise SeedVLMError("compare needs at least one --run NAME=PATH")
    names = [n for n, _ in specs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise SeedVLMError(f"run name(s) used twice: {', '.join(dup)}")
    runs = [load_run(n, p) for n, p in specs]
    base = "base" if "base" in names else names[0]
    others = [n for n in names if n != base]
    rows = _rows(runs)
    for row in rows:
        b = row["values"][base]
        row["deltas"] = {n: (None if b is None or row["values"][n] is None else row["values"][n] - b) for n in others}

    head = ["metric"] + names + [f"Δ {n}" for n in others]
    md = ["# seedvlm compare", "",
          f"Fractions in percent (mean words as counts); Δ = run minus `{base}`.", "",
          "| " + " | ".join(_md(h) for h in head) + " |", "|---" * len(head) + "|"]
    for row in rows:
        k = row["metric"]
        cells = [row["label"]] + [_fmt(k, row["values"][n]) for n in names] + \
                [_fmt(k, row["deltas"][n], delta=True) for n in others]
        md.append("| " + " | ".join(_md(c) for c in cells) + " |")
    matched = matched_recall(runs)
    if matched is not None:
        md += ["", f"CHAIRi at matched recall r* = {100 * matched['level']:.1f}% (the highest recall every run with "
                   "CHAIR points reaches; linear interpolation on each run's CHAIRi-recall frontier): "
                   + ", ".join(f"`{n}` {_fmt('chair_i', v)}" for n, v in matched["chair_i"].items()) + "."]
    md += ["", "Sources:"] + [f"- `{r['name']}`: " + ", ".join(f"`{s}`" for s in r["sources"]) for r in runs]

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plots = _plots(runs, rows, out)
    if plots:
        md += ["", "Plots: " + ", ".join(f"[{p}]({p})" for p in plots)]
    text = "\n".join(md) + "\n"
    report = {"base": base, "runs": {r["name"]: {"sources": r["sources"], "chair_points": r["chair_points"]}
                                     for r in runs},
              "rows": rows, "matched_recall": matched, "plots": plots}
    write_text(out / "report.md", text)
    write_json(out / "report.json", report)
    report["markdown"] = text
    return report


def matched_recall(runs: list[dict]) -> dict | None:
    """{"level", "chair_i": {run: CHAIRi at the level}, "frontier": {run: [labels]}} over the runs with CHAIR points
    (None without any)."""
    curves = {r["name"]: r["chair_points"] for r in runs if r["chair_points"]}
    level = common_recall(list(curves.values()))
    if level is None:
        return None
    return {"level": level, "chair_i": {n: chair_at_recall(pts, level) for n, pts in curves.items()},
            "frontier": {n: [p["label"] for p in frontier(pts)] for n, pts in curves.items()}}


def _md(cell: str) -> str:
    return str(cell).replace("|", "\\|").replace("\n", " ")


def _plots(runs: list[dict], rows: list[dict], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["name"] for r in runs]
    written: list[str] = []
    splits = list(dict.fromkeys(row["key"].split(".")[1] for row in rows if row["key"].startswith("pope.")))
    for split in splits:
        split_rows = [row for row in rows if row["key"].startswith(f"pope.{split}.")]
        fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(split_rows), 3.6))
        width = 0.8 / max(len(names), 1)
        for j, n in enumerate(names):
            xs = [i + (j - (len(names) - 1) / 2) * width for i in range(len(split_rows))]
            ax.bar(xs, [row["values"][n] or 0.0 for row in split_rows], width, label=n)
        ax.set_xticks(range(len(split_rows)), [row["label"].split()[-1] for row in split_rows])
        ax.set_ylim(0, 1)
        ax.set_title(f"POPE {split}")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        write_png(out / f"pope_{split}.png", fig)
        written.append(f"pope_{split}.png")
    if any(r["chair_points"] for r in runs):
        fig, ax = plt.subplots(figsize=(5, 4))
        for r in runs:
            pts = sorted(r["chair_points"], key=lambda p: p["recall"])
            if not pts:
                continue
            line, = ax.plot([p["recall"] for p in pts], [p["chair_i"] for p in pts], marker="o",
                            linestyle="-" if len(pts) > 1 else "none", label=r["name"])
            for p in pts:
                if len(pts) > 1:
                    ax.annotate(p["label"], (p["recall"], p["chair_i"]), fontsize=7, xytext=(3, 3),
                                textcoords="offset points", color=line.get_color())
        ax.set_xlabel("recall (annotated objects mentioned)")
        ax.set_ylabel("CHAIRi")
        ax.set_title("CHAIRi versus recall")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        write_png(out / "chair_recall.png", fig)
        written.append("chair_recall.png")
    return written
