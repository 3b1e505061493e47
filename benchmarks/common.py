"""What every benchmark records beside its numbers: the device by name, a synchronize before reading a clock,
and the git commit the figures came from."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path

import torch


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
