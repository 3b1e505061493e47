"""Config dataclasses that load from YAML and take `--key value` overrides from the command line.

Every field carries its help text in `metadata["help"]` (use `field_`), so `--help` and the docs can list them.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Sequence, TypeVar

import yaml

from seedvlm.errors import SeedVLMError, did_you_mean

T = TypeVar("T")


def field_(default: Any, help: str, **kw: Any) -> Any:
    """A dataclass field with help text; list/dict defaults are copied per instance."""
    if isinstance(default, (list, dict, tuple)) and not isinstance(default, tuple):
        return dataclasses.field(default_factory=lambda d=default: type(d)(d), metadata={"help": help}, **kw)
    return dataclasses.field(default=default, metadata={"help": help}, **kw)


def _base_type(tp: Any) -> Any:
    """Strip Optional[...] / `X | None` to X."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else str
    return tp


def _coerce(value: Any, tp: Any, name: str, source: str) -> Any:
    """Convert a YAML or CLI value to the field's declared type, with an error naming the key."""
    optional = typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in typing.get_args(tp)
    if value is None or (isinstance(value, str) and value.lower() in ("none", "null") and optional):
        if optional or value is None:
            return None
    base = _base_type(tp)
    origin = typing.get_origin(base)
    try:
        if base is bool:
            if isinstance(value, bool):
                return value
            s = str(value).lower()
            if s in ("1", "true", "yes", "on"):
                return True
            if s in ("0", "false", "no", "off"):
                return False
            raise ValueError(f"not a boolean: {value!r}")
        if base in (int, float, str):
            if base is int and isinstance(value, float) and not value.is_integer():
                raise ValueError(f"not an integer: {value!r}")
            return base(value)
        if origin in (list, tuple) or base in (list, tuple):
            (inner,) = typing.get_args(base)[:1] or (str,)
            if isinstance(value, str):  # "1.1,0.8" or YAML's "[1.1, 0.8]"
                text = value.strip()
                if text.startswith("[") and text.endswith("]"):
                    text = text[1:-1]
                value = [v.strip() for v in text.split(",") if v.strip()]
            out = [_coerce(v, inner, name, source) for v in value]
            return tuple(out) if (origin or base) is tuple else out
        if origin is dict or base is dict:
            if not isinstance(value, dict):
                raise ValueError("expected a mapping")
            return dict(value)
    except (TypeError, ValueError) as e:
        raise SeedVLMError(f"{source}: bad value for '{name}': {e}") from None
    return value


def config_from_dict(cls: type[T], data: dict, source: str = "config") -> T:
    """Build `cls` from a dict; unknown keys are an error (a typo must not be silently ignored)."""
    if not isinstance(data, dict):
        raise SeedVLMError(f"{source}: expected a mapping of options, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        dash = source == "command line"
        shown = (lambda n: "--" + n.replace("_", "-")) if dash else str
        named = ", ".join(shown(u) + did_you_mean(shown(u), [shown(n) for n in names]) for u in unknown)
        raise SeedVLMError(f"{source}: unknown option(s) {named}; --help lists the options")
    kwargs = {k: _coerce(v, hints[k], k, source) for k, v in data.items()}
    return cls(**kwargs)


def load_yaml(path: str | Path) -> dict:
    """Read a YAML mapping; missing or malformed files raise SeedVLMError naming the file."""
    p = Path(path)
    if not p.is_file():
        raise SeedVLMError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise SeedVLMError(f"malformed YAML in {p}: {e}") from None
    if not isinstance(data, dict):
        raise SeedVLMError(f"{p}: expected a mapping of options at the top level")
    return data


def parse_overrides(tokens: Sequence[str]) -> dict[str, str]:
    """Turn `--key value`, `--key=value` and `key=value` tokens into a dict (dashes in keys become underscores).

    A bare `--flag` followed by another flag (or nothing) means `true`.
    """
    out: dict[str, str] = {}
    i = 0
    toks = list(tokens)
    while i < len(toks):
        t = toks[i]
        if t.startswith("--"):
            key = t[2:]
            if "=" in key:
                key, val = key.split("=", 1)
            elif i + 1 < len(toks) and not toks[i + 1].startswith("--"):
                val = toks[i + 1]
                i += 1
            else:
                val = "true"
        elif "=" in t:
            key, val = t.split("=", 1)
        else:
            raise SeedVLMError(f"cannot parse override {t!r}: use --key value or key=value")
        out[key.replace("-", "_")] = val
        i += 1
    return out


def load_config(cls: type[T], path: str | Path | None = None, overrides: Sequence[str] | dict = ()) -> T:
    """Defaults <- YAML file <- CLI overrides, validated against the dataclass."""
    data: dict = {}
    if path:
        data.update(load_yaml(path))
    ov = overrides if isinstance(overrides, dict) else parse_overrides(overrides)
    base = config_from_dict(cls, data, source=str(path) if path else "config")
    merged = dataclasses.asdict(base)
    merged.update(ov)
    return config_from_dict(cls, merged, source="command line")


def config_help(cls: type) -> str:
    """One line per field: name, default, help. Used in `--help` epilogs and docs."""
    lines = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        lines.append(f"  --{f.name.replace('_', '-'):28s} {f.metadata.get('help', '')} [default: {default}]")
    return "\n".join(lines)


def add_config_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """Document a config dataclass in a parser: `--config FILE` plus free `--key value` overrides."""
    parser.add_argument("--config", default=None, help="YAML file of options (see configs/)")
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = ("options (set in the YAML or override with --key value):\n" + config_help(cls))


def to_dict(cfg: Any) -> dict:
    """A config as a plain dict (for JSON results and checkpoints)."""
    return dataclasses.asdict(cfg)
