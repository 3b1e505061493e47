"""Trainer callbacks: per-step metrics (metrics.jsonl), the reference implementation's log line, the NaN/Inf guard,
and the state that must survive a resume (the b history, the NaN counters) as a JSON file in every checkpoint."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import torch
from transformers import ProgressCallback, TrainerCallback

from seedvlm.errors import SeedVLMError
from seedvlm.io import read_json, write_json, write_text

SEED_STATE_FILE = "seedvlm_state.json"
METRICS_FILE = "metrics.jsonl"
# Per micro-batch sums reduced across ranks, in this order.
_FIELDS = ("loss", "distill", "sup", "beta", "conf", "micro", "samples", "nonfinite")


def _finite_or_none(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


class StepAccumulator:
    """Sums over the micro-batches of one optimizer step (reset after every step)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.sums = {k: 0.0 for k in _FIELDS}
        self.has_seed = False

    def add(self, parts: dict[str, float], n_samples: int, beta: torch.Tensor | None, conf: torch.Tensor | None,
            finite: bool) -> None:
        s = self.sums
        s["micro"] += 1
        s["samples"] += n_samples
        if not finite:
            s["nonfinite"] += 1
            return
        s["loss"] += parts.get("loss", 0.0)
        s["distill"] += parts.get("distill", 0.0)
        s["sup"] += parts.get("ce", 0.0)
        if beta is not None and conf is not None:
            self.has_seed = True
            s["beta"] += float(beta.float().sum())
            s["conf"] += float(conf.float().sum())

    def as_tensor(self, device) -> torch.Tensor:
        return torch.tensor([self.sums[k] for k in _FIELDS], dtype=torch.float64, device=device)


def _nonfinite_grads(trainer, device) -> torch.Tensor:
    """[1.] if this step's global gradient norm (transformers computes it before every optimizer step; SeedTrainer
    keeps it) is inf or NaN, else [0.]: no extra pass over the gradients, no device sync."""
    norm, trainer.last_grad_norm = getattr(trainer, "last_grad_norm", None), None
    if norm is None:
        return torch.zeros(1, dtype=torch.float64, device=device)
    return (~torch.isfinite(torch.as_tensor(norm, dtype=torch.float64))).to(device).reshape(1)


class SeedMonitor(TrainerCallback):
    """The NaN/Inf guard, metrics.jsonl (rank 0) and the numbers behind the log line.

    NaN guard: if any micro-batch of an optimizer step (on any rank) had a non-finite loss, or any gradient is
    non-finite (a finite bf16 loss can still give inf/NaN gradients, and one such update makes every LoRA weight
    NaN), every gradient is dropped before `optimizer.step()` (grads set to None, so AdamW changes neither weights
    nor moments); the step still counts (data consumed, LR schedule advanced) and is flagged in metrics.jsonl
    (`skipped`, and `bad_grads` when the loss was finite). After `max_consecutive` such steps in a row training
    stops with a SeedVLMError; the last good checkpoint is untouched.
    """

    def __init__(self, trainer, max_consecutive: int = 5) -> None:
        self.trainer = trainer
        self.max_consecutive = int(max_consecutive)
        self.nan_steps = 0          # total skipped steps
        self.nan_consecutive = 0    # skipped steps in a row
        self.pending: dict[str, Any] | None = None
        self.since_log: list[dict[str, Any]] = []
        self.t0 = time.time()
        self.step0 = 0
        self.samples_seen = 0.0

    # -- state that travels in checkpoints -----------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"nan_steps": self.nan_steps, "nan_consecutive": self.nan_consecutive}

    def load_state_dict(self, state: dict) -> None:
        self.nan_steps = int(state.get("nan_steps", 0))
        self.nan_consecutive = int(state.get("nan_consecutive", 0))

    @property
    def metrics_path(self) -> Path:
        return Path(self.trainer.args.output_dir) / METRICS_FILE

    # -- events ----------------------------------------------------------------------------------------------------
    def on_train_begin(self, args, state, control, **kwargs):
        self.t0 = time.time()
        self.step0 = state.global_step
        self.samples_seen = 0.0
        self.trainer.step_acc.reset()
        if state.is_world_process_zero:
            truncate_metrics(self.metrics_path, state.global_step)

    def on_pre_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        acc = self.trainer.step_acc
        local = torch.cat([acc.as_tensor(args.device), _nonfinite_grads(self.trainer, args.device)])
        totals = self.trainer.accelerator.reduce(local, reduction="sum").tolist()
        t = dict(zip(_FIELDS, totals))
        bad_grads = totals[len(_FIELDS)] > 0  # a finite loss can still give inf/NaN gradients (seen in bf16)
        skipped = t["nonfinite"] > 0 or bad_grads
        if skipped:
            (optimizer or self.trainer.optimizer).zero_grad(set_to_none=True)
            for p in self.trainer.model.parameters():
                p.grad = None
        good_micro = max(t["micro"] - t["nonfinite"], 1)
        good_samples = t["samples"] if not skipped else 0
        row = {
            "loss": None if skipped else t["loss"] / good_micro,
            "distill": (t["distill"] / good_micro) if acc.has_seed and not skipped else None,
            "sup": None if skipped else t["sup"] / good_micro,
            "beta": (t["beta"] / good_samples) if acc.has_seed and good_samples else None,
            "conf": (t["conf"] / good_samples) if acc.has_seed and good_samples else None,
            "lr": self.trainer._get_learning_rate(),
            "skipped": bool(skipped),
            "bad_grads": bool(bad_grads),
        }
        self.samples_seen += t["samples"]
        self.pending = row
        acc.reset()

    def on_step_end(self, args, state, control, **kwargs):
        row = self.pending or {}
        self.pending = None
        if row.get("skipped"):
            self.nan_steps += 1
            self.nan_consecutive += 1
        else:
            self.nan_consecutive = 0
        elapsed = max(time.time() - self.t0, 1e-9)
        done = max(state.global_step - self.step0, 1)
        full = {"step": state.global_step, "epoch": _finite_or_none(state.epoch),
                **{k: (_finite_or_none(v) if isinstance(v, float) else v) for k, v in row.items()},
                "nan_steps": self.nan_steps, "samples_per_s": self.samples_seen / elapsed,
                "eta_s": (state.max_steps - state.global_step) * elapsed / done, "elapsed_s": elapsed}
        self.since_log.append(full)
        if state.is_world_process_zero:
            with self.metrics_path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(full) + "\n")
        if self.nan_consecutive >= self.max_consecutive:
            raise SeedVLMError(
                f"training stopped at step {state.global_step}: {self.nan_consecutive} optimizer steps in a row had "
                f"a non-finite loss or gradient (NaN/Inf) and were skipped ({self.nan_steps} in all). Try a lower "
                f"learning_rate, dtype fp32, or max_grad_norm; the last good checkpoint in {args.output_dir} is intact")

    def log_fields(self) -> dict[str, float]:
        """Means since the last log line (merged into the Trainer's logs, so TensorBoard gets them too)."""
        rows, self.since_log = self.since_log, []
        if not rows:
            return {}
        out: dict[str, float] = {}
        for key in ("distill", "sup", "beta", "conf"):
            vals = [r[key] for r in rows if r.get(key) is not None]
            if vals:
                out[key] = sum(vals) / len(vals)
        last = rows[-1]
        out.update(nan_steps=float(self.nan_steps), samples_per_s=last["samples_per_s"], eta_s=last["eta_s"])
        return out


