"""The `seedvlm` command. Each module in `seedvlm.commands` adds one subcommand through `register(subparsers)`
and imports its heavy dependencies (torch, transformers) only when it runs, so `seedvlm --help` stays fast."""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
from pathlib import Path

from seedvlm import __version__
from seedvlm.errors import SeedVLMError, did_you_mean, os_error_message


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


def leaf_parser(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The (sub)parser that parsed the chosen command, e.g. the one of `eval pope`."""
    while parser._subparsers is not None:
        action = next(a for a in parser._subparsers._group_actions if isinstance(a, argparse._SubParsersAction))
        chosen = getattr(args, action.dest, None)
        if chosen not in action.choices:
            break
        parser = action.choices[chosen]
    return parser


def unknown_options_message(parser: argparse.ArgumentParser, extra: list[str]) -> str:
    """'unrecognized arguments: --lr 3 (did you mean --learning-rate?)': the closest option for each unknown one."""
    known = [s for s in parser._option_string_actions if s.startswith("--")]
    parts = []
    for token in extra:
        name = token.split("=", 1)[0]
        parts.append(token + (did_you_mean(name, known) if name.startswith("--") else ""))
    return f"unrecognized arguments: {' '.join(parts)}; see {parser.prog} --help"


def quiet_third_party() -> None:
    """No third-party warnings on normal runs: loggers of HTTP/file locks and library deprecation notices."""
    import warnings

    for noisy in ("httpx", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    for module in ("transformers", "peft", "accelerate", "torch"):
        warnings.filterwarnings("ignore", category=FutureWarning, module=module)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=module)


def _fail(command: str, message: str) -> int:
    """One line on stderr; a failed overwrite of a run gets the previous run back."""
    from seedvlm.outputs import rollback_pending

    for out in rollback_pending():
        message += f"; the previous run in {out} is back as it was"
    print(f"seedvlm {command}: error: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    from seedvlm.outputs import is_write_failure, rollback_pending, write_failure_message

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    quiet_third_party()
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    if extra and not getattr(args, "accepts_overrides", False):
        leaf = leaf_parser(parser, args)
        leaf.error(unknown_options_message(leaf, extra))
    args.overrides = extra
    try:
        rc = args.func(args)
    except SeedVLMError as e:
        return _fail(args.command, str(e))
    except OSError as e:
        return _fail(args.command, os_error_message(e))
    except KeyboardInterrupt:
        rollback_pending()
        print(f"seedvlm {args.command}: interrupted; completed outputs and checkpoints are intact", file=sys.stderr)
        return 130
    except Exception as e:
        if not is_write_failure(e):
            rollback_pending()
            raise
        return _fail(args.command, write_failure_message("writing an output", Path.cwd(), e))
    _end_launched_run()
    return int(rc or 0)


def _end_launched_run() -> None:
    """Under a launcher (torchrun, accelerate launch), every rank ends its process group before exiting: gloo's
    threads left alive at exit abort the process ("terminate called without an active exception")."""
    if "torch" in sys.modules:
        from seedvlm.distributed import end_process_group

        end_process_group()
