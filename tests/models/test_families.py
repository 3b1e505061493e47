"""Model families on tiny hub-like folders: choosing the family from config.json, refusing bad folders before any
weights load, exact token accounting, pixel-only perturbation, LoRA targets, forwards and greedy generation."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from seedvlm.errors import SeedVLMError
from seedvlm.models.families import FAMILIES, detect_family, family_for_config, get_family
from seedvlm.models.families.loading import load_family, load_family_model
from seedvlm.models.families.pixels import perturb_pixel_inputs, two_view_batch
from seedvlm.models.families.tokens import IGNORE_INDEX, build_example, example_length, render, training_template

pytestmark = pytest.mark.usefixtures("one_thread")

LLAMA2_TOKENIZER = Path(__file__).resolve().parents[2] / ".." / "shared" / "reference-data" / "tokenizers" / \
    "llama2" / "tokenizer.model"

CONVERSATION = [
    {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Is there a cat in the image?"}]},
    {"role": "assistant", "content": [{"type": "text", "text": "Yes, there is a cat."}]},
    {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe the image in detail."}]},
    {"role": "assistant", "content": [{"type": "text", "text": "The image shows a red fork and a blue knife."}]},
]
SIZES = [(40, 60), (70, 30)]  # (height, width) of the conversation's two images


def image(size: tuple[int, int], seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(1, 255, (size[0], size[1], 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """name -> tiny folder of each family (LLaVA-NeXT only where the Llama-2 tokenizer.model is available)."""
    from seedvlm.models.family_folders import build_family_folders

    root = tmp_path_factory.mktemp("families")
    out = build_family_folders(root, LLAMA2_TOKENIZER if LLAMA2_TOKENIZER.is_file() else None)
    return out


@pytest.fixture(scope="module")
def loaded(folders):
    """name -> (family, model, processor)."""
    return {name: load_family(path) for name, path in folders.items()}


FOLDER_NAMES = ["qwen2.5-vl", "qwen2-vl", "llava-next", "smolvlm", "idefics3"]


def _get(loaded, name):
    if name not in loaded:
        pytest.skip(f"no Llama-2 tokenizer.model at {LLAMA2_TOKENIZER} (the LLaVA-NeXT folder needs it)")
    return loaded[name]


# ---------------------------------------------------------------------------------------------------------------
# Choosing a family and refusing bad folders
# ---------------------------------------------------------------------------------------------------------------

def test_family_from_model_type_and_architectures():
    assert family_for_config({"model_type": "qwen2_5_vl"}).name == "qwen2_vl"
    assert family_for_config({"model_type": "qwen2_vl"}).name == "qwen2_vl"
    assert family_for_config({"model_type": "llava_next", "text_config": {"model_type": "mistral"}}).name \
        == "llava_next"
    assert family_for_config({"model_type": "smolvlm"}).name == "smolvlm"
    assert family_for_config({"model_type": "idefics3"}).name == "smolvlm"
    assert family_for_config({"model_type": "llava"}).name == "llava"
    assert family_for_config({"architectures": ["LlavaNextForConditionalGeneration"]}).name == "llava_next"


@pytest.mark.parametrize("config, words", [
    ({"model_type": "mllama", "architectures": ["MllamaForConditionalGeneration"]}, "'mllama'"),
    ({"model_type": "llava_next", "text_config": {"model_type": "qwen2"}}, "'qwen2' language model"),
])
def test_unsupported_architecture_is_one_line(config, words):
    with pytest.raises(SeedVLMError) as e:
        family_for_config(config, "m/config.json")
    msg = str(e.value)
    assert msg.startswith("m/config.json: ") and words in msg and "\n" not in msg


def test_processor_of_another_family_is_refused_before_weights(folders, tmp_path):
    """A Qwen config beside a SmolVLM processor: refused from the JSON files, with no weights in the folder."""
    bad = tmp_path / "mixed"
    bad.mkdir()
    shutil.copy(folders["qwen2.5-vl"] / "config.json", bad / "config.json")
    for f in ("preprocessor_config.json", "processor_config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(folders["smolvlm"] / f, bad / f)
    with pytest.raises(SeedVLMError) as e:
        load_family(bad)
    msg = str(e.value)
    assert "config.json: processor_class 'SmolVLMProcessor'" in msg and "(qwen2_vl" in msg and "\n" not in msg


@pytest.mark.parametrize("name, file, key, value", [
    ("smolvlm", "processor_config.json", "image_seq_len", 9),
    ("qwen2.5-vl", "preprocessor_config.json", "merge_size", 3),
    ("llava-next", "processor_config.json", "patch_size", 14),
])
def test_processor_settings_that_contradict_the_config(folders, tmp_path, name, file, key, value):
    """A processor that would count image tokens differently from the model's features: one line, no weights."""
    if name not in folders:
        pytest.skip(f"no Llama-2 tokenizer.model at {LLAMA2_TOKENIZER}")
    bad = tmp_path / name
    shutil.copytree(folders[name], bad, ignore=shutil.ignore_patterns("*.safetensors"))
    data = json.loads((bad / file).read_text())
    data[key] = value
    (bad / file).write_text(json.dumps(data))
    with pytest.raises(SeedVLMError) as e:
        load_family(bad)
    assert str(e.value).startswith(f"{bad / file}: {key} is {value}") and "\n" not in str(e.value)


