"""`seedvlm eval pope|chair|mme`: run a model over POPE questions, CHAIR images or MME's yes/no subsets, and score it.

    seedvlm eval pope --model runs/base --questions pope/coco --images coco/val2014 --out runs/base/pope
    seedvlm eval pope --model M --adapter runs/seed/adapter --questions pope/world --images worlds/w/images/val \\
        --train-manifest runs/seed/manifest.json --decoding contrastive --beta 1.0 --out runs/seed/pope
    seedvlm eval chair --model M --instances instances_val2014.json --references captions_val2014.json \\
        --images coco/val2014 --n 500 --max-new-tokens 512 --out runs/base/chair
    seedvlm eval pope --model M --questions llava_pope_test.jsonl --labels POPE/output/coco --images coco/val2014 \\
        --out runs/base/pope-llava
    seedvlm eval mme --model M --questions MME_Benchmark_release_version --out runs/base/mme   # images: --questions
    seedvlm eval pope --model /models/llava-1.5-7b-hf --questions pope/coco --images coco/val2014 \\
        --prompt-style llava-1.5 --out runs/base/pope_llava   # LLaVA-1.5's own protocol, as its published numbers

    accelerate launch --num_processes 4 -m seedvlm eval pope ...   # several GPUs: shards the questions, rank 0 writes

Writes OUT/results.json (metrics, config, git hash, versions) and OUT/samples.jsonl (raw answers, parsed labels).
Extra `--key value` options are decode options passed to the decoder (e.g. --top-p 0.9 with --decoding sample,
--beta 1.0 with --decoding contrastive). Re-score the samples with `seedvlm score`.
"""

from __future__ import annotations

import argparse

from seedvlm.choices import PromptStyle, values
from seedvlm.models.families.options import add_family_options
from seedvlm.options import add_pope_answer_options, check_prompt, non_negative_int, positive_int

MME_SUBSETS = ("existence", "count", "position", "color")
PROMPT_STYLES = values(PromptStyle)


