"""Teacher cache: the frozen teacher's answer-row logits stored once (`seedvlm teach`), so `seedvlm train
--teacher-cache CACHE` runs the student forward only (docs/design.md section 7: the teacher is frozen, so its
outputs can be computed once for a multi-epoch run). Writing, reading and checking the cache stay in one module
(a little over 400 lines) so that its format is defined in one place.

What is stored, per answer row (the positions `answer_positions(labels)` marks), after ONE pass of the base model
(no adapter) over the prepared data with the noisy view drawn by `per_sample_generator(seed, sample_index, step=0)`
(for the other families, `train.family_teacher.family_teacher_logits`: the noise on the pixel inputs only):
- `ids` (R, K): the kept tokens, K = min(2k, V) distinct ids per row: the clean top-k, then the noisy top-k tokens
  not already in it, then (to fill all K slots) the next-best clean tokens. The noisy top-k matter because they
  are the tokens purification pushes down (the hallucination-prone ones): a student putting mass there must see
  the target's low value, not a missing one. int16 when V <= 32767 (LLaVA's 32064), else int32;
- `clean`, `noisy` (R, K): the clean and noisy teacher logits at those ids (float16 by default; `--value-dtype`);
- `clean_lse`, `noisy_lse` (R,) float32: log-normalizers over the whole vocabulary (log-prob = logit - lse);
- `clean_rest`, `noisy_rest` (R,) float32: logsumexp of the logits of the V - K tokens NOT kept (-inf if none);
- `clean_tail_max` (R,) float32: the largest clean logit among the tokens not kept (for the plausibility mask);
- per sample: `conf` (n,) float32 (the clean teacher's confidence, computed on the full fp32 rows),
  `sample_index` (n,) int64, `row_offsets` (n + 1,) int64 (sample j's rows are ids[row_offsets[j]:row_offsets[j+1]]).
Files: `CACHE/shard-00000.safetensors`, ... and `CACHE/index.json` (format, data file + sha256, image list hash,
prompt style (other families: the sha256 of the chat template), model + family + `base_fingerprint`, noise settings (step fixed to 0), top-k, K, vocabulary, dtypes, samples, rows, bytes per
sample and per row). The folder is written in a temp folder beside CACHE and renamed when complete
(`seedvlm.io.atomic_path`): an interrupted run leaves no CACHE.

How training uses it (`TeacherCache.answer_rows` -> `CachedRows`, a `teacher.TeacherRows`): the student's answer
rows (N, V) are reduced to the same columns: the kept
tokens, plus, with `teacher_cache_tail: lump` [default], ONE extra column standing for all the other tokens, whose
logit is the logsumexp of their logits (student: computed from its full row; teacher: `clean_rest`/`noisy_rest`).
Then exactly the uncached recipe runs on these (N, K+1) "coarse" rows: purify with the sample's b, the plausibility
mask, distill_loss (T, direction, mask strategy); CE stays on the student's full rows. So:
- K = V (top-k >= V/2): no rest column; the loss equals the uncached loss (tests: within 1e-5 with float32 values);
- lump: the rest of the vocabulary is ONE token for teacher and student alike: at T = 1 its probability is exact
  (the rest's total mass) for the clean and noisy teacher and for the student; purification and the temperature
  then act on that one token instead of each of its members, so the target's rest mass is
  softmax(((1+b) clean_rest - b noisy_rest) / T) instead of sum_v softmax(((1+b) c_v - b n_v) / T) (not equal
  unless the rest holds one token, or c_v - n_v is constant over it and T = 1);
- drop: the rest is discarded: teacher target and student are both renormalized over the K kept tokens (the
  `restrict` semantics of -inf targets); the student's mass on other tokens is neither rewarded nor punished;
- the plausibility mask (g) is exact on the kept tokens (the clean argmax is always kept); the rest column is
  masked when `clean_tail_max` is below the cutoff (then every token in it is), else kept whole;
- the noise is drawn once (step 0) instead of anew at every global step, so every epoch sees the same noisy view;
- the values are float16 by default (~1e-3 relative rounding of the logits).
docs/performance.md reports the measured gap and the storage per sample.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import hashlib
import logging
import time
from pathlib import Path
from typing import Any, Sequence, get_args

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from seedvlm import distributed
from seedvlm import seed as S
from seedvlm.data.dataset import Collator, load_records, load_train_data
from seedvlm.choices import CacheTail
from seedvlm.errors import SeedVLMError
from seedvlm.io import atomic_path, read_json, safe_join, write_json
from seedvlm.models import base_fingerprint, load_model
from seedvlm.models.dtypes import resolve_dtype
from seedvlm.models.families.options import given_options
from seedvlm.models.families.registry import model_family
from seedvlm.train.teacher import TeacherRows, noise_settings, noisy_view

log = logging.getLogger("seedvlm.teach")

FORMAT = "seedvlm-teacher-cache"
VERSION = 1
INDEX_FILE = "index.json"
TAIL_MODES = get_args(CacheTail)
VALUE_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
ROW_KEYS = ("ids", "clean", "noisy", "clean_lse", "noisy_lse", "clean_rest", "noisy_rest", "clean_tail_max")
NOISE_STEP = 0
"""The global step the cached noise is drawn at: per_sample_generator(seed, sample_index, 0) for every epoch."""


# --------------------------------------------------------------------------------------------------------------
# Fingerprints of what a cache was made from
# --------------------------------------------------------------------------------------------------------------


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def images_sha256(data: str | Path, images: str | Path) -> str:
    """A cheap fingerprint of the images a data file uses: sha256 over (name, size in bytes) of every distinct image
    its records name (all records, whatever max_samples), sorted by name; a missing file counts as size -1. Contents
    are not read: a re-encoded image of exactly the same size is not noticed."""
    h = hashlib.sha256()
    for name in sorted({r["image"] for r in load_records(data)}):
        p = safe_join(images, name)
        h.update(f"{name}\0{p.stat().st_size if p.is_file() else -1}\n".encode())
    return h.hexdigest()


# --------------------------------------------------------------------------------------------------------------
# Rows: what is kept of one answer row
# --------------------------------------------------------------------------------------------------------------


def kept_width(top_k: int, vocab: int) -> int:
    """K = min(2k, V) kept tokens per row."""
    if top_k <= 0:
        raise SeedVLMError(f"top-k must be positive, got {top_k}")
    return min(2 * int(top_k), int(vocab))


def select_rows(clean: torch.Tensor, noisy: torch.Tensor, top_k: int) -> dict[str, torch.Tensor]:
    """clean, noisy (R, V) teacher logits -> the cached fields of module docstring, in float32 / int64 (the caller
    casts for storage). Kept ids: clean top-k, then noisy top-k not in it, then the next-best clean tokens."""
    c, n = clean.float(), noisy.float()
    r, v = c.shape
    k = min(int(top_k), v)
    width = kept_width(top_k, v)
    if width == v:
        ids = c.argsort(dim=-1, descending=True)
    else:
        chosen = torch.zeros((r, v), dtype=torch.bool, device=c.device)
        chosen.scatter_(1, c.topk(k, dim=-1).indices, True)
        chosen.scatter_(1, n.topk(k, dim=-1).indices, True)
        ids = c.masked_fill(chosen, float("inf")).topk(width, dim=-1).indices
    rest = torch.ones((r, v), dtype=torch.bool, device=c.device)
    rest.scatter_(1, ids, False)
    neg = float("-inf")
    c_rest_vals = c.masked_fill(~rest, neg)
    return {
        "ids": ids,
        "clean": c.gather(1, ids),
        "noisy": n.gather(1, ids),
        "clean_lse": torch.logsumexp(c, dim=-1),
        "noisy_lse": torch.logsumexp(n, dim=-1),
        "clean_rest": torch.logsumexp(c_rest_vals, dim=-1),
        "noisy_rest": torch.logsumexp(n.masked_fill(~rest, neg), dim=-1),
        "clean_tail_max": c_rest_vals.max(dim=-1).values if r else c.new_zeros((0,)),
    }


# --------------------------------------------------------------------------------------------------------------
# Reading a cache
# --------------------------------------------------------------------------------------------------------------


class TeacherCache:
    """A teacher cache folder opened for training: `rows(sample_indices, mask)` returns a batch's cached rows.

    Shards are memory-mapped (safetensors `safe_open`) and sliced per sample, so a cache larger than RAM works.
    """

    def __init__(self, folder: str | Path, tail: CacheTail = "lump"):
        self.folder = Path(folder)
        if tail not in TAIL_MODES:
            raise SeedVLMError(f"teacher_cache_tail = {tail!r}; choose one of {list(TAIL_MODES)}")
        self.tail = tail
        if not (self.folder / INDEX_FILE).is_file():
            raise SeedVLMError(f"not a teacher cache (no {INDEX_FILE}): {self.folder}; make one with `seedvlm teach`")
        self.index = read_json(self.folder / INDEX_FILE, "teacher cache index")
        if self.index.get("format") != FORMAT or self.index.get("version") != VERSION:
            raise SeedVLMError(f"{self.folder / INDEX_FILE}: not a {FORMAT} version {VERSION} index "
                               f"(format {self.index.get('format')!r}, version {self.index.get('version')!r})")
        self.width = int(self.index["kept_per_row"])
        self.vocab = int(self.index["vocab_size"])
        self._files = []
        self._where: dict[int, tuple[int, int, int, int]] = {}  # sample -> (shard, position, row start, row end)
        self._conf: dict[int, float] = {}
        for si, shard in enumerate(self.index["shards"]):
            path = self.folder / shard["file"]
            if not path.is_file():
                raise SeedVLMError(f"teacher cache shard missing: {path}")
            f = safe_open(str(path), framework="pt", device="cpu")
            self._files.append(f)
            idx = f.get_tensor("sample_index").tolist()
            offsets = f.get_tensor("row_offsets").tolist()
            conf = f.get_tensor("conf").tolist()
            for j, s in enumerate(idx):
                self._where[int(s)] = (si, j, int(offsets[j]), int(offsets[j + 1]))
                self._conf[int(s)] = float(conf[j])

    @property
    def n_samples(self) -> int:
        return len(self._where)

    def check(self, *, data: str | Path, fingerprint: str, noise: dict, n_samples: int,
              images_hash: str | None = None) -> None:
        """Refuse a cache made for another data file, base model or noise setting, or one that lacks samples."""
        idx, where = self.index, self.folder
        sha = file_sha256(data)
        if idx["data"]["sha256"] != sha:
            raise SeedVLMError(f"teacher cache {where} was made for data file {idx['data']['path']} (sha256 "
                               f"{idx['data']['sha256'][:12]}...), not for {data} (sha256 {sha[:12]}...); make a "
                               f"new cache with `seedvlm teach` for this data")
        if images_hash is not None and idx["data"].get("images_sha256") != images_hash:
            raise SeedVLMError(f"teacher cache {where} was made with other image files (names or sizes differ "
                               f"from {idx['data'].get('images')}); make a new cache with `seedvlm teach`")
        if idx["model"]["fingerprint"] != fingerprint:
            raise SeedVLMError(f"teacher cache {where} was made with base model {idx['model']['path']} (fingerprint "
                               f"{idx['model']['fingerprint']}), not this base (fingerprint {fingerprint}); make a "
                               f"new cache with `seedvlm teach` for this model")
        have = {k: v for k, v in idx["noise"].items() if k != "step"}
        if have != noise:
            raise SeedVLMError(f"teacher cache {where} was made with noise settings {have}, this run uses {noise}; "
                               f"make a new cache with `seedvlm teach` and these settings")
        missing = [i for i in range(n_samples) if i not in self._where]
        if missing:
            raise SeedVLMError(f"teacher cache {where} holds {self.n_samples} samples but the data has {n_samples} "
                               f"(first missing: #{missing[0]})")

    def answer_rows(self, batch: dict[str, torch.Tensor], mask: torch.Tensor, step: int) -> CachedRows:
        """The `teacher.Teacher` interface: the batch's cached rows (the noise is the cache's, drawn at step 0)."""
        rows = self.read(batch["sample_index"], mask, device=mask.device)
        return cached_rows(rows, self.vocab, self.tail)

    def read(self, sample_indices: Sequence[int] | torch.Tensor, mask: torch.Tensor,
             device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        """The cached rows of a batch, in the row order of `logits[mask]` (sample by sample), on `device`:
        ids int64 (N, K), clean/noisy float32 (N, K), the per-row float32 statistics (N,), conf (B,) float32.
        A sample whose cached row count differs from its answer tokens in `mask` is an error (data or tokenizer
        changed since `seedvlm teach`)."""
        idx = sample_indices.tolist() if isinstance(sample_indices, torch.Tensor) else list(sample_indices)
        counts = mask.sum(dim=1).tolist()
        parts: dict[str, list[torch.Tensor]] = {k: [] for k in ROW_KEYS}
        conf = []
        for s, want in zip(idx, counts):
            if int(s) not in self._where:
                raise SeedVLMError(f"teacher cache {self.folder} has no sample #{s}")
            si, _, a, b = self._where[int(s)]
            if b - a != int(want):
                raise SeedVLMError(f"teacher cache {self.folder}: sample #{s} has {b - a} cached answer rows but "
                                   f"{int(want)} answer tokens now (data, tokenizer or max_length changed since "
                                   f"`seedvlm teach`); make a new cache")
            f = self._files[si]
            for k in ROW_KEYS:
                parts[k].append(f.get_slice(k)[a:b])
            conf.append(self._conf[int(s)])
        out = {k: torch.cat(v).to(device) for k, v in parts.items()}
        out["ids"] = out["ids"].long()
        for k in ROW_KEYS[1:]:
            out[k] = out[k].float()
        out["conf"] = torch.tensor(conf, dtype=torch.float32, device=device)
        return out


def template_sha256(template: str) -> str:
    return hashlib.sha256(template.encode()).hexdigest()


def open_cache(folder: str | Path, cfg, fingerprint: str, n_samples: int, family: str = "llava",
               template: str | None = None) -> TeacherCache:
    """TeacherCache(folder) checked against this run's data file (and its images), base model, noise settings, prompt
    style, model family and (for the other families than LLaVA-1.5) the chat template the examples are rendered
    with and the family's processor options (min/max pixels change every image's tokens)."""
    cache = TeacherCache(folder, tail=cfg.teacher_cache_tail)
    made_for = cache.index["model"].get("family", "llava")
    if made_for != family:
        raise SeedVLMError(f"teacher cache {folder} was made for a {made_for} model, this run trains a {family} "
                           f"model; make a new cache with `seedvlm teach` for this model")
    cache.check(data=cfg.data, fingerprint=fingerprint, noise=noise_settings(cfg), n_samples=n_samples,
                images_hash=images_sha256(cfg.data, cfg.images))
    made_with = cache.index["data"].get("prompt_style", "hf")
    if made_with != cfg.prompt_style:
        raise SeedVLMError(f"teacher cache {folder} was made with prompt_style {made_with}, this run uses "
                           f"{cfg.prompt_style}; make a new cache with `seedvlm teach`")
    made_with = cache.index["data"].get("chat_template_sha256")
    if template is not None and made_with != template_sha256(template):
        raise SeedVLMError(f"teacher cache {folder} was made with another chat template than this run renders its "
                           f"examples with; make a new cache with `seedvlm teach`")
    made_with, used = cache.index["data"].get("family_options", {}), given_options(cfg)
    if template is not None and made_with != used:
        own = "the folder's own"
        raise SeedVLMError(f"teacher cache {folder} was made with the family options {made_with or own}, this run "
                           f"uses {used or own}; make a new cache with `seedvlm teach` and the same options")
    return cache


# --------------------------------------------------------------------------------------------------------------
# The teacher's rows from a cache
# --------------------------------------------------------------------------------------------------------------


def coarse_student(student: torch.Tensor, ids: torch.Tensor, lump: bool) -> torch.Tensor:
    """Student rows (N, V) -> (N, K [+1]) in float32: the kept columns, plus (lump) the logsumexp of the others."""
    s = student.float()
    kept = s.gather(1, ids)
    if not lump or ids.shape[1] >= s.shape[1]:
        return kept
    rest = torch.logsumexp(s.scatter(1, ids, float("-inf")), dim=-1, keepdim=True)
    return torch.cat([kept, rest], dim=1)


@dataclasses.dataclass
class CachedRows(TeacherRows):
    """Teacher rows in the cache's columns (module docstring): clean/noisy (N, K [+1]) = the kept tokens, plus with
    lump one column for all the others. ids (N, K): the kept token ids; tail_max (N,): the largest clean logit among
    the tokens not kept (None without the lumped column)."""

    ids: torch.Tensor | None = None
    tail_max: torch.Tensor | None = None

    @property
    def lump(self) -> bool:
        return self.tail_max is not None

    def student_columns(self, student: torch.Tensor) -> torch.Tensor:
        if student.shape[0] != self.ids.shape[0]:
            raise SeedVLMError(f"{student.shape[0]} student rows but {self.ids.shape[0]} cached rows")
        return coarse_student(student, self.ids, self.lump)

    def implausible(self, g: float) -> torch.Tensor:
        """`seed.implausible` on the kept clean logits (the clean argmax is always kept); the rest column is dropped
        when its largest member is."""
        return S.implausible(self.clean[:, :self.ids.shape[1]], g, extra=self.tail_max)


def cached_rows(rows: dict[str, torch.Tensor], vocab: int, tail: CacheTail) -> CachedRows:
    """`TeacherCache.read`'s rows -> CachedRows; the rest column is added with tail="lump" when K < V."""
    clean, noisy, tail_max = rows["clean"], rows["noisy"], None
    if tail == "lump" and rows["ids"].shape[1] < vocab:
        clean = torch.cat([clean, rows["clean_rest"][:, None]], dim=1)
        noisy = torch.cat([noisy, rows["noisy_rest"][:, None]], dim=1)
        tail_max = rows["clean_tail_max"]
    return CachedRows(clean, noisy, rows["conf"], ids=rows["ids"], tail_max=tail_max)


