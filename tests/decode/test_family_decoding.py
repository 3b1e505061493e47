"""Every decoding on every model family (tiny hub-like Qwen2.5-VL, Qwen2-VL, LLaVA-NeXT, SmolVLM and Idefics3
folders, CPU): contrastive decoding's 2B batch has the family's positions and cache right (beta = 0 is greedy token
for token), batches equal one-at-a-time decoding, the noisy view reaches every row, beam and sampling behave, and
`eval pope`, `eval chair` and `demo` run on a family folder."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from seedvlm.decode.family import family_contrastive_generate, family_noisy_pixels
from seedvlm.family_generation import family_prompts, generate_family_texts

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[2]
LLAMA2_TOKENIZER = ROOT / ".." / "shared" / "reference-data" / "tokenizers" / "llama2" / "tokenizer.model"
NAMES = ["qwen2.5-vl", "qwen2-vl", "llava-next", "smolvlm", "idefics3"]
SIZES = [(40, 60), (70, 30), (90, 90)]  # (height, width): different token counts (and LLaVA-NeXT tiles) per image
QUESTIONS = ["Is there a cat in the image?", "Describe the image.", "What color is the cup?"]
STEPS = 6


def _image(size: tuple[int, int], seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(1, 255, (*size, 3), dtype=np.uint8))


IMAGES = [_image(s, i) for i, s in enumerate(SIZES)]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    from seedvlm.models.family_folders import build_family_folders

    root = tmp_path_factory.mktemp("family_decoding")
    return build_family_folders(root, LLAMA2_TOKENIZER if LLAMA2_TOKENIZER.is_file() else None)


@pytest.fixture(scope="module")
def loaded(folders):
    from seedvlm.models.families.loading import load_family

    out = {}
    for name, path in folders.items():
        family, model, processor = load_family(path)
        out[name] = (family, model.eval(), processor)
    return out


def _get(loaded, name):
    if name not in loaded:
        pytest.skip(f"no Llama-2 tokenizer.model at {LLAMA2_TOKENIZER} (the LLaVA-NeXT folder needs it)")
    return loaded[name]


def _batch(family, model, processor, idx=(0, 1, 2)) -> dict:
    texts = family_prompts(family, processor, model.config.to_dict(), [QUESTIONS[i] for i in idx])
    tok = processor.tokenizer
    old, tok.padding_side = tok.padding_side, "left"
    try:
        return dict(processor(text=texts, images=[[IMAGES[i]] for i in idx], padding=True, return_tensors="pt"))
    finally:
        tok.padding_side = old


@contextlib.contextmanager
def _logits_seen(model):
    """The last position's logits of every forward of `model` while open."""
    seen: list[torch.Tensor] = []
    handle = model.register_forward_hook(lambda module, args, out: seen.append(out.logits[:, -1].float()))
    try:
        yield seen
    finally:
        handle.remove()


def _contrastive(loaded, name, batch, **kw) -> torch.Tensor:
    family, model, processor = loaded[name]
    return family_contrastive_generate(model, family, batch, max_new_tokens=STEPS,
                                       eos_token_id=family.stop_token_ids(processor),
                                       pad_token_id=processor.tokenizer.pad_token_id, **kw)


