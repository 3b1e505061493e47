"""Fast evaluation: image-prefix reuse equals the plain path (greedy and contrastive, left padding, prompts of
unequal length), the static-cache path equals the eager one token for token, P(yes) and its AUROC/AP (checked
against hand-computed values), and P(yes) through eval pope -> results.json -> score -> compare."""

import json
import pickle

import pytest
import torch

from conftest import WORDS, random_image, tiny_config
from seedvlm.decode import contrastive_generate
from seedvlm.decode.plain import generate_new_tokens
from seedvlm.decode.prefix import image_groups, split_prefixes
from seedvlm.decode.static import cache_length, length_order, restore_order
from seedvlm.eval.yes_prob import (ScoredAnswer, auroc, average_precision, yes_no_token_ids, yes_prob_metrics,
                                   yes_probability)
from seedvlm.generation import encode_prompts, generate_texts

pytestmark = pytest.mark.usefixtures("one_thread")

QUESTIONS = ["is there a cat ?", "are there two dogs in the image ?", "cat", "is the fork red or blue ?",
             "dog table ?", "is there a knife in the image ? answer yes or no ."]


@pytest.fixture(scope="module")
def tiny():
    from seedvlm.models import build_processor, build_word_tokenizer, random_model

    tok = build_word_tokenizer(WORDS)
    cfg = tiny_config(tok)
    model = random_model(cfg, seed=3).eval()
    return model, build_processor(tok, cfg)


def _images():
    a, b, c = random_image(0), random_image(1), random_image(2)
    return [a, a, b, a, b, c]  # groups of 3, 2 and 1 questions, interleaved


def _greedy(tok, n=6):
    return dict(max_new_tokens=n, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, do_sample=False,
                num_beams=1)


def _vision_calls(model):
    calls = []
    handle = model.model.vision_tower.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    return calls, handle


# --------------------------------------------------------------------------------------------- prefix reuse
def test_split_prefixes_shares_the_image_prefix(tiny):
    model, proc = tiny
    images = _images()
    batch = encode_prompts(proc, images, QUESTIONS)
    split = split_prefixes(batch["input_ids"], batch["attention_mask"], image_groups(images),
                           model.config.image_token_id, proc.tokenizer.pad_token_id)
    assert image_groups(images) == [0, 0, 1, 0, 1, 2]
    assert split.prefix_ids.shape[0] == 3 and split.rows.tolist() == [0, 0, 1, 0, 1, 2]
    n_image = int((batch["input_ids"][0] == model.config.image_token_id).sum())
    # every image token is in the prefix, none in a suffix; rebuilt rows hold each prompt's tokens in order
    assert int((split.prefix_ids == model.config.image_token_id).sum(1).min()) == n_image
    assert not bool((split.suffix_ids == model.config.image_token_id).any())
    ids, mask = split.full()
    for i in range(len(QUESTIONS)):
        assert ids[i][mask[i].bool()].tolist() == batch["input_ids"][i][batch["attention_mask"][i].bool()].tolist()
    # nothing to share without an image token id
    assert split_prefixes(batch["input_ids"], batch["attention_mask"], image_groups(images), None, 0) is None


def test_prefix_reuse_equals_plain_greedy(tiny):
    model, proc = tiny
    tok = proc.tokenizer
    images = _images()
    batch = encode_prompts(proc, images, QUESTIONS)
    kwargs = dict(_greedy(tok), output_logits=True, return_dict_in_generate=True)
    plain = model.generate(**batch, **kwargs)
    calls, handle = _vision_calls(model)
    try:
        new, first = generate_new_tokens(model, batch, _greedy(tok), image_groups(images), first_logits=True)
    finally:
        handle.remove()
    assert calls == [3]  # the vision tower saw each of the 3 distinct images once
    width = batch["input_ids"].shape[1]
    assert new.tolist() == plain.sequences[:, width:].tolist()
    torch.testing.assert_close(first, plain.logits[0].float(), atol=1e-4, rtol=0)

    # every step's logits, through the public entry point with answers and P(yes)
    texts = generate_texts(model, proc, images, QUESTIONS, max_new_tokens=6, batch_size=4, progress=False,
                           yes_prob=True)
    fast = generate_texts(model, proc, images, QUESTIONS, max_new_tokens=6, batch_size=4, progress=False,
                          yes_prob=True, prefix_reuse=True)
    assert fast == texts and all(isinstance(t, ScoredAnswer) for t in fast)
    assert max(abs(a.p_yes - b.p_yes) for a, b in zip(fast, texts)) < 1e-4


