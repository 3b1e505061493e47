"""The families' user options (`Family.options`, e.g. Qwen's min/max pixels) on the command line and in configs:
every command that loads a family processor takes each of them as `--name-with-dashes`, and an option given for a
folder whose family does not take it is refused in one line before any weights load."""

from __future__ import annotations

import argparse
import os
from typing import Any

from seedvlm.models.families.base import Family, FamilyOption
from seedvlm.models.families.registry import FAMILIES, family_for_config, read_model_config


def all_options() -> dict[str, tuple[FamilyOption, tuple[str, ...]]]:
    """option name -> (its declaration, the families that take it), over every family."""
    out: dict[str, tuple[FamilyOption, tuple[str, ...]]] = {}
    for fam in FAMILIES.values():
        for name, opt in fam.options.items():
            declared, families = out.get(name, (opt, ()))
            out[name] = (declared, families + (fam.name,))
    return out


def option_help(name: str) -> str:
    """The option's one-line meaning and the families it applies to."""
    opt, families = all_options()[name]
    return f"{opt.help} ({', '.join(families)} models only)"


def add_family_options(parser: argparse.ArgumentParser) -> None:
    """`--min-pixels N`, `--max-pixels N`, ... (every family's options; default: the folder's own setting)."""
    for name, (opt, _) in all_options().items():
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, type=opt.parse, default=None,
                            help=option_help(name))


def given_options(source: Any) -> dict:
    """{name: value} of the family options set (not None) on an argparse namespace or a config object."""
    return {name: getattr(source, name) for name in all_options() if getattr(source, name, None) is not None}


def check_model_options(model: str | os.PathLike, options: dict) -> Family | None:
    """The folder's family when `options` all belong to it (None when no option is given: nothing to check);
    else a one-line SeedVLMError naming the option and the family. Reads config.json only."""
    if not options:
        return None
    folder, config = read_model_config(model)
    family = family_for_config(config, str(folder / "config.json"))
    family.check_options(options)
    return family
