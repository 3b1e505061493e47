"""Running a plan: each step folder gets a `done.json` marker (its settings, the tokens of the steps it read, its
own token, the time it took); a step whose marker matches is skipped, a missing or stale one re-runs it and
everything downstream; the log gives elapsed time and an ETA from the steps finished so far."""

from __future__ import annotations

import dataclasses
import gc
import shutil
import sys
import time
import uuid
from pathlib import Path
from typing import Callable

from seedvlm.errors import SeedVLMError
from seedvlm.experiment.config import ExperimentConfig
from seedvlm.experiment.plan import Plan, Step, _same
from seedvlm.experiment.summary import _now, summarize
from seedvlm.io import read_json, write_json

MARKER = "done.json"


def _marker(step: Step) -> dict | None:
    p = step.folder / MARKER
    if not p.is_file():
        return None
    try:
        return read_json(p, "step marker")
    except SeedVLMError:
        return None


def _hms(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _up_to_date(step: Step, marker: dict | None, tokens: dict[str, str | None]) -> bool:
    """A marker with the step's settings whose recorded upstream tokens are the upstream steps' current ones."""
    return (marker is not None and _same(marker.get("settings"), step.settings)
            and all(tokens.get(d) is not None and marker.get("deps", {}).get(d) == tokens[d] for d in step.deps))


def plan_status(plan: Plan) -> dict[str, str]:
    """key -> "run" or "skip", as run_experiment decides (a step runs if its marker is missing or stale, or if a
    step it reads runs)."""
    tokens: dict[str, str | None] = {}
    status: dict[str, str] = {}
    for st in plan.steps:
        m = _marker(st)
        status[st.key] = "skip" if _up_to_date(st, m, tokens) else "run"
        tokens[st.key] = m.get("token") if m and status[st.key] == "skip" else None
    return status


def run_experiment(cfg: ExperimentConfig, dry_run: bool = False, echo: Callable[[str], None] | None = None,
                   summary_only: bool = False) -> dict:
    """Run (or resume) the experiment; returns {"ran": [...], "skipped": [...], "summary": ..., "plan": Plan}.
    `summary_only`: run nothing, only summarize steps already done (the base model need not be here)."""
    echo = echo or (lambda s: print(s, file=sys.stderr, flush=True))
    out = Path(cfg.out)
    if out.exists() and any(out.iterdir()) and not (out / "experiment.json").is_file():
        raise SeedVLMError(f"out {out} exists, is not empty and holds no experiment.json; refusing to write into it")
    if not cfg.world and cfg.world_options is None:
        raise SeedVLMError("set world (an existing world folder) or world_options (to generate OUT/world)")
    if cfg.world and not (Path(cfg.world) / "instances_val.json").is_file():
        raise SeedVLMError(f"world {cfg.world}: no instances_val.json (generate it with `seedvlm world`, or leave "
                           "world empty and set world_options)")
    if not summary_only and not Path(cfg.base_model).is_dir():
        raise SeedVLMError(f"base_model {cfg.base_model} not found (train one with `seedvlm pretrain`)")
    plan = Plan(cfg)
    status = plan_status(plan)
    todo = [s for s in plan.steps if status[s.key] == "run"]
    variants = sorted({v for vs in plan.variants.values() for v in vs})
    echo(f"experiment {out}: {len(plan.steps)} steps, {len(todo)} to run, {len(plan.steps) - len(todo)} done "
         f"earlier; seeds {cfg.seeds}, arms {cfg.arms}, variants {variants}")
    if summary_only:
        missing = [k for k, v in status.items() if v == "run"]
        if missing:
            raise SeedVLMError(f"--summary-only: {len(missing)} step(s) of the plan are not done in {out} (first: "
                               f"{', '.join(missing[:3])}); run the experiment, or narrow --seeds / --arms")
        summary = summarize(plan)
        echo(f"experiment {out}: summary of {len(plan.steps)} finished steps: {out / 'summary.md'}")
        return {"ran": [], "skipped": [s.key for s in plan.steps], "plan": plan, "status": status, "summary": summary}
    if dry_run:
        for i, st in enumerate(plan.steps, 1):
            echo(f"  [{i}/{len(plan.steps)}] {status[st.key]:4s} {st.key}: {st.describe}")
        return {"ran": [], "skipped": [], "plan": plan, "status": status, "summary": None}
    if cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "experiment.json", dataclasses.asdict(cfg))

    t0 = time.perf_counter()
    durations: dict[str, list[float]] = {}
    tokens: dict[str, str | None] = {}
    ran: list[str] = []
    skipped: list[str] = []
    n = len(plan.steps)
    for i, st in enumerate(plan.steps, 1):
        m = _marker(st)
        if _up_to_date(st, m, tokens):
            tokens[st.key] = m["token"]
            skipped.append(st.key)
            echo(f"[{i}/{n}] {st.key}: done earlier, skipped")
            continue
        rest = [s for s in plan.steps[i - 1:] if status[s.key] == "run" or s is st]
        echo(f"[{i}/{n}] {st.key}: {st.describe} | elapsed {_hms(time.perf_counter() - t0)}, "
             f"ETA {_eta(rest, durations)}")
        marker = st.folder / MARKER
        if marker.exists():
            marker.unlink()
        if st.kind != "train" and st.folder.exists():   # a training run may continue from its checkpoint
            shutil.rmtree(st.folder)
        st.folder.mkdir(parents=True, exist_ok=True)
        st.dep_tokens = {d: tokens[d] for d in st.deps}
        t = time.perf_counter()
        st.run(st)
        seconds = time.perf_counter() - t
        durations.setdefault(st.kind, []).append(seconds)
        token = uuid.uuid4().hex
        write_json(marker, {"key": st.key, "settings": st.settings, "deps": st.dep_tokens, "token": token,
                            "seconds": round(seconds, 2), "finished": _now()})
        tokens[st.key] = token
        ran.append(st.key)
        echo(f"[{i}/{n}] {st.key}: done in {_hms(seconds)}")
        gc.collect()
        _empty_cuda_cache()
    summary = summarize(plan)
    echo(f"experiment {out}: {len(ran)} steps run, {len(skipped)} skipped, {_hms(time.perf_counter() - t0)}; "
         f"summary: {out / 'summary.md'}")
    return {"ran": ran, "skipped": skipped, "plan": plan, "status": status, "summary": summary}


def _eta(rest: list[Step], durations: dict[str, list[float]]) -> str:
    done = [x for v in durations.values() for x in v]
    if not done:
        return "? (no step finished yet)"
    overall = sum(done) / len(done)
    total = sum((sum(durations[s.kind]) / len(durations[s.kind])) if durations.get(s.kind) else overall
                for s in rest)
    return f"{_hms(total)} for {len(rest)} steps (from {len(done)} finished)"


def _empty_cuda_cache() -> None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
