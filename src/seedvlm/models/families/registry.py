"""Choosing a family from a checkpoint folder's config.json (model_type, then architectures) and checking that the
folder's processor belongs to the same family, before any weights load."""

from __future__ import annotations

import json
import os
from pathlib import Path

from seedvlm.errors import SeedVLMError
from seedvlm.models.families import llava, llava_next, qwen2_vl, smolvlm
from seedvlm.models.families.base import Family

FAMILIES: dict[str, Family] = {f.name: f for f in (llava.FAMILY, llava_next.FAMILY, qwen2_vl.FAMILY, smolvlm.FAMILY)}

# Files a saved processor may record its classes in (transformers writes one or more of them).
_PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json")


def get_family(name: str) -> Family:
    """A family by name, or a one-line SeedVLMError listing the supported ones."""
    if name not in FAMILIES:
        raise SeedVLMError(f"unknown model family {name!r}; supported: {', '.join(FAMILIES)}")
    return FAMILIES[name]


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SeedVLMError(f"{path}: not readable JSON ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise SeedVLMError(f"{path}: expected a JSON object")
    return data


def family_for_config(config: dict, where: str = "config.json") -> Family:
    """The family of a model config dict: by `model_type`, else by `architectures`; unsupported: one clear line."""
    model_type = config.get("model_type")
    archs = config.get("architectures") or []
    for fam in FAMILIES.values():
        if model_type in fam.model_types or (model_type is None and set(archs) & set(fam.architectures)):
            if fam.check_config is not None:
                fam.check_config(config, where)
            return fam
    supported = ", ".join(a for f in FAMILIES.values() for a in f.architectures)
    what = f"model_type {model_type!r}" + (f" ({', '.join(archs)})" if archs else "")
    raise SeedVLMError(f"{where}: {what} is not a supported architecture; supported: {supported}")


def read_model_config(folder: str | os.PathLike) -> tuple[Path, dict]:
    """(folder, its config.json as a dict), or a one-line SeedVLMError naming what is missing."""
    p = Path(folder)
    if not p.is_dir():
        raise SeedVLMError(f"model folder not found: {p}")
    cfg_path = p / "config.json"
    if not cfg_path.is_file():
        raise SeedVLMError(f"no config.json in model folder {p}")
    return p, _read_json(cfg_path)


def processor_classes(folder: Path) -> dict[str, str]:
    """The processor / image processor class names a saved folder records (file -> class), nested entries too."""
    found: dict[str, str] = {}
    for name in _PROCESSOR_FILES:
        f = folder / name
        if not f.is_file():
            continue
        data = _read_json(f)
        for key in ("processor_class", "image_processor_type"):
            if isinstance(data.get(key), str):
                found[f"{name}:{key}"] = data[key]
        nested = data.get("image_processor")
        if isinstance(nested, dict) and isinstance(nested.get("image_processor_type"), str):
            found[f"{name}:image_processor.image_processor_type"] = nested["image_processor_type"]
    return found


def check_processor_matches(family: Family, folder: Path) -> None:
    """Refuse a folder whose saved processor belongs to another family (one line naming the file and class)."""
    allowed = set(family.processor_classes) | set(family.image_processor_types)
    for where, cls in processor_classes(folder).items():
        if cls.endswith("Tokenizer") or cls.endswith("TokenizerFast"):
            continue
        if cls not in allowed:
            file, key = where.split(":", 1)
            raise SeedVLMError(f"{folder / file}: {key} {cls!r} does not match the model's family ({family.name}, "
                               f"{', '.join(family.architectures)}); expected one of {', '.join(sorted(allowed))}")


def saved_processor_settings(folder: Path) -> dict[str, tuple[str, object]]:
    """Every top-level setting the folder's processor files record (nested image_processor entries too), as
    key -> (file, value); the first file in `_PROCESSOR_FILES` order wins."""
    found: dict[str, tuple[str, object]] = {}
    for name in _PROCESSOR_FILES[:2]:
        f = folder / name
        if f.is_file():
            data = _read_json(f)
            nested = data.get("image_processor") if isinstance(data.get("image_processor"), dict) else {}
            for key, value in {**nested, **data}.items():
                found.setdefault(key, (name, value))
    return found


def check_processor_settings(family: Family, folder: Path) -> None:
    """Refuse a processor whose saved settings disagree with the model config (e.g. a patch size or SmolVLM's
    image_seq_len): the image token count would not match the image features. Uses the config class, no weights."""
    if family.processor_settings is None:
        return
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise SeedVLMError(f"{folder / 'config.json'}: not a valid model config ({str(e).splitlines()[0]})") from None
    saved = saved_processor_settings(folder)
    for key, want in family.processor_settings(config).items():
        if key in saved and saved[key][1] != want:
            file, have = saved[key]
            raise SeedVLMError(f"{folder / file}: {key} is {have!r} but the model's config.json implies {want!r}")


def detect_family(folder: str | os.PathLike, options: dict | None = None) -> Family:
    """The family of a checkpoint folder, its processor checked against it and `options` checked to belong to
    it; reads JSON and config classes only, so every failure comes before any weights load."""
    p, cfg = read_model_config(folder)
    fam = family_for_config(cfg, str(p / "config.json"))
    check_processor_matches(fam, p)
    check_processor_settings(fam, p)
    fam.check_options(options)
    return fam


def model_family(folder: str | os.PathLike) -> Family | None:
    """The family of a checkpoint folder whose `model_type` belongs to another family than LLaVA-1.5 (the folder
    checked by `detect_family`: a bad one is its one-line error), else None: LLaVA-1.5 folders, paths that are not
    model folders and unknown model types keep the LLaVA-1.5 loader, which names what is wrong."""
    p = Path(folder)
    try:
        model_type = json.loads((p / "config.json").read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None
    if model_type == "llava" or not any(model_type in f.model_types for f in FAMILIES.values()):
        return None
    return detect_family(p)
