"""What the output tests share: a snapshot of a folder's files, and a fixture that makes every write under a folder
fail with a chosen errno (read-only or full disks, simulated: tests run as root, where chmod does not stop writes)."""

from __future__ import annotations

import builtins
import io
import os
from pathlib import Path

import pytest


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under root (hidden ones included) with its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def failing_writes(monkeypatch):
    """fail(root, errno): every write, create or rename under `root` raises OSError(errno) from then on."""

    def fail(root: Path, code: int) -> None:
        root = str(Path(root).resolve())

        def under(p) -> bool:
            try:
                return str(Path(os.fsdecode(p)).resolve()).startswith(root)
            except (TypeError, ValueError):
                return False

        def error(p):
            return OSError(code, os.strerror(code), os.fsdecode(p))

        real_open, real_os_open, real_mkdir, real_replace = builtins.open, os.open, os.mkdir, os.replace

        def fake_open(file, mode="r", *a, **k):
            if any(c in mode for c in "wax+") and not isinstance(file, int) and under(file):
                raise error(file)
            return real_open(file, mode, *a, **k)

        def fake_os_open(path, flags, *a, **k):
            if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and under(path):
                raise error(path)
            return real_os_open(path, flags, *a, **k)

        def fake_mkdir(path, *a, **k):
            if under(path):
                raise error(path)
            return real_mkdir(path, *a, **k)

        def fake_replace(src, dst, *a, **k):
            if under(dst):
                raise error(dst)
            return real_replace(src, dst, *a, **k)

        monkeypatch.setattr(builtins, "open", fake_open)
        monkeypatch.setattr(io, "open", fake_open)
        monkeypatch.setattr(os, "open", fake_os_open)
        monkeypatch.setattr(os, "mkdir", fake_mkdir)
        monkeypatch.setattr(os, "replace", fake_replace)

    return fail
