"""The one rule for every output: a command writes only what it creates.

- A file target that is a folder, or a folder target that is a file, is refused in one line.
- An existing folder is replaced or written into only when seedvlm wrote it: it is empty, holds the marker file
  `.seedvlm-output`, or holds a file that only a seedvlm output has (`SIGNATURES`); anything else is refused.
- The target is checked up front (`check_file_target`, `check_dir_target`): a read-only, full or mistyped path
  fails before any model loads, not after the run.
- Overwriting a training run moves the previous run aside (`stash_run`) and deletes it only once the new run has
  written its first checkpoint (`commit_stash`); a run that fails before that gets the previous one back
  (`rollback_pending`, called on every error path of the CLI), so a failed overwrite loses nothing and never
  mixes old and new files.
- A checkpoint save that fails (`guard_checkpoint_save`) says so in one line, says when the disk is full, removes
  its partial folder and leaves the previous checkpoint as it was.
"""

from __future__ import annotations

import errno
import fnmatch
import functools
import logging
import os
import shutil
from pathlib import Path
from typing import Callable

from seedvlm.errors import SeedVLMError, os_error

log = logging.getLogger(__name__)

MARKER = ".seedvlm-output"
# Files that only seedvlm outputs hold: a world, POPE questions, a teacher cache, an adapter, a merged model,
# a base model from `pretrain`.
SIGNATURES = (MARKER, "world.json", "meta.json", "index.json", "seedvlm_base.json", "seedvlm_merge.json",
              "pretrain.json")
# What `seedvlm experiment` keeps in a step's folder beside the command's own output (the step's log, its
# done/started markers, the captions it scores): a folder holding only these and the command's files is seedvlm's.
STEP_FILES = ("log.txt", "done.json", "started.json", "captions.jsonl")
STASH = ".previous-run"
_LOW_SPACE = 64 * 2 ** 20  # bytes free under which a failed write is blamed on a full disk


def owned_by(*names: str) -> Callable[[Path], bool]:
    """A test for "seedvlm wrote this folder": it is empty, or holds the marker or one of `names`."""

    def owns(folder: Path) -> bool:
        folder = Path(folder)
        return not any(folder.iterdir()) or any((folder / n).exists() for n in (MARKER, *names))

    return owns


is_own_output = owned_by(*SIGNATURES)


def only_holds(*patterns: str) -> Callable[[Path], bool]:
    """A test for a folder a command writes files into: marked, or holding nothing but files whose names match
    the patterns (shell-style, e.g. "*.png")."""

    def owns(folder: Path) -> bool:
        entries = list(Path(folder).iterdir())
        return (Path(folder) / MARKER).exists() or all(
            p.is_file() and any(fnmatch.fnmatchcase(p.name, pat) for pat in patterns) for p in entries)

    return owns


def mark(folder: str | os.PathLike) -> Path:
    """Create `folder` if needed and put the marker in it (it is then this command's output)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / MARKER).touch()
    except OSError as e:
        raise os_error(e, folder) from None
    return folder


def not_ours(target: str, action: str) -> str:
    return (f"{target} is a folder that is not empty and that seedvlm did not write (no {MARKER}); refusing to "
            f"{action} it: give a new or empty folder")


def _existing_ancestor(path: Path, what: str, target: Path | None = None) -> Path:
    """The nearest existing folder above (or at) `path`; a file on the way is an error naming `target`."""
    for parent in (path, *path.parents):
        if parent.exists():
            if not parent.is_dir():
                raise SeedVLMError(f"{what} {target or path}: {parent} is a file, not a folder; choose another path")
            return parent
    return Path.cwd()


def probe_writable(folder: Path, target: Path) -> None:
    """Create and delete a small file in `folder`: a read-only, full or forbidden place fails now, naming `target`."""
    probe = folder / f".seedvlm-probe-{os.getpid()}"
    try:
        fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        try:
            os.write(fd, b"probe")
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as e:
        raise os_error(e, target) from None


def check_file_target(path: str | os.PathLike, what: str = "--out") -> Path:
    """An output FILE path that can be written: not a folder, no file on the way, a writable folder."""
    path = Path(path)
    if path.is_dir():
        raise SeedVLMError(f"{what} {path} is a folder; give a file path (e.g. {path / 'out.json'})")
    probe_writable(_existing_ancestor(path.parent, what, path), path)
    return path


def check_dir_target(path: str | os.PathLike, what: str = "--out",
                     owns: Callable[[Path], bool] = is_own_output) -> Path:
    """An output FOLDER that can be written: new, empty or seedvlm's own (`owns`), writable."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise SeedVLMError(f"{what} {path} is a file; give a folder path")
    if path.is_dir() and not owns(path):
        raise SeedVLMError(not_ours(f"{what} {path}", "write into"))
    probe_writable(path if path.is_dir() else _existing_ancestor(path.parent, what, path), path)
    return path


def check_replace(path: Path, payload: Path, owns: Callable[[Path], bool] = is_own_output) -> None:
    """Before `payload` replaces `path`: the kinds match, and a folder replaced is seedvlm's own."""
    if not path.exists() and not path.is_symlink():
        return
    if path.is_dir() and not path.is_symlink():
        if not payload.is_dir():
            raise SeedVLMError(f"{path} is a folder; give a file path (nothing was written)")
        if not owns(path):
            raise SeedVLMError(not_ours(str(path), "replace"))
    elif payload.is_dir():
        raise SeedVLMError(f"{path} is a file; give a folder path (nothing was written)")


