"""Running a model over POPE questions or CHAIR images, and the leakage guard.

The model is reached only through `load_model` and `generate` below (thin wrappers over
`seedvlm.models.load_for_inference` and `seedvlm.generation.generate_texts`), so tests replace those two with a fake
answerer and exercise everything else. Images are opened in chunks (a few hundred at a time, the same file opened
once per chunk), never all at once.

Several processes (`accelerate launch --num_processes N -m seedvlm eval ...`): `run_sharded` gives each rank a
contiguous share of whole generation batches and gathers the answers, in order, on every rank; the command writes
its files on rank 0 only. Batches are the same as one process's and the RNGs are seeded per batch, so the answers,
and the metrics, equal a one-process run (tests/test_distributed.py).
"""

from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import Any, Sequence

from seedvlm.errors import SeedVLMError
from seedvlm.io import check_image, open_image, read_json, safe_join

log = logging.getLogger(__name__)

# generate_texts reads these options per decoding; anything else would be silently ignored, so it is refused.
_DECODE_OPTIONS = {"greedy": set(), "sample": {"top_p", "temperature"}, "beam": {"num_beams"}}
_SET_BY_GENERATE = {"model", "batch", "max_new_tokens", "eos_token_id", "pad_token_id"}


# --------------------------------------------------------------------------------------- model hooks (faked in tests)
def load_model(model_path: str, adapter: str | None = None, device: str | None = None,
               allow_unverified_adapter: bool = False, options: dict | None = None):
    """(model, processor) for generation (folders of other families than LLaVA-1.5 through the family registry,
    their processor with the family `options`, e.g. min/max pixels)."""
    from seedvlm.models import load_for_inference
    from seedvlm.models.families.options import check_model_options
    from seedvlm.models.families.registry import model_family

    check_model_options(model_path, options or {})
    family = model_family(model_path)
    if family is not None:
        from seedvlm.family_generation import load_family_for_inference

        return load_family_for_inference(model_path, family, adapter=adapter, device=device,
                                         allow_unverified_adapter=allow_unverified_adapter, options=options)
    return load_for_inference(model_path, adapter=adapter, device=device,
                              allow_unverified_adapter=allow_unverified_adapter)


def generate(model, processor, images: list, prompts: list[str], **kwargs) -> list[str]:
    """Answer each (image, prompt); prompts are plain texts (the chat template is generate_texts' job, or for other
    families than LLaVA-1.5 `generate_family_texts`')."""
    from seedvlm.family_generation import generate_family_texts, model_family_of
    from seedvlm.generation import generate_texts

    family = model_family_of(model)
    if family is not None:
        return generate_family_texts(model, processor, family, images, prompts, **kwargs)
    return generate_texts(model, processor, images, prompts, **kwargs)


def check_decode_options(decoding: str, options: dict) -> None:
    """Refuse decode options the chosen decoding would not use (a typo must not be silently ignored)."""
    if decoding == "contrastive":
        try:
            from seedvlm.decode import contrastive_generate
        except ImportError:
            return
        params = inspect.signature(contrastive_generate).parameters
        if any(p.kind is p.VAR_KEYWORD for p in params.values()):
            return
        known = {n for n in params if not n.endswith("_")} - _SET_BY_GENERATE
    elif decoding in _DECODE_OPTIONS:
        known = _DECODE_OPTIONS[decoding]
    else:
        raise SeedVLMError(f"unknown decoding {decoding!r}; use greedy, sample, beam or contrastive")
    unknown = sorted(set(options) - known)
    if unknown:
        raise SeedVLMError(f"decode option(s) {unknown} do not apply to --decoding {decoding}; it takes "
                           f"{sorted(known) or 'none'}")


def parse_value(text: str) -> Any:
    """A command-line decode option value: int, float, bool, None or the string itself."""
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


# --------------------------------------------------------------------------------------- leakage guard
def manifest_images(path: str | Path) -> dict:
    """A training manifest's images: {"names": basenames, "coco_ids": {id: name}, "sha256": {hash: name}}.

    COCO ids are parsed from the names (so a manifest written before ids were recorded is still compared by id);
    content hashes come from the manifest's "sha256" record ({name: hash}) when it has one."""
    from seedvlm.data.image_ids import coco_id

    data = read_json(path, "training manifest")
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list) or not all(isinstance(x, str) for x in images):
        raise SeedVLMError(f"training manifest {path}: expected {{\"images\": [file names, ...]}}")
    hashes = data.get("sha256", {})
    if not isinstance(hashes, dict):
        raise SeedVLMError(f"training manifest {path}: 'sha256' must map image names to hashes")
    ids = {coco_id(x): x for x in images if coco_id(x) is not None}
    ids.update({int(i): f"COCO id {i}" for i in data.get("coco_ids", []) if int(i) not in ids})
    return {"names": {Path(x).name for x in images}, "coco_ids": ids, "sha256": {h: n for n, h in hashes.items()}}


