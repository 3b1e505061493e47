"""What every benchmark records beside its numbers: the device by name, a synchronize before reading a clock,
the git commit, versions and command line the figures came from; and how a report is printed and saved.

The benchmarks import the installed package (`make venv`, or `pip install -e .`) and this module as their sibling:
run them as `python benchmarks/NAME.py` (or `torchrun ... benchmarks/scaling.py`) from the repository root."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def setup_device(name: str, dtype_name: str | None, threads: int | None) -> tuple[torch.device, torch.dtype]:
    """The device (refusing cuda where none is visible), CPU threads, and the dtype (default: bf16 on cuda, fp32
    on cpu)."""
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but no CUDA device is visible")
    if threads:
        torch.set_num_threads(threads)
    return device, DTYPES[dtype_name or ("bfloat16" if device.type == "cuda" else "float32")]


def random_llava(config, device: torch.device, dtype: torch.dtype, seed: int = 0):
    """A randomly initialized LlavaForConditionalGeneration built directly on `device` in `dtype` (no fp32 copy
    on the host: a 13B model fits one card before FSDP shards it)."""
    from transformers import LlavaForConditionalGeneration

    torch.manual_seed(seed)
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlavaForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(old)
    return model.to(device=device, dtype=dtype)


def sync(device: torch.device) -> None:
    """Wait for queued GPU work so that a host clock measures it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU model and the torch thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu} ({torch.get_num_threads()} threads)"


def git_hash() -> str | None:
    """The short commit of the checkout, or None outside git."""
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def provenance(script: str, argv: list[str] | None, packages: tuple[str, ...] = ("transformers",)) -> dict:
    """{"versions", "git", "command"} of a benchmark run: python, torch, CUDA and `packages` versions, the commit,
    and the command line (script path relative to the repository root)."""
    import importlib

    versions = {"python": platform.python_version(), "torch": torch.__version__}
    versions.update({name: importlib.import_module(name).__version__ for name in packages})
    versions["cuda"] = torch.version.cuda
    root = Path(__file__).resolve().parents[1]
    args = argv if argv is not None else sys.argv[1:]
    return {"versions": versions, "git": git_hash(),
            "command": "python " + " ".join([os.path.relpath(script, root)] + list(args))}


def emit(report: dict, table: str, out: str | None) -> None:
    """Print the Markdown table; write the report as JSON (atomically) to `out` if given."""
    print(table)
    if out:
        from seedvlm.io import write_json

        write_json(out, report)
        print(f"wrote {out}", file=sys.stderr)