def test_prefix_reuse_all_step_logits(tiny):
    model, proc = tiny
    tok = proc.tokenizer
    images = _images()
    batch = encode_prompts(proc, images, QUESTIONS)
    kwargs = dict(_greedy(tok, 4), output_logits=True, return_dict_in_generate=True)
    plain = model.generate(**batch, **kwargs)
    from seedvlm.decode.prefix import prefix_generate

    out, width = prefix_generate(model, batch, image_groups(images), **kwargs)
    assert width > batch["input_ids"].shape[1]  # the [pads | prefix | pads | suffix] layout, not the plain batch
    for a, b in zip(out.logits, plain.logits):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=0)


def test_prefix_reuse_with_a_lora_adapter():
    """A peft-wrapped model (the SEED arms): same answers and P(yes) with and without prefix reuse."""
    from peft import LoraConfig, get_peft_model

    from seedvlm.models import build_processor, build_word_tokenizer, random_model

    tok = build_word_tokenizer(WORDS)
    cfg = tiny_config(tok)
    model = get_peft_model(random_model(cfg, seed=4), LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                                                  init_lora_weights=False)).eval()
    proc = build_processor(tok, cfg)
    common = dict(max_new_tokens=5, batch_size=6, progress=False, yes_prob=True)
    plain = generate_texts(model, proc, _images(), QUESTIONS, **common)
    fast = generate_texts(model, proc, _images(), QUESTIONS, prefix_reuse=True, **common)
    assert fast == plain and max(abs(a.p_yes - b.p_yes) for a, b in zip(fast, plain)) < 1e-4


@pytest.mark.parametrize("strategy", ["greedy", "beam"])
def test_prefix_reuse_equals_plain_contrastive(tiny, strategy):
    model, proc = tiny
    tok = proc.tokenizer
    images = _images()
    batch = encode_prompts(proc, images, QUESTIONS)
    common = dict(max_new_tokens=5, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, beta=1.0,
                  strategy=strategy, num_beams=2)
    s_plain, s_fast = [], []
    plain = contrastive_generate(model, batch, first_scores_=s_plain, **common)
    calls, handle = _vision_calls(model)
    try:
        fast = contrastive_generate(model, batch, first_scores_=s_fast, prefix_groups_=image_groups(images), **common)
    finally:
        handle.remove()
    assert calls == [6]  # 3 images x (clean, noisy)
    assert fast.tolist() == plain.tolist()
    finite = torch.isfinite(s_plain[0])
    assert torch.equal(finite, torch.isfinite(s_fast[0]))
    torch.testing.assert_close(s_fast[0][finite], s_plain[0][finite], atol=1e-4, rtol=0)


# --------------------------------------------------------------------------------------------- static cache
def test_static_cache_equals_eager(tiny):
    model, proc = tiny
    tok = proc.tokenizer
    images = _images()
    batch = encode_prompts(proc, images, QUESTIONS)
    eager, first = generate_new_tokens(model, batch, _greedy(tok, 8), first_logits=True)
    static, first_s = generate_new_tokens(model, batch, _greedy(tok, 8), static=True, compile=False,
                                          first_logits=True)
    assert static.tolist() == eager.tolist()
    torch.testing.assert_close(first_s, first, atol=1e-4, rtol=0)
    # through generate_texts: prompts regrouped by length, answers back in the caller's order
    plain = generate_texts(model, proc, images, QUESTIONS, max_new_tokens=8, batch_size=2, progress=False)
    grouped = generate_texts(model, proc, images, QUESTIONS, max_new_tokens=8, batch_size=2, progress=False,
                             static_cache=True, compile=False)
    assert grouped == plain


