"""The named choices of the SEED options, each defined once as a `Literal` type.

Config dataclasses annotate their fields with these (HfArgumentParser turns a Literal into argparse `choices`), and
code that validates a value at run time reads the allowed values with `values(...)`.
"""

from __future__ import annotations

import typing
from typing import Literal

Method = Literal["seed", "sft"]
Perturbation = Literal["gaussian", "ddpm", "mask", "blur", "blank"]
BetaKind = Literal["quantile", "fixed", "continuous", "curriculum"]
PurifySpace = Literal["logit", "logprob"]
KLDirection = Literal["reverse", "forward"]
MaskStrategy = Literal["restrict", "clamp"]
Dtype = Literal["auto", "fp32", "bf16", "fp16"]
AttnImplementation = Literal["sdpa", "eager", "flash_attention_2"]
CacheTail = Literal["lump", "drop"]
CompileDynamic = Literal["true", "false", "auto"]
PromptStyle = Literal["hf", "llava-1.5"]
MaskMode = Literal["renorm", "clamp"]
DdpmSchedule = Literal["vcd", "linear"]
Degradation = Literal["noise", "mask", "blank"]  # pretraining's degraded views of the vision stage


def values(choice: typing.Any) -> tuple[str, ...]:
    """The allowed values of a Literal type (of `X | None` too), in their declared order."""
    args = typing.get_args(choice)
    if typing.get_origin(choice) is Literal:
        return tuple(args)
    return tuple(v for a in args if typing.get_origin(a) is Literal for v in typing.get_args(a))
