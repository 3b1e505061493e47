"""The whole CLI chain on a tiny folder of each model family and the embedded world's files: seedvlm world ->
prepare -> teach -> train SEED (live and from the teacher cache) and SFT -> pope build (POPE and MME) -> eval pope /
chair / mme (base and adapters, greedy and contrastive) -> score -> compare -> merge -> eval on the merged folder ->
demo. Each step is one line of `STEPS` (a name and the argv it runs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, NamedTuple

import pytest

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"
LLAMA2_TOKENIZER = ROOT / ".." / "shared" / "reference-data" / "tokenizers" / "llama2" / "tokenizer.model"
FAMILY_FOLDERS = ("qwen2.5-vl", "qwen2-vl", "llava-next", "smolvlm")


class Chain(NamedTuple):
    """The paths every step reads or writes."""

    model: Path
    world: Path
    runs: Path

    @property
    def data(self) -> Path:
        return self.runs / "train.json"

    @property
    def val(self) -> Path:
        return self.world / "images" / "val"

    @property
    def inputs(self) -> list:
        """--model, --data and --images of training (and of a teacher cache)."""
        return ["--model", self.model, "--data", self.data, "--images", self.world / "images" / "train"]

    def train(self, yaml: str, out: str) -> list:
        return ["train", "--config", CONFIGS / yaml, *self.inputs, "--max-steps", 2, "--lora-r", 4,
                "--per-device-batch-size", 2, "--report-to", "none", "--save-steps", 100,
                "--output-dir", self.runs / out]

    def eval(self, task: str, run: str, adapter: str | None = None, model: Path | None = None) -> list:
        """`seedvlm eval TASK` into runs/eval/RUN/TASK (with runs/ADAPTER/adapter when given)."""
        argv = ["eval", task, "--model", model or self.model, "--out", self.runs / "eval" / run / task, "--device", "cpu",
                "--batch-size", 2, "--train-manifest", self.runs / "seed" / "train_manifest.json"]
        if adapter:
            argv += ["--adapter", self.runs / adapter / "adapter"]
        if task == "chair":
            return argv + ["--instances", self.world / "instances_val.json", "--references",
                           self.world / "captions_val.json", "--images", self.val, "--n", 2,
                           "--max-new-tokens", 6]
        questions = self.runs / "questions" / task
        return argv + ["--questions", questions, "--images", questions if task == "mme" else self.val,
                       "--max-new-tokens", 3] + (["--limit", 2] if task == "pope" else [])


class Step(NamedTuple):
    name: str
    argv: Callable[[Chain], list]


def _pope_build(c: Chain, fmt: str) -> list:
    argv = ["pope", "build", "--instances", c.world / "instances_val.json", "--out", c.runs / "questions" / fmt,
            "--n-images", 2, "--train-manifest", c.runs / "seed" / "train_manifest.json", "--format", fmt]
    return argv + (["--images", c.val] if fmt == "mme" else [])


STEPS = [
    Step("prepare", lambda c: ["prepare", "--input", c.world / "instruct_train.json", "--images",
                               c.world / "images" / "train", "--out", c.data, "--max-samples", 4, "--turns", "first"]),
    Step("teach", lambda c: ["teach", "--config", CONFIGS / "seed_tiny.yaml", *c.inputs, "--out", c.runs / "teacher"]),
    Step("train seed", lambda c: c.train("seed_tiny.yaml", "seed")),
    Step("train seed cached", lambda c: c.train("seed_tiny.yaml", "seed_cached") + ["--teacher-cache",
                                                                                   c.runs / "teacher"]),
    Step("train sft", lambda c: c.train("sft_tiny.yaml", "sft")),
    Step("pope build", lambda c: _pope_build(c, "pope")),
    Step("mme build", lambda c: _pope_build(c, "mme")),
    Step("eval pope base", lambda c: c.eval("pope", "base")),
    Step("eval pope seed", lambda c: c.eval("pope", "seed", adapter="seed")),
    Step("eval pope sft", lambda c: c.eval("pope", "sft", adapter="sft")),
    Step("eval chair base", lambda c: c.eval("chair", "base")),
    Step("eval chair seed", lambda c: c.eval("chair", "seed", adapter="seed")),
    Step("eval pope seed contrastive", lambda c: c.eval("pope", "seed_cd", adapter="seed") + ["--decoding",
                                                                                           "contrastive"]),
    Step("eval chair seed contrastive", lambda c: c.eval("chair", "seed_cd", adapter="seed") + ["--decoding",
                                                                                             "contrastive"]),
    Step("eval mme base", lambda c: c.eval("mme", "base")),
    Step("eval mme seed", lambda c: c.eval("mme", "seed", adapter="seed")),
    Step("score pope", lambda c: ["score", "pope", "--questions", c.runs / "questions" / "pope", "--limit", 2,
                                  "--answers", c.runs / "eval" / "seed" / "pope" / "samples.jsonl",
                                  "--out", c.runs / "scored" / "pope"]),
    Step("score mme", lambda c: ["score", "mme", "--questions", c.runs / "questions" / "mme",
                                 "--answers", c.runs / "eval" / "seed" / "mme" / "samples.jsonl",
                                 "--out", c.runs / "scored" / "mme"]),
    Step("score chair", lambda c: ["score", "chair", "--captions", c.runs / "eval" / "seed" / "chair" /
                                   "samples.jsonl", "--instances", c.world / "instances_val.json",
                                   "--references", c.world / "captions_val.json", "--out",
                                   c.runs / "scored" / "chair"]),
    Step("compare", lambda c: ["compare", "--run", f"base={c.runs / 'eval' / 'base'}", "--run",
                               f"seed={c.runs / 'eval' / 'seed'}", "--run", f"sft={c.runs / 'eval' / 'sft'}",
                               "--out", c.runs / "report"]),
    Step("merge", lambda c: ["merge", "--model", c.model, "--adapter", c.runs / "seed" / "adapter",
                             "--out", c.runs / "merged"]),
    Step("eval pope merged", lambda c: c.eval("pope", "merged", model=c.runs / "merged")),
    Step("demo", lambda c: ["demo", "--model", c.model, "--adapter", c.runs / "seed" / "adapter", "--image",
                            sorted(c.val.iterdir())[0], "--max-new-tokens", 3, "--device", "cpu"]),
]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """The embedded world, as small as it goes: 4 training and 4 held-out images of 32 px."""
    from seedvlm.cli import main

    out = tmp_path_factory.mktemp("world") / "world"
    assert main(["world", "--out", str(out), "--train", "4", "--val", "4", "--size", "32", "--quiet"]) == 0
    return out


def _folder(root: Path, name: str) -> Path:
    from seedvlm.models.family_folders import build_llava_next_folder, build_qwen_folder, build_smolvlm_folder

    if name == "llava-next":
        if not LLAMA2_TOKENIZER.is_file():
            pytest.skip(f"no Llama-2 tokenizer at {LLAMA2_TOKENIZER} (the LLaVA-NeXT folder needs it)")
        return build_llava_next_folder(root / name, LLAMA2_TOKENIZER)
    if name == "smolvlm":
        return build_smolvlm_folder(root / name)
    return build_qwen_folder(root / name, preset=f"tiny-{name}")


def _scores(path: Path) -> dict:
    return json.loads((path / "results.json").read_text())


@pytest.mark.parametrize("name", FAMILY_FOLDERS)
def test_family_chain(world, tmp_path, capsys, name):
    from seedvlm.cli import main

    c = Chain(_folder(tmp_path / "models", name), world, tmp_path / "runs")
    for step in STEPS:
        argv = [str(a) for a in step.argv(c)]
        rc = main(argv)
        err = capsys.readouterr().err
        assert rc == 0, f"{step.name}: seedvlm {' '.join(argv)} exited {rc}: {err[-2000:]}"

    ev = c.runs / "eval"
    for run, adapter in (("base", None), ("seed", "seed"), ("sft", "sft")):
        pope = _scores(ev / run / "pope")
        assert pope["model"] == str(c.model) and pope["random"]["n"] == 2 and pope["leakage"]["overlap"] == 0
        assert pope["adapter"] == (str(c.runs / adapter / "adapter") if adapter else None)
    mme = _scores(ev / "seed" / "mme")
    assert all(mme[s]["n"] > 0 for s in mme["subsets"]) and isinstance(mme["score"], float)
    assert _scores(ev / "seed" / "chair")["n"] == 2
    for task in ("pope", "chair"):
        assert _scores(ev / "seed_cd" / task)["config"]["decoding"] == "contrastive"
    # the merged folder answers as base + adapter
    merged = [json.loads(x)["p_yes"] for x in (ev / "merged" / "pope" / "samples.jsonl").read_text().splitlines()]
    seed = [json.loads(x)["p_yes"] for x in (ev / "seed" / "pope" / "samples.jsonl").read_text().splitlines()]
    assert merged == pytest.approx(seed, abs=1e-4)
    cached = [json.loads(x) for x in (c.runs / "seed_cached" / "metrics.jsonl").read_text().splitlines()]
    live = [json.loads(x) for x in (c.runs / "seed" / "metrics.jsonl").read_text().splitlines()]
    assert [m["loss"] for m in cached if "loss" in m] == pytest.approx([m["loss"] for m in live if "loss" in m],
                                                                       rel=1e-4)
    # re-scoring an eval run's samples without a model gives the numbers eval wrote
    for task in ("pope", "mme", "chair"):
        evaluated, rescored = _scores(ev / "seed" / task), _scores(c.runs / "scored" / task)
        assert {k: v for k, v in evaluated.items() if k not in _RUN_KEYS} == \
            {k: v for k, v in rescored.items() if k not in _RUN_KEYS}, task
    report = json.loads((c.runs / "report" / "report.json").read_text())
    assert set(report["runs"]) == {"base", "seed", "sft"} and len(report["runs"]["seed"]["sources"]) == 3
    train_cfg = json.loads((c.runs / "seed" / "train_config.json").read_text())
    assert train_cfg["family"] == FAMILY[name] and train_cfg["method"] == "seed"


FAMILY = {"qwen2.5-vl": "qwen2_vl", "qwen2-vl": "qwen2_vl", "llava-next": "llava_next", "smolvlm": "smolvlm"}
# what differs between an eval run and re-scoring its samples: the run's own record, not the metrics
_RUN_KEYS = {"config", "versions", "git", "git_dirty", "time", "model", "adapter", "leakage", "questions"}