def test_family_option_for_the_wrong_family(folders):
    assert detect_family(folders["qwen2.5-vl"], {"max_pixels": 200 * 200}).name == "qwen2_vl"
    with pytest.raises(SeedVLMError, match="'max_pixels' does not apply to smolvlm models"):
        detect_family(folders["smolvlm"], {"max_pixels": 200 * 200})


def test_qwen_pixel_options_change_the_token_count(folders):
    from seedvlm.models.families.loading import load_family_processor

    fam = get_family("qwen2_vl")
    small = load_family_processor(folders["qwen2.5-vl"])
    large = load_family_processor(folders["qwen2.5-vl"], {"max_pixels": 224 * 224})
    assert fam.image_token_count(small, (200, 200)) == 16  # capped at 112 x 112 px: 8 x 8 patches / 4
    assert fam.image_token_count(large, (200, 200)) == 49  # 196 x 196 px: 14 x 14 patches / 4


def test_perturbation_kinds_per_family():
    for fam in FAMILIES.values():
        assert fam.check_perturbation("gaussian") == "gaussian" and fam.check_perturbation("ddpm") == "ddpm"
    with pytest.raises(SeedVLMError) as e:
        get_family("qwen2_vl").check_perturbation("mask")
    assert "flattened patch rows" in str(e.value) and "\n" not in str(e.value)
    assert get_family("smolvlm").check_perturbation("mask") == "mask"


def test_missing_weights_named(folders, tmp_path):
    empty = tmp_path / "noweights"
    shutil.copytree(folders["smolvlm"], empty)
    (empty / "model.safetensors").unlink()
    with pytest.raises(SeedVLMError, match="no \\*.safetensors"):
        load_family_model(empty)


# ---------------------------------------------------------------------------------------------------------------
# Token accounting
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", FOLDER_NAMES)
def test_example_ids_are_the_rendered_conversation_and_labels_the_answers(loaded, name):
    fam, _, proc = _get(loaded, name)
    template = training_template(fam, proc)
    ex = build_example(fam, proc, CONVERSATION, SIZES)
    images = [image(s, i) for i, s in enumerate(SIZES)]
    rendered = render(proc, CONVERSATION, template)
    want = proc(text=[rendered], images=images, return_tensors="pt")["input_ids"][0].tolist()
    assert ex.input_ids == want
    assert example_length(fam, proc, CONVERSATION, SIZES) == len(want) == len(ex.labels)

    # labels: exactly two runs, each an answer followed by the end-of-turn token
    eot = fam.end_of_turn(proc)
    kept = [i for i, t in enumerate(ex.labels) if t != IGNORE_INDEX]
    runs, start = [], kept[0]
    for a, b in zip(kept, kept[1:] + [None]):
        if b != a + 1:
            runs.append((start, a + 1))
            start = b
    answers = [m["content"][0]["text"] for m in CONVERSATION if m["role"] == "assistant"]
    assert len(runs) == len(answers)
    for (lo, hi), answer in zip(runs, answers):
        assert ex.labels[lo:hi] == ex.input_ids[lo:hi]
        assert proc.tokenizer.decode(ex.input_ids[lo:hi]).strip() == answer + eot
        assert ex.input_ids[hi - 1] == proc.tokenizer.convert_tokens_to_ids(eot)


@pytest.mark.parametrize("name", FOLDER_NAMES)
@pytest.mark.parametrize("size", [(28, 28), (40, 60), (70, 30), (100, 100), (33, 97)])
def test_image_token_count_matches_the_processor(loaded, name, size):
    fam, _, proc = _get(loaded, name)
    text = render(proc, CONVERSATION[:1], training_template(fam, proc), add_generation_prompt=True)
    ids = proc(text=[text], images=[image(size)], return_tensors="pt")["input_ids"][0]
    image_id = proc.tokenizer.convert_tokens_to_ids(proc.image_token)
    assert int((ids == image_id).sum()) == fam.image_token_count(proc, size)