def _common(p: argparse.ArgumentParser, max_new_tokens: int, images_required: bool = True) -> None:
    p.add_argument("--model", required=True, help="llava-hf-format model folder")
    p.add_argument("--adapter", default=None, help="peft adapter folder (optional)")
    p.add_argument("--images", required=images_required, help="folder the image file names are relative to")
    p.add_argument("--out", required=True, help="output folder for results.json and samples.jsonl")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--batch-size", type=positive_int, default=16, help="generation batch size, >= 1 (default 16)")
    p.add_argument("--max-new-tokens", type=positive_int, default=max_new_tokens,
                   help=f"new tokens per answer, >= 1 (default {max_new_tokens})")
    p.add_argument("--decoding", choices=("greedy", "sample", "beam", "contrastive"), default="greedy",
                   help="decoding method (default greedy); extra --key value options are passed to it")
    p.add_argument("--seed", type=non_negative_int, default=0,
                   help="seed for image sampling and sampled decoding (default 0)")
    p.add_argument("--train-manifest", default=None,
                   help="training manifest JSON ({\"images\": [...]}); images it holds are refused, matched "
                        "by COCO id (any COCO naming), content hash or file name")
    p.add_argument("--allow-overlap", action="store_true", help="evaluate even on images of the training manifest")
    p.add_argument("--allow-unverified-adapter", action="store_true",
                   help="load an adapter without seedvlm_base.json (its base cannot be checked)")
    p.add_argument("--prompt-style", choices=PROMPT_STYLES, default="hf",
                   help="hf: the folder's chat template and processor (default); llava-1.5: LLaVA-1.5's own "
                        "protocol (Vicuna v1 system prompt, POPE short-answer suffix, images padded to a square); "
                        "use the style the model was trained with")
    p.add_argument("--static-cache", action="store_true",
                   help="decode with a static KV cache and a compiled decode step (docs/evaluation.md)")
    add_family_options(p)
    p.set_defaults(accepts_overrides=True, option_names=[o for o in p._option_string_actions if o.startswith("--")])


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("eval", help="evaluate a model on POPE, CHAIR or MME", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="eval_task", metavar="TASK", required=True)

    p = sub.add_parser("pope", help="answer POPE questions and score them", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--questions", required=True,
                   help="POPE questions: a `seedvlm pope build` folder, POPE's coco_pope_*.json (a file or a folder), "
                        "or LLaVA's llava_pope_test.jsonl; gzipped files too")
    add_pope_answer_options(p)
    p.add_argument("--prompt-suffix", default=None,
                   help="appended to every question, e.g. ' Answer yes or no.' (default: the prompt style's: none "
                        "for hf, '\\nAnswer the question using a single word or phrase.' for llava-1.5)")
    p.add_argument("--limit", type=positive_int, default=None, help="only the first N questions of each split (N >= 1)")
    p.add_argument("--prefix-reuse", action=argparse.BooleanOptionalAction, default=True,
                   help="prefill each image's prompt prefix once for all its questions (default on; same answers)")
    _common(p, max_new_tokens=8)
    p.set_defaults(func=run_pope)

    c = sub.add_parser("chair", help="describe images and score the descriptions with CHAIR", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("--instances", required=True, help="COCO-format instances JSON of the evaluated images")
    c.add_argument("--references", required=True, help="COCO-format reference captions JSON")
    c.add_argument("--n", type=positive_int, default=500,
                   help="images to sample from the instances, >= 1 (default 500)")
    c.add_argument("--image-ids", default=None,
                   help="JSON list of image ids (or a results.json with image_ids) instead of sampling")
    c.add_argument("--prompt", default="Please describe this image in detail.", help="the description prompt")
    c.add_argument("--protocol", choices=("official", "corrected"), default="official",
                   help="official: the authors' chair.py word for word (default); corrected: seedvlm's fixes")
    _common(c, max_new_tokens=512)
    c.set_defaults(func=run_chair)

    m = sub.add_parser("mme", help="answer MME's existence/count/position/color questions and score them",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    m.add_argument("--questions", required=True, help="MME folder: one subfolder per subset in MME's layout")
    m.add_argument("--subsets", default=",".join(MME_SUBSETS),
                   help=f"comma-separated subsets (default {','.join(MME_SUBSETS)})")
    m.add_argument("--prompt-suffix", default="", help="appended to every question (MME's own end in "
                                                        "'Please answer yes or no.')")
    _common(m, max_new_tokens=8, images_required=False)
    m.set_defaults(func=run_mme)


def _decode_options(args: argparse.Namespace) -> dict:
    from seedvlm.config import parse_overrides
    from seedvlm.errors import SeedVLMError, did_you_mean
    from seedvlm.eval.results import check_results_dir
    from seedvlm.eval.runner import check_decode_options, parse_value
    from seedvlm.options import check_decode_ranges

    check_results_dir(args.out)  # first: an unusable --out fails in the first second, not after every answer
    options = {k: parse_value(v) for k, v in parse_overrides(args.overrides).items()}
    try:
        check_decode_options(args.decoding, options)
    except SeedVLMError as e:  # most often a mistyped option of the command itself
        hints = "".join(did_you_mean("--" + k.replace("_", "-"), args.option_names) for k in options)
        raise SeedVLMError(f"{e}{hints}") from None
    check_decode_ranges(options)
    return options


def _gen_kwargs(args: argparse.Namespace, options: dict) -> dict:
    """The generation settings; the family options (e.g. --max-pixels) checked against the model's family here,
    before anything loads."""
    from seedvlm.errors import SeedVLMError
    from seedvlm.models.families.options import check_model_options, given_options

    for name in ("batch_size", "max_new_tokens", "limit"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise SeedVLMError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    family_options = given_options(args)
    check_model_options(args.model, family_options)
    return dict(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, decoding=args.decoding,
                prompt_style=args.prompt_style, allow_unverified_adapter=args.allow_unverified_adapter, static_cache=args.static_cache, **options,
                **({"processor_options": family_options} if family_options else {}))


def _write(args: argparse.Namespace, task: str, metrics: dict, samples: list, options: dict, protocol: dict) -> None:
    """results.json + samples.jsonl of an evaluation, with the options, processes and prompt protocol it ran with."""
    from seedvlm import distributed
    from seedvlm.eval.results import args_config, write_results

    write_results(args.out, task, metrics, samples, config=dict(args_config(args), decode_options=options,
                                                                 processes=distributed.rank_world()[1],
                                                                 prompt_protocol=protocol),
                  model=args.model, adapter=args.adapter)


def run_pope(args: argparse.Namespace) -> int:
    from seedvlm import distributed
    from seedvlm.eval import runner
    from seedvlm.eval.pope import questions_provenance, score_pope
    from seedvlm.eval.pope_formats import load_pope_questions, question_key
    from seedvlm.eval.report import pope_table
    from seedvlm.models.prompting import get_style

    options = _decode_options(args)
    gen = _gen_kwargs(args, options)
    questions, formats = load_pope_questions(args.questions, limit=args.limit, labels=args.labels)
    if args.prompt_suffix is not None:
        check_prompt(args.prompt_suffix, "--prompt-suffix")
    for q in questions:
        check_prompt(q["text"], f"{args.questions}: question {q['question_id']}")
    style = get_style(args.prompt_style)
    suffix = style.pope_suffix if args.prompt_suffix is None else args.prompt_suffix
    leak = runner.check_leakage([q["image"] for q in questions], args.train_manifest, args.allow_overlap,
                                images_dir=args.images)
    keyed = [dict(q, question_id=question_key(q)) for q in questions]  # ids repeat across POPE's split files
    answers = runner.answer_questions(keyed, args.images, args.model, adapter=args.adapter, device=args.device,
                                      prompt_suffix=suffix, seed=args.seed,
                                      prefix_reuse=args.prefix_reuse, **gen)
    if not distributed.is_main():  # several processes: every rank has all answers; rank 0 scores and writes
        return 0
    metrics, samples = score_pope(questions, answers, answers_source="the model's answers", parser=args.parser)
    metrics.update(questions_provenance(args.questions, formats), leakage=leak)
    protocol = dict(style.describe(), pope_suffix=suffix)
    _write(args, "pope", metrics, samples, options, protocol)
    print(pope_table(metrics))
    return 0


def select_images(chair, n: int, seed: int, image_ids: str | None) -> list[dict]:
    """The CHAIR image records: from --image-ids, else n sampled with the seed (sorted by id)."""
    import logging
    import random

    from seedvlm.errors import SeedVLMError
    from seedvlm.io import duplicates, read_json

    by_key = {str(im["id"]): im for im in chair.images}
    bad = [k for k, im in by_key.items() if not isinstance(im.get("file_name"), str)]
    if bad:
        raise SeedVLMError(f"{chair.instances_source}: image(s) without a file_name, e.g. ids {', '.join(bad[:5])}")
    if image_ids:
        data = read_json(image_ids, "image id file")
        ids = data.get("image_ids") if isinstance(data, dict) else data
        if not isinstance(ids, list) or not ids:
            raise SeedVLMError(f"image id file {image_ids}: expected a JSON list of image ids or a results.json "
                               "with 'image_ids'")
        repeated = duplicates(str(i) for i in ids)
        if repeated:
            raise SeedVLMError(f"image id file {image_ids}: duplicate image ids, e.g. {', '.join(repeated[:5])}")
        missing = [str(i) for i in ids if str(i) not in by_key]
        if missing:
            raise SeedVLMError(f"image id file {image_ids}: {len(missing)} ids are not in {chair.instances_source}, "
                               f"e.g. {', '.join(missing[:5])}")
        return [by_key[str(i)] for i in ids]
    if n < 1:
        raise SeedVLMError(f"--n must be at least 1, got {n}")
    keys = sorted(by_key, key=lambda k: (len(k), k))
    if len(keys) <= n:
        if len(keys) < n:
            logging.getLogger(__name__).warning("only %d images in %s (asked for %d); using all", len(keys),
                                                chair.instances_source, n)
        chosen = keys
    else:
        chosen = sorted(random.Random(f"{seed}:chair").sample(keys, n), key=lambda k: (len(k), k))
    return [by_key[k] for k in chosen]


def run_chair(args: argparse.Namespace) -> int:
    from seedvlm import distributed
    from seedvlm.eval import runner
    from seedvlm.eval.chair import CHAIR
    from seedvlm.eval.report import chair_table
    from seedvlm.models.prompting import get_style

    options = _decode_options(args)
    gen = _gen_kwargs(args, options)
    check_prompt(args.prompt, "--prompt")
    chair = CHAIR(args.instances, args.references, protocol=args.protocol)
    images = select_images(chair, args.n, args.seed, args.image_ids)
    leak = runner.check_leakage([im["file_name"] for im in images], args.train_manifest, args.allow_overlap,
                                images_dir=args.images)
    records = runner.caption_images(images, args.images, args.model, args.prompt, adapter=args.adapter,
                                    device=args.device, seed=args.seed, **gen)
    if not distributed.is_main():  # several processes: every rank has all captions; rank 0 scores and writes
        return 0
    metrics, samples = chair.evaluate(records)
    metrics["leakage"] = leak
    protocol = dict(get_style(args.prompt_style).describe(), pope_suffix=None, prompt=args.prompt)
    _write(args, "chair", metrics, samples, options, protocol)
    print(chair_table(metrics))
    return 0


def run_mme(args: argparse.Namespace) -> int:
    from seedvlm import distributed
    from seedvlm.eval import runner
    from seedvlm.eval.mme import load_mme, score_mme
    from seedvlm.eval.report import mme_table
    from seedvlm.models.prompting import get_style

    options = _decode_options(args)
    gen = _gen_kwargs(args, options)
    questions = load_mme(args.questions, [s for s in args.subsets.split(",") if s])
    images = args.images or args.questions
    leak = runner.check_leakage([q["image"] for q in questions], args.train_manifest, args.allow_overlap,
                                images_dir=images)
    answers = runner.answer_questions(questions, images, args.model, adapter=args.adapter, device=args.device,
                                      prompt_suffix=args.prompt_suffix, seed=args.seed, **gen)
    if not distributed.is_main():  # several processes: every rank has all answers; rank 0 scores and writes
        return 0
    metrics, samples = score_mme(questions, answers, answers_source="the model's answers")
    metrics.update(questions=str(args.questions), leakage=leak)
    protocol = dict(get_style(args.prompt_style).describe(), pope_suffix=None, prompt_suffix=args.prompt_suffix)
    _write(args, "mme", metrics, samples, options, protocol)
    print(mme_table(metrics))
    return 0
