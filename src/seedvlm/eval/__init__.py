"""Hallucination evaluation: POPE (question building, the official parser, metrics), CHAIR, results files and the
compare report. Scoring never needs a model; `runner` is the only module that touches one.

- `seedvlm.eval.pope`: `build_pope`, `parse_answer`, `pope_metrics`, `score_pope`, `load_questions`, `load_answers`
- `seedvlm.eval.chair`: `CHAIR(instances, references)` with `.score(image_id, caption)` and `.compute(records)`
- `seedvlm.eval.synonyms`: the 80 COCO categories and CHAIR's synonym lists
- `seedvlm.eval.runner`: model hooks, image loading, the leakage guard
- `seedvlm.eval.results`: results.json / samples.jsonl writer (config, git hash, versions)
- `seedvlm.eval.report`: `compare` (markdown, json, plots)
- `seedvlm.eval.yes_prob`: P(yes) from the first-token distribution, AUROC and average precision

Protocols and file formats: docs/evaluation.md.
"""