def test_image_token_count_varies_with_size(loaded):
    """Dynamic resolution and anyres: differently sized images give different token counts."""
    for name in ("qwen2.5-vl", "llava-next", "smolvlm"):
        if name not in loaded:
            continue
        fam, _, proc = loaded[name]
        counts = {fam.image_token_count(proc, s) for s in [(28, 28), (20, 100), (100, 100)]}
        assert len(counts) > 1, name


def test_llava_next_mistral_template_labels(tmp_path):
    """The Mistral variant: "[INST] <image>\\nQ [/INST] A</s>", labels on " A</s>"."""
    if not LLAMA2_TOKENIZER.is_file():
        pytest.skip(f"no Llama-2 tokenizer.model at {LLAMA2_TOKENIZER}")
    from transformers import LlamaTokenizer

    from seedvlm.models.families.llava_next import MISTRAL_TEMPLATE, variant

    assert variant({"text_config": {"model_type": "mistral"}}) == "mistral"
    shutil.copyfile(LLAMA2_TOKENIZER, tmp_path / "tokenizer.model")
    tok = LlamaTokenizer.from_pretrained(tmp_path, legacy=False, add_bos_token=True)
    tok.add_tokens(["<image>"], special_tokens=True)

    class Proc:  # the tokenizer is all the label logic needs for a text-only conversation
        tokenizer = tok
        image_token = "<image>"
        chat_template = MISTRAL_TEMPLATE

    fam = get_family("llava_next")
    text_only = [{"role": m["role"], "content": [c for c in m["content"] if c["type"] == "text"]}
                 for m in CONVERSATION]
    assert render(Proc, text_only[:2], MISTRAL_TEMPLATE) == "[INST] Is there a cat in the image? [/INST] Yes, " \
                                                           "there is a cat.</s>"
    ex = build_example(fam, Proc, text_only, [])
    assert ex.input_ids == tok(render(Proc, text_only, MISTRAL_TEMPLATE))["input_ids"]
    labelled = tok.decode([t for t in ex.labels if t != IGNORE_INDEX])
    assert labelled.replace("</s>", "|") == "Yes, there is a cat.| The image shows a red fork and a blue knife.|"


# ---------------------------------------------------------------------------------------------------------------
# Pixels, LoRA targets, forwards and generation
# ---------------------------------------------------------------------------------------------------------------

def _batch(proc, fam, n: int = 2):
    """A batch of n one-image prompts with differently sized images (left padded, for generation)."""
    template = training_template(fam, proc)
    prompts = [render(proc, CONVERSATION[:1], template, add_generation_prompt=True)] * n
    images = [[image(s, i)] for i, s in enumerate([(40, 60), (70, 30), (50, 50)][:n])]
    proc.tokenizer.padding_side = "left"
    return dict(proc(text=prompts, images=images, return_tensors="pt", padding=True))


def _noise(kind_seed: int = 0):
    def noise(x, i):
        g = torch.Generator().manual_seed(kind_seed * 1000 + i)
        return x + torch.randn(x.shape, generator=g, dtype=x.dtype)
    return noise


@pytest.mark.parametrize("name", FOLDER_NAMES)
def test_perturbation_touches_pixels_only(loaded, name):
    fam, model, proc = _get(loaded, name)
    batch = _batch(proc, fam)
    seen = []

    def noise(x, i):
        seen.append((i, tuple(x.shape)))
        return _noise()(x, i)

    noisy = perturb_pixel_inputs(fam, batch, "gaussian", noise, image_token_id=proc.image_token_id,
                                 merge_size=getattr(proc.image_processor, "merge_size", None))
    assert [i for i, _ in seen] == [0, 1]  # one call per sample
    for key, value in batch.items():
        if key in fam.pixel_keys:
            assert noisy[key].shape == value.shape and not torch.equal(noisy[key], value)
        else:
            assert noisy[key] is value
    for key in fam.metadata_keys:
        assert key in batch
    if fam.flattened_patches:  # each sample's rows: its images' t * h * w
        rows = batch["image_grid_thw"].prod(-1).tolist()
        assert [s[0] for _, s in seen] == rows
    if fam.zero_padding_tiles:  # the shorter sample's padding tiles stay all zero
        pad = (batch["pixel_values"] == 0).flatten(-3).all(-1)
        assert pad.any() and (noisy["pixel_values"][pad] == 0).all()


