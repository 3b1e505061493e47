"""The `seedvlm` command. Each module in `seedvlm.commands` adds one subcommand through `register(subparsers)`
and imports its heavy dependencies (torch, transformers) only when it runs, so `seedvlm --help` stays fast."""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

from seedvlm import __version__
from seedvlm.errors import SeedVLMError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="seedvlm",
        description="SEED self-evaluation distillation for LLaVA-family VLMs, with POPE/CHAIR evaluation.",
    )
    parser.add_argument("--version", action="version", version=f"seedvlm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    import seedvlm.commands as commands

    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"seedvlm.commands.{info.name}")
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    for noisy in ("httpx", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    if extra and not getattr(args, "accepts_overrides", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.overrides = extra
    try:
        rc = args.func(args)
    except SeedVLMError as e:
        print(f"seedvlm {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"seedvlm {args.command}: interrupted; completed outputs and checkpoints are intact", file=sys.stderr)
        return 130
    return int(rc or 0)
