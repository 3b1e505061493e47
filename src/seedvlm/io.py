"""Safe file I/O: atomic writes (temp file, then rename), JSON/JSONL reading with errors that name the file,
and path resolution that refuses to leave a given folder."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from seedvlm.errors import SeedVLMError, empty_file, not_found, not_utf8, os_error
from seedvlm.outputs import check_replace, is_own_output, is_write_failure, write_failure_message


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, owns: Callable[[Path], bool] = is_own_output) -> Iterator[Path]:
    """Yield a temp path beside `path`; on success rename it onto `path`, on error delete it.

    Works for files and folders: whatever the caller writes at the yielded path replaces `path` whole,
    so a crash or Ctrl-C never leaves a half-written output behind. An existing folder is replaced only when
    `owns` says seedvlm wrote it (`seedvlm.outputs`); a file never replaces a folder, nor a folder a file.
    An OS error while writing (read-only, disk full) is one line naming `path`; the previous output stays.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    except OSError as e:
        raise os_error(e, path) from None
    target = tmp / "payload"
    try:
        try:
            yield target
        except OSError as e:
            if e.filename is not None and tmp not in Path(e.filename).parents:
                raise  # the caller's own error (e.g. reading an input), not a write of this output
            raise os_error(e, path) from None
        except Exception as e:  # a library's own error for a failed write (safetensors, torch's zip writer)
            if isinstance(e, SeedVLMError) or not is_write_failure(e):
                raise
            raise SeedVLMError(write_failure_message(f"writing {path}", path.parent, e)) from None
        check_replace(path, target, owns)
        if path.is_dir() and not path.is_symlink():
            old = path.with_name(f".{path.name}.old.{os.getpid()}")
            os.replace(path, old)
            os.replace(target, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(target, path)
    except OSError as e:
        raise os_error(e, path) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write text atomically (a folder at `path` is refused before anything is written)."""
    if Path(path).is_dir():
        raise SeedVLMError(f"{path} is a folder; give a file path")
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> Path:
    """Write JSON atomically (keys in insertion order, so equal inputs give equal bytes)."""
    return write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")


def write_png(path: str | os.PathLike, fig: Any) -> Path:
    """Save a matplotlib figure as PNG atomically, then close it (figures are not kept open)."""
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> Path:
    """Write one JSON object per line, atomically."""
    return write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def read_json(path: str | os.PathLike, what: str = "JSON file") -> Any:
    """Read JSON; a missing or malformed file raises SeedVLMError naming the file and the problem."""
    path = _input_file(path, what)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise not_utf8(what, path, e) from None
    except OSError as e:
        raise os_error(e, path) from None
    if not text.strip():
        raise empty_file(what, path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise SeedVLMError(f"malformed {what} {path}: {e.msg} at line {e.lineno} column {e.colno}") from None


def _input_file(path: str | os.PathLike, what: str) -> Path:
    """`path` as a Path if it is an existing file; a missing path or a folder is an error naming it."""
    path = Path(path)
    if path.is_dir():
        raise SeedVLMError(f"{what} {path} is a folder; give a file path")
    if not path.is_file():
        raise not_found(what, path)
    return path


def read_jsonl(path: str | os.PathLike, what: str = "JSONL file") -> list[dict]:
    """Read JSON Lines (blank lines skipped); errors name the file and the line. Empty files are the caller's
    to judge (`empty_file` words it)."""
    path = _input_file(path, what)
    rows = []
    try:
        data = path.read_bytes()
    except OSError as e:
        raise os_error(e, path) from None
    for i, raw in enumerate(data.splitlines(), 1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise not_utf8(what, path, e, line=i) from None
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


def _image_limit() -> int:
    from PIL import Image

    return int(Image.MAX_IMAGE_PIXELS or 0)


def check_image(path: str | os.PathLike, what: str = "image") -> None:
    """Read only the header of an image: an unreadable file or one larger than PIL's decompression-bomb limit
    (Image.MAX_IMAGE_PIXELS) is an error naming it, before any model loads."""
    open_image(path, what, decode=False)


def open_image(path: str | os.PathLike, what: str = "image", decode: bool = True):
    """The image at `path` as RGB; unreadable, truncated or oversized images are one error naming the file."""
    import warnings

    from PIL import Image

    path = _input_file(path, what)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                limit = _image_limit()
                if limit and w * h > limit:
                    raise SeedVLMError(f"{what} {path} is {w}x{h} pixels, over the limit of {limit} pixels "
                                       f"(PIL's decompression-bomb guard); resize it")
                return im.convert("RGB") if decode else None
    except SeedVLMError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise SeedVLMError(f"cannot read {what} {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
                           ) from None


def duplicates(ids: Iterable) -> list:
    """The ids that occur more than once, in order of their second occurrence."""
    seen, repeated = set(), []
    for i in ids:
        if i in seen and i not in repeated:
            repeated.append(i)
        seen.add(i)
    return repeated
