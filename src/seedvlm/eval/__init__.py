"""Hallucination evaluation: POPE (question building, the official and strict parsers, metrics), CHAIR (official and
corrected protocols), MME's hallucination subsets, results files and the compare report. Scoring never needs a
model; `runner` is the only module that touches one.

- `seedvlm.eval.pope`: `build_pope`, `parse_answer`, `pope_metrics`, `score_pope`, `load_questions`, `load_answers`
- `seedvlm.eval.pope_parsers`: POPE's `evaluate.py` decision (`parse_official`) and `parse_strict`
- `seedvlm.eval.pope_formats`: question/answer files in seedvlm's, POPE's and LLaVA's formats
- `seedvlm.eval.chair`: `CHAIR(instances, references, protocol)`, `.score(image_id, caption)`, `.compute(records)`
- `seedvlm.eval.chair_official`, `seedvlm.eval.singularize`: the official CHAIR code's reading of a caption
- `seedvlm.eval.synonyms`: the 80 COCO categories and CHAIR's synonym lists
- `seedvlm.eval.mme`, `seedvlm.eval.mme_build`: MME's existence/count/position/color subsets, read, scored, written
- `seedvlm.eval.runner`: model hooks, image loading, the leakage guard
- `seedvlm.eval.results`: results.json / samples.jsonl writer (config, git hash, versions)
- `seedvlm.eval.report`: `compare` (markdown, json, plots)
- `seedvlm.eval.yes_prob`: P(yes) from the first-token distribution, AUROC and average precision

Protocols and file formats: docs/evaluation.md.
"""
