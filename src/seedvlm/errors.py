"""The one exception type that the CLI turns into a clear message and a non-zero exit, and the wording of the
problems every command meets (a missing, empty or non-UTF-8 file, an OS error on a path, an unknown name), so the
same problem reads the same everywhere."""

from __future__ import annotations

import difflib
import errno
import os
from typing import Iterable


class SeedVLMError(Exception):
    """A user-facing error: bad input, missing file, mismatched model. The message names the culprit."""


def not_found(what: str, path: str | os.PathLike) -> SeedVLMError:
    return SeedVLMError(f"{what} not found: {path}")


def empty_file(what: str, path: str | os.PathLike) -> SeedVLMError:
    return SeedVLMError(f"{what} {path} is empty")


def not_utf8(what: str, path: str | os.PathLike, e: UnicodeDecodeError, line: int | None = None) -> SeedVLMError:
    where = f" line {line}" if line is not None else ""
    return SeedVLMError(f"{what} {path}{where} is not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset "
                        f"{e.start}); save it as UTF-8")


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """' (did you mean X?)' for the closest known name, or '' when none is close."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


_ADVICE = {
    errno.ENOSPC: "no space left on the device; free some space (completed outputs are intact) and run again",
    errno.EDQUOT: "disk quota exceeded; free some space (completed outputs are intact) and run again",
    errno.EROFS: "the file system is read-only; choose an output path on a writable disk",
    errno.EACCES: "permission denied; choose a path you may write, or fix its permissions",
    errno.EPERM: "operation not permitted; choose a path you may write, or fix its permissions",
    errno.EEXIST: "it already exists; choose a new path",
    errno.ENOTDIR: "a part of the path is a file, not a folder; choose another path",
    errno.EISDIR: "it is a folder, expected a file; give a file path",
    errno.ENOENT: "no such file or folder",
    errno.ENOTEMPTY: "the folder is not empty; choose a new or empty folder",
    errno.ENAMETOOLONG: "the name is too long; choose a shorter path",
}


def os_error_message(e: OSError, path: str | os.PathLike | None = None) -> str:
    """One line for an OS error: the path, the problem and what to do (the errno decides the advice)."""
    where = path if path is not None else (e.filename if e.filename is not None else "")
    advice = _ADVICE.get(e.errno, e.strerror or str(e))
    return f"{where}: {advice}" if where != "" else advice


def os_error(e: OSError, path: str | os.PathLike | None = None) -> SeedVLMError:
    return SeedVLMError(os_error_message(e, path))