def test_static_helpers():
    assert cache_length(600, 64) == 704 and cache_length(1, 63) == 64
    order = length_order([5, 2, 9, 2])
    assert order == [1, 3, 0, 2]
    assert restore_order([f"x{i}" for i in order], order) == ["x0", "x1", "x2", "x3"]


@pytest.mark.slow
def test_compiled_static_cache_equals_eager(tiny, monkeypatch):
    """torch.compile of HF generate's decode step on CPU: about 70 s with a cold compile cache on the shared
    machine (the contrastive compile test below, about 20 s, runs in the normal suite)."""
    model, proc = tiny
    tok = proc.tokenizer
    images = _images()[:2]
    batch = encode_prompts(proc, images, QUESTIONS[:2])
    eager, _ = generate_new_tokens(model, batch, _greedy(tok, 4))
    compiled_fns = []
    real_compile = torch.compile

    def counting_compile(fn, **kwargs):
        compiled_fns.append(fn)
        return real_compile(fn, **kwargs)

    monkeypatch.setattr(torch, "compile", counting_compile)
    compiled, _ = generate_new_tokens(model, batch, _greedy(tok, 4), static=True, compile=True)
    assert compiled_fns  # the decode step did go through torch.compile
    assert compiled.tolist() == eager.tolist()


# --------------------------------------------------------------------------------------------- P(yes), AUROC, AP
def test_auroc_and_average_precision_by_hand():
    scores = [0.9, 0.8, 0.7, 0.6, 0.55, 0.4]
    labels = [1, 0, 1, 1, 0, 0]
    # 9 positive/negative pairs; the positive is higher in 3 (0.9) + 2 (0.7) + 2 (0.6)
    assert auroc(scores, labels) == pytest.approx(7 / 9)
    # precision at each positive, in score order: 1/1, 2/3, 3/4; each adds 1/3 of recall
    assert average_precision(scores, labels) == pytest.approx((1 + 2 / 3 + 3 / 4) / 3)
    # ties: a tied pair counts one half; tied scores enter the precision-recall curve together
    assert auroc([0.5, 0.5, 0.2], [1, 0, 0]) == pytest.approx(0.75)
    assert average_precision([0.5, 0.5, 0.2], [1, 0, 0]) == pytest.approx(0.5)
    assert auroc([0.1, 0.9], [0, 1]) == 1.0 and auroc([0.9, 0.1], [0, 1]) == 0.0
    assert auroc([0.3, 0.4], [1, 1]) is None and average_precision([0.3, 0.4], [0, 0]) is None
    with pytest.raises(ValueError):
        auroc([0.1], [1, 0])


def test_yes_probability(tiny):
    _, proc = tiny
    tok = proc.tokenizer
    yes, no = yes_no_token_ids(tok)
    assert tok.convert_ids_to_tokens(yes) == ["yes"] and tok.convert_ids_to_tokens(no) == ["no"]
    logits = torch.full((2, len(tok)), -1e4)
    logits[0, yes[0]], logits[0, no[0]] = 2.0, 0.0  # P(yes) = e^2 / (e^2 + 1), all mass on yes/no
    logits[1, yes[0]], logits[1, no[0]] = 0.0, float("-inf")
    p, mass = yes_probability(logits, yes, no)
    assert p[0].item() == pytest.approx(torch.sigmoid(torch.tensor(2.0)).item())
    assert mass[0].item() == pytest.approx(1.0) and p[1].item() == 1.0
    rows = [{"p_yes": 0.9, "label": "yes"}, {"p_yes": 0.2, "label": "no"}, {"p_yes": 0.4, "label": "yes"}]
    assert yes_prob_metrics(rows) == {"auroc": 1.0, "average_precision": 1.0}
    assert yes_prob_metrics(rows + [{"label": "no"}]) == {}
    # answers gathered from several processes are pickled: the score travels with the text
    again = pickle.loads(pickle.dumps(ScoredAnswer("yes.", 0.7, 0.9)))
    assert again == "yes." and again.p_yes == 0.7 and again.yes_no_mass == 0.9


