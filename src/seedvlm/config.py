"""Config dataclasses that load from YAML and take `--key value` overrides from the command line.

Every field carries its help text in `metadata["help"]` (use `field_`), so `--help` and the docs can list them.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
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


def boolean(text: Any) -> bool:
    """A true/false from the command line or YAML (also yes/no, on/off, 1/0)."""
    low = str(text).lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {text!r} (use true or false)")


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
            return value if isinstance(value, bool) else boolean(value)
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
    """Defaults <- YAML file <- CLI overrides, validated against the dataclass (configs built on transformers'
    TrainingArguments go through `load_hf_config`)."""
    if any(base.__name__ == "TrainingArguments" for base in cls.__mro__):
        return load_hf_config(cls, path, overrides)
    data: dict = {}
    if path:
        data.update(load_yaml(path))
    ov = overrides if isinstance(overrides, dict) else parse_overrides(overrides)
    base = config_from_dict(cls, data, source=str(path) if path else "config")
    merged = dataclasses.asdict(base)
    merged.update(ov)
    return config_from_dict(cls, merged, source="command line")


def _default_text(f: dataclasses.Field) -> Any:
    """A field's default as --help shows it (a default_factory called)."""
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else None


def _short_help(f: dataclasses.Field, inherited: bool) -> str:
    """A field's help; an inherited (library) one cut to its first sentence when long, argparse's %% unescaped."""
    text = " ".join(str(f.metadata.get("help", "")).replace("%%", "%").split())
    if inherited and len(text) > 160 and ". " in text:
        text = text.split(". ")[0] + "."
    return text


def config_help(cls: type, groups: dict[str, Sequence[str]] | None = None) -> str:
    """One line per field: name, help, default; all fields, or `groups` = {title: [field names]}. Used in `--help`
    epilogs and docs."""
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    own = set(getattr(cls, "__annotations__", {}))
    groups = groups or {"": list(fields)}
    lines = []
    for title, names in groups.items():
        if title:
            lines.append(f"{title}:")
        for name in names:
            f = fields[name]
            text = _short_help(f, name not in own)
            lines.append(f"  --{name.replace('_', '-'):28s} {text} [default: {_default_text(f)}]")
    return "\n".join(lines)


def add_config_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """Document a config dataclass in a parser: `--config FILE` plus free `--key value` overrides."""
    parser.add_argument("--config", default=None, help="YAML file of options (see configs/)")
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = ("options (set in the YAML or override with --key value):\n" + config_help(cls))


class LazyHelp(argparse.Action):
    """`-h`: the parser's help with an epilog built only when asked for (`epilog()` may import heavy modules,
    which `seedvlm --help` and the other commands never pay for)."""

    def __init__(self, option_strings, dest, epilog, help="show this help message and exit", **kw):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)
        self.epilog = epilog

    def __call__(self, parser, namespace, values, option_string=None):
        parser.formatter_class = argparse.RawDescriptionHelpFormatter
        parser.epilog = self.epilog()
        parser.print_help()
        parser.exit()


def to_dict(cfg: Any) -> dict:
    """A config as a plain dict (for JSON results and checkpoints)."""
    return dataclasses.asdict(cfg)


def refuse_unknown(keys: Sequence[str], known: set[str], source: str) -> None:
    """An unknown option is an error naming the closest known one (a typo must not be silently ignored)."""
    for key in keys:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise SeedVLMError(f"{source}: unknown option '{key}'{hint}")


def _hf_parser(cls: type, source: str):
    """transformers' HfArgumentParser for `cls` whose argparse errors become one SeedVLMError line."""
    from transformers import HfArgumentParser  # heavy: only the configs built on TrainingArguments need it

    class Parser(HfArgumentParser):
        def error(self, message: str):  # argparse would print the usage and exit
            raise SeedVLMError(f"{source}: {message}")

    return Parser(cls, allow_abbrev=False)


def _split_list(text: str) -> list[str]:
    """'1.1,0.8', '[1.1, 0.8]' or '1.1 0.8' -> ['1.1', '0.8']."""
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    return [v.strip() for v in text.replace(",", " ").split() if v.strip()]


def load_hf_config(cls: type[T], path: str | Path | None = None, overrides: Sequence[str] | dict = ()) -> T:
    """A TrainingArguments dataclass from YAML + `--key value`, parsed by HfArgumentParser (the YAML values become
    the parser's defaults, the command line is parsed against them, as TRL does). Keys renamed since an earlier
    release are read through `cls.migrate(data, source)` when the class has one."""
    migrate = getattr(cls, "migrate", lambda data, source: data)
    data = migrate(load_yaml(path), str(path)) if path else {}
    ov = migrate(dict(overrides) if isinstance(overrides, dict) else parse_overrides(overrides), "command line")
    known = {f.name for f in dataclasses.fields(cls) if f.init}
    refuse_unknown(list(data), known, str(path))
    refuse_unknown(list(ov), known, "command line")
    source = (f"{path} + command line" if ov else str(path)) if path else "command line"
    hints = typing.get_type_hints(cls)
    defaults, argv = dict(data), []
    for key, value in ov.items():
        tp = hints[key]
        optional = typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in typing.get_args(tp)
        if not isinstance(value, str):
            defaults[key] = value
        elif optional and value.strip().lower() in ("none", "null") and key not in getattr(cls, "NONE_IS_A_WORD", ()):
            defaults[key] = None
        elif typing.get_origin(_base_type(tp)) is list:
            argv += [f"--{key}", *_split_list(value)]
        else:
            argv += [f"--{key}", value]
    parser = _hf_parser(cls, source)
    parser.set_defaults(**defaults)
    try:
        (cfg,) = parser.parse_args_into_dataclasses(args=argv, look_for_args_file=False)
    except SeedVLMError as e:
        raise SeedVLMError(str(e) if str(e).startswith(source) else f"{source}: {e}") from None
    except (TypeError, ValueError) as e:  # transformers' own checks of its fields, or a value of the wrong type
        raise SeedVLMError(f"{source}: {e}") from None
    return cfg
