"""Several processes on the CPU (gloo): DDP and FSDP training equal one process with the same global batch; eval
sharded over two processes equals one process; resuming on another number of processes; the pieces (shards, the
b history in rank order, global_batch_size, the accelerate configs).

The multi-process runs go through `torch.distributed.run --nproc_per_node 2` (tests/dist_worker.py for training,
the real `-m seedvlm eval pope` for evaluation), one intra-op thread each.

Tolerance of the loss curves (1e-5, absolute, on losses ~1): DDP averages the two ranks' gradients, each the mean
over its grad_accumulation micro-batches, so a step's gradient is the same mean over the same micro-batches as one
process accumulating them all (transformers divides each micro-batch loss, a mean over its answer tokens, by the
accumulation count; DDP divides the all-reduced sum by the world size). Only float32 summation order differs
(pairwise sums across ranks vs one running sum): ~1 ulp (1e-7 relative) per gradient entry, which AdamW (lr 2e-3,
12 steps) carries into the loss as measured differences of 3e-8. 1e-5 leaves 300x margin over that and is still
~1000x below what a real semantic change causes: one sample dealt to the wrong step, a lagging b history (a
rank whose history is one micro-batch old gets a b off by 0.05 at some steps) or a lost optimizer state on resume
(loss off by 2e-3). b, conf, lr and the b history must be EXACTLY equal: they are discrete or computed from the
frozen teacher's identical logits.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from train_env import build_env, cfg_kwargs, launch_two as launch, make_cfg, read_metrics

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).resolve().parent / "dist_worker.py"
LOSS_TOL = 1e-5

# 16 records, 2 per device, global batch 8: one process accumulates 4 micro-batches, two processes 2 each; 2 steps
# per epoch, so 12 steps cross 5 epoch boundaries. No LoRA dropout: its masks come from each process's own RNG
# stream, so no multi-process run can reproduce one process's masks (that is true of any DDP run).
RUN = dict(max_steps=12, per_device_train_batch_size=2, global_batch_size=8, gradient_accumulation_steps=1,
           save_steps=6, lora_dropout=0.0, beta_min_history=4, logging_steps=3)


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: one thread on 2 shared cores


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return build_env(tmp_path_factory.mktemp("dist_env"))


def job(env, out: Path, dump: Path, resume: Path | None = None, **kw) -> dict:
    cfg = cfg_kwargs(env, out, **{**RUN, **kw})  # resolved in the worker, for its number of processes
    return {"cfg": cfg, "dump": str(dump), "resume": str(resume) if resume else None}


def ranks(dump: Path) -> list[dict]:
    return [json.loads((dump / f"rank{r}.json").read_text()) for r in (0, 1)]


def assert_same_curve(one: list[dict], many: list[dict]) -> None:
    by_step = {r["step"]: r for r in one}
    assert many and all(r["step"] in by_step for r in many)
    for row in many:
        ref = by_step[row["step"]]
        for key in ("loss", "distill", "sup"):
            assert abs(row[key] - ref[key]) <= LOSS_TOL, (row["step"], key, row[key], ref[key])
        for key in ("beta", "conf", "lr"):
            assert row[key] == pytest.approx(ref[key], abs=1e-12), (row["step"], key)


def assert_same_adapter(a: Path, b: Path) -> None:
    from safetensors.torch import load_file

    wa, wb = load_file(str(a / "adapter_model.safetensors")), load_file(str(b / "adapter_model.safetensors"))
    assert sorted(wa) == sorted(wb) and wa
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=LOSS_TOL, rtol=0)


@pytest.fixture(scope="module")
def one_process(env, tmp_path_factory):
    """The reference: one process, global batch 8 = 2 per device x 4 accumulation."""
    from seedvlm.train.run import run_training

    out = tmp_path_factory.mktemp("one") / "run"
    res = run_training(make_cfg(env, out, **RUN))
    assert res["trainer"].args.gradient_accumulation_steps == 4
    return {"out": out, "metrics": read_metrics(out), "history": list(res["trainer"].beta_schedule.history)}


# ---------------------------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_ddp_two_processes_train_like_one_and_resume_on_one(env, one_process, tmp_path):
    from seedvlm.errors import SeedVLMError
    from seedvlm.train.run import run_training

    two = tmp_path / "two"
    launch(str(WORKER), "train", json.dumps([job(env, two, tmp_path / "dump")]))
    r0, r1 = ranks(tmp_path / "dump")
    assert (r0["world"], r0["grad_accumulation"], r0["wrapper"]) == (2, 2, "DistributedDataParallel")
    # the b history: the same on both ranks, in the same order as one process's (so the same as a multiset)
    assert r0["history"] == r1["history"] == one_process["history"]
    assert len(r0["history"]) == 12 * 8
    # written once, by rank 0: one row per step, one set of checkpoint files (RNG state per rank)
    metrics = read_metrics(two)
    assert [r["step"] for r in metrics] == list(range(1, 13))
    assert_same_curve(one_process["metrics"], metrics)
    ckpt = two / "checkpoint-6"
    assert sorted(p.name for p in two.glob("checkpoint-*")) == ["checkpoint-12", "checkpoint-6"]
    assert (ckpt / "rng_state_0.pth").is_file() and (ckpt / "rng_state_1.pth").is_file()
    state = json.loads((ckpt / "seedvlm_state.json").read_text())
    assert state["data"] == {"global_batch_size": 8, "per_device_batch_size": 2, "grad_accumulation": 2,
                             "processes": 2, "global_step": 6, "samples": 48}
    assert_same_adapter(one_process["out"] / "adapter", two / "adapter")

    # resume the 2-process checkpoint on 1 process: steps 7..12 as the uninterrupted 1-process run
    res = run_training(make_cfg(env, tmp_path / "resumed", **RUN), resume=str(ckpt))
    resumed = read_metrics(tmp_path / "resumed")
    assert [r["step"] for r in resumed] == list(range(7, 13))
    assert_same_curve(one_process["metrics"], resumed)
    assert list(res["trainer"].beta_schedule.history) == one_process["history"]
    assert_same_adapter(one_process["out"] / "adapter", tmp_path / "resumed" / "adapter")
    # another global batch would land on other samples and another LR schedule: refused, naming the fix
    with pytest.raises(SeedVLMError, match="global batch of 8.*--global-batch-size 8"):
        run_training(make_cfg(env, tmp_path / "other", **{**RUN, "global_batch_size": 4}), resume=str(ckpt))


@pytest.mark.slow
def test_fsdp_two_processes_train_like_one_and_resume(env, one_process, tmp_path):
    """accelerate's FSDP1 plugin from configs/accelerate/fsdp.yaml (FULL_SHARD, decoder layers + peft's LoRA
    units, use_orig_params): the teacher pass through the wrapper, the gathered adapter, the full optimizer state."""
    fsdp, resumed, ckpt = tmp_path / "fsdp", tmp_path / "fsdp_resumed", tmp_path / "fsdp" / "checkpoint-6"
    launch(str(WORKER), "fsdp-train", json.dumps([job(env, fsdp, tmp_path / "dump"),
                                                   job(env, resumed, tmp_path / "dump2", resume=ckpt)]))
    r0, r1 = ranks(tmp_path / "dump")
    assert r0["wrapper"] == "FullyShardedDataParallel" and r0["history"] == r1["history"] == one_process["history"]
    assert_same_curve(one_process["metrics"], read_metrics(fsdp))
    assert_same_adapter(one_process["out"] / "adapter", fsdp / "adapter")
    names = {p.name for p in ckpt.iterdir()}
    assert {"adapter_model.safetensors", "optimizer.pt", "scheduler.pt", "seedvlm_state.json"} <= names
    assert not any(n.startswith("pytorch_model_fsdp") for n in names)  # no copy of the frozen base
    torch.load(ckpt / "optimizer.pt", weights_only=True)  # no pickled code (docs/design.md section 8)

    rows = read_metrics(resumed)  # the second job: the FSDP run resumed from its checkpoint-6
    assert [r["step"] for r in rows] == list(range(7, 13))
    assert_same_curve(one_process["metrics"], rows)
    assert_same_adapter(one_process["out"] / "adapter", resumed / "adapter")


# ---------------------------------------------------------------------------------------------------------------
# evaluation
# ---------------------------------------------------------------------------------------------------------------

CATS = ["person", "dog", "cat", "car", "fork", "knife", "cup", "bowl"]
OBJECTS = {1: ["person", "dog", "car"], 2: ["dog", "car", "cat"], 3: ["person", "fork", "knife"],
           4: ["fork", "knife", "cup"], 5: ["fork", "bowl", "cup"]}


@pytest.fixture(scope="module")
def pope_world(tmp_path_factory):
    """A tiny random LLaVA whose vocabulary holds yes/no and the category names, 5 images, and POPE built on them."""
    import numpy as np
    from PIL import Image

    from conftest import tiny_config
    from seedvlm.cli import main
    from seedvlm.models import build_processor, build_word_tokenizer, random_model, save_model

    root = tmp_path_factory.mktemp("pope_world")
    tok = build_word_tokenizer(CATS + "yes no is there a an in the image not".split())
    cfg = tiny_config(tok)
    save_model(random_model(cfg, seed=3), build_processor(tok, cfg), root / "model")
    (root / "images").mkdir()
    rng = np.random.default_rng(0)
    for i in OBJECTS:
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(root / "images" / f"img{i}.png")
    cat_id = {c: k + 1 for k, c in enumerate(CATS)}
    anns = [{"id": n + 1, "image_id": i, "category_id": cat_id[c], "bbox": [0, 0, 1, 1]}
            for n, (i, c) in enumerate((i, c) for i, cs in OBJECTS.items() for c in cs)]
    inst = {"images": [{"id": i, "file_name": f"img{i}.png"} for i in OBJECTS], "annotations": anns,
            "categories": [{"id": v, "name": k} for k, v in cat_id.items()]}
    (root / "instances.json").write_text(json.dumps(inst))
    assert main(["pope", "build", "--instances", str(root / "instances.json"), "--out", str(root / "pope")]) == 0
    return root


def test_eval_pope_two_processes_equals_one(pope_world, tmp_path):
    from seedvlm.cli import main

    args = ["eval", "pope", "--model", str(pope_world / "model"), "--questions", str(pope_world / "pope"),
            "--images", str(pope_world / "images"), "--batch-size", "4", "--max-new-tokens", "3"]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    launch("-m", "seedvlm", *args, "--out", str(tmp_path / "two"))  # 90 questions = 23 batches: 12 + 11
    one = [json.loads(x) for x in (tmp_path / "one" / "samples.jsonl").read_text().splitlines()]
    two = [json.loads(x) for x in (tmp_path / "two" / "samples.jsonl").read_text().splitlines()]
    scores = ("p_yes", "yes_no_mass")  # floats from a softmax: equal up to the threads' summation order
    assert len(one) == 90 and len(two) == 90
    for a, b in zip(one, two):  # same questions, order, raw answers, parsed labels
        assert {k: v for k, v in a.items() if k not in scores} == {k: v for k, v in b.items() if k not in scores}
        assert all(abs(a[k] - b[k]) < 1e-6 for k in scores if a.get(k) is not None)
    r1 = json.loads((tmp_path / "one" / "results.json").read_text())
    r2 = json.loads((tmp_path / "two" / "results.json").read_text())
    threshold_free = ("auroc", "average_precision", "mean_yes_no_mass")
    for split in r1["splits"] + ["mean"]:
        assert {k: v for k, v in r2[split].items() if k not in threshold_free} == \
               {k: v for k, v in r1[split].items() if k not in threshold_free}
        assert all(abs(r2[split][k] - r1[split][k]) < 1e-6 for k in threshold_free if r1[split].get(k) is not None)
    assert r2["config"]["processes"] == 2 and r1["config"]["processes"] == 1
    assert len({s["text"] for s in one}) > 1  # the random model does not answer one constant


def test_teach_two_processes_writes_the_one_process_cache(env, tmp_path):
    from safetensors.torch import load_file

    from seedvlm.train.teacher_cache import INDEX_FILE, teach

    one = tmp_path / "one"
    teach(make_cfg(env, tmp_path / "run"), one, top_k=2, shard_samples=4)
    launch("-m", "seedvlm", "teach", "--model", str(env["model"]), "--data", str(env["data"]), "--images",
           str(env["images"]), "--output-dir", str(tmp_path / "run2"), "--out", str(tmp_path / "two"),
           "--top-k", "2", "--shard-samples", "4")
    i1, i2 = (json.loads((d / INDEX_FILE).read_text()) for d in (one, tmp_path / "two"))
    assert (i1["processes"], i2["processes"]) == (1, 2)
    volatile = {"created", "seconds", "processes"}
    assert {k: v for k, v in i1.items() if k not in volatile} == {k: v for k, v in i2.items() if k not in volatile}
    assert len(i1["shards"]) == 4  # ranks wrote shards 0, 2 and 1, 3
    for shard in i1["shards"]:
        a, b = load_file(str(one / shard["file"])), load_file(str(tmp_path / "two" / shard["file"]))
        assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------------------------------------------------------
# the pieces
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n,world,unit", [(90, 2, 4), (7, 3, 2), (0, 2, 4), (5, 8, 1), (3000, 8, 16)])
def test_shard_bounds_cover_in_order_on_batch_boundaries(n, world, unit):
    from seedvlm.distributed import shard_bounds

    bounds = [shard_bounds(n, r, world, unit) for r in range(world)]
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    assert all(start % unit == 0 for start, _ in bounds)
    sizes = [-(-(b - a) // unit) for a, b in bounds]
    assert max(sizes) - min(sizes) <= 1


def test_pending_confidences_give_the_sequential_b():
    """Rank r picks b with the history plus the lower ranks' confidences of the same micro-step: exactly what one
    process sees running the batches in the global order."""
    from seedvlm.seed import BetaSchedule

    g = torch.Generator().manual_seed(0)
    batches = [-torch.rand(2, generator=g) * 5 for _ in range(12)]
    seq, par = BetaSchedule(min_history=4, history_size=10), BetaSchedule(min_history=4, history_size=10)
    one = []
    for b in batches:
        one.append(seq(b))
        seq.update(b)
    two = []
    for j in range(0, 12, 2):  # two ranks: batches j (rank 0) and j + 1 (rank 1) at the same micro-step
        two += [par(batches[j]), par(batches[j + 1], pending=batches[j])]
        par.update(torch.cat([batches[j], batches[j + 1]]))
    assert all(torch.equal(a, b) for a, b in zip(one, two))
    assert list(seq.history) == list(par.history)


def test_global_batch_size_sets_accumulation_per_world_size():
    from seedvlm.errors import SeedVLMError
    from seedvlm.train.config import SeedConfig, resolve_grad_accumulation

    cfg = SeedConfig(per_device_train_batch_size=2, global_batch_size=16, gradient_accumulation_steps=99)
    assert cfg.gradient_accumulation_steps == 8  # one process here
    assert [resolve_grad_accumulation(cfg, n) for n in (1, 2, 4, 8)] == [8, 4, 2, 1]
    assert resolve_grad_accumulation(SeedConfig(gradient_accumulation_steps=3), 4) == 3  # unset: taken as is
    with pytest.raises(SeedVLMError, match="not a multiple of per_device_train_batch_size 2 x 3 processes"):
        resolve_grad_accumulation(cfg, 3)
    with pytest.raises(SeedVLMError, match=r"global_batch_size = 0: must be > 0"):
        SeedConfig(global_batch_size=0)


def test_accelerate_configs_load_and_name_their_command():
    import yaml
    from accelerate.commands.config.config_args import load_config_from_file

    folder = ROOT / "configs" / "accelerate"
    kinds = {"single_gpu.yaml": "NO", "multi_gpu.yaml": "MULTI_GPU", "fsdp.yaml": "FSDP"}
    assert sorted(p.name for p in folder.glob("*.yaml")) == sorted(kinds)
    for name, kind in kinds.items():
        path = folder / name
        first = path.read_text().splitlines()[0]
        assert first.startswith(f"# accelerate launch --config_file configs/accelerate/{name}") and "-m seedvlm" in first
        cfg = load_config_from_file(str(path))
        assert cfg.distributed_type.value == kind and cfg.mixed_precision == "no"  # seedvlm's dtype decides
    fsdp = yaml.safe_load((folder / "fsdp.yaml").read_text())["fsdp_config"]
    assert fsdp["fsdp_sharding_strategy"] == "FULL_SHARD" and fsdp["fsdp_use_orig_params"] is True
    assert fsdp["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    assert set(fsdp["fsdp_transformer_layer_cls_to_wrap"].split(",")) == {"LlamaDecoderLayer", "CLIPEncoderLayer"}


def test_llava_13b_preset_is_the_13b_architecture_without_weights():
    from seedvlm.models import num_image_tokens, preset_config

    cfg = preset_config("llava-1.5-13b")
    t, v = cfg.text_config, cfg.vision_config
    assert (t.hidden_size, t.num_hidden_layers, t.num_attention_heads, t.intermediate_size, t.vocab_size) == (
        5120, 40, 40, 13824, 32064)
    assert (v.image_size, v.patch_size, v.hidden_size, v.num_hidden_layers) == (336, 14, 1024, 24)
    assert num_image_tokens(cfg) == 576 and cfg.image_token_index == 32000 and cfg.vision_feature_layer == -2
