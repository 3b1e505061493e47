"""`seedvlm experiment`: base, LoRA-SFT and SEED variants, several seeds, POPE + probes + CHAIR, operating-point
sweeps, CHAIRi at matched recall, ablations, and one summary with 95% intervals and the config's goals.

    seedvlm experiment --config configs/experiment_world.yaml                 # the full protocol
    seedvlm experiment --config configs/experiment_smoke.yaml                 # minutes on 2 CPU cores
    seedvlm experiment --config configs/experiment_world.yaml --seeds 0 --out runs/exp_one_seed --dry-run

Every step calls an existing command through `seedvlm.cli.main` (world, prepare, pope build, train,
eval pope|chair|mme, score chair, compare): nothing here trains or scores by itself. Layout:

    OUT/experiment.json                 the config of the latest invocation
    OUT/world/, OUT/data/, OUT/questions/   shared: generated world, training records + manifest, POPE question
                                        folders (objects; color/count/relation probes), MME's four subsets and the
                                        CHAIR image ids
    OUT/seed<S>/<arm>/train/            training run (adapter/, checkpoints, metrics.jsonl) for trained arms
    OUT/seed<S>/<arm>/pope|probes|mme|chair/ results.json + samples.jsonl of each evaluation
    OUT/seed<S>/<arm>/beta_<b>/         CHAIR at another contrast strength b (contrastive arms)
    OUT/seed<S>/<arm>/lengths/w<k>/     CHAIR of the arm's captions cut to their first k words (re-scored)
    OUT/seed<S>/<arm>/chair_sweep.json  the arm's extra operating points, read by `seedvlm compare`
    OUT/seed<S>/compare[_ablations]/    `seedvlm compare` reports (tables, CHAIRi-vs-recall curves)
    OUT/summary.json, OUT/summary.md    mean and 95% t-interval over seeds, matched-recall table, goals, ablations

Resume: every step folder gets a `done.json` marker (its settings, the markers of the steps it read, a token, the
time it took). A re-run skips a step whose marker exists with the same settings and the same upstream tokens; a step
re-runs when its marker is missing (interrupted or deleted) or stale, and then so does everything downstream of it.
An interrupted training run continues from its last checkpoint (`seedvlm train --resume auto`).
docs/experiment.md describes the protocol and the matched-recall method.

Modules: `config` (ExperimentConfig), `plan` (the steps), `runner` (markers, resume, ETA), `statistics` (intervals,
frontier, matched recall; shared with `seedvlm compare`), `summary` (summary.json and summary.md).
"""

from seedvlm.experiment.config import ARM_HELP, ARMS, ExperimentConfig, load_experiment_config
from seedvlm.experiment.plan import STARTED, Plan, Step, variant_name
from seedvlm.experiment.runner import MARKER, plan_status, run_experiment
from seedvlm.eval.statistics import chair_at_recall, frontier, mean_ci, t975
from seedvlm.experiment.summary import MATCHED_METHOD, summarize

__all__ = ["ARMS", "ARM_HELP", "MARKER", "MATCHED_METHOD", "STARTED", "ExperimentConfig", "Plan", "Step",
           "chair_at_recall", "frontier", "load_experiment_config", "mean_ci", "plan_status", "run_experiment",
           "summarize", "t975", "variant_name"]