@pytest.mark.parametrize("name", FOLDER_NAMES)
def test_lora_targets_language_model_attention_only(loaded, name):
    import re

    fam, model, _ = _get(loaded, name)
    rx = re.compile(fam.lora_target_regex())
    hit = [n for n, _ in model.named_modules() if rx.fullmatch(n)]
    layers = model.config.text_config.num_hidden_layers
    assert len(hit) == 4 * layers
    assert all(f".{fam.language_model}." in f".{n}" for n in hit)
    vision_attn = [n for n, _ in model.named_modules() if ("vision" in n or "visual" in n) and
                   n.endswith(("q_proj", "k_proj", "v_proj", "qkv", "out_proj"))]
    assert vision_attn and not set(vision_attn) & set(hit)


@pytest.mark.parametrize("name", FOLDER_NAMES)
def test_forward_with_labels_and_two_view_teacher_batch(loaded, name):
    fam, model, proc = _get(loaded, name)
    ex = build_example(fam, proc, CONVERSATION, SIZES)
    enc = proc(text=[render(proc, CONVERSATION, training_template(fam, proc))],
               images=[image(s, i) for i, s in enumerate(SIZES)], return_tensors="pt")
    labels = torch.tensor([ex.labels])
    with torch.no_grad():
        out = model(**enc, labels=labels)
    assert torch.isfinite(out.loss) and out.logits.shape[1] == len(ex)

    batch = _batch(proc, fam)
    noisy = perturb_pixel_inputs(fam, batch, "gaussian", _noise(), image_token_id=proc.image_token_id,
                                 merge_size=getattr(proc.image_processor, "merge_size", None))
    with torch.no_grad():
        both = model(**two_view_batch(batch, noisy)).logits
        clean = model(**batch).logits
        alone = model(**noisy).logits
    b = batch["input_ids"].shape[0]
    assert both.shape[0] == 2 * b
    torch.testing.assert_close(both[:b], clean, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(both[b:], alone, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(both[:b], both[b:], atol=1e-4)  # the noise reaches the logits


@pytest.mark.parametrize("name", FOLDER_NAMES)
def test_greedy_generation_with_cache_equals_recomputation(loaded, name):
    """The family's cache and position handling (M-RoPE for Qwen): cached greedy decoding of a left-padded batch
    gives the tokens that recomputing the whole sequence each step gives."""
    fam, model, proc = _get(loaded, name)
    batch = _batch(proc, fam)
    n = 4
    with torch.no_grad():
        gen = model.generate(**batch, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                             pad_token_id=proc.tokenizer.pad_token_id)[:, batch["input_ids"].shape[1]:]
        ids, mask = batch["input_ids"], batch["attention_mask"]
        extra = {k: v for k, v in batch.items() if k not in ("input_ids", "attention_mask")}
        steps = []
        for _ in range(n):
            nxt = model(input_ids=ids, attention_mask=mask, **extra).logits[:, -1].argmax(-1, keepdim=True)
            steps.append(nxt)
            ids, mask = torch.cat([ids, nxt], 1), torch.cat([mask, torch.ones_like(nxt)], 1)
            for k, v in extra.items():  # token-aligned inputs (Qwen's mm_token_type_ids): a text token is 0
                if v.shape[:2] == ids[:, :-1].shape:
                    extra[k] = torch.cat([v, torch.zeros_like(nxt)], 1)
    assert torch.equal(gen, torch.cat(steps, 1))


@pytest.mark.parametrize("name", FOLDER_NAMES)
def test_generation_stops_at_end_of_turn(folders, name):
    """With the output head made to prefer the end-of-turn token, greedy decoding stops right after it."""
    if name not in folders:
        pytest.skip(f"no Llama-2 tokenizer.model at {LLAMA2_TOKENIZER}")
    fam, model, proc = load_family(folders[name])
    eot = proc.tokenizer.convert_tokens_to_ids(fam.end_of_turn(proc))
    assert fam.stop_token_ids(proc)[0] == eot
    head = model.get_output_embeddings()
    biased = torch.nn.Linear(head.in_features, head.out_features, bias=True)
    with torch.no_grad():
        biased.weight.copy_(head.weight)
        biased.bias.zero_()
        biased.bias[eot] = 1e4
    model.set_output_embeddings(biased)
    batch = _batch(proc, fam, n=1)
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=6, do_sample=False, eos_token_id=fam.stop_token_ids(proc),
                             pad_token_id=proc.tokenizer.pad_token_id)
    assert out[0, batch["input_ids"].shape[1]:].tolist() == [eot]


def test_saved_folders_look_like_the_hub(folders):
    for name, path in folders.items():
        cfg = json.loads((path / "config.json").read_text())
        assert cfg["architectures"] and (path / "model.safetensors").is_file() and (path / "tokenizer.json").is_file()
    qwen_vocab = json.loads((folders["qwen2.5-vl"] / "tokenizer.json").read_text())["added_tokens"]
    assert [t["content"] for t in qwen_vocab][:3] == ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    if "llava-next" in folders:
        assert (folders["llava-next"] / "tokenizer.model").read_bytes() == LLAMA2_TOKENIZER.read_bytes()


@pytest.mark.parametrize("name", ["llava-next", "smolvlm", "idefics3"])
def test_patch_masking_on_tiled_layouts(loaded, name):
    """Tiles are (C, H, W) images: seedvlm.seed's patch masking applies per tile with the tower's patch size."""
    from seedvlm.seed import perturb

    fam, model, proc = _get(loaded, name)
    batch = _batch(proc, fam)
    patch = model.config.vision_config.patch_size
    noisy = perturb_pixel_inputs(fam, batch, "mask", lambda x, i: perturb(
        x, "mask", mask_ratio=0.5, patch_size=patch, generator=torch.Generator().manual_seed(i)))
    x, y = batch["pixel_values"], noisy["pixel_values"]
    changed = (x != y).flatten(-3).any(-1)
    real = ~(x == 0).flatten(-3).all(-1)
    assert changed[real].all() and not changed[~real].any()
    # every masked position is a whole patch filled with 0
    blocks = y.unflatten(-1, (-1, patch)).unflatten(-3, (-1, patch))  # (..., C, gh, p, gw, p)
    zero = (blocks == 0).all(dim=(-5, -3, -1))
    assert zero[real].float().mean() >= 0.5 - 1e-6


def test_llava_1_5_family_on_the_project_folder(tiny_model_dir):
    """The original LLaVA-1.5 folders are recognised and counted by the same family code, unchanged."""
    fam, model, proc = load_family(tiny_model_dir)
    assert fam.name == "llava" and type(model).__name__ == "LlavaForConditionalGeneration"
    messages = CONVERSATION[:2]
    ex = build_example(fam, proc, messages, [(64, 64)])
    want = proc(text=[render(proc, messages, training_template(fam, proc))], images=[image((64, 64))],
                return_tensors="pt")["input_ids"][0].tolist()
    assert ex.input_ids == want
    assert want.count(proc.tokenizer.convert_tokens_to_ids("<image>")) == fam.image_token_count(proc, (80, 50))
    assert ex.labels[-1] == proc.tokenizer.eos_token_id and ex.labels.count(IGNORE_INDEX) < len(ex.labels)


def test_idefics3_classes_load_as_the_smolvlm_family(loaded):
    """SmolVLM-256M/500M-Instruct are published with Idefics3's classes; both class sets are one family."""
    fam, model, proc = loaded["idefics3"]
    assert fam.name == "smolvlm"
    assert (type(model).__name__, type(proc).__name__) == ("Idefics3ForConditionalGeneration", "Idefics3Processor")
    assert type(loaded["smolvlm"][1]).__name__ == "SmolVLMForConditionalGeneration"


def test_template_that_does_not_close_answers_is_replaced(loaded):
    """llava-hf's llava-v1.6 templates end an answer with nothing; training then uses the variant's original
    format, which closes it with </s>, so the labels can teach the model to stop."""
    from seedvlm.models.families.llava_next import VICUNA_TEMPLATE

    fam, _, proc = _get(loaded, "llava-next")
    open_ended = ("{% for message in messages %}{{ message['role'].upper() + ': ' }}{% for c in message['content'] %}"
                  "{% if c['type'] == 'text' %}{{ c['text'] + ' ' }}{% endif %}{% endfor %}{% endfor %}"
                  "{% if add_generation_prompt %}ASSISTANT:{% endif %}")

    class Folder:
        tokenizer = proc.tokenizer
        chat_template = open_ended

    assert training_template(fam, Folder, {"text_config": {"model_type": "llama"}}) == VICUNA_TEMPLATE
    Folder.chat_template = VICUNA_TEMPLATE.replace("USER: ", "HUMAN: ")
    assert training_template(fam, Folder) == Folder.chat_template  # closes answers: kept
