"""Image identity for the leakage guard: a COCO image id parsed from the file name, else a hash of the file's bytes.

COCO ships one image under several names: `COCO_train2014_000000000074.jpg`, `COCO_val2014_000000000074.jpg`,
`000000000074.jpg` (train2017 / val2017, as LLaVA-Instruct names them). train2017 holds most of val2014 under the
same ids, so comparing names lets trained-on images into POPE and CHAIR; comparing ids does not.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Iterable

# COCO_{train,val,test}{2014,2015}_<12 digits>.ext, or a bare <12 digits>.ext (2017 splits, LLaVA-Instruct).
_COCO_RE = re.compile(r"^(?:COCO_(?:train|val|test)20(?:14|15)_)?(\d{12})\.(?:jpe?g|png)$", re.IGNORECASE)
_HASH_CHUNK = 1 << 20


def coco_id(name: str) -> int | None:
    """The COCO image id in a file name (any folder prefix ignored), or None when it follows no COCO scheme."""
    m = _COCO_RE.match(Path(name).name)
    return int(m.group(1)) if m else None


def content_hash(path: str | Path) -> str:
    """sha256 of a file's bytes (the identity of an image without a COCO id)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_HASH_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def image_identity(names: Iterable[str], root: str | Path) -> dict:
    """The manifest's record of training images: {"coco_ids": [...], "sha256": {name: hash}} -- COCO ids for the
    names that carry one, content hashes (of the files under `root`) for the rest."""
    ids: set[int] = set()
    hashes: dict[str, str] = {}
    for name in sorted(set(names)):
        cid = coco_id(name)
        if cid is not None:
            ids.add(cid)
        else:
            hashes[name] = content_hash(Path(root) / name)
    return {"coco_ids": sorted(ids), "sha256": hashes}
