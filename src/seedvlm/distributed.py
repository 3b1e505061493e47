"""Several processes (`accelerate launch`, `torchrun`): which process am I, which share of a list is mine, and
gathering the shares back, for the commands that are not the Trainer's (eval pope|chair, benchmarks/scaling.py).

Nothing here starts a process group unless the launcher set WORLD_SIZE > 1: a plain `seedvlm eval` stays one
process and never imports accelerate's state. Under a launcher, accelerate's `PartialState` joins the group (NCCL
on GPUs, gloo on the CPU) and gives each process its device (`cuda:LOCAL_RANK`).

    accelerate launch --num_processes 4 -m seedvlm eval pope --model M --questions Q --images I --out OUT
    torchrun --nproc_per_node 2 -m seedvlm eval pope ...          # the same, torch's launcher

docs/distributed.md describes what each command does with several processes.
"""

from __future__ import annotations

import functools
import os
import sys
from typing import Any, Sequence

import torch
import torch.distributed as dist
from accelerate import PartialState
from accelerate.utils import broadcast_object_list, gather_object


def launched_world_size() -> int:
    """Processes of this run as the launcher set them (WORLD_SIZE), else 1."""
    try:
        return max(int(os.environ.get("WORLD_SIZE", "1")), 1)
    except ValueError:
        return 1


@functools.lru_cache(maxsize=None)
def _state():
    # cpu=True where there is no GPU: accelerate only forms a CPU (gloo) group when asked to use the CPU
    return PartialState(cpu=not torch.cuda.is_available())


def rank_world() -> tuple[int, int]:
    """(this process's rank, number of processes); (0, 1) without a launcher."""
    if launched_world_size() == 1:
        return 0, 1
    s = _state()
    return int(s.process_index), int(s.num_processes)


def is_main() -> bool:
    return rank_world()[0] == 0


def device():
    """This process's device under a launcher (accelerate's: cuda:LOCAL_RANK, or cpu); None without one (the caller
    then picks its default)."""
    if launched_world_size() == 1:
        return None
    return _state().device


def barrier() -> None:
    if launched_world_size() > 1:
        _state().wait_for_everyone()


def end_process_group() -> None:
    """Destroy the default process group if one is up: an orderly end for launched runs (torch asks for it; a
    process that exits with gloo's threads still alive can abort with "terminate called without an active
    exception", seen in the 2-process CPU tests). The ranks meet at a barrier first, unless an exception is leaving
    this rank: a failed rank must not wait for peers that never come (the launcher stops them)."""
    if dist.is_available() and dist.is_initialized():
        if sys.exc_info()[0] is None:  # called from a `finally` with no exception on its way out
            dist.barrier()  # no rank tears gloo down while a peer still has work in flight
        dist.destroy_process_group()


def shard_bounds(n: int, rank: int, world: int, unit: int = 1) -> tuple[int, int]:
    """[start, stop) of rank's contiguous share of n items, cut at multiples of `unit` (a generation batch) and
    balanced by whole units: the first (units % world) ranks get one unit more. Every item belongs to exactly one
    rank, in order, so concatenating the shares of ranks 0..world-1 gives back the list."""
    if n < 0 or world < 1 or not 0 <= rank < world or unit < 1:
        raise ValueError(f"bad shard: n={n}, rank={rank}, world={world}, unit={unit}")
    units = -(-n // unit)
    base, extra = divmod(units, world)
    first = rank * base + min(rank, extra)
    count = base + (1 if rank < extra else 0)
    return min(first * unit, n), min((first + count) * unit, n)


def gather_lists(items: Sequence[Any]) -> list[Any]:
    """Every rank's list, concatenated in rank order, on every rank (accelerate `gather_object`: pickled Python
    objects, for answers and captions); the list itself with one process."""
    if launched_world_size() == 1:
        return list(items)
    _state()
    return list(gather_object(list(items)))


def broadcast(obj: Any) -> Any:
    """Rank 0's `obj` on every rank (accelerate `broadcast_object_list`); `obj` itself with one process."""
    if launched_world_size() == 1:
        return obj
    _state()
    return broadcast_object_list([obj], from_process=0)[0]
