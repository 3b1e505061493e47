"""The results of one evaluation run: `results.json` (metrics + everything needed to trust and repeat them) and
`samples.jsonl` (one line per question or caption). Both written atomically; samples first, so a results.json
always has its samples beside it."""

from __future__ import annotations

import datetime as _dt
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable

from seedvlm.io import write_json, write_jsonl
from seedvlm.outputs import STEP_FILES, check_dir_target, mark, only_holds

_PACKAGES = ("torch", "transformers", "peft", "seedvlm")
RESULT_FILES = ("results.json", "samples.jsonl")


def check_results_dir(out_dir: str | Path) -> Path:
    """An --out folder results can go to: new, empty, seedvlm's own, or holding only earlier results files;
    writable. Called before any model loads or any input is read."""
    return check_dir_target(out_dir, "--out", owns=only_holds(*RESULT_FILES, *STEP_FILES))


def git_state() -> tuple[str | None, bool | None]:
    """(commit hash, dirty) of the checkout seedvlm runs from; (None, None) outside a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None, None
    return commit or None, bool(status.strip())


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": sys.version.split()[0]}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _plain(value: Any) -> Any:
    """Config values as JSON: paths as strings, tuples as lists."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def write_results(out_dir: str | Path, task: str, metrics: dict, samples: Iterable[dict], config: dict,
                  model: str | None = None, adapter: str | None = None) -> dict:
    """Write OUT/samples.jsonl and OUT/results.json; returns the results dict.

    results.json: {"task", <metrics at the top level>, "model", "adapter", "config", "git", "git_dirty",
    "versions", "time"}.
    """
    out_dir = Path(out_dir)
    commit, dirty = git_state()
    results = {"task": task, **metrics, "model": model, "adapter": adapter, "config": _plain(config),
               "git": commit, "git_dirty": dirty, "versions": versions(),
               "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    mark(out_dir)
    write_jsonl(out_dir / "samples.jsonl", samples)
    write_json(out_dir / "results.json", results)
    return results


def args_config(args: Any) -> dict:
    """An argparse namespace as a config dict (without the handler)."""
    return {k: _plain(v) for k, v in vars(args).items() if k not in ("func", "option_names") and not callable(v)}