def _overlap(images: Sequence[str], trained: dict, images_dir: str | Path | None) -> list[str]:
    """Evaluation images that match a trained image by COCO id, by content hash, or by name; each as
    "eval name (= trained name)"."""
    from seedvlm.data.image_ids import coco_id, content_hash

    found = []
    for name in sorted(set(images)):
        cid = coco_id(name)
        match = trained["coco_ids"].get(cid) if cid is not None else None
        if match is None and cid is None and trained["sha256"] and images_dir is not None:
            path = Path(images_dir) / name
            if path.is_file():
                match = trained["sha256"].get(content_hash(path))
        if match is None and Path(name).name in trained["names"]:
            match = Path(name).name
        if match is not None:
            found.append(name if Path(match).name == Path(name).name else f"{name} (= trained {match})")
    return found


def check_leakage(images: Sequence[str], manifest: str | Path | None, allow_overlap: bool = False,
                  images_dir: str | Path | None = None) -> dict | None:
    """Refuse evaluation images that were trained on unless allow_overlap. An image matches by COCO id (any
    naming scheme: train2017's 000000000074.jpg is val2014's COCO_val2014_000000000074.jpg), else by content hash
    (files under images_dir against the manifest's hashes), else by file name.

    Returns None without a manifest, else {"manifest", "overlap", "compared_by"} for the results file.
    """
    if manifest is None:
        return None
    trained = manifest_images(manifest)
    overlap = _overlap(images, trained, images_dir)
    if overlap and not allow_overlap:
        raise SeedVLMError(f"{len(overlap)} evaluation images appear in the training manifest {manifest} (same COCO "
                           f"id, content or file name), e.g. {', '.join(overlap[:3])}; evaluate on held-out images "
                           f"or pass --allow-overlap")
    if overlap:
        log.warning("%d evaluation images appear in the training manifest %s (allowed by --allow-overlap)",
                    len(overlap), manifest)
    return {"manifest": str(manifest), "overlap": len(overlap), "compared_by": "coco id, sha256, file name"}


# --------------------------------------------------------------------------------------- images
def resolve_images(root: str | Path, items: Sequence[tuple[str, Any]], what: str = "question") -> list[Path]:
    """Paths of (file name, id) items inside root; a missing file or an escaping path names the file and the id."""
    root = Path(root)
    if not root.is_dir():
        raise SeedVLMError(f"image folder not found: {root}")
    paths, checked = [], set()
    for name, ident in items:
        try:
            p = safe_join(root, name)
        except SeedVLMError as e:
            raise SeedVLMError(f"{what} {ident}: {e}") from None
        if not p.is_file():
            raise SeedVLMError(f"{what} {ident}: image not found: {p} (the name {name!r} under {root})")
        if p not in checked:  # header only: unreadable or oversized images fail before the model loads
            try:
                check_image(p)
            except SeedVLMError as e:
                raise SeedVLMError(f"{what} {ident}: {e}") from None
            checked.add(p)
        paths.append(p)
    return paths


def _open(path: Path):
    return open_image(path)


