"""One process of the multi-process CPU tests (tests/test_distributed.py), started by `torch.distributed.run` (gloo).

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/dist_worker.py train JOBS
    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/dist_worker.py fsdp-train JOBS

JOBS: a JSON list of {"cfg": SeedConfig fields, "dump": folder, "resume": checkpoint folder or null}, run in order.
train: `run_training(SeedConfig(**cfg), resume)` (what `seedvlm train` runs; DDP over gloo), then
DUMP/rank{r}.json with this rank's b history, world size, gradient accumulation and model wrapper.
fsdp-train: the same under accelerate's FSDP1 plugin configured from configs/accelerate/fsdp.yaml (see
`fsdp_on_cpu` for the two patches that let accelerate build it on a CPU).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

torch.set_num_threads(1)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def train(cfg_json: str, dump: Path, resume: str | None = None, fsdp: bool = False) -> None:
    from seedvlm.train.config import SeedConfig
    from seedvlm.train.run import run_training

    res = run_training(SeedConfig(**json.loads(cfg_json)), resume=resume)
    tr = res["trainer"]
    rank = tr.args.process_index
    if fsdp and type(tr.model_wrapped).__name__ != "FullyShardedDataParallel":
        raise SystemExit(f"expected an FSDP-wrapped model, got {type(tr.model_wrapped).__name__}")
    dump.mkdir(parents=True, exist_ok=True)
    (dump / f"rank{rank}.json").write_text(json.dumps({
        "rank": rank, "world": tr.args.world_size, "grad_accumulation": tr.args.gradient_accumulation_steps,
        "wrapper": type(tr.model_wrapped).__name__,
        "history": list(tr.beta_schedule.history) if tr.beta_schedule is not None else None,
        "global_step": tr.state.global_step}))


def fsdp_on_cpu(config_file: Path) -> None:
    """Make the Trainer build accelerate's FSDP1 wrapper on the CPU, as `accelerate launch --config_file
    configs/accelerate/fsdp.yaml` does on GPUs. accelerate treats a CPU run as MULTI_CPU and never builds FSDP
    there, so two patches: (1) after the Trainer creates its Accelerator, the state becomes FSDP with a plugin made
    from the same FSDP_* environment accelerate launch exports from the YAML; (2) FSDP gets device_id=cpu (accelerate
    passes its own device object, which FSDP1 compares unequal to the CPU it finds the module on)."""
    import yaml
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin
    from torch.distributed.fsdp import FullyShardedDataParallel
    from transformers import Trainer

    fsdp_config = yaml.safe_load(config_file.read_text())["fsdp_config"]
    names = {"fsdp_transformer_layer_cls_to_wrap": "FSDP_TRANSFORMER_CLS_TO_WRAP"}
    os.environ["ACCELERATE_USE_FSDP"] = "true"
    for key, value in fsdp_config.items():
        os.environ[names.get(key, key.upper())] = str(value).lower() if isinstance(value, bool) else str(value)

    create = Trainer.create_accelerator_and_postprocess

    def create_with_fsdp(self):
        create(self)
        self.accelerator.state.distributed_type = DistributedType.FSDP
        self.accelerator.state.fsdp_plugin = FullyShardedDataParallelPlugin()
        self.is_fsdp_enabled = True

    Trainer.create_accelerator_and_postprocess = create_with_fsdp
    init = FullyShardedDataParallel.__init__

    def init_on_cpu(self, module, *args, **kwargs):
        kwargs["device_id"] = torch.device("cpu")
        init(self, module, *args, **kwargs)

    FullyShardedDataParallel.__init__ = init_on_cpu


if __name__ == "__main__":
    # MODE JOBS: JOBS is a JSON list of {"cfg": SeedConfig fields, "dump": folder, "resume": checkpoint or null},
    # run one after the other in the same processes (a resume right after the run it continues: one launch).
    mode, jobs = sys.argv[1], json.loads(sys.argv[2])
    if mode == "fsdp-train":
        fsdp_on_cpu(Path(__file__).resolve().parents[1] / "configs" / "accelerate" / "fsdp.yaml")
    elif mode != "train":
        raise SystemExit(f"unknown mode {mode}")
    from seedvlm.distributed import end_process_group

    try:
        for job in jobs:
            train(json.dumps(job["cfg"]), Path(job["dump"]), job.get("resume"), fsdp=mode == "fsdp-train")
    finally:
        end_process_group()  # as `seedvlm train` ends
