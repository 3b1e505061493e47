"""Command-line values with their valid range, checked when the command line is parsed (argparse `type=`), and
the ranges of the decoding options that `eval` and `demo` share, so a value that makes no sense (b < 0, 0 new
tokens, a noise level outside (0, 1]) is refused up front, in the same words everywhere."""

from __future__ import annotations

import argparse
import math
from typing import Callable

from seedvlm.errors import SeedVLMError


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps a description's layout and appends each option's default, when it has one, as '[default: X]'."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        unset = action.default is None or action.default is False or action.default == argparse.SUPPRESS
        if not unset and "default" not in text and not action.required:
            text += " [default: %(default)s]"
        return text


class Range:
    """A closed or half-open interval of numbers, printed as the user reads it: '>= 1', 'in (0, 1]'."""

    def __init__(self, lo: float | None = None, hi: float | None = None, lo_open: bool = False,
                 hi_open: bool = False):
        self.lo, self.hi, self.lo_open, self.hi_open = lo, hi, lo_open, hi_open

    def __contains__(self, x: float) -> bool:
        if isinstance(x, float) and not math.isfinite(x):
            return False
        if self.lo is not None and (x <= self.lo if self.lo_open else x < self.lo):
            return False
        return not (self.hi is not None and (x >= self.hi if self.hi_open else x > self.hi))

    def __str__(self) -> str:
        if self.lo is not None and self.hi is not None:
            return f"in {'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}{')' if self.hi_open else ']'}"
        if self.lo is not None:
            return f"{'>' if self.lo_open else '>='} {self.lo:g}"
        if self.hi is not None:
            return f"{'<' if self.hi_open else '<='} {self.hi:g}"
        return "any number"


def out_of_range(option: str, value, valid: Range) -> str:
    return f"{option} must be {valid}, got {value}"


def bounded(kind: type, lo: float | None = None, hi: float | None = None, lo_open: bool = False,
            hi_open: bool = False) -> Callable[[str], float]:
    """An argparse `type=` that parses an int or float and refuses it outside the range (argparse then prints
    'argument --n: must be >= 1, got 0' and exits with code 2)."""
    valid = Range(lo, hi, lo_open, hi_open)

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {'an integer' if kind is int else 'a number'} {valid}, "
                                             f"got {text!r}") from None
        if value not in valid:
            raise argparse.ArgumentTypeError(f"must be {valid}, got {text}")
        return value

    parse.__name__ = f"{kind.__name__} {valid}"
    return parse


positive_int = bounded(int, 1)
non_negative_int = bounded(int, 0)

# Decoding options (eval's extra --key value options, demo's flags) and where they make sense.
DECODE_RANGES = {
    "beta": Range(0),  # b < 0 would add the noisy view, b = -1 decode it alone
    "alpha": Range(0, 1, lo_open=True),
    "plausibility": Range(0, 1, hi_open=True),
    "top_p": Range(0, 1, lo_open=True),
    "temperature": Range(0, lo_open=True),
    "num_beams": Range(1),
}


def check_decode_ranges(options: dict, prefix: str = "--") -> None:
    """Refuse a decoding option outside its range (`DECODE_RANGES`); options without a range pass."""
    for name, value in options.items():
        valid = DECODE_RANGES.get(name)
        if valid is None or value is None or isinstance(value, bool):
            continue
        if not isinstance(value, (int, float)) or value not in valid:
            raise SeedVLMError(out_of_range(prefix + name.replace("_", "-"), value, valid))


def add_pope_answer_options(p: argparse.ArgumentParser) -> None:
    """--labels and --parser, the same for `eval pope` and `score pope`."""
    p.add_argument("--labels", default=None,
                   help="folder of coco_pope_{split}.json label files for LLaVA's llava_pope_test.jsonl "
                        "(default: the questions file's folder)")
    p.add_argument("--parser", choices=("official", "strict"), default="official",
                   help="official: POPE's evaluate.py decision for any answer (default); strict: split on any "
                        "white space, an empty answer is wrong")


def check_prompt(text: str, where: str) -> None:
    """A prompt given to the model must not hold `<image>`: the chat template puts the one image tag the model
    takes in front of it, and a second tag would ask for an image that is not there."""
    if "<image>" in text:
        raise SeedVLMError(f"{where} holds <image>; the chat template adds the image tag itself, and the model "
                           f"takes exactly one image per prompt: remove it")
