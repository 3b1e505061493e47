"""llava-hf folders as they exist in the wild: complete a processor that an older folder left short, and check that
it feeds the vision tower exactly, before any work starts.

Older llava-hf folders have no processor_config.json (patch size unknown: the processor crashes on the first image)
or one without `num_additional_image_tokens` (one image token short of the tower's features). What config.json
determines is derived from it; what it cannot is refused in one line naming the file and the key to add.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from seedvlm.errors import SeedVLMError
from seedvlm.io import read_json

PROCESSOR_CONFIG = "processor_config.json"
# Tokens a vision tower emits besides one per patch: CLIP prepends its CLS token, SigLIP has none.
EXTRA_TOKENS_BY_TOWER = {"clip_vision_model": 1, "siglip_vision_model": 0}


def tower_feature_count(config) -> int:
    """Image features the LM receives per image: one per patch, plus CLS with the "full" strategy."""
    v = config.vision_config
    n = (v.image_size // v.patch_size) ** 2
    return n + 1 if config.vision_feature_select_strategy == "full" else n


def image_token_count(processor) -> tuple[int, int]:
    """(image tokens the processor puts in place of one `<image>`, the side of its pixel output)."""
    enc = processor(images=[Image.new("RGB", (32, 32))], text=[processor.image_token], return_tensors="pt")
    return int((enc["input_ids"] == processor.image_token_id).sum()), int(enc["pixel_values"].shape[-1])


def complete_processor(processor, config, folder: str | Path) -> list[str]:
    """Fill the processor settings that `folder`'s processor_config.json lacks from config.json; returns the keys
    derived. A key that cannot be derived is an error naming the file and the key."""
    path = Path(folder) / PROCESSOR_CONFIG
    saved = read_json(path, "processor config") if path.is_file() else {}
    derived = []
    if "patch_size" not in saved or processor.patch_size is None:
        processor.patch_size = config.vision_config.patch_size
        derived.append("patch_size")
    if "vision_feature_select_strategy" not in saved:
        processor.vision_feature_select_strategy = config.vision_feature_select_strategy
        derived.append("vision_feature_select_strategy")
    if "num_additional_image_tokens" not in saved:
        tower = config.vision_config.model_type
        if tower not in EXTRA_TOKENS_BY_TOWER:
            raise SeedVLMError(f"{path}: no 'num_additional_image_tokens' and a {tower!r} vision tower, for which it "
                               f"cannot be derived; add \"num_additional_image_tokens\": N (the tokens the tower emits "
                               f"besides one per patch: 1 for CLIP's CLS)")
        processor.num_additional_image_tokens = EXTRA_TOKENS_BY_TOWER[tower]
        derived.append("num_additional_image_tokens")
    return derived


def check_processor(processor, config, folder: str | Path) -> None:
    """The processor's image size and image-token count must equal the vision tower's; else one line that names
    the file and the keys to fix."""
    folder = Path(folder)
    try:
        n_tokens, side = image_token_count(processor)
    except (ValueError, TypeError, KeyError) as e:
        raise SeedVLMError(f"{folder}: its processor cannot turn one image and '<image>' into model inputs "
                           f"({str(e).splitlines()[0]}); check the tokenizer's <image> token and "
                           f"{PROCESSOR_CONFIG}") from None
    v = config.vision_config
    if side != v.image_size:
        raise SeedVLMError(f"{folder / 'preprocessor_config.json'}: the image processor makes {side} px images, the "
                           f"vision tower takes {v.image_size} px (config.json); set crop_size and size to "
                           f"{v.image_size}")
    want = tower_feature_count(config)
    if n_tokens != want:
        raise SeedVLMError(
            f"{folder / PROCESSOR_CONFIG}: the processor makes {n_tokens} image tokens per image, the vision tower "
            f"gives {want} features (config.json); fix patch_size ({processor.patch_size}), "
            f"num_additional_image_tokens ({processor.num_additional_image_tokens}) or "
            f"vision_feature_select_strategy ({processor.vision_feature_select_strategy})")