# --------------------------------------------------------------------------------------------------------------
# Writing a cache (`seedvlm teach`)
# --------------------------------------------------------------------------------------------------------------


def _cast_rows(rows: dict[str, torch.Tensor], value_dtype: torch.dtype, id_dtype: torch.dtype) -> dict:
    out = {"ids": rows["ids"].to(id_dtype).cpu(), "clean": rows["clean"].to(value_dtype).cpu(),
           "noisy": rows["noisy"].to(value_dtype).cpu()}
    for k in ROW_KEYS[3:]:
        out[k] = rows[k].float().cpu()
    return out


def teach(cfg, out: str | Path, top_k: int = 64, batch_size: int | None = None, value_dtype: str = "float16",
          shard_samples: int = 4096, device: str | None = None) -> dict[str, Any]:
    """Run the frozen base model over the prepared data once and write the teacher cache folder `out` (atomically).
    cfg: the TrainConfig of the training run (model, data, images, max_samples, max_length, noise, alpha,
    noise_step, mask_ratio, seed, dtype, attn_implementation). Returns the index dict."""
    if value_dtype not in VALUE_DTYPES:
        raise SeedVLMError(f"value dtype {value_dtype!r}; choose one of {list(VALUE_DTYPES)}")
    if shard_samples <= 0:
        raise SeedVLMError(f"shard size must be positive, got {shard_samples}")
    kept_width(top_k, 1)  # validates top_k
    cfg.require_paths()
    family = model_family(cfg.model)
    if family is None:
        processor, dataset, max_length = load_train_data(cfg)
    else:
        from seedvlm.data.family_data import FamilyCollator, load_family_train_data
        from seedvlm.models.families.loading import load_family_model
        from seedvlm.train.family_teacher import family_teacher_logits, processor_ids

        processor, dataset, max_length = load_family_train_data(cfg, family)
    # Several processes (accelerate launch / torchrun): rank r writes shards r, r + N, ... on its own device into
    # rank 0's temp folder; rank 0 writes index.json and renames the folder once all shards are there.
    rank, world = distributed.rank_world()
    if world > 1:
        device = device or str(distributed.device())
        shard_samples = max(1, min(shard_samples, -(-len(dataset) // world)))  # every rank gets a shard
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = resolve_dtype(cfg.dtype)
    if family is None:
        model = load_model(cfg.model, device=dev, dtype=dtype, attn_implementation=cfg.attn_implementation).eval()
        collate = Collator(processor.tokenizer.pad_token_id)
    else:
        model = load_family_model(cfg.model, device=dev, dtype=dtype, family=family,
                                  attn_implementation=cfg.attn_implementation)
        collate = FamilyCollator(family, processor.tokenizer.pad_token_id)
    fp = base_fingerprint(model)
    vocab = int(model.config.text_config.vocab_size)
    width = kept_width(top_k, vocab)
    id_dtype = torch.int16 if vocab <= 32767 else torch.int32
    vdt = VALUE_DTYPES[value_dtype]
    patch = int(model.config.vision_config.patch_size)
    bs = int(batch_size or cfg.per_device_train_batch_size)
    n = len(dataset)
    t0 = time.time()
    shards, total_rows, total_bytes = [], 0, 0
    with (atomic_path(out) if rank == 0 else contextlib.nullcontext()) as tmp:
        if rank == 0:
            tmp.mkdir(parents=True)
        tmp = Path(distributed.broadcast(str(tmp)))
        for si, start in enumerate(range(0, n, shard_samples)):
            if si % world != rank:
                continue
            members = list(range(start, min(n, start + shard_samples)))
            order = sorted(members, key=lambda i: -dataset.lengths[i])  # similar lengths together: less padding
            got: dict[int, tuple[dict, float]] = {}
            for b0 in range(0, len(order), bs):
                chunk = order[b0:b0 + bs]
                batch = {k: v.to(dev) for k, v in collate([dataset[i] for i in chunk]).items()}
                mask, _ = S.answer_positions(batch["labels"])
                with torch.inference_mode():
                    if family is None:
                        pix = batch["pixel_values"].float()
                        noisy_pix = noisy_view(pix, batch["sample_index"], NOISE_STEP, cfg, patch)
                        logits = model(input_ids=torch.cat([batch["input_ids"]] * 2),
                                       attention_mask=torch.cat([batch["attention_mask"]] * 2),
                                       pixel_values=torch.cat([pix, noisy_pix]).to(dtype),
                                       logits_to_keep=torch.cat([mask, mask]), use_cache=False).logits
                        half = logits.shape[0] // 2
                        clean, noisy = logits[:half], logits[half:]
                    else:
                        clean, noisy, _ = family_teacher_logits(model, family, batch, mask, cfg, NOISE_STEP,
                                                                **processor_ids(processor))
                    conf = S.confidence(clean, mask).cpu()
                    rows = _cast_rows(select_rows(clean, noisy, top_k), vdt, id_dtype)
                counts = mask.sum(dim=1).tolist()
                at = 0
                for j, i in enumerate(chunk):
                    got[i] = ({k: v[at:at + counts[j]] for k, v in rows.items()}, float(conf[j]))
                    at += counts[j]
            tensors = {k: torch.cat([got[i][0][k] for i in members]).contiguous() for k in ROW_KEYS}
            counts = [got[i][0]["ids"].shape[0] for i in members]
            tensors["row_offsets"] = torch.tensor([0] + counts, dtype=torch.int64).cumsum(0)
            tensors["sample_index"] = torch.tensor(members, dtype=torch.int64)
            tensors["conf"] = torch.tensor([got[i][1] for i in members], dtype=torch.float32)
            name = f"shard-{si:05d}.safetensors"
            save_file(tensors, str(tmp / name), metadata={"format": FORMAT, "version": str(VERSION)})
            size = (tmp / name).stat().st_size
            shards.append({"file": name, "n_samples": len(members), "n_rows": int(sum(counts)), "bytes": size})
            total_rows += int(sum(counts))
            total_bytes += size
            log.info("teach: shard %d: %d samples, %d rows, %.1f MB (%d/%d samples, %.0f s)", si, len(members),
                     sum(counts), size / 1e6, members[-1] + 1, n, time.time() - t0)
        shards = sorted(distributed.gather_lists(shards), key=lambda sh: sh["file"])
        total_rows, total_bytes = sum(sh["n_rows"] for sh in shards), sum(sh["bytes"] for sh in shards)
        distributed.barrier()  # every shard file is complete
        index = {
            "format": FORMAT,
            "version": VERSION,
            "created": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "data": {"path": str(cfg.data), "sha256": file_sha256(cfg.data), "images": str(cfg.images),
                     "images_sha256": images_sha256(cfg.data, cfg.images), "n_records": n,
                     "max_samples": cfg.max_samples, "max_length": max_length, "prompt_style": cfg.prompt_style,
                     **({} if family is None else {"chat_template_sha256": template_sha256(dataset.template),
                                                   "family_options": given_options(cfg)})},
            "model": {"path": str(cfg.model), "fingerprint": fp, "dtype": str(dtype).replace("torch.", ""),
                      "attn_implementation": cfg.attn_implementation,
                      "family": "llava" if family is None else family.name},
            "noise": {**noise_settings(cfg), "step": NOISE_STEP},
            "top_k": int(top_k),
            "kept_per_row": width,
            "kept_rule": "clean top-k, then noisy top-k not in it, then next-best clean tokens; K = min(2k, V)",
            "vocab_size": vocab,
            "value_dtype": value_dtype,
            "id_dtype": str(id_dtype).replace("torch.", ""),
            "n_samples": n,
            "n_rows": total_rows,
            "bytes": total_bytes,
            "bytes_per_sample": round(total_bytes / max(n, 1), 1),
            "bytes_per_row": round(total_bytes / max(total_rows, 1), 1),
            "seconds": round(time.time() - t0, 1),
            "shards": shards,
            "processes": world,
        }
        if rank == 0:
            write_json(tmp / INDEX_FILE, index)
    distributed.barrier()  # no rank returns before the cache is in place
    return index