# --------------------------------------------------------------------------------------------- through the commands
def test_eval_pope_reports_auroc(tiny_model_dir, tmp_path, capsys):
    from seedvlm.cli import main

    (tmp_path / "images").mkdir()
    for i in range(3):
        random_image(i).save(tmp_path / "images" / f"im{i}.png")
    rows = [{"question_id": f"q{k}", "image": f"im{k % 3}.png", "text": f"is there a {w} in the image ?",
             "label": "yes" if k % 2 else "no"} for k, w in enumerate(["cat", "dog", "fork", "knife", "cat", "dog"])]
    (tmp_path / "q.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    common = ["eval", "pope", "--model", str(tiny_model_dir), "--questions", str(tmp_path / "q.jsonl"),
              "--images", str(tmp_path / "images"), "--batch-size", "4", "--max-new-tokens", "3", "--device", "cpu"]
    assert main(common + ["--out", str(tmp_path / "fast")]) == 0
    assert main(common + ["--out", str(tmp_path / "plain"), "--no-prefix-reuse"]) == 0
    fast, plain = (json.loads((tmp_path / r / "results.json").read_text()) for r in ("fast", "plain"))
    assert 0.0 <= fast["q"]["auroc"] <= 1.0 and 0.0 <= fast["mean"]["average_precision"] <= 1.0
    assert fast["q"]["auroc"] == pytest.approx(plain["q"]["auroc"])
    samples = [json.loads(line) for line in (tmp_path / "fast" / "samples.jsonl").read_text().splitlines()]
    others = [json.loads(line) for line in (tmp_path / "plain" / "samples.jsonl").read_text().splitlines()]
    assert [s["text"] for s in samples] == [s["text"] for s in others]
    assert max(abs(a["p_yes"] - b["p_yes"]) for a, b in zip(samples, others)) < 1e-4

    # re-scoring the samples keeps P(yes); compare shows AUROC and AP
    assert main(["score", "pope", "--questions", str(tmp_path / "q.jsonl"), "--answers",
                 str(tmp_path / "fast" / "samples.jsonl"), "--out", str(tmp_path / "rescored")]) == 0
    again = json.loads((tmp_path / "rescored" / "results.json").read_text())
    assert again["q"]["auroc"] == fast["q"]["auroc"]
    assert main(["compare", "--run", f"base={tmp_path / 'fast'}", "--out", str(tmp_path / "report")]) == 0
    report = (tmp_path / "report" / "report.md").read_text()
    assert "POPE q AUROC" in report and "POPE mean AP" in report

    # a P(yes) that is no probability is refused with one line naming the file and the record
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question_id": "q0", "text": "yes", "p_yes": "high"}) + "\n")
    assert main(["score", "pope", "--questions", str(tmp_path / "q.jsonl"), "--answers", str(bad), "--out",
                 str(tmp_path / "bad")]) != 0
    err = capsys.readouterr().err
    assert f"answers file {bad} record 1: p_yes must be a number in [0, 1]" in err and "Traceback" not in err


@pytest.mark.parametrize("compile", [False, True])
def test_static_cache_contrastive_equals_eager(tiny, compile):
    model, proc = tiny
    tok = proc.tokenizer
    images = _images()[:4]
    batch = encode_prompts(proc, images, QUESTIONS[:4])
    common = dict(max_new_tokens=6, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, beta=1.0)
    eager = contrastive_generate(model, batch, **common)
    static = contrastive_generate(model, batch, static_cache_=True, compile_=compile, **common)
    assert static.tolist() == eager.tolist()


def test_experiment_reads_auroc_and_ap(tmp_path):
    """The experiment summary takes AUROC and AP of every arm's POPE and probe results, with their labels."""
    from seedvlm.experiment.summary import _label, _metrics

    for task in ("pope", "probes"):
        (tmp_path / task).mkdir()
        split = {"accuracy": 0.8, "f1": 0.7, "yes_ratio": 0.5, "auroc": 0.91, "average_precision": 0.88}
        (tmp_path / task / "results.json").write_text(json.dumps({"task": "pope", "splits": ["random"],
                                                                   "random": split, "mean": split}))
    m = _metrics(tmp_path)
    assert m["pope.random.auroc"] == 0.91 and m["probes.mean.average_precision"] == 0.88
    assert _label("pope.random.auroc") == "POPE random AUROC" and _label("probes.mean.average_precision") == \
        "probe mean AP"
