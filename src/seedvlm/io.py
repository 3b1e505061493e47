"""Safe file I/O: atomic writes (temp file, then rename), JSON/JSONL reading with errors that name the file,
and path resolution that refuses to leave a given folder."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

from seedvlm.errors import SeedVLMError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside `path`; on success rename it onto `path`, on error delete it.

    Works for files and folders: whatever the caller writes at the yielded path replaces `path` whole,
    so a crash or Ctrl-C never leaves a half-written output behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    target = tmp / "payload"
    try:
        yield target
        if path.is_dir() and not path.is_symlink():
            old = path.with_name(f".{path.name}.old.{os.getpid()}")
            os.replace(path, old)
            os.replace(target, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(target, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write text atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> Path:
    """Write JSON atomically (keys in insertion order, so equal inputs give equal bytes)."""
    return write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> Path:
    """Write one JSON object per line, atomically."""
    return write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def read_json(path: str | os.PathLike, what: str = "JSON file") -> Any:
    """Read JSON; a missing or malformed file raises SeedVLMError naming the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise SeedVLMError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise SeedVLMError(f"malformed {what} {path}: {e.msg} at line {e.lineno} column {e.colno}") from None
    except UnicodeDecodeError as e:
        raise SeedVLMError(f"{what} {path} is not UTF-8 text: {e}") from None


def read_jsonl(path: str | os.PathLike, what: str = "JSONL file") -> list[dict]:
    """Read JSON Lines (blank lines skipped); errors name the file and the line."""
    path = Path(path)
    if not path.is_file():
        raise SeedVLMError(f"{what} not found: {path}")
    rows = []
    with path.open(encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise SeedVLMError(f"malformed {what} {path} line {i}: {e.msg}") from None
            if not isinstance(row, dict):
                raise SeedVLMError(f"{what} {path} line {i}: expected a JSON object, got {type(row).__name__}")
            rows.append(row)
    return rows


def safe_join(root: str | os.PathLike, name: str, what: str = "image") -> Path:
    """Resolve `name` inside `root`; absolute paths and `../` escapes are an error, not a read outside it."""
    root = Path(root).resolve()
    if not name or os.path.isabs(name):
        raise SeedVLMError(f"{what} path {name!r} must be relative to {root}")
    p = (root / name).resolve()
    if p != root and root not in p.parents:
        raise SeedVLMError(f"{what} path {name!r} escapes its folder {root}")
    return p


def require_dir(path: str | os.PathLike, what: str) -> Path:
    """Return `path` as a Path if it is an existing folder, else raise naming it."""
    p = Path(path)
    if not p.is_dir():
        raise SeedVLMError(f"{what} not found (expected a folder): {p}")
    return p
