"""Shared fixtures: a tiny random llava-hf checkpoint built locally (no downloads); scripts/ files as modules."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch.set_num_threads(min(2, torch.get_num_threads()))

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


@pytest.fixture(scope="session")
def load_script():
    """Import scripts/NAME.py as a module (scripts are run as files, not installed with the package)."""

    def load(name: str):
        spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod

    return load


WORDS = ["cat", "dog", "fork", "knife", "red", "blue", "there", "are", "two", "cats", "dogs", "table"]


def tiny_config(tokenizer, layers: int = 2):
    """The tiny preset shrunk to `layers` layers (fast tests), ids taken from the tokenizer."""
    from seedvlm.models import preset_config

    cfg = preset_config("tiny", vocab_size=len(tokenizer), image_token_index=tokenizer.image_token_id,
                        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                        eos_token_id=tokenizer.eos_token_id)
    cfg.vision_config.num_hidden_layers = layers
    cfg.text_config.num_hidden_layers = layers
    cfg.vision_config.hidden_size = cfg.vision_config.projection_dim = 64
    cfg.vision_config.intermediate_size = 128
    cfg.text_config.hidden_size = 64
    cfg.text_config.intermediate_size = 128
    return cfg


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A saved tiny random LLaVA (2 layers) with its word tokenizer and processor."""
    from seedvlm.models import build_processor, build_word_tokenizer, random_model, save_model

    tok = build_word_tokenizer(WORDS)
    cfg = tiny_config(tok)
    model = random_model(cfg, seed=0)
    out = tmp_path_factory.mktemp("models") / "tiny"
    save_model(model, build_processor(tok, cfg), out)
    return out


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module: on 2 shared cores a second, spinning OpenMP thread makes training steps
    several times slower whenever another process is busy.
    Use with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def random_image(seed: int = 0, size: int = 64) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