@pytest.mark.parametrize("name", NAMES)
def test_beta_zero_is_greedy_token_for_token(loaded, name):
    """beta = 0 leaves the clean logits: the 2B batch (fused) and the two B batches (sequential) both decode HF
    generate's greedy tokens, so the family's positions (M-RoPE for Qwen) and cache are right for every row."""
    family, model, processor = _get(loaded, name)
    batch = _batch(family, model, processor)
    with torch.no_grad(), _logits_seen(model) as hf_logits:
        greedy = model.generate(**batch, max_new_tokens=STEPS, do_sample=False, num_beams=1,
                                eos_token_id=family.stop_token_ids(processor),
                                pad_token_id=processor.tokenizer.pad_token_id)[:, batch["input_ids"].shape[1]:]
    with _logits_seen(model) as fused_logits:
        assert torch.equal(_contrastive(loaded, name, batch, beta=0.0), greedy)
    assert torch.equal(_contrastive(loaded, name, batch, beta=0.0, fused=False), greedy)
    # the clean half's logits at every step are HF's (a wrong position moves them long before it flips a token)
    assert len(fused_logits) == len(hf_logits) >= 2
    for ours, theirs in zip(fused_logits, hf_logits):
        torch.testing.assert_close(ours[:len(theirs)], theirs, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_batch_equals_one_at_a_time(loaded, name):
    """A batch of three images of different sizes decodes (beta = 1, greedy) as each image alone: the noise an
    image gets and its positions do not depend on the batch."""
    family, model, processor = _get(loaded, name)
    pad = processor.tokenizer.pad_token_id
    both = _contrastive(loaded, name, _batch(family, model, processor), beta=1.0)
    for i in range(3):
        alone = _contrastive(loaded, name, _batch(family, model, processor, (i,)), beta=1.0)[0]
        assert torch.equal(both[i, :len(alone)], alone)
        assert (both[i, len(alone):] == pad).all()


@pytest.mark.parametrize("name", NAMES)
def test_noisy_view_reaches_every_row(loaded, name):
    """With beta > 0 tokens come out, the noisy pixels differ from the clean ones while keeping their layout, and
    every row's first contrastive scores differ from its clean logits (so its noisy view saw other pixels)."""
    family, model, processor = _get(loaded, name)
    batch = _batch(family, model, processor)
    noisy = family_noisy_pixels(model, family, batch, "gaussian", seed=0)
    assert noisy.shape == batch["pixel_values"].shape and not torch.equal(noisy, batch["pixel_values"])
    first0, first1 = [], []
    _contrastive(loaded, name, batch, beta=0.0, plausibility=None, first_scores_=first0)
    tokens = _contrastive(loaded, name, batch, beta=1.0, plausibility=None, first_scores_=first1)
    assert tokens.shape[0] == 3 and tokens.shape[1] >= 1
    gap = (first1[0] - first0[0]).abs().amax(dim=-1)  # (1 + b) c - b n - c = b (c - n) per row
    assert (gap > 1e-4).all(), gap


@pytest.mark.parametrize("name", NAMES)
def test_beam_of_one_is_greedy_and_sampling_is_seeded(loaded, name):
    family, model, processor = _get(loaded, name)
    batch = _batch(family, model, processor)
    greedy = _contrastive(loaded, name, batch, beta=1.0)
    assert torch.equal(_contrastive(loaded, name, batch, beta=1.0, strategy="beam", num_beams=1), greedy)
    beams = _contrastive(loaded, name, batch, beta=1.0, strategy="beam", num_beams=2)
    assert beams.shape[0] == 3 and beams.shape[1] >= 1
    a = _contrastive(loaded, name, batch, beta=1.0, strategy="sample", seed=3, top_k=20)
    assert torch.equal(a, _contrastive(loaded, name, batch, beta=1.0, strategy="sample", seed=3, top_k=20))
    # HF generate's sample and beam through the evaluation entry point
    common = dict(max_new_tokens=STEPS, progress=False)
    plain = generate_family_texts(model, processor, family, IMAGES, QUESTIONS, decoding="greedy", **common)
    assert generate_family_texts(model, processor, family, IMAGES, QUESTIONS, decoding="beam", num_beams=1,
                                 **common) == plain
    assert len(generate_family_texts(model, processor, family, IMAGES, QUESTIONS, decoding="beam", num_beams=2,
                                     **common)) == 3
    sampled = []
    for _ in range(2):
        torch.manual_seed(5)
        sampled.append(generate_family_texts(model, processor, family, IMAGES, QUESTIONS, decoding="sample",
                                             temperature=0.7, top_p=0.9, **common))
    assert sampled[0] == sampled[1] and len(sampled[0]) == 3


def test_a_perturbation_the_family_cannot_take(loaded):
    from seedvlm.errors import SeedVLMError

    family, model, processor = loaded["qwen2.5-vl"]
    with pytest.raises(SeedVLMError, match="'mask' is not available for qwen2_vl"):
        generate_family_texts(model, processor, family, IMAGES[:1], QUESTIONS[:1], decoding="contrastive",
                              noise="mask", progress=False)


# ---------------------------------------------------------------------------------------------------------------
# The commands on a tiny Qwen2.5-VL folder
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Three images, a COCO instances file, reference captions and POPE questions."""
    root = tmp_path_factory.mktemp("family_world")
    (root / "images").mkdir()
    for i, im in enumerate(IMAGES, 1):
        im.save(root / "images" / f"img{i}.png")
    cats = {"cat": 1, "dog": 2}
    inst = {"images": [{"id": i, "file_name": f"img{i}.png"} for i in (1, 2, 3)],
            "annotations": [{"id": i, "image_id": i, "category_id": 1 + i % 2, "bbox": [0, 0, 4, 4]} for i in (1, 2, 3)],
            "categories": [{"id": v, "name": k} for k, v in cats.items()]}
    (root / "instances.json").write_text(json.dumps(inst))
    (root / "references.json").write_text(json.dumps({"annotations": [{"id": 1, "image_id": 1, "caption": "A cat."}]}))
    (root / "pope.jsonl").write_text("".join(json.dumps({"question_id": i, "image": f"img{i}.png", "label": "yes",
                                                         "text": "Is there a cat in the image?"}) + "\n"
                                             for i in (1, 2, 3)))
    return root


def _one_line_error(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip() and "Loading weights" not in line]
    assert len(err) == 1, err
    return err[0]


def test_eval_pope_and_chair_with_contrastive_decoding(folders, world, tmp_path, capsys):
    from seedvlm.cli import main

    model = str(folders["qwen2.5-vl"])
    common = ["--model", model, "--images", str(world / "images"), "--device", "cpu", "--batch-size", "2",
              "--max-new-tokens", "3", "--decoding", "contrastive", "--beta", "0.5", "--noise", "ddpm"]
    assert main(["eval", "pope", "--questions", str(world / "pope.jsonl"), "--out", str(tmp_path / "pope"),
                 *common]) == 0
    assert main(["eval", "chair", "--instances", str(world / "instances.json"), "--references",
                 str(world / "references.json"), "--n", "3", "--out", str(tmp_path / "chair"), *common]) == 0
    for task in ("pope", "chair"):
        results = json.loads((tmp_path / task / "results.json").read_text())
        assert results["config"]["decoding"] == "contrastive"
        assert results["config"]["decode_options"] == {"beta": 0.5, "noise": "ddpm"}
        assert len((tmp_path / task / "samples.jsonl").read_text().splitlines()) == 3
    capsys.readouterr()
    bad = ["eval", "pope", "--questions", str(world / "pope.jsonl"), "--out", str(tmp_path / "mask"), *common,
           "--noise", "mask"]
    assert main(bad) == 2
    assert "'mask' is not available for qwen2_vl" in _one_line_error(capsys)
    assert not (tmp_path / "mask").exists()


def test_demo_on_a_family_folder(folders, world, capsys):
    from seedvlm.cli import main

    model = str(folders["qwen2.5-vl"])
    image = str(world / "images" / "img1.png")
    assert main(["demo", "--model", model, "--image", image, "--max-new-tokens", "3", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "[base greedy" in out and "[base + contrastive (b=1)]" in out
    assert main(["demo", "--model", model, "--image", image, "--prompt-style", "llava-1.5", "--device", "cpu"]) == 2
    assert "llava-1.5 is for LLaVA-1.5 models" in _one_line_error(capsys)
    # the family's processor options: taken by Qwen (and they change its input), refused for SmolVLM in one line
    assert main(["demo", "--model", model, "--image", image, "--max-new-tokens", "3", "--device", "cpu",
                 "--max-pixels", str(28 * 28 * 4)]) == 0
    capsys.readouterr()
    assert main(["demo", "--model", str(folders["smolvlm"]), "--image", image, "--max-pixels", "3136",
                 "--device", "cpu"]) == 2
    assert "max_pixels" in _one_line_error(capsys)