def run_prompts(model, processor, paths: Sequence[Path], prompts: Sequence[str], chunk_size: int = 256,
                seed: int | None = None, first_index: int = 0, decode_seed: int | None = None,
                **gen_kwargs) -> list[str]:
    """Generate one answer per (image path, prompt), loading images chunk by chunk.

    Generation runs in batches of `gen_kwargs["batch_size"]` (default 16) cut at multiples of it counted from
    `first_index`, the position of paths[0] in the whole list (a shard's start, itself a multiple of the batch).
    With `seed`, the global RNGs (HF sampling) are seeded before each batch from (seed, batch number), so a batch's
    answers depend on its own questions only: a run sharded over several processes answers exactly as one process
    does (contrastive decoding seeds its own generator per batch from `decode_seed`, its `seed` option)."""
    from seedvlm import distributed
    from seedvlm.progress import progress

    batch = int(gen_kwargs.get("batch_size", 16))
    if batch < 1 or first_index % batch:
        raise SeedVLMError(f"run_prompts: batch size {batch} and first index {first_index} do not line up")
    chunk = max(chunk_size // batch, 1) * batch  # whole batches per chunk of opened images
    out: list[str] = []
    bar = progress(len(prompts), "eval", "q", enabled=distributed.is_main())
    for start in range(0, len(prompts), chunk):
        cache: dict[Path, Any] = {}
        for p in paths[start:start + chunk]:
            if p not in cache:
                cache[p] = _open(p)
        for b in range(start, min(start + chunk, len(prompts)), batch):
            batch_paths = paths[b:b + batch]
            if seed is not None:
                _seed_batch(seed, (first_index + b) // batch)
            texts = generate(model, processor, [cache[p] for p in batch_paths], list(prompts[b:b + batch]),
                             progress=False, **gen_kwargs, **({} if decode_seed is None else {"seed": decode_seed}))
            if len(texts) != len(batch_paths):
                raise SeedVLMError(f"the model returned {len(texts)} answers for {len(batch_paths)} prompts")
            out.extend(t if isinstance(t, str) else str(t) for t in texts)
            bar.update(len(batch_paths))
    bar.close()
    return out


def _seed_batch(seed: int, batch_number: int) -> None:
    """Seed python's and torch's global RNGs for one generation batch from (seed, batch number)."""
    import random

    import torch

    value = (int(seed) * 1_000_003 + int(batch_number)) % (2 ** 63)
    random.seed(value)
    torch.manual_seed(value)


def _seed_everything(seed: int, gen_kwargs: dict) -> None:
    """Contrastive decoding gets `seed` for its own generator (unless given); the global RNGs are seeded per batch
    (`_seed_batch`)."""
    if gen_kwargs.get("decoding") == "contrastive":
        gen_kwargs.setdefault("seed", seed)


def run_sharded(paths: Sequence[Path], prompts: Sequence[str], model_path: str, adapter: str | None,
                device: str | None, seed: int, **gen_kwargs) -> list[str]:
    """Answers to all (path, prompt) pairs, in order. Under a launcher (accelerate launch / torchrun, N
    processes) each rank loads the model on its own device, answers its contiguous share of whole batches
    (`distributed.shard_bounds`) and the shares are gathered (accelerate `gather_object`) so every rank returns
    the full list; with one process, all of it here."""
    from seedvlm import distributed

    rank, world = distributed.rank_world()
    if world > 1 and device in (None, "cuda"):  # each rank on its own GPU (cuda:LOCAL_RANK), not all on cuda:0
        device = str(distributed.device())
    batch = int(gen_kwargs.get("batch_size", 16))
    start, stop = distributed.shard_bounds(len(prompts), rank, world, unit=batch)
    if world > 1:
        log.info("rank %d of %d: items %d..%d of %d on %s", rank, world, start, stop, len(prompts), device)
    from seedvlm.models.prompting import warn_if_not_trained_style

    warn_if_not_trained_style(adapter, gen_kwargs.get("prompt_style"))
    # passed only when asked for, so a stand-in load_model with the plain (path, adapter, device) signature still fits
    extra = {"allow_unverified_adapter": True} if gen_kwargs.pop("allow_unverified_adapter", False) else {}
    options = gen_kwargs.pop("processor_options", None)  # the family's processor options (e.g. max_pixels)
    if options:
        extra["options"] = options
    model, processor = load_model(model_path, adapter=adapter, device=device, **extra)
    _seed_everything(seed, gen_kwargs)
    decode_seed = gen_kwargs.pop("seed", None)  # contrastive decoding's option; run_prompts' `seed` is the batches'
    texts = run_prompts(model, processor, paths[start:stop], prompts[start:stop], seed=seed, first_index=start,
                        decode_seed=decode_seed, **gen_kwargs)
    texts = distributed.gather_lists(texts)
    if len(texts) != len(prompts):
        raise SeedVLMError(f"gathered {len(texts)} answers from {world} processes for {len(prompts)} prompts")
    return texts


def answer_questions(questions: Sequence[dict], images_dir: str | Path, model_path: str, adapter: str | None = None,
                     device: str | None = None, prompt_suffix: str = "", seed: int = 0, **gen_kwargs) -> dict[str, str]:
    """{question_id: raw answer} for POPE questions; images are checked before the model loads. Answers carry
    P(yes) (seedvlm.eval.yes_prob) and questions of one image reuse its prefix unless told otherwise."""
    gen_kwargs = {"prefix_reuse": True, "yes_prob": True, **gen_kwargs}
    paths = resolve_images(images_dir, [(q["image"], q["question_id"]) for q in questions], "question")
    texts = run_sharded(paths, [q["text"] + prompt_suffix for q in questions], model_path, adapter, device, seed,
                        **gen_kwargs)
    return {str(q["question_id"]): t for q, t in zip(questions, texts)}


def caption_images(images: Sequence[dict], images_dir: str | Path, model_path: str, prompt: str,
                   adapter: str | None = None, device: str | None = None, seed: int = 0, **gen_kwargs) -> list[dict]:
    """[{"image_id", "caption"}] for COCO image records ({"id", "file_name"})."""
    paths = resolve_images(images_dir, [(im["file_name"], im["id"]) for im in images], "image_id")
    texts = run_sharded(paths, [prompt] * len(images), model_path, adapter, device, seed, **gen_kwargs)
    return [{"image_id": im["id"], "caption": t} for im, t in zip(images, texts)]