# --------------------------------------------------------------------------------------------- overwriting a run
_pending: list[Path] = []


def stash_run(out: str | os.PathLike) -> None:
    """Move everything in the run folder `out` into `out/.previous-run`, to be deleted by `commit_stash` once the
    new run has its first checkpoint, or put back by `rollback_pending` if it fails before."""
    out = Path(out)
    stash = out / STASH
    if stash.exists():
        raise SeedVLMError(f"{stash} holds a run kept aside by an overwrite that stopped before its first "
                           f"checkpoint; put it back (mv {stash}/* {stash}/.[!.]* {out}/ ; rmdir {stash}) or delete "
                           f"it, then run again")
    entries = [p for p in out.iterdir()]
    try:
        stash.mkdir()
        for p in entries:
            os.replace(p, stash / p.name)
    except OSError as e:
        raise os_error(e, out) from None
    _pending.append(out.resolve())
    log.info("the previous run in %s is kept in %s until this run writes its first checkpoint", out, stash)


def commit_stash(out: str | os.PathLike) -> None:
    """The new run in `out` has a checkpoint: the previous run it overwrites is deleted now."""
    out = Path(out).resolve()
    if out in _pending:
        _pending.remove(out)
        shutil.rmtree(out / STASH, ignore_errors=True)


def rollback_pending() -> list[Path]:
    """Put back every previous run whose overwrite failed before its first checkpoint (this process's); the new
    run's files are removed. Returns the run folders restored."""
    restored = []
    while _pending:
        out = _pending.pop()
        stash = out / STASH
        if not stash.is_dir():
            continue
        for p in out.iterdir():
            if p.name != STASH:
                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
        for p in stash.iterdir():
            os.replace(p, out / p.name)
        stash.rmdir()
        restored.append(out)
    return restored


def commits_overwrite(save: Callable) -> Callable:
    """Decorates a Trainer method that writes a complete output (the final adapter): once it succeeds, the
    previous run an overwrite kept aside is deleted (a run that writes no checkpoint commits here)."""

    @functools.wraps(save)
    def wrapper(trainer, *args, **kwargs):
        result = save(trainer, *args, **kwargs)
        commit_stash(trainer.args.output_dir)
        return result

    return wrapper


# --------------------------------------------------------------------------------------------- checkpoint saves
_DISK_FULL = ("No space left", "os error 28", "StorageFull", "Disk quota")  # OS and Rust (safetensors) wording
_WRITE_FAILURES = ("unexpected pos", "PytorchStreamWriter failed", "file write failed", "IoError", *_DISK_FULL)


def is_write_failure(e: BaseException) -> bool:
    """An OS error, or a library's error text for a failed write (torch's zip writer reports a full disk only as
    "unexpected pos N vs M")."""
    return isinstance(e, OSError) or any(s in str(e) for s in _WRITE_FAILURES)


def disk_is_full(e: BaseException, folder: Path) -> bool:
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if any(s in str(e) for s in _DISK_FULL):
        return True
    try:
        return shutil.disk_usage(_existing_ancestor(folder, "output")).free < _LOW_SPACE
    except OSError:
        return False


def write_failure_message(what: str, folder: Path, e: BaseException) -> str:
    """One line for a failed write of `what` into `folder`: the disk is full, or the OS error, or the library's."""
    if disk_is_full(e, folder):
        try:
            free = f" ({shutil.disk_usage(_existing_ancestor(folder, 'output')).free / 2 ** 20:.0f} MiB free)"
        except OSError:
            free = ""
        return f"{what} in {folder} failed: the disk is full{free}"
    if isinstance(e, OSError):
        return f"{what} failed: {os_error(e)}"
    return f"{what} in {folder} failed: {str(e).splitlines()[0] if str(e) else type(e).__name__}"


def guard_checkpoint_save(save: Callable) -> Callable:
    """Decorates a Trainer's `_save_checkpoint(model, trial)`: a failed save becomes one line (disk full said so),
    its partial `.checkpoint-*.tmp` folder is removed and the previous checkpoint stays; a successful save commits
    an overwrite (`commit_stash`)."""

    @functools.wraps(save)
    def wrapper(trainer, *args, **kwargs):
        run_dir = Path(trainer.args.output_dir)
        try:
            result = save(trainer, *args, **kwargs)
        except SeedVLMError:
            raise
        except (OSError, RuntimeError, ValueError) as e:
            if not is_write_failure(e):
                raise
            message = write_failure_message(f"saving checkpoint-{trainer.state.global_step}", run_dir, e)
            for partial in run_dir.glob(".checkpoint-*.tmp"):
                shutil.rmtree(partial, ignore_errors=True)
            steps = [int(p.name.split("-")[1]) for p in run_dir.glob("checkpoint-*")
                     if p.is_dir() and p.name.split("-")[1].isdigit()]
            previous = (f"the previous checkpoint checkpoint-{max(steps)} is intact; free space and continue with "
                        f"--resume auto") if steps else "no earlier checkpoint was lost; free space and run again"
            raise SeedVLMError(f"{message}; {previous}") from None
        commit_stash(run_dir)
        return result

    return wrapper