def _fmt_time(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def format_log_line(logs: dict[str, Any], step: int, max_steps: int) -> str:
    """The reference implementation's log line: step, Loss, Dist, Sup, Beta, Conf, LR, NaN count, samples/s, ETA."""
    parts = [f"step {step}/{max_steps}"]
    for key, label, fmt in (("loss", "Loss", ".4f"), ("distill", "Dist", ".4f"), ("sup", "Sup", ".4f"),
                            ("beta", "Beta", ".3f"), ("conf", "Conf", ".3f"), ("learning_rate", "LR", ".2e")):
        if isinstance(logs.get(key), (int, float)):
            parts.append(f"{label} {logs[key]:{fmt}}")
    if "nan_steps" in logs:
        parts.append(f"NaN {int(logs['nan_steps'])}")
    if "samples_per_s" in logs:
        parts.append(f"{logs['samples_per_s']:.2f} samples/s")
    if "eta_s" in logs:
        parts.append(f"ETA {_fmt_time(logs['eta_s'])}")
    return " | ".join(parts)


class SeedProgressCallback(ProgressCallback):
    """transformers' tqdm progress bar, with the reference implementation's log line instead of the raw dict."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not (state.is_world_process_zero and self.training_bar is not None and logs):
            return
        if "train_runtime" in logs:
            self.training_bar.write(f"done: {logs.get('train_runtime', 0):.1f} s, "
                                    f"{logs.get('train_samples_per_second', 0):.2f} samples/s, "
                                    f"mean loss {logs.get('train_loss', float('nan')):.4f}")
            return
        self.training_bar.write(format_log_line(logs, state.global_step, state.max_steps))


def truncate_metrics(path: Path, last_step: int) -> None:
    """Keep only metrics.jsonl rows with step <= last_step (a resumed run rewrites the steps after its checkpoint);
    last_step 0 empties it."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a crash
        if isinstance(row, dict) and int(row.get("step", 0)) <= last_step:
            keep.append(line + "\n")
    write_text(path, "".join(keep))


def save_seed_state(folder: str | Path, beta_schedule, monitor: SeedMonitor | None,
                    data: dict | None = None) -> None:
    """Write seedvlm_state.json: the b history (BetaSchedule.state_dict, plain JSON), the NaN counters and the data
    position (`data`: global batch, processes, samples consumed; see SeedTrainer.data_position)."""
    write_json(Path(folder) / SEED_STATE_FILE, {
        "beta_schedule": beta_schedule.state_dict() if beta_schedule is not None else None,
        "monitor": monitor.state_dict() if monitor is not None else None,
        "data": data,
    }, indent=None)


def load_seed_state(folder: str | Path, beta_schedule, monitor: SeedMonitor | None) -> bool:
    """Restore what save_seed_state wrote; False if the checkpoint has no such file (e.g. an SFT run's)."""
    p = Path(folder) / SEED_STATE_FILE
    if not p.is_file():
        return False
    state = read_json(p, "seedvlm checkpoint state")
    if beta_schedule is not None and state.get("beta_schedule"):
        beta_schedule.load_state_dict(state["beta_schedule"])
    if monitor is not None and state.get("monitor"):
        monitor.load_state_dict(state["monitor"])
    return True
